#!/usr/bin/env bash
# Starts the chat backend and wasp (the embedded default configuration, which
# is examples/chat-app/wasp.toml, on ports 8000/8080), runs test.mjs against
# it, and stops both. The screenshot lands in $ARTIFACTS_DIR (default
# examples/chat-app/browser-test/artifacts).
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
