//! SeaORM entities, one per table created by the `migrations` crate. Times are Unix
//! milliseconds; `kind` and `status` hold [`crate::model`] discriminants.
pub mod attachment;
pub mod change;
pub mod chat;
pub mod contact;
pub mod lease;
pub mod message;
pub mod message_request;
pub mod message_version;
pub mod participant;
pub mod reaction;
pub mod receipt;
pub mod send_claim;
pub mod session;
pub mod source_file;
pub mod webhook_cursor;
pub mod webhook_inbox;
