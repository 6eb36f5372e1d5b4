#!/usr/bin/env bash
# Starts the chat backend and wasp (the embedded default configuration, which
# is examples/chat-app/wasp.toml, on ports 8000/8080), runs test.mjs against
# it; then the same chat over TLS and HTTP/2 (port 8443, admin 8001) with a
# test CA made here, which Chromium trusts by its key's hash, and checks that
# the page and the chat's WebSocket share one HTTP/2 connection; and stops
# them. The screenshots land in $ARTIFACTS_DIR (default
# examples/chat-app/browser-test/artifacts, the TLS run's under tls/).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"
cargo build -q -p wasp -p wasp-chat
target="${CARGO_TARGET_DIR:-target}/debug"

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT

"$target/wasp-chat" --listen 127.0.0.1:8080 --name backend-1 &
pids+=($!)
"$target/wasp" &
pids+=($!)

# Wait for both ports (bounded).
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    break
  fi
  sleep 0.1
done

node examples/chat-app/browser-test/test.mjs

# Over TLS: a CA and a certificate for 127.0.0.1 made now, the chat's
# configuration moved to https://127.0.0.1:8443 with an admin listener.
tls=$(mktemp -d)
trap 'stop; rm -rf "$tls"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=wasp test CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$tls/key.pem" -out "$tls/cert.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/ext.cnf"
openssl x509 -req -in "$tls/cert.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
  -extfile "$tls/ext.cnf" -out "$tls/cert.pem" 2>/dev/null
# Chromium trusts the certificate whose public key has this SHA-256 (base64).
spki=$(openssl x509 -in "$tls/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
{
  echo 'admin = "127.0.0.1:8001"'
  sed -e 's|^listen = "127.0.0.1:8000"|listen = "127.0.0.1:8443"\ntls = { cert = "'"$tls"'/cert.pem", key = "'"$tls"'/key.pem" }|' \
    -e 's|^origins = .*|origins = ["https://127.0.0.1:8443"]|' examples/chat-app/wasp.toml
} >"$tls/wasp.toml"
grep -q '^tls = ' "$tls/wasp.toml" && grep -q 'https://127.0.0.1:8443' "$tls/wasp.toml"
"$target/wasp" run -c "$tls/wasp.toml" &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break
  sleep 0.1
done
CHAT_URL=https://127.0.0.1:8443/ METRICS_URL=http://127.0.0.1:8001/metrics EXPECT_H2=1 \
  CHROMIUM_ARGS="--ignore-certificate-errors-spki-list=$spki" \
  ARTIFACTS_DIR="${ARTIFACTS_DIR:-examples/chat-app/browser-test/artifacts}/tls" \
  node examples/chat-app/browser-test/test.mjs
