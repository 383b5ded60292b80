#!/usr/bin/env bash
# GetSnapshot of the chitchat corpus session (issue 11): 7,168 chats, 50 messages per chat.
# One command:  bench/snapshot.sh   (RUNS=3 by default; PG= the PostgreSQL server URL, default
# postgres://postgres@127.0.0.1:5432; BACKENDS="sqlite postgres" by default; BIN= another
# chatsync binary, default target/release/chatsync)
#
# Per backend: a fresh database, `chatsync serve` (release build), `chatsync sync bench --all`
# over bench/out/corpus (rendered when missing, see bench/README.md). Then per run: a fresh
# `chatsync serve` on that database (so its peak RSS is the snapshot's, not the import's), and
# `chatsync snapshot bench --limit-per-chat 50 --json` timed from the request to the last frame
# (Python reads the CLI's lines as they come), with the server's RSS before (VmRSS) and its peak
# (VmHWM) after. Medians over the runs at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/bench/out/corpus"
RUNS="${RUNS:-3}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BACKENDS="${BACKENDS:-sqlite postgres}"
BIN="${BIN:-$ROOT/target/release/chatsync}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-snapshot.XXXXXX")"
SERVER_PID=""
PG_DB="chatsync_snapshot_bench_$$"
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2
[[ -x "$BIN" ]] || cargo build --release --bin chatsync --manifest-path "$ROOT/Cargo.toml"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

serve() { # DATABASE_URL PORT
    cat >"$WORK/chatsync.toml" <<TOML
listen = "127.0.0.1:$2"
database_url = "$1"

[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$CORPUS"
TOML
    "$BIN" serve --config "$WORK/chatsync.toml" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server exited during start-up; log:"; cat "$WORK/server.log" >&2; exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "server did not listen on port $2 within 15 s"; exit 1
}

stop() {
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# One snapshot through the CLI: prints "SECONDS_TO_FIRST SECONDS_TO_LAST FRAMES MESSAGES".
timed_snapshot() { # PORT
    python3 - "$BIN" "$1" <<'PYEOF'
import json, subprocess, sys, time
binary, port = sys.argv[1], sys.argv[2]
cmd = [binary, "snapshot", "bench", "--limit-per-chat", "50", "--json",
       "--server", f"http://127.0.0.1:{port}"]
start = time.monotonic()
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1 << 16)
first = last = None
frames = messages = 0
for line in proc.stdout:
    now = time.monotonic()
    first = first or now
    last = now
    frame = json.loads(line)
    frames += 1
    messages += len(frame.get("messages", []))
if proc.wait() != 0 or last is None:
    sys.exit(f"snapshot failed (exit {proc.returncode})")
print(f"{first - start:.4f} {last - start:.4f} {frames} {messages}")
PYEOF
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for backend in $BACKENDS; do
    case "$backend" in
        sqlite) url="sqlite://$WORK/chatsync.db" ;;
        postgres)
            psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
            psql "$PG/postgres" -qc "CREATE DATABASE $PG_DB" >/dev/null
            url="$PG/$PG_DB" ;;
        *) log "unknown backend $backend"; exit 2 ;;
    esac
    port="$(free_port)"
    serve "$url" "$port"
    log "$backend: syncing the corpus"
    "$BIN" sync bench --all --json --server "http://127.0.0.1:$port" >/dev/null
    stop
    for run in $(seq 1 "$RUNS"); do
        port="$(free_port)"
        serve "$url" "$port"
        idle_kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")"
        read -r first_s last_s frames messages <<<"$(timed_snapshot "$port")"
        peak_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
        stop
        log "$backend run $run: first frame ${first_s}s, last frame ${last_s}s, $frames frames, $messages messages, RSS ${idle_kb} kB before, peak ${peak_kb} kB"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$first_s" "$last_s" "$frames" "$messages" "$idle_kb" "$peak_kb" >>"$RESULTS"
    done
done

python3 - "$RESULTS" <<'PYEOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
print("| backend | first frame | last frame (median, range) | frames | messages | server RSS before | server peak RSS |")
print("|---|---|---|---|---|---|---|")
for backend in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == backend]
    col = lambda i: [float(r[i]) for r in mine]
    last = col(2)
    print(f"| {backend} | {statistics.median(col(1)):.3f} s | **{statistics.median(last):.2f} s** "
          f"({min(last):.2f}..{max(last):.2f}) | {mine[0][3]} | {mine[0][4]} | "
          f"{statistics.median(col(5)) / 1024:.1f} MB | **{statistics.median(col(6)) / 1024:.1f} MB** |")
PYEOF
