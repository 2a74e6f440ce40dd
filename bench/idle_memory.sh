#!/usr/bin/env bash
# Memory per idle authenticated connection (issue 10): starts `tidegate serve` (release
# build, each runtime shell), opens N connections spread over several 127.0.0.x source
# addresses, logs each in and leaves it idle, then reports
# (VmRSS after - VmRSS before) / N of the server process, from /proc/PID/status.
#
# Cases (each on a fresh server):
#   pop3        POP3, idle after PASS
#   pop3-tls    the same on an implicit-TLS port
#   imap        IMAP, SELECT INBOX then IDLE
#   imap-tls    the same on an implicit-TLS port
#   proxy       IMAP through a front-end (which splices) to a back-end; the front-end's RSS
#   proxy-tls   the same with TLS between client and front-end (the front-end relays)
#
# Kernel memory (socket buffers, pipes) is not in VmRSS and not counted.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/idle_memory.sh [options]
  --connections N        idle connections per case (default 10000; proxied cases are
                         limited by the open-files limit: the front-end holds two per client)
  --variants "smol mio"  runtime shells to measure (default both)
  --cases "..."          pop3 pop3-tls imap imap-tls proxy proxy-tls (default all)
  --sources N            client source addresses 127.0.0.1..N (default 16)
  --users N              users the connections spread over (default 1000)
  --settle SECS          wait after the last login before reading RSS (default 3)
  --idle-poll SECS       [imap] idle_poll_secs of the servers (default 30)
  --bin-dir DIR          use DIR/tidegate-smol, DIR/tidegate-mio, DIR/tidegate-bench
                         instead of building them (release)
  --port-base P          first port to use (default 24100)
  --workdir DIR          keep work files (configs, logs) in DIR
EOF
}

CONNECTIONS=10000
VARIANTS="smol mio"
CASES="pop3 pop3-tls imap imap-tls proxy proxy-tls"
SOURCES=16
USERS=1000
SETTLE=3
IDLE_POLL=30
BIN_DIR=
PORT_BASE=24100
WORKDIR=
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) CONNECTIONS=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --cases) CASES=$2; shift 2 ;;
        --sources) SOURCES=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --idle-poll) IDLE_POLL=$2; shift 2 ;;
        --bin-dir) BIN_DIR=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "idle_memory.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d -t tidegate-idle.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 0 ]; then rm -rf "$WORKDIR"; else echo "work files kept in $WORKDIR"; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$CONNECTIONS" -gt $((NOFILE - 500)) ]; then
    CONNECTIONS=$((NOFILE - 500))
    log "open-files limit $NOFILE: --connections lowered to $CONNECTIONS"
fi
PROXY_CONNECTIONS=$CONNECTIONS
if [ "$NOFILE" != unlimited ] && [ $((2 * CONNECTIONS)) -gt $((NOFILE - 500)) ]; then
    PROXY_CONNECTIONS=$(((NOFILE - 500) / 2))
    log "open-files limit $NOFILE: proxied cases use $PROXY_CONNECTIONS connections"
fi

# ---------------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------------
if [ -z "$BIN_DIR" ]; then
    BIN_DIR=$WORKDIR/bin
    mkdir -p "$BIN_DIR"
    cd "$ROOT"
    for v in $VARIANTS; do
        case "$v" in
            smol) log "building tidegate (smol, release)"; cargo build --release -p tidegate ;;
            mio) log "building tidegate (mio, release)"
                 cargo build --release -p tidegate --no-default-features --features mio ;;
            *) echo "idle_memory.sh: unknown variant $v" >&2; exit 2 ;;
        esac
        cp "$TARGET_DIR/release/tidegate" "$BIN_DIR/tidegate-$v"
    done
    log "building tidegate-bench (release)"
    cargo build --release -p tidegate-bench
    cp "$TARGET_DIR/release/tidegate-bench" "$BIN_DIR/tidegate-bench"
fi
BENCH=$BIN_DIR/tidegate-bench

# ---------------------------------------------------------------------------------------
# Users: {PLAIN} passwords so that 10,000 logins measure memory, not hashing.
# ---------------------------------------------------------------------------------------
DOMAIN=bench.test
PASSWORD=benchpw
DATA=$WORKDIR/data
rm -rf "$DATA"
mkdir -p "$DATA"
: > "$DATA/users"
for i in $(seq "$USERS"); do
    echo "user$i@$DOMAIN {PLAIN}$PASSWORD" >> "$DATA/users"
    mkdir -p "$DATA/mail/$DOMAIN/user$i/"{tmp,new,cur}
done

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }

# thread_ticks PID: CPU ticks (utime + stime) per thread of PID, event loops and
# executor threads one by one, other pools summed: shows whether every core worked.
thread_ticks() {
    local t name rest
    for t in /proc/"$1"/task/*; do
        name=$(cat "$t/comm" 2>/dev/null) || continue
        rest=$(cut -d')' -f2 "$t/stat" 2>/dev/null) || continue
        # shellcheck disable=SC2086
        set -- $rest
        case "$name" in
            tidegate-loop-*|tidegate-smol-*) ;;
            *) name=${name%%-[0-9]*} ;;
        esac
        echo "$name $((${12} + ${13}))"
    done | awk '{ t[$1] += $2 } END { for (k in t) if (t[k] > 0) printf "%s=%d ", k, t[k] }'
}

# server_config NAME PROTO PLAIN_PORT TLS_PORT MAXCONN [EXTRA]
server_config() {
    local name=$1 proto=$2
    mkdir -p "$DATA/$name-work"
    cat <<EOF
hostname = "localhost"
[storage]
mailbox_path = "$DATA/mail"
workarea = "$DATA/$name-work"
fsync = false
[users]
file = "$DATA/users"
[$proto]
listen = ["127.0.0.1:$3"]
listen_tls = ["127.0.0.1:$4"]
EOF
    [ "$proto" = imap ] && echo "idle_poll_secs = $IDLE_POLL"
    cat <<EOF
[server]
allow_root = true
max_connections = $5
max_connections_per_ip = 0
shutdown_grace_secs = 1
${6:-}
EOF
}

# start NAME VARIANT CONFIG PORT -> sets STARTED_PID
start() {
    "$BIN_DIR/tidegate-$2" serve --config "$3" 2> "$WORKDIR/$1.log" &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local i
    for i in $(seq 200); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$4") 2>/dev/null; then return 0; fi
        kill -0 "$STARTED_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$1 did not start:"; tail -5 "$WORKDIR/$1.log" >&2
    exit 1
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

ROWS=()
PORT=$PORT_BASE

# measure VARIANT CASE
measure() {
    local v=$1 case=$2 proto tls=0 proxy=0 n=$CONNECTIONS
    case "$case" in
        pop3) proto=pop3 ;;
        pop3-tls) proto=pop3; tls=1 ;;
        imap) proto=imap ;;
        imap-tls) proto=imap; tls=1 ;;
        proxy) proto=imap; proxy=1; n=$PROXY_CONNECTIONS ;;
        proxy-tls) proto=imap; proxy=1; tls=1; n=$PROXY_CONNECTIONS ;;
        *) echo "idle_memory.sh: unknown case $case" >&2; exit 2 ;;
    esac
    local plain=$((PORT + 1)) secure=$((PORT + 2)) back=$((PORT + 3)) back_tls=$((PORT + 4))
    PORT=$((PORT + 4))
    local name="$v-$case" pid backend_pid=""
    if [ "$proxy" = 1 ]; then
        server_config "$name-back" imap "$back" "$back_tls" $((n + 1000)) \
            "$(printf '[trust]\nnetworks = ["127.0.0.0/8"]\nproxy_protocol = true')" \
            > "$DATA/$name-back.toml"
        start "$name-back" "$v" "$DATA/$name-back.toml" "$back"
        backend_pid=$STARTED_PID
        server_config "$name" imap "$plain" "$secure" $((2 * n + 1000)) \
            "$(printf '[proxy]\ndefault_host = "127.0.0.1"\nbackend_ports = { imap = %s }\nclient_address = "proxy-v2"' "$back")" \
            > "$DATA/$name.toml"
    else
        server_config "$name" "$proto" "$plain" "$secure" $((n + 1000)) > "$DATA/$name.toml"
    fi
    start "$name" "$v" "$DATA/$name.toml" "$plain"
    pid=$STARTED_PID
    sleep 1
    local before after port=$plain flags=()
    before=$(rss_kb "$pid")
    if [ "$tls" = 1 ]; then
        port=$secure
        flags=(--tls-ca "$DATA/$name-work/tls/cert.pem")
    fi
    log "tidegate-$v $case: $n connections"
    local out=$WORKDIR/$name.out
    "$BENCH" hold --target "127.0.0.1:$port" --protocol "$proto" "${flags[@]}" \
        --users-pattern "user{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
        --connections "$n" --sources "$SOURCES" > "$out" 2> "$out.err" &
    local client=$!
    PIDS+=("$client")
    while ! grep -q '^READY' "$out" 2>/dev/null; do
        if ! kill -0 "$client" 2>/dev/null; then
            log "the client failed: $(tail -3 "$out.err")"; break
        fi
        sleep 0.5
    done
    sleep "$SETTLE"
    after=$(rss_kb "$pid")
    local up errors per
    up=$(sed -n 's/^READY n=\([0-9]*\).*/\1/p' "$out")
    errors=$(sed -n 's/^READY .*errors=\([0-9]*\).*/\1/p' "$out")
    up=${up:-0}
    per=0
    [ "$up" -gt 0 ] && per=$(awk -v a="$after" -v b="$before" -v n="$up" 'BEGIN { printf "%.1f", (a - b) / n }')
    echo "RESULT shell=$v case=$case connections=$up errors=${errors:-?} rss_before_kb=$before rss_after_kb=$after kib_per_connection=$per"
    ROWS+=("$v|$case|$up|$before|$after|$per")
    echo "THREADS shell=$v case=$case $(thread_ticks "$pid")"
    stop "$client"
    stop "$pid"
    [ -n "$backend_pid" ] && stop "$backend_pid"
    return 0
}

for v in $VARIANTS; do
    for c in $CASES; do
        measure "$v" "$c"
    done
done

echo
echo "Memory per idle connection (server VmRSS; kernel socket memory not included):"
printf '%-6s %-10s %12s %14s %14s %10s\n' shell case connections "RSS before KiB" "RSS after KiB" "KiB/conn"
for r in "${ROWS[@]}"; do
    IFS='|' read -r v c up b a p <<< "$r"
    printf '%-6s %-10s %12s %14s %14s %10s\n' "$v" "$c" "$up" "$b" "$a" "$p"
done
