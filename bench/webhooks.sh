#!/usr/bin/env bash
# Webhook delivery (issue 20): events/s to one endpoint and latency from send to receiver,
# for 1 session and for 100 sessions, RUNS times each (`examples/webhook_bench`: the server
# and a receiver answering 200 at once, on loopback, in one process, SQLite). Prints each
# run's RESULT line and the medians.
#
# Usage: bench/webhooks.sh   (RUNS=3 MESSAGES=5000 RATE=300; RATE is the offered send rate of
# the latency phase, kept below one session's delivery rate so that it measures latency, not a
# backlog)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
MESSAGES="${MESSAGES:-5000}"
RATE="${RATE:-300}"
cd "$ROOT"
cargo build --release --quiet --example webhook_bench
for sessions in 1 100; do
    results=()
    for run in $(seq 1 "$RUNS"); do
        line="$(target/release/examples/webhook_bench --sessions "$sessions" --messages "$MESSAGES" --rate "$RATE" | grep '^RESULT')"
        echo "run $run: $line"
        results+=("$line")
    done
    printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [dict(kv.split("=") for kv in line.split()[1:]) for line in sys.stdin]
def med(key):
    return statistics.median(float(row[key]) for row in rows)
print("median of %d: sessions=%s events/s=%.0f send->receiver p50=%.2f ms p99=%.2f ms; answer->receiver p50=%.2f ms p99=%.2f ms" % (
    len(rows), rows[0]["sessions"], med("events_per_sec"), med("p50_ms"), med("p99_ms"),
    med("answer_p50_ms"), med("answer_p99_ms")))
'
done
