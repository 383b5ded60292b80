#!/usr/bin/env bash
# The web console's checks: the committed bundle matches a fresh build (check-bundle.sh), then
# the browser tests (node --test web/tests/) against a real `chatsync serve`.
#
# Needs: node + npm, Debian's chromium at /usr/bin/chromium (or $CHROMIUM), and the chatsync
# binary at $CHATSYNC_BIN (default target/debug/chatsync, built by `cargo build` or
# `cargo test`); it builds nothing else. Screenshots go to .ci/out/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHATSYNC_BIN="${CHATSYNC_BIN:-$PWD/target/debug/chatsync}"
if [ ! -x "$CHATSYNC_BIN" ]; then
  echo "chatsync binary not found at $CHATSYNC_BIN: run cargo build first (or set CHATSYNC_BIN)" >&2
  exit 1
fi
chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium_bin" ]; then
  echo "chromium not found at $chromium_bin: apt-get install -y chromium (or set CHROMIUM)" >&2
  exit 1
fi

# buf (for buf generate and the tests' native gRPC calls): the pinned one in .tools/, as in
# scripts/test; web/build.sh installs it there when missing.
export CHATSYNC_BUF="${CHATSYNC_BUF:-$PWD/.tools/node_modules/.bin/buf}"

if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  echo "== npm ci (web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== web bundle check"
web/check-bundle.sh

echo "== browser tests"
mkdir -p .ci/out/screenshots
node --test web/tests/
