#!/usr/bin/env bash
# Outbound benchmark: messages per second from submission, through the outbound queue
# (fsync on), to a local receiving server (Postfix's smtp-sink, dumping each message to a
# file), for tidegate and for Postfix relaying to the same sink, same machine, same run.
# The clock runs from the first submitted message until the sink holds every
# acknowledged one. See bench/README.md. Usage: bash bench/outbound.sh [options]
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/outbound.sh [options]
  --duration SECS         seconds of submission load per server (default 10)
  --concurrency N         concurrent submitting clients (default 8)
  --message-size BYTES    size of each message (default 4096)
  --runners N             tidegate [relay] runners (default 4)
  --reuse N               tidegate [relay] reuse_messages: messages per connection
                          to the sink (default 100; 1 = a connection per message)
  --no-fsync              tidegate [storage] fsync = false (shows what the syncs cost;
                          not a fair comparison with Postfix, which fsyncs)
  --skip-postfix          measure tidegate only
  --skip-build            use target/release binaries as they are
  --drain-timeout SECS    longest wait for a queue to empty (default 300)
  --port-base PORT        first local port used (default 28025)
  --workdir DIR           keep data, configs and logs in DIR (default: a temp dir)
EOF
}

DURATION=10
CONCURRENCY=8
MESSAGE_SIZE=4096
RUNNERS=4
REUSE=100
FSYNC=true
SKIP_POSTFIX=0
SKIP_BUILD=0
DRAIN_TIMEOUT=300
PORT_BASE=28025
WORKDIR=""
USER_ADDR=bench@bench.test
PASSWORD=benchpw
RCPTS=50

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --message-size) MESSAGE_SIZE=$2; shift 2 ;;
        --runners) RUNNERS=$2; shift 2 ;;
        --reuse) REUSE=$2; shift 2 ;;
        --no-fsync) FSYNC=false; shift ;;
        --skip-postfix) SKIP_POSTFIX=1; shift ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --drain-timeout) DRAIN_TIMEOUT=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "outbound.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

command -v smtp-sink > /dev/null || {
    echo "outbound.sh: smtp-sink is missing (it comes with postfix: bench/smtp.sh --install-postfix)" >&2
    exit 1
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/tidegate-outbound-bench.XXXXXX")
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
chmod 755 "$WORKDIR"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }

PIDS=()
PF_CONF=""
cleanup() {
    [ -n "$PF_CONF" ] && postfix -c "$PF_CONF" stop > /dev/null 2>&1 || true
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 0 ]; then rm -rf "$WORKDIR"; else echo "work files kept in $WORKDIR" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$SKIP_BUILD" = 0 ]; then
    (cd "$ROOT" && cargo build --release -p tidegate -p tidegate-bench)
fi
TIDEGATE=$TARGET_DIR/release/tidegate
BENCH=$TARGET_DIR/release/tidegate-bench

wait_port() { # PORT
    for _ in $(seq 150); do
        "$BENCH" wait --target "127.0.0.1:$1" --timeout 1 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing greets on 127.0.0.1:$1"; return 1
}

# start_sink PORT DIR: an smtp-sink that writes every message into DIR.
start_sink() {
    mkdir -p "$2"
    chown nobody "$2"
    smtp-sink -u nobody -d "$2/%M." "127.0.0.1:$1" 1024 2> "$2.log" &
    PIDS+=("$!")
    wait_port "$1"
}

count() { find "$1" -type f | wc -l; }

ROWS=()

# run NAME SUBMIT_PORT SINK_DIR PID [AUTH]: load, then wait until the sink has them all.
run() {
    local name=$1 port=$2 sink=$3 pid=$4 auth=${5:-} out=$WORKDIR/$1.out
    local flags=()
    [ -n "$auth" ] && flags+=(--auth "$auth")
    local t0 t_end t_done before after
    before=$("$BENCH" procstat --pid "$pid")
    t0=$(now)
    "$BENCH" smtp --target "127.0.0.1:$port" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --message-size "$MESSAGE_SIZE" --rcpt-pattern "user{}@remote.test" --user-count "$RCPTS" \
        --from "$USER_ADDR" --per-connection 10 "${flags[@]}" > "$out" 2> "$out.err" || true
    t_end=$(now)
    cat "$out" >&2
    local accepted
    accepted=$(sed -n 's/.*RESULT.* messages=\([0-9]*\).*/\1/p' "$out" | head -1)
    accepted=${accepted:-0}
    local deadline
    deadline=$(awk -v t="$t_end" -v d="$DRAIN_TIMEOUT" 'BEGIN { printf "%.3f", t + d }')
    while [ "$(count "$sink")" -lt "$accepted" ]; do
        if awk -v a="$(now)" -v b="$deadline" 'BEGIN { exit !(a > b) }'; then
            log "$name: the sink has $(count "$sink") of $accepted after $DRAIN_TIMEOUT s"
            break
        fi
        sleep 0.05
    done
    t_done=$(now)
    after=$("$BENCH" procstat --pid "$pid")
    local got rate secs cpu_ms
    got=$(count "$sink")
    secs=$(awk -v a="$t0" -v b="$t_done" 'BEGIN { printf "%.2f", b - a }')
    rate=$(awk -v n="$got" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
    cpu_ms=$(awk -v a="$(echo "$before" | tr ' ' '\n' | sed -n 's/^ticks=//p')" \
        -v b="$(echo "$after" | tr ' ' '\n' | sed -n 's/^ticks=//p')" \
        -v c="$(echo "$after" | tr ' ' '\n' | sed -n 's/^clk_tck=//p')" -v n="$got" \
        'BEGIN { if (n > 0 && c > 0) printf "%.3f", (b - a) * 1000 / c / n; else print "nan" }')
    ROWS+=("$name|$accepted|$got|$secs|$rate|$cpu_ms")
}

DATA=$WORKDIR/data
# A kept --workdir from an earlier run: start from empty sinks and an empty queue.
rm -rf "$DATA"
mkdir -p "$DATA/work"
echo "$USER_ADDR {PLAIN}$PASSWORD" > "$DATA/users"

# ---- tidegate: submission with AUTH, the queue (fsync), [relay] smarthost = the sink ----
SINK_PORT=$((PORT_BASE + 1))
SUB_PORT=$((PORT_BASE + 2))
start_sink "$SINK_PORT" "$DATA/sink-tidegate"
cat > "$DATA/tidegate.toml" <<EOF
hostname = "bench.test"
[storage]
mailbox_path = "$DATA/mail"
workarea = "$DATA/work"
fsync = $FSYNC
[users]
file = "$DATA/users"
[smtp]
submission = ["127.0.0.1:$SUB_PORT"]
[tls]
plaintext_auth = "always"
[relay]
smarthost = "127.0.0.1:$SINK_PORT"
tls = "none"
runners = $RUNNERS
reuse_messages = $REUSE
[server]
shutdown_grace_secs = 1
# The benchmark runs as root and has no account to drop to.
allow_root = true
EOF
"$TIDEGATE" serve --config "$DATA/tidegate.toml" 2> "$WORKDIR/tidegate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
wait_port "$SUB_PORT"
log "tidegate: submission on $SUB_PORT, relaying to smtp-sink on $SINK_PORT, $RUNNERS runners, $REUSE messages per connection"
run tidegate "$SUB_PORT" "$DATA/sink-tidegate" "$TG_PID" "$USER_ADDR:$PASSWORD"
kill -TERM "$TG_PID" 2>/dev/null || true

# ---- Postfix: smtpd, its queue, smtp(8) to the same kind of sink ----
if [ "$SKIP_POSTFIX" = 0 ] && command -v postfix > /dev/null; then
    PF_SINK=$((PORT_BASE + 3))
    PF_PORT=$((PORT_BASE + 4))
    start_sink "$PF_SINK" "$DATA/sink-postfix"
    PF=$DATA/postfix
    mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
    chown postfix "$PF/data"
    cp /etc/postfix/master.cf "$PF/etc/master.cf" 2>/dev/null ||
        cp /usr/share/postfix/master.cf.dist "$PF/etc/master.cf"
    cat > "$PF/etc/main.cf" <<EOF
# Generated by bench/outbound.sh: relays everything to the sink.
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
myhostname = postfix.bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:$PF_SINK
smtp_tls_security_level = none
alias_maps =
alias_database =
EOF
    postconf -c "$PF/etc" -F '*/*/chroot = n'
    postconf -c "$PF/etc" -MX smtp/inet
    postconf -c "$PF/etc" -M "127.0.0.1:$PF_PORT/inet=127.0.0.1:$PF_PORT inet n - n - - smtpd"
    PF_CONF=$PF/etc
    postfix -c "$PF/etc" start > "$PF/start.log" 2>&1 || { cat "$PF/start.log" >&2; exit 1; }
    PF_MASTER=$(tr -dc 0-9 < "$PF/spool/pid/master.pid")
    wait_port "$PF_PORT"
    sleep 1
    log "postfix $(postconf -d -h mail_version): smtpd on $PF_PORT relaying to smtp-sink on $PF_SINK"
    run postfix "$PF_PORT" "$DATA/sink-postfix" "$PF_MASTER"
fi

echo
echo "submission -> queue -> smtp-sink: $MESSAGE_SIZE-byte messages, $CONCURRENCY clients for $DURATION s,"
echo "  50 recipients; tidegate fsync = $FSYNC, $RUNNERS runners, reuse_messages = $REUSE; $(nproc) CPUs shared by everything"
printf '%-10s %9s %9s %8s %12s %12s\n' server accepted delivered secs delivered/s "CPU ms/msg"
for r in "${ROWS[@]}"; do
    IFS='|' read -r name acc got secs rate cpu <<< "$r"
    printf '%-10s %9s %9s %8s %12s %12s\n' "$name" "$acc" "$got" "$secs" "$rate" "$cpu"
    [ "$got" -ge "$acc" ] || { echo "outbound.sh: $name lost messages" >&2; exit 1; }
done
