//! The integration tests, one binary (`cargo test --test api`): each area of the service is a
//! module, and `common` is the harness they share. Run one area with its module path, e.g.
//! `cargo test --test api conformance::` or `cargo test --test api service::sqlite::`.
//!
//! A test that needs PostgreSQL, Synapse, buf or the real-export corpus fails when it is
//! missing, unless `CHATSYNC_ALLOW_SKIP=1`: then it is skipped, and the skip is recorded
//! (see `common::skip_or_fail`).

mod common;

mod cli;
mod cluster;
mod conformance;
mod console;
mod contacts;
mod faults;
mod group_commit;
mod grpc_web;
mod lifecycle;
mod matrix;
mod matrix_lifecycle;
mod matrix_media;
mod matrix_members;
mod media;
mod mirror;
mod operations;
mod search;
mod server;
mod service;
mod snapshot;
mod telegram_lifecycle;
mod transport;
mod webhooks;
mod whatsapp_cloud;
