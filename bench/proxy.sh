#!/usr/bin/env bash
# Proxy benchmark (issue 6): proxied POP3 and IMAP sessions per second through four
# front-end/back-end pairs on one machine, in one run, with the same users and maildir
# contents:
#
#   tidegate>tidegate   tidegate front-end (PROXY v2 to the back-end), tidegate back-end
#   tidegate>dovecot    tidegate front-end (no client address), Dovecot back-end
#   nginx>dovecot       nginx's mail proxy with an auth_http responder, Dovecot back-end
#   dovecot>dovecot     Dovecot's proxy (passdb proxy=y), Dovecot back-end
#
# Front-ends listen on 127.0.1.1, back-ends on 127.0.2.1. The POP3 session is USER, PASS,
# RETR 1, QUIT; the IMAP session is LOGIN, SELECT INBOX, FETCH 1:* (FLAGS RFC822.SIZE),
# FETCH 1 (BODY.PEEK[]), LOGOUT (the load generator's `pop3` and `imap` commands). CPU is
# counted per process tree: the front-end's (nginx: master and workers; Dovecot: every
# process of its instance) and the back-end's, per completed session.
#
# nginx's auth_http responder is nginx itself (a `return 200` with the Auth-* headers):
# it checks no password and costs next to nothing, which favours nginx; the back-end
# still checks every password. See bench/README.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bash bench/proxy.sh [options]
  --duration SECS        seconds of load per pair and protocol (default 8)
  --concurrency N        concurrent clients (default 8)
  --users K              mailboxes the sessions spread over (default 50)
  --messages N           messages in every INBOX (default 10)
  --protocols "pop3 imap"  which protocols to measure (default both)
  --pairs "..."          which pairs to measure (default: all four, named as above)
  --variant mio|smol     which tidegate build runs both tiers (default mio)
  --skip-build           use the binaries from an earlier run (WORKDIR/bin)
  --port-base PORT       first of the local ports used (default 29110)
  --workdir DIR          keep data, configs, logs and binaries in DIR
USAGE
}

DURATION=8
CONCURRENCY=8
USERS=50
MESSAGES=10
PROTOCOLS="pop3 imap"
PAIRS="tidegate>tidegate tidegate>dovecot nginx>dovecot dovecot>dovecot"
VARIANT=mio
SKIP_BUILD=0
PORT_BASE=29110
WORKDIR=""
PASSWORD=benchpw
DOMAIN=bench.test
FRONT_IP=127.0.1.1
BACK_IP=127.0.2.1

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --protocols) PROTOCOLS=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --variant) VARIANT=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "proxy.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$VARIANT" in mio|smol) ;; *) echo "proxy.sh: --variant mio or smol" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NCPU=$(nproc)
KEEP=1
if [ -z "$WORKDIR" ]; then
    WORKDIR=$(mktemp -d /tmp/tidegate-proxy-bench.XXXXXX)
    KEEP=0
fi
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
chmod 755 "$WORKDIR"   # Dovecot's and nginx's unprivileged processes read their files
BIN=$WORKDIR/bin
BENCH=$BIN/tidegate-bench
ROWS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

need() { command -v "$1" > /dev/null || { echo "proxy.sh: $1 is missing ($2)" >&2; exit 1; }; }
case " $PAIRS " in *dovecot*) need dovecot "apt-get install dovecot-pop3d dovecot-imapd" ;; esac
case " $PAIRS " in *nginx*) need nginx "apt-get install nginx-light libnginx-mod-mail" ;; esac
NGINX_MAIL_MODULE=/usr/lib/nginx/modules/ngx_mail_module.so
case " $PAIRS " in *nginx*)
    [ -f "$NGINX_MAIL_MODULE" ] || { echo "proxy.sh: nginx's mail module is missing (libnginx-mod-mail)" >&2; exit 1; } ;;
esac

[ "$SKIP_BUILD" = 1 ] || build_variants "$VARIANT" "$BIN"
TIDEGATE=$BIN/tidegate-$VARIANT
[ -x "$TIDEGATE" ] && [ -x "$BENCH" ] || { echo "proxy.sh: binaries missing in $BIN" >&2; exit 1; }

# Ports: back-ends on BACK_IP, front-ends on FRONT_IP.
TG_BACK_POP3=$PORT_BASE; TG_BACK_IMAP=$((PORT_BASE + 1))
DV_BACK_POP3=$((PORT_BASE + 2)); DV_BACK_IMAP=$((PORT_BASE + 3))
TG_FRONT_POP3=$((PORT_BASE + 10)); TG_FRONT_IMAP=$((PORT_BASE + 11))
TGDV_FRONT_POP3=$((PORT_BASE + 12)); TGDV_FRONT_IMAP=$((PORT_BASE + 13))
NGX_POP3=$((PORT_BASE + 14)); NGX_IMAP=$((PORT_BASE + 15))
NGX_AUTH_POP3=$((PORT_BASE + 16)); NGX_AUTH_IMAP=$((PORT_BASE + 17))
DVP_POP3=$((PORT_BASE + 18)); DVP_IMAP=$((PORT_BASE + 19))

# ---------------------------------------------------------------------------------------
# Data: users and --messages messages of about 4 KiB each, one maildir copy per back-end
# ---------------------------------------------------------------------------------------
DATA=$WORKDIR/data
rm -rf "$DATA"
mkdir -p "$DATA"
chmod 755 "$DATA"
write_mail_data
# Dovecot's proxy: the same users, each sent to the Dovecot back-end's port for the
# protocol (the passdb file is chosen by the service name, see dovecot_proxy).
for proto in pop3 imap; do
    port=$DV_BACK_POP3
    [ "$proto" = imap ] && port=$DV_BACK_IMAP
    sed "s/\$/::::::proxy=y host=$BACK_IP port=$port/" "$DATA/dovecot-passwd" \
        > "$DATA/proxy-$proto.passwd"
done
cp -a "$DATA/mail" "$DATA/dovecot-mail"
chown -R nobody:nogroup "$DATA/dovecot-mail"
chmod 644 "$DATA"/*.passwd "$DATA/dovecot-passwd"

# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------
start_tidegate() { # NAME CONFIG WAIT-ADDR -> STARTED
    TIDEGATE_LOG=warn "$TIDEGATE" serve --config "$2" 2> "$WORKDIR/$1.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    if ! "$BENCH" wait --target "$3" --timeout 30 > /dev/null; then
        log "$1 did not start; its log:"
        tail -20 "$WORKDIR/$1.log" >&2
        exit 1
    fi
}

tidegate_back() {
    cat > "$WORKDIR/tg-back.toml" <<CONF
hostname = "back.bench.test"
[storage]
mailbox_path = "$DATA/mail"
workarea = "$DATA/tg-back-work"
fsync = false
[users]
backend = "file"
file = "$DATA/users"
[pop3]
listen = ["$BACK_IP:$TG_BACK_POP3"]
[imap]
listen = ["$BACK_IP:$TG_BACK_IMAP"]
[trust]
networks = ["127.0.1.0/24"]
proxy_protocol = true
[server]
allow_root = true
max_connections = 20000
max_connections_per_ip = 0
shutdown_grace_secs = 1
CONF
    start_tidegate tg-back "$WORKDIR/tg-back.toml" "$BACK_IP:$TG_BACK_POP3"
    TG_BACK_PID=$STARTED
}

tidegate_front() { # NAME POP3-PORT IMAP-PORT BACK-POP3 BACK-IMAP CLIENT-ADDRESS -> STARTED
    cat > "$WORKDIR/$1.toml" <<CONF
hostname = "front.bench.test"
[storage]
mailbox_path = "$DATA/$1-mail"
workarea = "$DATA/$1-work"
[users]
backend = "file"
file = "$DATA/users"
[proxy]
enabled = true
default_host = "$BACK_IP"
backend_ports = { pop3 = $4, imap = $5 }
client_address = "$6"
source_addresses = ["$FRONT_IP"]
[pop3]
listen = ["$FRONT_IP:$2"]
[imap]
listen = ["$FRONT_IP:$3"]
[server]
allow_root = true
max_connections = 20000
max_connections_per_ip = 0
shutdown_grace_secs = 1
CONF
    start_tidegate "$1" "$WORKDIR/$1.toml" "$FRONT_IP:$2"
}

dovecot_conf() { # DIR ADDRESS POP3-PORT IMAP-PORT EXTRA: a pop3+imap instance in DIR
    mkdir -p "$1/run" "$1/state"
    cat > "$1/dovecot.conf" <<CONF
# Generated by tidegate's bench/proxy.sh: plaintext auth on loopback.
protocols = pop3 imap
listen = $2
base_dir = $1/run
state_dir = $1/state
log_path = $1/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_max_userip_connections = 100000
service pop3-login {
  inet_listener pop3 {
    address = $2
    port = $3
  }
  service_count = 0
  process_min_avail = $NCPU
  vsz_limit = 1G
}
service imap-login {
  inet_listener imap {
    address = $2
    port = $4
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = $NCPU
  vsz_limit = 1G
}
service auth {
  client_limit = 20000
}
$5
CONF
}

dovecot_back() {
    dovecot_conf "$DATA/dv-back" "$BACK_IP" "$DV_BACK_POP3" "$DV_BACK_IMAP" "
mail_location = maildir:$DATA/dovecot-mail/%d/%n
mail_uid = nobody
mail_gid = nogroup
mail_fsync = optimized
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DATA/dovecot-passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DATA/dovecot-mail/%d/%n
}
service pop3 {
  service_count = 0
  process_min_avail = $CONCURRENCY
}
service imap {
  service_count = 0
  process_min_avail = $CONCURRENCY
}"
    dovecot -c "$DATA/dv-back/dovecot.conf" -F 2> "$DATA/dv-back/stderr.log" &
    DV_BACK_PID=$!
    PIDS+=("$DV_BACK_PID")
    if ! "$BENCH" wait --target "$BACK_IP:$DV_BACK_POP3" --timeout 30 > /dev/null; then
        log "the Dovecot back-end did not start:"
        cat "$DATA/dv-back/stderr.log" "$DATA/dv-back/dovecot.log" >&2 2>/dev/null || true
        exit 1
    fi
}

dovecot_proxy() { # -> STARTED; the passdb file is chosen by the service name (%s)
    dovecot_conf "$DATA/dv-proxy" "$FRONT_IP" "$DVP_POP3" "$DVP_IMAP" "
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DATA/proxy-%s.passwd
}"
    dovecot -c "$DATA/dv-proxy/dovecot.conf" -F 2> "$DATA/dv-proxy/stderr.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    "$BENCH" wait --target "$FRONT_IP:$DVP_POP3" --timeout 30 > /dev/null
}

nginx_proxy() { # -> STARTED
    local n=$DATA/nginx
    mkdir -p "$n/temp"
    cat > "$n/nginx.conf" <<CONF
# Generated by tidegate's bench/proxy.sh: nginx's mail proxy in front of Dovecot, with
# nginx's own http module as the auth_http responder (no password check there).
load_module $NGINX_MAIL_MODULE;
daemon off;
worker_processes $NCPU;
pid $n/nginx.pid;
error_log $n/error.log warn;
events {
  worker_connections 20000;
}
http {
  access_log off;
  client_body_temp_path $n/temp;
  proxy_temp_path $n/temp;
  fastcgi_temp_path $n/temp;
  uwsgi_temp_path $n/temp;
  scgi_temp_path $n/temp;
  server {
    listen $FRONT_IP:$NGX_AUTH_POP3;
    location / {
      add_header Auth-Status OK;
      add_header Auth-Server $BACK_IP;
      add_header Auth-Port $DV_BACK_POP3;
      return 200 "";
    }
  }
  server {
    listen $FRONT_IP:$NGX_AUTH_IMAP;
    location / {
      add_header Auth-Status OK;
      add_header Auth-Server $BACK_IP;
      add_header Auth-Port $DV_BACK_IMAP;
      return 200 "";
    }
  }
}
mail {
  server_name front.bench.test;
  proxy_pass_error_message on;
  server {
    listen $FRONT_IP:$NGX_POP3;
    protocol pop3;
    pop3_auth plain;
    auth_http $FRONT_IP:$NGX_AUTH_POP3/;
  }
  server {
    listen $FRONT_IP:$NGX_IMAP;
    protocol imap;
    imap_auth plain;
    auth_http $FRONT_IP:$NGX_AUTH_IMAP/;
  }
}
CONF
    nginx -c "$n/nginx.conf" -p "$n" 2> "$n/stderr.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    if ! "$BENCH" wait --target "$FRONT_IP:$NGX_POP3" --timeout 30 > /dev/null; then
        log "nginx did not start:"
        cat "$n/stderr.log" "$n/error.log" >&2 2>/dev/null || true
        exit 1
    fi
}

# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
load() { # PROTOCOL PORT SECS: the load generator's arguments
    local extra=""
    [ "$1" = imap ] && extra="--messages $MESSAGES"
    echo "$1" --target "$FRONT_IP:$2" --concurrency "$CONCURRENCY" --duration "$3" \
        --users-pattern "user{}@$DOMAIN" --user-count "$USERS" --password "$PASSWORD" \
        --sources 8 $extra
}

ticks_of() { "$BENCH" procstat --pid "$1" | kv ticks; }

BACK_ROWS=()
run_pair() { # NAME PROTOCOL FRONT-PID FRONT-PORT BACK-PID
    local name=$1 proto=$2 b0 b1 sessions clk
    log "$name $proto: warming up, then $CONCURRENCY clients for $DURATION s"
    # shellcheck disable=SC2046
    "$BENCH" $(load "$proto" "$4" 2) > /dev/null 2>&1 || true
    b0=$(ticks_of "$5")
    # shellcheck disable=SC2046
    measure "$name-$proto" "$3" -- $(load "$proto" "$4" "$DURATION")
    b1=$(ticks_of "$5")
    sessions=$(echo "${ROWS[-1]}" | cut -d'|' -f7)
    clk=$(getconf CLK_TCK)
    BACK_ROWS+=("$name-$proto|$(awk -v a="$b0" -v b="$b1" -v c="$clk" -v n="$sessions" \
        'BEGIN { if (n > 0) printf "%.3f", (b - a) * 1000 / c / n; else print "nan" }')")
}

has_pair() { case " $PAIRS " in *" $1 "*) return 0 ;; esac; return 1; }

TG_BACK_PID=""
DV_BACK_PID=""
if has_pair "tidegate>tidegate"; then tidegate_back; fi
if has_pair "tidegate>dovecot" || has_pair "nginx>dovecot" || has_pair "dovecot>dovecot"; then
    dovecot_back
fi

for proto in $PROTOCOLS; do
    case "$proto" in pop3|imap) ;; *) echo "proxy.sh: unknown protocol $proto" >&2; exit 2 ;; esac
    if has_pair "tidegate>tidegate"; then
        tidegate_front tg-front "$TG_FRONT_POP3" "$TG_FRONT_IMAP" "$TG_BACK_POP3" "$TG_BACK_IMAP" proxy-v2
        port=$TG_FRONT_POP3; [ "$proto" = imap ] && port=$TG_FRONT_IMAP
        run_pair "tidegate>tidegate" "$proto" "$STARTED" "$port" "$TG_BACK_PID"
        stop "$STARTED"
    fi
    if has_pair "tidegate>dovecot"; then
        tidegate_front tgdv-front "$TGDV_FRONT_POP3" "$TGDV_FRONT_IMAP" "$DV_BACK_POP3" "$DV_BACK_IMAP" none
        port=$TGDV_FRONT_POP3; [ "$proto" = imap ] && port=$TGDV_FRONT_IMAP
        run_pair "tidegate>dovecot" "$proto" "$STARTED" "$port" "$DV_BACK_PID"
        stop "$STARTED"
    fi
    if has_pair "nginx>dovecot"; then
        nginx_proxy
        port=$NGX_POP3; [ "$proto" = imap ] && port=$NGX_IMAP
        run_pair "nginx>dovecot" "$proto" "$STARTED" "$port" "$DV_BACK_PID"
        stop "$STARTED"
    fi
    if has_pair "dovecot>dovecot"; then
        dovecot_proxy
        port=$DVP_POP3; [ "$proto" = imap ] && port=$DVP_IMAP
        run_pair "dovecot>dovecot" "$proto" "$STARTED" "$port" "$DV_BACK_PID"
        stop "$STARTED"
    fi
done

echo
echo "Proxied sessions: POP3 = USER, PASS, RETR 1, QUIT; IMAP = LOGIN, SELECT ($MESSAGES messages),"
echo "  FETCH 1:* (FLAGS RFC822.SIZE), FETCH 1 (BODY.PEEK[]), LOGOUT. $CONCURRENCY clients, $DURATION s"
echo "  each, $USERS users; tidegate $VARIANT build; $NCPU CPUs shared by every tier and the load"
echo "  generator; $(uname -r)"
printf '%-24s %11s %13s %12s %13s %8s %8s %8s\n' pair sessions/s "front ms/s" "back ms/s" \
    "front RSS MB" "p50 ms" "p99 ms" errors
for i in "${!ROWS[@]}"; do
    IFS='|' read -r name rate cpu rss p50 p99 _ err <<< "${ROWS[$i]}"
    back=$(echo "${BACK_ROWS[$i]}" | cut -d'|' -f2)
    printf '%-24s %11s %13s %12s %13s %8s %8s %8s\n' "$name" "$rate" "$cpu" "$back" "$rss" "$p50" "$p99" "$err"
    echo "RESULT_PROXY pair=${name%-*} protocol=${name##*-} rate=$rate front_cpu_ms=$cpu back_cpu_ms=$back errors=$err"
done
