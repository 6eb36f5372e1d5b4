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
# Every round starts a fresh backend and proxy for each target, runs the idle scenario first on those fresh
# processes, then echo (closed loop), echo at a fixed rate, and handshakes. Medians and ratios go to this
# harness's section of BENCHMARKS.md (between <!-- bench:proxy:start --> and <!-- bench:proxy:end -->).
#
# Environment: CARGO_TARGET_DIR (default target), WASP_BIN (default its release/wasp), WASP_FILTER_WASM (the
# pass-through filter component used by the wasp-filter row; default tests/plugins/passthrough built for
# wasm32-wasip2). What is not given is built first; rows whose binary or filter is missing are skipped with a note.
# Installs nginx and haproxy from Debian's packages when they are missing. Everything started here is stopped on exit.
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
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=(-p wasp-bench)
[ -n "${WASP_BIN:-}" ] || BUILD+=(-p wasp)
WASP_BIN=${WASP_BIN:-$TARGET_DIR/release/wasp}
# The pass-through filter plugin (a wasm component that forwards every message unchanged).
BUILD_FILTER=0
[ -n "${WASP_FILTER_WASM:-}" ] || BUILD_FILTER=1
WASP_FILTER_WASM=${WASP_FILTER_WASM:-$TARGET_DIR/wasm32-wasip2/release/wasp_test_passthrough.wasm}

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

WORK=$TARGET_DIR/bench-run
RESULTS=$WORK/results.jsonl
MACHINE=$WORK/machine.txt
BENCH=$TARGET_DIR/release/wasp-bench
ECHO=$TARGET_DIR/release/wasp-echo
NOTES=("The load generator, the echo backend and the proxy share the machine's $(nproc) CPUs (and, on a shared \
machine, whatever else runs): closed-loop msg/s is the whole system's cost per message, not the proxy's alone.")
STARTED=()    # pids of everything started here, stopped by cleanup

log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

# ---- configurations ---------------------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/nginx/logs" "$WORK/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
# nginx's WebSocket proxying guide, complete; limits sized for ~9,500 proxied connections per process.
worker_processes auto;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 19500; }
http {
    access_log off;
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        location / {
            proxy_pass http://127.0.0.1:$BACKEND_PORT;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
EOF
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
wasp_config() { # $1: port, $2: filters line or empty
    cat <<EOF
[[server]]
listen = "127.0.0.1:$1"
[[server.location]]
path = "/"
proxy_pass = "http://127.0.0.1:$BACKEND_PORT"
set_headers = { Upgrade = "\$http_upgrade", Connection = "\$connection_upgrade", Host = "\$host", X-Real-IP = "\$remote_addr", X-Forwarded-For = "\$proxy_add_x_forwarded_for" }
read_timeout = "3600s"
send_timeout = "3600s"
$2
EOF
}
wasp_config "${PORT[wasp]}" "" >"$WORK/wasp.toml"
# A filtered WebSocket owns a plugin instance: room for the idle scenario's 9,000 (the default is 1,000).
wasp_config "${PORT[wasp-filter]}" "filters = [\"$WASP_FILTER_WASM\"]
[plugins]
instances = 9500" >"$WORK/wasp-filter.toml"

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
wait_port() { # $1: port, $2: pid that must stay alive
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { log "process $2 exited before listening on $1"; return 1; }
        sleep 0.1
    done
    log "nothing listening on port $1 after 10 s"
    return 1
}

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
        wasp-filter) RUST_LOG=info,access=off "$WASP_BIN" run -c "$WORK/wasp-filter.toml" >>"$WORK/logs/wasp-filter.log" 2>&1 & ;;
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
for round in $(seq "$ROUNDS"); do
    for target in "${RUN_TARGETS[@]}"; do
        if ! start_backend || ! start_proxy "$target"; then
            NOTES+=("Round $round, $target: could not start (see $WORK/logs/*.log).")
            cleanup
            continue
        fi
        run_scenario "$round" "$target" idle idle "${IDLE_ARGS[@]}" --pid "$PROXY_PID"
        run_scenario "$round" "$target" echo echo "${ECHO_ARGS[@]}" --pid "$PROXY_PID"
        run_scenario "$round" "$target" echo-rate echo "${RATE_ARGS[@]}" --pid "$PROXY_PID"
        run_scenario "$round" "$target" handshake handshake "${HANDSHAKE_ARGS[@]}" --pid "$PROXY_PID"
        cleanup
    done
done
log "runs took $((SECONDS - started_at)) s"

NOTE_ARGS=()
for note in "${NOTES[@]}"; do
    NOTE_ARGS+=(--note "$note")
done
"$BENCH" report --results "$RESULTS" --machine "$MACHINE" --command "$COMMAND" --out "$ROOT/BENCHMARKS.md" "${NOTE_ARGS[@]}"
