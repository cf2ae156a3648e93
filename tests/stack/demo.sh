#!/usr/bin/env bash
# The main job on the local stack, end to end (connectors/demo.toml):
#   1. generates three PinpointCare v1 tenants (demo_pp_01..03) in MariaDB,
#   2. creates the v2 schema (connectors/pinpoint/v2-postgres.sql) in PostgreSQL,
#      its foreign keys dropped for the initial sync,
#   3. starts `cdc-bridge source` and `cdc-bridge sink` (release build, mapping mode,
#      documents on),
#   4. shows `cdc-bridge status` until every tenant is caught up,
#   5. prints v2 row counts, writes one regenerated PDF to a file, names the
#      metrics URLs,
#   6. runs a light v1 workload, showing status as lag moves, until Ctrl-C, which
#      stops everything it started.
#
#   demo.sh [run]   the above (a second run reuses the tenants and resumes)
#   demo.sh stop    stop a source and sink left running (by pid file)
#
# Needs the stack: bash tests/stack/stack.sh up. Logs: $CDC_BRIDGE_STACK_DIR/demo/*.log
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
eval "$(bash "$HERE/stack.sh" env)"
RUN_DIR="$CDC_BRIDGE_STACK_DIR/demo"
CONFIG="$ROOT/connectors/demo.toml"
TIMEOUT=${CDC_BRIDGE_DEMO_TIMEOUT_SECS:-900}
PREFIX=demo_pp_
SCALE=${CDC_BRIDGE_DEMO_SCALE:-60}

log() { printf 'demo: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

export MYSQL_PWD=$CDC_BRIDGE_MYSQL_ADMIN_PASSWORD
export PGPASSWORD=$CDC_BRIDGE_PG_PASSWORD
export CDC_BRIDGE_GENERATE_URL="mysql://$CDC_BRIDGE_MYSQL_ADMIN_USER:$CDC_BRIDGE_MYSQL_ADMIN_PASSWORD@$CDC_BRIDGE_MYSQL_HOST:$CDC_BRIDGE_MYSQL_PORT"
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
    # A session of its own: Ctrl-C reaches the demo, which stops it with SIGTERM.
    (cd "$ROOT" && exec setsid "$BIN" "$what" --config "$CONFIG" --metrics-listen "127.0.0.1:$port" >>"$RUN_DIR/$what.log" 2>&1) &
    echo $! >"$RUN_DIR/$what.pid"
    log "$what started (pid $!, log $RUN_DIR/$what.log)"
}

stop_one() {
    local what=$1 pid
    running "$what" || return 0
    pid=$(<"$RUN_DIR/$what.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 400); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$RUN_DIR/$what.pid"
    log "$what stopped"
}

stop() {
    stop_one workload
    stop_one sink
    stop_one source
}

status_json() { (cd "$ROOT" && "$BIN" status --config "$CONFIG" --json 2>>"$RUN_DIR/status.log"); }
status_table() { (cd "$ROOT" && "$BIN" status --config "$CONFIG" 2>>"$RUN_DIR/status.log") || true; }

# Exits 0 when every demo tenant is caught up.
all_caught_up() {
    status_json | python3 -c '
import json, sys
s = json.load(sys.stdin)
ts = [t for t in s["tenants"] if t["tenant"].startswith(sys.argv[1])]
sys.exit(0 if len(ts) == int(sys.argv[2]) and all(t["state"] == "caught up" for t in ts) else 1)
' "$PREFIX" 3 2>/dev/null
}

v2_schema() {
    if [[ $(v2 -c "SELECT to_regclass('v2.\"LegacyDocuments\"') IS NOT NULL") == t ]]; then
        return
    fi
    log "creating the v2 schema (connectors/pinpoint/v2-postgres.sql), foreign keys dropped for the initial sync"
    v2 -f "$ROOT/connectors/pinpoint/v2-postgres.sql" >/dev/null
    v2 -c "DO \$\$ DECLARE r record; BEGIN
             FOR r IN SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint
                      WHERE contype = 'f' AND connamespace = 'v2'::regnamespace LOOP
               EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
             END LOOP;
           END \$\$;" >/dev/null
}

report() {
    printf '\n%-28s %10s\n' "V2 TABLE" "ROWS"
    local t
    for t in Facilities Clinicians Patients PatientContacts CarePlans CarePlanGoals CarePlanInterventions \
        AssessmentTemplates AssessmentQuestions Assessments AssessmentAnswers Notes LegacyDocuments; do
        printf '%-28s %10s\n' "v2.$t" "$(v2 -c "SELECT count(*) FROM v2.\"$t\" WHERE \"TenantId\" LIKE '${PREFIX}%'")"
    done
    local pdf="$RUN_DIR/assessment.pdf"
    v2 -c "SELECT encode(\"Content\", 'base64') FROM v2.\"LegacyDocuments\"
           WHERE \"TenantId\" LIKE '${PREFIX}%' ORDER BY \"PageCount\" DESC, \"Id\" LIMIT 1" | base64 -d >"$pdf"
    printf '\nOne regenerated assessment: %s (%s bytes)\n' "$pdf" "$(stat -c %s "$pdf")"
    printf 'Metrics: http://127.0.0.1:9464/metrics (source), http://127.0.0.1:9465/metrics (sink); /healthz, /readyz beside them\n'
    printf 'Status any time: %s status --config connectors/demo.toml\n\n' "$BIN"
}

run() {
    bash "$HERE/stack.sh" status >/dev/null || die "the stack is not running: bash tests/stack/stack.sh up"
    mkdir -p "$RUN_DIR"
    log "building (release)"
    (cd "$ROOT" && cargo build --release --locked --quiet)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cdc-bridge"
    if [[ -z $(v1 -e "SHOW DATABASES LIKE '${PREFIX}%'") ]]; then
        log "generating three PinpointCare v1 tenants (${PREFIX}01..03, scale $SCALE)"
        (cd "$ROOT" && "$BIN" generate --config "$CONFIG" --tenants 3 --scale "$SCALE" --seed 7 --prefix "$PREFIX")
    else
        log "reusing the v1 tenants ${PREFIX}01..03"
    fi
    v2_schema
    trap 'echo; stop; exit 0' INT TERM
    start source 9464
    start sink 9465
    local deadline=$((SECONDS + TIMEOUT)) shown=0
    until all_caught_up; do
        running source || die "the source exited; see $RUN_DIR/source.log"
        running sink || die "the sink exited; see $RUN_DIR/sink.log"
        ((SECONDS < deadline)) || die "not caught up within ${TIMEOUT}s; see $RUN_DIR/*.log"
        if ((SECONDS - shown >= 5)); then
            status_table
            shown=$SECONDS
        fi
        sleep 1
    done
    log "every tenant is caught up"
    status_table
    report
    log "running a light v1 workload (5 statements/s); Ctrl-C stops it, the sink and the source"
    (cd "$ROOT" && exec setsid "$BIN" generate --config "$CONFIG" --prefix "$PREFIX" --tenants 3 --workload-only \
        --workload-rate 5 --workload-secs 0 >>"$RUN_DIR/workload.log" 2>&1) &
    echo $! >"$RUN_DIR/workload.pid"
    while true; do
        sleep 5
        running source || die "the source exited; see $RUN_DIR/source.log"
        running sink || die "the sink exited; see $RUN_DIR/sink.log"
        status_table
    done
}

case ${1:-run} in
run) run ;;
stop)
    stop
    ;;
*) die "usage: demo.sh [run|stop]" ;;
esac
