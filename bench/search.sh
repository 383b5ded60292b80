#!/usr/bin/env bash
# Search benchmark (issue 11, section 5): SearchMessages latency over the chitchat corpus
# (bench/README.md; 7,168 chats, 258,145 messages) and the size of the search indexes, on
# SQLite and on PostgreSQL. One command:  bench/search.sh
#
#   PG=postgres://postgres@127.0.0.1:5432 (the default) names the PostgreSQL server; a fresh
#   database is created and dropped. PG= (empty) skips PostgreSQL.
#   CORPUS=DIR, BIN=chatsync and SEARCH_BENCH=search_bench override the inputs (a smoke test
#   with debug builds on a few files; the figures in BENCHMARKS.md use the defaults).
#
# For each backend: `chatsync serve` (release) with one whatsapp-export session over the
# corpus, `chatsync sync bench --all` (timed: the import now also fills the search indexes),
# then examples/search_bench: the 100 queries of bench/search_queries.txt (single words from
# very common to absent, phrases, one with a diacritic, one CJK), a warm-up round, then 5
# measured rounds, one query at a time, first page (limit 20); p50/p99/max per call. Then the
# index sizes: SQLite from dbstat (the FTS5 tables' shadow tables), PostgreSQL from
# pg_relation_size of the GIN indexes plus the stored tsvector column. Last, per backend, the
# same sync into a database whose search indexes were dropped after migrating (SQLite: the two
# triggers, and the FTS5 tables replaced by plain tables that take the writer's inserts;
# PostgreSQL: the generated column and the trigram index), for the indexes'
# import cost in the same run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="${CORPUS:-$ROOT/bench/out/corpus}"
QUERIES="$ROOT/bench/search_queries.txt"
BIN="${BIN:-$ROOT/target/release/chatsync}"
SEARCH="${SEARCH_BENCH:-$ROOT/target/release/examples/search_bench}"
PG="${PG-postgres://postgres@127.0.0.1:5432}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-search.XXXXXX")"
SERVER_PID=""
DB=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$DB" ]]; then
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

if [[ "$CORPUS" == "$ROOT/bench/out/corpus" ]]; then
    python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2
fi
if [[ "$BIN" == "$ROOT/target/release/chatsync" ]]; then
    log "building target/release/chatsync and examples/search_bench (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin chatsync --example search_bench)
fi

# serve LABEL DATABASE_URL: starts the server; sets SERVER_URL and SERVER_PID.
serve() {
    local label="$1" url="$2"
    cat >"$WORK/$label.toml" <<TOML
listen = "127.0.0.1:0"
database_url = "$url"
[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$CORPUS"
TOML
    : >"$WORK/$label.out"
    "$BIN" serve --config "$WORK/$label.toml" >"$WORK/$label.out" 2>"$WORK/$label.log" &
    SERVER_PID=$!
    SERVER_URL=""
    for _ in $(seq 1 600); do
        SERVER_URL="$(sed -n 's/^chatsync listening on //p' "$WORK/$label.out" 2>/dev/null)"
        [[ -n "$SERVER_URL" ]] && break
        sleep 0.05
    done
    [[ -n "$SERVER_URL" ]] || { cat "$WORK/$label.log" >&2; exit 1; }
}
stop() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
# timed_sync LABEL: the whole corpus through the CLI; prints seconds.
timed_sync() {
    local started ended
    started="$(date +%s.%N)"
    "$BIN" sync bench --all --json --server "$SERVER_URL" >"$WORK/$1.sync"
    ended="$(date +%s.%N)"
    tail -n 1 "$WORK/$1.sync" | grep -q COMPLETED || { log "sync did not complete"; tail -n 3 "$WORK/$1.sync" >&2; exit 1; }
    printf '%.2f\n' "$(echo "$ended - $started" | bc)"
}
# run LABEL DATABASE_URL: serve, sync, search; prints "SYNC_SECONDS JSON".
run() {
    serve "$1" "$2"
    local sync_s result
    sync_s="$(timed_sync "$1")"
    result="$("$SEARCH" "$SERVER_URL" bench "$QUERIES" 5)"
    stop
    echo "$sync_s $result"
}
# baseline LABEL DATABASE_URL DROP_SQL_COMMAND...: migrate, drop the search indexes with the
# command, then time the same sync without them (the import cost of the indexes, same run).
baseline() {
    local label="$1" url="$2"
    shift 2
    serve "$label" "$url"
    stop
    "$@"
    serve "$label" "$url"
    timed_sync "$label"
    stop
}

log "== SQLite"
read -r sync_s result <<<"$(run sqlite "sqlite://$WORK/search.db")"
sizes="$(python3 - "$WORK/search.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def size(pattern):
    return db.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE ?", (pattern,)).fetchone()[0]
# The shadow tables (and their automatic indexes) of each FTS5 table.
trigram = size("%messages_fts_trigram%")
words = size("%messages_fts%") - trigram
total = db.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").fetchone()[0]
print(f"words={words / 2**20:.1f}MiB trigram={trigram / 2**20:.1f}MiB database={total / 2**20:.1f}MiB")
PY
)"
base_s="$(baseline sqlite-base "sqlite://$WORK/base.db" python3 -c '
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("DROP TRIGGER messages_search_delete; DROP TRIGGER messages_search_update; "
    "DROP TABLE messages_fts; DROP TABLE messages_fts_trigram; "
    "CREATE TABLE messages_fts (text); CREATE TABLE messages_fts_trigram (text);")
' "$WORK/base.db")"
echo "sqlite sync_s=$sync_s sync_without_search_indexes_s=$base_s $result $sizes"

if [[ -n "$PG" ]]; then
    log "== PostgreSQL"
    DB="chatsync_search_bench_$$"
    psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
    read -r sync_s result <<<"$(run postgres "$PG/$DB")"
    sizes="$(psql "$PG/$DB" -qAtc "SELECT 'tsvector_gin=' || round(pg_relation_size('messages_search_vector') / 1048576.0, 1) || 'MiB'
        || ' tsvector_column=' || round(sum(pg_column_size(search_vector)) / 1048576.0, 1) || 'MiB'
        || ' trigram_gin=' || COALESCE(round(pg_relation_size(to_regclass('messages_text_trigram')) / 1048576.0, 1)::text, 'none') || 'MiB'
        || ' messages_table=' || round(pg_total_relation_size('messages') / 1048576.0, 1) || 'MiB' FROM messages")"
    psql "$PG/postgres" -qc "DROP DATABASE $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    base_s="$(baseline postgres-base "$PG/$DB" psql "$PG/$DB" -qc "DROP INDEX IF EXISTS messages_text_trigram" -c "ALTER TABLE messages DROP COLUMN search_vector")"
    echo "postgres sync_s=$sync_s sync_without_search_indexes_s=$base_s $result $sizes"
fi
