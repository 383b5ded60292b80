#!/usr/bin/env bash
# Many subscriptions on one `chatsync serve` (SQLite), from a load generator in its own process
# (`examples/load subscribers`):
#   1. 10,000 SubscribeMessages streams, each on its own connection: time until every one has
#      seen `ready`, server RSS per subscription above the idle server (VmRSS before and after),
#      and one message at a time fanned out to all of them (p50/p99 over message × stream);
#   2. the same 10,000 streams over 100 connections.
# A fresh server and database for each. Then the fan-out latency at 1,000 messages/s
# (`examples/fanout --servers`): 100 subscribers (RUNS runs) and 1,000 subscribers.
# With PY=1, also the RSS per subscription seen by an independent client: PY_SUBSCRIBERS
# (default 9000) streams, each on its own grpc.aio channel (examples/python/subscribers_rss.py,
# in the venv of examples/python/run_tests.sh, which must exist with its stubs generated).
#
# Usage: bench/connections.sh   (RUNS=3 SUBSCRIBERS=10000 MESSAGES=5 FANOUT=1 PY=0)
#        BIN=/path/to/other/chatsync FANOUT=0 bench/connections.sh   measures another build of
#        the server (an older commit's, for an A/B comparison) with the same load generator
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
SUBSCRIBERS="${SUBSCRIBERS:-10000}"
MESSAGES="${MESSAGES:-5}"
FANOUT="${FANOUT:-1}"
PY="${PY:-0}"
PY_SUBSCRIBERS="${PY_SUBSCRIBERS:-9000}"
BIN="${BIN:-$ROOT/target/release/chatsync}"
LOAD="$ROOT/target/release/examples/load"
FAN="$ROOT/target/release/examples/fanout"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-connections.XXXXXX")"
# shellcheck source=bench/server.sh
source "$ROOT/bench/server.sh"
cleanup() {
    stop_server
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

log "building chatsync, examples/load and examples/fanout (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example load --example fanout)


for connections in 0 100; do
    start_server "subs-$connections"
    "$LOAD" subscribers --server "$URL" --subscribers "$SUBSCRIBERS" --connections "$connections" \
        --server-pid "$SERVER_PID" --messages "$MESSAGES"
    stop_server
done

if [ "$PY" = 1 ]; then
    venv_python="$ROOT/examples/python/.venv/bin/python"
    [ -x "$venv_python" ] && [ -d "$ROOT/examples/python/gen" ] || {
        log "PY=1 needs examples/python/.venv and gen/ (run examples/python/run_tests.sh once)"
        exit 1
    }
    start_server "subs-py"
    "$venv_python" "$ROOT/examples/python/subscribers_rss.py" --server "${URL#http://}" \
        --session bench --server-pid "$SERVER_PID" --subscribers "$PY_SUBSCRIBERS"
    stop_server
fi

if [ "$FANOUT" = 1 ]; then
    for subscribers in 100 1000; do
        runs="$RUNS"; [ "$subscribers" = 1000 ] && runs=1
        for run in $(seq 1 "$runs"); do
            start_server "fan-$subscribers-$run"
            "$FAN" --servers "$URL" --session bench --messages 5000 --subscribers "$subscribers" \
                --rate 1000 | grep -E '^(RESULT|  p50)'
            stop_server
        done
    done
fi
echo
echo "command: RUNS=$RUNS SUBSCRIBERS=$SUBSCRIBERS PY=$PY bench/connections.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
