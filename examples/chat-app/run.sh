#!/usr/bin/env bash
# Runs the chat example: one wasp-chat backend on 127.0.0.1:8080 behind wasp on
# http://127.0.0.1:8000/ (examples/chat-app/wasp.toml). Ctrl-C stops both.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" # wasp.toml's paths are relative to the repository root
target="${CARGO_TARGET_DIR:-target}/release"

cargo build --release -p wasp -p wasp-chat

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

"$target/wasp-chat" --listen 127.0.0.1:8080 --name backend-1 &
pids+=($!)
"$target/wasp" &  # no -c: the embedded default, which is examples/chat-app/wasp.toml
pids+=($!)

echo
echo "Chat: http://127.0.0.1:8000/  (Ctrl-C to stop)"
echo

# Stop everything as soon as either process ends.
wait -n
