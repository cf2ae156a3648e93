#!/usr/bin/env bash
# The main job on the local stack, end to end: loads the v1 sample
# (connectors/sample/v1-sample.sql) into MariaDB, runs `cdc-bridge source` and
# `cdc-bridge sink` (connectors/local.toml, mirror mode into PostgreSQL) in the
# background, waits until v2 holds every v1 row, changes a row and waits again,
# then prints rows per table and per-tenant lag. The processes keep syncing.
#
#   demo.sh [run]   build (release), start what is not running, wait, report
#   demo.sh stop    stop the source and sink it started (by pid file)
#
# Needs the stack: bash tests/stack/stack.sh up. Logs: $CDC_BRIDGE_STACK_DIR/demo/*.log
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
eval "$(bash "$HERE/stack.sh" env)"
RUN_DIR="$CDC_BRIDGE_STACK_DIR/demo"
CONFIG="$ROOT/connectors/local.toml"
TIMEOUT=${CDC_BRIDGE_DEMO_TIMEOUT_SECS:-600}
TENANTS=(pinpoint_alpha pinpoint_beta)
TABLES=(facilities patients assessment_answers)

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

export MYSQL_PWD=$CDC_BRIDGE_MYSQL_ADMIN_PASSWORD
export PGPASSWORD=$CDC_BRIDGE_PG_PASSWORD
v1() { mariadb --default-character-set=utf8mb4 -h "$CDC_BRIDGE_MYSQL_HOST" -P "$CDC_BRIDGE_MYSQL_PORT" -u "$CDC_BRIDGE_MYSQL_ADMIN_USER" -N -B "$@"; }
v2() { psql -h "$CDC_BRIDGE_PG_HOST" -p "$CDC_BRIDGE_PG_PORT" -U "$CDC_BRIDGE_PG_USER" -d "$CDC_BRIDGE_PG_DATABASE" -X -q -t -A "$@"; }

running() {
    local pid_file="$RUN_DIR/$1.pid" pid
    [[ -s $pid_file ]] || return 1
    pid=$(<"$pid_file")
    kill -0 "$pid" 2>/dev/null && [[ $(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) != Z ]]
}

start() {
    local what=$1 port=$2
    if running "$what"; then
        log "$what already running (pid $(<"$RUN_DIR/$what.pid"))"
        return
    fi
    "$BIN" "$what" --config "$CONFIG" --metrics-listen "127.0.0.1:$port" >>"$RUN_DIR/$what.log" 2>&1 &
    echo $! >"$RUN_DIR/$what.pid"
    log "$what started (pid $!, metrics http://127.0.0.1:$port/metrics, log $RUN_DIR/$what.log)"
}

stop() {
    local what pid
    for what in sink source; do
        running "$what" || continue
        pid=$(<"$RUN_DIR/$what.pid")
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$RUN_DIR/$what.pid"
        log "$what stopped"
    done
}

# "tenant.table v1-rows v2-rows" for every sample table.
counts() {
    local db t n1 n2
    for db in "${TENANTS[@]}"; do
        for t in "${TABLES[@]}"; do
            n1=$(v1 -e "SELECT COUNT(*) FROM \`$db\`.\`$t\`")
            n2=$(v2 -c "SELECT count(*) FROM \"$db\".\"$t\"" 2>/dev/null || echo 0)
            printf '%s.%s %s %s\n' "$db" "$t" "$n1" "$n2"
        done
    done
}

# Waits (bounded) until v2 has v1's row counts and the same patients.
wait_synced() {
    local deadline=$((SECONDS + TIMEOUT)) names1 names2
    while ((SECONDS < deadline)); do
        running source || die "the source exited; see $RUN_DIR/source.log"
        running sink || die "the sink exited; see $RUN_DIR/sink.log"
        if counts | awk '$2 != $3 { bad = 1 } END { exit bad }'; then
            names1=$(v1 -e "SELECT GROUP_CONCAT(CONCAT(id, ':', is_active, last_name) ORDER BY id) FROM pinpoint_alpha.patients")
            names2=$(v2 -c "SELECT string_agg(id || ':' || is_active || last_name, ',' ORDER BY id) FROM pinpoint_alpha.patients" 2>/dev/null || true)
            [[ $names1 == "$names2" ]] && return 0
        fi
        if ((SECONDS % 30 == 0)); then
            log "waiting for v2; source at $(grep -o 'position=[^ ]*' "$RUN_DIR/source.log" 2>/dev/null | tail -n1)"
        fi
        sleep 0.5
    done
    die "v2 did not catch up within ${TIMEOUT}s (a source resuming after a long pause reads the whole binlog written meanwhile; CDC_BRIDGE_DEMO_TIMEOUT_SECS waits longer); see $RUN_DIR/*.log"
}

report() {
    printf '\n%-36s %8s %8s\n' "TABLE (v1 → v2 mirror)" "V1 ROWS" "V2 ROWS"
    counts | awk '{ printf "%-36s %8s %8s\n", $1, $2, $3 }'
    printf '\n%-16s %-40s %10s\n' "TENANT" "APPLIED SOURCE POSITION" "DELAY (s)"
    v2 -F ' ' -c "SELECT tenant, split_part(source_position, ' ', 1),
            round(extract(epoch FROM now()) - commit_time_micros / 1e6, 1)
        FROM cdc_bridge.applied WHERE tenant IN ('pinpoint_alpha', 'pinpoint_beta') ORDER BY tenant" |
        awk '{ printf "%-16s %-40s %10s\n", $1, $2, $3 }'
    printf '\nDelay is now minus the v1 commit time of the last applied change (idle tenants grow it).\n'
}

run() {
    bash "$HERE/stack.sh" status >/dev/null || die "the stack is not running: bash tests/stack/stack.sh up"
    mkdir -p "$RUN_DIR"
    log "building (release)"
    (cd "$ROOT" && cargo build --release --locked --quiet)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cdc-bridge"
    log "loading the v1 sample into ${TENANTS[*]}"
    v1 <"$ROOT/connectors/sample/v1-sample.sql"
    start source 9464
    start sink 9465
    wait_synced
    log "v2 holds every v1 row; changing one in v1"
    v1 -e "UPDATE pinpoint_alpha.patients SET is_active = 1 - is_active WHERE id = 2"
    wait_synced
    log "synced again"
    report
    log "source and sink keep running; stop them with: bash tests/stack/demo.sh stop"
}

case ${1:-run} in
run) run ;;
stop) stop ;;
*) die "usage: demo.sh [run|stop]" ;;
esac
