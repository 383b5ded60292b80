#!/usr/bin/env bash
# Builds the web console into web/dist (or the folder given as $1): npm ci, TypeScript from
# proto/ with protoc-gen-es (`buf generate`, buf.gen.yaml), a type check (tsc, which
# protoc-gen-es brings), then one esbuild bundle.
# The output is deterministic; CI's check-bundle.sh compares it with the committed web/dist.
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-dist}"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export PATH="$PWD/node_modules/.bin:$PATH"

# buf: the same pinned version scripts/test installs into .tools/ (the npm registry mirror used
# here lacks buf's macOS and Windows binaries, so it is not a devDependency: `npm ci` would
# refuse the lock file).
BUF_VERSION=1.75.0
buf="${CHATSYNC_BUF:-$PWD/../.tools/node_modules/.bin/buf}"
if [ ! -x "$buf" ]; then
  npm install --prefix ../.tools --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION"
  buf="$PWD/../.tools/node_modules/.bin/buf"
fi

"$buf" generate
tsc -p tsconfig.json

mkdir -p "$out"
esbuild src/main.ts --bundle --minify --format=esm --target=es2022 --charset=utf8 \
  --legal-comments=none --log-level=warning --outfile="$out/app.js"
esbuild src/app.css --bundle --minify --target=chrome100,firefox100,safari15 --charset=utf8 \
  --log-level=warning --outfile="$out/app.css"
cp index.html "$out/index.html"
echo "built $(cd "$out" && ls | tr '\n' ' ')in $out"
