#!/usr/bin/env bash
# Search benchmark (issue 11, section 5): SearchMessages latency over the chitchat corpus
# (bench/README.md; 7,168 chats, 258,145 messages) and the size of the search indexes, on
# SQLite and on PostgreSQL. One command:  bench/search.sh
#
#   PG=postgres://postgres@127.0.0.1:5432 (the default) names the PostgreSQL server; a fresh
#   database is created and dropped. PG= (empty) skips PostgreSQL.
#
# For each backend: `chatsync serve` (release) with one whatsapp-export session over the
# corpus, `chatsync sync bench --all` (timed: the import now also fills the search indexes),
# then examples/search_bench: the 100 queries of bench/search_queries.txt (single words from
# very common to absent, phrases, one with a diacritic, one CJK), a warm-up round, then 5
# measured rounds, one query at a time, first page (limit 20); p50/p99/max per call. Then the
# index sizes: SQLite from dbstat (the FTS5 tables' shadow tables), PostgreSQL from
# pg_relation_size of the GIN indexes plus the stored tsvector column.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/bench/out/corpus"
QUERIES="$ROOT/bench/search_queries.txt"
BIN="$ROOT/target/release/chatsync"
SEARCH="$ROOT/target/release/examples/search_bench"
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

python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >&2
log "building target/release/chatsync and examples/search_bench (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example search_bench)

# run LABEL DATABASE_URL: serve, sync, search; prints "SYNC_SECONDS JSON".
run() {
    local label="$1" url="$2"
    cat >"$WORK/$label.toml" <<TOML
listen = "127.0.0.1:0"
database_url = "$url"
[[sessions]]
id = "bench"
source = "whatsapp-export"
path = "$CORPUS"
TOML
    "$BIN" serve --config "$WORK/$label.toml" >"$WORK/$label.out" 2>"$WORK/$label.log" &
    SERVER_PID=$!
    local server=""
    for _ in $(seq 1 600); do
        server="$(sed -n 's/^chatsync listening on //p' "$WORK/$label.out" 2>/dev/null)"
        [[ -n "$server" ]] && break
        sleep 0.05
    done
    [[ -n "$server" ]] || { cat "$WORK/$label.log" >&2; exit 1; }
    local started ended
    started="$(date +%s.%N)"
    "$BIN" sync bench --all --json --server "$server" >"$WORK/$label.sync"
    ended="$(date +%s.%N)"
    tail -n 1 "$WORK/$label.sync" | grep -q COMPLETED || { log "sync did not complete"; tail -n 3 "$WORK/$label.sync" >&2; exit 1; }
    local result
    result="$("$SEARCH" "$server" bench "$QUERIES" 5)"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    printf '%.1f %s\n' "$(echo "$ended - $started" | bc)" "$result"
}

log "== SQLite"
read -r sync_s result <<<"$(run sqlite "sqlite://$WORK/search.db")"
sizes="$(python3 - "$WORK/search.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def size(pattern):
    return db.execute("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE ?", (pattern,)).fetchone()[0]
words, trigram = size("messages\\_fts\\_%"), size("messages\\_fts\\_trigram\\_%")
words -= trigram  # the LIKE for messages_fts_% matches the trigram tables too
total = db.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").fetchone()[0]
print(f"words={words / 2**20:.1f}MiB trigram={trigram / 2**20:.1f}MiB database={total / 2**20:.1f}MiB")
PY
)"
echo "sqlite sync_s=$sync_s $result $sizes"

if [[ -n "$PG" ]]; then
    log "== PostgreSQL"
    DB="chatsync_search_bench_$$"
    psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
    read -r sync_s result <<<"$(run postgres "$PG/$DB")"
    sizes="$(psql "$PG/$DB" -qAtc "SELECT 'tsvector_gin=' || round(pg_relation_size('messages_search_vector') / 1048576.0, 1) || 'MiB'
        || ' tsvector_column=' || round(sum(pg_column_size(search_vector)) / 1048576.0, 1) || 'MiB'
        || ' trigram_gin=' || COALESCE(round(pg_relation_size(to_regclass('messages_text_trigram')) / 1048576.0, 1)::text, 'none') || 'MiB'
        || ' messages_table=' || round(pg_total_relation_size('messages') / 1048576.0, 1) || 'MiB' FROM messages")"
    echo "postgres sync_s=$sync_s $result $sizes"
fi
