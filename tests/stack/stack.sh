#!/usr/bin/env bash
# The local stack of real servers the tests and the README's main job use:
# MariaDB 10.11 (CDC source), Apache Kafka 4.x in KRaft mode, PostgreSQL 15.
# Local processes on 127.0.0.1 and non-default ports, all data under one directory
# (${CDC_BRIDGE_STACK_DIR:-/var/tmp/cdc-bridge-stack}); Kafka's jars are resolved from
# Maven Central into ${CDC_BRIDGE_CACHE_DIR:-/var/cache/cdc-bridge}/kafka-<version>/libs.
#
#   stack.sh up              install what is missing, start what is not running (idempotent)
#   stack.sh down [--purge]  stop what `up` started (by pid file); --purge also deletes the data
#   stack.sh reset           the same as `down --purge`
#   stack.sh status          what runs where (exit 3 when something is not running)
#   stack.sh env             connection settings as `export` lines (eval "$(stack.sh env)")
#
# Settings (environment, with defaults): CDC_BRIDGE_STACK_DIR, CDC_BRIDGE_CACHE_DIR,
# CDC_BRIDGE_MYSQL_PORT (13306), CDC_BRIDGE_MYSQL_ADMIN_PASSWORD, CDC_BRIDGE_MYSQL_USER
# (cdc_reader), CDC_BRIDGE_MYSQL_PASSWORD, CDC_BRIDGE_KAFKA_PORT (19092),
# CDC_BRIDGE_KAFKA_CONTROLLER_PORT (19093), CDC_BRIDGE_KAFKA_HEAP, CDC_BRIDGE_PG_PORT (15432),
# CDC_BRIDGE_PG_USER (cdc), CDC_BRIDGE_PG_PASSWORD, CDC_BRIDGE_PG_DATABASE (cdc),
# CDC_BRIDGE_STACK_TIMEOUT_SECS (120, per service). The passwords are local defaults
# for a loopback-only test stack.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

abs_dir() {
    local dir=${1%/}
    [[ -n $dir ]] || dir=/
    [[ $dir == /* ]] || dir=$PWD/$dir
    printf '%s\n' "$dir"
}

STACK_DIR=$(abs_dir "${CDC_BRIDGE_STACK_DIR:-/var/tmp/cdc-bridge-stack}")
CACHE_DIR=$(abs_dir "${CDC_BRIDGE_CACHE_DIR:-/var/cache/cdc-bridge}")

MYSQL_PORT=${CDC_BRIDGE_MYSQL_PORT:-13306}
MYSQL_ADMIN_PASSWORD=${CDC_BRIDGE_MYSQL_ADMIN_PASSWORD:-cdc-admin-local}
MYSQL_USER=${CDC_BRIDGE_MYSQL_USER:-cdc_reader}
MYSQL_PASSWORD=${CDC_BRIDGE_MYSQL_PASSWORD:-cdc-reader-local}
KAFKA_PORT=${CDC_BRIDGE_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CDC_BRIDGE_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${CDC_BRIDGE_KAFKA_HEAP:--Xms256m -Xmx768m}
PG_PORT=${CDC_BRIDGE_PG_PORT:-15432}
PG_USER=${CDC_BRIDGE_PG_USER:-cdc}
PG_PASSWORD=${CDC_BRIDGE_PG_PASSWORD:-cdc-pg-local}
PG_DATABASE=${CDC_BRIDGE_PG_DATABASE:-cdc}
START_TIMEOUT=${CDC_BRIDGE_STACK_TIMEOUT_SECS:-120}
STOP_TIMEOUT=60

KAFKA_POM="$HERE/kafka-pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" 2>/dev/null | head -n1)
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"

MARIADB_DIR="$STACK_DIR/mariadb"
KAFKA_DIR="$STACK_DIR/kafka"
PG_DIR="$STACK_DIR/postgres"

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Prints the last lines of the named log files (those that exist) to stderr.
show_logs() {
    local file
    for file in "$@"; do
        [[ -s $file ]] || continue
        printf 'stack: --- last lines of %s ---\n' "$file" >&2
        tail -n 40 "$file" >&2
    done
}

# --- processes ------------------------------------------------------------------

# Whether process $1 exists and is not a zombie (an exited child its parent, maybe a
# pid 1 that does not reap, has not collected yet; kill -0 still succeeds for those).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [[ -n $state && $state != Z && $state != X ]]
}

# Prints the pid named in pid file $1 if that process is alive and is ours: its
# command line contains $2 (a path inside this stack's directory). Fails otherwise,
# so a stale pid file, or one naming a reused pid, reads as "not running".
our_pid() {
    local pidfile=$1 marker=$2 pid
    [[ -f $pidfile ]] || return 1
    pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid ]] || return 1
    alive "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
    printf '%s\n' "$pid"
}

# Polls `$3...` every 0.5 s until it succeeds; fails early when process $2 has died
# (empty $2: no such check) and after START_TIMEOUT seconds. $1 names what for the log.
wait_for() {
    local what=$1 pid=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $pid ]] && ! alive "$pid"; then
            log "$what: the process (pid $pid) exited while starting"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$what: not ready within ${START_TIMEOUT}s"
            return 1
        fi
        sleep 0.5
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Fails when something already listens on 127.0.0.1:$2 ($1 names the service).
port_free() {
    if port_open "$2"; then
        log "$1: 127.0.0.1:$2 is already in use by a process this stack did not start"
        return 1
    fi
}

# TERM, wait up to STOP_TIMEOUT seconds, then KILL; only a process our_pid vouches for.
stop_pid() {
    local name=$1 pidfile=$2 marker=$3 pid
    if ! pid=$(our_pid "$pidfile" "$marker"); then
        rm -f "$pidfile"
        log "$name: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name: still running ${STOP_TIMEOUT}s after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    log "$name: stopped (pid $pid)"
}

# --- installation -----------------------------------------------------------------

MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
MARIADB_INSTALL_DB=$(command -v mariadb-install-db || echo /usr/bin/mariadb-install-db)

# The newest installed PostgreSQL server's bin directory.
pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n1)
    [[ -n $dir && -x $dir/postgres && -x $dir/initdb ]] || return 1
    printf '%s\n' "$dir"
}

POLICY_RC_CREATED=0
remove_policy_rc() {
    if ((POLICY_RC_CREATED)); then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

install_missing() {
    local need=()
    [[ -x $MARIADBD && -x $MARIADB_INSTALL_DB ]] || need+=(mariadb-server)
    command -v mariadb >/dev/null && command -v mariadb-admin >/dev/null || need+=(mariadb-client)
    pg_bin >/dev/null || need+=(postgresql)
    command -v psql >/dev/null || need+=(postgresql-client)
    command -v java >/dev/null || need+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || need+=(maven)
    command -v runuser >/dev/null && command -v setsid >/dev/null || need+=(util-linux)
    command -v ps >/dev/null || need+=(procps)
    ((${#need[@]})) || return 0
    log "installing ${need[*]} (apt-get)"
    # Keep the packages from starting the distribution's default services: a
    # policy-rc.d that denies every start, removed again however the install ends.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
        trap remove_policy_rc EXIT
    fi
    local apt_log="$STACK_DIR/apt.log"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"; } >"$apt_log" 2>&1; then
        show_logs "$apt_log"
        die "installing ${need[*]} failed"
    fi
    remove_policy_rc
    MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    MARIADB_INSTALL_DB=$(command -v mariadb-install-db || echo /usr/bin/mariadb-install-db)
    log "installed ${need[*]}"
}

# --- MariaDB --------------------------------------------------------------------

MARIADB_CNF="$MARIADB_DIR/my.cnf"
MARIADB_PIDFILE="$MARIADB_DIR/mysqld.pid"
MARIADB_SOCKET="$MARIADB_DIR/mysqld.sock"
MARIADB_LOG="$MARIADB_DIR/error.log"

mariadb_cnf() {
    cat >"$MARIADB_CNF" <<EOF
# Written by tests/stack/stack.sh on every start; read with --defaults-file only.
[mariadbd]
user = mysql
datadir = $MARIADB_DIR/data
socket = $MARIADB_SOCKET
pid-file = $MARIADB_PIDFILE
log-error = $MARIADB_LOG
tmpdir = $MARIADB_DIR/tmp
port = $MYSQL_PORT
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
max_allowed_packet = 256M
max_connections = 300
innodb_buffer_pool_size = 256M
innodb_log_file_size = 256M
# A CDC source: row-based binlog with full images and full metadata, GTIDs.
server_id = 1
log_bin = $MARIADB_DIR/binlog/mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_domain_id = 0
gtid_strict_mode = ON
log_slave_updates = ON
expire_logs_days = 7

[client]
socket = $MARIADB_SOCKET
port = $MYSQL_PORT
EOF
}

# The server's root over its socket (unix_socket authentication as OS root).
mariadb_root() { mariadb --defaults-file="$MARIADB_CNF" --protocol=socket -uroot "$@"; }
mariadb_ping() { mariadb-admin --defaults-file="$MARIADB_CNF" --protocol=socket -uroot ping; }
mariadb_pid() { our_pid "$MARIADB_PIDFILE" "$MARIADB_CNF"; }

# SQL string literal.
sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# Accounts, re-applied on every start so they match the settings (idempotent).
mariadb_accounts() {
    local admin reader user
    admin=$(sql_quote "$MYSQL_ADMIN_PASSWORD")
    reader=$(sql_quote "$MYSQL_PASSWORD")
    user=$(sql_quote "$MYSQL_USER")
    mariadb_root --batch <<EOF
-- Kept out of the binlog: a CDC reader sees only the tests' own changes.
SET SESSION sql_log_bin = 0;
-- root: socket login as OS root or with the password; TCP only from 127.0.0.1.
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD($admin);
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY $admin;
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY $admin;
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
-- The CDC reader: exactly what reading the binlog and snapshotting needs.
-- (On 10.11 REPLICATION CLIENT is BINLOG MONITOR: SHOW MASTER STATUS, SHOW BINARY LOGS.)
CREATE USER IF NOT EXISTS $user@'%' IDENTIFIED BY $reader;
ALTER USER $user@'%' IDENTIFIED BY $reader;
REVOKE ALL PRIVILEGES, GRANT OPTION FROM $user@'%';
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO $user@'%';
EOF
}

mariadb_up() {
    local pid
    if pid=$(mariadb_pid); then
        wait_for mariadb "$pid" mariadb_ping || die "mariadb: running (pid $pid) but not answering"
        log "mariadb: already running (pid $pid, 127.0.0.1:$MYSQL_PORT)"
        return 0
    fi
    [[ -x $MARIADBD ]] || die "mariadb: no mariadbd at $MARIADBD"
    port_free mariadb "$MYSQL_PORT" || die "mariadb: cannot start"
    mkdir -p "$MARIADB_DIR/data" "$MARIADB_DIR/binlog" "$MARIADB_DIR/tmp"
    mariadb_cnf
    chown -R mysql:mysql "$MARIADB_DIR"
    if [[ ! -d $MARIADB_DIR/data/mysql ]]; then
        log "mariadb: initialising $MARIADB_DIR/data"
        "$MARIADB_INSTALL_DB" --defaults-file="$MARIADB_CNF" --auth-root-authentication-method=socket \
            --skip-test-db >"$MARIADB_DIR/install.log" 2>&1 || {
            show_logs "$MARIADB_DIR/install.log" "$MARIADB_LOG"
            die "mariadb: mariadb-install-db failed"
        }
    fi
    rm -f "$MARIADB_PIDFILE"
    setsid "$MARIADBD" --defaults-file="$MARIADB_CNF" >>"$MARIADB_DIR/stdout.log" 2>&1 </dev/null &
    pid=$!
    if ! wait_for mariadb "$pid" mariadb_ping || ! wait_for mariadb "$pid" test -s "$MARIADB_PIDFILE"; then
        show_logs "$MARIADB_LOG" "$MARIADB_DIR/stdout.log"
        die "mariadb: did not start"
    fi
    if ! mariadb_accounts >"$MARIADB_DIR/accounts.log" 2>&1; then
        show_logs "$MARIADB_DIR/accounts.log"
        die "mariadb: setting up the accounts failed"
    fi
    log "mariadb: started (pid $pid, 127.0.0.1:$MYSQL_PORT, $("$MARIADBD" --version | sed 's/.*Ver //; s/ for .*//'))"
}

mariadb_down() { stop_pid mariadb "$MARIADB_PIDFILE" "$MARIADB_CNF"; }

# --- Kafka ------------------------------------------------------------------------

KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/server.log"
KAFKA_STARTING_PID=
KAFKA_RUNNING_PID=

# Resolves the broker's jars from Maven Central once per version (a .complete marker).
kafka_libs() {
    [[ -f $KAFKA_LIBS/.complete ]] && return 0
    log "kafka: resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
    mkdir -p "$CACHE_DIR"
    rm -rf "$KAFKA_LIBS.tmp"
    mkdir -p "$KAFKA_LIBS.tmp"
    local mvn_log="$CACHE_DIR/mvn-kafka-$KAFKA_VERSION.log"
    mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime >"$mvn_log" 2>&1 || {
        show_logs "$mvn_log"
        die "kafka: resolving the jars with Maven failed"
    }
    ls "$KAFKA_LIBS.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka: Maven resolved no kafka_2.13 jar"
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$KAFKA_LIBS/.complete"
}

kafka_config() {
    cat >"$KAFKA_PROPS" <<EOF
# Written by tests/stack/stack.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=67108864
replica.fetch.max.bytes=67108864
log.retention.hours=-1
log.segment.bytes=268435456
EOF
    # The broker logs to files in the stack directory, rolled at 50 MB, nothing to stdout.
    cat >"$KAFKA_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 4
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
    # For Kafka's command line tools: warnings and errors to stderr.
    cat >"$KAFKA_DIR/tools-log4j2.properties" <<EOF
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
EOF
}

kafka_pid() { our_pid "$KAFKA_PIDFILE" "$KAFKA_PROPS"; }

# The Kafka version the process $1 runs (from the libs directory on its class path).
kafka_running_version() {
    tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | sed -n 's:.*/kafka-\([^/]*\)/libs/\*$:\1:p' | head -n1
}

# A random cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).
kafka_cluster_id() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# This run's broker has logged that it started (the log of a broker found running
# may have rolled over, so for that one the listening port is the test).
kafka_ready() {
    port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_LOG"
}

# Starts the broker without waiting for it (kafka_wait does); it starts slowest, so
# the other servers start meanwhile.
kafka_start() {
    local pid version
    if pid=$(kafka_pid); then
        version=$(kafka_running_version "$pid")
        log "kafka: already running (pid $pid, 127.0.0.1:$KAFKA_PORT, Apache Kafka ${version:-?})"
        if [[ -n $version && $version != "$KAFKA_VERSION" ]]; then
            log "kafka: note: kafka-pom.xml names $KAFKA_VERSION; \`down\` then \`up\` to switch"
        fi
        KAFKA_RUNNING_PID=$pid
        return 0
    fi
    command -v java >/dev/null || die "kafka: no java on PATH"
    if ! port_free kafka "$KAFKA_PORT" || ! port_free kafka-controller "$KAFKA_CONTROLLER_PORT"; then
        die "kafka: cannot start"
    fi
    kafka_libs
    mkdir -p "$KAFKA_DIR/data"
    kafka_config
    if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
        local cluster_id
        cluster_id=$(kafka_cluster_id)
        log "kafka: formatting $KAFKA_DIR/data (cluster id $cluster_id)"
        java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" -cp "$KAFKA_LIBS/*" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" >"$KAFKA_DIR/format.log" 2>&1 || {
            show_logs "$KAFKA_DIR/format.log"
            die "kafka: formatting the storage failed"
        }
    fi
    # Keep the previous run's log beside; readiness is read from this run's log.
    [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.previous"
    local heap
    read -r -a heap <<<"$KAFKA_HEAP"
    (
        cd "$KAFKA_DIR"
        exec setsid java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
            -Djava.awt.headless=true -Dkafka.logs.dir="$KAFKA_DIR" \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" >>"$KAFKA_DIR/stdout.log" 2>&1 </dev/null
    ) &
    KAFKA_STARTING_PID=$!
    echo "$KAFKA_STARTING_PID" >"$KAFKA_PIDFILE"
}

kafka_wait() {
    if [[ -n $KAFKA_RUNNING_PID ]]; then
        wait_for kafka "$KAFKA_RUNNING_PID" port_open "$KAFKA_PORT" ||
            die "kafka: running (pid $KAFKA_RUNNING_PID) but not listening on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    [[ -n $KAFKA_STARTING_PID ]] || return 0
    if ! wait_for kafka "$KAFKA_STARTING_PID" kafka_ready; then
        show_logs "$KAFKA_LOG" "$KAFKA_DIR/stdout.log"
        die "kafka: did not start"
    fi
    log "kafka: started (pid $KAFKA_STARTING_PID, 127.0.0.1:$KAFKA_PORT, Apache Kafka $KAFKA_VERSION, KRaft controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
}

kafka_down() { stop_pid kafka "$KAFKA_PIDFILE" "$KAFKA_PROPS"; }

# --- PostgreSQL ---------------------------------------------------------------------

PG_DATA="$PG_DIR/data"
PG_SOCKET_DIR="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"

pg_as() { runuser -u postgres -- "$@"; }
pg_pid() { our_pid "$PG_DATA/postmaster.pid" "$PG_DATA"; }

# Server settings in a file the datadir's postgresql.conf includes, so a plain
# `pg_ctl start -D ...` gets them too.
pg_config() {
    cat >"$PG_DATA/stack.conf" <<EOF
# Written by tests/stack/stack.sh on every start.
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCKET_DIR'
unix_socket_permissions = 0777
password_encryption = 'scram-sha-256'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    chown postgres:postgres "$PG_DATA/stack.conf"
    grep -q "^include_if_exists = 'stack.conf'" "$PG_DATA/postgresql.conf" ||
        echo "include_if_exists = 'stack.conf'" >>"$PG_DATA/postgresql.conf"
}

pg_roles() {
    local user=${PG_USER//\"/\"\"} db=${PG_DATABASE//\"/\"\"}
    local user_lit pw_lit db_lit
    user_lit=$(sql_quote "$PG_USER")
    pw_lit=$(sql_quote "$PG_PASSWORD")
    db_lit=$(sql_quote "$PG_DATABASE")
    pg_as psql -X -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 <<EOF
SELECT format('CREATE ROLE %I', $user_lit)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $user_lit)\gexec
ALTER ROLE "$user" WITH LOGIN CREATEDB PASSWORD $pw_lit;
SELECT format('CREATE DATABASE %I OWNER %I', $db_lit, $user_lit)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = $db_lit)\gexec
ALTER DATABASE "$db" OWNER TO "$user";
EOF
}

pg_up() {
    local bin pid
    bin=$(pg_bin) || die "postgres: no PostgreSQL server binaries under /usr/lib/postgresql"
    if pid=$(pg_pid); then
        wait_for postgres "$pid" pg_as "$bin/pg_isready" -q -h "$PG_SOCKET_DIR" -p "$PG_PORT" ||
            die "postgres: running (pid $pid) but not accepting connections"
        log "postgres: already running (pid $pid, 127.0.0.1:$PG_PORT)"
        return 0
    fi
    port_free postgres "$PG_PORT" || die "postgres: cannot start"
    mkdir -p "$PG_SOCKET_DIR"
    chown postgres:postgres "$PG_DIR" "$PG_SOCKET_DIR"
    chmod 755 "$PG_DIR" "$PG_SOCKET_DIR"
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        log "postgres: initialising $PG_DATA"
        rm -rf "$PG_DATA"
        pg_as "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || {
            show_logs "$PG_DIR/initdb.log"
            die "postgres: initdb failed"
        }
    fi
    pg_config
    # Not ours (our_pid said so): a stale lock file of a dead server.
    rm -f "$PG_DATA/postmaster.pid"
    touch "$PG_LOG"
    chown postgres:postgres "$PG_LOG"
    pg_as "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" start >"$PG_DIR/pg_ctl.log" 2>&1 || {
        show_logs "$PG_LOG" "$PG_DIR/pg_ctl.log"
        die "postgres: did not start"
    }
    if ! wait_for postgres "" pg_as "$bin/pg_isready" -q -h "$PG_SOCKET_DIR" -p "$PG_PORT"; then
        show_logs "$PG_LOG"
        die "postgres: did not become ready"
    fi
    if ! pg_roles >"$PG_DIR/roles.log" 2>&1; then
        show_logs "$PG_DIR/roles.log"
        die "postgres: setting up the role and database failed"
    fi
    pid=$(pg_pid) || die "postgres: started but its pid file is not readable"
    log "postgres: started (pid $pid, 127.0.0.1:$PG_PORT, $("$bin/postgres" --version))"
}

pg_down() {
    local bin pid
    if ! pid=$(pg_pid); then
        log "postgres: not running"
        return 0
    fi
    bin=$(pg_bin) || die "postgres: no PostgreSQL server binaries"
    if ! pg_as "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1; then
        log "postgres: fast shutdown timed out, immediate shutdown"
        pg_as "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "postgres: stopped (pid $pid)"
}

# --- verbs ------------------------------------------------------------------------------

up() {
    [[ $(id -u) == 0 ]] || die "up must run as root (it installs packages and runs the servers as mysql/postgres)"
    [[ -n $KAFKA_VERSION ]] || die "cannot read kafka.version from $KAFKA_POM"
    local started=$SECONDS
    mkdir -p "$STACK_DIR" "$CACHE_DIR"
    chmod 755 "$STACK_DIR"
    install_missing
    kafka_start
    mariadb_up
    pg_up
    kafka_wait
    log "up in $((SECONDS - started))s (data under $STACK_DIR); connection settings: bash $HERE/stack.sh env"
}

down() {
    local purge=0
    case ${1:-} in
    "") ;;
    --purge) purge=1 ;;
    *) usage ;;
    esac
    local rc=0
    kafka_down || rc=1
    mariadb_down || rc=1
    pg_down || rc=1
    if ((purge)); then
        ((rc == 0)) || die "not purging $STACK_DIR: something did not stop"
        case $STACK_DIR in
        / | /root | /home | /var | /var/tmp | /tmp | "$HOME") die "refusing to delete $STACK_DIR" ;;
        esac
        rm -rf "$STACK_DIR"
        log "removed $STACK_DIR"
    fi
    return $rc
}

status() {
    local rc=0 pid version
    if pid=$(mariadb_pid); then
        printf '%-9s running  pid %-7s 127.0.0.1:%s\n' mariadb "$pid" "$MYSQL_PORT"
    else
        printf '%-9s stopped\n' mariadb
        rc=3
    fi
    if pid=$(kafka_pid); then
        version=$(kafka_running_version "$pid")
        printf '%-9s running  pid %-7s 127.0.0.1:%s (Apache Kafka %s, controller 127.0.0.1:%s)\n' \
            kafka "$pid" "$KAFKA_PORT" "${version:-?}" "$KAFKA_CONTROLLER_PORT"
    else
        printf '%-9s stopped\n' kafka
        rc=3
    fi
    if pid=$(pg_pid); then
        printf '%-9s running  pid %-7s 127.0.0.1:%s\n' postgres "$pid" "$PG_PORT"
    else
        printf '%-9s stopped\n' postgres
        rc=3
    fi
    printf '%-9s %s\n' data "$STACK_DIR"
    return $rc
}

env_lines() {
    local name value
    while read -r name value; do
        printf 'export %s=%q\n' "$name" "$value"
    done <<EOF
CDC_BRIDGE_STACK_DIR $STACK_DIR
CDC_BRIDGE_MYSQL_HOST 127.0.0.1
CDC_BRIDGE_MYSQL_PORT $MYSQL_PORT
CDC_BRIDGE_MYSQL_ADMIN_USER root
CDC_BRIDGE_MYSQL_ADMIN_PASSWORD $MYSQL_ADMIN_PASSWORD
CDC_BRIDGE_MYSQL_USER $MYSQL_USER
CDC_BRIDGE_MYSQL_PASSWORD $MYSQL_PASSWORD
CDC_BRIDGE_MYSQL_SOCKET $MARIADB_SOCKET
CDC_BRIDGE_KAFKA_BOOTSTRAP 127.0.0.1:$KAFKA_PORT
CDC_BRIDGE_KAFKA_LIBS $KAFKA_LIBS
CDC_BRIDGE_PG_HOST 127.0.0.1
CDC_BRIDGE_PG_PORT $PG_PORT
CDC_BRIDGE_PG_USER $PG_USER
CDC_BRIDGE_PG_PASSWORD $PG_PASSWORD
CDC_BRIDGE_PG_DATABASE $PG_DATABASE
CDC_BRIDGE_MARIADB_BIN $MARIADBD
CDC_BRIDGE_MARIADB_INSTALL_DB $MARIADB_INSTALL_DB
EOF
}

usage() {
    local rc=${1:-2}
    cat >&2 <<EOF
usage: bash tests/stack/stack.sh VERB
  up              install what is missing, start MariaDB, Kafka and PostgreSQL (idempotent)
  down [--purge]  stop what up started; --purge also deletes $STACK_DIR
  reset           down --purge
  status          per service: running (pid, address) or stopped; exit 3 unless all run
  env             export lines with the connection settings: eval "\$(bash tests/stack/stack.sh env)"
EOF
    exit "$rc"
}

case ${1:-} in
up) up ;;
down) down "${2:-}" ;;
reset) down --purge ;;
status) status ;;
env) env_lines ;;
-h | --help | help) usage 0 ;;
*) usage ;;
esac
