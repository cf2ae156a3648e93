//! PostgreSQL target (tokio-postgres).
//!
//! A batch is one transaction: the offsets claim first (its row lock fences a
//! second sink on the same partition), then per table `COPY` (text format) into
//! a temporary stage table, `INSERT … ON CONFLICT DO UPDATE` for upserts,
//! `DELETE … USING` for deletes, and one upsert of the rows' positions into
//! `cdc_bridge.row_positions`.
//!
//! Types: BOOL→boolean, SMALLINT/INT/BIGINT as such, DECIMAL(p,s)→numeric(p,s),
//! REAL→real, DOUBLE→double precision, DATE→date, DATETIME→timestamp(6),
//! DATETIMEOFFSET→timestamptz(6), a duration (MySQL TIME)→interval,
//! text→varchar(n)/text, bytes→bytea, BIT(n)→bit(n), JSON→json (the text kept as
//! written), UUID→uuid.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::config::TargetConfig;
use crate::event::{Date, DateTime};
use crate::source::convert::civil_from_days;

use super::target::{
    Change, ColumnDef, DeferredDoc, DocRecord, OffsetClaim, RowWrite, SqlType, SqlValue, StoredRow, TableDef,
    Target, TargetError, TenantProgress, COUNT_COLUMN, ROW_KEY_COLUMN,
};

/// Quotes an identifier: `"name"`, inner quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(def: &TableDef) -> String {
    format!("{}.{}", quote(&def.schema), quote(&def.name))
}

/// The column type of a PostgreSQL `information_schema` data type.
pub fn pg_type(
    data_type: &str,
    length: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
) -> Option<SqlType> {
    let u32_of = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok());
    Some(match data_type {
        "boolean" => SqlType::Bool,
        "smallint" => SqlType::SmallInt,
        "integer" => SqlType::Int,
        "bigint" => SqlType::BigInt,
        "numeric" => SqlType::Decimal {
            precision: precision.unwrap_or(38).clamp(1, 255) as u8,
            scale: scale.unwrap_or(0).clamp(0, 255) as u8,
        },
        "real" => SqlType::Real,
        "double precision" => SqlType::Double,
        "date" => SqlType::Date,
        "timestamp without time zone" => SqlType::DateTime,
        "timestamp with time zone" => SqlType::DateTimeOffset,
        "interval" => SqlType::Duration,
        "character varying" | "character" => SqlType::Text {
            max_chars: u32_of(length),
        },
        "text" => SqlType::Text { max_chars: None },
        "bytea" => SqlType::Bytes { max_len: None },
        "bit" => SqlType::Bits {
            width: length.unwrap_or(1).clamp(1, 64) as u8,
        },
        "json" | "jsonb" => SqlType::Json,
        "uuid" => SqlType::Uuid,
        _ => return None,
    })
}

/// The PostgreSQL type of a column.
pub fn sql_type(ty: &SqlType) -> String {
    match ty {
        SqlType::Bool => "boolean".into(),
        SqlType::SmallInt => "smallint".into(),
        SqlType::Int => "integer".into(),
        SqlType::BigInt => "bigint".into(),
        SqlType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        SqlType::Real => "real".into(),
        SqlType::Double => "double precision".into(),
        SqlType::Date => "date".into(),
        SqlType::DateTime => "timestamp(6)".into(),
        SqlType::DateTimeOffset => "timestamptz(6)".into(),
        SqlType::Duration => "interval".into(),
        SqlType::Text { max_chars: Some(n) } => format!("varchar({n})"),
        SqlType::Text { max_chars: None } => "text".into(),
        SqlType::Bytes { .. } => "bytea".into(),
        SqlType::Bits { width } => format!("bit({width})"),
        SqlType::Json => "json".into(),
        SqlType::Uuid => "uuid".into(),
    }
}

const BOOKKEEPING: &str = r#"
CREATE SCHEMA IF NOT EXISTS cdc_bridge;
CREATE TABLE IF NOT EXISTS cdc_bridge.sink_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    source_position text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
CREATE TABLE IF NOT EXISTS cdc_bridge.row_positions (
    table_id text NOT NULL,
    row_key text NOT NULL,
    position bytea NOT NULL,
    deleted boolean NOT NULL,
    PRIMARY KEY (table_id, row_key)
);
CREATE TABLE IF NOT EXISTS cdc_bridge.applied (
    tenant text PRIMARY KEY,
    source_position text NOT NULL,
    position_key bytea NOT NULL,
    commit_time_micros bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cdc_bridge.doc_rows (
    entry bytea NOT NULL PRIMARY KEY,
    parent bytea,
    kind varchar(64) NOT NULL,
    tenant varchar(128) NOT NULL,
    tbl varchar(128) NOT NULL,
    row_key varchar(512) NOT NULL,
    changed_micros bigint NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS doc_rows_parent ON cdc_bridge.doc_rows (parent) WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS cdc_bridge.doc_deps (
    dep bytea NOT NULL,
    doc bytea NOT NULL,
    root_key text NOT NULL,
    PRIMARY KEY (dep, doc)
);
CREATE INDEX IF NOT EXISTS doc_deps_doc ON cdc_bridge.doc_deps (doc);
CREATE TABLE IF NOT EXISTS cdc_bridge.documents (
    doc bytea PRIMARY KEY,
    kind text NOT NULL,
    tenant text NOT NULL,
    root_key text NOT NULL,
    sha256 bytea NOT NULL,
    pages integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cdc_bridge.doc_pending (
    doc bytea PRIMARY KEY,
    kind text NOT NULL,
    tenant text NOT NULL,
    root_key text NOT NULL
);
CREATE INDEX IF NOT EXISTS doc_pending_tenant ON cdc_bridge.doc_pending (tenant);
"#;

/// `CREATE TABLE IF NOT EXISTS` for a table (keyless: with the row-key and count columns).
pub fn create_table(def: &TableDef) -> String {
    let mut cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote(&c.name),
                sql_type(&c.ty),
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    if def.is_keyless() {
        cols.push(format!("{} text PRIMARY KEY", quote(ROW_KEY_COLUMN)));
        cols.push(format!("{} bigint NOT NULL", quote(COUNT_COLUMN)));
    } else {
        let key: Vec<String> = def.key_columns().map(|c| quote(&c.name)).collect();
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n)",
        qualified(def),
        cols.join(",\n    ")
    )
}

/// The statements that apply a filled stage table to its target table.
pub fn apply_statements(def: &TableDef, stage: &str) -> Vec<String> {
    let target = qualified(def);
    let cols: Vec<String> = def.columns.iter().map(|c| quote(&c.name)).collect();
    let col_list = cols.join(", ");
    let mut out = Vec::new();
    if def.is_keyless() {
        let rk = quote(ROW_KEY_COLUMN);
        let cnt = quote(COUNT_COLUMN);
        out.push(format!(
            "INSERT INTO {target} AS t ({col_list}, {rk}, {cnt}) \
             SELECT {col_list}, _cdc_row_key, _cdc_delta FROM {stage} \
             ON CONFLICT ({rk}) DO UPDATE SET {cnt} = t.{cnt} + EXCLUDED.{cnt}"
        ));
        out.push(format!(
            "DELETE FROM {target} AS t USING {stage} AS s WHERE t.{rk} = s._cdc_row_key AND t.{cnt} <= 0"
        ));
    } else {
        let key: Vec<String> = def.key_columns().map(|c| quote(&c.name)).collect();
        let values: Vec<&ColumnDef> = def
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !def.key.contains(i))
            .map(|(_, c)| c)
            .collect();
        let updates: Vec<String> = values
            .iter()
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quote(&c.name)))
            .collect();
        // A row whose values are all unchanged is left alone (no new row
        // version), so re-applying what v2 holds — a replay — changes nothing.
        let action = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!(
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                updates.join(", "),
                values
                    .iter()
                    .map(|c| compared("t", c))
                    .collect::<Vec<_>>()
                    .join(", "),
                values
                    .iter()
                    .map(|c| compared("EXCLUDED", c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(format!(
            "INSERT INTO {target} AS t ({col_list}) SELECT {col_list} FROM {stage} WHERE NOT _cdc_deleted \
             ON CONFLICT ({}) {action}",
            key.join(", ")
        ));
        let join: Vec<String> = key.iter().map(|k| format!("t.{k} = s.{k}")).collect();
        out.push(format!(
            "DELETE FROM {target} AS t USING {stage} AS s WHERE s._cdc_deleted AND {}",
            join.join(" AND ")
        ));
    }
    out.push(format!(
        "INSERT INTO cdc_bridge.row_positions (table_id, row_key, position, deleted) \
         SELECT $1, _cdc_row_key, _cdc_position, _cdc_deleted FROM {stage} \
         ON CONFLICT (table_id, row_key) DO UPDATE SET position = EXCLUDED.position, deleted = EXCLUDED.deleted"
    ));
    out
}

/// A column as the unchanged-row check compares it: by its text where the
/// type's equality is missing (json) or coarser than the value (-0 = 0 for
/// floats, 1.5 = 1.50 for numerics), by the type's equality otherwise.
fn compared(alias: &str, c: &ColumnDef) -> String {
    let q = quote(&c.name);
    match c.ty {
        SqlType::Json | SqlType::Real | SqlType::Double | SqlType::Decimal { .. } => {
            format!("{alias}.{q}::text")
        }
        _ => format!("{alias}.{q}"),
    }
}

/// Appends `v` in COPY text format.
pub fn copy_text(out: &mut String, v: &SqlValue) {
    match v {
        SqlValue::Null => out.push_str("\\N"),
        SqlValue::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        SqlValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        SqlValue::Decimal(s) => out.push_str(s),
        SqlValue::Real(f) => {
            let _ = write!(out, "{f:?}");
        }
        SqlValue::Double(d) => {
            let _ = write!(out, "{d:?}");
        }
        SqlValue::Date(d) => {
            let _ = write!(out, "{d}");
        }
        SqlValue::DateTime(dt) => {
            let _ = write!(
                out,
                "{} {:02}:{:02}:{:02}.{:06}",
                dt.date, dt.hour, dt.minute, dt.second, dt.micros
            );
        }
        SqlValue::Instant(micros) => {
            let dt = utc_datetime(*micros);
            let _ = write!(
                out,
                "{} {:02}:{:02}:{:02}.{:06}+00",
                dt.date, dt.hour, dt.minute, dt.second, dt.micros
            );
        }
        SqlValue::Duration(micros) => {
            let sign = if *micros < 0 { "-" } else { "" };
            let m = micros.unsigned_abs();
            let secs = m / 1_000_000;
            let _ = write!(
                out,
                "{sign}{}:{:02}:{:02}.{:06}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60,
                m % 1_000_000
            );
        }
        SqlValue::Text(s) | SqlValue::Json(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
        }
        SqlValue::Bytes(b) => {
            out.reserve(3 + b.len() * 2);
            out.push_str("\\\\x");
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        SqlValue::Bits { width, bits } => {
            for i in (0..*width).rev() {
                out.push(if (bits >> i) & 1 == 1 { '1' } else { '0' });
            }
        }
        SqlValue::Uuid(u) => {
            for (i, byte) in u.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
}

/// The UTC wall-clock time of an instant.
pub fn utc_datetime(micros: i64) -> DateTime {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    DateTime {
        date: Date {
            year: y.clamp(0, 9999) as u16,
            month: m as u8,
            day: d as u8,
        },
        hour: (rem / 3600) as u8,
        minute: ((rem / 60) % 60) as u8,
        second: (rem % 60) as u8,
        micros: frac,
    }
}

/// Reads a value back from PostgreSQL's text output of a column of type `ty`
/// (with `TimeZone = UTC`, `IntervalStyle = postgres`, `bytea_output = hex`).
pub fn parse_text(ty: &SqlType, text: Option<&str>) -> Result<SqlValue, String> {
    let Some(t) = text else {
        return Ok(SqlValue::Null);
    };
    let bad = || format!("cannot read {t:?} as {ty:?}");
    Ok(match ty {
        SqlType::Bool => SqlValue::Bool(t == "t" || t == "true"),
        SqlType::SmallInt | SqlType::Int | SqlType::BigInt => SqlValue::Int(t.parse().map_err(|_| bad())?),
        SqlType::Decimal { .. } => SqlValue::Decimal(t.to_owned()),
        SqlType::Real => SqlValue::Real(t.parse().map_err(|_| bad())?),
        SqlType::Double => SqlValue::Double(t.parse().map_err(|_| bad())?),
        SqlType::Date => SqlValue::Date(t.parse().map_err(|_| bad())?),
        SqlType::DateTime => SqlValue::DateTime(t.parse().map_err(|_| bad())?),
        SqlType::DateTimeOffset => {
            let local = t.strip_suffix("+00").ok_or_else(bad)?;
            let dt: DateTime = local.parse().map_err(|_| bad())?;
            let days = crate::source::convert::days_from_civil(
                i64::from(dt.date.year),
                u32::from(dt.date.month),
                u32::from(dt.date.day),
            );
            let secs =
                days * 86_400 + i64::from(dt.hour) * 3600 + i64::from(dt.minute) * 60 + i64::from(dt.second);
            SqlValue::Instant(secs * 1_000_000 + i64::from(dt.micros))
        }
        SqlType::Duration => {
            let (negative, rest) = match t.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, t),
            };
            let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
            let mut parts = hms.split(':');
            let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok()).ok_or_else(bad);
            let (h, m, s) = (next()?, next()?, next()?);
            let micros: i64 = format!("{frac:0<6}")[..6].parse().map_err(|_| bad())?;
            let total = ((h * 60 + m) * 60 + s) * 1_000_000 + micros;
            SqlValue::Duration(if negative { -total } else { total })
        }
        SqlType::Text { .. } => SqlValue::Text(t.to_owned()),
        SqlType::Json => SqlValue::Json(t.to_owned()),
        SqlType::Bytes { .. } => {
            let hex = t.strip_prefix("\\x").ok_or_else(bad)?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
                .collect::<Result<Vec<u8>, String>>()?;
            SqlValue::Bytes(bytes)
        }
        SqlType::Bits { width } => SqlValue::Bits {
            width: *width,
            bits: u64::from_str_radix(t, 2).map_err(|_| bad())?,
        },
        SqlType::Uuid => {
            let hex: String = t.chars().filter(|c| *c != '-').collect();
            let mut out = [0u8; 16];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
            }
            SqlValue::Uuid(out)
        }
    })
}

fn classify(operation: &str, e: tokio_postgres::Error) -> TargetError {
    let retriable = match e.code() {
        None => true, // I/O: connection reset, closed, timeouts
        Some(code) => {
            let c = code.code();
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || c.starts_with("08")
                || c.starts_with("53")
        }
    };
    let detail = match e.as_db_error() {
        Some(db) => describe_db_error(db.code().code(), db.message(), db.column(), db.constraint()),
        None => e.to_string(),
    };
    TargetError {
        retriable,
        message: format!("PostgreSQL {operation}: {detail}"),
    }
}

/// A server error as the sink reports it. Data exceptions (class 22) quote the
/// offending value in their message ("invalid input syntax for type integer:
/// …"), and v1 values are patient data: for those only the code, column and
/// constraint are kept.
pub fn describe_db_error(
    code: &str,
    message: &str,
    column: Option<&str>,
    constraint: Option<&str>,
) -> String {
    if !code.starts_with("22") {
        return format!("{message} ({code})");
    }
    let mut out = format!("a value was rejected as invalid data ({code}");
    if let Some(c) = column {
        out.push_str(&format!(", column {c}"));
    }
    if let Some(c) = constraint {
        out.push_str(&format!(", constraint {c}"));
    }
    out.push_str("; the value is not shown)");
    out
}

/// The PostgreSQL target.
pub struct PostgresTarget {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    /// Stage table per table definition, created in this session.
    stages: HashMap<TableDef, String>,
    in_transaction: bool,
}

impl Drop for PostgresTarget {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Connects with the target's settings (password from its secret reference).
pub async fn connect_client(
    cfg: &TargetConfig,
) -> Result<(Client, tokio::task::JoinHandle<()>), TargetError> {
    let mut pg: tokio_postgres::Config = cfg
        .url
        .parse()
        .map_err(|e| TargetError::fatal(format!("sink target {}: url: {e}", cfg.name)))?;
    pg.password(cfg.password.expose())
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .application_name("cdc-bridge")
        .options("-c TimeZone=UTC -c IntervalStyle=postgres -c bytea_output=hex -c DateStyle=ISO");
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(cfg.connect_timeout_secs), pg.connect(NoTls))
            .await
            .map_err(|_| {
                TargetError::retriable(format!(
                    "PostgreSQL {}: no connection within {} s",
                    cfg.name, cfg.connect_timeout_secs
                ))
            })?
            .map_err(|e| classify("connect", e))?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, handle))
}

impl PostgresTarget {
    /// Every row of a table as values of its columns, for comparisons.
    pub async fn read_rows(&self, def: &TableDef) -> Result<Vec<Vec<SqlValue>>, TargetError> {
        read_rows(&self.client, def).await
    }

    async fn stage(&mut self, def: &TableDef) -> Result<String, TargetError> {
        if let Some(name) = self.stages.get(def) {
            return Ok(name.clone());
        }
        let name = format!("_cdc_stage_{}", self.stages.len());
        let mut cols = vec![
            "_cdc_row_key text".to_owned(),
            "_cdc_position bytea".to_owned(),
            "_cdc_deleted boolean".to_owned(),
            "_cdc_delta bigint".to_owned(),
        ];
        cols.extend(
            def.columns
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), sql_type(&c.ty))),
        );
        // Created outside any batch transaction so a rollback cannot remove it.
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {name} ({}) ON COMMIT DELETE ROWS",
            cols.join(", ")
        );
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| classify("create stage table", e))?;
        self.stages.insert(def.clone(), name.clone());
        Ok(name)
    }
}

/// Every row of a table, read as text and parsed back by column type.
impl PostgresTarget {
    async fn stored_rows(&mut self, by: &str, hashes: &[Vec<u8>]) -> Result<Vec<StoredRow>, TargetError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT tbl, row_key, changed_micros, data FROM cdc_bridge.doc_rows WHERE {by} = ANY($1)"
                ),
                &[&hashes],
            )
            .await
            .map_err(|e| classify("read document state", e))?;
        Ok(rows
            .iter()
            .map(|r| StoredRow {
                table: r.get(0),
                key: r.get(1),
                changed_micros: r.get(2),
                data: r.get(3),
            })
            .collect())
    }
}

pub async fn read_rows(client: &Client, def: &TableDef) -> Result<Vec<Vec<SqlValue>>, TargetError> {
    read_rows_where(client, def, None).await
}

/// The SELECT of [`read_rows_where`]: every column as text, keyless tables
/// expanded to one row per copy, and with a filter `WHERE col = $1` (the
/// parameter is the value's text, cast to the column's type).
pub fn read_rows_sql(def: &TableDef, filter: Option<&str>) -> Result<String, TargetError> {
    let cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{}::text", quote(&c.name)))
        .collect();
    let mut select = format!("SELECT {}", cols.join(", "));
    if def.is_keyless() {
        let _ = write!(
            select,
            " FROM {} CROSS JOIN LATERAL generate_series(1, {}) AS copies",
            qualified(def),
            quote(COUNT_COLUMN)
        );
    } else {
        let _ = write!(select, " FROM {}", qualified(def));
    }
    if let Some(column) = filter {
        let c =
            def.columns.iter().find(|c| c.name == column).ok_or_else(|| {
                TargetError::fatal(format!("{}: no column {column} to filter by", def.id()))
            })?;
        let _ = write!(
            select,
            " WHERE {} = CAST($1::text AS {})",
            quote(&c.name),
            sql_type(&c.ty)
        );
    }
    Ok(select)
}

/// Rows of a table, read as text and parsed back by column type, optionally
/// only those whose column equals a value.
/// Transaction-scoped advisory locks on the tenants `$1` (sorted), one statement.
pub fn lock_tenants_sql(exclusive: bool) -> &'static str {
    if exclusive {
        "SELECT count(pg_advisory_xact_lock(hashtextextended('cdc_bridge.tenant:' || t, 0))) \
         FROM unnest($1::text[]) AS t"
    } else {
        "SELECT count(pg_advisory_xact_lock_shared(hashtextextended('cdc_bridge.tenant:' || t, 0))) \
         FROM unnest($1::text[]) AS t"
    }
}

/// `$1`: the keys as text; rows: the key as text and the content's SHA-256.
pub fn content_hashes_sql(def: &TableDef, content: &str) -> Result<String, TargetError> {
    let [k] = def.key[..] else {
        return Err(TargetError::fatal(format!(
            "{}: content hashes need a single-column key",
            def.id()
        )));
    };
    let key = &def.columns[k];
    Ok(format!(
        "SELECT {k}::text, sha256({c}) FROM {t} WHERE {k} = ANY(CAST($1::text[] AS {ty}[]))",
        k = quote(&key.name),
        c = quote(content),
        t = qualified(def),
        ty = sql_type(&key.ty)
    ))
}

pub async fn read_rows_where(
    client: &Client,
    def: &TableDef,
    filter: Option<(&str, &SqlValue)>,
) -> Result<Vec<Vec<SqlValue>>, TargetError> {
    let select = read_rows_sql(def, filter.map(|(c, _)| c))?;
    let rows = match filter {
        Some((_, value)) => {
            let text = match value {
                SqlValue::Text(s) => s.clone(),
                other => {
                    let mut text = String::new();
                    copy_text(&mut text, other);
                    text
                }
            };
            client.query(&select, &[&text]).await
        }
        None => client.query(&select, &[]).await,
    }
    .map_err(|e| classify(&format!("read {}", def.id()), e))?;
    rows.iter()
        .map(|row| {
            def.columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let text: Option<&str> = row.get(i);
                    parse_text(&c.ty, text).map_err(TargetError::fatal)
                })
                .collect()
        })
        .collect()
}

impl Target for PostgresTarget {
    async fn connect(cfg: &TargetConfig) -> Result<PostgresTarget, TargetError> {
        let (client, connection) = connect_client(cfg).await?;
        Ok(PostgresTarget {
            client,
            connection,
            stages: HashMap::new(),
            in_transaction: false,
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn prepare(&mut self) -> Result<(), TargetError> {
        // Concurrent sinks may race on CREATE … IF NOT EXISTS; the loser retries.
        self.client.batch_execute(BOOKKEEPING).await.map_err(|e| {
            let mut err = classify("create the cdc_bridge tables", e);
            err.retriable = true;
            err
        })
    }

    async fn read_offsets(&mut self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT kafka_partition, next_offset FROM cdc_bridge.sink_offsets \
                 WHERE consumer_group = $1 AND topic = $2",
                &[&group, &topic],
            )
            .await
            .map_err(|e| classify("read offsets", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn ensure_table(&mut self, def: &TableDef) -> Result<TableDef, TargetError> {
        let table = def.id();
        let ddl_error = |e| {
            let mut err = classify(&format!("create table {table}"), e);
            // Another sink creating the same table at the same moment.
            err.retriable = true;
            err
        };
        self.client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\n{}",
                quote(&def.schema),
                create_table(def)
            ))
            .await
            .map_err(ddl_error)?;
        let existing: Vec<String> = self
            .client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2",
                &[&def.schema, &def.name],
            )
            .await
            .map_err(|e| classify("read columns", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for c in &def.columns {
            if !existing.contains(&c.name) {
                tracing::info!(table = %table, column = %c.name, "adding column");
                self.client
                    .batch_execute(&format!(
                        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                        qualified(def),
                        quote(&c.name),
                        sql_type(&c.ty)
                    ))
                    .await
                    .map_err(|e| classify(&format!("add column to {table}"), e))?;
            }
        }
        self.stage(def).await?;
        Ok(def.clone())
    }

    async fn describe_table(&mut self, schema: &str, table: &str) -> Result<Option<TableDef>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text, data_type::text, character_maximum_length, \
                 numeric_precision, numeric_scale, is_nullable = 'YES' \
                 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
                 ORDER BY ordinal_position",
                &[&schema, &table],
            )
            .await
            .map_err(|e| classify("describe table", e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: String = r.get(0);
            let data_type: String = r.get(1);
            let length: Option<i32> = r.get(2);
            let precision: Option<i32> = r.get(3);
            let scale: Option<i32> = r.get(4);
            let ty = pg_type(&data_type, length, precision, scale).ok_or_else(|| {
                TargetError::fatal(format!(
                    "PostgreSQL {schema}.{table}.{name}: type {data_type} is not supported"
                ))
            })?;
            columns.push(super::target::ColumnDef {
                name,
                ty,
                nullable: r.get(5),
            });
        }
        let key_rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey, a.attnum)",
                &[&schema, &table],
            )
            .await
            .map_err(|e| classify("describe table key", e))?;
        let key = key_rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                columns.iter().position(|c| c.name == name)
            })
            .collect();
        Ok(Some(TableDef {
            scope: String::new(),
            schema: schema.to_owned(),
            name: table.to_owned(),
            columns,
            key,
        }))
    }

    async fn rename_column(
        &mut self,
        schema: &str,
        table: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, TargetError> {
        let existing: Vec<String> = self
            .client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| classify("read columns", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !existing.iter().any(|c| c == from) || existing.iter().any(|c| c == to) {
            return Ok(false);
        }
        self.client
            .batch_execute(&format!(
                "ALTER TABLE {}.{} RENAME COLUMN {} TO {}",
                quote(schema),
                quote(table),
                quote(from),
                quote(to)
            ))
            .await
            .map_err(|e| classify(&format!("rename column of {schema}.{table}"), e))?;
        Ok(true)
    }

    async fn begin(&mut self) -> Result<(), TargetError> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| classify("begin", e))?;
        self.in_transaction = true;
        Ok(())
    }

    async fn claim_offsets(
        &mut self,
        group: &str,
        topic: &str,
        claims: &[OffsetClaim],
    ) -> Result<bool, TargetError> {
        for c in claims {
            let n = match c.expected {
                Some(expected) => self
                    .client
                    .execute(
                        "UPDATE cdc_bridge.sink_offsets SET next_offset = $4, source_position = $5, \
                         updated_at = now() WHERE consumer_group = $1 AND topic = $2 \
                         AND kafka_partition = $3 AND next_offset = $6",
                        &[
                            &group,
                            &topic,
                            &c.partition,
                            &c.next,
                            &c.source_position,
                            &expected,
                        ],
                    )
                    .await
                    .map_err(|e| classify("claim offsets", e))?,
                None => self
                    .client
                    .execute(
                        "INSERT INTO cdc_bridge.sink_offsets \
                         (consumer_group, topic, kafka_partition, next_offset, source_position) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &[&group, &topic, &c.partition, &c.next, &c.source_position],
                    )
                    .await
                    .map_err(|e| classify("claim offsets", e))?,
            };
            if n != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn lock_tenants(&mut self, tenants: &[&str], exclusive: bool) -> Result<(), TargetError> {
        if tenants.is_empty() {
            return Ok(());
        }
        self.client
            .execute(lock_tenants_sql(exclusive), &[&tenants])
            .await
            .map_err(|e| classify(&format!("lock {} tenant(s)", tenants.len()), e))?;
        Ok(())
    }

    async fn stored_positions(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, TargetError> {
        let rows = self
            .client
            .query(
                // Locked: a replay beside the live sink waits instead of
                // both writing past the guard.
                "SELECT row_key, position FROM cdc_bridge.row_positions \
                 WHERE table_id = $1 AND row_key = ANY($2) FOR UPDATE",
                &[&table.id(), &row_keys],
            )
            .await
            .map_err(|e| classify(&format!("read row positions of {}", table.id()), e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn deleted_rows(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<std::collections::HashSet<String>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT row_key FROM cdc_bridge.row_positions \
                 WHERE table_id = $1 AND row_key = ANY($2) AND deleted",
                &[&table.id(), &row_keys],
            )
            .await
            .map_err(|e| classify(&format!("read tombstones of {}", table.id()), e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn write(&mut self, def: &TableDef, writes: &[RowWrite]) -> Result<(), TargetError> {
        if writes.is_empty() {
            return Ok(());
        }
        let table = def.id();
        // Stage tables are created by `ensure_table`, outside any batch
        // transaction: created inside one, a rollback would remove them.
        let stage =
            self.stages.get(def).cloned().ok_or_else(|| {
                TargetError::fatal(format!("table {table} was written before it was ensured"))
            })?;
        self.client
            .batch_execute(&format!("TRUNCATE {stage}"))
            .await
            .map_err(|e| classify(&format!("clear stage of {table}"), e))?;
        let mut cols = vec![
            "_cdc_row_key".to_owned(),
            "_cdc_position".to_owned(),
            "_cdc_deleted".to_owned(),
            "_cdc_delta".to_owned(),
        ];
        cols.extend(def.columns.iter().map(|c| quote(&c.name)));
        let copy = format!("COPY {stage} ({}) FROM STDIN", cols.join(", "));
        let sink = self
            .client
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(|e| classify(&format!("stage rows of {table}"), e))?;
        futures::pin_mut!(sink);
        let mut buf = String::with_capacity(64 * 1024);
        let nulls: Vec<SqlValue> = vec![SqlValue::Null; def.columns.len()];
        for w in writes {
            copy_text(&mut buf, &SqlValue::Text(w.row_key.clone()));
            buf.push('\t');
            copy_text(&mut buf, &SqlValue::Bytes(w.position.clone()));
            buf.push('\t');
            let (deleted, delta, values): (bool, i64, Vec<&SqlValue>) = match &w.change {
                Change::Upsert(values) => (false, 0, values.iter().collect()),
                Change::Delete(key) => {
                    let mut v: Vec<&SqlValue> = nulls.iter().collect();
                    for (slot, value) in def.key.iter().zip(key) {
                        v[*slot] = value;
                    }
                    (true, 0, v)
                }
                Change::Count { values, delta } => (false, *delta, values.iter().collect()),
            };
            buf.push(if deleted { 't' } else { 'f' });
            let _ = write!(buf, "\t{delta}");
            for v in values {
                buf.push('\t');
                copy_text(&mut buf, v);
            }
            buf.push('\n');
            if buf.len() >= 1 << 20 {
                sink.send(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .map_err(|e| classify(&format!("stage rows of {table}"), e))?;
            }
        }
        if !buf.is_empty() {
            sink.send(Bytes::from(buf))
                .await
                .map_err(|e| classify(&format!("stage rows of {table}"), e))?;
        }
        sink.finish()
            .await
            .map_err(|e| classify(&format!("stage rows of {table}"), e))?;
        let statements = apply_statements(def, &stage);
        let last = statements.len() - 1;
        for (i, sql) in statements.iter().enumerate() {
            let result = if i == last {
                self.client.execute(sql.as_str(), &[&table]).await
            } else {
                self.client.execute(sql.as_str(), &[]).await
            };
            result.map_err(|e| classify(&format!("apply rows to {table}"), e))?;
        }
        Ok(())
    }

    async fn record_progress(&mut self, progress: &[TenantProgress]) -> Result<(), TargetError> {
        for p in progress {
            self.client
                .execute(
                    "INSERT INTO cdc_bridge.applied AS a \
                     (tenant, source_position, position_key, commit_time_micros, applied_at) \
                     VALUES ($1, $2, $3, $4, now()) ON CONFLICT (tenant) DO UPDATE SET \
                     source_position = EXCLUDED.source_position, position_key = EXCLUDED.position_key, \
                     commit_time_micros = EXCLUDED.commit_time_micros, applied_at = now() \
                     WHERE a.position_key <= EXCLUDED.position_key",
                    &[
                        &p.tenant,
                        &p.source_position,
                        &p.position_key,
                        &p.commit_time_micros,
                    ],
                )
                .await
                .map_err(|e| classify("record progress", e))?;
        }
        Ok(())
    }

    async fn read_applied(&mut self) -> Result<Vec<(TenantProgress, f64)>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT tenant, source_position, position_key, commit_time_micros, \
                 extract(epoch FROM now() - applied_at)::float8 FROM cdc_bridge.applied ORDER BY tenant",
                &[],
            )
            .await
            .map_err(|e| classify("read applied progress", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    TenantProgress {
                        tenant: r.get(0),
                        source_position: r.get(1),
                        position_key: r.get(2),
                        commit_time_micros: r.get(3),
                    },
                    r.get(4),
                )
            })
            .collect())
    }

    async fn doc_rows(&mut self, entries: &[Vec<u8>]) -> Result<Vec<StoredRow>, TargetError> {
        self.stored_rows("entry", entries).await
    }

    async fn doc_children(&mut self, parents: &[Vec<u8>]) -> Result<Vec<StoredRow>, TargetError> {
        self.stored_rows("parent", parents).await
    }

    async fn doc_dependents(&mut self, deps: &[Vec<u8>]) -> Result<Vec<String>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT DISTINCT root_key FROM cdc_bridge.doc_deps WHERE dep = ANY($1)",
                &[&deps],
            )
            .await
            .map_err(|e| classify("read document dependencies", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn doc_hashes(&mut self, docs: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Vec<u8>>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT doc, sha256 FROM cdc_bridge.documents WHERE doc = ANY($1)",
                &[&docs],
            )
            .await
            .map_err(|e| classify("read document hashes", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn record_documents(&mut self, docs: &[DocRecord]) -> Result<(), TargetError> {
        if docs.is_empty() {
            return Ok(());
        }
        let err = |e| classify("record documents", e);
        let ids: Vec<&[u8]> = docs.iter().map(|d| d.id.as_slice()).collect();
        self.client
            .execute("DELETE FROM cdc_bridge.doc_deps WHERE doc = ANY($1)", &[&ids])
            .await
            .map_err(err)?;
        let (mut dep, mut doc, mut root): (Vec<&[u8]>, Vec<&[u8]>, Vec<&str>) = Default::default();
        for d in docs {
            for x in &d.deps {
                dep.push(x);
                doc.push(&d.id);
                root.push(&d.root_key);
            }
        }
        if !dep.is_empty() {
            self.client
                .execute(
                    "INSERT INTO cdc_bridge.doc_deps (dep, doc, root_key)                      SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[]) ON CONFLICT DO NOTHING",
                    &[&dep, &doc, &root],
                )
                .await
                .map_err(err)?;
        }
        let gone: Vec<&[u8]> = docs
            .iter()
            .filter(|d| d.sha256.is_none())
            .map(|d| d.id.as_slice())
            .collect();
        if !gone.is_empty() {
            self.client
                .execute("DELETE FROM cdc_bridge.documents WHERE doc = ANY($1)", &[&gone])
                .await
                .map_err(err)?;
        }
        let kept: Vec<&DocRecord> = docs.iter().filter(|d| d.sha256.is_some()).collect();
        if !kept.is_empty() {
            let id: Vec<&[u8]> = kept.iter().map(|d| d.id.as_slice()).collect();
            let kind: Vec<&str> = kept.iter().map(|d| d.kind.as_str()).collect();
            let tenant: Vec<&str> = kept.iter().map(|d| d.tenant.as_str()).collect();
            let root: Vec<&str> = kept.iter().map(|d| d.root_key.as_str()).collect();
            let sha: Vec<&[u8]> = kept.iter().filter_map(|d| d.sha256.as_deref()).collect();
            let pages: Vec<i32> = kept.iter().map(|d| d.pages).collect();
            self.client
                .execute(
                    "INSERT INTO cdc_bridge.documents AS d (doc, kind, tenant, root_key, sha256, pages)                      SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::bytea[],                      $6::int4[]) ON CONFLICT (doc) DO UPDATE SET sha256 = EXCLUDED.sha256,                      pages = EXCLUDED.pages, updated_at = now() WHERE d.sha256 <> EXCLUDED.sha256",
                    &[&id, &kind, &tenant, &root, &sha, &pages],
                )
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), TargetError> {
        self.in_transaction = false;
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| classify("commit", e))
    }

    async fn read_table(
        &mut self,
        table: &TableDef,
        filter: Option<(&str, &SqlValue)>,
    ) -> Result<Vec<Vec<SqlValue>>, TargetError> {
        read_rows_where(&self.client, table, filter).await
    }

    async fn defer_documents(&mut self, docs: &[DeferredDoc]) -> Result<(), TargetError> {
        if docs.is_empty() {
            return Ok(());
        }
        let id: Vec<&[u8]> = docs.iter().map(|d| d.id.as_slice()).collect();
        let kind: Vec<&str> = docs.iter().map(|d| d.kind.as_str()).collect();
        let tenant: Vec<&str> = docs.iter().map(|d| d.tenant.as_str()).collect();
        let root: Vec<&str> = docs.iter().map(|d| d.root_key.as_str()).collect();
        self.client
            .execute(
                "INSERT INTO cdc_bridge.doc_pending (doc, kind, tenant, root_key) \
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[]) ON CONFLICT (doc) DO NOTHING",
                &[&id, &kind, &tenant, &root],
            )
            .await
            .map_err(|e| classify("defer documents", e))?;
        Ok(())
    }

    async fn take_deferred(
        &mut self,
        tenants: &[&str],
        limit: usize,
    ) -> Result<Vec<DeferredDoc>, TargetError> {
        if tenants.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "DELETE FROM cdc_bridge.doc_pending WHERE doc IN \
                 (SELECT doc FROM cdc_bridge.doc_pending WHERE tenant = ANY($1) LIMIT $2 FOR UPDATE) \
                 RETURNING doc, kind, tenant, root_key",
                &[&tenants, &limit],
            )
            .await
            .map_err(|e| classify("take deferred documents", e))?;
        Ok(rows
            .iter()
            .map(|r| DeferredDoc {
                id: r.get(0),
                kind: r.get(1),
                tenant: r.get(2),
                root_key: r.get(3),
            })
            .collect())
    }

    async fn deferred_counts(&mut self) -> Result<HashMap<String, u64>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT tenant, count(*) FROM cdc_bridge.doc_pending GROUP BY tenant",
                &[],
            )
            .await
            .map_err(|e| classify("count deferred documents", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    async fn content_hashes(
        &mut self,
        table: &TableDef,
        content: &str,
        ids: &[SqlValue],
    ) -> Result<Vec<Option<Vec<u8>>>, TargetError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<String> = ids
            .iter()
            .map(|id| {
                let mut text = String::new();
                copy_text(&mut text, id);
                text
            })
            .collect();
        let rows = self
            .client
            .query(&content_hashes_sql(table, content)?, &[&texts])
            .await
            .map_err(|e| classify(&format!("read content hashes of {}", table.id()), e))?;
        let found: HashMap<String, Option<Vec<u8>>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(texts.iter().map(|t| found.get(t).cloned().flatten()).collect())
    }

    async fn rollback(&mut self) {
        if self.in_transaction {
            self.in_transaction = false;
            if let Err(e) = self.client.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %e, "PostgreSQL rollback failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(keyless: bool) -> TableDef {
        TableDef {
            scope: String::new(),
            schema: "cust\"a".into(),
            name: "patients".into(),
            columns: vec![
                ColumnDef {
                    name: "id".into(),
                    ty: SqlType::BigInt,
                    nullable: false,
                },
                ColumnDef {
                    name: "name".into(),
                    ty: SqlType::Text { max_chars: Some(40) },
                    nullable: true,
                },
            ],
            key: if keyless { vec![] } else { vec![0] },
        }
    }

    #[test]
    fn content_hashes_seek_the_key_by_its_type() {
        assert_eq!(
            content_hashes_sql(&def(false), "name").unwrap(),
            "SELECT \"id\"::text, sha256(\"name\") FROM \"cust\"\"a\".\"patients\" \
             WHERE \"id\" = ANY(CAST($1::text[] AS bigint[]))"
        );
        assert!(content_hashes_sql(&def(true), "name").is_err());
    }

    #[test]
    fn data_errors_never_quote_the_value() {
        let text = describe_db_error(
            "22P02",
            "invalid input syntax for type integer: \"Zoë Müller\"",
            Some("age"),
            None,
        );
        assert!(!text.contains("Zoë"), "{text}");
        assert!(text.contains("22P02") && text.contains("column age"), "{text}");
        let other = describe_db_error("40P01", "deadlock detected", None, None);
        assert_eq!(other, "deadlock detected (40P01)");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(qualified(&def(false)), "\"cust\"\"a\".\"patients\"");
    }

    #[test]
    fn create_table_has_the_key_or_the_multiset_columns() {
        let keyed = create_table(&def(false));
        assert!(keyed.contains("\"id\" bigint NOT NULL"), "{keyed}");
        assert!(keyed.contains("PRIMARY KEY (\"id\")"), "{keyed}");
        let keyless = create_table(&def(true));
        assert!(keyless.contains("\"_cdc_row_key\" text PRIMARY KEY"), "{keyless}");
        assert!(keyless.contains("\"_cdc_count\" bigint NOT NULL"), "{keyless}");
    }

    #[test]
    fn upserts_update_only_non_key_columns_and_only_changed_rows() {
        let s = apply_statements(&def(false), "_cdc_stage_0");
        assert_eq!(
            s[0],
            "INSERT INTO \"cust\"\"a\".\"patients\" AS t (\"id\", \"name\") SELECT \"id\", \"name\" \
             FROM _cdc_stage_0 WHERE NOT _cdc_deleted ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\" \
             WHERE (t.\"name\") IS DISTINCT FROM (EXCLUDED.\"name\")"
        );
        assert!(s[1].starts_with("DELETE FROM"), "{}", s[1]);
        assert!(s[2].contains("cdc_bridge.row_positions"), "{}", s[2]);
        let k = apply_statements(&def(true), "_cdc_stage_0");
        assert!(
            k[0].contains("\"_cdc_count\" = t.\"_cdc_count\" + EXCLUDED.\"_cdc_count\""),
            "{}",
            k[0]
        );
    }

    #[test]
    fn the_unchanged_row_check_compares_exact_text_where_equality_is_coarse() {
        let mut d = def(false);
        for (name, ty) in [
            ("doc", SqlType::Json),
            ("ratio", SqlType::Double),
            (
                "amount",
                SqlType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            ("born", SqlType::Date),
        ] {
            d.columns.push(ColumnDef {
                name: name.into(),
                ty,
                nullable: true,
            });
        }
        let s = apply_statements(&d, "_cdc_stage_0");
        assert!(
            s[0].ends_with(
                "WHERE (t.\"name\", t.\"doc\"::text, t.\"ratio\"::text, t.\"amount\"::text, t.\"born\") \
                 IS DISTINCT FROM (EXCLUDED.\"name\", EXCLUDED.\"doc\"::text, EXCLUDED.\"ratio\"::text, \
                 EXCLUDED.\"amount\"::text, EXCLUDED.\"born\")"
            ),
            "{}",
            s[0]
        );
        // A key-only table has nothing to compare.
        d.columns.truncate(1);
        assert!(apply_statements(&d, "_cdc_stage_0")[0].ends_with("ON CONFLICT (\"id\") DO NOTHING"));
    }

    #[test]
    fn copy_text_escapes_and_round_trips_through_the_reader() {
        let cases = [
            (
                SqlType::Text { max_chars: None },
                SqlValue::Text("a\tb\\c\nd".into()),
                "a\\tb\\\\c\\nd",
            ),
            (
                SqlType::Bytes { max_len: None },
                SqlValue::Bytes(vec![0, 255]),
                "\\\\x00ff",
            ),
            (
                SqlType::Bits { width: 5 },
                SqlValue::Bits { width: 5, bits: 5 },
                "00101",
            ),
            (
                SqlType::Duration,
                SqlValue::Duration(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 1),
                "-838:59:59.000001",
            ),
            (
                SqlType::DateTimeOffset,
                SqlValue::Instant(-1),
                "1969-12-31 23:59:59.999999+00",
            ),
        ];
        for (_, v, text) in &cases {
            let mut out = String::new();
            copy_text(&mut out, v);
            assert_eq!(&out, text);
        }
        assert_eq!(
            parse_text(&SqlType::Duration, Some("-838:59:59.000001")),
            Ok(SqlValue::Duration(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 1))
        );
        assert_eq!(
            parse_text(&SqlType::DateTimeOffset, Some("1969-12-31 23:59:59.999999+00")),
            Ok(SqlValue::Instant(-1))
        );
        assert_eq!(
            parse_text(&SqlType::Bytes { max_len: None }, Some("\\x00ff")),
            Ok(SqlValue::Bytes(vec![0, 255]))
        );
        assert_eq!(
            parse_text(&SqlType::Uuid, Some("123e4567-e89b-12d3-a456-426614174000")).map(|v| {
                let mut s = String::new();
                copy_text(&mut s, &v);
                s
            }),
            Ok("123e4567-e89b-12d3-a456-426614174000".to_owned())
        );
    }
}
