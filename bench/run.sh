#!/usr/bin/env bash
# Benchmarks WebSocket proxying: direct to the echo backend, nginx, HAProxy, wasp (tunnel) and wasp with a
# pass-through wasm filter, with the same proxy settings everywhere (nginx's WebSocket guide: HTTP/1.1 upstream,
# Upgrade/Connection, Host, X-Real-IP, X-Forwarded-For, 3600 s timeouts).
#
# Usage: bench/run.sh [--quick] [--rounds N] [--targets "direct nginx haproxy wasp wasp-filter"]
#
#   --quick    short runs (~2 minutes in all) instead of the full set (~10-15 minutes)
#   --rounds   rounds of every scenario on every target, interleaved A B C … A B C … (default 3)
#   --targets  a subset of the targets, in this order of running
#
# Scenarios, in the order each round runs them on every target:
#   idle             9,000 connections upgraded and held with no message exchanged; the target's RSS growth per
#                    connection; afterwards a ping round trip on each counts the connections served
#   idle-after-echo  the same, but each connection first echoes one message (through the filter on wasp-filter),
#                    and a second one after the reading
#   echo             closed loop, 50 connections × 8 messages in flight
#   echo-rate        5,000 msg/s over 50 connections, latency from each message's scheduled send time
#   handshake        16 concurrent cycles of connect, upgrade, one echo, close
#   spinners         wasp-filter only: p50/p99 of 100 connections echoing at 2,000 msg/s, alone and while 50
#                    abusive connections a second each send one message that makes the /spin/ location's filter
#                    spin until the per-call deadline closes it (1011)
# Each memory scenario runs on a freshly started backend and proxy of its own (memory freed by one run's
# connections would hide the next one's growth), the others one after another on a third fresh pair. Medians and
# ratios go to this harness's section of BENCHMARKS.md (between <!-- bench:proxy:start --> and
# <!-- bench:proxy:end -->).
#
# Environment: CARGO_TARGET_DIR (default target), WASP_BIN (default its release/wasp), WASP_FILTER_WASM (the
# pass-through filter component used by the wasp-filter row; default tests/plugins/passthrough built for
# wasm32-wasip2), WASP_SPIN_WASM (the spinners scenario's filter, which spins on a text message `loop`; default
# tests/plugins/probe built for wasm32-wasip2). What is not given is built first; rows whose binary or filter is
# missing are skipped with a note. Installs nginx and haproxy from Debian's packages when they are missing.
# Everything started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COMMAND="bench/run.sh${*:+ $*}"

QUICK=0
ROUNDS=3
TARGETS="direct nginx haproxy wasp wasp-filter"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        -h | --help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

LOG_TAG=run.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# The pass-through filter plugin (a wasm component that forwards every message unchanged).
BUILD_FILTER=0
[ -n "${WASP_FILTER_WASM:-}" ] || BUILD_FILTER=1
WASP_FILTER_WASM=${WASP_FILTER_WASM:-$TARGET_DIR/wasm32-wasip2/release/wasp_test_passthrough.wasm}
# The spinners scenario's filter: the test probe, which spins forever on a text message `loop`.
BUILD_SPIN=0
[ -n "${WASP_SPIN_WASM:-}" ] || BUILD_SPIN=1
WASP_SPIN_WASM=${WASP_SPIN_WASM:-$TARGET_DIR/wasm32-wasip2/plugin/wasp_test_probe.wasm}

BACKEND_PORT=9001
declare -A PORT=([direct]=$BACKEND_PORT [nginx]=9101 [haproxy]=9102 [wasp]=9103 [wasp-filter]=9104)

if [ "$QUICK" = 1 ]; then
    DURATION=1.5s WARMUP=0.5s SETTLE=0.5s
else
    DURATION=10s WARMUP=1s SETTLE=1s
fi
ECHO_ARGS=(-c 50 -m 8 -s 64 -d "$DURATION" --warmup "$WARMUP")
RATE_ARGS=(-c 50 --rate 5000 -s 64 -d "$DURATION" --warmup "$WARMUP")
HANDSHAKE_ARGS=(-c 16 -s 64 -d "$DURATION")
IDLE_ARGS=(-n 9000 --sources 8 --settle "$SETTLE")
SPIN_ARGS=(-c 100 --rate 2000 -s 64 -d "$DURATION" --warmup "$WARMUP" --abusers-per-sec 50 --spin-message loop
    --spin-url "ws://127.0.0.1:${PORT[wasp-filter]}/spin/")

WORK=$TARGET_DIR/bench-run
RESULTS=$WORK/results.jsonl
WASP_FILTER_CONF=$WORK/wasp-filter.toml
MACHINE=$WORK/machine.txt
NOTES=("The load generator, the echo backend and the proxy share the machine's $(nproc) CPUs (and, on a shared \
machine, whatever else runs): closed-loop msg/s is the whole system's cost per message, not the proxy's alone.")
# ---- tools ----------------------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
    log "installing nginx and haproxy from Debian's packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx haproxy
fi
log "building ${BUILD[*]}"
cargo build --release "${BUILD[@]}"
if [ "$BUILD_FILTER" = 1 ]; then
    log "building the pass-through filter"
    cargo build --release --target wasm32-wasip2 -p wasp-test-passthrough
fi
if [ "$BUILD_SPIN" = 1 ]; then
    log "building the spinning filter (the test probe)"
    cargo build --profile plugin --target wasm32-wasip2 -p wasp-test-probe
fi

available() {
    case "$1" in
        wasp | wasp-filter)
            if [ ! -x "$WASP_BIN" ]; then
                echo "$1 skipped: $WASP_BIN is missing (build it with \`cargo build --release -p wasp\`)"
                return 1
            fi
            if [ "$1" = wasp-filter ] && [ ! -f "$WASP_FILTER_WASM" ]; then
                echo "$1 skipped: pass-through filter $WASP_FILTER_WASM is missing (set WASP_FILTER_WASM)"
                return 1
            fi ;;
    esac
}
RUN_TARGETS=()
for target in $TARGETS; do
    [ -n "${PORT[$target]:-}" ] || { echo "run.sh: unknown target $target" >&2; exit 2; }
    if reason=$(available "$target"); then
        RUN_TARGETS+=("$target")
    else
        log "$reason"
        NOTES+=("$reason.")
    fi
done
SPINNERS=1
if [ ! -f "$WASP_SPIN_WASM" ]; then
    SPINNERS=0
    reason="spinners skipped: spinning filter $WASP_SPIN_WASM is missing (set WASP_SPIN_WASM)"
    log "$reason"
    NOTES+=("$reason.")
fi

# ---- configurations ---------------------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/nginx/logs" "$WORK/logs"
nginx_conf "${PORT[nginx]}" "$BACKEND_PORT" >"$WORK/nginx/nginx.conf"
cat >"$WORK/haproxy.cfg" <<EOF
# The same proxying in HAProxy: Upgrade/Connection/Host pass through as sent, X-Forwarded-For via forwardfor.
global
    maxconn 9700
    nbthread $(nproc)
defaults
    mode http
    timeout connect 60s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
frontend websocket
    bind 127.0.0.1:${PORT[haproxy]}
    option forwardfor
    http-request set-header X-Real-IP %[src]
    default_backend echo
backend echo
    server echo 127.0.0.1:$BACKEND_PORT maxconn 9700
EOF
wasp_server() { # $1: port
    printf '[[server]]\nlisten = "127.0.0.1:%s"\n' "$1"
}
{ wasp_server "${PORT[wasp]}"; wasp_location / "$BACKEND_PORT" ""; } >"$WORK/wasp.toml"
{
    cat <<EOF
[plugins]
call_timeout = "10ms" # the default, stated: what one spinning message costs its worker (spinners scenario)
EOF
    wasp_server "${PORT[wasp-filter]}"
    wasp_location / "$BACKEND_PORT" "filters = [\"$WASP_FILTER_WASM\"]"
    # The spinners scenario's abusive clients send their one message here.
    [ "$SPINNERS" = 0 ] || wasp_location /spin/ "$BACKEND_PORT" "filters = [\"$WASP_SPIN_WASM\"]"
} >"$WASP_FILTER_CONF"

# ---- machine ----------------------------------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "kernel: $(uname -srm)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|Hypervisor vendor|L3 cache):' | sed 's/  */ /g'
    free -h | head -2
    echo "open files per process (hard): $(ulimit -Hn); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'), haproxy: $(haproxy -v | head -1 | cut -d' ' -f3), $(rustc -V)"
} >"$MACHINE"

# ---- processes --------------------------------------------------------------------------------------------------
start_backend() {
    "$ECHO" --listen "127.0.0.1:$BACKEND_PORT" >"$WORK/logs/echo.log" 2>&1 &
    BACKEND_PID=$!
    STARTED+=("$BACKEND_PID")
    wait_port "$BACKEND_PORT" "$BACKEND_PID"
}

start_proxy() { # $1: target; sets PROXY_PID (the backend itself for direct)
    case "$1" in
        direct) PROXY_PID=$BACKEND_PID; return 0 ;;
        nginx) nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >>"$WORK/logs/nginx.log" 2>&1 & ;;
        haproxy) haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/logs/haproxy.log" 2>&1 & ;;
        # Logs go to a subdirectory: wasp watches (not recursively) its configuration's directory, and its log lines
        # landing there would wake the watcher on every write. The access log is off, as for nginx and HAProxy.
        wasp) RUST_LOG=info,access=off "$WASP_BIN" run -c "$WORK/wasp.toml" >>"$WORK/logs/wasp.log" 2>&1 & ;;
        wasp-filter) RUST_LOG=info,access=off "$WASP_BIN" run -c "$WASP_FILTER_CONF" >>"$WORK/logs/wasp-filter.log" 2>&1 & ;;
    esac
    PROXY_PID=$!
    STARTED+=("$PROXY_PID")
    wait_port "${PORT[$1]}" "$PROXY_PID"
}

# ---- runs -------------------------------------------------------------------------------------------------------
run_scenario() { # $1: round, $2: target, $3: scenario, $4: mode, rest: wasp-bench arguments
    local round=$1 target=$2 scenario=$3 mode=$4 output json
    shift 4
    if ! output=$(timeout --foreground 180 "$BENCH" "$mode" --url "ws://127.0.0.1:${PORT[$target]}/" --json "$@" 2>&1); then
        log "round $round $target $scenario FAILED: $output"
        NOTES+=("Round $round, $target, $scenario failed: $(head -c 300 <<<"$output" | tr '\n' ' ')")
        return 0
    fi
    log "round $round $target $scenario: $(grep -v '^{' <<<"$output")"
    json=$(grep '^{' <<<"$output")
    printf '{"round":%d,"target":"%s","scenario":"%s","result":%s}\n' "$round" "$target" "$scenario" "$json" >>"$RESULTS"
}

: >"$RESULTS"
started_at=$SECONDS
fresh() { # $1: round, $2: target; starts a backend and the target's proxy (PROXY_PID), or notes why not
    start_backend && start_proxy "$2" && return 0
    NOTES+=("Round $1, $2: could not start (see $WORK/logs/*.log).")
    cleanup
    return 1
}
for round in $(seq "$ROUNDS"); do
    for target in "${RUN_TARGETS[@]}"; do
        if fresh "$round" "$target"; then
            run_scenario "$round" "$target" idle idle "${IDLE_ARGS[@]}" --pid "$PROXY_PID"
            cleanup
        fi
        if fresh "$round" "$target"; then
            run_scenario "$round" "$target" idle-after-echo idle "${IDLE_ARGS[@]}" --echo-first --pid "$PROXY_PID"
            cleanup
        fi
        fresh "$round" "$target" || continue
        run_scenario "$round" "$target" echo echo "${ECHO_ARGS[@]}" --pid "$PROXY_PID"
        run_scenario "$round" "$target" echo-rate echo "${RATE_ARGS[@]}" --pid "$PROXY_PID"
        run_scenario "$round" "$target" handshake handshake "${HANDSHAKE_ARGS[@]}" --pid "$PROXY_PID"
        # nginx and HAProxy run no filters, and wasp's tunnel none either: nothing of theirs can spin.
        if [ "$target" = wasp-filter ] && [ "$SPINNERS" = 1 ]; then
            run_scenario "$round" "$target" spinners spinners "${SPIN_ARGS[@]}" --pid "$PROXY_PID"
        fi
        cleanup
    done
done
log "runs took $((SECONDS - started_at)) s"

NOTE_ARGS=()
for note in "${NOTES[@]}"; do
    NOTE_ARGS+=(--note "$note")
done
"$BENCH" report --results "$RESULTS" --machine "$MACHINE" --command "$COMMAND" --out "$ROOT/BENCHMARKS.md" "${NOTE_ARGS[@]}"
