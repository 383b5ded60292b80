//! Parse-speed benchmark for the WhatsApp export parser: parse only (no id derivation, no
//! storage), on one file read into memory once.
//!
//! Usage: `cargo run --release --example parse_bench -- FILE [--runs N]`
//!
//! Prints each run's wall time, then the median, min and max, the message count and the
//! nanoseconds per message of the median run. Generate the usual input with
//! `python3 bench/render_single_chat.py bench/out/single_chat.txt` (about 10 MB, 134,000
//! messages). For instruction counts run it once under
//! `valgrind --tool=callgrind` with `--runs 1`.
use std::time::Instant;

use chatsync::sources::whatsapp::parser::{ParseOptions, parse};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The export file to parse.
    file: std::path::PathBuf,
    /// How many times to parse it.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bytes = std::fs::read(&args.file)?;
    let options = ParseOptions::default();
    let mut times = Vec::with_capacity(args.runs);
    let mut messages = 0;
    let mut unplaced = 0;
    for run in 1..=args.runs.max(1) {
        let start = Instant::now();
        let out = parse(&bytes, &options);
        let elapsed = start.elapsed();
        messages = out.messages.len();
        unplaced = out.unplaced.len();
        println!("run {run}: {:.1} ms", elapsed.as_secs_f64() * 1e3);
        times.push(elapsed.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{} bytes, {messages} messages, {unplaced} unplaced; median {:.1} ms (min {:.1}, max {:.1}), {:.0} ns/message, {:.1} MB/s",
        bytes.len(),
        median * 1e3,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        median * 1e9 / messages.max(1) as f64,
        bytes.len() as f64 / median / 1e6,
    );
    Ok(())
}
