#!/usr/bin/env bash
# Cluster load test: an authd holding many users, 1, 2 and 4 back-ends behind 1 and 2
# proxy front-ends, each a separate `tidegate serve` process on its own 127.0.x.y
# address; a mixed POP3/IMAP/submission load through the front-ends. Reports
# sessions/s per configuration and CPU-seconds per session per tier.
# See bench/README.md ("Cluster") and docs/performance.md. Usage: bash bench/cluster.sh
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/cluster.sh [options]
  --users N              users in the authd's users file (default 1000000)
  --active-users K       users the sessions spread over; each gets one message (default 2000)
  --configs "FxB ..."    front-ends x back-ends to measure (default "1x1 1x2 1x4 2x1 2x2 2x4")
  --duration SECS        seconds of load per configuration (default 10)
  --concurrency N        concurrent clients (default 16)
  --mix P,I,S            POP3, IMAP and submission sessions per cycle (default 1,1,1)
  --variant smol|mio     which runtime build to run (default smol)
  --skip-build           reuse the binaries in WORKDIR/bin from an earlier run
  --port-base PORT       POP3 on PORT, IMAP PORT+1, submission PORT+2, authd PORT+3,
                         metrics PORT+4, on every address (default 28110)
  --workdir DIR          keep data, configs, logs and binaries in DIR (default: a temp
                         dir, removed at the end)
EOF
}

USERS=1000000
ACTIVE=2000
CONFIGS="1x1 1x2 1x4 2x1 2x2 2x4"
DURATION=10
CONCURRENCY=16
MIX=1,1,1
VARIANT=smol
SKIP_BUILD=0
PORT_BASE=28110
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test
SECRET=cluster-bench-shared-secret

while [ $# -gt 0 ]; do
    case "$1" in
        --users) USERS=$2; shift 2 ;;
        --active-users) ACTIVE=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --mix) MIX=$2; shift 2 ;;
        --variant) VARIANT=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "cluster.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$VARIANT" in smol|mio) ;; *) echo "cluster.sh: --variant smol or mio" >&2; exit 2 ;; esac
if [ "$ACTIVE" -gt "$USERS" ]; then
    echo "cluster.sh: --active-users must not exceed --users" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CLK_TCK=$(getconf CLK_TCK)

KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/tidegate-cluster.XXXXXX")
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)

POP3=$PORT_BASE
IMAP=$((PORT_BASE + 1))
SUBMISSION=$((PORT_BASE + 2))
AUTHD_PORT=$((PORT_BASE + 3))
METRICS=$((PORT_BASE + 4))
AUTHD_IP=127.0.3.1
# Back-end addresses: users are spread over four tohost values; with fewer back-ends,
# one back-end process listens on several of these addresses.
BACK_IPS=(127.0.2.1 127.0.2.2 127.0.2.3 127.0.2.4)
FRONT_IPS=(127.0.1.1 127.0.1.2)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # PIDS, stop_all, log; cleanup below replaces its own
cleanup() {
    stop_all
    [ -n "${AUTHD_PID:-}" ] && kill -TERM "$AUTHD_PID" 2>/dev/null || true
    if [ "$KEEP" = 0 ]; then
        rm -rf "$WORKDIR"
    else
        echo "work files kept in $WORKDIR"
    fi
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
BIN=$WORKDIR/bin
mkdir -p "$BIN"
if [ "$SKIP_BUILD" = 0 ]; then
    cd "$ROOT"
    log "building tidegate ($VARIANT, release)"
    if [ "$VARIANT" = mio ]; then
        cargo build --release -p tidegate --no-default-features --features mio
    else
        cargo build --release -p tidegate
    fi
    cp "$TARGET_DIR/release/tidegate" "$BIN/tidegate"
    log "building tidegate-bench (release)"
    cargo build --release -p tidegate-bench
    cp "$TARGET_DIR/release/tidegate-bench" "$BIN/tidegate-bench"
fi
TIDEGATE=$BIN/tidegate
BENCH=$BIN/tidegate-bench
[ -x "$TIDEGATE" ] && [ -x "$BENCH" ] || { echo "cluster.sh: binaries missing in $BIN" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Users and mail
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
MAIL=$DATA/mail
mkdir -p "$DATA"
# {PLAIN} passwords: a login costs a lookup, not a hash check, on every tier. With a
# real scheme add its cost per check (see docs/capacity.md); one precomputed hash
# reused for every user would measure the same thing.
log "writing $USERS users"
t0=$(date +%s.%N)
awk -v n="$USERS" -v pw="$PASSWORD" -v d="$DOMAIN" 'BEGIN {
    for (i = 1; i <= n; i++)
        printf "user%d@%s {PLAIN}%s tohost=127.0.2.%d\n", i, d, pw, (i - 1) % 4 + 1
}' > "$DATA/users"
t1=$(date +%s.%N)
log "users file: $(du -h "$DATA/users" | cut -f1) in $(echo "$t1 - $t0" | bc) s"

log "one message for each of the $ACTIVE active users"
"$BENCH" message --message-size 4096 > "$DATA/message.eml"
for i in $(seq 1 "$ACTIVE"); do
    dir=$MAIL/$DOMAIN/user$i
    mkdir -p "$dir/new" "$dir/cur" "$dir/tmp"
    cp "$DATA/message.eml" "$dir/new/1700000000.M${i}P1.bench"
done
printf '%s\n' "$SECRET" > "$DATA/secret"
chmod 600 "$DATA/secret"

# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------
ticks() { # utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)
    local stat
    stat=$(cat "/proc/$1/stat")
    # The command name (field 2) is in parentheses; split after it.
    echo "${stat##*) }" | awk '{ print $12 + $13 }'
}
sum_ticks() {
    local total=0 pid
    for pid in "$@"; do total=$((total + $(ticks "$pid"))); done
    echo "$total"
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

start_node() { # name config waitaddr -> pid in STARTED
    local name=$1 config=$2 wait=$3
    TIDEGATE_LOG=info "$TIDEGATE" serve --config "$config" 2> "$WORKDIR/$name.log" &
    STARTED=$!
    if ! "$BENCH" wait --target "$wait" --timeout 60 > /dev/null; then
        echo "cluster.sh: $name did not start; its log:" >&2
        tail -20 "$WORKDIR/$name.log" >&2
        exit 1
    fi
}

cat > "$WORKDIR/authd.toml" <<EOF
[storage]
workarea = "$DATA/authd-work"
[users]
file = "$DATA/users"
[authd]
listen = "$AUTHD_IP:$AUTHD_PORT"
secret_file = "$DATA/secret"
[server]
allow_root = true
EOF
log "starting the authd ($USERS users)"
t0=$(date +%s.%N)
TIDEGATE_LOG=info "$TIDEGATE" serve --config "$WORKDIR/authd.toml" 2> "$WORKDIR/authd.log" &
AUTHD_PID=$!
# The port is bound before the users file is loaded; the "listening" log line comes
# after the load, when the authd starts answering.
for _ in $(seq 1200); do
    if grep -q "listening: authd://" "$WORKDIR/authd.log"; then break; fi
    kill -0 "$AUTHD_PID" 2>/dev/null || { cat "$WORKDIR/authd.log" >&2; exit 1; }
    sleep 0.1
done
t1=$(date +%s.%N)
log "authd answering after $(echo "$t1 - $t0" | bc) s (users file loaded), $(( $(rss_kb "$AUTHD_PID") / 1024 )) MiB resident, $(ticks "$AUTHD_PID") ticks of CPU"
echo "RESULT_AUTHD users=$USERS load_secs=$(echo "$t1 - $t0" | bc) rss_mib=$(( $(rss_kb "$AUTHD_PID") / 1024 ))"

users_section() {
    cat <<EOF
[users]
backend = "authd"
authd = "$AUTHD_IP:$AUTHD_PORT"
authd_secret_file = "$DATA/secret"
EOF
}

backend_config() { # index count -> config path
    local j=$1 count=$2 k addrs_pop3="" addrs_imap="" addrs_sub="" sep=""
    for k in 0 1 2 3; do
        if [ $((k % count)) = "$j" ]; then
            addrs_pop3="$addrs_pop3$sep\"${BACK_IPS[$k]}:$POP3\""
            addrs_imap="$addrs_imap$sep\"${BACK_IPS[$k]}:$IMAP\""
            addrs_sub="$addrs_sub$sep\"${BACK_IPS[$k]}:$SUBMISSION\""
            sep=", "
        fi
    done
    local path=$WORKDIR/back$j.toml
    cat > "$path" <<EOF
hostname = "back$j.bench.test"
[storage]
mailbox_path = "$MAIL"
workarea = "$DATA/back$j-work"
fsync = false
$(users_section)
[pop3]
listen = [$addrs_pop3]
[imap]
listen = [$addrs_imap]
[smtp]
submission = [$addrs_sub]
[trust]
networks = ["127.0.1.0/24"]
proxy_protocol = true
[metrics]
listen = "${BACK_IPS[$j]}:$METRICS"
[server]
allow_root = true
EOF
    echo "$path"
}

frontend_config() { # index -> config path
    local f=$1 ip=${FRONT_IPS[$1]}
    local path=$WORKDIR/front$f.toml
    cat > "$path" <<EOF
hostname = "front$f.bench.test"
[storage]
mailbox_path = "$DATA/front$f-mail"
workarea = "$DATA/front$f-work"
$(users_section)
[proxy]
enabled = true
backend_ports = { pop3 = $POP3, imap = $IMAP, submission = $SUBMISSION }
client_address = "proxy-v2"
source_addresses = ["$ip"]
[pop3]
listen = ["$ip:$POP3"]
[imap]
listen = ["$ip:$IMAP"]
[smtp]
submission = ["$ip:$SUBMISSION"]
[metrics]
listen = "$ip:$METRICS"
[server]
allow_root = true
EOF
    echo "$path"
}

# ---------------------------------------------------------------------------------------
# Measure
# ---------------------------------------------------------------------------------------
RESULTS=()
for cfg in $CONFIGS; do
    nf=${cfg%x*}
    nb=${cfg#*x}
    case "$nf:$nb" in [12]:[124]) ;; *) echo "cluster.sh: config $cfg: 1-2 fronts x 1, 2 or 4 backs" >&2; exit 2 ;; esac
    log "configuration $cfg: $nf front-end(s), $nb back-end(s)"
    BACK_PIDS=()
    FRONT_PIDS=()
    for j in $(seq 0 $((nb - 1))); do
        start_node "back$j-$cfg" "$(backend_config "$j" "$nb")" "${BACK_IPS[$j]}:$POP3"
        BACK_PIDS+=("$STARTED")
        PIDS+=("$STARTED")
    done
    fronts=""
    for f in $(seq 0 $((nf - 1))); do
        start_node "front$f-$cfg" "$(frontend_config "$f")" "${FRONT_IPS[$f]}:$POP3"
        FRONT_PIDS+=("$STARTED")
        PIDS+=("$STARTED")
        fronts="$fronts${fronts:+,}${FRONT_IPS[$f]}"
    done
    f0=$(sum_ticks "${FRONT_PIDS[@]}")
    b0=$(sum_ticks "${BACK_PIDS[@]}")
    a0=$(ticks "$AUTHD_PID")
    out=$("$BENCH" mixed --fronts "$fronts" --pop3-port "$POP3" --imap-port "$IMAP" \
        --submission-port "$SUBMISSION" --users-pattern "user{}@$DOMAIN" \
        --active-users "$ACTIVE" --password "$PASSWORD" --mix "$MIX" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" 2> "$WORKDIR/mixed-$cfg.err") || {
        echo "cluster.sh: the load generator failed for $cfg:" >&2
        cat "$WORKDIR/mixed-$cfg.err" >&2
        exit 1
    }
    f1=$(sum_ticks "${FRONT_PIDS[@]}")
    b1=$(sum_ticks "${BACK_PIDS[@]}")
    a1=$(ticks "$AUTHD_PID")
    line=$(echo "$out" | grep '^RESULT_MIXED')
    sessions=$(echo "$line" | sed 's/.* sessions=\([0-9]*\).*/\1/')
    rate=$(echo "$line" | sed 's/.* rate=\([0-9.]*\).*/\1/')
    errors=$(echo "$line" | sed 's/.* errors=\([0-9]*\).*/\1/')
    client=$(echo "$line" | sed 's/.* client_cpu_secs=\([0-9.]*\).*/\1/')
    per() { echo "scale=4; ($2 - $1) * 1000 / $CLK_TCK / $sessions" | bc; }
    front_ms=$(per "$f0" "$f1")
    back_ms=$(per "$b0" "$b1")
    authd_ms=$(per "$a0" "$a1")
    client_ms=$(echo "scale=4; $client * 1000 / $sessions" | bc)
    handovers=0
    for f in $(seq 0 $((nf - 1))); do
        n=$(curl -s "http://${FRONT_IPS[$f]}:$METRICS/metrics" |
            awk '/^tidegate_proxy_handovers_total/ { s += $2 } END { print s + 0 }')
        handovers=$((handovers + n))
    done
    row="RESULT_CLUSTER config=$cfg fronts=$nf backs=$nb sessions=$sessions rate=$rate errors=$errors \
front_ms=$front_ms back_ms=$back_ms authd_ms=$authd_ms client_ms=$client_ms handovers=$handovers"
    echo "$line"
    echo "$row"
    RESULTS+=("$row")
    stop_all
done

echo
echo "cluster: $USERS users in the authd, $ACTIVE active, mix POP3,IMAP,submission = $MIX, \
$CONCURRENCY clients, $DURATION s per configuration, $(nproc) cores, $VARIANT build"
printf '%-7s %10s %9s %7s %14s %14s %14s %14s\n' config sessions/s sessions errors \
    "front ms/sess" "back ms/sess" "authd ms/sess" "client ms/sess"
for row in "${RESULTS[@]}"; do
    get() { echo "$row" | sed "s/.* $1=\([^ ]*\).*/\1/"; }
    printf '%-7s %10s %9s %7s %14s %14s %14s %14s\n' "$(get config)" "$(get rate)" \
        "$(get sessions)" "$(get errors)" "$(get front_ms)" "$(get back_ms)" \
        "$(get authd_ms)" "$(get client_ms)"
done
echo "(CPU ms per session = user+system time of the tier's processes during the load"
echo " / completed sessions; handovers counted by the front-ends' metrics endpoints)"
