#!/usr/bin/env bash
# The upstream leg: Autobahn's fuzzingserver as the backend, and a conformant
# echoing client (tests/autobahn-client) driving its cases directly and through
# wasp's given locations, so the fuzzingserver grades the WebSocket client that
# talks to it: the client itself directly, wasp's relay (tunnel or frame relay)
# with the client behind it otherwise. The report holds one agent per way.
# usage: tests/autobahn/upstream.sh MODE PORT OUTDIR CLIENT NAME=BASE_URL...
#   MODE: quick | full | limits (the cases as in run.sh); PORT: where the fuzzingserver
#   listens (wasp's locations proxy to it); CLIENT: the wasp-autobahn-client binary.
#   Report: OUTDIR/index.{html,json}, one agent per NAME.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1; port=$2; out=$3; client=$4; shift 4
wstest=$("$here/install.sh" "${AUTOBAHN_DIR:-.autobahn}")
mkdir -p "$out"; out=$(cd "$out" && pwd)
case "$mode" in
  quick) cases='["*"]'; exclude='["9.*", "12.*", "13.*"]' ;;
  full) cases='["*"]'; exclude='[]' ;;
  limits) cases='["9.*"]'; exclude='[]' ;;
  *) echo "mode must be quick, full or limits" >&2; exit 2 ;;
esac
cat >"$out/spec.json" <<JSON
{ "url": "ws://127.0.0.1:$port", "outdir": "$out",
  "cases": $cases, "exclude-cases": $exclude, "exclude-agent-cases": {} }
JSON
"$wstest" -m fuzzingserver -s "$out/spec.json" >"$out/wstest.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
# One way after the other: the timing cases (6.4.*, 9.*) see no other load.
for way in "$@"; do
  name=${way%%=*}; url=${way#*=}
  printf '\n==> upstream leg, %s: %s\n' "$name" "$url"
  "$client" "$url" "$name" 2>"$out/client-$name.log"
  python3 "$here/summarize.py" "$out/index.json" "$name"
done
