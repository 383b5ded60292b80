#!/usr/bin/env bash
# Import A/B: is the import path slower than at an earlier commit? One command:
#   bench/ab_import.sh BEFORE_REV      (RUNS=3 by default)
# Builds `chatsync` in release at BEFORE_REV (a worktree in target/ab-before, its own target
# directory $AB_BEFORE_TARGET, default target/ab-before-target; or takes the binary
# $AB_BEFORE_BIN built at BEFORE_REV already) and at the working tree, then, RUNS times, alternating
# before and after in the same run: a fresh server syncs the chitchat corpus
# (bench/out/corpus, rendered when missing) on SQLite and on PostgreSQL
# ($PG, default postgres://postgres@127.0.0.1:5432), then syncs it again (nothing changed).
# The client is always the working tree's CLI (the gRPC API is the same on both sides).
# Prints one line per sync: seconds from the first frame to COMPLETED, messages, msg/s,
# the re-sync's seconds and the server's peak RSS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEFORE_REV="${1:?usage: bench/ab_import.sh BEFORE_REV}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
CORPUS="$ROOT/bench/out/corpus"
RUNS=${RUNS:-3}
BEFORE_TARGET="${AB_BEFORE_TARGET:-$ROOT/target/ab-before-target}"
python3 "$ROOT/bench/render_corpus.py" "$CORPUS" >/dev/null
mkdir -p "$ROOT/target/ab"
if [[ -n "${AB_BEFORE_BIN:-}" ]]; then
    # A before binary built already (release, at BEFORE_REV): nothing to build for it.
    cp "$AB_BEFORE_BIN" "$ROOT/target/ab/chatsync-before"
else
    rm -rf "$ROOT/target/ab-before"
    git -C "$ROOT" worktree add -f -q --detach "$ROOT/target/ab-before" "$BEFORE_REV"
    trap 'git -C "$ROOT" worktree remove --force "$ROOT/target/ab-before"' EXIT
    (cd "$ROOT/target/ab-before" && CARGO_TARGET_DIR="$BEFORE_TARGET" cargo build --release --quiet --bin chatsync)
    # Copied aside before the after build: with AB_BEFORE_TARGET=target (to reuse the built
    # dependencies) both builds write target/release/chatsync, and the after build would replace it.
    cp "$BEFORE_TARGET/release/chatsync" "$ROOT/target/ab/chatsync-before"
fi
# With a shared target directory the two trees' crates get the same artifact names, and cargo
# takes an artifact newer than this tree's sources as fresh: the build script's output (it
# embeds the samples by absolute path) and the `migrations` crate, built from the before tree,
# would go into the after binary (it did once: the after side ran without its new migration).
# Touching them makes the after build redo both.
touch "$ROOT/build.rs" "$ROOT"/migrations/src/*.rs
(cd "$ROOT" && cargo build --release --quiet --bin chatsync)
CLI="$ROOT/target/release/chatsync"
declare -A BIN=([before]="$ROOT/target/ab/chatsync-before" [after]="$CLI")
if cmp -s "${BIN[before]}" "${BIN[after]}"; then
    echo "the before and after binaries are identical: nothing to compare (a shared target directory can do this; see AB_BEFORE_BIN)" >&2
    exit 1
fi
echo "before: $(git -C "$ROOT" rev-parse --short "$BEFORE_REV"); after: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo ' + uncommitted changes'); $(nproc) cores"
W=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
timed_sync() {
python3 - "$CLI" "$1" <<'PY'
import json, subprocess, sys, time
cli, port = sys.argv[1:]
p = subprocess.Popen([cli, "sync", "bench", "--all", "--server", f"http://127.0.0.1:{port}", "--json"], stdout=subprocess.PIPE, text=True)
first = done = None; frame = None
for line in p.stdout:
    now = time.monotonic(); first = first or now; frame = json.loads(line)
    if frame["stage"] == "SYNC_STAGE_COMPLETED": done = now; break
for _ in p.stdout: pass
assert p.wait() == 0 and done, frame
print(f"{done-first:.3f} {frame['totalMessagesSynced']}")
PY
}
for run in $(seq 1 "$RUNS"); do
  for backend in sqlite postgres; do
    for v in before after; do
      d="$W/$v-$backend-$run"; mkdir -p "$d"; port=$(free_port)
      if [ "$backend" = sqlite ]; then url="sqlite://$d/c.db"; else
        db="ab_${v}_${run}"; PGOPTIONS=--client-min-messages=warning psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        url="$PG/$db"; fi
      printf 'listen = "127.0.0.1:%s"\ndatabase_url = "%s"\n[[sessions]]\nid = "bench"\nsource = "whatsapp-export"\npath = "%s"\n' "$port" "$url" "$CORPUS" > "$d/c.toml"
      "${BIN[$v]}" serve --config "$d/c.toml" > "$d/log" 2>&1 & pid=$!
      until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.05; done
      read -r s n <<<"$(timed_sync $port)"
      rss=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status)
      read -r rs _ <<<"$(timed_sync $port)"
      kill $pid; wait $pid 2>/dev/null || true
      echo "$run $backend $v sync_s=$s messages=$n msg_per_s=$(python3 -c "print(round($n/$s))") resync_s=$rs peak_rss_mb=$((rss/1024))"
      [ "$backend" = postgres ] && psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    done
  done
done
rm -rf "$W"
