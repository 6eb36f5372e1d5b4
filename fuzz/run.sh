#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other,
# each on its corpus (fuzz/corpus/TARGET, kept in git), then minimises that
# corpus (`cargo fuzz cmin`: only inputs that add coverage stay). Stops at the
# first crash: libFuzzer writes it to fuzz/artifacts/TARGET/ (see README.md to
# reproduce and shrink).
# usage: fuzz/run.sh [SECONDS] [TARGET...]     (from anywhere; needs nightly and cargo-fuzz)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_parse import_nginx route frame_wire tunnel_cursor
  request_head vars_template plugin_boundary)
cd "$root"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# The guest of plugin_boundary, built with the pinned toolchain as the test
# plugins are (nightly has no wasm32-wasip2 standard library: README.md).
if [[ " ${targets[*]} " == *" plugin_boundary "* ]]; then
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR \
    cargo build -q -p wasp-test-fuzz-guest --target wasm32-wasip2 --profile plugin \
    --target-dir "$root/target/wasm"
fi

# -max_len per target: configuration files and request heads are a few KiB;
# 64 KiB leaves room for frames past the 16-bit length and large heads.
max_len() {
  case $1 in
    config_parse | import_nginx) echo 8192 ;;
    request_head) echo 65536 ;;
    *) echo 65536 ;;
  esac
}
for target in "${targets[@]}"; do
  features=()
  [ "$target" = plugin_boundary ] && features=(--features plugin-boundary)
  mkdir -p "fuzz/corpus/$target"
  printf '\n==> %s: %s s\n' "$target" "$seconds"
  cargo +nightly fuzz run "${features[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1
  # Keep the corpus small enough for git: only inputs that add coverage,
  # besides the named ones (hand-written seeds, inputs of fixed findings),
  # which cmin would rename or drop.
  named=$(mktemp -d)
  find "fuzz/corpus/$target" -maxdepth 1 \( -name 'seed-*' -o -name 'regression-*' \) -exec cp {} "$named" \;
  cargo +nightly fuzz cmin "${features[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_len="$(max_len "$target")" >/dev/null 2>&1
  cp "$named"/* "fuzz/corpus/$target/" 2>/dev/null || true
  rm -rf "$named"
  printf '%s: %s inputs kept in fuzz/corpus/%s\n' "$target" "$(ls "fuzz/corpus/$target" | wc -l)" "$target"
done
