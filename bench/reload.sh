#!/usr/bin/env bash
# Benchmarks hot reload: time from replacing a filter `.wasm` to the new version serving (median, p99 over
# the reloads), and the echo rate of 50 WebSockets while the filter is replaced back to back vs without
# reloads. Runs a release wasp (`bench/src/bin/wasp-reload.rs` does the measuring) and writes the results to
# BENCHMARKS.md between <!-- bench:reload:start --> and <!-- bench:reload:end -->.
#
# Usage: bench/reload.sh [--reloads N] [--connections N] [--phase 5s]
# Environment: CARGO_TARGET_DIR (default target/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COMMAND="${CARGO_TARGET_DIR:+CARGO_TARGET_DIR=$CARGO_TARGET_DIR }bench/reload.sh${*:+ $*}"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cargo build --release -p wasp -p wasp-bench --bin wasp --bin wasp-reload
# The two versions of the test filter, built as host/build-wasm builds plugins.
env -u CARGO_TARGET_DIR cargo build --profile plugin --target wasm32-wasip2 --target-dir target/wasm \
    -p wasp-test-tag-a -p wasp-test-tag-b
WASM=target/wasm/wasm32-wasip2/plugin

# shellcheck source=bench/section.sh
source "$ROOT/bench/section.sh"
run_began
RESULTS=$("$TARGET/release/wasp-reload" --wasp "$TARGET/release/wasp" \
    --filter-a "$WASM/wasp_test_tag_a.wasm" --filter-b "$WASM/wasp_test_tag_b.wasm" "$@")

SECTION=$(cat <<MD
<!-- bench:reload:start -->
## Hot reload: filter replaced under load (\`wasp-reload\`)

A release wasp relays 50 WebSockets (closed loop, 4 messages of a few bytes in flight each) to an echo
backend through a location whose filter is a \`.wasm\` file. The file is replaced (written next to it, renamed
over it), alternating two versions that tag messages differently; each reload is timed from the rename to the
first echo tagged by the new version on a separate probe connection: wasp's 100 ms debounce, then loading
the component (from wasmtime's compilation cache once each version was compiled, as on any run after the
first), then the swap (over 20 reloads, p99 is the maximum). "msg/s" counts echoes received by the 50 load
connections. On a shared machine (see the load average) runs vary by tens of percent.

Command (from the repository root):

\`\`\`sh
$COMMAND
\`\`\`

Machine:

\`\`\`text
$(machine)
\`\`\`

### Time from file write to new version serving; echo rate during reloads

$RESULTS
<!-- bench:reload:end -->
MD
)
write_section reload "$SECTION"
echo "$RESULTS"
