#!/usr/bin/env bash
# Runs the Autobahn fuzzingclient against one WebSocket URL and prints the summary.
# usage: tests/autobahn/run.sh URL OUTDIR [quick|full|limits|compression]
#   quick (default) leaves out 9.* (performance), 12.* and 13.* (compression): about 30 s; full: about 20 min;
#   compression: only 12.* and 13.*. AUTOBAHN_EXCLUDE (a JSON list of case patterns) replaces the mode's
#   exclusions (patterns: `*` is any text, matched at the start of a case id).
#   The report is OUTDIR/index.html and OUTDIR/index.json; exit status 0 when wstest ran.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=$1; out=$2; mode=${3:-quick}
wstest=$("$here/install.sh" "${AUTOBAHN_DIR:-.autobahn}")
mkdir -p "$out"; out=$(cd "$out" && pwd)
case "$mode" in
  quick) exclude='["9.*", "12.*", "13.*"]' ;;
  full)  exclude='[]' ;;
  limits|compression) exclude='[]' ;;
  *) echo "mode must be quick, full, limits or compression" >&2; exit 2 ;;
esac
exclude=${AUTOBAHN_EXCLUDE:-$exclude}
cases='["*"]'
# limits: only the performance cases (9.*: messages up to 16 MiB, in frames
# down to 64 bytes), which test size limits and per-call deadlines.
[ "$mode" = limits ] && cases='["9.*"]'
[ "$mode" = compression ] && cases='["12.*", "13.*"]'
cat >"$out/spec.json" <<JSON
{ "outdir": "$out", "servers": [ { "agent": "target", "url": "$url" } ],
  "cases": $cases, "exclude-cases": $exclude, "exclude-agent-cases": {} }
JSON
"$wstest" -m fuzzingclient -s "$out/spec.json" >"$out/wstest.log" 2>&1
python3 "$here/summarize.py" "$out/index.json" target
