#!/usr/bin/env bash
# Import and parse benchmarks (issue 9, sections 1 and 2), each next to its baseline in the
# same run. One command:  bench/imports.sh   (RUNS=3 by default; RUNS=5 bench/imports.sh)
#
# Inputs (rendered when missing; see bench/README.md):
#   bench/out/corpus/          the chitchat corpus, 7,168 WhatsApp exports, 258,145 messages
#   bench/out/single/          one 10 MB Android export (render_single_chat.py), in a folder
#                              of its own for the single-chat sync
#   bench/out/telegram.json    one generated Telegram single-chat result.json (render_telegram.py)
# Baselines come from target/bench-venv (created here: whatstk 0.9, chat-miner 0.6 from PyPI).
#
# Each run, for the corpus and for the single chat:
#   1. `chatsync serve` on a fresh SQLite file; `chatsync sync bench --all --json`, timed from
#      the first frame to COMPLETED; the server's peak RSS (VmHWM); the same sync again
#      (re-sync of unchanged files), timed the same way;
#   2. bench/baselines.py executemany: the rows chatsync stored, written by Python's
#      sqlite3.executemany into a table shaped like ours (one transaction, WAL, one unique
#      index);
# then, on the single chat file, parse only: examples/parse_bench (median of 5 parses),
# whatstk and chat-miner; and on the Telegram file, parse_bench --format telegram and
# chat-miner. Medians over the runs at the end; instructions per message from one callgrind
# run of each parser (repeatable, whatever the load).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
CORPUS="$OUT/corpus"
SINGLE_DIR="$OUT/single"
SINGLE="$SINGLE_DIR/WhatsApp Chat with Single.txt"
TELEGRAM="$OUT/telegram.json"
RUNS="${RUNS:-3}"
BIN="$ROOT/target/release/chatsync"
PARSE="$ROOT/target/release/examples/parse_bench"
VENV="$ROOT/target/bench-venv"
PY="$VENV/bin/python"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-imports.XXXXXX")"
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

# Inputs.
python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2
mkdir -p "$SINGLE_DIR"
[[ -s "$SINGLE" ]] || python3 "$ROOT/bench/render_single_chat.py" "$SINGLE"
[[ -s "$TELEGRAM" ]] || python3 "$ROOT/bench/render_telegram.py" "$TELEGRAM"

# Baseline venv.
if ! "$PY" -c 'import whatstk, chatminer' 2>/dev/null; then
    log "creating $VENV (whatstk 0.9, chat-miner 0.6)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'whatstk==0.9.*' 'chat-miner==0.6.*'
fi

log "building target/release/chatsync and examples/parse_bench (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example parse_bench)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_listening() { # PORT PID
    for _ in $(seq 1 300); do
        if ! kill -0 "$2" 2>/dev/null; then
            log "server exited during start-up; log:"; cat "$WORK/server.log" >&2; return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "server did not listen on port $1 within 15 s"; return 1
}

# One sync through the CLI: prints "SECONDS TOTAL_MESSAGES_SYNCED FAILED_CHATS", SECONDS from
# the first frame to the COMPLETED frame.
timed_sync() { # PORT
    python3 - "$BIN" "$1" <<'PYEOF'
import json, subprocess, sys, time
binary, port = sys.argv[1], sys.argv[2]
cmd = [binary, "sync", "bench", "--all", "--server", f"http://127.0.0.1:{port}", "--json"]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1 << 16)
first = completed = frame = None
failed = 0
for line in proc.stdout:
    now = time.monotonic()
    first = first or now
    frame = json.loads(line)
    failed += frame["stage"] == "SYNC_STAGE_CHAT_FAILED"
    if frame["stage"] == "SYNC_STAGE_COMPLETED":
        completed = now
        break
for _ in proc.stdout:
    pass
if proc.wait() != 0 or completed is None:
    sys.exit(f"sync failed (exit {proc.returncode}), last frame: {frame}")
print(f"{completed - first:.4f} {frame['totalMessagesSynced']} {failed}")
PYEOF
}

result() { # KEY LINE
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; } # RUN KEY VALUE

# A sync benchmark: serve, sync, re-sync, RSS, then the executemany baseline of the same rows.
sync_bench() { # RUN LABEL FOLDER
    local run="$1" label="$2" folder="$3"
    local dir="$WORK/$label-$run" port
    mkdir -p "$dir"
    port="$(free_port)"
    cat >"$dir/chatsync.toml" <<TOML
listen = "127.0.0.1:$port"
database_url = "sqlite://$dir/chatsync.db"

[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$folder"
TOML
    "$BIN" serve --config "$dir/chatsync.toml" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$port" "$SERVER_PID"
    local sync_s messages failed resync_s resync_messages rss_kb
    read -r sync_s messages failed <<<"$(timed_sync "$port")"
    rss_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")"
    read -r resync_s resync_messages _ <<<"$(timed_sync "$port")"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    local base base_rows base_s
    base="$("$PY" "$ROOT/bench/baselines.py" executemany "$dir/chatsync.db" "$dir/baseline.db" | grep '^RESULT ')"
    base_rows="$(result rows "$base")"; base_s="$(result seconds "$base")"
    [[ "$base_rows" == "$messages" ]] || { log "baseline rows $base_rows != synced $messages"; exit 1; }
    record "$run" "$label.sync_rate" "$(python3 -c "print($messages / $sync_s)")"
    record "$run" "$label.sync_s" "$sync_s"
    record "$run" "$label.messages" "$messages"
    record "$run" "$label.failed" "$failed"
    record "$run" "$label.rss_mb" "$(python3 -c "print($rss_kb / 1024)")"
    record "$run" "$label.resync_s" "$resync_s"
    record "$run" "$label.resync_messages" "$resync_messages"
    record "$run" "$label.resync_ratio" "$(python3 -c "print($resync_s / $sync_s)")"
    record "$run" "$label.executemany_rate" "$(python3 -c "print($base_rows / $base_s)")"
    record "$run" "$label.ratio" "$(python3 -c "print(($messages / $sync_s) / ($base_rows / $base_s))")"
    local fts fts_s
    fts="$("$PY" "$ROOT/bench/baselines.py" executemany-fts "$dir/chatsync.db" "$dir/baseline-fts.db" | grep '^RESULT ')"
    fts_s="$(result seconds "$fts")"
    record "$run" "$label.executemany_fts_rate" "$(python3 -c "print($base_rows / $fts_s)")"
    record "$run" "$label.fts_ratio" "$(python3 -c "print(($messages / $sync_s) / ($base_rows / $fts_s))")"
    log "run $run $label: sync ${sync_s}s ($messages messages, $failed failed chats), peak RSS ${rss_kb} kB, re-sync ${resync_s}s ($resync_messages new); executemany ${base_s}s, executemany + FTS5 rebuild ${fts_s}s ($base_rows rows)"
    rm -rf "$dir"
}

# A parse benchmark: parse_bench's median of 5, then the Python parsers, on the same file.
parse_bench() { # RUN LABEL FORMAT FILE PY_PARSERS...
    local run="$1" label="$2" format="$3" file="$4"; shift 4
    local out messages median
    out="$("$PARSE" "$file" --format "$format" --runs 5 | grep '^RESULT ')"
    messages="$(result messages "$out")"; median="$(result median_s "$out")"
    record "$run" "$label.chatsync_rate" "$(python3 -c "print($messages / $median)")"
    record "$run" "$label.chatsync_messages" "$messages"
    local line="run $run $label: chatsync $messages messages in ${median}s"
    for parser in "$@"; do
        out="$("$PY" "$ROOT/bench/baselines.py" "$parser" "$file" 2>>"$WORK/python.log" | grep '^RESULT ')"
        local rows seconds
        rows="$(result rows "$out")"; seconds="$(result seconds "$out")"
        record "$run" "$label.$parser.rate" "$(python3 -c "print($rows / $seconds)")"
        record "$run" "$label.$parser.rows" "$rows"
        record "$run" "$label.$parser.ratio" "$(python3 -c "print(($messages / $median) / ($rows / $seconds))")"
        line="$line; $parser $rows rows in ${seconds}s"
    done
    log "$line"
}

for run in $(seq 1 "$RUNS"); do
    sync_bench "$run" corpus "$CORPUS"
    sync_bench "$run" single "$SINGLE_DIR"
    [[ "${IMPORTS_ONLY:-0}" == 1 ]] && continue
    parse_bench "$run" whatsapp_parse whatsapp "$SINGLE" whatstk chatminer-whatsapp
    parse_bench "$run" telegram_parse telegram "$TELEGRAM" chatminer-telegram
done

# Instructions per message (callgrind counts instructions: the same for the same binary and
# input, whatever else the machine does). Inclusive count of the parser's entry function.
instructions() { # FORMAT FILE FUNCTION
    local cg="$WORK/cg.$1.out"
    valgrind --tool=callgrind --callgrind-out-file="$cg" "$PARSE" "$2" --format "$1" --runs 1 >/dev/null 2>&1
    # awk reads to the end (no early exit), so callgrind_annotate never meets a closed pipe.
    { callgrind_annotate --inclusive=yes "$cg" 2>/dev/null || true; } |
        awk -v pattern="$3" '!found && $0 ~ pattern {gsub(",", "", $1); print $1; found = 1}'
}
if [[ "${IMPORTS_ONLY:-0}" != 1 ]] && command -v valgrind >/dev/null; then
    wa_ir="$(instructions whatsapp "$SINGLE" 'whatsapp::parser::parse$')"
    tg_ir="$(instructions telegram "$TELEGRAM" 'telegram::parser::parse$')"
    record 0 whatsapp_parse.instructions "${wa_ir:-0}"
    record 0 telegram_parse.instructions "${tg_ir:-0}"
fi

python3 - "$RESULTS" "$RUNS" <<'PYEOF'
import collections, statistics, sys
values = collections.defaultdict(list)
for line in open(sys.argv[1]):
    run, key, value = line.rstrip("\n").split("\t")
    values[key].append(float(value))
def show(label, key, fmt=",.0f", unit=""):
    vals = values.get(key)
    if not vals:
        return
    print(f"  {label:<58} {format(statistics.median(vals), fmt):>12} {unit:<4} "
          f"({format(min(vals), fmt)}..{format(max(vals), fmt)})")
print(f"\n{sys.argv[2]} run(s); medians (min..max over the runs)")
for label, name in (("corpus", "corpus (7,168 chats)"), ("single", "single chat")):
    print(f"{name}, SQLite:")
    show("chatsync full sync, messages/s", f"{label}.sync_rate")
    show("chatsync full sync, s", f"{label}.sync_s", ".3f", "s")
    show("messages stored", f"{label}.messages")
    show("chats failed", f"{label}.failed")
    show("executemany of the same rows (Python sqlite3), rows/s", f"{label}.executemany_rate")
    show("ratio chatsync / executemany", f"{label}.ratio", ".2f")
    show("executemany + FTS5 rebuild (Python sqlite3), rows/s", f"{label}.executemany_fts_rate")
    show("ratio chatsync / (executemany + FTS5 rebuild)", f"{label}.fts_ratio", ".2f")
    show("peak RSS of the server (VmHWM), MB", f"{label}.rss_mb", ".1f", "MB")
    show("re-sync of the unchanged files, s", f"{label}.resync_s", ".3f", "s")
    show("re-sync / full sync", f"{label}.resync_ratio", ".3f")
    show("messages stored by the re-sync", f"{label}.resync_messages")
for label, name, parsers in (("whatsapp_parse", "WhatsApp parse only, single chat", ("whatstk", "chatminer-whatsapp")),
                             ("telegram_parse", "Telegram parse only, result.json", ("chatminer-telegram",))):
    print(f"{name}:")
    show("chatsync parser, messages/s (median of 5 parses)", f"{label}.chatsync_rate")
    show("messages", f"{label}.chatsync_messages")
    for parser in parsers:
        show(f"{parser}, rows/s", f"{label}.{parser}.rate")
        show(f"{parser}, rows", f"{label}.{parser}.rows")
        show(f"ratio chatsync / {parser}", f"{label}.{parser}.ratio", ".1f")
    instr = values.get(f"{label}.instructions")
    msgs = values.get(f"{label}.chatsync_messages")
    if instr and msgs and instr[0]:
        print(f"  {'instructions in parse (callgrind)':<58} {instr[0]:>12,.0f}      ({instr[0] / msgs[0]:,.0f} per message)")
PYEOF
echo
echo "command: RUNS=$RUNS bench/imports.sh; commit $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src examples || echo '+changes'); $(nproc) cores"
