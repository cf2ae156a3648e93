#!/bin/bash
# Shows v2 filling: every few seconds, the rows of each PinpointCare v2 table
# (dbo, from sys.partitions) in V2_DATABASE (PinpointV2) on `sqlserver`, as sa
# (SQLCMDPASSWORD). Runs until stopped.
set -euo pipefail

: "${SQLCMDPASSWORD:?SQLCMDPASSWORD (the sa password) is not set}"
db=${V2_DATABASE:-PinpointV2}
server=${V2_SERVER:-sqlserver}
every=${V2_ROWS_EVERY_SECS:-5}

query="SET NOCOUNT ON;
SELECT CONCAT(t.name, N'=', SUM(p.rows))
FROM sys.tables AS t
JOIN sys.partitions AS p ON p.object_id = t.object_id AND p.index_id IN (0, 1)
WHERE t.schema_id = SCHEMA_ID(N'dbo')
GROUP BY t.name
ORDER BY t.name;"

while true; do
    if counts=$(/opt/mssql-tools18/bin/sqlcmd -C -b -S "$server" -U sa -d "$db" -h -1 -W -Q "$query" 2>&1); then
        printf '%s v2 rows: %s\n' "$(date -u +%H:%M:%S)" "$(printf '%s\n' "$counts" | paste -sd ' ' -)"
    else
        printf '%s v2 not readable yet: %s\n' "$(date -u +%H:%M:%S)" "$(printf '%s' "$counts" | tail -n1)"
    fi
    sleep "$every"
done
