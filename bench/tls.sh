#!/usr/bin/env bash
# TLS against plain HTTP/2: fan-out latency (examples/fanout --servers, a separate process) at
# 1,000 messages/s to 100 subscribers, each on its own connection, against one `chatsync serve`
# on SQLite, once over plain HTTP/2 and once over TLS (rustls; a CA and a certificate for
# 127.0.0.1 made here with openssl), alternating, RUNS times each. Prints each run's RESULT
# line and the medians of p50 and p99 per transport, with their ratio.
#
# Usage: RUNS=3 bench/tls.sh   (MESSAGES=5000 SUBSCRIBERS=100 RATE=1000)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
MESSAGES="${MESSAGES:-5000}"
SUBSCRIBERS="${SUBSCRIBERS:-100}"
RATE="${RATE:-1000}"
BIN="$ROOT/target/release/chatsync"
FAN="$ROOT/target/release/examples/fanout"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/chatsync-tls.XXXXXX")"
# shellcheck source=bench/server.sh
source "$ROOT/bench/server.sh"
cleanup() {
    stop_server
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "== $*" >&2; }

command -v openssl >/dev/null || { echo "bench/tls.sh needs openssl" >&2; exit 1; }
log "building chatsync and examples/fanout (release)"
(cd "$ROOT" && cargo build --release --quiet --bin chatsync --example fanout)

log "a CA and a server certificate for 127.0.0.1 (openssl, P-256)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=chatsync bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null


: >"$WORK/results"
for run in $(seq 1 "$RUNS"); do
    for tls in 0 1; do
        name="plain"; extra=(); toml=""
        if [ "$tls" = 1 ]; then
            name="tls"; extra=(--ca-cert "$WORK/ca.pem")
            toml="$(printf 'tls_cert_file = "%s"\ntls_key_file = "%s"' "$WORK/server.pem" "$WORK/server.key")"
        fi
        start_server "$name-$run" "$toml"
        line="$("$FAN" --servers "$URL" --session bench --messages "$MESSAGES" \
            --subscribers "$SUBSCRIBERS" --rate "$RATE" "${extra[@]}" | grep '^RESULT')"
        stop_server
        echo "$name run $run: $line"
        echo "$name $line" >>"$WORK/results"
    done
done

python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, *fields = line.split()
    values = dict(field.split("=", 1) for field in fields)
    rows.setdefault(name, []).append(values)
med = {name: {key: statistics.median(float(r[key]) for r in runs) for key in ("p50_ms", "p99_ms")}
       for name, runs in rows.items()}
for name in ("plain", "tls"):
    p50 = [float(r["p50_ms"]) for r in rows[name]]
    p99 = [float(r["p99_ms"]) for r in rows[name]]
    missing = sum(int(r["missing"]) for r in rows[name])
    print(f"{name:5}: p50 {med[name]['p50_ms']:.2f} ms ({min(p50):.2f}..{max(p50):.2f}), "
          f"p99 {med[name]['p99_ms']:.2f} ms ({min(p99):.2f}..{max(p99):.2f}), {missing} missing")
print(f"tls/plain: p50 {med['tls']['p50_ms'] / med['plain']['p50_ms']:.2f}x, "
      f"p99 {med['tls']['p99_ms'] / med['plain']['p99_ms']:.2f}x")
EOF
echo "command: RUNS=$RUNS bench/tls.sh   ($(nproc) cores, commit $(cd "$ROOT" && git rev-parse --short HEAD))"
