//! chatsync: a gRPC service that mirrors chat accounts into a SQL database and keeps clients
//! in step. See `ARCHITECTURE.md` for the code map and its invariants.
pub mod auth;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod grpc;
#[cfg(test)]
mod layers;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod samples;
pub mod search;
pub mod server;
pub mod service;
pub mod sources;
pub mod storage;
