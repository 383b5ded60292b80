//! Search latency benchmark: SearchMessages against a running server.
//!
//! Usage: `cargo run --release --example search_bench -- URL SESSION QUERIES_FILE [ROUNDS]`
//! (`bench/search.sh` runs it). QUERIES_FILE holds one query per line. One warm-up round runs
//! every query once unmeasured; then ROUNDS rounds (default 5) run every query once each, in
//! file order, one at a time over one HTTP/2 connection, first page only (limit 20). Each
//! call's wall time (request sent → response decoded) goes into an hdrhistogram (3 significant
//! digits); the report is one JSON line: queries, calls, p50/p99/max in microseconds, and the
//! mean number of hits per query.
use std::path::PathBuf;
use std::time::Instant;

use chatsync::grpc::pb;
use hdrhistogram::Histogram;
use pb::chat_sync_service_client::ChatSyncServiceClient;

/// SearchMessages latency against a running server.
#[derive(clap::Parser)]
struct Args {
    /// The server's URL.
    url: String,
    /// The session to search.
    session: String,
    /// One query per line.
    queries_file: PathBuf,
    /// Measured rounds, each running every query once.
    #[arg(default_value_t = 5)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        url,
        session,
        queries_file,
        rounds,
    } = <Args as clap::Parser>::parse();
    let queries: Vec<String> = std::fs::read_to_string(queries_file)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut client = ChatSyncServiceClient::connect(url).await?;
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut hits = 0usize;
    for round in 0..=rounds {
        for query in &queries {
            let started = Instant::now();
            let response = client
                .search_messages(pb::SearchMessagesRequest {
                    session_id: session.clone(),
                    query: query.clone(),
                    limit: 20,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let micros = started.elapsed().as_micros() as u64;
            if round > 0 {
                histogram.record(micros.max(1))?;
                hits += response.hits.len();
            }
        }
    }
    println!(
        "{{\"queries\":{},\"calls\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"mean_hits\":{:.1}}}",
        queries.len(),
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max(),
        hits as f64 / (rounds * queries.len()).max(1) as f64
    );
    Ok(())
}
