#!/usr/bin/env bash
# Group commit: SendMessage throughput with 64 concurrent clients, and sequential latency, from
# a separate process (`examples/load sends`) against a real `chatsync serve`, on SQLite and on
# PostgreSQL; Synapse's send rate with 64 clients in the same run (`examples/load
# synapse-sends`, Synapse from `scripts/synapse` in target/synapse-perf, stopped afterwards).
#
# Each run, per backend: a fresh database, one `local` session, a server started and stopped;
# `load sends --clients 1` (sequential: latency and rate), then `--clients 64`.
# With BEFORE=path/to/old/chatsync, the same runs are also made against that binary (for the
# before/after comparison of sequential latency), in the same run.
#
# Usage: bench/group_commit.sh   (RUNS=3 SECS=10 CLIENTS=64 PG=postgres://postgres@127.0.0.1:5432
#                                 BEFORE= SYNAPSE=1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-64}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BEFORE="${BEFORE:-}"
SYNAPSE="${SYNAPSE:-1}"
BIN="$ROOT/target/release/chatsync"
LOAD="$ROOT/target/release/examples/load"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-group.XXXXXX")"
SERVER_PID=""
DBS=()
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    for db in "${DBS[@]}"; do
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

log "building chatsync and examples/load, examples/fanout (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example load --example fanout)

# start_server BINARY BACKEND NAME: sets URL and SERVER_PID.
start_server() {
    local bin="$1" backend="$2" name="$3" url
    if [ "$backend" = sqlite ]; then
        url="sqlite://$WORK/$name.db"
    else
        local db="chatsync_group_$$_${name//-/_}"
        DBS+=("$db")
        DB="$db"
        psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
        url="$PG/$db"
    fi
    printf 'listen = "127.0.0.1:0"\ndatabase_url = "%s"\n[[sessions]]\nid = "bench"\nsource = "local"\n' \
        "$url" >"$WORK/$name.toml"
    "$bin" serve --config "$WORK/$name.toml" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$WORK/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    URL="$(sed -n 's/^chatsync listening on //p' "$WORK/$name.out")"
    [ -n "$URL" ] || { cat "$WORK/$name.log" >&2; exit 1; }
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
result() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# Without autovacuum, what it would do after the sequential phase's writes is done by hand: one
# ANALYZE before the concurrent phase (bench/pg_stats.sh).
# shellcheck source=bench/pg_stats.sh
. "$ROOT/bench/pg_stats.sh"
pg_stats_init "$PG"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
binaries=("after:$BIN")
[ -n "$BEFORE" ] && binaries+=("before:$BEFORE")
for run in $(seq 1 "$RUNS"); do
    for entry in "${binaries[@]}"; do
        label="${entry%%:*}"; bin="${entry#*:}"
        for backend in sqlite postgres; do
            start_server "$bin" "$backend" "$label-$backend-$run"
            seq_out="$("$LOAD" sends --server "$URL" --clients 1 --secs "$SECS" | grep '^RESULT')"
            if [ "$backend" = postgres ]; then
                pg_analyze "$PG/$DB"
            fi
            par_out="$("$LOAD" sends --server "$URL" --clients "$CLIENTS" --secs "$SECS" | grep '^RESULT')"
            stop_server
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$label" "$backend" \
                "$(result rate "$seq_out")" "$(result p50_ms "$seq_out")" \
                "$(result rate "$par_out")" "$(result p99_ms "$par_out")" >>"$RESULTS"
            log "run $run $label $backend: sequential $(result rate "$seq_out")/s p50 $(result p50_ms "$seq_out") ms; $CLIENTS clients $(result rate "$par_out")/s p99 $(result p99_ms "$par_out") ms"
        done
    done
    if [ "$SYNAPSE" = 1 ]; then
        syn_out="$("$LOAD" synapse-sends --dir "$ROOT/target/synapse-perf" --clients "$CLIENTS" --secs "$SECS" | grep '^RESULT')"
        printf '%s\tsynapse\tsynapse\t0\t0\t%s\t%s\n' "$run" "$(result rate "$syn_out")" "$(result p99_ms "$syn_out")" >>"$RESULTS"
        log "run $run synapse: $CLIENTS clients $(result rate "$syn_out")/s p99 $(result p99_ms "$syn_out") ms"
    fi
done

python3 - "$RESULTS" "$CLIENTS" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
clients = sys.argv[2]
def med(values, fmt):
    return f"{format(statistics.median(values), fmt):>10} ({format(min(values), fmt)}..{format(max(values), fmt)})"
print()
runs = sorted({r[0] for r in rows})
print(f"{len(runs)} run(s); medians (min..max)")
groups = {}
for r in rows:
    groups.setdefault((r[1], r[2]), []).append(r)
synapse = [float(r[5]) for r in groups.get(("synapse", "synapse"), [])]
for (label, backend), rs in sorted(groups.items()):
    if label == "synapse":
        print(f"  Synapse, {clients} clients, sends/s                 {med(synapse, ',.1f')}")
        continue
    print(f"  {label} {backend}:")
    print(f"    sequential sends/s                            {med([float(r[3]) for r in rs], ',.0f')}")
    print(f"    sequential latency p50, ms                    {med([float(r[4]) for r in rs], '.3f')}")
    print(f"    {clients} clients, sends/s                         {med([float(r[5]) for r in rs], ',.0f')}")
    print(f"    {clients} clients, latency p99, ms                 {med([float(r[6]) for r in rs], '.2f')}")
    if synapse:
        by_run = {r[0]: float(r[5]) for r in groups[("synapse", "synapse")]}
        ratios = [float(r[5]) / by_run[r[0]] for r in rs if r[0] in by_run and by_run[r[0]] > 0]
        if ratios:
            print(f"    / Synapse's rate in the same run              {med(ratios, ',.0f')}")
EOF
echo
echo "command: RUNS=$RUNS SECS=$SECS CLIENTS=$CLIENTS bench/group_commit.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
