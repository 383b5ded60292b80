#!/usr/bin/env bash
# Webhook delivery (issue 20): events/s to one endpoint and latency from send to receiver,
# for 1 session and for 100 sessions, RUNS times each (`examples/webhook_bench`: the server
# and a receiver answering 200 at once, on loopback, in one process, SQLite). Prints each
# run's RESULT line and the medians.
#
# Usage: bench/webhooks.sh   (RUNS=3 MESSAGES=5000 RATE=1000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
MESSAGES="${MESSAGES:-5000}"
RATE="${RATE:-1000}"
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
med = lambda k: statistics.median(float(r[k]) for r in rows)
print(f"median of {len(rows)}: sessions={rows[0][\"sessions\"]} events/s={med(\"events_per_sec\"):.0f} p50={med(\"p50_ms\"):.2f} ms p99={med(\"p99_ms\"):.2f} ms")
'
done
