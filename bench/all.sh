#!/usr/bin/env bash
# Every benchmark of issues 8, 9, 11 and 22, one after the other, each next to its baseline in the
# same run where it has one (see BENCHMARKS.md): imports and parsing, the instruction-count
# guard (bench/guard.sh), group commit (with
# Synapse), 10,000 subscribers and fan-out, TLS against plain, GetSnapshot of the corpus, and
# search latency and index sizes, webhook delivery (issue 20), and 30 sessions over three
# replicas on PostgreSQL (bench/sessions.sh). RUNS (default 3) is passed to each. Output goes
# to stdout and to bench/out/all-COMMIT.log.
#
# Usage: RUNS=3 bench/all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUNS="${RUNS:-3}"
mkdir -p "$ROOT/bench/out"
out="$ROOT/bench/out/all-$(cd "$ROOT" && git rev-parse --short HEAD).log"
{
    echo "== bench/all.sh: $(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD), RUNS=$RUNS, $(date -u +%FT%TZ)"
    for bench in imports guard group_commit connections tls snapshot search webhooks sessions; do
        echo
        echo "######## bench/$bench.sh"
        "$ROOT/bench/$bench.sh"
    done
} 2>&1 | tee "$out"
