//! The `chatsync` binary: see [`chatsync::cli`].
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
