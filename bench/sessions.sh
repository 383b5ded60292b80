#!/usr/bin/env bash
# Many sessions over replicas (issue 22), on PostgreSQL: SendMessage throughput of SESSIONS
# `local` sessions written by CLIENTS closed-loop clients (`examples/load sends`, each client on
# its own connection, client i on session i % SESSIONS), through three replicas and through one.
#
# Each run, on a fresh database each (same config file shape as bench/replicas.sh, SESSIONS
# `[[sessions]]` of source `local`), in an order that rotates from run to run:
#   three   REPLICAS replicas, client i through replica i % REPLICAS: with SESSIONS a multiple
#           of REPLICAS, each session is written through one replica only;
#   mixed   the same replicas, client i through replica (i / SESSIONS) % REPLICAS (`load
#           --mix`): each session is written through every replica, which then contend for
#           its row lock;
#   one     one replica, every client through it.
# For each it records sends/s and p99, and the CPU used during the load run (utime+stime from
# /proc, in % of one core over the run's wall time): the replicas, every process of the
# `postgres` user (the backends and PostgreSQL's own workers), the load generator, and the whole
# machine (/proc/stat), whose rest is everything else running (other builds). With WAITS=1 it
# also samples pg_stat_activity of the database every 0.2 s during the run and counts what the
# backends were doing (state and wait event).
#
# BIN=path/to/chatsync runs another build (an earlier commit, for a before/after comparison).
#
# Usage: bench/sessions.sh   (RUNS=3 SECS=10 CLIENTS=96 SESSIONS=30 REPLICAS=3 CONNS=24
#                             ONE_CONNS=40 WAITS=1 PG=postgres://postgres@127.0.0.1:5432)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
SECS="${SECS:-10}"
CLIENTS="${CLIENTS:-96}"
SESSIONS="${SESSIONS:-30}"
REPLICAS="${REPLICAS:-3}"
CONNS="${CONNS:-24}"
ONE_CONNS="${ONE_CONNS:-40}"
WAITS="${WAITS:-1}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BIN="${BIN:-$ROOT/target/release/chatsync}"
LOAD="$ROOT/target/release/examples/load"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-sessions.XXXXXX")"
PIDS=()
DBS=()
SAMPLER=""
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
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

log "building chatsync and examples/load, examples/fanout (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example load --example fanout)

SESSION_IDS="$(seq -f 's%g' -s, 1 "$SESSIONS")"

# CPU snapshot: "machine_busy machine_all replicas postgres" in clock ticks. machine_* from the
# first line of /proc/stat (all = busy + idle + iowait); replicas: utime+stime of the PIDs
# given; postgres: utime+stime of every process owned by the postgres user.
cat >"$WORK/cpu.py" <<'EOF'
import os, pwd, sys
f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
idle = f[3] + f[4]
busy = sum(f[:8]) - idle
def ticks(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])
reps = sum(ticks(p) for p in sys.argv[1:])
uid = pwd.getpwnam("postgres").pw_uid
pg = 0
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            if os.stat(f"/proc/{p}").st_uid == uid:
                pg += ticks(p)
        except OSError:
            pass
print(busy, busy + idle, reps, pg)
EOF

# Starts N replicas with CONNECTIONS pooled connections each on a fresh database with SESSIONS
# local sessions; sets URLS (comma-separated) and DB. (Not run in a command substitution: the
# PIDs must reach the cleanup.)
start_cluster() { # N CONNECTIONS NAME
    local db="chatsync_sessions_$$_$3" urls=() i
    DBS+=("$db")
    DB="$db"
    psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
    {
        printf 'listen = "127.0.0.1:0"\ndatabase_url = "%s/%s"\ndatabase_max_connections = %s\n' \
            "$PG" "$db" "$2"
        for i in $(seq 1 "$SESSIONS"); do
            printf '[[sessions]]\nid = "s%s"\nsource = "local"\n' "$i"
        done
    } >"$WORK/$3.toml"
    for i in $(seq 1 "$1"); do
        "$BIN" serve --config "$WORK/$3.toml" >"$WORK/$3.$i.out" 2>"$WORK/$3.$i.log" &
        PIDS+=($!)
    done
    for i in $(seq 1 "$1"); do
        for _ in $(seq 1 600); do
            grep -q "listening on" "$WORK/$3.$i.out" 2>/dev/null && break
            sleep 0.05
        done
        urls+=("$(sed -n 's/^chatsync listening on //p' "$WORK/$3.$i.out")")
        [ -n "${urls[-1]}" ] || { cat "$WORK/$3.$i.log" >&2; exit 1; }
    done
    URLS="$(IFS=,; echo "${urls[*]}")"
}
stop_cluster() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
result() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# Without autovacuum: a warm-up and an ANALYZE before each measured load (bench/pg_stats.sh).
# shellcheck source=bench/pg_stats.sh
. "$ROOT/bench/pg_stats.sh"
pg_stats_init "$PG"

# measure LABEL RUN N CONNECTIONS [LOAD_FLAGS]: one configuration, one row of RESULTS.
measure() {
    local label="$1" run="$2" n="$3" conns="$4" flags="${5:-}" out before after wall
    start_cluster "$n" "$conns" "$label$run"
    if [ "$AUTOVACUUM" != on ]; then
        # A PostgreSQL without autovacuum (this machine's) never analyzes the fresh tables, and
        # the plans cached while they were empty stay as they grow (BENCHMARKS.md, "this
        # machine's PostgreSQL runs without autovacuum"): a 2 s warm-up, then the ANALYZE that
        # autovacuum would have run, before the measured load.
        # shellcheck disable=SC2086
        "$LOAD" sends --servers "$URLS" --sessions "$SESSION_IDS" --clients "$CLIENTS" \
            --secs 2 $flags >/dev/null
        pg_analyze "$PG/$DB"
    fi
    if [ "$WAITS" = 1 ]; then
        (
            while :; do
                psql "$PG/postgres" -Atc "SELECT state || ' ' || coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-') FROM pg_stat_activity WHERE datname = '$DB' AND state <> 'idle' AND pid <> pg_backend_pid()" 2>/dev/null || true
                echo "--sample"
                sleep 0.2
            done
        ) >"$WORK/waits.$label$run" &
        SAMPLER=$!
    fi
    local load_avg
    load_avg="$(cut -d' ' -f1 /proc/loadavg)"
    before="$(python3 "$WORK/cpu.py" "${PIDS[@]}")"
    local started
    started="$(date +%s.%N)"
    # shellcheck disable=SC2086
    out="$(/usr/bin/time -f 'LOADCPU %U %S' -o "$WORK/loadcpu" \
        "$LOAD" sends --servers "$URLS" --sessions "$SESSION_IDS" --clients "$CLIENTS" \
        --secs "$SECS" $flags | grep '^RESULT')"
    after="$(python3 "$WORK/cpu.py" "${PIDS[@]}")"
    wall="$(python3 -c "import time; print(time.time() - $started)")"
    if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""; fi
    stop_cluster
    local loadcpu
    loadcpu="$(awk '/^LOADCPU/ {print $2 + $3}' "$WORK/loadcpu")"
    # CPU in % of one core over the wall time: replicas, postgres, load, machine, machine total.
    local cpu
    cpu="$(python3 - "$before" "$after" "$wall" "$loadcpu" <<'EOF'
import os, sys
b = [int(x) for x in sys.argv[1].split()]
a = [int(x) for x in sys.argv[2].split()]
wall = float(sys.argv[3]); load = float(sys.argv[4])
hz = os.sysconf("SC_CLK_TCK")
d = [x - y for x, y in zip(a, b)]
cores = d[1] / hz / wall  # the machine's capacity, in cores
pct = lambda ticks: 100 * ticks / hz / wall
print(f"{pct(d[2]):.0f}\t{pct(d[3]):.0f}\t{100 * load / wall:.0f}\t{pct(d[0]):.0f}\t{100 * cores:.0f}")
EOF
)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$label" "$(result rate "$out")" "$(result p99_ms "$out")" \
        "$cpu" "$load_avg" >>"$RESULTS"
    IFS=$'\t' read -r c_rep c_pg c_load c_busy c_all <<<"$cpu"
    log "run $run $label: $(result rate "$out") sends/s p99 $(result p99_ms "$out") ms; CPU % of a core: replicas $c_rep, postgres $c_pg, load $c_load, machine $c_busy of $c_all; load average $load_avg"
    if [ "$WAITS" = 1 ]; then
        log "  backends (state wait), share of samples: $(python3 - "$WORK/waits.$label$run" <<'EOF'
import collections, sys
lines = open(sys.argv[1]).read().splitlines()
samples = max(1, lines.count("--sample"))
c = collections.Counter(l for l in lines if l and l != "--sample")
print("; ".join(f"{k} {v / samples:.1f}" for k, v in c.most_common(6)))
EOF
)"
        cat "$WORK/waits.$label$run" >>"$WORK/waits.$label"
    fi
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
log "$CLIENTS clients, $SESSIONS sessions, $REPLICAS replicas ($CONNS connections each; one replica: $ONE_CONNS), $SECS s per measurement"
for run in $(seq 1 "$RUNS"); do
    order=(three mixed one)
    case $(((run - 1) % 3)) in
        1) order=(one three mixed) ;;
        2) order=(mixed one three) ;;
    esac
    for config in "${order[@]}"; do
        case $config in
            three) measure three "$run" "$REPLICAS" "$CONNS" ;;
            mixed) measure mixed "$run" "$REPLICAS" "$CONNS" --mix ;;
            one) measure one "$run" 1 "$ONE_CONNS" ;;
        esac
    done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by = {}
for r in rows:
    by.setdefault(r[1], {})[r[0]] = r
def med(v, fmt):
    return f"{format(statistics.median(v), fmt):>10} ({format(min(v), fmt)}..{format(max(v), fmt)})"
print()
print(f"{len({r[0] for r in rows})} run(s); medians (min..max); CPU in % of one core during the load run")
for label in ["three", "mixed", "one"]:
    rs = list(by.get(label, {}).values())
    if not rs:
        continue
    print(f"  {label}:")
    for name, i, fmt in [("sends/s", 2, ",.0f"), ("latency p99, ms", 3, ".1f"),
                         ("CPU replicas", 4, ".0f"), ("CPU postgres (all its processes)", 5, ".0f"),
                         ("CPU load generator", 6, ".0f"), ("CPU machine, busy", 7, ".0f"),
                         ("CPU machine, capacity", 8, ".0f"), ("load average (1 min) at start", 9, ".2f")]:
        print(f"    {name:<36} {med([float(r[i]) for r in rs], fmt)}")
for label in ["three", "mixed"]:
    runs = [r for r in by.get(label, {}) if r in by.get("one", {})]
    if runs:
        ratios = [float(by[label][r][2]) / float(by["one"][r][2]) for r in runs]
        print(f"  {label} / one, same run                  {med(ratios, '.2f')}")
EOF
if [ "$WAITS" = 1 ]; then
    echo
    echo "backends of the database (state wait_event_type:wait_event), mean count per sample over all runs:"
    for label in three mixed one; do
        [ -f "$WORK/waits.$label" ] || continue
        python3 - "$WORK/waits.$label" "$label" <<'EOF'
import collections, sys
lines = open(sys.argv[1]).read().splitlines()
samples = max(1, lines.count("--sample"))
c = collections.Counter(l for l in lines if l and l != "--sample")
print(f"  {sys.argv[2]} ({samples} samples): " + "; ".join(f"{k} {v / samples:.1f}" for k, v in c.most_common(8)))
EOF
    done
fi
echo
echo "command: RUNS=$RUNS SECS=$SECS CLIENTS=$CLIENTS SESSIONS=$SESSIONS REPLICAS=$REPLICAS CONNS=$CONNS ONE_CONNS=$ONE_CONNS bench/sessions.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
