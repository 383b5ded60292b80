#!/usr/bin/env bash
# The instruction-count regression guard (issue 22), run by scripts/test. One command:
#   bench/guard.sh
#
# Counts the instructions (valgrind --tool=callgrind, whole program) of examples/import_guard,
# built in the `ci` profile (Cargo.toml), on a fixed input: the first 20,000 messages of
# bench/render_single_chat.py (deterministic, no download; written to target/guard/chat.txt), in two runs:
#   parse   the WhatsApp parse and id derivation of a sync;
#   import  the same, then Store::import into a new SQLite file, 10,000 messages a transaction.
# One runtime thread, fixed input, nothing that depends on time, so a count repeats within
# well under 1 % (see BENCHMARKS.md). Each count is compared with its budget in
# bench/budgets.toml: more than 10 % above the budget fails, and says how to raise it.
# The `ci` profile is the build scripts/test has just made for the tests, so in CI the guard adds
# no build of its own and takes well under a minute; the budgets are counts of that profile.
# GUARD_RUNS=3 bench/guard.sh repeats each count (for checking that counts repeat).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUDGETS="$ROOT/bench/budgets.toml"
OUT="$ROOT/target/guard"
INPUT="$OUT/chat.txt"
MESSAGES=20000
TOLERANCE_PERCENT=10
RUNS="${GUARD_RUNS:-1}"
BIN="$ROOT/target/ci/examples/import_guard"
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "bench/guard.sh needs valgrind (Debian package valgrind)" >&2; exit 1; }
python3 "$ROOT/bench/render_single_chat.py" "$INPUT.tmp" "$MESSAGES"
mv "$INPUT.tmp" "$INPUT"
(cd "$ROOT" && cargo build --profile ci --quiet --locked --example import_guard)

# Instructions of one run: callgrind's "summary:" line.
count() { # NAME ARGS...
    local name="$1"; shift
    local out="$OUT/callgrind.$name.out"
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$@" >"$OUT/$name.log" 2>&1 ||
        { cat "$OUT/$name.log" >&2; return 1; }
    awk '/^summary:/ {print $2}' "$out"
}
budget() { # NAME
    awk -F'=' -v name="$1" '$1 ~ "^[ \t]*" name "[ \t]*$" {gsub(/[ \t_]/, "", $2); print $2}' "$BUDGETS"
}

failed=0
for mode in parse import; do
    expected="$(budget "$mode")"
    [[ -n "$expected" ]] || { echo "bench/budgets.toml has no budget for $mode" >&2; exit 1; }
    for run in $(seq 1 "$RUNS"); do
        if [[ "$mode" == parse ]]; then
            n="$(count parse parse "$INPUT")"
        else
            db="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-guard.XXXXXX")"
            n="$(count import import "$INPUT" "$db")"
            rm -rf "$db"
        fi
        percent="$(python3 -c "print(f'{($n / $expected - 1) * 100:+.2f}')")"
        echo "guard: $mode run $run: $n instructions; budget $expected ($percent %)"
        if python3 -c "import sys; sys.exit(0 if $n > $expected * (1 + $TOLERANCE_PERCENT / 100) else 1)"; then
            failed=1
            cat >&2 <<MSG
guard: $mode used $n instructions, more than $TOLERANCE_PERCENT % over its budget of $expected.
  If the extra work is a regression, find it: callgrind_annotate $OUT/callgrind.$mode.out
  If it is meant (new work the import must do), raise the budget: set "$mode = $n" in
  bench/budgets.toml in the same commit as the change, and say why in the commit message.
MSG
        elif python3 -c "import sys; sys.exit(0 if $n < $expected * (1 - $TOLERANCE_PERCENT / 100) else 1)"; then
            echo "guard: $mode is more than $TOLERANCE_PERCENT % under its budget: lower it to $n in bench/budgets.toml to keep the guard tight"
        fi
    done
done
exit "$failed"
