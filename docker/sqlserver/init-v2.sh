#!/bin/bash
# v2 for the compose try-out, run once per `up` by the v2-init service (idempotent):
#   1. the database (V2_DATABASE, PinpointV2) and the login the sink writes with
#      (cdc_sink, password CDC_BRIDGE_MSSQL_PASSWORD, db_owner: it creates the
#      cdc_bridge schema for its offsets and row positions on first start);
#   2. the PinpointCare v2 tables, connectors/pinpoint/v2-sqlserver.sql (mounted at
#      /pinpoint), in one transaction, unless they exist already;
#   3. their foreign keys disabled (NOCHECK) for the initial sync: the snapshot
#      delivers children before parents, and SQL Server cannot defer a constraint
#      (connectors/pinpoint/README.md, "Foreign keys"); they are checked again at
#      cutover with ALTER TABLE ... WITH CHECK CHECK CONSTRAINT ALL.
# Connects as sa (SQLCMDPASSWORD) to the server `sqlserver`.
set -euo pipefail

: "${SQLCMDPASSWORD:?SQLCMDPASSWORD (the sa password) is not set}"
: "${CDC_BRIDGE_MSSQL_PASSWORD:?CDC_BRIDGE_MSSQL_PASSWORD is not set}"
db=${V2_DATABASE:-PinpointV2}
server=${V2_SERVER:-sqlserver}
schema_file=${V2_SCHEMA_FILE:-/pinpoint/v2-sqlserver.sql}

log() { printf 'v2-init: %s\n' "$*"; }
sql() { /opt/mssql-tools18/bin/sqlcmd -C -b -S "$server" -U sa "$@"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Runs the SQL on stdin in database $1, from a file: the password stays off the command line.
sql_stdin() {
    cat >"$tmp/batch.sql"
    sql -d "$1" -i "$tmp/batch.sql"
}
# T-SQL literals: N'...' with quotes doubled; [identifiers] with ] doubled.
lit() { printf "N'%s'" "${1//\'/\'\'}"; }
ident() { printf '[%s]' "${1//]/]]}"; }

[[ -r $schema_file ]] || {
    log "error: $schema_file is not readable (mount connectors/pinpoint at /pinpoint)"
    exit 1
}

sql -d master -Q "IF DB_ID($(lit "$db")) IS NULL CREATE DATABASE $(ident "$db");"
sql_stdin master <<SQL
IF SUSER_ID(N'cdc_sink') IS NULL
    CREATE LOGIN [cdc_sink] WITH PASSWORD = $(lit "$CDC_BRIDGE_MSSQL_PASSWORD"), DEFAULT_DATABASE = $(ident "$db");
ELSE
    ALTER LOGIN [cdc_sink] WITH PASSWORD = $(lit "$CDC_BRIDGE_MSSQL_PASSWORD");
SQL
sql -d "$db" -Q "
IF USER_ID(N'cdc_sink') IS NULL CREATE USER [cdc_sink] FOR LOGIN [cdc_sink];
ALTER ROLE [db_owner] ADD MEMBER [cdc_sink];"
log "database $db and login cdc_sink ready"

exists=$(sql -d "$db" -h -1 -W -Q "SET NOCOUNT ON; SELECT CASE WHEN OBJECT_ID(N'dbo.Facilities', N'U') IS NULL THEN 0 ELSE 1 END;" | tr -d '[:space:]')
if [[ $exists == 0 ]]; then
    printf 'SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n' >"$tmp/begin.sql"
    printf 'COMMIT TRANSACTION;\n' >"$tmp/commit.sql"
    sql -d "$db" -i "$tmp/begin.sql,$schema_file,$tmp/commit.sql"
    log "loaded $schema_file into $db"
else
    log "the v2 tables exist already in $db"
fi

sql -d "$db" -Q "
SET NOCOUNT ON;
DECLARE @sql nvarchar(max);
SELECT @sql = STRING_AGG(CONVERT(nvarchar(max), N'ALTER TABLE ' + QUOTENAME(SCHEMA_NAME(t.schema_id))
                  + N'.' + QUOTENAME(t.name) + N' NOCHECK CONSTRAINT ALL;'), NCHAR(10))
FROM sys.tables AS t
WHERE EXISTS (SELECT 1 FROM sys.foreign_keys AS f WHERE f.parent_object_id = t.object_id AND f.is_disabled = 0);
IF @sql IS NOT NULL EXEC sys.sp_executesql @sql;
SELECT CONCAT(N'v2-init: foreign keys disabled for the initial sync: ', COUNT(*))
FROM sys.foreign_keys WHERE is_disabled = 1;"
