#!/usr/bin/env bash
# Replica benchmark on PostgreSQL: three `chatsync serve` replicas on one fresh database.
#   1. fan-out: SendMessage spread over the three, 100 subscribers spread over the three, at
#      1,000 messages/s (`examples/fanout --servers A,B,C`): p50/p99 delivery latency, which
#      includes the hop through NOTIFY for subscribers on another replica than the sender;
#   2. throughput: SendMessage as fast as the servers answer (256 in flight) through all three
#      replicas, then through one replica alone on a fresh database, in the same run.
# Every send goes to one session, so every write queues on that session's row lock: replicas
# add connections and CPU, not write concurrency within one session.
#
# Usage: bench/replicas.sh            (RUNS=3; PG=postgres://postgres@127.0.0.1:5432)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BIN="$ROOT/target/release/chatsync"
FANOUT="$ROOT/target/release/examples/fanout"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-replicas.XXXXXX")"
PIDS=()
DBS=()
cleanup() {
    pg_analyze_stop 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in "${DBS[@]}"; do
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

# Without autovacuum, an ANALYZE every 5 s of each fresh database while its cluster runs, as
# autovacuum would keep its statistics (bench/pg_stats.sh).
# shellcheck source=bench/pg_stats.sh
. "$ROOT/bench/pg_stats.sh"
pg_stats_init "$PG"

log "building chatsync and examples/load, examples/fanout (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example load --example fanout)

# Starts N replicas on a fresh database; sets URLS to their URLs, comma-separated. (Not run in
# a command substitution: the PIDs must reach the cleanup.)
start_cluster() { # N NAME
    local db="chatsync_replicas_$$_$2" urls=()
    DBS+=("$db")
    psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
    pg_analyze_start "$PG/$db"
    printf 'listen = "127.0.0.1:0"\ndatabase_url = "%s/%s"\ndatabase_max_connections = 24\n[[sessions]]\nid = "bench"\nsource = "local"\n' \
        "$PG" "$db" >"$WORK/$2.toml"
    for i in $(seq 1 "$1"); do
        "$BIN" serve --config "$WORK/$2.toml" >"$WORK/$2.$i.out" 2>"$WORK/$2.$i.log" &
        PIDS+=($!)
    done
    for i in $(seq 1 "$1"); do
        for _ in $(seq 1 600); do
            grep -q "listening on" "$WORK/$2.$i.out" 2>/dev/null && break
            sleep 0.05
        done
        urls+=("$(sed -n 's/^chatsync listening on //p' "$WORK/$2.$i.out")")
    done
    URLS="$(IFS=,; echo "${urls[*]}")"
}
stop_cluster() {
    pg_analyze_stop
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
result() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for run in $(seq 1 "$RUNS"); do
    start_cluster 3 "three$run"; servers="$URLS"
    out="$("$FANOUT" --servers "$servers" --session bench --messages 5000 --subscribers 100 --rate 1000 | grep '^RESULT')"
    p50="$(result p50_ms "$out")"; p99="$(result p99_ms "$out")"; missing="$(result missing "$out")"
    out="$("$FANOUT" --servers "$servers" --session bench --messages 20000 --subscribers 3 --rate 0 | grep '^RESULT')"
    three="$(result completed_rate "$out")"
    stop_cluster
    start_cluster 1 "one$run"; servers="$URLS"
    out="$("$FANOUT" --servers "$servers" --session bench --messages 20000 --subscribers 3 --rate 0 | grep '^RESULT')"
    one="$(result completed_rate "$out")"
    stop_cluster
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$p50" "$p99" "$missing" "$three" "$one" >>"$RESULTS"
    log "run $run: fan-out p50 ${p50} ms p99 ${p99} ms (${missing} missing); sends/s three ${three}, one ${one}"
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
cols = dict(p50=1, p99=2, missing=3, three=4, one=5)
vals = {k: [float(r[i]) for r in rows] for k, i in cols.items()}
vals["ratio"] = [float(r[4]) / float(r[5]) for r in rows]
print()
print(f"{len(rows)} run(s); medians (min..max)")
for label, key, fmt in [
    ("fan-out p50, ms (3 replicas, 100 subs, 1,000/s)", "p50", ".2f"),
    ("fan-out p99, ms", "p99", ".2f"),
    ("events missing", "missing", ".0f"),
    ("sends/s through three replicas", "three", ",.0f"),
    ("sends/s through one replica", "one", ",.0f"),
    ("three / one", "ratio", ".2f"),
]:
    v = vals[key]
    print(f"  {label:<50} {format(statistics.median(v), fmt):>10} ({format(min(v), fmt)}..{format(max(v), fmt)})")
EOF
echo
echo "command: RUNS=$RUNS bench/replicas.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
