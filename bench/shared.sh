#!/usr/bin/env bash
# The cost of sharing one mailbox_path: SMTP deliveries/s and IMAP sessions/s of one
# `tidegate serve` process alone, against two processes on one mailbox_path (each with
# its own workarea, as two back-ends on one NFS export) with the same total number of
# clients split between them. Same machine, same run, same users and messages.
# See bench/README.md ("Shared storage") and docs/performance.md.
# Usage: bash bench/shared.sh [options]
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/shared.sh [options]
  --duration SECS        seconds of load per measurement (default 10)
  --concurrency N        clients in all; with two processes each gets half (default 8)
  --users K              IMAP users and, separately, SMTP recipients (default 20): every
                         process reads and writes the same K maildirs
  --messages M           messages in every IMAP user's INBOX (default 100)
  --message-size BYTES   size of each delivered message (default 4096)
  --per-connection M     SMTP messages per connection (default 10)
  --sources N            loopback source addresses 127.0.0.1..N (default 8)
  --variant smol|mio     which runtime build to run (default smol)
  --skip-build           reuse the binaries in WORKDIR/bin from an earlier run
  --port-base PORT       first of the local ports used (default 27300)
  --workdir DIR          keep data, configs, logs and binaries in DIR (default: a temp
                         dir, removed at the end)
EOF
}

DURATION=10
CONCURRENCY=8
USERS=20
MESSAGES=100
MESSAGE_SIZE=4096
PER_CONNECTION=10
SOURCES=8
VARIANT=smol
SKIP_BUILD=0
PORT_BASE=27300
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --message-size) MESSAGE_SIZE=$2; shift 2 ;;
        --per-connection) PER_CONNECTION=$2; shift 2 ;;
        --sources) SOURCES=$2; shift 2 ;;
        --variant) VARIANT=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "shared.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$VARIANT" in smol|mio) ;; *) echo "shared.sh: --variant smol or mio" >&2; exit 2 ;; esac
if [ "$CONCURRENCY" -lt 2 ] || [ $((CONCURRENCY % 2)) != 0 ]; then
    echo "shared.sh: --concurrency must be even (it is split between two processes)" >&2
    exit 2
fi
HALF=$((CONCURRENCY / 2))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NCPU=$(nproc)
KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/tidegate-shared.XXXXXX")
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
BIN=$WORKDIR/bin
BENCH=$BIN/tidegate-bench
TIDEGATE=$BIN/tidegate-$VARIANT
ROWS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

[ "$SKIP_BUILD" = 1 ] || build_variants "$VARIANT" "$BIN"
[ -x "$TIDEGATE" ] && [ -x "$BENCH" ] || { echo "shared.sh: binaries missing in $BIN" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Data: imap users with --messages messages each, smtp recipients with empty maildirs.
# Each layout gets its own copy, so both start from the same files.
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
rm -rf "$DATA"
mkdir -p "$DATA"
: > "$DATA/users"
"$BENCH" message --message-size 4096 > "$DATA/message.eml"
MSG_SIZE=$(stat -c %s "$DATA/message.eml")
log "writing $MESSAGES messages of $MSG_SIZE bytes for each of $USERS IMAP users"
for i in $(seq "$USERS"); do
    echo "imap$i@$DOMAIN {PLAIN}$PASSWORD" >> "$DATA/users"
    echo "rcpt$i@$DOMAIN {PLAIN}$PASSWORD" >> "$DATA/users"
    d="$DATA/mail/$DOMAIN/imap$i"
    mkdir -p "$d/tmp" "$d/new" "$d/cur"
    for m in $(seq "$MESSAGES"); do
        cp "$DATA/message.eml" "$d/cur/$((1767225600 + m)).M${m}P1Q$i.benchhost,S=$MSG_SIZE:2,S"
    done
done

# node NAME MAILROOT SMTP_PORT IMAP_PORT: starts one process; its pid in SERVER_PID.
node() {
    local conf=$DATA/$1.toml
    cat > "$conf" <<CONF
hostname = "$1.bench.test"
[storage]
mailbox_path = "$2"
workarea = "$DATA/work-$1"
fsync = true
[users]
backend = "file"
file = "$DATA/users"
[smtp]
listen = ["127.0.0.1:$3"]
[imap]
listen = ["127.0.0.1:$4"]
[server]
allow_root = true
max_connections = 10000
shutdown_grace_secs = 1
CONF
    "$TIDEGATE" serve --config "$conf" 2> "$WORKDIR/$1.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "$3" "$SERVER_PID" "$1" "$WORKDIR/$1.log"
}

imap_load() { # PORT CLIENTS SECS
    echo imap --target "127.0.0.1:$1" --concurrency "$2" --duration "$3" \
        --users-pattern "imap{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
        --sources "$SOURCES" --messages "$MESSAGES"
}

smtp_load() { # PORT CLIENTS SECS
    echo smtp --target "127.0.0.1:$1" --concurrency "$2" --duration "$3" \
        --message-size "$MESSAGE_SIZE" --rcpt-pattern "rcpt{}@$DOMAIN" --user-count "$USERS" \
        --per-connection "$PER_CONNECTION" --sources "$SOURCES"
}

delivered_files() { # MAILROOT: messages in the rcpt maildirs
    find "$1/$DOMAIN" -path '*/rcpt*' -type f \( -path '*/new/*' -o -path '*/cur/*' \) 2>/dev/null | wc -l
}

ticks_of() { # PID...: utime+stime of the processes
    local total=0 pid t
    for pid in "$@"; do
        t=$("$BENCH" procstat --pid "$pid" | kv ticks)
        total=$((total + t))
    done
    echo "$total"
}

# run LAYOUT KIND "PORT..." CLIENTS_EACH MAILROOT PID...: one load generator per port, all
# at once for --duration; appends "layout|kind|clients|rate|cpu|p50|p99|ops|errors|check".
run() {
    local layout=$1 kind=$2 ports=$3 each=$4 root=$5
    shift 5
    local pids=("$@") gens=() port n=0 files0 files1 t0 t1 clk out
    files0=$(delivered_files "$root")
    t0=$(ticks_of "${pids[@]}")
    for port in $ports; do
        n=$((n + 1))
        out=$WORKDIR/$layout-$kind-$n.out
        # shellcheck disable=SC2046
        "$BENCH" $("${kind}_load" "$port" "$each" "$DURATION") > "$out" 2> "$out.err" &
        gens+=($!)
    done
    for g in "${gens[@]}"; do
        wait "$g" || log "$layout $kind: a load generator failed"
    done
    t1=$(ticks_of "${pids[@]}")
    clk=$(getconf CLK_TCK)
    files1=$(delivered_files "$root")
    local rate=0 ops=0 errors=0 p50="" p99="" r k i failed=0
    for i in $(seq "$n"); do
        out=$WORKDIR/$layout-$kind-$i.out
        cat "$out" >&2
        [ -s "$out.err" ] && sed 's/^/   /' "$out.err" >&2
        r=$(grep '^RESULT' "$out" || echo "RESULT rate=0 sessions=0 errors=0 missing=1")
        [ -z "$(echo "$r" | kv missing)" ] || failed=1
        rate=$(awk -v a="$rate" -v b="$(echo "$r" | kv rate)" 'BEGIN { printf "%.1f", a + b }')
        # imap reports sessions=, smtp messages=
        k=$(echo "$r" | kv sessions)
        [ -n "$k" ] || k=$(echo "$r" | kv messages)
        ops=$((ops + ${k:-0}))
        errors=$((errors + $(echo "$r" | kv errors)))
        p50="$p50${p50:+/}$(echo "$r" | kv p50_ms)"
        p99="$p99${p99:+/}$(echo "$r" | kv p99_ms)"
    done
    local check=-
    [ "$failed" = 0 ] || check=no-result
    if [ "$kind" = smtp ] && [ "$failed" = 0 ]; then
        local delivered=$((files1 - files0))
        if [ "$delivered" -lt "$ops" ]; then check="LOST:$((ops - delivered))"; else check=ok; fi
    fi
    local cpu
    cpu=$(awk -v a="$t0" -v b="$t1" -v c="$clk" -v n="$ops" \
        'BEGIN { if (n > 0) printf "%.3f", (b - a) * 1000 / c / n; else print "nan" }')
    ROWS+=("$layout|$kind|$((each * n))|$rate|$cpu|$p50|$p99|$ops|$errors|$check")
    echo "RESULT_SHARED layout=$layout kind=$kind processes=$n clients=$((each * n)) rate=$rate" \
         "cpu_ms_per_op=$cpu ops=$ops errors=$errors p50_ms=$p50 p99_ms=$p99 check=$check"
}

# ---------------------------------------------------------------------------------------
# One process alone, then two on one mailbox_path
# ---------------------------------------------------------------------------------------
S1=$((PORT_BASE + 1)); I1=$((PORT_BASE + 2)); S2=$((PORT_BASE + 3)); I2=$((PORT_BASE + 4))

cp -a "$DATA/mail" "$DATA/mail-one"
node one "$DATA/mail-one" "$S1" "$I1"
ONE=$SERVER_PID
log "one process: IMAP warm-up (the uidlists are written), then $CONCURRENCY clients for $DURATION s"
# shellcheck disable=SC2046
"$BENCH" $(imap_load "$I1" "$CONCURRENCY" 2) > /dev/null 2>&1 || true
run one imap "$I1" "$CONCURRENCY" "$DATA/mail-one" "$ONE"
log "one process: SMTP, $CONCURRENCY clients for $DURATION s"
run one smtp "$S1" "$CONCURRENCY" "$DATA/mail-one" "$ONE"
stop_all

cp -a "$DATA/mail" "$DATA/mail-two"
node two-a "$DATA/mail-two" "$S1" "$I1"
A=$SERVER_PID
node two-b "$DATA/mail-two" "$S2" "$I2"
B=$SERVER_PID
log "two processes: IMAP warm-up on both, then $HALF clients on each for $DURATION s"
# shellcheck disable=SC2046
"$BENCH" $(imap_load "$I1" "$HALF" 2) > /dev/null 2>&1 &
w=$!
# shellcheck disable=SC2046
"$BENCH" $(imap_load "$I2" "$HALF" 2) > /dev/null 2>&1 || true
wait "$w" || true
run two imap "$I1 $I2" "$HALF" "$DATA/mail-two" "$A" "$B"
log "two processes: SMTP, $HALF clients on each for $DURATION s"
run two smtp "$S1 $S2" "$HALF" "$DATA/mail-two" "$A" "$B"
stop_all

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
echo
echo "shared mailbox_path, $VARIANT build: $CONCURRENCY clients in all, $DURATION s per run;"
echo "  IMAP: LOGIN, SELECT INBOX of $MESSAGES, FETCH 1:* (FLAGS RFC822.SIZE), FETCH one body, LOGOUT;"
echo "  SMTP: $MESSAGE_SIZE-byte messages, $PER_CONNECTION per connection, fsync on; $USERS users each;"
echo "  $NCPU CPUs shared by the servers and the load generators; $(uname -r)"
printf '%-7s %-5s %8s %10s %10s %15s %15s %8s %7s  %s\n' layout kind clients "ops/s" "CPU ms/op" \
    "p50 ms" "p99 ms" ops errors check
for r in "${ROWS[@]}"; do
    IFS='|' read -r layout kind clients rate cpu p50 p99 ops errors check <<< "$r"
    printf '%-7s %-5s %8s %10s %10s %15s %15s %8s %7s  %s\n' "$layout" "$kind" "$clients" "$rate" \
        "$cpu" "$p50" "$p99" "$ops" "$errors" "$check"
done
echo
echo "two / one (ops/s: the cost of sharing is 1 - ratio):"
for kind in imap smtp; do
    one="" two=""
    for r in "${ROWS[@]}"; do
        IFS='|' read -r layout k _ rate _ <<< "$r"
        [ "$k" = "$kind" ] || continue
        [ "$layout" = one ] && one=$rate
        [ "$layout" = two ] && two=$rate
    done
    awk -v k="$kind" -v a="$one" -v b="$two" 'BEGIN {
        printf "  %-5s x%.2f\n", k, (a > 0 ? b / a : 0) }'
done
for r in "${ROWS[@]}"; do
    case "$r" in *LOST:*) echo "shared.sh: acknowledged messages missing: $r" >&2; exit 1 ;; esac
done
