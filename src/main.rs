//! The `chatsync` binary: see [`chatsync::cli`].
use clap::Parser;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Tasks woken from outside the runtime's workers (SQLite's connection threads wake the
        // group-commit leader) wait in the global queue, which a busy worker looks at only every
        // `global_queue_interval` tasks (61 by default): under many concurrent RPCs each SQLite
        // statement of a write then waited milliseconds. See BENCHMARKS.md, "Group commit".
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve_cli()),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How many local tasks a runtime worker runs between looks at the global queue.
const GLOBAL_QUEUE_INTERVAL: u32 = 8;

async fn serve_cli() -> std::process::ExitCode {
    // Logging starts in `cli::run`: `serve` reads its format from the configuration.
    let cli = chatsync::cli::Cli::parse();
    match chatsync::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            if let Some(status) = error.downcast_ref::<tonic::Status>() {
                eprintln!("error: {:?}: {}", status.code(), status.message());
            } else {
                eprintln!("error: {error:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
