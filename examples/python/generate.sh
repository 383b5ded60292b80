#!/usr/bin/env bash
# Generates the Python stubs for chatsync.v1 from the repository's proto/ into gen/
# (examples/python/gen/chatsync/v1/chatsync_pb2.py and chatsync_pb2_grpc.py).
#
# Needs grpcio-tools (pip install -r requirements.txt): it bundles protoc and the well-known
# types, so google/protobuf/timestamp.proto resolves without a system protoc.
# PYTHON selects the interpreter (default: python3 on PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/gen"
rm -rf "$out"
mkdir -p "$out"
"${PYTHON:-python3}" -m grpc_tools.protoc \
  -I "$repo/proto" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  "$repo/proto/chatsync/v1/chatsync.proto"
echo "stubs generated in ${out#"$repo"/}"
