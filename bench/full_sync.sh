#!/usr/bin/env bash
# Full-sync benchmark: the chitchat corpus (7,168 WhatsApp exports, 258,145 messages) synced
# through a real `chatsync serve` on SQLite, against the raw sqlx baseline
# (examples/raw_baseline.rs) on the same corpus, in the same run.
#
# Usage: bench/full_sync.sh            (from anywhere; RUNS=3 by default)
#        RUNS=5 bench/full_sync.sh
#
# Each run:
#   1. starts `chatsync serve` on a free port with a fresh SQLite file (temp dir);
#   2. `chatsync sync bench --all --json`: time from the first frame to the COMPLETED frame,
#      and totalMessagesSynced from that frame;
#   3. the server's peak RSS (VmHWM in /proc/PID/status) after the sync;
#   4. the same sync again (re-sync of the unchanged corpus), timed the same way;
#   5. stops the server, then runs the raw baseline into another fresh SQLite file.
# Then prints the medians over the runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/bench/out/corpus"
RUNS="${RUNS:-3}"
BIN="$ROOT/target/release/chatsync"
BASELINE="$ROOT/target/release/examples/raw_baseline"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# 1. Corpus (idempotent: a no-op when bench/out/corpus/.complete matches).
python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2

# 2. Binaries (release).
log "building target/release/chatsync and examples/raw_baseline (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example raw_baseline)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_listening() { # PORT PID
    for _ in $(seq 1 300); do
        if ! kill -0 "$2" 2>/dev/null; then
            log "server exited during start-up; log:"; cat "$WORK/server.log" >&2; return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    log "server did not listen on port $1 within 15 s"; return 1
}

# Runs one sync through the CLI; prints "SECONDS TOTAL_MESSAGES_SYNCED N_CHATS FAILED_CHATS",
# SECONDS from the first frame to the COMPLETED frame.
timed_sync() { # PORT
    python3 - "$BIN" "$1" <<'EOF'
import json, subprocess, sys, time
binary, port = sys.argv[1], sys.argv[2]
cmd = [binary, "sync", "bench", "--all", "--server", f"http://127.0.0.1:{port}", "--json"]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1 << 16)
first = completed = None
frame = None
failed = 0
for line in proc.stdout:
    now = time.monotonic()
    if first is None:
        first = now
    frame = json.loads(line)
    if frame["stage"] == "SYNC_STAGE_CHAT_FAILED":
        failed += 1
    if frame["stage"] == "SYNC_STAGE_COMPLETED":
        completed = now
        break
for _ in proc.stdout:
    pass
if proc.wait() != 0 or completed is None:
    sys.exit(f"sync failed (exit {proc.returncode}), last frame: {frame}")
print(f"{completed - first:.4f} {frame['totalMessagesSynced']} {frame['nChats']} {failed}")
EOF
}

vm_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for run in $(seq 1 "$RUNS"); do
    dir="$WORK/run$run"
    mkdir -p "$dir"
    port="$(free_port)"
    cat >"$dir/chatsync.toml" <<EOF
listen = "127.0.0.1:$port"
database_url = "sqlite://$dir/chatsync.db"

[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$CORPUS"
EOF
    "$BIN" serve --config "$dir/chatsync.toml" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$port" "$SERVER_PID"

    out="$(timed_sync "$port")"
    read -r sync_s messages n_chats failed <<<"$out"
    rss_kb="$(vm_hwm_kb "$SERVER_PID")"
    out="$(timed_sync "$port")"
    read -r resync_s resync_messages _ resync_failed <<<"$out"
    rss_after_resync_kb="$(vm_hwm_kb "$SERVER_PID")"

    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""

    baseline_out="$("$BASELINE" "$CORPUS" "$dir/baseline.db")"
    result_line="$(grep '^RESULT ' <<<"$baseline_out")"
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result_line"; }
    b_messages="$(get messages)"; b_parse="$(get parse_s)"; b_insert="$(get insert_s)"

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$sync_s" "$messages" "$n_chats" \
        "$failed" "$rss_kb" "$resync_s" "$resync_messages" "$rss_after_resync_kb" \
        "$b_messages" "$b_parse" "$b_insert" >>"$RESULTS"
    log "run $run: sync ${sync_s}s ($messages messages, $n_chats chats, $failed failed), peak RSS ${rss_kb} kB," \
        "re-sync ${resync_s}s ($resync_messages new), baseline parse ${b_parse}s + insert ${b_insert}s ($b_messages messages)"
    rm -rf "$dir"
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
runs = []
for r in rows:
    (run, sync_s, msgs, chats, failed, rss, resync_s, resync_msgs, rss2, b_msgs, b_parse, b_insert) = r
    sync_s, msgs, resync_s, b_parse, b_insert = float(sync_s), int(msgs), float(resync_s), float(b_parse), float(b_insert)
    b_msgs = int(b_msgs)
    runs.append(dict(
        sync_rate=msgs / sync_s, sync_s=sync_s, msgs=msgs, failed=int(failed), resync_s=resync_s,
        resync_msgs=int(resync_msgs), rss_mb=int(rss) / 1024, rss2_mb=int(rss2) / 1024,
        b_insert_rate=b_msgs / b_insert, b_total_rate=b_msgs / (b_parse + b_insert),
        b_parse_s=b_parse, b_insert_s=b_insert, b_msgs=b_msgs,
        ratio_total=(msgs / sync_s) / (b_msgs / (b_parse + b_insert)),
        ratio_insert=(msgs / sync_s) / (b_msgs / b_insert),
        resync_frac=resync_s / sync_s,
    ))
med = lambda k: statistics.median(r[k] for r in runs)
print()
print(f"{len(runs)} run(s); medians (each run's values: min..max)")
def line(label, key, fmt, unit=""):
    vals = [r[key] for r in runs]
    print(f"  {label:<44} {format(med(key), fmt):>10} {unit:<12} ({format(min(vals), fmt)}..{format(max(vals), fmt)})")
line("chatsync full sync, messages/s", "sync_rate", ",.0f")
line("chatsync full sync, seconds", "sync_s", ".2f", "s")
line("messages stored (first sync)", "msgs", ",d")
line("re-sync of the unchanged corpus, seconds", "resync_s", ".2f", "s")
line("re-sync / full sync", "resync_frac", ".2f")
line("messages stored by the re-sync", "resync_msgs", ",d")
line("server peak RSS after full sync (VmHWM)", "rss_mb", ".1f", "MB")
line("server peak RSS after re-sync (VmHWM)", "rss2_mb", ".1f", "MB")
line("raw baseline parse (read+parse+ids), s", "b_parse_s", ".2f", "s")
line("raw baseline insert only, s", "b_insert_s", ".2f", "s")
line("raw baseline insert only, messages/s", "b_insert_rate", ",.0f")
line("raw baseline parse+insert, messages/s", "b_total_rate", ",.0f")
line("ratio chatsync / baseline parse+insert", "ratio_total", ".2f")
line("ratio chatsync / baseline insert only", "ratio_insert", ".2f")
if any(r["failed"] for r in runs):
    print("  WARNING: some chats failed")
EOF
echo
echo "command: RUNS=$RUNS bench/full_sync.sh"
