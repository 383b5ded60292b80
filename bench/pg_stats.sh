# Sourced by the PostgreSQL benchmarks (group_commit.sh, sessions.sh, replicas.sh).
#
# A PostgreSQL without autovacuum (this machine's: `SHOW autovacuum` is off) never analyzes the
# benchmark's fresh tables, and the plans the server's prepared statements cached while they
# were empty stay as the tables grow (BENCHMARKS.md, "this machine's PostgreSQL runs without
# autovacuum"). These helpers do by hand what autovacuum would do, and nothing when it is on.
#
# pg_stats_init PG_URL     sets AUTOVACUUM (on/off) from the server at PG_URL/postgres and says
#                          so once on stderr when it is off.
# pg_analyze DB_URL        one ANALYZE of the database, when autovacuum is off.
# pg_analyze_start DB_URL  an ANALYZE every PG_ANALYZE_EVERY seconds (default 5) in the
#                          background while autovacuum is off; pg_analyze_stop ends it.

pg_stats_init() {
    AUTOVACUUM="$(psql "$1/postgres" -qAtc "SHOW autovacuum")"
    if [ "$AUTOVACUUM" != on ]; then
        printf 'PostgreSQL has autovacuum=%s: the benchmark runs ANALYZE as autovacuum would\n' "$AUTOVACUUM" >&2
    fi
    PG_ANALYZE_PIDS=()
}

pg_analyze() {
    if [ "$AUTOVACUUM" != on ]; then
        psql "$1" -qc "ANALYZE" >/dev/null
    fi
}

pg_analyze_start() {
    if [ "$AUTOVACUUM" != on ]; then
        # The loop must not run the script's EXIT trap (its cleanup drops the databases) when
        # it is killed.
        (
            trap - EXIT INT TERM
            while psql "$1" -qc "ANALYZE" >/dev/null 2>&1; do sleep "${PG_ANALYZE_EVERY:-5}"; done
        ) &
        PG_ANALYZE_PIDS+=($!)
    fi
}

pg_analyze_stop() {
    for pid in "${PG_ANALYZE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    PG_ANALYZE_PIDS=()
}
