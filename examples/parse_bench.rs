//! Parse-speed benchmark for the export parsers: parse only (no id derivation, no storage), on
//! one file read into memory once.
//!
//! Usage: `cargo run --release --example parse_bench -- FILE [--format whatsapp|telegram]
//! [--runs N]`
//!
//! - `whatsapp` (default): `sources::whatsapp::parser::parse` with the default options.
//! - `telegram`: `sources::telegram::parser::parse` in UTC (every message of a generated file
//!   has `date_unixtime`).
//!
//! Prints each run's wall time, then the median, min and max (from an HDR histogram of the
//! runs), the message count, nanoseconds per message and messages per second of the median
//! run, and a last line `RESULT messages=N median_s=S min_s=S max_s=S` for scripts. Generate
//! the usual inputs with `python3 bench/render_single_chat.py bench/out/single_chat.txt`
//! (about 10 MB, 134,000 messages) and `python3 bench/render_telegram.py
//! bench/out/telegram.json`. For instruction counts run it once under
//! `valgrind --tool=callgrind` with `--runs 1` (see BENCHMARKS.md).
use std::time::Instant;

use chatsync::sources::telegram;
use chatsync::sources::whatsapp::parser::{ParseOptions, parse};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Whatsapp,
    Telegram,
}

#[derive(Parser)]
struct Args {
    /// The export file to parse.
    file: std::path::PathBuf,
    /// Which parser reads it.
    #[arg(long, value_enum, default_value_t = Format::Whatsapp)]
    format: Format,
    /// How many times to parse it.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Parses `bytes` once; returns (messages, unplaced lines or skipped records).
fn parse_once(format: Format, bytes: &[u8]) -> anyhow::Result<(usize, usize)> {
    Ok(match format {
        Format::Whatsapp => {
            let out = parse(bytes, &ParseOptions::default());
            (out.messages.len(), out.unplaced.len())
        }
        Format::Telegram => {
            let chats = telegram::parser::parse(bytes, chrono_tz::Tz::UTC)?;
            (
                chats.iter().map(|c| c.messages.len()).sum(),
                chats.iter().map(|c| c.skipped).sum(),
            )
        }
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bytes = std::fs::read(&args.file)?;
    // Nanoseconds, 1 ns to 10 minutes, 3 significant digits.
    let mut times = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let (mut messages, mut unplaced) = (0, 0);
    for run in 1..=args.runs.max(1) {
        let start = Instant::now();
        (messages, unplaced) = parse_once(args.format, &bytes)?;
        let elapsed = start.elapsed();
        println!("run {run}: {:.1} ms", elapsed.as_secs_f64() * 1e3);
        times.record(elapsed.as_nanos() as u64)?;
    }
    let seconds = |ns: u64| ns as f64 / 1e9;
    let median = seconds(times.value_at_quantile(0.5));
    let (min, max) = (seconds(times.min()), seconds(times.max()));
    println!(
        "{} bytes, {messages} messages, {unplaced} unplaced; median {:.1} ms (min {:.1}, max {:.1}), {:.0} ns/message, {:.0} messages/s, {:.1} MB/s",
        bytes.len(),
        median * 1e3,
        min * 1e3,
        max * 1e3,
        median * 1e9 / messages.max(1) as f64,
        messages as f64 / median,
        bytes.len() as f64 / median / 1e6,
    );
    println!("RESULT messages={messages} median_s={median:.6} min_s={min:.6} max_s={max:.6}");
    Ok(())
}
