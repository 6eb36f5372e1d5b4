#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (the wasm target, redis-server, chromium, nginx, playwright-core, Autobahn's
# Python environments), runs every Rust test of the workspace, the quick
# Autobahn|Testsuite through wasp, then the browser test of the chat example
# through a real wasp. Fails on the first failing step.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

step "test peers (apt: redis-server chromium nginx openssl; npm: playwright-core)"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
# nginx is in /usr/sbin, which a non-root PATH may lack.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
# The browser test's test CA.
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd examples/chat-app/browser-test && npm ci --no-audit --no-fund --silent)

# The build scripts install the wasm32-wasip2 target themselves when it is missing.
step "cargo test --workspace"
cargo test --workspace --no-fail-fast

step "Autobahn|Testsuite (quick), both legs: the echo backend directly, through /raw/, /filtered/ and /redact/; the fuzzing server as upstream directly, through /upstream/raw/ and /upstream/filtered/"
bash tests/autobahn.sh quick

step "browser test: two Chromium pages chat through wasp"
bash examples/chat-app/browser-test/run-through-wasp.sh
