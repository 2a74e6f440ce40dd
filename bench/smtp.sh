#!/usr/bin/env bash
# SMTP benchmark: tidegate (smol and mio builds) with fsync on, against Postfix delivering
# to maildir and smtp-sink (stores nothing: the upper bound) on the same machine, in the
# same run, with the same users, messages, clients and concurrency.
# See bench/README.md. Usage: bash bench/smtp.sh [--install-postfix] [options]
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/smtp.sh [options]
  --duration SECS         seconds of load per server and concurrency (default 10)
  --concurrency "8 64"    concurrent SMTP clients; each value is one measurement
                          (default "8 64")
  --users K               recipients the messages spread over (default 50)
  --message-size BYTES    size of each message as sent, before dot-stuffing (default 4096)
  --per-connection M      messages per connection before QUIT and reconnect (default 10)
  --sources N             loopback source addresses 127.0.0.1..N (default 8)
  --pipelining            MAIL+RCPT+DATA in one write (all three servers offer PIPELINING)
  --lmtp                  measure tidegate's [lmtp] listener (and smtp-sink -L) instead of
                          SMTP; Postfix has no LMTP server and is left out
  --variants "smol mio"   which tidegate builds to measure (default both; "" or none: no
                          tidegate)
  --skip-postfix          do not measure Postfix
  --skip-sink             do not measure smtp-sink
  --install-postfix       apt-get install postfix (debconf: "No configuration"; its system
                          service is not started) when postfix is missing
  --drain-timeout SECS    longest wait for Postfix's queue to empty after a run (default 120)
  --skip-build            use the binaries from an earlier run (WORKDIR/bin, see --workdir)
  --port-base PORT        first of the local ports used (default 27025)
  --rounds N              measure every server N times, in turn (server A, B, ..., A,
                          B, ...), and report each round's ratios and their median
                          (default 1)
  --settle SECS           after removing an earlier run's data in WORKDIR, wait this
                          long before measuring (default 60; see the comment at DATA)
  --workdir DIR           keep data, configs, logs and binaries in DIR (default: a temp dir,
                          removed at the end)
  --skip-space-check      start even when WORKDIR's filesystem may not hold the mail the
                          runs store (see the check below)
EOF
}

DURATION=10
CONCURRENCY="8 64"
USERS=50
MESSAGE_SIZE=4096
PER_CONNECTION=10
SOURCES=8
PIPELINING=0
LMTP=0
VARIANTS="smol mio"
SKIP_POSTFIX=0
SKIP_SINK=0
INSTALL_POSTFIX=0
DRAIN_TIMEOUT=120
SKIP_BUILD=0
PORT_BASE=27025
SETTLE=60
ROUNDS=1
SPACE_CHECK=1
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test
MAX_MESSAGE_SIZE=$((50 * 1024 * 1024))

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=${2//,/ }; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --message-size) MESSAGE_SIZE=$2; shift 2 ;;
        --per-connection) PER_CONNECTION=$2; shift 2 ;;
        --sources) SOURCES=$2; shift 2 ;;
        --pipelining) PIPELINING=1; shift ;;
        --lmtp) LMTP=1; shift ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --skip-postfix) SKIP_POSTFIX=1; shift ;;
        --skip-sink) SKIP_SINK=1; shift ;;
        --install-postfix) INSTALL_POSTFIX=1; shift ;;
        --drain-timeout) DRAIN_TIMEOUT=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --skip-space-check) SPACE_CHECK=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "smtp.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ "$VARIANTS" = none ] && VARIANTS=""
for v in $VARIANTS; do
    case "$v" in smol|mio) ;; *) echo "smtp.sh: unknown variant $v" >&2; exit 2 ;; esac
done
for c in $CONCURRENCY; do
    [ "$c" -gt 0 ] 2>/dev/null || { echo "smtp.sh: bad --concurrency $c" >&2; exit 2; }
done
[ "$ROUNDS" -gt 0 ] 2>/dev/null || { echo "smtp.sh: bad --rounds $ROUNDS" >&2; exit 2; }
PROTO=smtp
if [ "$LMTP" = 1 ]; then
    PROTO=lmtp
    SKIP_POSTFIX=1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NCPU=$(nproc)

KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d /tmp/tidegate-smtp-bench.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
# Postfix's virtual(8) (user nobody) must reach the maildirs under it.
chmod 755 "$WORKDIR"

log() { echo "== $*" >&2; }

# Every run's mail stays on disk until the script ends (the delivery counts and content
# checks read it, and removing it between runs would slow the next run's file creation,
# see --settle). A full filesystem mid-run turns into refused messages and a wrong
# report, so refuse to start when the runs may not fit: at most MAX_RATE stored
# messages per second per run (above what either build reached on 2 CPUs on a disk; on
# a tmpfs, where fsync costs nothing, the mio build did 12,000/s), each message file
# taking whole 4 KiB blocks (the message plus ~300 octets of trace fields). smtp-sink
# stores nothing.
MAX_RATE=8000
space_check() {
    local servers=0 runs blocks need_kb free_kb
    for _ in $VARIANTS; do servers=$((servers + 1)); done
    [ "$SKIP_POSTFIX" = 1 ] || servers=$((servers + 1))
    runs=$((ROUNDS * $(echo "$CONCURRENCY" | wc -w) * servers))
    blocks=$(((MESSAGE_SIZE + 300 + 4095) / 4096))
    # --duration may have a fraction.
    need_kb=$(awk -v r="$runs" -v d="$DURATION" -v m="$MAX_RATE" -v b="$blocks" \
        'BEGIN { printf "%d", r * d * m * b * 4 }')
    free_kb=$(df -Pk "$WORKDIR" 2>/dev/null | awk 'NR == 2 { print $4 }') || free_kb=""
    if ! [ "$free_kb" -ge 0 ] 2>/dev/null; then
        log "cannot read the free space of $WORKDIR; not checked"
        return
    fi
    if [ "$free_kb" -lt "$need_kb" ]; then
        echo "smtp.sh: $WORKDIR has $((free_kb / 1024)) MiB free; $runs runs of" \
            "$DURATION s may store up to $((need_kb / 1024)) MiB of mail (up to" \
            "$MAX_RATE messages/s each). Free some space, shorten the runs or use" \
            "--skip-space-check." >&2
        exit 1
    fi
}

# ---------------------------------------------------------------------------------------
# Cleanup: every server this script started, our Postfix instance, and the system
# Postfix state (a policy-rc.d we created, a system instance the install started).
# ---------------------------------------------------------------------------------------
PIDS=()
PF_CONF=""            # our Postfix instance's config directory, once started
PF_MASTER=""
POLICY_CREATED=0
SYS_PF_PID_FILE=/var/spool/postfix/pid/master.pid

system_postfix_running() {
    local pid
    [ -r "$SYS_PF_PID_FILE" ] || return 1
    pid=$(tr -dc 0-9 < "$SYS_PF_PID_FILE")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ]
}
SYS_PF_WAS_RUNNING=0
system_postfix_running && SYS_PF_WAS_RUNNING=1

descendants() { # PID: the pid and all its descendants
    local pids=("$1") i=0 c
    while [ "$i" -lt "${#pids[@]}" ]; do
        for c in $(cat "/proc/${pids[$i]}/task/"*/children 2>/dev/null); do
            pids+=("$c")
        done
        i=$((i + 1))
    done
    echo "${pids[@]}"
}

stop_postfix_instance() {
    [ -n "$PF_CONF" ] || return 0
    local tree
    tree=$( [ -n "$PF_MASTER" ] && descendants "$PF_MASTER" || true)
    postfix -c "$PF_CONF" stop > /dev/null 2>&1 || true
    if [ -n "$PF_MASTER" ]; then
        for _ in $(seq 100); do
            kill -0 "$PF_MASTER" 2>/dev/null || break
            sleep 0.1
        done
        # shellcheck disable=SC2086
        kill -KILL $tree 2>/dev/null || true
    fi
    PF_CONF=""
    PF_MASTER=""
}

cleanup() {
    local pid
    stop_postfix_instance
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$POLICY_CREATED" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [ "$SYS_PF_WAS_RUNNING" = 0 ] && system_postfix_running; then
        log "stopping the system Postfix instance (it was not running before this script)"
        postfix stop > /dev/null 2>&1 || service postfix stop > /dev/null 2>&1 || true
    fi
    if [ "$KEEP" = 0 ]; then
        rm -rf "$WORKDIR"
    else
        echo "work files kept in $WORKDIR" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------
# Postfix installation (before the build, so that a failure shows early)
# ---------------------------------------------------------------------------------------
if [ "$SKIP_POSTFIX" = 0 ] || [ "$SKIP_SINK" = 0 ]; then
    if ! command -v postfix > /dev/null && [ "$INSTALL_POSTFIX" = 1 ]; then
        log "installing postfix (debconf: No configuration; its service is not started)"
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            # invoke-rc.d asks this script before starting a service: 101 = do not.
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            POLICY_CREATED=1
        fi
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix > "$WORKDIR/apt.log" 2>&1 || {
            tail -20 "$WORKDIR/apt.log" >&2; exit 1; }
        if [ "$POLICY_CREATED" = 1 ]; then
            rm -f /usr/sbin/policy-rc.d
            POLICY_CREATED=0
        fi
        # Not started at boot either (this is a benchmark, not a mail system).
        systemctl disable --quiet postfix > /dev/null 2>&1 || \
            update-rc.d postfix disable > /dev/null 2>&1 || true
        if [ "$SYS_PF_WAS_RUNNING" = 0 ] && system_postfix_running; then
            log "the package started the system Postfix; stopping it"
            postfix stop > /dev/null 2>&1 || service postfix stop > /dev/null 2>&1 || true
        fi
    fi
fi

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
BIN=$WORKDIR/bin
mkdir -p "$BIN"
if [ "$SKIP_BUILD" = 0 ]; then
    cd "$ROOT"
    # mio first, so that target/release/tidegate is the default (smol) build afterwards.
    for v in mio smol; do
        case " $VARIANTS " in *" $v "*) ;; *) continue ;; esac
        case "$v" in
            smol) log "building tidegate (smol)"; cargo build --release -p tidegate ;;
            mio) log "building tidegate (mio)"
                 cargo build --release -p tidegate --no-default-features --features mio ;;
        esac
        cp "$TARGET_DIR/release/tidegate" "$BIN/tidegate-$v"
    done
    log "building tidegate-bench"
    cargo build --release -p tidegate-bench
    cp "$TARGET_DIR/release/tidegate-bench" "$BIN/tidegate-bench"
fi
BENCH=$BIN/tidegate-bench
if [ ! -x "$BENCH" ] && [ -x "$TARGET_DIR/release/tidegate-bench" ]; then
    cp "$TARGET_DIR/release/tidegate-bench" "$BENCH"
fi
[ -x "$BENCH" ] || { echo "smtp.sh: $BENCH missing" >&2; exit 1; }
for v in $VARIANTS; do
    [ -x "$BIN/tidegate-$v" ] || { echo "smtp.sh: $BIN/tidegate-$v missing" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------
# Data: users, the message
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
REMOVED=0
if [ -e "$DATA" ]; then
    rm -rf "$DATA"
    REMOVED=1
fi
if [ "$SPACE_CHECK" = 1 ]; then space_check; fi
# ext4 without a journal will not reuse an inode freed in the last 30-60 s: every
# file created meanwhile scans past the freed ones (recently_deleted() in the
# kernel), which made the first server measured after removing an earlier run's
# hundred thousand messages several times slower. Let that window pass.
if [ "$REMOVED" = 1 ] && [ "$SETTLE" -gt 0 ]; then
    log "removed the previous run's data; waiting ${SETTLE}s before measuring (--settle)"
    sync
    sleep "$SETTLE"
fi
mkdir -p "$DATA/work"
chmod 755 "$DATA"
: > "$DATA/users"
: > "$DATA/vmailbox"
for i in $(seq "$USERS"); do
    echo "user$i@$DOMAIN {PLAIN}$PASSWORD" >> "$DATA/users"
    echo "user$i@$DOMAIN $DOMAIN/user$i/" >> "$DATA/vmailbox"
done
# The message every client sends (before dot-stuffing), for the content check.
"$BENCH" message --message-size "$MESSAGE_SIZE" > "$DATA/message.eml"

# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------
kv() { # KEY < line: the value of KEY=value
    tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}

count_mail() { # DIR: messages in the maildirs under DIR (new/ and cur/)
    [ -d "$1" ] || { echo 0; return; }
    find "$1" -type f \( -path '*/new/*' -o -path '*/cur/*' \) | wc -l
}

# The body of one stored message (after the first empty line; line ends normalised, since
# Postfix stores LF) must be the body sent: it arrived whole and correctly un-stuffed.
check_content() { # DIR
    local f
    f=$(find "$1" -type f -path '*/new/*' -print -quit 2>/dev/null)
    [ -n "$f" ] || { echo "no-file"; return; }
    if cmp -s <(tr -d '\r' < "$f" | sed '1,/^$/d') <(tr -d '\r' < "$DATA/message.eml" | sed '1,/^$/d')
    then echo ok
    else echo "DIFFERS:$f"
    fi
}

now() { date +%s.%N; }

machine_busy() { # the whole machine's busy CPU time so far, in clock ticks (/proc/stat:
    # user, nice, system, irq and softirq; not idle, iowait or steal)
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}

ROWS=()

# measure NAME ROOTPID PORT CONC MAILDIR QUEUEDIR
#   MAILDIR: where delivered messages appear ("" = the server stores nothing)
#   QUEUEDIR: Postfix's queue directory ("" = delivery is synchronous)
measure() {
    local name=$1 pid=$2 port=$3 conc=$4 maildir=$5 queue=$6
    local out=$WORKDIR/$name-c$conc$ROUND_SUFFIX.out files0 files1 before after t_end t_drained
    local flags=()
    [ "$PIPELINING" = 1 ] && flags+=(--pipelining)
    [ "$LMTP" = 1 ] && flags+=(--lmtp)
    files0=$(count_mail "$maildir")
    local busy0 wall0 busy1 wall1 busy
    busy0=$(machine_busy)
    wall0=$(now)
    if ! before=$("$BENCH" procstat --pid "$pid" 2>/dev/null); then
        log "$name: the server is not running; $conc clients not measured"
        ROWS+=("$ROUND|$name|$conc|-|-|-|-|-|-|0|-|-|server-exited")
        return 0
    fi
    # Clock ticks per second, for both the server's CPU time and the machine's busy time.
    local clk
    clk=$(echo "$before" | kv clk_tck)
    "$BENCH" smtp --target "127.0.0.1:$port" --concurrency "$conc" --duration "$DURATION" \
        --message-size "$MESSAGE_SIZE" --rcpt-pattern "user{}@$DOMAIN" --user-count "$USERS" \
        --per-connection "$PER_CONNECTION" --sources "$SOURCES" "${flags[@]}" \
        > "$out" 2> "$out.err" || log "$name: the load generator failed: $(tail -3 "$out.err")"
    t_end=$(now)
    cat "$out" >&2
    [ -s "$out.err" ] && sed 's/^/   /' "$out.err" >&2
    local drain=0 pending=0
    if [ -n "$queue" ]; then
        # Postfix acknowledged messages it has queued; the clock runs until it has
        # delivered them all (incoming/ and active/ empty; deferred/ is a failure).
        local deadline
        deadline=$(awk -v t="$t_end" -v d="$DRAIN_TIMEOUT" 'BEGIN { printf "%.3f", t + d }')
        while :; do
            pending=$(find "$queue/incoming" "$queue/active" "$queue/maildrop" -type f 2>/dev/null | wc -l)
            [ "$pending" = 0 ] && break
            if awk -v a="$(now)" -v b="$deadline" 'BEGIN { exit !(a > b) }'; then
                log "$name: queue not empty after $DRAIN_TIMEOUT s ($pending messages)"
                break
            fi
            sleep 0.05
        done
        t_drained=$(now)
        drain=$(awk -v a="$t_end" -v b="$t_drained" 'BEGIN { printf "%.3f", b - a }')
        local deferred
        deferred=$(find "$queue/deferred" -type f 2>/dev/null | wc -l)
        [ "$deferred" != 0 ] && log "$name: $deferred messages deferred (see $PF_DIR/maillog)"
    fi
    busy1=$(machine_busy)
    wall1=$(now)
    # How many of the machine's CPUs were busy on average, from the start of the load
    # until the last delivery: server, load generator and the kernel's own threads.
    busy=$(awk -v a="$busy0" -v b="$busy1" -v c="$clk" -v s="$wall0" -v e="$wall1" \
        'BEGIN { if (e > s && c > 0) printf "%.2f", (b - a) / c / (e - s); else print "nan" }')
    if ! after=$("$BENCH" procstat --pid "$pid" 2>/dev/null); then
        log "$name: the server exited during the run (see $WORKDIR/*.log)"
        after=""
    fi
    files1=$(count_mail "$maildir")
    local result messages rate secs p50 p99 errors client_ms t0 t1 delivered drate cpu_ms check content
    result=$(grep '^RESULT' "$out" || echo "RESULT messages=0 rate=0 secs=0 p50_ms=0 p99_ms=0 errors=?")
    messages=$(echo "$result" | kv messages)
    rate=$(echo "$result" | kv rate)
    secs=$(echo "$result" | kv secs)
    p50=$(echo "$result" | kv p50_ms)
    p99=$(echo "$result" | kv p99_ms)
    errors=$(echo "$result" | kv errors)
    client_ms=$(awk -v c="$(echo "$result" | kv client_cpu_secs)" -v n="$messages" \
        'BEGIN { if (n > 0) printf "%.3f", c * 1000 / n; else print "nan" }')
    t0=$(echo "$before" | kv ticks)
    t1=$(echo "$after" | kv ticks)
    if [ -n "$maildir" ]; then
        delivered=$((files1 - files0))
        # Delivered per second: from the first message to the last delivery.
        drate=$(awk -v n="$delivered" -v s="$secs" -v d="$drain" \
            'BEGIN { if (s + d > 0) printf "%.1f", n / (s + d); else print 0 }')
        if [ "$delivered" = "$messages" ]; then
            check=ok
        elif [ "$delivered" -lt "$messages" ]; then
            check="LOST:$((messages - delivered))"
        else
            # More files than 2xx replies: a message stored whose reply the client did
            # not get (an error after the data, e.g. a timeout). Not a loss.
            check="extra:$((delivered - messages))"
        fi
        content=$(check_content "$maildir")
        [ "$content" = ok ] || check="$check,content:$content"
    else
        delivered=-
        drate=-
        check=-
    fi
    # CPU per message: per delivered message where the server stores them.
    local per=$messages
    [ "$delivered" != - ] && per=$delivered
    if [ -z "$t1" ]; then
        t1=$t0
        clk=0
        check="$check,server-exited"
    fi
    cpu_ms=$(awk -v a="$t0" -v b="$t1" -v c="$clk" -v n="$per" \
        'BEGIN { if (n > 0 && c > 0) printf "%.3f", (b - a) * 1000 / c / n; else print "nan" }')
    ROWS+=("$ROUND|$name|$conc|$rate|$drate|$cpu_ms|$client_ms|$p50|$p99|$messages|$delivered|$errors|$check|$busy")
    echo "RESULT_SMTP server=$name round=$ROUND protocol=$PROTO concurrency=$conc accepted=$messages" \
         "accepted_rate=$rate delivered=$delivered delivered_rate=$drate drain_secs=$drain" \
         "cpu_ms_per_message=$cpu_ms cpu_ticks=$((t1 - t0)) clk_tck=$clk" \
         "client_cpu_ms_per_message=$client_ms busy_cpus=$busy p50_ms=$p50" \
         "p99_ms=$p99 errors=$errors check=$check"
}

wait_for() { # PORT PID NAME LOG SECS: 0 once it greets; 1 if it exits or stays silent
    local i
    for i in $(seq "$5"); do
        kill -0 "$2" 2>/dev/null || { log "$3 exited; its log:"; tail -5 "$4" >&2; return 1; }
        "$BENCH" wait --target "127.0.0.1:$1" --timeout 1 2>/dev/null && return 0
    done
    log "$3 did not greet on 127.0.0.1:$1 within $5 s; its log:"
    tail -5 "$4" >&2 || true
    return 1
}

stop() { # PID
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

PORT=$PORT_BASE
UNAVAILABLE=()

# ---------------------------------------------------------------------------------------
# tidegate
# ---------------------------------------------------------------------------------------
tidegate_config() { # PORT MAILDIR
    local listener
    if [ "$LMTP" = 1 ]; then
        listener="[lmtp]
listen = [\"127.0.0.1:$1\"]"
    else
        listener="[smtp]
listen = [\"127.0.0.1:$1\"]
max_message_size = $MAX_MESSAGE_SIZE"
    fi
    cat <<EOF
hostname = "bench.test"

[storage]
mailbox_path = "$2"
workarea = "$DATA/work"
fsync = true

[users]
backend = "file"
file = "$DATA/users"

$listener

[server]
allow_root = true
max_connections = 10000
shutdown_grace_secs = 1
EOF
}

measure_tidegate() { # every build in VARIANTS, each concurrency
    local v name maildir c
    for v in $VARIANTS; do
        PORT=$((PORT + 1))
        name=tidegate-$v
        maildir=$DATA/$name-mail
        mkdir -p "$maildir"
        tidegate_config "$PORT" "$maildir" > "$DATA/$name.toml"
        log "$name: $PROTO on 127.0.0.1:$PORT, fsync on"
        "$BIN/tidegate-$v" serve --config "$DATA/$name.toml" 2> "$WORKDIR/$name$ROUND_SUFFIX.log" &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        if ! wait_for "$PORT" "$SERVER_PID" "$name" "$WORKDIR/$name$ROUND_SUFFIX.log" 15; then
            log "$name: no $PROTO service in this build; not measured"
            UNAVAILABLE+=("$name")
            stop "$SERVER_PID"
            continue
        fi
        for c in $CONCURRENCY; do
            log "$name: $c clients for $DURATION s"
            measure "$name" "$SERVER_PID" "$PORT" "$c" "$maildir" ""
        done
        stop "$SERVER_PID"
    done
}

# ---------------------------------------------------------------------------------------
# Postfix: its own instance (config, queue and mail under WORKDIR) on a bench port,
# delivering to maildir with virtual(8); the system's /etc/postfix is not touched.
# ---------------------------------------------------------------------------------------
PF_DIR=$DATA/postfix
measure_postfix() {
    [ "$SKIP_POSTFIX" = 0 ] || return 0
    local conf queue maildir c
    if ! command -v postfix > /dev/null; then
        log "postfix not installed (use --install-postfix); skipping it"
        UNAVAILABLE+=(postfix)
        return 0
    fi
    PORT=$((PORT + 1))
    conf=$PF_DIR/etc
    queue=$PF_DIR/spool
    maildir=$PF_DIR/mail
    mkdir -p "$conf" "$queue" "$PF_DIR/data" "$maildir"
    chown postfix "$PF_DIR/data"
    chown nobody:nogroup "$maildir"
    if [ -f /etc/postfix/master.cf ]; then
        cp /etc/postfix/master.cf "$conf/master.cf"
    else
        cp /usr/share/postfix/master.cf.dist "$conf/master.cf"
    fi
    cp "$DATA/vmailbox" "$conf/vmailbox"
    cat > "$conf/main.cf" <<EOF
# Generated by bench/smtp.sh: an MX for $DOMAIN delivering to maildir with virtual(8).
compatibility_level = 3.6
queue_directory = $queue
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = $PF_DIR
myhostname = postfix.$DOMAIN
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# No DNS here, and tidegate does no reverse lookup of the client either.
smtpd_peername_lookup = no
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
message_size_limit = $MAX_MESSAGE_SIZE
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_base = $maildir
virtual_mailbox_maps = hash:$conf/vmailbox
virtual_mailbox_limit = 0
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
EOF
    postmap -c "$conf" "hash:$conf/vmailbox"
    # No chroot (the queue is not set up as one), and the only inet service is the
    # bench port.
    postconf -c "$conf" -F '*/*/chroot = n'
    postconf -c "$conf" -MX smtp/inet
    postconf -c "$conf" -M "127.0.0.1:$PORT/inet=127.0.0.1:$PORT inet n - n - - smtpd"
    log "postfix $(postconf -d -h mail_version): SMTP on 127.0.0.1:$PORT, maildir via virtual(8)"
    PF_CONF=$conf
    if ! postfix -c "$conf" start > "$PF_DIR/start.log" 2>&1; then
        log "postfix did not start:"; cat "$PF_DIR/start.log" >&2
        tail -5 "$PF_DIR/maillog" >&2 2>/dev/null || true
        exit 1
    fi
    PF_MASTER=$(tr -dc 0-9 < "$queue/pid/master.pid")
    wait_for "$PORT" "$PF_MASTER" postfix "$PF_DIR/maillog" 30 || exit 1
    sleep 1   # let qmgr, pickup and the first smtpd settle before the baseline
    for c in $CONCURRENCY; do
        log "postfix: $c clients for $DURATION s"
        measure postfix "$PF_MASTER" "$PORT" "$c" "$maildir" "$queue"
    done
    stop_postfix_instance
}

# ---------------------------------------------------------------------------------------
# smtp-sink: accepts and discards; one process, no disk
# ---------------------------------------------------------------------------------------
measure_sink() {
    [ "$SKIP_SINK" = 0 ] || return 0
    local sink_flags c
    if ! command -v smtp-sink > /dev/null; then
        log "smtp-sink not installed (it comes with postfix; use --install-postfix); skipping it"
        UNAVAILABLE+=(smtp-sink)
        return 0
    fi
    PORT=$((PORT + 1))
    sink_flags=(-u nobody -m 1024)
    [ "$LMTP" = 1 ] && sink_flags+=(-L)
    log "smtp-sink: $PROTO on 127.0.0.1:$PORT"
    smtp-sink "${sink_flags[@]}" "127.0.0.1:$PORT" 1024 2> "$WORKDIR/smtp-sink$ROUND_SUFFIX.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "$PORT" "$SERVER_PID" smtp-sink "$WORKDIR/smtp-sink$ROUND_SUFFIX.log" 15 || exit 1
    for c in $CONCURRENCY; do
        log "smtp-sink: $c clients for $DURATION s"
        measure smtp-sink "$SERVER_PID" "$PORT" "$c" "" ""
    done
    stop "$SERVER_PID"
}

# Each round measures every server once, in the same order; a server's maildir keeps the
# earlier rounds' messages (each measurement counts only what it added).
for ROUND in $(seq "$ROUNDS"); do
    ROUND_SUFFIX=""
    if [ "$ROUNDS" -gt 1 ]; then
        ROUND_SUFFIX=-r$ROUND
        log "round $ROUND of $ROUNDS"
    fi
    measure_tidegate
    measure_postfix
    measure_sink
done

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
mode="one transaction after another"
[ "$PIPELINING" = 1 ] && mode="MAIL+RCPT+DATA pipelined"
echo
echo "$PROTO delivery: $MESSAGE_SIZE-byte messages, $PER_CONNECTION per connection, $mode;"
echo "  $DURATION s per run, $USERS recipients; tidegate fsync = true; Postfix to maildir"
echo "  via virtual(8), delivered/s counted until its queue is empty; smtp-sink stores nothing;"
echo "  $NCPU CPUs shared by server and load generator (client ms: its CPU per message;"
echo "  busy: the machine's CPUs in use on average, load and drain); $(uname -r)"
round_col() { # VALUE: the round column, only when there are several rounds
    [ "$ROUNDS" -gt 1 ] && printf '%5s ' "$1"
    return 0
}
round_col round
printf '%-14s %7s %11s %12s %11s %11s %5s %8s %8s %9s %9s %6s  %s\n' server clients accepted/s \
    delivered/s "CPU ms/msg" "client ms" busy "p50 ms" "p99 ms" accepted delivered errors check
for r in "${ROWS[@]}"; do
    IFS='|' read -r round name conc rate drate cpu client p50 p99 n d err check busy <<< "$r"
    round_col "$round"
    printf '%-14s %7s %11s %12s %11s %11s %5s %8s %8s %9s %9s %6s  %s\n' "$name" "$conc" "$rate" \
        "$drate" "$cpu" "$client" "${busy:--}" "$p50" "$p99" "$n" "$d" "$err" "$check"
done
printf '%s\n' "${UNAVAILABLE[@]}" | sort -u | while read -r u; do
    if [ -n "$u" ]; then echo "$u: not measured (see above)"; fi
done
# Each tidegate row against the Postfix row of the same round and concurrency.
RATIOS=()   # "name|clients|delivered ratio|CPU ratio"
header=0
for r in "${ROWS[@]}"; do
    IFS='|' read -r round name conc _ drate cpu _ <<< "$r"
    case "$name" in tidegate-*) ;; *) continue ;; esac
    pf=""
    for q in "${ROWS[@]}"; do
        IFS='|' read -r pf_round pf_name pf_conc _ pf_drate pf_cpu _ <<< "$q"
        [ "$pf_name" = postfix ] && [ "$pf_round" = "$round" ] && [ "$pf_conc" = "$conc" ] &&
            pf="$pf_drate|$pf_cpu"
    done
    [ -n "$pf" ] || continue
    IFS='|' read -r pf_rate pf_cpu <<< "$pf"
    ratio=$(awk -v r="$drate" -v cp="$cpu" -v pr="$pf_rate" -v pc="$pf_cpu" 'BEGIN {
        if (pr > 0 && pc > 0 && r + 0 == r && cp + 0 == cp) printf "%.2f|%.3f", r / pr, cp / pc }')
    [ -n "$ratio" ] || continue
    if [ "$header" = 0 ]; then
        echo
        echo "tidegate / postfix (delivered/s: higher is better; CPU per message: lower is better):"
        header=1
    fi
    RATIOS+=("$name|$conc|$ratio")
    label=""
    [ "$ROUNDS" -gt 1 ] && label="round $round: "
    printf '  %s%-14s %3s clients: delivered/s x%s   CPU per message x%s\n' "$label" "$name" \
        "$conc" "${ratio%|*}" "${ratio#*|}"
done
# With several rounds: the median of each ratio (and its range) per build and concurrency.
if [ "$ROUNDS" -gt 1 ] && [ "${#RATIOS[@]}" -gt 0 ]; then
    echo
    echo "median over the rounds (range in brackets):"
    printf '%s\n' "${RATIOS[@]}" | awk -F'|' '
        # "median [low-high]" of the space-separated numbers in list
        function summary(list, fmt,    n, a, i, j, t, mid) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            mid = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            return sprintf(fmt " [%s-%s]", mid, a[1], a[n])
        }
        { key = $1 " " $2; if (!(key in rate)) order[++keys] = key
          rate[key] = rate[key] " " $3; cpu[key] = cpu[key] " " $4 }
        END {
            for (k = 1; k <= keys; k++) {
                split(order[k], id, " ")
                printf "  %-14s %3s clients: delivered/s x%s   CPU per message x%s\n", id[1], id[2],
                    summary(rate[order[k]], "%.2f"), summary(cpu[order[k]], "%.3f")
            }
        }'
fi
# A lost acknowledged message is a failure of the run.
for r in "${ROWS[@]}"; do
    case "$r" in *LOST:*|*DIFFERS:*|*server-exited*) echo "smtp.sh: a check failed: $r" >&2; exit 1 ;; esac
done
