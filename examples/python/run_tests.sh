#!/usr/bin/env bash
# The Python example's test: a virtualenv in examples/python/.venv (made once, reused), the
# pinned requirements, stubs generated from proto/, then pytest against the real server.
#
#   examples/python/run_tests.sh [PYTEST ARGS...]
#
# CHATSYNC_BIN: the server binary to test. Unset: `cargo build --bin chatsync` (a no-op when
# it is up to date) and target/debug/chatsync. PYTHON: the interpreter for the venv (python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
venv="$here/.venv"

command -v "$python" >/dev/null 2>&1 || { echo "run_tests.sh: $python not found; Python 3.11 or newer is needed" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  echo "== creating virtualenv examples/python/.venv"
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "run_tests.sh: '$python -m venv' failed. On Debian/Ubuntu the venv module and ensurepip" >&2
    echo "come in a separate package: apt-get install python3-venv (or python3.X-venv)." >&2
    exit 1
  fi
fi

# Reinstall only when requirements.txt changed.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r examples/python/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

echo "== generating stubs"
PYTHON="$venv/bin/python" "$here/generate.sh"

if [ -z "${CHATSYNC_BIN:-}" ]; then
  echo "== cargo build --bin chatsync"
  (cd "$repo" && cargo build --quiet --locked --bin chatsync)
  export CHATSYNC_BIN="$repo/target/debug/chatsync"
fi

echo "== pytest examples/python (server: $CHATSYNC_BIN)"
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
