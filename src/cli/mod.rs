//! The `chatsync` command line: `serve`, and client commands that talk to a running server
//! over gRPC (the generated client, like any other client would).
//!
//! Client commands take `--server URL` (default `http://127.0.0.1:50051`), `--token TOKEN`
//! (or `CHATSYNC_TOKEN`), and `--json` for one JSON object per line instead of text: each
//! object is a protobuf message in the protobuf JSON mapping (as `buf curl` prints it, with
//! default values included).
//!
//! - `args.rs`: the clap definitions;
//! - `commands.rs`: one function per command;
//! - `output.rs`: what they print.
mod args;
mod commands;
mod output;

pub use crate::client::Auth;
pub use args::{
    Cli, ClientArgs, Command, DeleteArgs, EditArgs, MessagesArgs, MirrorArgs, ReactArgs,
    SearchArgs, SendArgs, ServeArgs, SessionArgs, SnapshotArgs, SubscribeArgs, SyncArgs, Window,
};

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    commands::run(cli.command).await
}
