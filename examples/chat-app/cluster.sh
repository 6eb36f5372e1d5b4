#!/usr/bin/env bash
# Runs the load-balanced chat example: redis-server on a free port, three wasp-chat backends
# (127.0.0.1:8081-8083, named backend-1..3) sharing rooms through it, and wasp on
# http://127.0.0.1:8000/ with examples/chat-app/wasp-cluster.toml. Ctrl-C stops everything.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" # wasp-cluster.toml's paths are relative to the repository root
target="${CARGO_TARGET_DIR:-target}/release"

if ! command -v redis-server >/dev/null; then
  echo "cluster.sh needs redis-server: apt-get install -y redis-server" >&2
  exit 1
fi

cargo build --release -p wasp -p wasp-chat

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

# A free port for Redis: a random one nothing answers on.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --loglevel warning >/dev/null &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "redis-server did not start" >&2; exit 1; }

for n in 1 2 3; do
  "$target/wasp-chat" --listen "127.0.0.1:808$n" --name "backend-$n" \
    --redis "redis://127.0.0.1:$redis_port" &
  pids+=($!)
done
"$target/wasp" run -c examples/chat-app/wasp-cluster.toml &
pids+=($!)

echo
echo "Chat (3 backends, Redis on port $redis_port): http://127.0.0.1:8000/  (Ctrl-C to stop)"
echo

# Stop everything as soon as any process ends.
wait -n
