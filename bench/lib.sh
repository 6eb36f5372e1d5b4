# Shell pieces the benchmark harnesses share (bench/run.sh, bench/cluster.sh): sourced, not run.
# The caller sets ROOT (the repository), LOG_TAG (its name in log lines) and, before calling nginx_conf, WORK
# (its working directory).

# The binaries: WASP_BIN as given, else built with BENCH and ECHO (`cargo build --release "${BUILD[@]}"`).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=(-p wasp-bench)
[ -n "${WASP_BIN:-}" ] || BUILD+=(-p wasp)
WASP_BIN=${WASP_BIN:-$TARGET_DIR/release/wasp}
BENCH=$TARGET_DIR/release/wasp-bench
ECHO=$TARGET_DIR/release/wasp-echo

STARTED=() # pids of everything started, stopped by cleanup

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%T)" "$*" >&2; }

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

nginx_conf() { # $1: listen port, $2: backend port: nginx's WebSocket proxying guide, complete, on stdout
    cat <<NGINX
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
        listen 127.0.0.1:$1 backlog=4096;
        location / {
            proxy_pass http://127.0.0.1:$2;
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
NGINX
}

wasp_location() { # $1: path, $2: backend port, $3: extra lines: the same proxying as nginx_conf's, on stdout
    cat <<WASP
[[server.location]]
path = "$1"
proxy_pass = "http://127.0.0.1:$2"
set_headers = { Upgrade = "\$http_upgrade", Connection = "\$connection_upgrade", Host = "\$host", X-Real-IP = "\$remote_addr", X-Forwarded-For = "\$proxy_add_x_forwarded_for" }
read_timeout = "3600s"
send_timeout = "3600s"
$3
WASP
}
