# Sourced by bench scripts: one `chatsync serve` at a time on a fresh SQLite file, with a
# `local` session named `bench`. Needs BIN (the chatsync binary) and WORK (a scratch folder);
# the caller's EXIT trap should call stop_server.
#
#   start_server NAME [TOML_LINES]   writes WORK/NAME.toml (listen on 127.0.0.1:0, database
#                                    WORK/NAME.db, the extra TOML_LINES), starts the server and
#                                    waits for its "chatsync listening on URL" line: sets URL
#                                    and SERVER_PID
#   stop_server                      SIGTERM, and waits for the process
SERVER_PID=""
start_server() {
    printf 'listen = "127.0.0.1:0"\ndatabase_url = "sqlite://%s/%s.db"\n%s\n[[sessions]]\nid = "bench"\nsource = "local"\n' \
        "$WORK" "$1" "${2:-}" >"$WORK/$1.toml"
    "$BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.out" 2>"$WORK/$1.log" &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q "listening on" "$WORK/$1.out" 2>/dev/null && break
        sleep 0.05
    done
    URL="$(sed -n 's/^chatsync listening on //p' "$WORK/$1.out")"
    [ -n "$URL" ] || { cat "$WORK/$1.log" >&2; exit 1; }
}
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
