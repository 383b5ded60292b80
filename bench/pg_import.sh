#!/usr/bin/env bash
# PostgreSQL import benchmark: the chitchat corpus (7,168 WhatsApp exports, 258,145 messages)
# synced through a real `chatsync serve` on PostgreSQL, against `psql \copy` of the very same
# rows into the same schema (same indexes), in the same run.
#
# Usage: bench/pg_import.sh              (RUNS=3 by default)
#        PG=postgres://postgres@127.0.0.1:5432 RUNS=5 bench/pg_import.sh
#
# Each run:
#   1. creates a fresh database, starts `chatsync serve` on it (port 0, read from stdout);
#   2. `chatsync sync bench --all --json`: time from the first frame to COMPLETED;
#   3. the same sync again (re-sync of the unchanged corpus), timed the same way;
#   4. exports the stored `messages` rows to CSV, creates a second database with the same
#      schema (`pg_dump --schema-only`), and times `psql \copy messages (…) FROM` the CSV:
#      the baseline is a bulk load of exactly the rows chatsync wrote, into the same table with
#      the same unique indexes, with no parsing at all;
#   5. the issue's baseline: `\copy` of the same CSV into a plain table with no index, then one
#      GIN index over `to_tsvector('simple', text)` built over all the rows (what a user who
#      wants only the texts searchable, and loads into an empty database, would do);
#   6. issue 22 part 2: the same rows into the same schema in transactions of 10,000 rows, by
#      `COPY … FROM STDIN` against chatsync's `INSERT … SELECT FROM UNNEST` of column arrays
#      (`examples/pg_copy_unnest.rs`, two loads of each, alternating).
# Then prints the medians over the runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/bench/out/corpus"
RUNS="${RUNS:-3}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BIN="${BIN:-$ROOT/target/release/chatsync}"  # BIN=… for a before/after run

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-pgbench.XXXXXX")"
SERVER_PID=""
DBS=()
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    for db in "${DBS[@]}"; do
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }

python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2
log "building target/release/chatsync (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example pg_copy_unnest)

# One sync through the CLI; prints "SECONDS TOTAL_MESSAGES_SYNCED".
timed_sync() { # URL
    python3 - "$BIN" "$1" <<'EOF'
import json, subprocess, sys, time
binary, url = sys.argv[1], sys.argv[2]
proc = subprocess.Popen([binary, "sync", "bench", "--all", "--server", url, "--json"],
                        stdout=subprocess.PIPE, text=True, bufsize=1 << 16)
first = completed = frame = None
for line in proc.stdout:
    t = time.monotonic()
    first = first or t
    frame = json.loads(line)
    if frame["stage"] == "SYNC_STAGE_COMPLETED":
        completed = t
        break
for _ in proc.stdout:
    pass
if proc.wait() != 0 or completed is None:
    sys.exit(f"sync failed, last frame: {frame}")
print(f"{completed - first:.4f} {frame['totalMessagesSynced']}")
EOF
}

COLUMNS="session_id, chat_id, provider_message_id, client_message_id, sender, text, kind, status, from_me, sent_at, seq, updated_at"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for run in $(seq 1 "$RUNS"); do
    db="chatsync_bench_$$_$run"; copy_db="chatsync_copy_$$_$run"
    DBS+=("$db" "$copy_db")
    psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
    cat >"$WORK/chatsync.toml" <<EOF
listen = "127.0.0.1:0"
database_url = "$PG/$db"

[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$CORPUS"
EOF
    "$BIN" serve --config "$WORK/chatsync.toml" >"$WORK/server.out" 2>"$WORK/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$WORK/server.out" 2>/dev/null && break
        kill -0 "$SERVER_PID" || { cat "$WORK/server.log" >&2; exit 1; }
        sleep 0.05
    done
    url="$(sed -n 's/^chatsync listening on //p' "$WORK/server.out")"
    read -r sync_s messages <<<"$(timed_sync "$url")"
    read -r resync_s resync_messages <<<"$(timed_sync "$url")"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""

    psql "$PG/$db" -qc "\\copy (SELECT $COLUMNS FROM messages ORDER BY seq) TO '$WORK/messages.csv' CSV"
    psql "$PG/postgres" -qc "CREATE DATABASE $copy_db" >/dev/null
    pg_dump --schema-only "$PG/$db" | psql -q "$PG/$copy_db" >/dev/null
    psql "$PG/$copy_db" -qc "INSERT INTO sessions (id, source) VALUES ('bench', 'whatsapp-export')" >/dev/null
    start="$(now)"
    psql "$PG/$copy_db" -qc "\\copy messages ($COLUMNS) FROM '$WORK/messages.csv' CSV"
    copy_s="$(python3 -c "print(f'{$(now) - $start:.4f}')")"
    copied="$(psql "$PG/$copy_db" -qAtc "SELECT count(*) FROM messages")"
    # The second baseline (the issue's): the same rows into a plain table with no index, then
    # one GIN index over to_tsvector('simple', text) built over them all.
    psql "$PG/$copy_db" -qc "CREATE TABLE plain (session_id text, chat_id text, provider_message_id text,
        client_message_id text, sender text, text text, kind int2, status int2, from_me bool,
        sent_at int8, seq int8, updated_at int8)"
    start="$(now)"
    psql "$PG/$copy_db" -qc "\\copy plain ($COLUMNS) FROM '$WORK/messages.csv' CSV" \
        -c "CREATE INDEX plain_words ON plain USING gin (to_tsvector('simple', text))"
    plain_s="$(python3 -c "print(f'{$(now) - $start:.4f}')")"
    psql "$PG/$copy_db" -qc "DROP TABLE plain" >/dev/null
    "$ROOT/target/release/examples/pg_copy_unnest" --source "$PG/$db" --target "$PG/$copy_db" \
        --runs 2 >"$WORK/copy_unnest.out"
    cat "$WORK/copy_unnest.out" >&2
    read -r copy_chunks unnest_chunks <<<"$(sed -n 's/.*median COPY \([0-9]*\) rows\/s, UNNEST \([0-9]*\) rows\/s.*/\1 \2/p' "$WORK/copy_unnest.out")"

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$sync_s" "$messages" "$resync_s" "$resync_messages" \
        "$copy_s" "$copied" "$plain_s" "$copy_chunks" "$unnest_chunks" >>"$RESULTS"
    log "run $run: sync ${sync_s}s ($messages messages), re-sync ${resync_s}s ($resync_messages new), \\copy ${copy_s}s ($copied rows), plain \\copy + GIN ${plain_s}s"
    psql "$PG/postgres" -qc "DROP DATABASE $db WITH (FORCE)" -c "DROP DATABASE $copy_db WITH (FORCE)" >/dev/null
    rm -f "$WORK/messages.csv"
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
runs = []
for line in open(sys.argv[1]).read().splitlines():
    run, sync_s, msgs, resync_s, resync_msgs, copy_s, copied, plain_s, copy_chunks, unnest_chunks = line.split("\t")
    sync_s, msgs, resync_s, copy_s, copied, plain_s = float(sync_s), int(msgs), float(resync_s), float(copy_s), int(copied), float(plain_s)
    runs.append(dict(rate=msgs / sync_s, sync_s=sync_s, msgs=msgs, resync_s=resync_s,
                     resync_msgs=int(resync_msgs), copy_rate=copied / copy_s, copy_s=copy_s,
                     ratio=(msgs / sync_s) / (copied / copy_s), resync_frac=resync_s / sync_s,
                     plain_rate=copied / plain_s, plain_ratio=(msgs / sync_s) / (copied / plain_s),
                     copy_chunks=float(copy_chunks), unnest_chunks=float(unnest_chunks),
                     copy_unnest=float(copy_chunks) / float(unnest_chunks)))
print()
print(f"{len(runs)} run(s); medians (min..max)")
def line(label, key, fmt, unit=""):
    vals = [r[key] for r in runs]
    print(f"  {label:<44} {format(statistics.median(vals), fmt):>10} {unit:<4} ({format(min(vals), fmt)}..{format(max(vals), fmt)})")
line("chatsync full sync, messages/s", "rate", ",.0f")
line("chatsync full sync, seconds", "sync_s", ".2f", "s")
line("messages stored", "msgs", ",d")
line("psql \\copy of the same rows, rows/s", "copy_rate", ",.0f")
line("psql \\copy, seconds", "copy_s", ".2f", "s")
line("ratio chatsync / \\copy", "ratio", ".2f")
line("\\copy into a plain table + GIN after, rows/s", "plain_rate", ",.0f")
line("ratio chatsync / (plain \\copy + GIN)", "plain_ratio", ".2f")
line("10,000-row transactions by COPY, rows/s", "copy_chunks", ",.0f")
line("10,000-row transactions by UNNEST, rows/s", "unnest_chunks", ",.0f")
line("ratio COPY / UNNEST (same rows, same schema)", "copy_unnest", ".2f")
line("re-sync of the unchanged corpus, seconds", "resync_s", ".2f", "s")
line("re-sync / full sync", "resync_frac", ".2f")
line("messages stored by the re-sync", "resync_msgs", ",d")
EOF
echo
echo "command: RUNS=$RUNS bench/pg_import.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
