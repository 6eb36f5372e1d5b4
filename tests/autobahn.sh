#!/usr/bin/env bash
# Autobahn|Testsuite through wasp, on both legs.
# Client leg: runs the fuzzingclient against a conformant echo backend
# directly, through a tunnelled location (/raw/), through a frame-relayed one
# (/filtered/, the pass-through test filter) and through one with the chat
# default's filter (/redact/).
# Upstream leg: the fuzzingserver is the backend, and a conformant echoing
# client (tests/autobahn-client) runs its cases directly and through
# /upstream/raw/ and /upstream/filtered/ (same settings as /raw/, /filtered/),
# so the fuzzingserver grades wasp as the WebSocket client of its upstream.
# Fails when a case passing directly does not pass through wasp, on either leg.
# usage: tests/autobahn.sh [quick|full|limits|compression] [OUTDIR]
#   quick (default, CI): every case but 9.* (performance), 12.* and 13.* (compression).
#   full: every case (not in CI): about 30 min directly and through /raw/ each (compression
#   dominates), somewhat less through /filtered/ and /redact/, where wasp negotiates
#   permessage-deflate with each leg.
#   compression: only 12.* and 13.*, direct, through /filtered/ and /redact/.
#   limits: only 9.* (messages up to 16 MiB), a few minutes: large messages through the
#   filters fit the per-call CPU deadline, which grows with the message (call_timeout_per_mib).
#   Reports: OUTDIR/{direct,raw,filtered,redact}/index.html (client leg),
#   OUTDIR/upstream/index.html (upstream leg: agents direct, raw, filtered).
#   LEGS="client upstream" (default) runs both legs; LEGS=upstream only that one.
# Needs CPython 2.7 (wstest) and CPython 3 (the backend); installs both
# environments under target/autobahn/env (AUTOBAHN_DIR overrides).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/tests/autobahn"
mode=${1:-quick}
out=${2:-$root/target/autobahn/$mode}
export AUTOBAHN_DIR=${AUTOBAHN_DIR:-$root/target/autobahn/env}
cd "$root"

"$here/install.sh" "$AUTOBAHN_DIR" >/dev/null
if [ ! -x "$AUTOBAHN_DIR/py3/bin/python" ]; then
  python3 -m venv "$AUTOBAHN_DIR/py3"
  "$AUTOBAHN_DIR/py3/bin/pip" install -q --disable-pip-version-check -r "$here/backend-requirements.txt"
fi

# wasp, and the pass-through filter built as tests/build.rs builds the test
# plugins (same profile and target directory, so cargo test's build is reused).
cargo build -q -p wasp
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR \
  cargo build -q -p wasp-test-passthrough --target wasm32-wasip2 --profile plugin \
  --target-dir "$root/target/wasm"
passthrough="$root/target/wasm/wasm32-wasip2/plugin/wasp_test_passthrough.wasm"
cargo build -q -p wasp-autobahn-client
legs=${LEGS:-client upstream}
# compression: the upstream leg's client offers no permessage-deflate (README).
[ "$mode" = compression ] && legs=${LEGS:-client}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "autobahn.sh: nothing listens on port $1 (see $out/*.log)" >&2
  return 1
}

rm -rf "$out"
mkdir -p "$out"
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT

backend_port=$(free_port)
"$AUTOBAHN_DIR/py3/bin/python" "$here/echo_backend.py" "$backend_port" >"$out/backend.log" 2>&1 &
pids+=($!)

proxy_port=$(free_port)
fuzzingserver_port=$(free_port)
# No caps that the backend does not have: 9.* sends messages up to 16 MiB.
cat >"$out/wasp.toml" <<TOML
[plugins]
memory_limit = "256m"

[[server]]
listen = "127.0.0.1:$proxy_port"

[[server.location]]
path = "/raw/"
proxy_pass = "http://127.0.0.1:$backend_port/"

[[server.location]]
path = "/filtered/"
proxy_pass = "http://127.0.0.1:$backend_port/"
filters = ["$passthrough"]
max_message_size = "64m"

[[server.location]]
path = "/redact/"
proxy_pass = "http://127.0.0.1:$backend_port/"
# The chat default's filter (examples/chat-app/wasp.toml).
filters = [{ plugin = "redact", config = { words = ["darn", "heck"] } }]
max_message_size = "64m"

# The upstream leg: the fuzzingserver as the backend (started by autobahn/upstream.sh).
[[server.location]]
path = "/upstream/raw/"
proxy_pass = "http://127.0.0.1:$fuzzingserver_port/"

[[server.location]]
path = "/upstream/filtered/"
proxy_pass = "http://127.0.0.1:$fuzzingserver_port/"
filters = ["$passthrough"]
max_message_size = "64m"
TOML
RUST_LOG=${RUST_LOG:-warn} "$target_dir/debug/wasp" run -c "$out/wasp.toml" >"$out/wasp.log" 2>&1 &
pids+=($!)
wait_port "$backend_port"
wait_port "$proxy_port"

status=0
if [[ " $legs " == *" client "* ]]; then
targets="direct raw filtered redact"
# 9.* through a tunnel measures nothing of wasp's own limits.
[ "$mode" = limits ] && targets="direct filtered redact"
[ "$mode" = compression ] && targets="direct filtered redact"
# TARGETS overrides (e.g. TARGETS=filtered for one location; compare then needs direct's report).
targets=${TARGETS:-$targets}
for target in $targets; do
  case $target in
    direct) url="ws://127.0.0.1:$backend_port" ;;
    *) url="ws://127.0.0.1:$proxy_port/$target/" ;;
  esac
  printf '\n==> %s: %s\n' "$target" "$url"
  "$here/run.sh" "$url" "$out/$target" "$mode"
done

printf '\n==> comparison (reports in %s)\n' "$out"
reports=()
for target in $targets; do reports+=("$target=$out/$target/index.json"); done
python3 "$here/compare.py" "${reports[@]}" || status=1
fi

if [[ " $legs " == *" upstream "* ]]; then
  ways="direct=ws://127.0.0.1:$fuzzingserver_port"
  ways="$ways raw=ws://127.0.0.1:$proxy_port/upstream/raw filtered=ws://127.0.0.1:$proxy_port/upstream/filtered"
  # shellcheck disable=SC2086 # one NAME=URL word per way
  "$here/upstream.sh" "$mode" "$fuzzingserver_port" "$out/upstream" "$target_dir/debug/wasp-autobahn-client" $ways
  printf '\n==> upstream leg: comparison (report in %s/upstream)\n' "$out"
  python3 "$here/compare.py" direct="$out/upstream/index.json" raw="$out/upstream/index.json" \
    filtered="$out/upstream/index.json" || status=1
fi
exit $status
