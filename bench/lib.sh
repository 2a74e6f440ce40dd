# Shared by the benchmark scripts (sourced, not run): process bookkeeping, waiting for a
# server, and measuring one server under the load generator. The sourcing script sets
# WORKDIR, KEEP, BENCH and ROWS=() first.

PIDS=()

# Stops every process in PIDS (TERM, then KILL after 5 s) and empties the list.
stop_all() {
    local pid
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
    PIDS=()
}

cleanup() {
    stop_all
    if [ "$KEEP" = 0 ]; then
        rm -rf "$WORKDIR"
    else
        echo "work files kept in $WORKDIR"
    fi
}

log() { echo "== $*" >&2; }

kv() { # KEY < line: the value of KEY=value
    tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}

wait_for() { # PORT PID NAME LOG
    if ! "$BENCH" wait --target "127.0.0.1:$1" --timeout 30; then
        log "$3 did not start; its log:"
        tail -20 "$4" >&2 || true
        exit 1
    fi
    kill -0 "$2" 2>/dev/null || { log "$3 exited"; tail -20 "$4" >&2; exit 1; }
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

# measure NAME ROOTPID -- LOAD-GENERATOR ARGS...: runs `tidegate-bench ARGS`, samples the
# server's memory meanwhile, and appends "name|rate|cpu_ms|peak_mb|p50|p99|sessions|errors"
# to ROWS (CPU: the server's process tree, utime+stime, per completed session).
measure() {
    local name=$1 pid=$2 before after out peak s rss bp
    shift 3
    out=$WORKDIR/$name.out
    before=$("$BENCH" procstat --pid "$pid")
    "$BENCH" "$@" > "$out" 2> "$out.err" &
    bp=$!
    peak=0
    while kill -0 "$bp" 2>/dev/null; do
        s=$("$BENCH" procstat --pid "$pid" 2>/dev/null) || break
        rss=$(echo "$s" | kv rss_kb)
        [ "${rss:-0}" -gt "$peak" ] && peak=$rss
        sleep 0.5
    done
    wait "$bp" || log "$name: the load generator failed: $(tail -3 "$out.err")"
    after=$("$BENCH" procstat --pid "$pid")
    cat "$out" >&2
    [ -s "$out.err" ] && sed 's/^/   /' "$out.err" >&2
    local hwm result sessions rate p50 p99 errors t0 t1 clk cpu_ms
    hwm=$(echo "$after" | kv hwm_kb)
    [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
    result=$(grep '^RESULT' "$out" || echo "RESULT sessions=0 rate=0 p50_ms=0 p99_ms=0 errors=?")
    sessions=$(echo "$result" | kv sessions)
    rate=$(echo "$result" | kv rate)
    p50=$(echo "$result" | kv p50_ms)
    p99=$(echo "$result" | kv p99_ms)
    errors=$(echo "$result" | kv errors)
    t0=$(echo "$before" | kv ticks)
    t1=$(echo "$after" | kv ticks)
    clk=$(echo "$after" | kv clk_tck)
    cpu_ms=$(awk -v a="$t0" -v b="$t1" -v c="$clk" -v n="$sessions" \
        'BEGIN { if (n > 0) printf "%.3f", (b - a) * 1000 / c / n; else print "nan" }')
    ROWS+=("$name|$rate|$cpu_ms|$((peak / 1024))|$p50|$p99|$sessions|$errors")
    echo "RESULT_ROW server=$name sessions=$sessions rate=$rate cpu_ms_per_session=$cpu_ms" \
         "cpu_ticks=$((t1 - t0)) clk_tck=$clk peak_rss_mb=$((peak / 1024)) p50_ms=$p50" \
         "p99_ms=$p99 errors=$errors"
}

# report_rows TITLE...: the table of ROWS and each server's ratio to the row named dovecot.
report_rows() {
    local r name rate cpu rss p50 p99 n err dv_rate="" dv_cpu=""
    printf '%-16s %12s %14s %14s %9s %9s %9s %7s\n' server sessions/s "CPU ms/sess" "peak RSS MB" \
        "p50 ms" "p99 ms" sessions errors
    for r in "${ROWS[@]}"; do
        IFS='|' read -r name rate cpu rss p50 p99 n err <<< "$r"
        printf '%-16s %12s %14s %14s %9s %9s %9s %7s\n' "$name" "$rate" "$cpu" "$rss" "$p50" "$p99" "$n" "$err"
        if [ "$name" = dovecot ]; then dv_rate=$rate; dv_cpu=$cpu; fi
    done
    [ -n "$dv_rate" ] || return 0
    echo
    echo "tidegate / dovecot (sessions/s: higher is better; CPU per session: lower is better):"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r name rate cpu _ <<< "$r"
        [ "$name" = dovecot ] && continue
        awk -v n="$name" -v r="$rate" -v c="$cpu" -v dr="$dv_rate" -v dc="$dv_cpu" 'BEGIN {
            printf "  %-16s sessions/s x%.2f   CPU per session x%.3f\n", n,
                (dr > 0 ? r / dr : 0), (dc > 0 ? c / dc : 0) }'
    done
}

# build_variants "smol mio" BINDIR: release builds of tidegate (each runtime shell) and of
# tidegate-bench, copied into BINDIR as tidegate-smol, tidegate-mio and tidegate-bench.
build_variants() {
    local variants=$1 bin=$2 v
    mkdir -p "$bin"
    for v in $variants; do
        case "$v" in smol|mio) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
    done
    (
        cd "$ROOT"
        # mio first, so that target/release/tidegate is the default (smol) build afterwards.
        for v in mio smol; do
            case " $variants " in *" $v "*) ;; *) continue ;; esac
            log "building tidegate ($v)"
            if [ "$v" = mio ]; then
                cargo build --release -p tidegate --no-default-features --features mio
            else
                cargo build --release -p tidegate
            fi
            cp "$TARGET_DIR/release/tidegate" "$bin/tidegate-$v"
        done
        log "building tidegate-bench"
        cargo build --release -p tidegate-bench
        cp "$TARGET_DIR/release/tidegate-bench" "$bin/tidegate-bench"
    )
}

# write_dovecot_conf PROTO PORT SERVICE_COUNT: DATA/dovecot/dovecot.conf for one protocol
# (pop3 or imap) on 127.0.0.1:PORT, plaintext auth, the maildir copy in DATA/dovecot-mail,
# users from DATA/dovecot-passwd, in Dovecot's high-performance login mode (each login
# process serves many connections, one kept ready per core); SERVICE_COUNT is the
# post-login service's service_count (0: processes are reused). Sets DV.
write_dovecot_conf() {
    local proto=$1 port=$2 count=$3
    DV=$DATA/dovecot
    mkdir -p "$DV/run" "$DV/state"
    chown -R nobody:nogroup "$DATA/dovecot-mail"
    chmod 755 "$DATA" "$DATA/dovecot-mail"
    chmod 644 "$DATA/dovecot-passwd"
    cat > "$DV/dovecot.conf" <<CONF
# Generated by the tidegate benchmarks: $proto only, plaintext auth on loopback, maildir.
protocols = $proto
listen = 127.0.0.1
base_dir = $DV/run
state_dir = $DV/state
log_path = $DV/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$DATA/dovecot-mail/%d/%n
mail_uid = nobody
mail_gid = nogroup
mail_fsync = optimized
mail_max_userip_connections = 100000
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DATA/dovecot-passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DATA/dovecot-mail/%d/%n
}
service $proto-login {
  inet_listener $proto {
    address = 127.0.0.1
    port = $port
  }
  inet_listener ${proto}s {
    port = 0
  }
  service_count = 0
  process_min_avail = $NCPU
  vsz_limit = 1G
}
service auth {
  client_limit = 4000
}
service $proto {
  service_count = $count
  process_min_avail = $CONCURRENCY
}
CONF
}

# write_mail_data: the users and mailboxes the Dovecot comparisons share, in DATA (which
# must exist): DATA/users (tidegate), DATA/dovecot-passwd, DATA/message.eml of about
# 4 KiB, and MESSAGES copies of it in cur/ of DATA/mail/DOMAIN/userN for N in 1..USERS,
# all with password PASSWORD. Sets MSG_SIZE.
write_mail_data() {
    local i m a d
    : > "$DATA/users"
    : > "$DATA/dovecot-passwd"
    "$BENCH" message --message-size 4096 > "$DATA/message.eml"
    MSG_SIZE=$(stat -c %s "$DATA/message.eml")
    log "writing $MESSAGES messages of $MSG_SIZE bytes for each of $USERS users"
    for i in $(seq "$USERS"); do
        a="user$i@$DOMAIN"
        echo "$a {PLAIN}$PASSWORD" >> "$DATA/users"
        echo "$a:{PLAIN}$PASSWORD" >> "$DATA/dovecot-passwd"
        d="$DATA/mail/$DOMAIN/user$i"
        mkdir -p "$d/tmp" "$d/new" "$d/cur"
        for m in $(seq "$MESSAGES"); do
            cp "$DATA/message.eml" "$d/cur/$((1767225600 + m)).M${m}P1Q$i.benchhost,S=$MSG_SIZE:2,S"
        done
    done
}
