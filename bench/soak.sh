#!/usr/bin/env bash
# The soak: wasp for MINUTES (default 30) holding 5,000 filtered WebSockets with steady messages, while a
# filter file is replaced every 10 s, the filter traps on a marker message every 5 s and a backend is killed
# and restarted every 2 minutes (`bench/src/bin/wasp-soak.rs` runs it and asserts: no message lost but those
# in flight to a killed backend, wasp's memory and descriptors flat after warm-up, no unexplained warning or
# error in wasp's log). Writes the results to BENCHMARKS.md between <!-- bench:soak:start --> and
# <!-- bench:soak:end --> unless SOAK_REPORT=0; fails when the soak fails.
#
# Usage: bench/soak.sh [MINUTES] [wasp-soak options, e.g. --connections 500 --interval 1s]
# Environment: SOAK_PROFILE (release, the default, or dev: what tests/run.sh uses, already built),
# SOAK_REPORT (1: write BENCHMARKS.md), CARGO_TARGET_DIR (default target/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MINUTES=${1:-30}
[ $# -gt 0 ] && shift
PROFILE=${SOAK_PROFILE:-release}
COMMAND="${SOAK_PROFILE:+SOAK_PROFILE=$SOAK_PROFILE }bench/soak.sh $MINUTES${*:+ $*}"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

cargo build --profile "$PROFILE" -p wasp -p wasp-bench --bin wasp --bin wasp-echo --bin wasp-soak
# The probe test filter (it panics on the message `trap`), built as host/build-wasm builds plugins.
env -u CARGO_TARGET_DIR cargo build --profile plugin --target wasm32-wasip2 --target-dir target/wasm \
    -p wasp-test-probe
WASM=target/wasm/wasm32-wasip2/plugin/wasp_test_probe.wasm

# shellcheck source=bench/section.sh
source "$ROOT/bench/section.sh"
run_began
STATUS=0
RESULTS=$("$OUT/wasp-soak" --wasp "$OUT/wasp" --echo "$OUT/wasp-echo" --filter "$WASM" \
    --minutes "$MINUTES" "$@") || STATUS=$?
echo "$RESULTS"
[ "${SOAK_REPORT:-1}" = 1 ] || exit "$STATUS"

VERDICT=$([ "$STATUS" = 0 ] && echo "passed: every assertion held" || echo "FAILED (exit $STATUS): see the figures")
SECTION=$(cat <<MD
<!-- bench:soak:start -->
## Soak: long run under faults (\`wasp-soak\`)

wasp (\`$PROFILE\` build) relays WebSockets to two \`wasp-echo\` backends through a location filtered by the
\`probe\` test plugin (\`fail = "open"\`), each WebSocket sending a message and awaiting its echo every
interval. Meanwhile the filter's \`.wasm\` is replaced every 10 s (two versions differing by a custom section,
so each replacement is a reload), one message every 5 s is \`trap\`, on which the filter panics (a trap each
way; failing open, it comes back unchanged), and every 2 minutes a backend is killed (SIGKILL) and started
again, alternating the two; its WebSockets close with 1001 \`upstream went away\` and reconnect, and the
message each had in flight is counted as lost to the killed backend. Asserted: no other message lost or
altered, wasp's resident memory and open descriptors grew at most 5 % from after warm-up (the median over
the second sixth of the run after the first third) to the end (the median over the last sixth), and wasp
logged no warning or error that the faults do not explain (a trap, or a line naming a killed backend).
Result: $VERDICT.

Command (from the repository root):

\`\`\`sh
$COMMAND
\`\`\`

Machine:

\`\`\`text
$(machine)
\`\`\`

$RESULTS
<!-- bench:soak:end -->
MD
)
write_section soak "$SECTION"
exit "$STATUS"
