#!/usr/bin/env bash
# The local stack of real servers the tests and the README's main job use:
# MariaDB 10.11 (CDC source), Apache Kafka 4.x in KRaft mode, PostgreSQL.
# Local processes on 127.0.0.1 and non-default ports, all data under one directory.
#
#   stack.sh up            install what is missing, start what is not running (idempotent)
#   stack.sh down [--purge] stop what `up` started (by pid file); --purge also deletes the data
#   stack.sh status        what runs where (exit 3 when something is not running)
#   stack.sh env           connection settings as `export` lines
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK_DIR=${CDC_BRIDGE_STACK_DIR:-/var/tmp/cdc-bridge-stack}
CACHE_DIR=${CDC_BRIDGE_CACHE_DIR:-/var/cache/cdc-bridge}

MYSQL_PORT=${CDC_BRIDGE_MYSQL_PORT:-13306}
MYSQL_ADMIN_PASSWORD=${CDC_BRIDGE_MYSQL_ADMIN_PASSWORD:-cdc-admin-local}
MYSQL_USER=${CDC_BRIDGE_MYSQL_USER:-cdc_reader}
MYSQL_PASSWORD=${CDC_BRIDGE_MYSQL_PASSWORD:-cdc-reader-local}
KAFKA_PORT=${CDC_BRIDGE_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CDC_BRIDGE_KAFKA_CONTROLLER_PORT:-19093}
PG_PORT=${CDC_BRIDGE_PG_PORT:-15432}
PG_USER=${CDC_BRIDGE_PG_USER:-cdc}
PG_PASSWORD=${CDC_BRIDGE_PG_PASSWORD:-cdc-pg-local}
PG_DATABASE=${CDC_BRIDGE_PG_DATABASE:-cdc}
START_TIMEOUT=${CDC_BRIDGE_STACK_TIMEOUT_SECS:-120}

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka-pom.xml")
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"

MARIADB_DIR="$STACK_DIR/mariadb"
KAFKA_DIR="$STACK_DIR/kafka"
PG_DIR="$STACK_DIR/postgres"

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- processes --------------------------------------------------------------

# The pid in $1 if it names a live process started from this stack's directory.
our_pid() {
    local pidfile=$1 pid
    [[ -f $pidfile ]] || return 1
    pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Ours only if its command line or working directory points into the stack directory.
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STACK_DIR"; then
        echo "$pid"
        return 0
    fi
    return 1
}

# Waits until `$2...` succeeds, at most START_TIMEOUT seconds; $1 names what.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$what did not become ready within ${START_TIMEOUT}s"
            return 1
        fi
        sleep 0.5
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_pid() {
    local name=$1 pidfile=$2 pid
    if ! pid=$(our_pid "$pidfile"); then
        rm -f "$pidfile"
        log "$name: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name: still running after 60s, killing"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
    log "$name: stopped (pid $pid)"
}

# --- installation -------------------------------------------------------------

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [[ -n $dir && -x $dir/postgres ]] && echo "$dir"
}

install_missing() {
    local need=()
    command -v mariadbd >/dev/null || need+=(mariadb-server mariadb-client)
    pg_bin >/dev/null || need+=(postgresql)
    command -v java >/dev/null || need+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || need+=(maven)
    command -v runuser >/dev/null || need+=(util-linux)
    ((${#need[@]})) || return 0
    log "installing ${need[*]}"
    [[ $(id -u) == 0 ]] || die "installing packages needs root"
    # Keep the packages from starting their default services.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    ((created)) && rm -f "$policy"
    return 0
}

# --- MariaDB ------------------------------------------------------------------

mariadb_cnf() {
    cat >"$MARIADB_DIR/my.cnf" <<EOF
[mariadbd]
user = mysql
datadir = $MARIADB_DIR/data
socket = $MARIADB_DIR/mysqld.sock
pid-file = $MARIADB_DIR/mysqld.pid
log-error = $MARIADB_DIR/error.log
tmpdir = $MARIADB_DIR/tmp
port = $MYSQL_PORT
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
max_allowed_packet = 256M
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
socket = $MARIADB_DIR/mysqld.sock
EOF
}

mariadb_sql() { mariadb --defaults-file="$MARIADB_DIR/my.cnf" --protocol=socket -uroot "$@"; }

mariadb_up() {
    if pid=$(our_pid "$MARIADB_DIR/mysqld.pid"); then
        log "mariadb: already running (pid $pid, 127.0.0.1:$MYSQL_PORT)"
        return 0
    fi
    mkdir -p "$MARIADB_DIR/data" "$MARIADB_DIR/binlog" "$MARIADB_DIR/tmp"
    mariadb_cnf
    chown -R mysql:mysql "$MARIADB_DIR"
    if [[ ! -d $MARIADB_DIR/data/mysql ]]; then
        log "mariadb: initialising $MARIADB_DIR/data"
        mariadb-install-db --defaults-file="$MARIADB_DIR/my.cnf" --auth-root-authentication-method=socket \
            --skip-test-db >"$MARIADB_DIR/install.log" 2>&1 || {
            tail -n 30 "$MARIADB_DIR/install.log" >&2
            die "mariadb-install-db failed"
        }
    fi
    rm -f "$MARIADB_DIR/mysqld.pid"
    setsid mariadbd --defaults-file="$MARIADB_DIR/my.cnf" >>"$MARIADB_DIR/stdout.log" 2>&1 </dev/null &
    if ! wait_for "mariadb" mariadb-admin --defaults-file="$MARIADB_DIR/my.cnf" --protocol=socket -uroot ping; then
        tail -n 30 "$MARIADB_DIR/error.log" >&2 || true
        die "mariadb did not start"
    fi
    mariadb_sql <<EOF
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '$MYSQL_ADMIN_PASSWORD';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$MYSQL_ADMIN_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
ALTER USER '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '$MYSQL_USER'@'%';
EOF
    log "mariadb: started (pid $(cat "$MARIADB_DIR/mysqld.pid"), 127.0.0.1:$MYSQL_PORT)"
}

# --- Kafka --------------------------------------------------------------------

kafka_libs() {
    if [[ -f $KAFKA_LIBS/.complete ]]; then
        return 0
    fi
    log "kafka: resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
    rm -rf "$KAFKA_LIBS.tmp"
    mkdir -p "$KAFKA_LIBS.tmp"
    mvn -q -B -f "$HERE/kafka-pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime >"$CACHE_DIR/mvn-kafka.log" 2>&1 || {
        tail -n 30 "$CACHE_DIR/mvn-kafka.log" >&2
        die "resolving Kafka with Maven failed"
    }
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$KAFKA_LIBS/.complete"
}

kafka_config() {
    cat >"$KAFKA_DIR/server.properties" <<EOF
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
    cat >"$KAFKA_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $KAFKA_DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
EOF
}

kafka_java() {
    java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_ready() {
    port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_DIR/server.log"
}

kafka_up() {
    if pid=$(our_pid "$KAFKA_DIR/kafka.pid"); then
        log "kafka: already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
        return 0
    fi
    kafka_libs
    mkdir -p "$KAFKA_DIR/data"
    kafka_config
    if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
        local cluster_id
        cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
        [[ -n $cluster_id ]] || die "kafka: cannot generate a cluster id"
        log "kafka: formatting $KAFKA_DIR/data (cluster $cluster_id)"
        kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
            >"$KAFKA_DIR/format.log" 2>&1 || {
            cat "$KAFKA_DIR/format.log" >&2
            die "kafka storage format failed"
        }
    fi
    : >"$KAFKA_DIR/server.log"
    (
        cd "$KAFKA_DIR"
        setsid java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
            -Dkafka.logs.dir="$KAFKA_DIR" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
            >>"$KAFKA_DIR/stdout.log" 2>&1 </dev/null &
        echo $! >"$KAFKA_DIR/kafka.pid"
    )
    if ! wait_for "kafka" kafka_ready; then
        tail -n 40 "$KAFKA_DIR/server.log" "$KAFKA_DIR/stdout.log" >&2 || true
        die "kafka did not start"
    fi
    log "kafka: started (pid $(cat "$KAFKA_DIR/kafka.pid"), 127.0.0.1:$KAFKA_PORT, Apache Kafka $KAFKA_VERSION)"
}

# --- PostgreSQL ---------------------------------------------------------------

pg_as() { runuser -u postgres -- "$@"; }

pg_up() {
    local bin
    bin=$(pg_bin) || die "no PostgreSQL server binaries found"
    mkdir -p "$PG_DIR/run"
    chown postgres:postgres "$PG_DIR" "$PG_DIR/run"
    if pid=$(our_pid "$PG_DIR/data/postmaster.pid"); then
        log "postgres: already running (pid $pid, 127.0.0.1:$PG_PORT)"
        return 0
    fi
    if [[ ! -f $PG_DIR/data/PG_VERSION ]]; then
        log "postgres: initialising $PG_DIR/data"
        pg_as "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || {
            tail -n 30 "$PG_DIR/initdb.log" >&2
            die "initdb failed"
        }
    fi
    rm -f "$PG_DIR/data/postmaster.pid"
    pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t "$START_TIMEOUT" \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR/run -c max_connections=200 -c fsync=off" \
        start >/dev/null || {
        tail -n 30 "$PG_DIR/postgres.log" >&2
        die "postgres did not start"
    }
    pg_as psql -q -h "$PG_DIR/run" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN CREATEDB;
  END IF;
END
\$\$;
ALTER ROLE "$PG_USER" WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE "$PG_DATABASE" OWNER "$PG_USER"'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DATABASE')\gexec
EOF
    log "postgres: started (pid $(head -n1 "$PG_DIR/data/postmaster.pid"), 127.0.0.1:$PG_PORT)"
}

pg_down() {
    local bin
    if ! our_pid "$PG_DIR/data/postmaster.pid" >/dev/null; then
        log "postgres: not running"
        return 0
    fi
    bin=$(pg_bin)
    pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null || true
    log "postgres: stopped"
}

# --- verbs ----------------------------------------------------------------------

up() {
    [[ -n $KAFKA_VERSION ]] || die "cannot read kafka.version from $HERE/kafka-pom.xml"
    install_missing
    mkdir -p "$STACK_DIR" "$CACHE_DIR"
    chmod 755 "$STACK_DIR"
    local started=$SECONDS
    mariadb_up
    pg_up
    kafka_up
    log "up in $((SECONDS - started))s; data under $STACK_DIR"
}

down() {
    stop_pid kafka "$KAFKA_DIR/kafka.pid"
    stop_pid mariadb "$MARIADB_DIR/mysqld.pid"
    pg_down
    if [[ ${1:-} == --purge ]]; then
        rm -rf "$STACK_DIR"
        log "removed $STACK_DIR"
    fi
}

status() {
    local rc=0 pid
    if pid=$(our_pid "$MARIADB_DIR/mysqld.pid"); then
        echo "mariadb   running  pid $pid  127.0.0.1:$MYSQL_PORT"
    else
        echo "mariadb   stopped"
        rc=3
    fi
    if pid=$(our_pid "$KAFKA_DIR/kafka.pid"); then
        echo "kafka     running  pid $pid  127.0.0.1:$KAFKA_PORT (Apache Kafka $KAFKA_VERSION)"
    else
        echo "kafka     stopped"
        rc=3
    fi
    if pid=$(our_pid "$PG_DIR/data/postmaster.pid"); then
        echo "postgres  running  pid $pid  127.0.0.1:$PG_PORT"
    else
        echo "postgres  stopped"
        rc=3
    fi
    echo "data      $STACK_DIR"
    return $rc
}

env_lines() {
    cat <<EOF
export CDC_BRIDGE_STACK_DIR='$STACK_DIR'
export CDC_BRIDGE_MYSQL_HOST='127.0.0.1'
export CDC_BRIDGE_MYSQL_PORT='$MYSQL_PORT'
export CDC_BRIDGE_MYSQL_ADMIN_USER='root'
export CDC_BRIDGE_MYSQL_ADMIN_PASSWORD='$MYSQL_ADMIN_PASSWORD'
export CDC_BRIDGE_MYSQL_USER='$MYSQL_USER'
export CDC_BRIDGE_MYSQL_PASSWORD='$MYSQL_PASSWORD'
export CDC_BRIDGE_MYSQL_SOCKET='$MARIADB_DIR/mysqld.sock'
export CDC_BRIDGE_KAFKA_BOOTSTRAP='127.0.0.1:$KAFKA_PORT'
export CDC_BRIDGE_KAFKA_LIBS='$KAFKA_LIBS'
export CDC_BRIDGE_PG_HOST='127.0.0.1'
export CDC_BRIDGE_PG_PORT='$PG_PORT'
export CDC_BRIDGE_PG_USER='$PG_USER'
export CDC_BRIDGE_PG_PASSWORD='$PG_PASSWORD'
export CDC_BRIDGE_PG_DATABASE='$PG_DATABASE'
export CDC_BRIDGE_MARIADB_BIN='$(command -v mariadbd || echo /usr/sbin/mariadbd)'
export CDC_BRIDGE_MARIADB_INSTALL_DB='$(command -v mariadb-install-db || echo /usr/bin/mariadb-install-db)'
EOF
}

case ${1:-} in
up) up ;;
down) down "${2:-}" ;;
status) status ;;
env) env_lines ;;
*)
    echo "usage: $0 up | down [--purge] | status | env" >&2
    exit 2
    ;;
esac
