#!/usr/bin/env bash
# IMAP benchmark: tidegate (smol and mio builds) against Dovecot on the same machine, in
# the same run, with the same users, password scheme and maildir contents. One session:
# LOGIN, SELECT INBOX (--messages messages), FETCH 1:* (FLAGS RFC822.SIZE), FETCH of one
# whole message (BODY.PEEK[]), LOGOUT. See bench/README.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bash bench/imap.sh [options]
  --duration SECS        seconds of load per server (default 10)
  --concurrency N        concurrent IMAP clients (default 8)
  --users K              mailboxes the sessions spread over (default 50)
  --messages N           messages in every INBOX (default 100)
  --sources N            loopback source addresses 127.0.0.1..N (default 8)
  --variants "smol mio"  which tidegate builds to measure (default both)
  --skip-dovecot         do not measure Dovecot
  --skip-build           use the binaries from an earlier run (WORKDIR/bin)
  --install-dovecot      apt-get install dovecot-imapd if Dovecot's imap is missing
  --port-base PORT       first of the local ports used (default 27210)
  --workdir DIR          keep data, configs, logs and binaries in DIR
USAGE
}

DURATION=10
CONCURRENCY=8
USERS=50
MESSAGES=100
SOURCES=8
VARIANTS="smol mio"
SKIP_DOVECOT=0
SKIP_BUILD=0
INSTALL_DOVECOT=0
PORT_BASE=27210
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --sources) SOURCES=$2; shift 2 ;;
        --variants) VARIANTS=$2; shift 2 ;;
        --skip-dovecot) SKIP_DOVECOT=1; shift ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --install-dovecot) INSTALL_DOVECOT=1; shift ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "imap.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
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
chmod 755 "$WORKDIR"   # Dovecot's auth and mail processes must reach their files
BIN=$WORKDIR/bin
BENCH=$BIN/tidegate-bench
ROWS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT

[ "$SKIP_BUILD" = 1 ] || build_variants "$VARIANTS" "$BIN"
for v in $VARIANTS; do
    [ -x "$BIN/tidegate-$v" ] || { echo "imap.sh: $BIN/tidegate-$v missing" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------
# Data: users, --messages messages of about 4 KiB each, written as maildir files
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
rm -rf "$DATA"
mkdir -p "$DATA/work"
write_mail_data
cp -a "$DATA/mail" "$DATA/dovecot-mail"   # Dovecot adds its own index files

start_tidegate() { # VARIANT PORT NAME -> SERVER_PID
    local conf=$DATA/$3.toml
    cat > "$conf" <<CONF
hostname = "bench.test"
[storage]
mailbox_path = "$DATA/mail"
workarea = "$DATA/work-$3"
fsync = false
[users]
backend = "file"
file = "$DATA/users"
[imap]
listen = ["127.0.0.1:$2"]
[server]
allow_root = true
max_connections = 10000
shutdown_grace_secs = 1
CONF
    "$BIN/tidegate-$1" serve --config "$conf" 2> "$WORKDIR/$3.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_for "$2" "$SERVER_PID" "tidegate-$1" "$WORKDIR/$3.log"
}

load() { # PORT SECS: the load generator's arguments
    echo imap --target "127.0.0.1:$1" --concurrency "$CONCURRENCY" --duration "$2" \
        --users-pattern "user{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
        --sources "$SOURCES" --messages "$MESSAGES"
}

PORT=$PORT_BASE
for v in $VARIANTS; do
    PORT=$((PORT + 1))
    # One session first, so every user's uidlist exists before the measurement (Dovecot
    # gets the same warm-up below).
    start_tidegate "$v" "$PORT" "tidegate-$v"
    log "tidegate-$v: warming up, then $CONCURRENCY clients for $DURATION s on 127.0.0.1:$PORT"
    # shellcheck disable=SC2046
    "$BENCH" $(load "$PORT" 2) > /dev/null 2>&1 || true
    # shellcheck disable=SC2046
    measure "tidegate-$v" "$SERVER_PID" -- $(load "$PORT" "$DURATION")
    stop "$SERVER_PID"
done

# ---------------------------------------------------------------------------------------
# Dovecot, in its high-performance login mode
# ---------------------------------------------------------------------------------------
if [ "$SKIP_DOVECOT" = 0 ]; then
    if [ ! -x /usr/lib/dovecot/imap ] && [ "$INSTALL_DOVECOT" = 1 ]; then
        log "installing dovecot-imapd"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd
    fi
    if command -v dovecot > /dev/null && [ -x /usr/lib/dovecot/imap ]; then
        PORT=$((PORT + 1))
        write_dovecot_conf imap "$PORT" 0
        dovecot -c "$DV/dovecot.conf" -F 2> "$DV/stderr.log" &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        wait_for "$PORT" "$SERVER_PID" dovecot "$DV/dovecot.log"
        log "dovecot $(dovecot --version | cut -d' ' -f1): warming up, then $CONCURRENCY clients for $DURATION s"
        # shellcheck disable=SC2046
        "$BENCH" $(load "$PORT" 2) > /dev/null 2>&1 || true
        # shellcheck disable=SC2046
        measure dovecot "$SERVER_PID" -- $(load "$PORT" "$DURATION")
        stop "$SERVER_PID"
    else
        log "Dovecot's imap is not installed (use --install-dovecot); skipping it"
    fi
fi

echo
echo "IMAP sessions (LOGIN, SELECT INBOX of $MESSAGES, FETCH 1:* (FLAGS RFC822.SIZE), FETCH one BODY.PEEK[], LOGOUT):"
echo "  $CONCURRENCY clients, $DURATION s each, $USERS users, {PLAIN} passwords, same maildir files;"
echo "  $NCPU CPUs shared by server and load generator; $(uname -r)"
report_rows
