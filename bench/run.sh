#!/usr/bin/env bash
# POP3 benchmark: tidegate (smol and mio builds) against Dovecot on the same machine, in
# the same run, with the same users, password scheme and maildir contents.
# See bench/README.md. Usage: bash bench/run.sh [--install-dovecot] [options]
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/run.sh [options]
  --duration SECS        seconds of load per server (default 10)
  --concurrency N        concurrent POP3 clients (default 8)
  --users K              mailboxes the sessions spread over (default 50)
  --sources N            loopback source addresses 127.0.0.1..N (default 8)
  --connections N        idle authenticated connections for the memory test (default 10000)
  --hold SECS            how long the idle connections are held (default 5)
  --variants "smol mio"  which tidegate builds to measure (default both)
  --skip-dovecot         do not measure Dovecot
  --skip-idle            do not measure memory per idle connection
  --skip-build           use the binaries from an earlier run (WORKDIR/bin, see --workdir)
  --install-dovecot      apt-get install dovecot-pop3d if dovecot is missing
  --dovecot-pop3-service-count N
                         service pop3 { service_count } (default 0: post-login pop3
                         processes are reused; 1 is Dovecot's default, one per session)
  --port-base PORT       first of the local ports used (default 27110)
  --workdir DIR          keep data, configs, logs and binaries in DIR (default: a temp dir,
                         removed at the end)
EOF
}

DURATION=10
CONCURRENCY=8
USERS=50
SOURCES=8
CONNECTIONS=10000
HOLD=5
VARIANTS="smol mio"
SKIP_DOVECOT=0
SKIP_IDLE=0
SKIP_BUILD=0
INSTALL_DOVECOT=0
DOVECOT_POP3_SERVICE_COUNT=0
PORT_BASE=27110
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --sources) SOURCES=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --hold) HOLD=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --skip-dovecot) SKIP_DOVECOT=1; shift ;;
        --skip-idle) SKIP_IDLE=1; shift ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --install-dovecot) INSTALL_DOVECOT=1; shift ;;
        --dovecot-pop3-service-count) DOVECOT_POP3_SERVICE_COUNT=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NCPU=$(nproc)

KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
# Dovecot's auth (user dovecot) and mail processes (user nobody) must reach their files.
chmod 755 "$WORKDIR"

BIN=$WORKDIR/bin
BENCH=$BIN/tidegate-bench
ROWS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT

# Servers and the load generator each need one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$CONNECTIONS" -gt $((NOFILE - 200)) ]; then
    log "open-files limit $NOFILE: --connections lowered from $CONNECTIONS to $((NOFILE - 200))"
    CONNECTIONS=$((NOFILE - 200))
fi

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
[ "$SKIP_BUILD" = 1 ] || build_variants "$VARIANTS" "$BIN"
for v in $VARIANTS; do
    [ -x "$BIN/tidegate-$v" ] || { echo "run.sh: $BIN/tidegate-$v missing" >&2; exit 1; }
done
[ -x "$BENCH" ] || { echo "run.sh: $BENCH missing" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Data: users, one 4 KiB message each
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
rm -rf "$DATA"
mkdir -p "$DATA/work"
: > "$DATA/users"
: > "$DATA/dovecot-passwd"
ADDRS=()
for i in $(seq "$USERS"); do
    a="user$i@$DOMAIN"
    ADDRS+=("$a")
    echo "$a {PLAIN}$PASSWORD" >> "$DATA/users"
    echo "$a:{PLAIN}$PASSWORD" >> "$DATA/dovecot-passwd"
done

# Exactly 4096 bytes with CRLF line ends.
make_message() {
    local head body line n
    printf -v head 'From: Bench Sender <sender@%s>\r\nTo: bench user <user@%s>\r\nSubject: tidegate benchmark message\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <bench-1@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n' "$DOMAIN" "$DOMAIN" "$DOMAIN"
    printf '%s' "$head"
    n=$((4096 - ${#head}))
    line=$(printf 'The quick brown fox jumps over the lazy dog. %.0s' 1 2 | head -c 76)
    while [ "$n" -gt 78 ]; do
        printf '%s\r\n' "$line"
        n=$((n - 78))
    done
    printf '%s\r\n' "$(printf '%*s' $((n - 2)) '' | tr ' ' '.')" | sed 's/^\./x/'
}
make_message > "$DATA/message.eml"
MSG_SIZE=$(stat -c %s "$DATA/message.eml")

tidegate_config() { # PORT MAXCONN
    cat <<EOF
hostname = "bench.test"

[storage]
mailbox_path = "$DATA/mail"
workarea = "$DATA/work"
fsync = false

[users]
backend = "file"
file = "$DATA/users"

[pop3]
listen = ["127.0.0.1:$1"]

[server]
allow_root = true
max_connections = $2
max_connections_per_ip = 0
shutdown_grace_secs = 1
EOF
}

tidegate_config "$PORT_BASE" 100 > "$DATA/deliver.toml"
FIRST=$(echo $VARIANTS | cut -d' ' -f1)
log "delivering one $MSG_SIZE-byte message to each of $USERS users"
if [ -z "$FIRST" ] || ! "$BIN/tidegate-$FIRST" deliver --config "$DATA/deliver.toml" "${ADDRS[@]}" \
        < "$DATA/message.eml" > "$DATA/deliver.log" 2>&1; then
    [ -n "$FIRST" ] && log "tidegate deliver failed ($(tail -1 "$DATA/deliver.log"))"
    log "writing the maildir files directly"
    rm -rf "$DATA/mail"
    for i in $(seq "$USERS"); do
        d="$DATA/mail/$DOMAIN/user$i"
        mkdir -p "$d/tmp" "$d/new" "$d/cur"
        cp "$DATA/message.eml" "$d/new/1767225600.M${i}P$$Q1.benchhost,S=$MSG_SIZE"
    done
fi
STORED=$(find "$DATA/mail/$DOMAIN/user1" -type f | head -1)
STORED_SIZE=$(stat -c %s "$STORED")
# Dovecot gets its own copy of the pristine tree (it adds its index and uidlist files).
cp -a "$DATA/mail" "$DATA/dovecot-mail"

# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------
pop3_load() { # PORT: the load generator's arguments
    echo pop3 --target "127.0.0.1:$1" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --users-pattern "user{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
        --sources "$SOURCES"
}

start_tidegate() { # VARIANT PORT MAXCONN NAME -> sets SERVER_PID
    local conf=$DATA/$4.toml
    tidegate_config "$2" "$3" > "$conf"
    "$BIN/tidegate-$1" serve --config "$conf" 2> "$WORKDIR/$4.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "$2" "$SERVER_PID" "tidegate-$1" "$WORKDIR/$4.log"
}

PORT=$PORT_BASE
for v in $VARIANTS; do
    PORT=$((PORT + 1))
    log "tidegate-$v: $CONCURRENCY clients for $DURATION s on 127.0.0.1:$PORT"
    start_tidegate "$v" "$PORT" 10000 "tidegate-$v"
    measure "tidegate-$v" "$SERVER_PID" -- $(pop3_load "$PORT")
    stop "$SERVER_PID"
done

# ---------------------------------------------------------------------------------------
# Dovecot
# ---------------------------------------------------------------------------------------
if [ "$SKIP_DOVECOT" = 0 ]; then
    if ! command -v dovecot > /dev/null && [ "$INSTALL_DOVECOT" = 1 ]; then
        log "installing dovecot-pop3d"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-pop3d
    fi
    if command -v dovecot > /dev/null; then
        PORT=$((PORT + 1))
        write_dovecot_conf pop3 "$PORT" "$DOVECOT_POP3_SERVICE_COUNT"
        log "dovecot $(dovecot --version | cut -d' ' -f1): $CONCURRENCY clients for $DURATION s on 127.0.0.1:$PORT"
        dovecot -c "$DV/dovecot.conf" -F 2> "$DV/stderr.log" &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        wait_for "$PORT" "$SERVER_PID" dovecot "$DV/dovecot.log"
        sleep 1   # let process_min_avail processes come up before the baseline
        measure dovecot "$SERVER_PID" -- $(pop3_load "$PORT")
        stop "$SERVER_PID"
    else
        log "dovecot not installed (use --install-dovecot); skipping it"
    fi
fi

# ---------------------------------------------------------------------------------------
# Idle connections
# ---------------------------------------------------------------------------------------
IDLE_ROWS=()
if [ "$SKIP_IDLE" = 0 ]; then
    # The server's memory is read one second after READY, so hold them a little longer.
    HOLD=$(awk -v h="$HOLD" 'BEGIN { print (h < 2 ? 2 : h) }')
    for v in $VARIANTS; do
        PORT=$((PORT + 1))
        log "tidegate-$v: $CONNECTIONS idle authenticated connections on 127.0.0.1:$PORT"
        start_tidegate "$v" "$PORT" $((CONNECTIONS + 1000)) "tidegate-$v-idle"
        before=$("$BENCH" procstat --pid "$SERVER_PID" | kv rss_kb)
        out=$WORKDIR/tidegate-$v.idle.out
        "$BENCH" idle --target "127.0.0.1:$PORT" --connections "$CONNECTIONS" --hold "$HOLD" \
            --users-pattern "user{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
            --sources "$SOURCES" > "$out" 2> "$out.err" &
        bp=$!
        while kill -0 "$bp" 2>/dev/null && ! grep -q '^READY' "$out"; do sleep 0.2; done
        sleep 1   # let the server finish the last logins
        after=$("$BENCH" procstat --pid "$SERVER_PID" | kv rss_kb)
        wait "$bp" || log "idle load generator failed: $(tail -3 "$out.err")"
        cat "$out" >&2
        grep '^error' "$out.err" >&2 || true
        up=$(grep '^READY' "$out" | kv n || true)
        per=$(awk -v a="$before" -v b="$after" -v n="${up:-0}" \
            'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "nan" }')
        IDLE_ROWS+=("tidegate-$v|${up:-0}|$before|$after|$per")
        echo "RESULT_IDLE server=tidegate-$v connections=${up:-0} rss_before_kb=$before" \
             "rss_after_kb=$after bytes_per_connection=$per"
        stop "$SERVER_PID"
    done
fi

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
echo
echo "POP3 sessions (connect, USER/PASS, STAT, RETR 1 = $STORED_SIZE-byte message, QUIT):"
echo "  $CONCURRENCY clients, $DURATION s each, $USERS users, {PLAIN} passwords, same maildir files;"
echo "  $NCPU CPUs shared by server and load generator; $(uname -r)"
report_rows
if [ "${#IDLE_ROWS[@]}" -gt 0 ]; then
    echo
    echo "Idle authenticated POP3 connections (server VmRSS before and after):"
    printf '%-16s %12s %14s %14s %16s\n' server connections "RSS before KB" "RSS after KB" "bytes/connection"
    for r in "${IDLE_ROWS[@]}"; do
        IFS='|' read -r name up b a per <<< "$r"
        printf '%-16s %12s %14s %14s %16s\n' "$name" "$up" "$b" "$a" "$per"
    done
fi
