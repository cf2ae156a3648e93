//! The initial snapshot: every selected table of every tenant database, read in
//! one consistent view, with the binlog coordinates that view corresponds to.
//!
//! # Consistency without a global lock
//! MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` and then the status
//! variables `binlog_snapshot_file` / `binlog_snapshot_position`, which the server
//! fixes at the moment the snapshot was taken; `BINLOG_GTID_POS()` turns them into
//! the GTID position. No lock is taken. MySQL 8 has no such variables: there the
//! position is read under a brief `FLUSH TABLES WITH READ LOCK` held only while
//! the snapshot transaction starts (needs RELOAD).
//!
//! # Chunks and resumption
//! Rows are read in primary-key order, a chunk at a time (`WHERE key > last ORDER
//! BY key LIMIT n`), so memory stays bounded. Each chunk is published with a
//! checkpoint naming the last key; after a crash a new consistent view is opened
//! and copying continues after that key. Streaming then starts from the *first*
//! snapshot's coordinates: changes between the two views are replayed, and the
//! sink's position guard (a snapshot row carries its view's position) keeps the
//! newer state. Tables without a primary key are read whole and restart from
//! their beginning.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params};

use super::convert;
use super::schema::{quote_ident, TableSchema};
use super::SourceError;
use crate::event::{BinlogCoordinates, GtidSet, Row, Value};

/// A consistent read view and the binlog position it corresponds to.
pub struct SnapshotView {
    pub conn: Conn,
    pub coordinates: BinlogCoordinates,
    pub gtid: Option<GtidSet>,
}

/// Opens a consistent read view on `conn`.
pub async fn open_view(mut conn: Conn, mariadb: bool) -> Result<SnapshotView, SourceError> {
    // Values come as the column's own bytes and TIMESTAMPs in UTC, so the
    // conversions match the binlog's.
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
        .await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        let status: Vec<(String, Vec<u8>)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let (Some(file), Some(pos)) = (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) else {
            return Err(SourceError::Settings {
                details: "the server reports no binlog_snapshot_file/position: is log_bin on?".into(),
            });
        };
        let pos: u64 = pos.parse().map_err(|_| SourceError::Settings {
            details: format!("binlog_snapshot_position {pos:?} is not a number"),
        })?;
        let gtid: Option<Vec<u8>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos))
            .await?;
        let gtid = gtid
            .map(|g| String::from_utf8_lossy(&g).into_owned())
            .filter(|g| !g.is_empty())
            .and_then(|g| g.parse().ok())
            .map(GtidSet::MariaDb);
        Ok(SnapshotView {
            conn,
            coordinates: BinlogCoordinates::new(file, pos),
            gtid,
        })
    } else {
        conn.query_drop("FLUSH TABLES WITH READ LOCK").await?;
        let started = conn
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await;
        // File, Position, Binlog_Do_DB, Binlog_Ignore_DB, Executed_Gtid_Set.
        type MasterStatus = (String, u64, String, String, String);
        let statement = binlog_status_statement(conn.server_version());
        let status: Result<Option<MasterStatus>, _> = conn.query_first(statement).await;
        conn.query_drop("UNLOCK TABLES").await?;
        started?;
        let Some((file, pos, _, _, gtid)) = status? else {
            return Err(SourceError::Settings {
                details: format!("{statement} is empty: is log_bin on?"),
            });
        };
        let gtid = (!gtid.trim().is_empty())
            .then(|| gtid.replace('\n', "").parse().ok().map(GtidSet::MySql))
            .flatten();
        Ok(SnapshotView {
            conn,
            coordinates: BinlogCoordinates::new(file, pos),
            gtid,
        })
    }
}

/// The statement naming MySQL's current binlog position: 8.2 renamed
/// `SHOW MASTER STATUS` to `SHOW BINARY LOG STATUS`, 8.4 removed the old name.
pub fn binlog_status_statement(version: (u16, u16, u16)) -> &'static str {
    if version >= (8, 2, 0) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    }
}

/// Reads the chunk of `table` after `after` (or from the start), at most `limit` rows.
///
/// Returns the rows and whether the table is exhausted.
pub async fn read_chunk(
    conn: &mut Conn,
    table: &TableSchema,
    after: Option<&Row>,
    limit: usize,
) -> Result<(Vec<Row>, bool), SourceError> {
    let columns = table
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let from = format!("{}.{}", quote_ident(&table.database), quote_ident(&table.table));
    if !table.has_primary_key() {
        // Read whole: there is no order to resume from.
        let rows: Vec<mysql_async::Row> = conn.exec(format!("SELECT {columns} FROM {from}"), ()).await?;
        return Ok((decode_rows(table, rows)?, true));
    }
    let order = table
        .primary_key
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let (predicate, params) = match after {
        None => (String::new(), Vec::new()),
        Some(last) => key_after(&table.primary_key, last),
    };
    let sql = format!("SELECT {columns} FROM {from}{predicate} ORDER BY {order} LIMIT {limit}");
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            sql,
            if params.is_empty() {
                Params::Empty
            } else {
                Params::Positional(params)
            },
        )
        .await?;
    let done = rows.len() < limit;
    Ok((decode_rows(table, rows)?, done))
}

fn decode_rows(table: &TableSchema, rows: Vec<mysql_async::Row>) -> Result<Vec<Row>, SourceError> {
    rows.into_iter()
        .map(|row| {
            let values = row.unwrap();
            table
                .columns
                .iter()
                .zip(values)
                .map(|(col, v)| {
                    convert::from_snapshot(col, v)
                        .map(|v| (col.name.clone(), v))
                        .map_err(|e| SourceError::Convert {
                            table: format!("{}.{}", table.database, table.table),
                            source: e,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Row)
        })
        .collect()
}

/// `WHERE (k1 > ?) OR (k1 = ? AND k2 > ?) ...`: the rows after `last` in key order,
/// written out so every server uses the key's index for it.
fn key_after(keys: &[String], last: &Row) -> (String, Vec<mysql_async::Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::new();
        for k in &keys[..i] {
            parts.push(format!("{} = ?", quote_ident(k)));
            params.push(to_param(last.get(k).unwrap_or(&Value::Null)));
        }
        parts.push(format!("{} > ?", quote_ident(&keys[i])));
        params.push(to_param(last.get(&keys[i]).unwrap_or(&Value::Null)));
        clauses.push(format!("({})", parts.join(" AND ")));
    }
    (format!(" WHERE {}", clauses.join(" OR ")), params)
}

/// A key value as a statement parameter.
pub fn to_param(v: &Value) -> mysql_async::Value {
    use mysql_async::Value as W;
    match v {
        Value::Null => W::NULL,
        Value::Int(i) => W::Int(*i),
        Value::UInt(u) => W::UInt(*u),
        Value::Float(f) => W::Float(*f),
        Value::Double(d) => W::Double(*d),
        Value::Decimal(d) => W::Bytes(d.as_str().as_bytes().to_vec()),
        Value::Date(d) => W::Bytes(d.to_string().into_bytes()),
        Value::DateTime(dt) => W::Bytes(dt.to_string().into_bytes()),
        // The snapshot session runs in UTC, so the instant is written as a UTC datetime.
        Value::Timestamp { unix_seconds, micros } => {
            let (days, secs) = (unix_seconds.div_euclid(86_400), unix_seconds.rem_euclid(86_400));
            let (y, m, d) = convert::civil_from_days(days);
            W::Bytes(
                format!(
                    "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
                    secs / 3600,
                    secs % 3600 / 60,
                    secs % 60
                )
                .into_bytes(),
            )
        }
        Value::Time(t) => W::Bytes(t.to_string().into_bytes()),
        Value::Year(y) => W::Int(i64::from(*y)),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => W::Bytes(s.as_bytes().to_vec()),
        Value::TextBytes { bytes, .. } | Value::Bytes(bytes) | Value::Geometry(bytes) => {
            W::Bytes(bytes.clone())
        }
        Value::Set(members) => W::Bytes(members.join(",").into_bytes()),
        Value::Bit { bits, .. } => W::UInt(*bits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_8_2_and_later_name_the_binlog_position_by_the_new_statement() {
        assert_eq!(binlog_status_statement((8, 0, 40)), "SHOW MASTER STATUS");
        assert_eq!(binlog_status_statement((8, 1, 0)), "SHOW MASTER STATUS");
        assert_eq!(binlog_status_statement((8, 2, 0)), "SHOW BINARY LOG STATUS");
        assert_eq!(binlog_status_statement((8, 4, 3)), "SHOW BINARY LOG STATUS");
        assert_eq!(binlog_status_statement((9, 1, 0)), "SHOW BINARY LOG STATUS");
    }

    #[test]
    fn composite_keys_resume_after_the_last_key() {
        let keys = vec!["a".to_owned(), "b".to_owned()];
        let last = Row(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Text("x".into())),
        ]);
        let (sql, params) = key_after(&keys, &last);
        assert_eq!(sql, " WHERE (`a` > ?) OR (`a` = ? AND `b` > ?)");
        assert_eq!(params.len(), 3);
    }
}
