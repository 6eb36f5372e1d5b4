#!/usr/bin/env bash
# What scale-out costs and gives: the CPU a handshake costs wasp when its limits are counted in Redis (`[cluster]`)
# rather than in the process, and echo throughput from one wasp process to two sharing a port (`reuse_port`), with
# nginx's tunnel measured in the same run as the reference.
#
# Usage: bench/cluster.sh [--rounds N] [--duration D]   (defaults: 3 rounds of 8 s runs, ~4 minutes)
#
# Rows, interleaved round by round (nginx, wasp, wasp-cluster, wasp-2), each on a fresh echo backend, redis-server
# and proxy:
#   nginx         the guide's proxying: handshake and echo
#   wasp          one process, reuse_port on, with limit_conn and limit_req on the location (counted in the
#                 process): handshake and echo
#   wasp-cluster  the same configuration plus `[cluster]`: both limits also counted in Redis: handshake, with
#                 redis-server's own CPU per handshake beside wasp's
#   wasp-2        two processes of the `wasp` row's configuration on one port: echo, CPU summed over both
# The limits are set high enough never to refuse (this measures what counting costs, not refusals). Scenarios are
# bench/run.sh's: handshake = 16 concurrent cycles of connect, upgrade, one echo, close; echo = closed loop,
# 50 connections × 8 messages in flight. Medians go to BENCHMARKS.md between <!-- bench:cluster:start --> and
# <!-- bench:cluster:end -->.
#
# Environment: CARGO_TARGET_DIR (default target), WASP_BIN (default its release/wasp). Installs nginx and
# redis-server from Debian's packages when they are missing. Everything started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COMMAND="bench/cluster.sh${*:+ $*}"
ROUNDS=3
DURATION=8s
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

LOG_TAG=cluster.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$TARGET_DIR/bench-cluster
RESULTS=$WORK/results.jsonl
BACKEND_PORT=9201 NGINX_PORT=9202 WASP_PORT=9203 REDIS_PORT=9204
if ! command -v nginx >/dev/null || ! command -v redis-server >/dev/null; then
    log "installing nginx and redis-server from Debian's packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx redis-server
fi
cargo build --release "${BUILD[@]}"

rm -rf "$WORK"
mkdir -p "$WORK/nginx/logs" "$WORK/logs"
nginx_conf "$NGINX_PORT" "$BACKEND_PORT" >"$WORK/nginx/nginx.conf"
wasp_config() { # $1: extra top-level tables
    printf '%s\n[[server]]\nlisten = "127.0.0.1:%s"\nreuse_port = true\n' "$1" "$WASP_PORT"
    wasp_location / "$BACKEND_PORT" 'limit_conn = 100000
limit_req = { rate = "1000000r/s", burst = 1000000 }'
}
mkdir -p "$WORK/wasp" "$WORK/wasp-cluster"
wasp_config "" >"$WORK/wasp/wasp.toml"
wasp_config "[cluster]
redis = \"redis://127.0.0.1:$REDIS_PORT\"" >"$WORK/wasp-cluster/wasp.toml"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "kernel: $(uname -srm); $(lscpu | grep -E '^Model name:' | sed 's/  */ /g'); $(nproc) CPUs"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $(nginx -v 2>&1 | sed 's/.*: //'); $(redis-server --version | cut -d' ' -f1-3)"
} >"$WORK/machine.txt"

start() { # $1: port, rest: command; sets PID
    local port=$1
    shift
    "$@" >>"$WORK/logs/$(basename "$1").log" 2>&1 &
    PID=$!
    STARTED+=("$PID")
    wait_port "$port" "$PID"
}
# A fresh backend, redis-server and proxy for target $1; sets PIDS (the proxy processes) and REDIS_PID.
fresh() {
    start "$BACKEND_PORT" "$ECHO" --listen "127.0.0.1:$BACKEND_PORT"
    start "$REDIS_PORT" redis-server --port "$REDIS_PORT" --save "" --appendonly no
    REDIS_PID=$PID
    PIDS=()
    case "$1" in
        nginx) start "$NGINX_PORT" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;'; PIDS=("$PID") ;;
        wasp | wasp-2) start "$WASP_PORT" env RUST_LOG=info,access=off "$WASP_BIN" run -c "$WORK/wasp/wasp.toml"
            PIDS=("$PID") ;;&
        wasp-2) start "$WASP_PORT" env RUST_LOG=info,access=off "$WASP_BIN" run -c "$WORK/wasp/wasp.toml"
            PIDS+=("$PID") ;;
        wasp-cluster) start "$WASP_PORT" env RUST_LOG=info,access=off "$WASP_BIN" run -c "$WORK/wasp-cluster/wasp.toml"
            PIDS=("$PID")
            # Connected to Redis before measuring: the first seconds would otherwise count locally.
            local i
            for i in $(seq 100); do
                [ "$(redis-cli -p "$REDIS_PORT" --scan --pattern '*' | wc -l)" -gt 0 ] && break
                sleep 0.1
            done ;;
    esac
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # $1: round, $2: target, $3: scenario, rest: wasp-bench arguments
    local round=$1 target=$2 scenario=$3 port output json redis_before
    shift 3
    port=$([ "$target" = nginx ] && echo "$NGINX_PORT" || echo "$WASP_PORT")
    local pid_args=()
    for pid in "${PIDS[@]}"; do pid_args+=(--pid "$pid"); done
    redis_before=$(ticks "$REDIS_PID")
    output=$("$BENCH" "$scenario" --url "ws://127.0.0.1:$port/" --json -d "$DURATION" "${pid_args[@]}" "$@" 2>&1) || {
        log "round $round $target $scenario FAILED: $output"
        return 0
    }
    log "round $round $target $scenario: $(grep -v '^{' <<<"$output")"
    json=$(grep '^{' <<<"$output")
    printf '{"round":%d,"target":"%s","scenario":"%s","redis_ticks":%d,"result":%s}\n' "$round" "$target" \
        "$scenario" "$(($(ticks "$REDIS_PID") - redis_before))" "$json" >>"$RESULTS"
}

: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for target in nginx wasp wasp-cluster wasp-2; do
        fresh "$target"
        case "$target" in
            nginx | wasp) run "$round" "$target" handshake -c 16 -s 64
                run "$round" "$target" echo -c 50 -m 8 -s 64 --warmup 1s ;;
            wasp-cluster) run "$round" "$target" handshake -c 16 -s 64 ;;
            wasp-2) run "$round" "$target" echo -c 50 -m 8 -s 64 --warmup 1s ;;
        esac
        cleanup
    done
done

python3 - "$RESULTS" "$WORK/machine.txt" "$COMMAND" "$ROOT/BENCHMARKS.md" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
results, machine, command, out, clk_tck = sys.argv[1:]
rows = [json.loads(line) for line in open(results)]
def pick(target, scenario):
    return [r for r in rows if r["target"] == target and r["scenario"] == scenario]
def median(values):
    return statistics.median(values) if values else float("nan")
def cpu(r):
    c = r["result"].get("cpu")
    return c["user_us_per_op"] + c["system_us_per_op"]
def redis_us(r):
    return r["redis_ticks"] * 1e6 / int(clk_tck) / max(r["result"]["handshakes"], 1)
nginx_hs = median([r["result"]["handshakes_per_sec"] for r in pick("nginx", "handshake")])
nginx_echo = median([r["result"]["msgs_per_sec"] for r in pick("nginx", "echo")])
lines = ["| row | handshakes/s (× nginx) | wasp CPU µs / handshake | redis-server CPU µs / handshake |",
         "| --- | ---: | ---: | ---: |"]
for target in ["nginx", "wasp", "wasp-cluster"]:
    hs = pick(target, "handshake")
    rate = median([r["result"]["handshakes_per_sec"] for r in hs])
    redis = f"{median([redis_us(r) for r in hs]):.0f}" if target == "wasp-cluster" else "–"
    who = "nginx" if target == "nginx" else "wasp"
    lines.append(f"| {target} | {rate:,.0f} ({rate / nginx_hs:.2f}×) | {median([cpu(r) for r in hs]):.0f} ({who}) | {redis} |")
lines += ["", "| row | echo msg/s (× nginx) | proxy CPU µs / message | p99 ms |", "| --- | ---: | ---: | ---: |"]
for target in ["nginx", "wasp", "wasp-2"]:
    echo = pick(target, "echo")
    rate = median([r["result"]["msgs_per_sec"] for r in echo])
    p99 = median([r["result"]["latency"]["p99_us"] / 1000 for r in echo])
    lines.append(f"| {target} | {rate:,.0f} ({rate / nginx_echo:.2f}×) | {median([cpu(r) for r in echo]):.2f} | {p99:.2f} |")
section = "\n".join([
    "<!-- bench:cluster:start -->",
    "## Scale-out: cluster-wide limits and a second process (`bench/cluster.sh`)",
    "",
    "Medians of the rounds; every row ran in the same run, interleaved round by round. `wasp` counts",
    "`limit_conn` and `limit_req` in the process, `wasp-cluster` also in Redis (one Lua call each way per",
    "handshake); `wasp-2` is two processes of the `wasp` row on one port (`reuse_port`), their CPU summed.",
    "",
    "Command (from the repository root):",
    "", "```sh", command, "```", "",
    "Machine:", "", "```", open(machine).read().rstrip(), "```", "",
    *lines,
    "<!-- bench:cluster:end -->",
])
text = open(out).read()
start, end = "<!-- bench:cluster:start -->", "<!-- bench:cluster:end -->"
if start in text:
    text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
open(out, "w").write(text)
print(section)
PY
