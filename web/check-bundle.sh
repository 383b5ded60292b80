#!/usr/bin/env bash
# Fails when the committed bundle (web/dist) differs from a fresh build of web/: rebuilds into a
# temporary folder and diffs. Fix a failure with web/build.sh and commit web/dist.
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
./build.sh "$tmp/dist" >/dev/null
if ! diff -r dist "$tmp/dist" >"$tmp/diff"; then
  echo "web/dist is stale: it differs from a fresh build. Run web/build.sh and commit web/dist." >&2
  head -c 4000 "$tmp/diff" >&2
  exit 1
fi
echo "web/dist matches a fresh build"
