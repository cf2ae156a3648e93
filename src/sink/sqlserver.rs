//! The SQL Server target (through tiberius): tables, staging, set-based apply,
//! and the bookkeeping that makes a batch one transaction with its offsets.
//!
//! # Staging
//! Each [`Target::write`] creates a session temp table `#stage_<n>` (operation,
//! row hash, row key, position, count delta, then the table's columns under the
//! positional names `c0, c1, …`, so no v1 column name can collide with a stage
//! column), fills it with multi-row parameterized `INSERT … VALUES` statements
//! chunked to stay under SQL Server's 2,100 parameters per request (we stop at
//! [`MAX_PARAMS`]) and 1,000 rows per `VALUES`, then applies it set-based in one
//! batch: `MERGE … WITH (HOLDLOCK)` for upserts, `DELETE … JOIN` for deletes, a
//! count `MERGE` plus a `DELETE` of rows whose count fell to 0 for keyless tables,
//! and a `MERGE` into `cdc_bridge.row_positions`; the batch ends by dropping the
//! stage. The stage is created by a plain SQL batch, not through
//! `sp_executesql`, because a temp table created inside a procedure call is gone
//! when the call returns.
//!
//! Rows are not bulk-loaded: tiberius' bulk load (`bulk_insert_columns`) fails on
//! large NVARCHAR values (prisma/tiberius#322) and on DATETIME columns
//! (prisma/tiberius#307), and our values include both. A table-valued parameter
//! (`tiberius::Command` with a `TableValue`) or a fixed bulk load would be the
//! faster path once those work; the statements after the stage would not change.
//!
//! # Types
//! [`column_type_sql`] maps each [`SqlType`] so that every v1 value is kept
//! exactly; the exceptions to the obvious mapping are documented there
//! (decimals beyond 38 digits as text, durations as signed microseconds, bit
//! strings as big-endian bytes, text lengths in UTF-16 code units). Values are
//! bound as typed parameters ([`bind_value`]), never spliced into SQL.
//!
//! # Row identity and positions
//! A row key can be long (a composite key's canonical text), longer than an
//! index key may be, so rows are identified by the SHA-256 of the key's UTF-8
//! text ([`row_hash`]): `row_positions` is keyed by `(table_id, row_hash)` and
//! keeps the key text beside it for operators; a keyless table's `_cdc_row_key`
//! column holds the same hash. Positions are stored as given and compared by the
//! sink (in Rust), so SQL Server's comparison rules for VARBINARY never matter.
//! [`Target::stored_positions`] reads them with `UPDLOCK, HOLDLOCK`, so a replay
//! running beside the live sink waits instead of both writing past the guard.
//!
//! # Transactions and errors
//! A batch is `BEGIN TRANSACTION … COMMIT` on a session with `XACT_ABORT ON`, so
//! any error rolls the whole batch back on the server. The offset claim checks
//! every partition under `UPDLOCK, HOLDLOCK` before changing any. An error whose
//! retry can succeed (I/O, a broken connection, deadlock victim, lock timeout,
//! snapshot conflicts, Azure's transient codes) is retriable, everything else is
//! fatal; a broken connection is dropped and reopened at the next batch.
//! Messages name the operation and the table, never row values: server messages
//! known to quote values (duplicate keys, truncation, conversion) are withheld.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tiberius::numeric::Numeric;
use tiberius::time::{Date as SqlDate, DateTime2, DateTimeOffset, Time};
use tiberius::{AuthMethod, ColumnData, EncryptionLevel, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use url::Url;

use crate::config::TargetConfig;

use super::target::{
    Change, ColumnDef, Date, DateTime, DeferredDoc, DocRecord, OffsetClaim, RowWrite, SqlType, SqlValue,
    TableDef, Target, TargetError, TenantProgress, COUNT_COLUMN, ROW_KEY_COLUMN,
};

/// A tiberius client on a tokio TCP stream.
pub type SqlServerClient = tiberius::Client<Compat<TcpStream>>;

/// The schema of the bookkeeping tables.
pub const BOOKKEEPING_SCHEMA: &str = "cdc_bridge";

/// Parameters per statement we allow ourselves. SQL Server's limit is 2,100 per
/// request, and `sp_executesql` takes two of those for the statement and its
/// declaration; staying at 2,000 leaves room without counting exactly.
pub const MAX_PARAMS: usize = 2_000;
/// Rows one `INSERT … VALUES` may carry.
pub const MAX_ROWS_PER_VALUES: usize = 1_000;
/// Stage columns before the table's own: op, hash, key, position, delta.
const STAGE_META_COLUMNS: usize = 5;
/// Offset claims per statement (four parameters each, plus group and topic).
const CLAIMS_PER_STATEMENT: usize = 400;
/// Tenants per progress statement (four parameters each).
const PROGRESS_PER_STATEMENT: usize = 400;
/// A statement waiting longer than this for the server's next response fails
/// (retriable) and its connection is dropped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

const OP_UPSERT: u8 = 0;
const OP_DELETE: u8 = 1;
const OP_COUNT: u8 = 2;

/// Decimals up to this precision are DECIMAL; wider ones are kept as text.
const MAX_DECIMAL_PRECISION: u8 = 38;
/// Longest NVARCHAR(n) / VARBINARY(n) before MAX.
const MAX_NVARCHAR: u32 = 4_000;
const MAX_VARBINARY: u32 = 8_000;
/// Days from 0001-01-01 (SQL Server's DATE epoch) to 1970-01-01.
const DAYS_TO_UNIX_EPOCH: i64 = 719_162;
/// Days from 0001-01-01 to 9999-12-31, the last day SQL Server can hold.
const MAX_DAYS: i64 = 3_652_058;
const MICROS_PER_DAY: i64 = 86_400_000_000;

// ---------------------------------------------------------------------------
// Identifiers and literals

/// `[name]`, with `]` doubled: safe for any name SQL Server can hold.
pub fn quote_ident(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// `[schema].[table]`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// `N'text'`, with `'` doubled (T-SQL strings have no other escapes).
pub fn sql_literal(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

fn bookkeeping(table: &str) -> String {
    qualified(BOOKKEEPING_SCHEMA, table)
}

// ---------------------------------------------------------------------------
// Types

/// The T-SQL type of a column holding values of `ty` exactly.
///
/// - `Decimal` beyond SQL Server's 38 digits is `NVARCHAR(80)` holding the exact
///   decimal text (MySQL allows 65 digits).
/// - `Duration` is `BIGINT` signed microseconds: TIME holds neither negative
///   values nor 24 hours and more, MySQL TIME does (-838:59:59 to 838:59:59).
/// - `Text { max_chars: n }` is `NVARCHAR(2n)`: NVARCHAR counts UTF-16 code
///   units and a character beyond the BMP (emoji in utf8mb4) takes two, so
///   `NVARCHAR(n)` would reject a full-length value of such characters; above
///   4,000 units it is `NVARCHAR(MAX)`.
/// - `Bits { width: 1 }` is `BIT`; wider bit strings are `VARBINARY(8)` holding
///   the big-endian bytes, `ceil(width / 8)` of them (MySQL's own representation;
///   BIGINT would turn BIT(64) values with the top bit set negative).
pub fn column_type_sql(ty: &SqlType) -> String {
    match ty {
        SqlType::Bool => "BIT".into(),
        SqlType::SmallInt => "SMALLINT".into(),
        SqlType::Int => "INT".into(),
        SqlType::BigInt => "BIGINT".into(),
        SqlType::Decimal { precision, scale } if *precision <= MAX_DECIMAL_PRECISION => {
            let precision = (*precision).max(1);
            format!("DECIMAL({precision},{})", (*scale).min(precision))
        }
        SqlType::Decimal { .. } => "NVARCHAR(80)".into(),
        SqlType::Real => "REAL".into(),
        SqlType::Double => "FLOAT(53)".into(),
        SqlType::Date => "DATE".into(),
        SqlType::DateTime => "DATETIME2(7)".into(),
        SqlType::DateTimeOffset => "DATETIMEOFFSET(7)".into(),
        SqlType::Duration => "BIGINT".into(),
        SqlType::Text { max_chars: Some(n) } => match n.saturating_mul(2) {
            units if units <= MAX_NVARCHAR => format!("NVARCHAR({})", units.max(1)),
            _ => "NVARCHAR(MAX)".into(),
        },
        SqlType::Text { max_chars: None } | SqlType::Json => "NVARCHAR(MAX)".into(),
        SqlType::Bytes { max_len: Some(n) } if *n <= MAX_VARBINARY => format!("VARBINARY({})", (*n).max(1)),
        SqlType::Bytes { .. } => "VARBINARY(MAX)".into(),
        SqlType::Bits { width } if *width <= 1 => "BIT".into(),
        SqlType::Bits { .. } => "VARBINARY(8)".into(),
        SqlType::Uuid => "UNIQUEIDENTIFIER".into(),
    }
}

/// The text form `verify` reads a column in: the forms PostgreSQL prints
/// (`t`/`f`, ISO times in UTC with `+00`, `\x` hex bytes, lowercase UUIDs),
/// so one parser reads both targets' rows; durations and bit strings as
/// their integers.
fn read_column_sql(c: &super::target::ColumnDef) -> String {
    let q = quote_ident(&c.name);
    match &c.ty {
        SqlType::Bool => format!("CASE WHEN {q} IS NULL THEN NULL WHEN {q} = 1 THEN N't' ELSE N'f' END"),
        SqlType::Date => format!("CONVERT(NVARCHAR(10), {q}, 23)"),
        SqlType::DateTime => format!("CONVERT(NVARCHAR(26), CAST({q} AS DATETIME2(6)), 121)"),
        SqlType::DateTimeOffset => {
            format!("CONVERT(NVARCHAR(26), CAST(SWITCHOFFSET({q}, '+00:00') AS DATETIME2(6)), 121) + N'+00'")
        }
        SqlType::Bytes { .. } => format!("N'\\x' + LOWER(CONVERT(NVARCHAR(MAX), {q}, 2))"),
        SqlType::Bits { width } if *width <= 1 => format!("CONVERT(NVARCHAR(20), CAST({q} AS BIGINT))"),
        SqlType::Bits { .. } => format!("CONVERT(NVARCHAR(20), CAST({q} AS BIGINT))"),
        SqlType::Uuid => format!("LOWER(CONVERT(NVARCHAR(36), {q}))"),
        SqlType::Real | SqlType::Double => format!("CONVERT(NVARCHAR(40), {q}, 3)"),
        _ => format!("CONVERT(NVARCHAR(MAX), {q})"),
    }
}

/// The SELECT `verify` reads a table's rows with (every column as text, a
/// keyless table's row once per copy), filtered by `@P1` on one column.
pub fn read_table_sql(def: &TableDef, filter: Option<&str>) -> Result<String, TargetError> {
    let cols: Vec<String> = def.columns.iter().map(read_column_sql).collect();
    let mut sql = format!(
        "SELECT {} FROM {} AS t",
        cols.join(", "),
        qualified(&def.schema, &def.name)
    );
    if def.is_keyless() {
        let _ = write!(
            sql,
            " CROSS APPLY (SELECT TOP (t.{}) 1 AS n FROM sys.all_columns a CROSS JOIN sys.all_columns b) AS copies",
            quote_ident(COUNT_COLUMN)
        );
    }
    if let Some(column) = filter {
        if !def.columns.iter().any(|c| c.name == column) {
            return Err(TargetError::fatal(format!(
                "{}: no column {column} to filter by",
                def.id()
            )));
        }
        let _ = write!(sql, " WHERE t.{} = @P1", quote_ident(column));
    }
    sql.push(';');
    Ok(sql)
}

/// The SHA-256 of column `content` of the row whose (single) key is `@P1`.
pub fn content_hash_sql(def: &TableDef, content: &str) -> Result<String, TargetError> {
    let [k] = def.key[..] else {
        return Err(TargetError::fatal(format!(
            "{}: content hashes need a single-column key",
            def.id()
        )));
    };
    Ok(format!(
        "SELECT HASHBYTES('SHA2_256', {}) FROM {} WHERE {} = @P1;",
        quote_ident(content),
        qualified(&def.schema, &def.name),
        quote_ident(&def.columns[k].name)
    ))
}

/// A value read by [`read_table_sql`].
pub fn read_table_value(ty: &SqlType, text: Option<&str>) -> Result<SqlValue, String> {
    match (ty, text) {
        (_, None) => Ok(SqlValue::Null),
        (SqlType::Duration, Some(t)) => t
            .parse()
            .map(SqlValue::Duration)
            .map_err(|_| format!("cannot read {t:?} as a duration")),
        (SqlType::Bits { width }, Some(t)) => t
            .parse::<i64>()
            .map(|bits| SqlValue::Bits {
                width: *width,
                bits: bits as u64,
            })
            .map_err(|_| format!("cannot read {t:?} as bits")),
        (SqlType::Real, Some(t)) => t
            .parse()
            .map(SqlValue::Real)
            .map_err(|_| format!("cannot read {t:?}")),
        (SqlType::Double, Some(t)) => t
            .parse()
            .map(SqlValue::Double)
            .map_err(|_| format!("cannot read {t:?}")),
        (ty, text) => super::postgres::parse_text(ty, text),
    }
}

/// The type of a key column: as [`column_type_sql`], except that MAX types,
/// which SQL Server cannot index, become the longest bounded type (values longer
/// than the 900-byte index key limit are rejected by the server either way).
pub fn key_column_type_sql(ty: &SqlType) -> String {
    match column_type_sql(ty).as_str() {
        "NVARCHAR(MAX)" => format!("NVARCHAR({MAX_NVARCHAR})"),
        "VARBINARY(MAX)" => format!("VARBINARY({MAX_VARBINARY})"),
        other => other.to_owned(),
    }
}

fn is_text_type(type_sql: &str) -> bool {
    type_sql.starts_with("NVARCHAR")
}

fn def_column_type_sql(def: &TableDef, index: usize) -> String {
    if def.key.contains(&index) {
        key_column_type_sql(&def.columns[index].ty)
    } else {
        column_type_sql(&def.columns[index].ty)
    }
}

/// A column as `sys.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    /// `sys.types.name` of a system type.
    pub type_name: String,
    /// Bytes; -1 for MAX.
    pub max_length: i16,
    pub precision: u8,
    pub scale: u8,
    pub nullable: bool,
    /// Computed, or of a user-defined type: never altered, never written.
    pub unmanaged: bool,
    pub in_primary_key: bool,
}

impl ExistingColumn {
    /// The column's type as T-SQL, to restate it in `ALTER COLUMN`.
    pub fn type_sql(&self) -> Option<String> {
        let length = |unit: i16| match self.max_length {
            -1 => "MAX".to_owned(),
            n => (n / unit).max(1).to_string(),
        };
        let name = self.type_name.to_ascii_lowercase();
        Some(match name.as_str() {
            "nvarchar" | "nchar" => format!("{}({})", name.to_uppercase(), length(2)),
            "varchar" | "char" | "varbinary" | "binary" => format!("{}({})", name.to_uppercase(), length(1)),
            "decimal" | "numeric" => format!("{}({},{})", name.to_uppercase(), self.precision, self.scale),
            "datetime2" | "datetimeoffset" | "time" => format!("{}({})", name.to_uppercase(), self.scale),
            "float" => format!("FLOAT({})", self.precision),
            "bit" | "tinyint" | "smallint" | "int" | "bigint" | "real" | "date" | "datetime"
            | "smalldatetime" | "uniqueidentifier" | "money" | "smallmoney" | "xml" | "text" | "ntext"
            | "image" | "sql_variant" => name.to_uppercase(),
            _ => return None,
        })
    }

    /// The [`SqlType`] closest to the column's type, for a column the table has
    /// beyond a definition; `None` for types the sink never writes.
    pub fn sql_type(&self) -> Option<SqlType> {
        let bounded = |unit: i16| match self.max_length {
            -1 => None,
            n => Some((n / unit).max(1) as u32),
        };
        Some(match self.type_name.to_ascii_lowercase().as_str() {
            "bit" => SqlType::Bool,
            "tinyint" | "smallint" => SqlType::SmallInt,
            "int" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "decimal" | "numeric" => SqlType::Decimal {
                precision: self.precision,
                scale: self.scale,
            },
            "real" => SqlType::Real,
            "float" if self.precision <= 24 => SqlType::Real,
            "float" => SqlType::Double,
            "date" => SqlType::Date,
            "datetime2" | "datetime" | "smalldatetime" => SqlType::DateTime,
            "datetimeoffset" => SqlType::DateTimeOffset,
            // Code units; the returned type restates the column, not a v1 length.
            "nvarchar" | "nchar" => SqlType::Text {
                max_chars: bounded(2).map(|units| units.div_ceil(2)),
            },
            "varchar" | "char" => SqlType::Text {
                max_chars: bounded(1),
            },
            "ntext" | "text" => SqlType::Text { max_chars: None },
            "varbinary" | "binary" => SqlType::Bytes { max_len: bounded(1) },
            "image" => SqlType::Bytes { max_len: None },
            "uniqueidentifier" => SqlType::Uuid,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// DDL

/// Creates `schema` where missing (`CREATE SCHEMA` must be alone in its batch,
/// hence `EXEC`).
pub fn create_schema_sql(schema: &str) -> String {
    let create = format!("CREATE SCHEMA {}", quote_ident(schema));
    format!(
        "IF SCHEMA_ID({}) IS NULL EXEC({});\n",
        sql_literal(schema),
        sql_literal(&create)
    )
}

fn create_table_guard(schema: &str, table: &str) -> String {
    format!(
        "IF OBJECT_ID({}, N'U') IS NULL\n",
        sql_literal(&qualified(schema, table))
    )
}

/// The bookkeeping schema and tables, created where missing.
///
/// `source_position` is NVARCHAR(MAX): a MySQL GTID set's display form grows
/// with every server UUID it names. Positions are VARBINARY(64), headroom over
/// the 32 bytes the sortable encoding needs. The offsets key is nonclustered
/// because it may reach 1,024 bytes, beyond the clustered index's 900.
pub fn bookkeeping_ddl() -> String {
    let mut sql = create_schema_sql(BOOKKEEPING_SCHEMA);
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "sink_offsets");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [consumer_group] NVARCHAR(255) NOT NULL,\n  [topic] NVARCHAR(255) NOT NULL,\n  \
         [kafka_partition] INT NOT NULL,\n  [next_offset] BIGINT NOT NULL,\n  \
         [source_position] NVARCHAR(MAX) NULL,\n  [updated_at] DATETIMEOFFSET(7) NOT NULL,\n  \
         PRIMARY KEY NONCLUSTERED ([consumer_group], [topic], [kafka_partition])\n);",
        bookkeeping("sink_offsets")
    );
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "row_positions");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [table_id] NVARCHAR(300) NOT NULL,\n  [row_hash] VARBINARY(32) NOT NULL,\n  \
         [row_key] NVARCHAR(MAX) NOT NULL,\n  [position] VARBINARY(64) NOT NULL,\n  \
         [deleted] BIT NOT NULL,\n  PRIMARY KEY ([table_id], [row_hash])\n);",
        bookkeeping("row_positions")
    );
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "applied");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [tenant] NVARCHAR(255) NOT NULL PRIMARY KEY,\n  \
         [source_position] NVARCHAR(MAX) NULL,\n  [position_key] VARBINARY(64) NULL,\n  \
         [commit_time_micros] BIGINT NULL,\n  [applied_at] DATETIMEOFFSET(7) NOT NULL\n);",
        bookkeeping("applied")
    );
    // Documents (see crate::documents::store): the column types are those
    // `create_table_sql` gives the state table's definition.
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "doc_rows");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [entry] VARBINARY(32) NOT NULL PRIMARY KEY,\n  [parent] VARBINARY(32) NULL,\n  \
         [kind] NVARCHAR(128) NOT NULL,\n  [tenant] NVARCHAR(256) NOT NULL,\n  [tbl] NVARCHAR(256) NOT NULL,\n  \
         [row_key] NVARCHAR(1024) NOT NULL,\n  [changed_micros] BIGINT NOT NULL,\n  \
         [data] VARBINARY(MAX) NOT NULL,\n  INDEX [IX_doc_rows_parent] NONCLUSTERED ([parent])\n);",
        bookkeeping("doc_rows")
    );
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "doc_deps");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [dep] VARBINARY(32) NOT NULL,\n  [doc] VARBINARY(32) NOT NULL,\n  \
         [root_key] NVARCHAR(1024) NOT NULL,\n  PRIMARY KEY ([dep], [doc]),\n  \
         INDEX [IX_doc_deps_doc] NONCLUSTERED ([doc])\n);",
        bookkeeping("doc_deps")
    );
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "documents");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [doc] VARBINARY(32) NOT NULL PRIMARY KEY,\n  [kind] NVARCHAR(128) NOT NULL,\n  \
         [tenant] NVARCHAR(256) NOT NULL,\n  [root_key] NVARCHAR(1024) NOT NULL,\n  \
         [sha256] VARBINARY(32) NOT NULL,\n  [pages] INT NOT NULL,\n  [updated_at] DATETIMEOFFSET(7) NOT NULL\n);",
        bookkeeping("documents")
    );
    sql += &create_table_guard(BOOKKEEPING_SCHEMA, "doc_pending");
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n  [doc] VARBINARY(32) NOT NULL PRIMARY KEY,\n  [kind] NVARCHAR(128) NOT NULL,\n  \
         [tenant] NVARCHAR(256) NOT NULL,\n  [root_key] NVARCHAR(1024) NOT NULL,\n  \
         INDEX [IX_doc_pending_tenant] NONCLUSTERED ([tenant])\n);",
        bookkeeping("doc_pending")
    );
    sql
}

/// Every tenant's progress and the milliseconds since it was recorded.
pub fn read_applied_sql() -> String {
    format!(
        "SELECT [tenant], [source_position], [position_key], [commit_time_micros], \
         CAST(DATEDIFF_BIG(MILLISECOND, [applied_at], SYSDATETIMEOFFSET()) AS BIGINT) FROM {} ORDER BY [tenant];",
        bookkeeping("applied")
    )
}

/// `(0x…, 0x…)`: hashes the sink computed itself, as binary literals.
fn binary_list(hashes: &[Vec<u8>]) -> String {
    let items: Vec<String> = hashes.iter().map(|h| binary_literal(h)).collect();
    format!("({})", items.join(", "))
}

fn binary_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Document state rows whose `by` column (entry or parent) is one of `hashes`.
pub fn doc_rows_sql(by: &str, hashes: &[Vec<u8>]) -> String {
    format!(
        "SELECT [tbl], [row_key], [changed_micros], [data] FROM {} WHERE {} IN {};",
        bookkeeping("doc_rows"),
        quote_ident(by),
        binary_list(hashes)
    )
}

pub fn doc_dependents_sql(deps: &[Vec<u8>]) -> String {
    format!(
        "SELECT DISTINCT [root_key] FROM {} WHERE [dep] IN {};",
        bookkeeping("doc_deps"),
        binary_list(deps)
    )
}

pub fn doc_hashes_sql(docs: &[Vec<u8>]) -> String {
    format!(
        "SELECT [doc], [sha256] FROM {} WHERE [doc] IN {};",
        bookkeeping("documents"),
        binary_list(docs)
    )
}

/// Records deferred documents not recorded yet (root keys bound as @P1…;
/// `docs` without duplicates).
pub fn defer_documents_sql(docs: &[DeferredDoc]) -> String {
    let rows: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "({}, {}, {}, @P{})",
                binary_literal(&d.id),
                sql_literal(&d.kind),
                sql_literal(&d.tenant),
                i + 1
            )
        })
        .collect();
    format!(
        "MERGE {} WITH (HOLDLOCK) AS d USING (VALUES {}) AS s ([doc], [kind], [tenant], [root_key]) \
         ON d.[doc] = s.[doc] WHEN NOT MATCHED THEN INSERT ([doc], [kind], [tenant], [root_key]) \
         VALUES (s.[doc], s.[kind], s.[tenant], s.[root_key]);",
        bookkeeping("doc_pending"),
        rows.join(", ")
    )
}

/// Removes at most `limit` deferred documents of `tenants`, returning them.
pub fn take_deferred_sql(tenants: &[&str], limit: usize) -> String {
    let list: Vec<String> = tenants.iter().map(|t| sql_literal(t)).collect();
    format!(
        "DELETE TOP ({limit}) FROM {} OUTPUT deleted.[doc], deleted.[kind], deleted.[tenant], deleted.[root_key] \
         WHERE [tenant] IN ({});",
        bookkeeping("doc_pending"),
        list.join(", ")
    )
}

/// Replaces the dependencies and hashes of `docs` (root keys bound as @P1…).
pub fn record_documents_sql(docs: &[&DocRecord]) -> String {
    let ids: Vec<Vec<u8>> = docs.iter().map(|d| d.id.clone()).collect();
    let mut sql = format!(
        "DELETE FROM {} WHERE [doc] IN {};\n",
        bookkeeping("doc_deps"),
        binary_list(&ids)
    );
    let mut deps = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        for dep in &d.deps {
            deps.push(format!(
                "({}, {}, @P{})",
                binary_literal(dep),
                binary_literal(&d.id),
                i + 1
            ));
        }
    }
    for chunk in deps.chunks(MAX_ROWS_PER_VALUES) {
        let _ = writeln!(
            sql,
            "INSERT INTO {} ([dep], [doc], [root_key]) VALUES {};",
            bookkeeping("doc_deps"),
            chunk.join(", ")
        );
    }
    let gone: Vec<Vec<u8>> = docs
        .iter()
        .filter(|d| d.sha256.is_none())
        .map(|d| d.id.clone())
        .collect();
    if !gone.is_empty() {
        let _ = writeln!(
            sql,
            "DELETE FROM {} WHERE [doc] IN {};",
            bookkeeping("documents"),
            binary_list(&gone)
        );
    }
    let kept: Vec<String> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let sha = d.sha256.as_ref()?;
            Some(format!(
                "({}, {}, {}, @P{}, {}, {})",
                binary_literal(&d.id),
                sql_literal(&d.kind),
                sql_literal(&d.tenant),
                i + 1,
                binary_literal(sha),
                d.pages
            ))
        })
        .collect();
    for chunk in kept.chunks(MAX_ROWS_PER_VALUES) {
        let _ = writeln!(
            sql,
            "MERGE {} WITH (HOLDLOCK) AS d USING (VALUES {}) AS s ([doc], [kind], [tenant], [root_key], \
             [sha256], [pages]) ON d.[doc] = s.[doc] \
             WHEN MATCHED AND d.[sha256] <> s.[sha256] THEN UPDATE SET [sha256] = s.[sha256], \
             [pages] = s.[pages], [updated_at] = SYSDATETIMEOFFSET() \
             WHEN NOT MATCHED THEN INSERT ([doc], [kind], [tenant], [root_key], [sha256], [pages], [updated_at]) \
             VALUES (s.[doc], s.[kind], s.[tenant], s.[root_key], s.[sha256], s.[pages], SYSDATETIMEOFFSET());",
            bookkeeping("documents"),
            chunk.join(", ")
        );
    }
    sql
}

/// The table's schema and the table, created where missing. A keyed table has
/// its key as primary key; a keyless one gets `_cdc_row_key` (the row hash) as
/// primary key and `_cdc_count`, after the v1 columns.
pub fn create_table_sql(def: &TableDef) -> String {
    let mut columns: Vec<String> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let null = if c.nullable && !def.key.contains(&i) {
                "NULL"
            } else {
                "NOT NULL"
            };
            format!(
                "  {} {} {null}",
                quote_ident(&c.name),
                def_column_type_sql(def, i)
            )
        })
        .collect();
    let key: Vec<String> = if def.is_keyless() {
        columns.push(format!(
            "  {} VARBINARY(32) NOT NULL",
            quote_ident(ROW_KEY_COLUMN)
        ));
        columns.push(format!("  {} BIGINT NOT NULL", quote_ident(COUNT_COLUMN)));
        vec![quote_ident(ROW_KEY_COLUMN)]
    } else {
        def.key_columns().map(|c| quote_ident(&c.name)).collect()
    };
    columns.push(format!("  PRIMARY KEY ({})", key.join(", ")));
    let mut sql = create_schema_sql(&def.schema);
    sql += &create_table_guard(&def.schema, &def.name);
    let _ = writeln!(
        sql,
        "CREATE TABLE {} (\n{}\n);",
        qualified(&def.schema, &def.name),
        columns.join(",\n")
    );
    sql
}

/// Adds a column, always nullable: a NOT NULL column without a default cannot
/// be added to a table that has rows.
pub fn add_column_sql(def: &TableDef, index: usize) -> String {
    format!(
        "ALTER TABLE {} ADD {} {} NULL;\n",
        qualified(&def.schema, &def.name),
        quote_ident(&def.columns[index].name),
        def_column_type_sql(def, index)
    )
}

/// Makes an existing column nullable, restating its type.
pub fn make_nullable_sql(schema: &str, table: &str, column: &str, type_sql: &str) -> String {
    format!(
        "ALTER TABLE {} ALTER COLUMN {} {type_sql} NULL;\n",
        qualified(schema, table),
        quote_ident(column)
    )
}

/// The columns of a table (`@P1` = its quoted qualified name).
pub const COLUMNS_SQL: &str = "SELECT c.[name], t.[name], c.[max_length], c.[precision], c.[scale], \
     c.[is_nullable], \
     CAST(CASE WHEN c.[is_computed] = 1 OR t.[is_user_defined] = 1 THEN 1 ELSE 0 END AS BIT), \
     CAST(CASE WHEN EXISTS (SELECT 1 FROM sys.index_columns AS ic \
       JOIN sys.indexes AS i ON i.[object_id] = ic.[object_id] AND i.[index_id] = ic.[index_id] \
       WHERE i.[is_primary_key] = 1 AND ic.[object_id] = c.[object_id] AND ic.[column_id] = c.[column_id]) \
       THEN 1 ELSE 0 END AS BIT) \
     FROM sys.columns AS c JOIN sys.types AS t ON t.[user_type_id] = c.[user_type_id] \
     WHERE c.[object_id] = OBJECT_ID(@P1) ORDER BY c.[column_id];";

/// Renames a column when `from` exists and `to` does not; selects whether it did.
/// `@P1` = quoted table, `@P2` = from, `@P3` = to, `@P4` = quoted `table.from`
/// (sp_rename's new name is taken literally, so it is not quoted).
pub const RENAME_COLUMN_SQL: &str = "IF COL_LENGTH(@P1, @P2) IS NOT NULL AND COL_LENGTH(@P1, @P3) IS NULL\n\
     BEGIN\n  EXEC sp_rename @P4, @P3, 'COLUMN';\n  SELECT CAST(1 AS BIT);\nEND\n\
     ELSE SELECT CAST(0 AS BIT);";

/// What [`Target::ensure_table`] must change on an existing table: the ALTER
/// statements, and the table as it will be (definition first, then the columns
/// it has beyond the definition, made nullable).
pub fn reconcile_columns(def: &TableDef, existing: &[ExistingColumn]) -> (String, TableDef) {
    let lower = |s: &str| s.to_lowercase();
    let wanted: HashSet<String> = def.columns.iter().map(|c| lower(&c.name)).collect();
    let present: HashSet<String> = existing.iter().map(|c| lower(&c.name)).collect();
    let mut sql = String::new();
    for (i, column) in def.columns.iter().enumerate() {
        if !present.contains(&lower(&column.name)) {
            sql += &add_column_sql(def, i);
        }
    }
    let mut now = def.clone();
    for column in existing {
        let name = lower(&column.name);
        if wanted.contains(&name)
            || column.unmanaged
            || name == lower(ROW_KEY_COLUMN)
            || name == lower(COUNT_COLUMN)
        {
            continue;
        }
        let Some(ty) = column.sql_type() else {
            continue;
        };
        if !column.nullable && !column.in_primary_key {
            if let Some(type_sql) = column.type_sql() {
                sql += &make_nullable_sql(&def.schema, &def.name, &column.name, &type_sql);
            }
        }
        now.columns.push(ColumnDef {
            name: column.name.clone(),
            ty,
            nullable: true,
        });
    }
    (sql, now)
}

// ---------------------------------------------------------------------------
// Staging and apply

/// The session temp table of the `seq`-th write.
pub fn stage_name(seq: u64) -> String {
    format!("#stage_{seq}")
}

/// The stage's name for the table's column `index`.
fn stage_column(index: usize) -> String {
    format!("[c{index}]")
}

/// The stage: metadata columns, then every table column (nullable: a delete
/// carries only the key). Text columns take the database's collation, not
/// tempdb's, so joins on text keys compare as the target does.
pub fn create_stage_sql(stage: &str, def: &TableDef) -> String {
    let mut sql = format!(
        "CREATE TABLE {stage} (\n  [m_op] TINYINT NOT NULL,\n  [m_hash] VARBINARY(32) NOT NULL PRIMARY KEY,\n  \
         [m_key] NVARCHAR(MAX) NOT NULL,\n  [m_pos] VARBINARY(64) NOT NULL,\n  [m_delta] BIGINT NULL"
    );
    for i in 0..def.columns.len() {
        let ty = def_column_type_sql(def, i);
        let collate = if is_text_type(&ty) {
            " COLLATE DATABASE_DEFAULT"
        } else {
            ""
        };
        let _ = write!(sql, ",\n  {} {ty}{collate} NULL", stage_column(i));
    }
    sql += "\n);";
    sql
}

/// Rows per stage `INSERT` for a table of `columns` columns: as many as fit in
/// [`MAX_PARAMS`] parameters and one `VALUES` list, and at least one.
pub fn rows_per_insert(columns: usize) -> usize {
    let per_row = STAGE_META_COLUMNS + columns;
    (MAX_PARAMS / per_row).clamp(1, MAX_ROWS_PER_VALUES)
}

/// `INSERT INTO stage (…) VALUES (@P1, …), …` for `rows` rows.
pub fn stage_insert_sql(stage: &str, columns: usize, rows: usize) -> String {
    let per_row = STAGE_META_COLUMNS + columns;
    let mut sql = format!("INSERT INTO {stage} ([m_op], [m_hash], [m_key], [m_pos], [m_delta]");
    for i in 0..columns {
        sql.push_str(", ");
        sql.push_str(&stage_column(i));
    }
    sql.push_str(") VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&Query::placeholders(row * per_row + 1, per_row));
        sql.push(')');
    }
    sql.push(';');
    sql
}

/// Applies the stage to the table and to `row_positions`, then drops it.
pub fn apply_sql(stage: &str, def: &TableDef) -> String {
    let target = qualified(&def.schema, &def.name);
    let mut sql = String::new();
    let deleted = if def.is_keyless() {
        let row_key = quote_ident(ROW_KEY_COLUMN);
        let count = quote_ident(COUNT_COLUMN);
        let mut insert_columns = vec![row_key.clone(), count.clone()];
        let mut insert_values = vec!["src.[m_hash]".to_owned(), "src.[m_delta]".to_owned()];
        for (i, c) in def.columns.iter().enumerate() {
            insert_columns.push(quote_ident(&c.name));
            insert_values.push(format!("src.{}", stage_column(i)));
        }
        let _ = writeln!(
            sql,
            "MERGE {target} WITH (HOLDLOCK) AS tgt\nUSING (SELECT * FROM {stage} WHERE [m_op] = {OP_COUNT}) AS src\n\
             ON tgt.{row_key} = src.[m_hash]\n\
             WHEN MATCHED THEN UPDATE SET tgt.{count} = tgt.{count} + src.[m_delta]\n\
             WHEN NOT MATCHED BY TARGET AND src.[m_delta] > 0 THEN INSERT ({}) VALUES ({});",
            insert_columns.join(", "),
            insert_values.join(", ")
        );
        let _ = writeln!(
            sql,
            "DELETE tgt FROM {target} AS tgt JOIN {stage} AS src ON tgt.{row_key} = src.[m_hash]\n\
             WHERE src.[m_op] = {OP_DELETE} OR tgt.{count} <= 0;"
        );
        format!(
            "CASE WHEN st.[m_op] = {OP_DELETE} THEN 1 WHEN NOT EXISTS (SELECT 1 FROM {target} AS x \
             WHERE x.{row_key} = st.[m_hash]) THEN 1 ELSE 0 END"
        )
    } else {
        let on = def
            .key
            .iter()
            .map(|&i| {
                format!(
                    "tgt.{} = src.{}",
                    quote_ident(&def.columns[i].name),
                    stage_column(i)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let sets = def
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !def.key.contains(i))
            .map(|(i, c)| format!("tgt.{} = src.{}", quote_ident(&c.name), stage_column(i)))
            .collect::<Vec<_>>();
        let insert_columns = def
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>();
        let insert_values = (0..def.columns.len())
            .map(|i| format!("src.{}", stage_column(i)))
            .collect::<Vec<_>>();
        let _ = write!(
            sql,
            "MERGE {target} WITH (HOLDLOCK) AS tgt\nUSING (SELECT * FROM {stage} WHERE [m_op] = {OP_UPSERT}) AS src\n\
             ON {on}\n"
        );
        if !sets.is_empty() {
            // A row whose values are all unchanged is left alone, so re-applying
            // what v2 holds — a replay — changes nothing. EXCEPT treats NULLs
            // as equal; `compared` makes the comparison exact.
            let (src, tgt): (Vec<String>, Vec<String>) = def
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !def.key.contains(i))
                .map(|(i, c)| {
                    (
                        compared(&format!("src.{}", stage_column(i)), &c.ty),
                        compared(&format!("tgt.{}", quote_ident(&c.name)), &c.ty),
                    )
                })
                .unzip();
            let _ = writeln!(
                sql,
                "WHEN MATCHED AND EXISTS (SELECT {} EXCEPT SELECT {}) THEN UPDATE SET {}",
                src.join(", "),
                tgt.join(", "),
                sets.join(", ")
            );
        }
        let _ = writeln!(
            sql,
            "WHEN NOT MATCHED BY TARGET THEN INSERT ({}) VALUES ({});",
            insert_columns.join(", "),
            insert_values.join(", ")
        );
        let _ = writeln!(
            sql,
            "DELETE tgt FROM {target} AS tgt JOIN {stage} AS src ON {on}\nWHERE src.[m_op] = {OP_DELETE};"
        );
        format!("CASE WHEN st.[m_op] = {OP_DELETE} THEN 1 ELSE 0 END")
    };
    let _ = writeln!(
        sql,
        "MERGE {positions} WITH (HOLDLOCK) AS tgt\n\
         USING (SELECT {table_id} AS [table_id], st.[m_hash] AS [row_hash], st.[m_key] AS [row_key], \
         st.[m_pos] AS [position], CAST({deleted} AS BIT) AS [deleted] FROM {stage} AS st) AS src\n\
         ON tgt.[table_id] = src.[table_id] AND tgt.[row_hash] = src.[row_hash]\n\
         WHEN MATCHED THEN UPDATE SET tgt.[position] = src.[position], tgt.[deleted] = src.[deleted]\n\
         WHEN NOT MATCHED BY TARGET THEN INSERT ([table_id], [row_hash], [row_key], [position], [deleted]) \
         VALUES (src.[table_id], src.[row_hash], src.[row_key], src.[position], src.[deleted]);",
        positions = bookkeeping("row_positions"),
        table_id = sql_literal(&def.id()),
    );
    let _ = writeln!(sql, "DROP TABLE {stage};");
    sql
}

/// A column as the unchanged-row check compares it, exactly: SQL Server's own
/// equality ignores trailing spaces and, under most collations, case and
/// accents, and takes -0 for 0; text is compared as its UTF-16 bytes and
/// length, bytes with their length (padding zeros do not compare), floats by
/// their bits.
fn compared(expr: &str, ty: &SqlType) -> String {
    match ty {
        SqlType::Text { .. } | SqlType::Json => {
            format!("CAST(CAST({expr} AS NVARCHAR(MAX)) AS VARBINARY(MAX)), DATALENGTH({expr})")
        }
        SqlType::Bytes { .. } => format!("{expr}, DATALENGTH({expr})"),
        SqlType::Real => format!("CAST({expr} AS BINARY(4))"),
        SqlType::Double => format!("CAST({expr} AS BINARY(8))"),
        _ => expr.to_owned(),
    }
}

/// The SHA-256 of a row key's UTF-8 text: the row's identity in
/// `row_positions` and, for keyless tables, in `_cdc_row_key`.
pub fn row_hash(row_key: &str) -> [u8; 32] {
    Sha256::digest(row_key.as_bytes()).into()
}

// ---------------------------------------------------------------------------
// Bookkeeping statements

/// The next offset per partition of a group and topic (`@P1`, `@P2`).
/// A row's stored position and whether it is a tombstone.
type StoredRow = (Vec<u8>, bool);

/// One row of [`describe_table_sql`]: name, data type, length, precision,
/// scale, nullable, primary-key ordinal.
type CatalogColumn = (
    String,
    String,
    Option<i32>,
    Option<u8>,
    Option<i32>,
    bool,
    Option<i32>,
);

/// Columns of a table with their types and primary-key ordinals.
pub fn describe_table_sql() -> &'static str {
    "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.CHARACTER_MAXIMUM_LENGTH, c.NUMERIC_PRECISION, \
     CAST(c.NUMERIC_SCALE AS INT), c.IS_NULLABLE, k.ORDINAL_POSITION \
     FROM INFORMATION_SCHEMA.COLUMNS c \
     LEFT JOIN INFORMATION_SCHEMA.TABLE_CONSTRAINTS t \
       ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME AND t.CONSTRAINT_TYPE = 'PRIMARY KEY' \
     LEFT JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE k \
       ON k.CONSTRAINT_NAME = t.CONSTRAINT_NAME AND k.TABLE_SCHEMA = c.TABLE_SCHEMA \
      AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME \
     WHERE c.TABLE_SCHEMA = @P1 AND c.TABLE_NAME = @P2 ORDER BY c.ORDINAL_POSITION"
}

/// The column type of a SQL Server `INFORMATION_SCHEMA` data type (length -1 = MAX).
pub fn mssql_type(
    data_type: &str,
    length: Option<i32>,
    precision: Option<u8>,
    scale: Option<i32>,
) -> Option<SqlType> {
    let bounded = |n: Option<i32>| n.filter(|&n| n > 0).map(|n| n as u32);
    Some(match data_type.to_ascii_lowercase().as_str() {
        "bit" => SqlType::Bool,
        "tinyint" | "smallint" => SqlType::SmallInt,
        "int" => SqlType::Int,
        "bigint" => SqlType::BigInt,
        "decimal" | "numeric" | "money" | "smallmoney" => SqlType::Decimal {
            precision: precision.unwrap_or(18),
            scale: scale.unwrap_or(0).clamp(0, 38) as u8,
        },
        "real" => SqlType::Real,
        "float" => SqlType::Double,
        "date" => SqlType::Date,
        "datetime" | "datetime2" | "smalldatetime" => SqlType::DateTime,
        "datetimeoffset" => SqlType::DateTimeOffset,
        "nvarchar" | "varchar" | "nchar" | "char" => SqlType::Text {
            max_chars: bounded(length),
        },
        "ntext" | "text" | "xml" => SqlType::Text { max_chars: None },
        "varbinary" | "binary" => SqlType::Bytes {
            max_len: bounded(length),
        },
        "image" => SqlType::Bytes { max_len: None },
        "uniqueidentifier" => SqlType::Uuid,
        _ => return None,
    })
}

pub fn read_offsets_sql() -> String {
    format!(
        "SELECT [kafka_partition], [next_offset] FROM {} WHERE [consumer_group] = @P1 AND [topic] = @P2;",
        bookkeeping("sink_offsets")
    )
}

/// The offset compare-and-set for `claims`, selecting one BIT: whether every
/// partition's stored offset is the claim's `expected` (absent for `None`).
/// With `apply`, and only when all match, the offsets are then moved; checked
/// rows keep their update locks (and absent keys their range locks) until the
/// transaction ends, so the check holds for the writes that follow.
///
/// Parameters: `@P1` group, `@P2` topic, then per claim `i` four from
/// `3 + 4i`: partition, next, expected, source position.
pub fn claim_offsets_sql(claims: &[OffsetClaim], apply: bool) -> String {
    let table = bookkeeping("sink_offsets");
    let row = |partition: usize| {
        format!("[consumer_group] = @P1 AND [topic] = @P2 AND [kafka_partition] = @P{partition}")
    };
    let mut sql = String::from("DECLARE @ok BIT = 1;\n");
    for (i, claim) in claims.iter().enumerate() {
        let p = 3 + 4 * i;
        let locked = format!(
            "SELECT 1 FROM {table} WITH (UPDLOCK, HOLDLOCK, ROWLOCK) WHERE {}",
            row(p)
        );
        match claim.expected {
            Some(_) => {
                let _ = writeln!(
                    sql,
                    "IF NOT EXISTS ({locked} AND [next_offset] = @P{}) SET @ok = 0;",
                    p + 2
                );
            }
            None => {
                let _ = writeln!(sql, "IF EXISTS ({locked}) SET @ok = 0;");
            }
        }
    }
    if apply {
        sql.push_str("IF @ok = 1\nBEGIN\n");
        for (i, claim) in claims.iter().enumerate() {
            let p = 3 + 4 * i;
            match claim.expected {
                Some(_) => {
                    let _ = writeln!(
                        sql,
                        "  UPDATE {table} WITH (ROWLOCK) SET [next_offset] = @P{next}, [source_position] = @P{pos}, \
                         [updated_at] = SYSDATETIMEOFFSET() WHERE {row} AND [next_offset] = @P{expected};\n  \
                         IF @@ROWCOUNT <> 1 SET @ok = 0;",
                        next = p + 1,
                        pos = p + 3,
                        expected = p + 2,
                        row = row(p),
                    );
                }
                None => {
                    let _ = writeln!(
                        sql,
                        "  INSERT INTO {table} ([consumer_group], [topic], [kafka_partition], [next_offset], \
                         [source_position], [updated_at]) VALUES (@P1, @P2, @P{p}, @P{next}, @P{pos}, \
                         SYSDATETIMEOFFSET());",
                        next = p + 1,
                        pos = p + 3,
                    );
                }
            }
        }
        sql.push_str("END\n");
    }
    sql.push_str("SELECT @ok;");
    sql
}

/// Upserts `count` tenants' progress; per tenant four parameters from
/// `1 + 4i`: tenant, source position, position key, commit time.
pub fn record_progress_sql(count: usize) -> String {
    let rows = (0..count)
        .map(|i| format!("({})", Query::placeholders(1 + 4 * i, 4)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE {} WITH (HOLDLOCK) AS tgt\n\
         USING (VALUES {rows}) AS src ([tenant], [source_position], [position_key], [commit_time_micros])\n\
         ON tgt.[tenant] = src.[tenant]\n\
         WHEN MATCHED THEN UPDATE SET tgt.[source_position] = src.[source_position], \
         tgt.[position_key] = src.[position_key], tgt.[commit_time_micros] = src.[commit_time_micros], \
         tgt.[applied_at] = SYSDATETIMEOFFSET()\n\
         WHEN NOT MATCHED BY TARGET THEN INSERT ([tenant], [source_position], [position_key], \
         [commit_time_micros], [applied_at]) VALUES (src.[tenant], src.[source_position], src.[position_key], \
         src.[commit_time_micros], SYSDATETIMEOFFSET());",
        bookkeeping("applied")
    )
}

/// The stored positions of `count` rows of one table (`@P1` = table id, then
/// the row hashes), locked until the transaction ends.
pub fn stored_positions_sql(count: usize) -> String {
    format!(
        "SELECT [row_hash], [position], [deleted] FROM {} WITH (UPDLOCK, HOLDLOCK, ROWLOCK) \
         WHERE [table_id] = @P1 AND [row_hash] IN ({});",
        bookkeeping("row_positions"),
        Query::placeholders(2, count)
    )
}

// ---------------------------------------------------------------------------
// Values

/// Exact decimal text (`-123.4500`) as a [`Numeric`], when it has at most 38
/// digits (what a DECIMAL parameter can carry); `None` otherwise, and the text
/// is bound as a string for the server to convert.
pub fn decimal_to_numeric(text: &str) -> Option<Numeric> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int_part = int_part.trim_start_matches('0');
    let scale = u8::try_from(frac_part.len()).ok()?;
    // The precision SQL Server is told: integer digits (at least one) + scale.
    let precision = int_part.len().max(1) + frac_part.len();
    if precision > usize::from(Numeric::MAX_NUMERIC_SCALE) {
        return None;
    }
    let mut value: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(Numeric::new_with_scale(
        if negative { -value } else { value },
        scale,
    ))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        _ => 28,
    }
}

/// A date as SQL Server's day count since 0001-01-01; `None` outside 0001..9999
/// or when it is no calendar date.
pub fn sql_date(date: &Date) -> Option<SqlDate> {
    let valid = (1..=9999).contains(&date.year)
        && (1..=12).contains(&date.month)
        && date.day >= 1
        && date.day <= days_in_month(date.year, date.month);
    if !valid {
        return None;
    }
    let days = crate::source::convert::days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    ) + DAYS_TO_UNIX_EPOCH;
    Some(SqlDate::new(u32::try_from(days).ok()?))
}

/// A wall-clock date and time as DATETIME2(7) (100 ns increments).
pub fn sql_datetime2(dt: &DateTime) -> Option<DateTime2> {
    if dt.hour > 23 || dt.minute > 59 || dt.second > 59 || dt.micros > 999_999 {
        return None;
    }
    let seconds = u64::from(dt.hour) * 3600 + u64::from(dt.minute) * 60 + u64::from(dt.second);
    let increments = seconds * 10_000_000 + u64::from(dt.micros) * 10;
    Some(DateTime2::new(sql_date(&dt.date)?, Time::new(increments, 7)))
}

/// An instant (microseconds since the Unix epoch, UTC) as DATETIMEOFFSET(7) at
/// offset 0.
pub fn sql_instant(micros: i64) -> Option<DateTimeOffset> {
    let days = micros.div_euclid(MICROS_PER_DAY) + DAYS_TO_UNIX_EPOCH;
    if !(0..=MAX_DAYS).contains(&days) {
        return None;
    }
    let increments = u64::try_from(micros.rem_euclid(MICROS_PER_DAY)).ok()? * 10;
    let date = SqlDate::new(u32::try_from(days).ok()?);
    Some(DateTimeOffset::new(
        DateTime2::new(date, Time::new(increments, 7)),
        0,
    ))
}

/// The big-endian bytes of a bit string `width` bits wide.
pub fn bits_bytes(width: u8, bits: u64) -> Vec<u8> {
    let len = usize::from(width.clamp(1, 64)).div_ceil(8);
    bits.to_be_bytes()[8 - len..].to_vec()
}

/// A NULL parameter typed as the column, so the server never has to convert a
/// NULL of an incompatible type (an INT NULL cannot become UNIQUEIDENTIFIER).
pub fn typed_null(ty: &SqlType) -> ColumnData<'static> {
    match ty {
        SqlType::Bool => ColumnData::Bit(None),
        SqlType::Bits { width } if *width <= 1 => ColumnData::Bit(None),
        SqlType::SmallInt | SqlType::Int | SqlType::BigInt | SqlType::Duration => ColumnData::I64(None),
        SqlType::Decimal { precision, .. } if *precision <= MAX_DECIMAL_PRECISION => {
            ColumnData::Numeric(None)
        }
        SqlType::Decimal { .. } | SqlType::Text { .. } | SqlType::Json => ColumnData::String(None),
        SqlType::Real => ColumnData::F32(None),
        SqlType::Double => ColumnData::F64(None),
        SqlType::Date => ColumnData::Date(None),
        SqlType::DateTime => ColumnData::DateTime2(None),
        SqlType::DateTimeOffset => ColumnData::DateTimeOffset(None),
        SqlType::Bytes { .. } | SqlType::Bits { .. } => ColumnData::Binary(None),
        SqlType::Uuid => ColumnData::Guid(None),
    }
}

/// A value as the parameter bound for a column of type `ty`. The error says
/// why without quoting the value.
pub fn bind_value<'a>(ty: &SqlType, value: &'a SqlValue) -> Result<ColumnData<'a>, &'static str> {
    Ok(match value {
        SqlValue::Null => typed_null(ty),
        SqlValue::Bool(b) => ColumnData::Bit(Some(*b)),
        SqlValue::Int(i) => ColumnData::I64(Some(*i)),
        SqlValue::Decimal(text) => match ty {
            SqlType::Decimal { precision, .. } if *precision > MAX_DECIMAL_PRECISION => {
                ColumnData::String(Some(Cow::Borrowed(text)))
            }
            _ => match decimal_to_numeric(text) {
                Some(n) => ColumnData::Numeric(Some(n)),
                None => ColumnData::String(Some(Cow::Borrowed(text))),
            },
        },
        SqlValue::Real(f) => ColumnData::F32(Some(*f)),
        SqlValue::Double(d) => ColumnData::F64(Some(*d)),
        SqlValue::Date(d) => {
            ColumnData::Date(Some(sql_date(d).ok_or("date outside 0001-01-01..9999-12-31")?))
        }
        SqlValue::DateTime(dt) => ColumnData::DateTime2(Some(
            sql_datetime2(dt).ok_or("date and time outside SQL Server's DATETIME2 range")?,
        )),
        SqlValue::Instant(micros) => ColumnData::DateTimeOffset(Some(
            sql_instant(*micros).ok_or("instant outside SQL Server's DATETIMEOFFSET range")?,
        )),
        SqlValue::Duration(micros) => ColumnData::I64(Some(*micros)),
        SqlValue::Text(s) | SqlValue::Json(s) => ColumnData::String(Some(Cow::Borrowed(s))),
        SqlValue::Bytes(b) => ColumnData::Binary(Some(Cow::Borrowed(b))),
        SqlValue::Bits { width, bits } => {
            let width = match ty {
                SqlType::Bits { width } => *width,
                _ => *width,
            };
            if width <= 1 {
                ColumnData::Bit(Some(bits & 1 == 1))
            } else {
                ColumnData::Binary(Some(Cow::Owned(bits_bytes(width, *bits))))
            }
        }
        SqlValue::Uuid(bytes) => ColumnData::Guid(Some(tiberius::Uuid::from_bytes(*bytes))),
    })
}

// ---------------------------------------------------------------------------
// Errors

/// Server errors after which the same work can succeed when tried again.
pub fn is_retriable_code(code: u32) -> bool {
    matches!(
        code,
        // deadlock victim, lock request timeout
        1205 | 1222
        // snapshot isolation update conflicts
        | 3960 | 3961
        // Azure SQL: service busy, database unavailable, reconfiguring, resource limits
        | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 | 10928 | 10929 | 4221
        // transport-level errors reported by the server
        | 10053 | 10054 | 10060 | 233 | 64
    )
}

/// Server errors whose message quotes row values (duplicate key values,
/// truncated values, values that failed to convert): their text is withheld.
fn quotes_values(code: u32) -> bool {
    matches!(
        code,
        2601 | 2627 | 2628 | 245 | 244 | 248 | 220 | 232 | 8115 | 295 | 241
    )
}

/// Errors that two sinks creating the same table at once may meet; the retry
/// finds the object there.
fn is_concurrent_ddl(code: u32) -> bool {
    matches!(code, 2714 | 2705 | 1779 | 2759 | 15335)
}

/// A tiberius error as a [`TargetError`] naming `op` and `what`; also whether
/// the connection can no longer be used.
pub fn classify(op: &str, what: &str, e: &tiberius::error::Error) -> (TargetError, bool) {
    use tiberius::error::Error;
    let (detail, retriable, broken) = match e {
        Error::Io { kind, message } => (format!("I/O error ({kind:?}): {message}"), true, true),
        Error::Server(t) => {
            let code = t.code();
            let text = if quotes_values(code) {
                "message withheld: it may quote row values"
            } else {
                t.message()
            };
            (
                format!(
                    "SQL Server error {code} (class {}, state {}): {text}",
                    t.class(),
                    t.state()
                ),
                is_retriable_code(code),
                t.class() >= 20,
            )
        }
        Error::Routing { host, port } => (
            format!("the server redirected the connection to {host}:{port}"),
            true,
            true,
        ),
        Error::Tls(m) => (format!("TLS: {m}"), false, true),
        Error::Protocol(m) => (format!("protocol error: {m}"), false, true),
        Error::Conversion(_) => (
            "conversion error (details withheld: they may quote values)".to_owned(),
            false,
            false,
        ),
        other => (other.to_string(), false, false),
    };
    let message = format!("sqlserver {op} {what}: {detail}");
    let error = if retriable {
        TargetError::retriable(message)
    } else {
        TargetError::fatal(message)
    };
    (error, broken)
}

// ---------------------------------------------------------------------------
// Connection

/// What a `sqlserver://user@host:port/db?…` URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub encryption: EncryptionLevel,
    pub trust_server_certificate: bool,
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ConnectOptions {
    /// Parses the URL; query parameters `encrypt=true|false|strict` (default
    /// true) and `trust_server_certificate=true|false` (default false).
    pub fn parse(text: &str) -> Result<ConnectOptions, String> {
        let url = Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "sqlserver" | "mssql") {
            return Err(format!("scheme {:?} is not sqlserver or mssql", url.scheme()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let user =
            percent_decode(url.username()).ok_or("the user name is not valid percent-encoded UTF-8")?;
        if user.is_empty() {
            return Err("the URL names no user".into());
        }
        let database = percent_decode(url.path().trim_start_matches('/'))
            .ok_or("the database name is not valid percent-encoded UTF-8")?;
        if database.is_empty() || database.contains('/') {
            return Err("the URL names no database (sqlserver://user@host:port/database)".into());
        }
        let mut options = ConnectOptions {
            host,
            port: url.port().unwrap_or(1433),
            database,
            user,
            encryption: EncryptionLevel::Required,
            trust_server_certificate: false,
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("encrypt", "true") => options.encryption = EncryptionLevel::Required,
                ("encrypt", "false") => options.encryption = EncryptionLevel::Off,
                ("encrypt", "strict") => options.encryption = EncryptionLevel::Strict,
                ("trust_server_certificate", "true") => options.trust_server_certificate = true,
                ("trust_server_certificate", "false") => options.trust_server_certificate = false,
                ("encrypt", other) => {
                    return Err(format!("encrypt={other:?} is not true, false or strict"));
                }
                ("trust_server_certificate", other) => {
                    return Err(format!("trust_server_certificate={other:?} is not true or false"));
                }
                (other, _) => {
                    return Err(format!(
                        "unknown parameter {other:?} (known: encrypt, trust_server_certificate)"
                    ));
                }
            }
        }
        Ok(options)
    }

    fn tiberius_config(&self, password: &str, handshake_timeout: Duration) -> tiberius::Config {
        let mut config = tiberius::Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.database(&self.database);
        config.application_name("cdc-bridge");
        config.authentication(AuthMethod::sql_server(&self.user, password));
        config.encryption(self.encryption);
        if self.trust_server_certificate {
            config.trust_cert();
        }
        config.handshake_timeout(Some(handshake_timeout));
        config.command_timeout(Some(COMMAND_TIMEOUT));
        config
    }
}

/// Session settings: `XACT_ABORT` so any error rolls the transaction back, and
/// the ANSI settings (ANSI_WARNINGS above all: without it an over-long value is
/// silently truncated instead of rejected).
const SESSION_SQL: &str = "SET XACT_ABORT ON; SET ANSI_NULLS ON; SET ANSI_WARNINGS ON; SET ANSI_PADDING ON; \
     SET ARITHABORT ON; SET CONCAT_NULL_YIELDS_NULL ON; SET QUOTED_IDENTIFIER ON; SET NUMERIC_ROUNDABORT OFF;";

/// Opens a tiberius client for the target, following a server redirect, within
/// `connect_timeout_secs`. The session settings of [`SqlServerTarget`] are not
/// applied; this is also for tools and tests that read the target.
pub async fn connect_client(cfg: &TargetConfig) -> Result<SqlServerClient, TargetError> {
    let what = format!("target {}", cfg.name);
    let options = ConnectOptions::parse(&cfg.url)
        .map_err(|e| TargetError::fatal(format!("sqlserver connect {what}: url: {e}")))?;
    let timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
    let mut config = options.tiberius_config(cfg.password.expose(), timeout);
    let attempt = async {
        let mut redirects = 0;
        loop {
            let tcp = TcpStream::connect(config.get_addr()).await?;
            tcp.set_nodelay(true)?;
            match tiberius::Client::connect(config.clone(), tcp.compat_write()).await {
                Err(tiberius::error::Error::Routing { host, port }) if redirects < 3 => {
                    tracing::info!(target_name = %cfg.name, %host, port, "sqlserver: following the server's redirect");
                    config.host(&host);
                    config.port(port);
                    redirects += 1;
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(TargetError::retriable(format!(
            "sqlserver connect {what}: no connection within {}s",
            timeout.as_secs()
        ))),
        Ok(Err(e)) => Err(classify("connect", &what, &e).0),
        Ok(Ok(client)) => Ok(client),
    }
}

async fn run_batch(client: &mut SqlServerClient, sql: &str) -> tiberius::Result<()> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

async fn run_query(client: &mut SqlServerClient, query: Query<'_>) -> tiberius::Result<Vec<Row>> {
    query.query(client).await?.into_first_result().await
}

fn flag(rows: &[Row]) -> tiberius::Result<bool> {
    match rows.first() {
        Some(row) => Ok(row.try_get::<bool, _>(0)?.unwrap_or(false)),
        None => Ok(false),
    }
}

fn read_column(row: &Row) -> tiberius::Result<ExistingColumn> {
    let text =
        |i: usize| -> tiberius::Result<String> { Ok(row.try_get::<&str, _>(i)?.unwrap_or("").to_owned()) };
    Ok(ExistingColumn {
        name: text(0)?,
        type_name: text(1)?,
        max_length: row.try_get::<i16, _>(2)?.unwrap_or(0),
        precision: row.try_get::<u8, _>(3)?.unwrap_or(0),
        scale: row.try_get::<u8, _>(4)?.unwrap_or(0),
        nullable: row.try_get::<bool, _>(5)?.unwrap_or(true),
        unmanaged: row.try_get::<bool, _>(6)?.unwrap_or(false),
        in_primary_key: row.try_get::<bool, _>(7)?.unwrap_or(false),
    })
}

/// The writes' stage rows checked against the table, before anything is sent.
fn check_writes(def: &TableDef, writes: &[RowWrite]) -> Result<Vec<[u8; 32]>, TargetError> {
    let table = def.id();
    let mut seen = HashSet::with_capacity(writes.len());
    let mut hashes = Vec::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        let problem = match (&w.change, def.is_keyless()) {
            (Change::Upsert(values), false) if values.len() != def.columns.len() => Some(format!(
                "upsert has {} values for {} columns",
                values.len(),
                def.columns.len()
            )),
            (Change::Delete(values), false) if values.len() != def.key.len() => Some(format!(
                "delete has {} key values for a key of {} columns",
                values.len(),
                def.key.len()
            )),
            (Change::Count { values, .. }, true) if values.len() != def.columns.len() => Some(format!(
                "counted write has {} values for {} columns",
                values.len(),
                def.columns.len()
            )),
            (Change::Upsert(_) | Change::Delete(_), false)
            | (Change::Count { .. } | Change::Delete(_), true) => None,
            (Change::Count { .. }, false) => Some("counted write for a table with a key".to_owned()),
            (Change::Upsert(_), true) => Some("upsert for a table without a key".to_owned()),
        };
        if let Some(problem) = problem {
            return Err(TargetError::fatal(format!(
                "sqlserver write {table}: write {i}: {problem}"
            )));
        }
        if w.position.len() > 64 {
            return Err(TargetError::fatal(format!(
                "sqlserver write {table}: write {i}: position of {} bytes exceeds 64",
                w.position.len()
            )));
        }
        let hash = row_hash(&w.row_key);
        if !seen.insert(hash) {
            return Err(TargetError::fatal(format!(
                "sqlserver write {table}: write {i} repeats the row key of an earlier write"
            )));
        }
        hashes.push(hash);
    }
    Ok(hashes)
}

/// Binds one stage row.
fn bind_stage_row<'a>(
    query: &mut Query<'a>,
    def: &TableDef,
    write: &'a RowWrite,
    hash: &[u8; 32],
) -> Result<(), String> {
    let (op, delta) = match &write.change {
        Change::Upsert(_) => (OP_UPSERT, None),
        Change::Delete(_) => (OP_DELETE, None),
        Change::Count { delta, .. } => (OP_COUNT, Some(*delta)),
    };
    query.bind(ColumnData::U8(Some(op)));
    query.bind(ColumnData::Binary(Some(Cow::Owned(hash.to_vec()))));
    query.bind(ColumnData::String(Some(Cow::Borrowed(write.row_key.as_str()))));
    query.bind(ColumnData::Binary(Some(Cow::Borrowed(write.position.as_slice()))));
    query.bind(ColumnData::I64(delta));
    let bind = |query: &mut Query<'a>, i: usize, value: &'a SqlValue| {
        let column = &def.columns[i];
        bind_value(&column.ty, value)
            .map(|data| query.bind(data))
            .map_err(|reason| format!("column {}: {reason}", column.name))
    };
    match &write.change {
        Change::Upsert(values) | Change::Count { values, .. } => {
            for (i, value) in values.iter().enumerate() {
                bind(query, i, value)?;
            }
        }
        Change::Delete(key_values) => {
            for (i, column) in def.columns.iter().enumerate() {
                match def.key.iter().position(|&k| k == i) {
                    Some(k) => bind(query, i, &key_values[k])?,
                    None => query.bind(typed_null(&column.ty)),
                }
            }
        }
    }
    Ok(())
}

/// A SQL Server database as the sink's target. One connection, reopened after
/// it broke, at the next call outside a transaction.
pub struct SqlServerTarget {
    cfg: TargetConfig,
    client: Option<SqlServerClient>,
    in_transaction: bool,
    stage_seq: u64,
}

impl std::fmt::Debug for SqlServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlServerTarget")
            .field("target", &self.cfg.name)
            .field("connected", &self.client.is_some())
            .field("in_transaction", &self.in_transaction)
            .finish()
    }
}

impl SqlServerTarget {
    /// Position and tombstone flag of each of these rows that has them.
    async fn doc_state(
        &mut self,
        by: &str,
        hashes: &[Vec<u8>],
    ) -> Result<Vec<super::target::StoredRow>, TargetError> {
        let mut out = Vec::new();
        for chunk in hashes.chunks(MAX_ROWS_PER_VALUES) {
            let rows = self
                .query("doc_rows", "doc_rows", Query::new(doc_rows_sql(by, chunk)))
                .await?;
            for row in &rows {
                let read = || -> tiberius::Result<Option<super::target::StoredRow>> {
                    Ok(
                        match (
                            row.try_get::<&str, _>(0)?,
                            row.try_get::<&str, _>(1)?,
                            row.try_get::<i64, _>(2)?,
                            row.try_get::<&[u8], _>(3)?,
                        ) {
                            (Some(table), Some(key), Some(changed), Some(data)) => {
                                Some(super::target::StoredRow {
                                    table: table.to_owned(),
                                    key: key.to_owned(),
                                    changed_micros: changed,
                                    data: data.to_vec(),
                                })
                            }
                            _ => None,
                        },
                    )
                };
                match read() {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(e) => return Err(self.failed("doc_rows", "doc_rows", e)),
                }
            }
        }
        Ok(out)
    }

    async fn row_positions(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<HashMap<String, StoredRow>, TargetError> {
        let table_id = table.id();
        let mut by_hash: HashMap<[u8; 32], &str> = HashMap::with_capacity(row_keys.len());
        for key in row_keys {
            by_hash.insert(row_hash(key), *key);
        }
        let hashes: Vec<[u8; 32]> = by_hash.keys().copied().collect();
        let mut positions = HashMap::new();
        for chunk in hashes.chunks(MAX_PARAMS - 1) {
            let mut query = Query::new(stored_positions_sql(chunk.len()));
            query.bind(table_id.as_str());
            for hash in chunk {
                query.bind(ColumnData::Binary(Some(Cow::Borrowed(hash.as_slice()))));
            }
            let rows = self.query("stored_positions", &table_id, query).await?;
            for row in &rows {
                let read = || -> tiberius::Result<Option<(&[u8], StoredRow)>> {
                    match (row.try_get::<&[u8], _>(0)?, row.try_get::<&[u8], _>(1)?) {
                        (Some(hash), Some(position)) => {
                            let deleted = row.try_get::<bool, _>(2)?.unwrap_or(false);
                            Ok(Some((hash, (position.to_vec(), deleted))))
                        }
                        _ => Ok(None),
                    }
                };
                match read() {
                    Ok(Some((hash, position))) => {
                        if let Some(key) = <[u8; 32]>::try_from(hash).ok().and_then(|h| by_hash.get(&h)) {
                            positions.insert((*key).to_owned(), position);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(self.failed("stored_positions", &table_id, e)),
                }
            }
        }
        Ok(positions)
    }

    async fn open_session(cfg: &TargetConfig) -> Result<SqlServerClient, TargetError> {
        let mut client = connect_client(cfg).await?;
        run_batch(&mut client, SESSION_SQL)
            .await
            .map_err(|e| classify("connect", &format!("target {}", cfg.name), &e).0)?;
        tracing::info!(target_name = %cfg.name, "sqlserver: connected");
        Ok(client)
    }

    /// The connection, reopened if it broke; inside a transaction a lost
    /// connection means the batch is lost (the server rolled it back).
    async fn client(&mut self) -> Result<&mut SqlServerClient, TargetError> {
        if self.client.is_none() {
            if self.in_transaction {
                return Err(TargetError::retriable(format!(
                    "sqlserver target {}: the connection was lost during the batch; it was rolled back",
                    self.cfg.name
                )));
            }
            self.client = Some(Self::open_session(&self.cfg).await?);
        }
        match self.client.as_mut() {
            Some(client) => Ok(client),
            None => Err(TargetError::retriable("sqlserver: no connection")),
        }
    }

    /// The error as a [`TargetError`]; a broken connection is dropped.
    fn failed(&mut self, op: &str, what: &str, e: tiberius::error::Error) -> TargetError {
        let (error, broken) = classify(op, what, &e);
        if broken {
            tracing::warn!(target_name = %self.cfg.name, op, "sqlserver: dropping the connection after an error");
            self.client = None;
        }
        error
    }

    async fn batch(&mut self, op: &str, what: &str, sql: &str) -> Result<(), TargetError> {
        let client = self.client().await?;
        let result = run_batch(client, sql).await;
        result.map_err(|e| self.failed(op, what, e))
    }

    /// A DDL batch, tried a second time when another sink created the same
    /// objects at the same moment (the second run finds them there).
    async fn ddl_batch(&mut self, op: &str, what: &str, sql: &str) -> Result<(), TargetError> {
        let client = self.client().await?;
        match run_batch(client, sql).await {
            Err(e) if e.code().is_some_and(is_concurrent_ddl) => {
                tracing::info!(op, what, "sqlserver: concurrent DDL; trying again");
                self.batch(op, what, sql).await
            }
            result => result.map_err(|e| self.failed(op, what, e)),
        }
    }

    async fn query(&mut self, op: &str, what: &str, query: Query<'_>) -> Result<Vec<Row>, TargetError> {
        let client = self.client().await?;
        let result = run_query(client, query).await;
        result.map_err(|e| self.failed(op, what, e))
    }

    async fn existing_columns(&mut self, def: &TableDef) -> Result<Vec<ExistingColumn>, TargetError> {
        let table = def.id();
        let mut query = Query::new(COLUMNS_SQL);
        query.bind(qualified(&def.schema, &def.name));
        let rows = self.query("ensure_table", &table, query).await?;
        rows.iter()
            .map(read_column)
            .collect::<tiberius::Result<Vec<_>>>()
            .map_err(|e| self.failed("ensure_table", &table, e))
    }

    async fn claim_chunk(
        &mut self,
        group: &str,
        topic: &str,
        claims: &[OffsetClaim],
        apply: bool,
    ) -> Result<bool, TargetError> {
        let what = format!("{group}/{topic}");
        let mut query = Query::new(claim_offsets_sql(claims, apply));
        query.bind(group);
        query.bind(topic);
        for claim in claims {
            query.bind(claim.partition);
            query.bind(claim.next);
            query.bind(ColumnData::I64(claim.expected));
            query.bind(claim.source_position.as_str());
        }
        let client = self.client().await?;
        let result = match run_query(client, query).await {
            Ok(rows) => flag(&rows),
            Err(e) => Err(e),
        };
        match result {
            Ok(ok) => Ok(ok),
            // Another sink inserted the partition's first offset first.
            Err(e) if matches!(e.code(), Some(2627 | 2601)) => Ok(false),
            Err(e) => Err(self.failed("claim_offsets", &what, e)),
        }
    }
}

impl Target for SqlServerTarget {
    /// Connects and sets up the session (see [`connect_client`] for the URL).
    async fn connect(cfg: &TargetConfig) -> Result<SqlServerTarget, TargetError> {
        let mut target = SqlServerTarget {
            cfg: cfg.clone(),
            client: None,
            in_transaction: false,
            stage_seq: 0,
        };
        target.client().await?;
        Ok(target)
    }

    fn kind(&self) -> &'static str {
        "sqlserver"
    }

    async fn prepare(&mut self) -> Result<(), TargetError> {
        self.ddl_batch("prepare", "bookkeeping tables", &bookkeeping_ddl())
            .await
    }

    async fn read_offsets(&mut self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, TargetError> {
        let what = format!("{group}/{topic}");
        let sql = read_offsets_sql();
        let mut query = Query::new(sql.as_str());
        query.bind(group);
        query.bind(topic);
        let rows = self.query("read_offsets", &what, query).await?;
        let mut offsets = HashMap::with_capacity(rows.len());
        for row in &rows {
            let read = || -> tiberius::Result<(i32, i64)> {
                Ok((
                    row.try_get::<i32, _>(0)?.unwrap_or(0),
                    row.try_get::<i64, _>(1)?.unwrap_or(0),
                ))
            };
            match read() {
                Ok((partition, next)) => {
                    offsets.insert(partition, next);
                }
                Err(e) => return Err(self.failed("read_offsets", &what, e)),
            }
        }
        Ok(offsets)
    }

    async fn ensure_table(&mut self, def: &TableDef) -> Result<TableDef, TargetError> {
        let table = def.id();
        self.ddl_batch("ensure_table", &table, &create_table_sql(def))
            .await?;
        let mut retried = false;
        loop {
            let existing = self.existing_columns(def).await?;
            let (alter, now) = reconcile_columns(def, &existing);
            if alter.is_empty() {
                return Ok(now);
            }
            tracing::info!(table = %table, "sqlserver: adding columns or making columns nullable");
            let client = self.client().await?;
            match run_batch(client, &alter).await {
                Ok(()) => return Ok(now),
                // Another sink altered the table at the same moment: look again.
                Err(e) if !retried && e.code().is_some_and(is_concurrent_ddl) => retried = true,
                Err(e) => return Err(self.failed("ensure_table", &table, e)),
            }
        }
    }

    async fn describe_table(&mut self, schema: &str, table: &str) -> Result<Option<TableDef>, TargetError> {
        let what = format!("{schema}.{table}");
        let mut query = Query::new(describe_table_sql());
        query.bind(schema);
        query.bind(table);
        let rows = self.query("describe_table", &what, query).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(rows.len());
        let mut key: Vec<(i32, usize)> = Vec::new();
        for row in &rows {
            let read = || -> tiberius::Result<CatalogColumn> {
                Ok((
                    row.try_get::<&str, _>(0)?.unwrap_or_default().to_owned(),
                    row.try_get::<&str, _>(1)?.unwrap_or_default().to_owned(),
                    row.try_get::<i32, _>(2)?,
                    row.try_get::<u8, _>(3)?,
                    row.try_get::<i32, _>(4)?,
                    row.try_get::<&str, _>(5)?.unwrap_or("YES") == "YES",
                    row.try_get::<i32, _>(6)?,
                ))
            };
            let (name, data_type, length, precision, scale, nullable, key_ordinal) =
                read().map_err(|e| self.failed("describe_table", &what, e))?;
            let ty = mssql_type(&data_type, length, precision, scale).ok_or_else(|| {
                TargetError::fatal(format!(
                    "SQL Server {what}.{name}: type {data_type} is not supported"
                ))
            })?;
            if let Some(ordinal) = key_ordinal {
                key.push((ordinal, columns.len()));
            }
            columns.push(ColumnDef { name, ty, nullable });
        }
        key.sort_unstable();
        Ok(Some(TableDef {
            scope: String::new(),
            schema: schema.to_owned(),
            name: table.to_owned(),
            columns,
            key: key.into_iter().map(|(_, i)| i).collect(),
        }))
    }

    async fn rename_column(
        &mut self,
        schema: &str,
        table: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, TargetError> {
        let what = format!("{schema}.{table}");
        let quoted = qualified(schema, table);
        let mut query = Query::new(RENAME_COLUMN_SQL);
        query.bind(quoted.as_str());
        query.bind(from);
        query.bind(to);
        query.bind(format!("{quoted}.{}", quote_ident(from)));
        let rows = self.query("rename_column", &what, query).await?;
        flag(&rows).map_err(|e| self.failed("rename_column", &what, e))
    }

    async fn begin(&mut self) -> Result<(), TargetError> {
        self.batch("begin", "transaction", "BEGIN TRANSACTION;").await?;
        self.in_transaction = true;
        Ok(())
    }

    async fn claim_offsets(
        &mut self,
        group: &str,
        topic: &str,
        claims: &[OffsetClaim],
    ) -> Result<bool, TargetError> {
        if claims.is_empty() {
            return Ok(true);
        }
        let mut partitions = HashSet::with_capacity(claims.len());
        if let Some(claim) = claims.iter().find(|c| !partitions.insert(c.partition)) {
            return Err(TargetError::fatal(format!(
                "sqlserver claim_offsets {group}/{topic}: partition {} is claimed twice",
                claim.partition
            )));
        }
        if claims.len() <= CLAIMS_PER_STATEMENT {
            return self.claim_chunk(group, topic, claims, true).await;
        }
        // Too many for one statement: check them all (locking), then apply.
        for chunk in claims.chunks(CLAIMS_PER_STATEMENT) {
            if !self.claim_chunk(group, topic, chunk, false).await? {
                return Ok(false);
            }
        }
        for chunk in claims.chunks(CLAIMS_PER_STATEMENT) {
            if !self.claim_chunk(group, topic, chunk, true).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn lock_tenants(&mut self, _tenants: &[&str], _exclusive: bool) -> Result<(), TargetError> {
        // Nothing to add: `stored_positions` reads under `UPDLOCK, HOLDLOCK`,
        // whose key-range locks also cover rows not stored yet, and the
        // document state is merged `WITH (HOLDLOCK)`.
        Ok(())
    }

    async fn stored_positions(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, TargetError> {
        Ok(self
            .row_positions(table, row_keys)
            .await?
            .into_iter()
            .map(|(key, (position, _))| (key, position))
            .collect())
    }

    async fn deleted_rows(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<HashSet<String>, TargetError> {
        Ok(self
            .row_positions(table, row_keys)
            .await?
            .into_iter()
            .filter(|(_, (_, deleted))| *deleted)
            .map(|(key, _)| key)
            .collect())
    }

    async fn write(&mut self, table: &TableDef, writes: &[RowWrite]) -> Result<(), TargetError> {
        if writes.is_empty() {
            return Ok(());
        }
        let table_id = table.id();
        let hashes = check_writes(table, writes)?;
        self.stage_seq += 1;
        let stage = stage_name(self.stage_seq);
        self.batch("write", &table_id, &create_stage_sql(&stage, table))
            .await?;
        let rows = rows_per_insert(table.columns.len());
        for (chunk, chunk_hashes) in writes.chunks(rows).zip(hashes.chunks(rows)) {
            let mut query = Query::new(stage_insert_sql(&stage, table.columns.len(), chunk.len()));
            for (write, hash) in chunk.iter().zip(chunk_hashes) {
                bind_stage_row(&mut query, table, write, hash)
                    .map_err(|reason| TargetError::fatal(format!("sqlserver write {table_id}: {reason}")))?;
            }
            let client = self.client().await?;
            let result = query.execute(client).await;
            result.map_err(|e| self.failed("write", &table_id, e))?;
        }
        self.batch("write", &table_id, &apply_sql(&stage, table)).await
    }

    async fn record_progress(&mut self, progress: &[TenantProgress]) -> Result<(), TargetError> {
        // One row per tenant (the last one given), as MERGE needs.
        let mut latest: Vec<&TenantProgress> = Vec::with_capacity(progress.len());
        let mut index: HashMap<&str, usize> = HashMap::new();
        for p in progress {
            match index.get(p.tenant.as_str()) {
                Some(&i) => latest[i] = p,
                None => {
                    index.insert(&p.tenant, latest.len());
                    latest.push(p);
                }
            }
        }
        for chunk in latest.chunks(PROGRESS_PER_STATEMENT) {
            let mut query = Query::new(record_progress_sql(chunk.len()));
            for p in chunk {
                query.bind(p.tenant.as_str());
                query.bind(p.source_position.as_str());
                query.bind(p.position_key.as_slice());
                query.bind(p.commit_time_micros);
            }
            let client = self.client().await?;
            let result = query.execute(client).await;
            result.map_err(|e| self.failed("record_progress", "applied", e))?;
        }
        Ok(())
    }

    async fn read_applied(&mut self) -> Result<Vec<(TenantProgress, f64)>, TargetError> {
        let rows = self
            .query("read_applied", "applied", Query::new(read_applied_sql()))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> tiberius::Result<Option<(TenantProgress, f64)>> {
                Ok(
                    match (
                        row.try_get::<&str, _>(0)?,
                        row.try_get::<&str, _>(1)?,
                        row.try_get::<&[u8], _>(2)?,
                        row.try_get::<i64, _>(3)?,
                        row.try_get::<i64, _>(4)?,
                    ) {
                        (Some(tenant), Some(position), Some(key), Some(commit), Some(age_ms)) => Some((
                            TenantProgress {
                                tenant: tenant.to_owned(),
                                source_position: position.to_owned(),
                                position_key: key.to_vec(),
                                commit_time_micros: commit,
                            },
                            age_ms as f64 / 1e3,
                        )),
                        _ => None,
                    },
                )
            };
            match read() {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => return Err(self.failed("read_applied", "applied", e)),
            }
        }
        Ok(out)
    }

    async fn doc_rows(&mut self, entries: &[Vec<u8>]) -> Result<Vec<super::target::StoredRow>, TargetError> {
        self.doc_state("entry", entries).await
    }

    async fn doc_children(
        &mut self,
        parents: &[Vec<u8>],
    ) -> Result<Vec<super::target::StoredRow>, TargetError> {
        self.doc_state("parent", parents).await
    }

    async fn doc_dependents(&mut self, deps: &[Vec<u8>]) -> Result<Vec<String>, TargetError> {
        let mut out = HashSet::new();
        for chunk in deps.chunks(MAX_ROWS_PER_VALUES) {
            let rows = self
                .query(
                    "doc_dependents",
                    "doc_deps",
                    Query::new(doc_dependents_sql(chunk)),
                )
                .await?;
            for row in &rows {
                match row.try_get::<&str, _>(0) {
                    Ok(Some(key)) => {
                        out.insert(key.to_owned());
                    }
                    Ok(None) => {}
                    Err(e) => return Err(self.failed("doc_dependents", "doc_deps", e)),
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    async fn doc_hashes(&mut self, docs: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Vec<u8>>, TargetError> {
        let mut out = HashMap::new();
        for chunk in docs.chunks(MAX_ROWS_PER_VALUES) {
            let rows = self
                .query("doc_hashes", "documents", Query::new(doc_hashes_sql(chunk)))
                .await?;
            for row in &rows {
                match (row.try_get::<&[u8], _>(0), row.try_get::<&[u8], _>(1)) {
                    (Ok(Some(doc)), Ok(Some(sha))) => {
                        out.insert(doc.to_vec(), sha.to_vec());
                    }
                    (Err(e), _) | (_, Err(e)) => return Err(self.failed("doc_hashes", "documents", e)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    async fn record_documents(&mut self, docs: &[DocRecord]) -> Result<(), TargetError> {
        let docs: Vec<&DocRecord> = docs.iter().collect();
        // Root keys are bound: one parameter per document.
        for chunk in docs.chunks(MAX_ROWS_PER_VALUES) {
            let mut query = Query::new(record_documents_sql(chunk));
            for d in chunk {
                query.bind(d.root_key.as_str());
            }
            let client = self.client().await?;
            let result = query.execute(client).await;
            result.map_err(|e| self.failed("record_documents", "documents", e))?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), TargetError> {
        let result = self.batch("commit", "transaction", "COMMIT TRANSACTION;").await;
        self.in_transaction = false;
        result
    }

    async fn defer_documents(&mut self, docs: &[DeferredDoc]) -> Result<(), TargetError> {
        let mut seen = HashSet::new();
        let docs: Vec<DeferredDoc> = docs.iter().filter(|d| seen.insert(&d.id)).cloned().collect();
        for chunk in docs.chunks(MAX_ROWS_PER_VALUES) {
            let sql = defer_documents_sql(chunk);
            let mut query = Query::new(sql.as_str());
            for d in chunk {
                query.bind(d.root_key.as_str());
            }
            let client = self.client().await?;
            let result = query.execute(client).await;
            result.map_err(|e| self.failed("defer_documents", "doc_pending", e))?;
        }
        Ok(())
    }

    async fn take_deferred(
        &mut self,
        tenants: &[&str],
        limit: usize,
    ) -> Result<Vec<DeferredDoc>, TargetError> {
        let mut out = Vec::new();
        for chunk in tenants.chunks(MAX_ROWS_PER_VALUES) {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let rows = self
                .query(
                    "take_deferred",
                    "doc_pending",
                    Query::new(take_deferred_sql(chunk, left)),
                )
                .await?;
            for row in &rows {
                let doc: Option<&[u8]> = row
                    .try_get(0)
                    .map_err(|e| self.failed("take_deferred", "doc_pending", e))?;
                let text = |i: usize| -> Result<String, TargetError> {
                    row.try_get::<&str, _>(i)
                        .map(|v| v.unwrap_or_default().to_owned())
                        .map_err(|e| TargetError::fatal(format!("sqlserver take_deferred: {e}")))
                };
                out.push(DeferredDoc {
                    id: doc.unwrap_or_default().to_vec(),
                    kind: text(1)?,
                    tenant: text(2)?,
                    root_key: text(3)?,
                });
            }
        }
        Ok(out)
    }

    async fn deferred_counts(&mut self) -> Result<HashMap<String, u64>, TargetError> {
        let sql = format!(
            "SELECT [tenant], COUNT_BIG(*) FROM {} GROUP BY [tenant];",
            bookkeeping("doc_pending")
        );
        let rows = self
            .query("deferred_counts", "doc_pending", Query::new(sql))
            .await?;
        rows.iter()
            .map(|row| {
                let tenant: Option<&str> = row
                    .try_get(0)
                    .map_err(|e| TargetError::fatal(format!("sqlserver deferred_counts: {e}")))?;
                let n: Option<i64> = row
                    .try_get(1)
                    .map_err(|e| TargetError::fatal(format!("sqlserver deferred_counts: {e}")))?;
                Ok((
                    tenant.unwrap_or_default().to_owned(),
                    n.unwrap_or(0).max(0) as u64,
                ))
            })
            .collect()
    }

    async fn content_hashes(
        &mut self,
        table: &TableDef,
        content: &str,
        ids: &[SqlValue],
    ) -> Result<Vec<Option<Vec<u8>>>, TargetError> {
        let what = table.id();
        let sql = content_hash_sql(table, content)?;
        let key_type = table.columns[table.key[0]].ty.clone();
        let mut out = Vec::with_capacity(ids.len());
        // One short statement per document: the key is bound typed and seeks the index.
        for id in ids {
            let mut query = Query::new(sql.as_str());
            query.bind(
                bind_value(&key_type, id).map_err(|e| TargetError::fatal(format!("{what}: key: {e}")))?,
            );
            let rows = self.query("content_hashes", &what, query).await?;
            let hash = match rows.first() {
                Some(row) => row
                    .try_get::<&[u8], _>(0)
                    .map_err(|e| TargetError::fatal(format!("{what}: content hash: {e}")))?
                    .map(<[u8]>::to_vec),
                None => None,
            };
            out.push(hash);
        }
        Ok(out)
    }

    async fn read_table(
        &mut self,
        table: &TableDef,
        filter: Option<(&str, &SqlValue)>,
    ) -> Result<Vec<Vec<SqlValue>>, TargetError> {
        let what = table.id();
        let sql = read_table_sql(table, filter.map(|(c, _)| c))?;
        let mut query = Query::new(sql.as_str());
        if let Some((column, value)) = filter {
            let ty = table
                .columns
                .iter()
                .find(|c| c.name == column)
                .map(|c| c.ty.clone())
                .unwrap_or(SqlType::Text { max_chars: None });
            let bound = bind_value(&ty, value)
                .map_err(|e| TargetError::fatal(format!("{what}: filter {column}: {e}")))?;
            query.bind(bound);
        }
        let rows = self.query("read_table", &what, query).await?;
        rows.iter()
            .map(|row| {
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let text: Option<&str> = row
                            .try_get(i)
                            .map_err(|e| TargetError::fatal(format!("{what}.{}: {e}", c.name)))?;
                        read_table_value(&c.ty, text).map_err(TargetError::fatal)
                    })
                    .collect()
            })
            .collect()
    }

    async fn rollback(&mut self) {
        self.in_transaction = false;
        let Some(client) = self.client.as_mut() else {
            return;
        };
        if let Err(e) = run_batch(client, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;").await {
            let (error, _) = classify("rollback", "transaction", &e);
            tracing::warn!(target_name = %self.cfg.name, error = %error, "sqlserver: rollback failed; dropping the connection");
            self.client = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: SqlType, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            nullable,
        }
    }

    fn keyed() -> TableDef {
        TableDef {
            scope: String::new(),
            schema: "cust_a".into(),
            name: "orders".into(),
            columns: vec![
                col("id", SqlType::BigInt, false),
                col("note", SqlType::Text { max_chars: Some(40) }, true),
                col(
                    "amount",
                    SqlType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                    true,
                ),
            ],
            key: vec![0],
        }
    }

    fn keyless() -> TableDef {
        TableDef {
            scope: String::new(),
            schema: "cust_a".into(),
            name: "log".into(),
            columns: vec![
                col("at", SqlType::DateTime, true),
                col("msg", SqlType::Text { max_chars: None }, true),
            ],
            key: vec![],
        }
    }

    #[test]
    fn identifiers_are_bracketed_with_closing_brackets_doubled() {
        assert_eq!(quote_ident("orders"), "[orders]");
        assert_eq!(quote_ident("a]b"), "[a]]b]");
        assert_eq!(quote_ident("order items"), "[order items]");
        assert_eq!(quote_ident("x]]; DROP TABLE t; --"), "[x]]]]; DROP TABLE t; --]");
        assert_eq!(quote_ident("[odd"), "[[odd]");
        assert_eq!(qualified("cust a", "t]1"), "[cust a].[t]]1]");
        assert_eq!(sql_literal("it's"), "N'it''s'");
    }

    #[test]
    fn every_type_maps_to_a_type_that_holds_its_values() {
        let cases = [
            (SqlType::Bool, "BIT"),
            (SqlType::SmallInt, "SMALLINT"),
            (SqlType::Int, "INT"),
            (SqlType::BigInt, "BIGINT"),
            (
                SqlType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                "DECIMAL(10,2)",
            ),
            (
                SqlType::Decimal {
                    precision: 38,
                    scale: 38,
                },
                "DECIMAL(38,38)",
            ),
            (
                SqlType::Decimal {
                    precision: 39,
                    scale: 0,
                },
                "NVARCHAR(80)",
            ),
            (
                SqlType::Decimal {
                    precision: 65,
                    scale: 30,
                },
                "NVARCHAR(80)",
            ),
            (SqlType::Real, "REAL"),
            (SqlType::Double, "FLOAT(53)"),
            (SqlType::Date, "DATE"),
            (SqlType::DateTime, "DATETIME2(7)"),
            (SqlType::DateTimeOffset, "DATETIMEOFFSET(7)"),
            (SqlType::Duration, "BIGINT"),
            (SqlType::Text { max_chars: Some(40) }, "NVARCHAR(80)"),
            (
                SqlType::Text {
                    max_chars: Some(2000),
                },
                "NVARCHAR(4000)",
            ),
            (
                SqlType::Text {
                    max_chars: Some(2001),
                },
                "NVARCHAR(MAX)",
            ),
            (SqlType::Text { max_chars: Some(0) }, "NVARCHAR(1)"),
            (SqlType::Text { max_chars: None }, "NVARCHAR(MAX)"),
            (SqlType::Bytes { max_len: Some(16) }, "VARBINARY(16)"),
            (SqlType::Bytes { max_len: Some(8000) }, "VARBINARY(8000)"),
            (SqlType::Bytes { max_len: Some(8001) }, "VARBINARY(MAX)"),
            (SqlType::Bytes { max_len: None }, "VARBINARY(MAX)"),
            (SqlType::Bits { width: 1 }, "BIT"),
            (SqlType::Bits { width: 2 }, "VARBINARY(8)"),
            (SqlType::Bits { width: 64 }, "VARBINARY(8)"),
            (SqlType::Json, "NVARCHAR(MAX)"),
            (SqlType::Uuid, "UNIQUEIDENTIFIER"),
        ];
        for (ty, expected) in cases {
            assert_eq!(column_type_sql(&ty), expected, "type {ty:?}");
        }
        assert_eq!(
            key_column_type_sql(&SqlType::Text { max_chars: None }),
            "NVARCHAR(4000)"
        );
        assert_eq!(
            key_column_type_sql(&SqlType::Bytes { max_len: None }),
            "VARBINARY(8000)"
        );
        assert_eq!(key_column_type_sql(&SqlType::Int), "INT");
    }

    #[test]
    fn existing_columns_restate_their_types() {
        let c = |type_name: &str, max_length: i16, precision: u8, scale: u8| ExistingColumn {
            name: "x".into(),
            type_name: type_name.into(),
            max_length,
            precision,
            scale,
            nullable: false,
            unmanaged: false,
            in_primary_key: false,
        };
        assert_eq!(c("nvarchar", 80, 0, 0).type_sql().unwrap(), "NVARCHAR(40)");
        assert_eq!(c("nvarchar", -1, 0, 0).type_sql().unwrap(), "NVARCHAR(MAX)");
        assert_eq!(c("varbinary", 16, 0, 0).type_sql().unwrap(), "VARBINARY(16)");
        assert_eq!(c("decimal", 9, 10, 2).type_sql().unwrap(), "DECIMAL(10,2)");
        assert_eq!(c("datetime2", 8, 27, 7).type_sql().unwrap(), "DATETIME2(7)");
        assert_eq!(c("float", 8, 53, 0).type_sql().unwrap(), "FLOAT(53)");
        assert_eq!(c("int", 4, 10, 0).type_sql().unwrap(), "INT");
        assert_eq!(c("geography", -1, 0, 0).type_sql(), None);
        assert_eq!(
            c("nvarchar", 80, 0, 0).sql_type(),
            Some(SqlType::Text { max_chars: Some(20) })
        );
        assert_eq!(c("float", 8, 53, 0).sql_type(), Some(SqlType::Double));
        assert_eq!(c("uniqueidentifier", 16, 0, 0).sql_type(), Some(SqlType::Uuid));
        assert_eq!(c("hierarchyid", 892, 0, 0).sql_type(), None);
    }

    #[test]
    fn bookkeeping_ddl_is_idempotent_and_complete() {
        let sql = bookkeeping_ddl();
        assert!(sql.starts_with("IF SCHEMA_ID(N'cdc_bridge') IS NULL EXEC(N'CREATE SCHEMA [cdc_bridge]');"));
        for table in [
            "sink_offsets",
            "row_positions",
            "applied",
            "doc_rows",
            "doc_deps",
            "documents",
            "doc_pending",
        ] {
            assert!(
                sql.contains(&format!(
                    "IF OBJECT_ID(N'[cdc_bridge].[{table}]', N'U') IS NULL\nCREATE TABLE [cdc_bridge].[{table}]"
                )),
                "{table} is not created idempotently:\n{sql}"
            );
        }
        assert!(sql.contains("PRIMARY KEY NONCLUSTERED ([consumer_group], [topic], [kafka_partition])"));
        assert!(sql.contains("[next_offset] BIGINT NOT NULL"));
        assert!(sql.contains("[row_hash] VARBINARY(32) NOT NULL"));
        assert!(sql.contains("[position] VARBINARY(64) NOT NULL"));
        assert!(sql.contains("[deleted] BIT NOT NULL"));
        assert!(sql.contains("PRIMARY KEY ([table_id], [row_hash])"));
        assert!(sql.contains("[tenant] NVARCHAR(255) NOT NULL PRIMARY KEY"));
        assert!(sql.contains("[commit_time_micros] BIGINT NULL"));
        for table in ["doc_rows", "doc_deps", "documents"] {
            assert!(sql.contains(&format!(
                "IF OBJECT_ID(N'[cdc_bridge].[{table}]', N'U') IS NULL\nCREATE TABLE"
            )));
        }
        // The state table as the sink defines it has exactly these types.
        let state = crate::documents::store::state_table();
        for (i, c) in state.columns.iter().enumerate() {
            let ty = def_column_type_sql(&state, i);
            assert!(
                sql.contains(&format!("[{}] {ty} ", c.name)),
                "{} {ty}:\n{sql}",
                c.name
            );
        }
    }

    #[test]
    fn document_statements_use_binary_literals_and_bind_root_keys() {
        let h = |b: u8| vec![b; 32];
        let sql = doc_rows_sql("parent", &[h(1), h(0xab)]);
        assert!(
            sql.contains(&format!(
                "WHERE [parent] IN (0x{}, 0x{})",
                "01".repeat(32),
                "AB".repeat(32)
            )),
            "{sql}"
        );
        let docs = [
            DocRecord {
                id: h(2),
                kind: "Assess'ment".into(),
                tenant: "t1".into(),
                root_key: "42".into(),
                sha256: Some(h(3)),
                pages: 2,
                deps: vec![h(4), h(5)],
            },
            DocRecord {
                id: h(6),
                kind: "Assess'ment".into(),
                tenant: "t1".into(),
                root_key: "43".into(),
                sha256: None,
                pages: 0,
                deps: vec![],
            },
        ];
        let refs: Vec<&DocRecord> = docs.iter().collect();
        let sql = record_documents_sql(&refs);
        assert!(
            sql.contains(&format!("(0x{}, 0x{}, @P1)", "04".repeat(32), "02".repeat(32))),
            "{sql}"
        );
        assert!(
            sql.contains(&format!("(0x{}, 0x{}, @P1)", "05".repeat(32), "02".repeat(32))),
            "{sql}"
        );
        assert!(sql.contains(&format!(
            "DELETE FROM [cdc_bridge].[documents] WHERE [doc] IN (0x{})",
            "06".repeat(32)
        )));
        assert!(sql.contains("N'Assess''ment'"), "{sql}");
        assert!(sql.contains(&format!("@P1, 0x{}, 2)", "03".repeat(32))), "{sql}");
        assert!(
            !sql.contains("@P2"),
            "the deleted document's key is bound but not used:\n{sql}"
        );
    }

    #[test]
    fn create_table_for_a_keyed_table() {
        let sql = create_table_sql(&keyed());
        let expected = "IF SCHEMA_ID(N'cust_a') IS NULL EXEC(N'CREATE SCHEMA [cust_a]');\n\
             IF OBJECT_ID(N'[cust_a].[orders]', N'U') IS NULL\n\
             CREATE TABLE [cust_a].[orders] (\n  [id] BIGINT NOT NULL,\n  [note] NVARCHAR(80) NULL,\n  \
             [amount] DECIMAL(10,2) NULL,\n  PRIMARY KEY ([id])\n);\n";
        assert_eq!(sql, expected);
    }

    #[test]
    fn create_table_for_a_keyless_table_adds_row_key_and_count() {
        let sql = create_table_sql(&keyless());
        assert!(
            sql.contains("[at] DATETIME2(7) NULL,\n  [msg] NVARCHAR(MAX) NULL,\n"),
            "{sql}"
        );
        assert!(sql.contains("[_cdc_row_key] VARBINARY(32) NOT NULL,\n  [_cdc_count] BIGINT NOT NULL,\n"));
        assert!(sql.contains("PRIMARY KEY ([_cdc_row_key])"));
    }

    #[test]
    fn a_schema_name_with_quotes_stays_one_literal() {
        let sql = create_schema_sql("o'brien]x");
        assert_eq!(
            sql,
            "IF SCHEMA_ID(N'o''brien]x') IS NULL EXEC(N'CREATE SCHEMA [o''brien]]x]');\n"
        );
    }

    #[test]
    fn reconcile_adds_missing_columns_and_keeps_extras_nullable() {
        let def = keyed();
        let existing = |name: &str, type_name: &str, max_length: i16, nullable: bool| ExistingColumn {
            name: name.into(),
            type_name: type_name.into(),
            max_length,
            precision: 19,
            scale: 0,
            nullable,
            unmanaged: false,
            in_primary_key: name == "id",
        };
        let columns = vec![
            existing("ID", "bigint", 8, false),
            existing("note", "nvarchar", 80, true),
            existing("legacy", "int", 4, false),
            existing("calc", "int", 4, true),
        ];
        let mut columns = columns;
        columns[3].unmanaged = true;
        let (sql, now) = reconcile_columns(&def, &columns);
        assert_eq!(
            sql,
            "ALTER TABLE [cust_a].[orders] ADD [amount] DECIMAL(10,2) NULL;\n\
             ALTER TABLE [cust_a].[orders] ALTER COLUMN [legacy] INT NULL;\n"
        );
        assert_eq!(now.columns.len(), 4);
        assert_eq!(now.columns[3], col("legacy", SqlType::Int, true));
        assert_eq!(now.key, vec![0]);
        let (sql, now) = reconcile_columns(&def, &columns[..2]);
        assert!(sql.starts_with("ALTER TABLE [cust_a].[orders] ADD [amount]"));
        assert_eq!(now, def);
    }

    #[test]
    fn rename_checks_both_names_before_renaming() {
        assert!(
            RENAME_COLUMN_SQL.contains("COL_LENGTH(@P1, @P2) IS NOT NULL AND COL_LENGTH(@P1, @P3) IS NULL")
        );
        assert!(RENAME_COLUMN_SQL.contains("EXEC sp_rename @P4, @P3, 'COLUMN'"));
    }

    #[test]
    fn stage_has_metadata_then_positional_columns() {
        let sql = create_stage_sql("#stage_3", &keyed());
        assert!(
            sql.starts_with("CREATE TABLE #stage_3 (\n  [m_op] TINYINT NOT NULL,"),
            "{sql}"
        );
        assert!(sql.contains("[m_hash] VARBINARY(32) NOT NULL PRIMARY KEY"));
        assert!(sql.contains("[c0] BIGINT NULL"));
        assert!(sql.contains("[c1] NVARCHAR(80) COLLATE DATABASE_DEFAULT NULL"));
        assert!(sql.contains("[c2] DECIMAL(10,2) NULL\n);"));
    }

    #[test]
    fn stage_inserts_number_parameters_row_by_row() {
        let sql = stage_insert_sql("#stage_1", 2, 2);
        assert_eq!(
            sql,
            "INSERT INTO #stage_1 ([m_op], [m_hash], [m_key], [m_pos], [m_delta], [c0], [c1]) VALUES \
             (@P1, @P2, @P3, @P4, @P5, @P6, @P7), (@P8, @P9, @P10, @P11, @P12, @P13, @P14);"
        );
    }

    #[test]
    fn rows_per_insert_keeps_parameters_and_rows_within_limits() {
        assert_eq!(rows_per_insert(300), 6);
        assert!(rows_per_insert(300) * 305 <= 2100);
        assert_eq!(rows_per_insert(1), 333);
        assert_eq!(rows_per_insert(1024), 1);
        assert_eq!(rows_per_insert(5000), 1);
        for columns in 0..1100 {
            let rows = rows_per_insert(columns);
            assert!((1..=MAX_ROWS_PER_VALUES).contains(&rows));
            if columns + STAGE_META_COLUMNS <= MAX_PARAMS {
                assert!(
                    rows * (columns + STAGE_META_COLUMNS) <= MAX_PARAMS,
                    "{columns} columns"
                );
            }
        }
    }

    #[test]
    fn apply_merges_upserts_deletes_and_positions() {
        let sql = apply_sql("#stage_7", &keyed());
        for fragment in [
            "MERGE [cust_a].[orders] WITH (HOLDLOCK) AS tgt\nUSING (SELECT * FROM #stage_7 WHERE [m_op] = 0) AS src",
            "ON tgt.[id] = src.[c0]\n",
            "WHEN MATCHED AND EXISTS (SELECT CAST(CAST(src.[c1] AS NVARCHAR(MAX)) AS VARBINARY(MAX)), \
             DATALENGTH(src.[c1]), src.[c2] EXCEPT SELECT CAST(CAST(tgt.[note] AS NVARCHAR(MAX)) AS VARBINARY(MAX)), \
             DATALENGTH(tgt.[note]), tgt.[amount]) THEN UPDATE SET tgt.[note] = src.[c1], tgt.[amount] = src.[c2]\n",
            "WHEN NOT MATCHED BY TARGET THEN INSERT ([id], [note], [amount]) VALUES (src.[c0], src.[c1], src.[c2]);",
            "DELETE tgt FROM [cust_a].[orders] AS tgt JOIN #stage_7 AS src ON tgt.[id] = src.[c0]\nWHERE src.[m_op] = 1;",
            "MERGE [cdc_bridge].[row_positions] WITH (HOLDLOCK) AS tgt",
            "SELECT N'cust_a.orders' AS [table_id], st.[m_hash] AS [row_hash]",
            "CAST(CASE WHEN st.[m_op] = 1 THEN 1 ELSE 0 END AS BIT) AS [deleted]",
            "ON tgt.[table_id] = src.[table_id] AND tgt.[row_hash] = src.[row_hash]",
            "WHEN MATCHED THEN UPDATE SET tgt.[position] = src.[position], tgt.[deleted] = src.[deleted]",
            "DROP TABLE #stage_7;",
        ] {
            assert!(sql.contains(fragment), "missing {fragment:?} in:\n{sql}");
        }
    }

    #[test]
    fn unchanged_rows_are_compared_exactly() {
        let mut def = keyed();
        def.columns.truncate(1);
        def.columns.push(col("ratio", SqlType::Double, true));
        def.columns
            .push(col("scan", SqlType::Bytes { max_len: None }, true));
        def.columns.push(col("born", SqlType::Date, true));
        let sql = apply_sql("#stage_3", &def);
        let fragment = "WHEN MATCHED AND EXISTS (SELECT CAST(src.[c1] AS BINARY(8)), src.[c2], DATALENGTH(src.[c2]), \
                        src.[c3] EXCEPT SELECT CAST(tgt.[ratio] AS BINARY(8)), tgt.[scan], DATALENGTH(tgt.[scan]), \
                        tgt.[born]) THEN UPDATE SET tgt.[ratio] = src.[c1], tgt.[scan] = src.[c2], tgt.[born] = src.[c3]\n";
        assert!(sql.contains(fragment), "missing {fragment:?} in:\n{sql}");
    }

    #[test]
    fn apply_for_a_key_only_table_has_no_update() {
        let mut def = keyed();
        def.columns.truncate(1);
        let sql = apply_sql("#stage_1", &def);
        let table_merge = sql.split("MERGE [cdc_bridge]").next().unwrap_or_default();
        assert!(!table_merge.contains("WHEN MATCHED"), "{sql}");
        assert!(sql.contains("WHEN NOT MATCHED BY TARGET THEN INSERT ([id]) VALUES (src.[c0]);"));
    }

    #[test]
    fn apply_for_a_keyless_table_counts_and_removes_rows_at_zero() {
        let sql = apply_sql("#stage_2", &keyless());
        for fragment in [
            "USING (SELECT * FROM #stage_2 WHERE [m_op] = 2) AS src\nON tgt.[_cdc_row_key] = src.[m_hash]",
            "WHEN MATCHED THEN UPDATE SET tgt.[_cdc_count] = tgt.[_cdc_count] + src.[m_delta]",
            "WHEN NOT MATCHED BY TARGET AND src.[m_delta] > 0 THEN INSERT ([_cdc_row_key], [_cdc_count], [at], [msg]) \
             VALUES (src.[m_hash], src.[m_delta], src.[c0], src.[c1]);",
            "WHERE src.[m_op] = 1 OR tgt.[_cdc_count] <= 0;",
            "WHEN NOT EXISTS (SELECT 1 FROM [cust_a].[log] AS x WHERE x.[_cdc_row_key] = st.[m_hash]) THEN 1",
        ] {
            assert!(sql.contains(fragment), "missing {fragment:?} in:\n{sql}");
        }
    }

    fn claim(partition: i32, expected: Option<i64>, next: i64) -> OffsetClaim {
        OffsetClaim {
            partition,
            expected,
            next,
            source_position: "mysql-bin.000001:4".into(),
        }
    }

    #[test]
    fn claim_checks_every_partition_under_lock_before_moving_any() {
        let sql = claim_offsets_sql(&[claim(0, Some(10), 20), claim(1, None, 5)], true);
        let check_0 = "IF NOT EXISTS (SELECT 1 FROM [cdc_bridge].[sink_offsets] WITH (UPDLOCK, HOLDLOCK, ROWLOCK) \
             WHERE [consumer_group] = @P1 AND [topic] = @P2 AND [kafka_partition] = @P3 AND [next_offset] = @P5) \
             SET @ok = 0;";
        let check_1 =
            "IF EXISTS (SELECT 1 FROM [cdc_bridge].[sink_offsets] WITH (UPDLOCK, HOLDLOCK, ROWLOCK) \
             WHERE [consumer_group] = @P1 AND [topic] = @P2 AND [kafka_partition] = @P7) SET @ok = 0;";
        let update = "UPDATE [cdc_bridge].[sink_offsets] WITH (ROWLOCK) SET [next_offset] = @P4, \
             [source_position] = @P6, [updated_at] = SYSDATETIMEOFFSET() WHERE [consumer_group] = @P1 AND \
             [topic] = @P2 AND [kafka_partition] = @P3 AND [next_offset] = @P5;";
        let insert = "VALUES (@P1, @P2, @P7, @P8, @P10, SYSDATETIMEOFFSET());";
        for fragment in [
            check_0,
            check_1,
            "IF @ok = 1\nBEGIN\n",
            update,
            "IF @@ROWCOUNT <> 1 SET @ok = 0;",
            insert,
        ] {
            assert!(sql.contains(fragment), "missing {fragment:?} in:\n{sql}");
        }
        let order = |f: &str| sql.find(f).unwrap();
        assert!(order(check_1) < order("IF @ok = 1"));
        assert!(order("IF @ok = 1") < order(update));
        assert!(sql.ends_with("SELECT @ok;"));
        let check_only = claim_offsets_sql(&[claim(0, Some(10), 20)], false);
        assert!(
            !check_only.contains("UPDATE") && !check_only.contains("INSERT"),
            "{check_only}"
        );
        const { assert!(CLAIMS_PER_STATEMENT * 4 + 2 <= MAX_PARAMS) };
    }

    #[test]
    fn progress_and_lookups_number_their_parameters() {
        let sql = record_progress_sql(2);
        assert!(
            sql.contains("USING (VALUES (@P1, @P2, @P3, @P4), (@P5, @P6, @P7, @P8)) AS src"),
            "{sql}"
        );
        assert!(sql.contains("ON tgt.[tenant] = src.[tenant]"));
        const { assert!(PROGRESS_PER_STATEMENT * 4 <= MAX_PARAMS) };
        let sql = stored_positions_sql(3);
        assert!(sql.contains("WITH (UPDLOCK, HOLDLOCK, ROWLOCK)"));
        assert!(
            sql.ends_with("[table_id] = @P1 AND [row_hash] IN (@P2, @P3, @P4);"),
            "{sql}"
        );
        assert!(read_offsets_sql().contains("[consumer_group] = @P1 AND [topic] = @P2"));
    }

    #[test]
    fn decimal_text_becomes_numeric_when_it_fits() {
        let n = decimal_to_numeric("-123.4500").unwrap();
        assert_eq!((n.value(), n.scale()), (-1_234_500, 4));
        let n = decimal_to_numeric("0.05").unwrap();
        assert_eq!((n.value(), n.scale(), n.precision()), (5, 2, 3));
        let n = decimal_to_numeric("18446744073709551615").unwrap();
        assert_eq!((n.value(), n.scale()), (18_446_744_073_709_551_615, 0));
        let n = decimal_to_numeric("+7").unwrap();
        assert_eq!((n.value(), n.scale()), (7, 0));
        let max38 = "9".repeat(38);
        let n = decimal_to_numeric(&max38).unwrap();
        assert_eq!(n.value(), max38.parse::<i128>().unwrap());
        assert_eq!(n.precision(), 38);
        let n = decimal_to_numeric(&format!("-{}.{}", "9".repeat(20), "1".repeat(18))).unwrap();
        assert_eq!((n.scale(), n.precision()), (18, 38));
        // Beyond 38 digits, or not a plain decimal: bound as text.
        assert!(decimal_to_numeric(&"9".repeat(39)).is_none());
        assert!(decimal_to_numeric(&format!("0.{}", "1".repeat(38))).is_none());
        assert!(decimal_to_numeric("1e5").is_none());
        assert!(decimal_to_numeric("").is_none());
        assert!(decimal_to_numeric("-").is_none());
        assert!(decimal_to_numeric("1.2.3").is_none());
        let text = SqlValue::Decimal("9".repeat(50));
        assert_eq!(
            bind_value(
                &SqlType::Decimal {
                    precision: 50,
                    scale: 0
                },
                &text
            )
            .unwrap(),
            ColumnData::String(Some(Cow::Owned("9".repeat(50))))
        );
        // A wide column keeps its text even when it would fit a Numeric.
        let small = SqlValue::Decimal("1.5".into());
        assert!(matches!(
            bind_value(
                &SqlType::Decimal {
                    precision: 65,
                    scale: 1
                },
                &small
            )
            .unwrap(),
            ColumnData::String(_)
        ));
        assert!(matches!(
            bind_value(
                &SqlType::Decimal {
                    precision: 10,
                    scale: 1
                },
                &small
            )
            .unwrap(),
            ColumnData::Numeric(Some(_))
        ));
    }

    #[test]
    fn dates_count_days_from_year_one() {
        let d = |year, month, day| sql_date(&Date { year, month, day }).map(|d| d.days());
        assert_eq!(d(1, 1, 1), Some(0));
        assert_eq!(d(1970, 1, 1), Some(719_162));
        assert_eq!(d(2000, 3, 1), Some(730_179));
        assert_eq!(d(9999, 12, 31), Some(3_652_058));
        assert_eq!(d(2024, 2, 29).map(|x| x - d(2024, 2, 28).unwrap()), Some(1));
        assert_eq!(d(2023, 2, 29), None);
        assert_eq!(d(0, 1, 1), None);
        assert_eq!(d(2024, 13, 1), None);
        let dt = DateTime {
            date: Date {
                year: 1970,
                month: 1,
                day: 2,
            },
            hour: 13,
            minute: 45,
            second: 12,
            micros: 123_456,
        };
        let dt2 = sql_datetime2(&dt).unwrap();
        assert_eq!(dt2.date().days(), 719_163);
        assert_eq!(dt2.time().scale(), 7);
        assert_eq!(
            dt2.time().increments(),
            (13 * 3600 + 45 * 60 + 12) * 10_000_000 + 1_234_560
        );
    }

    #[test]
    fn instants_are_utc_at_offset_zero() {
        let dto = sql_instant(0).unwrap();
        assert_eq!(dto.offset(), 0);
        assert_eq!(dto.datetime2().date().days(), 719_162);
        assert_eq!(dto.datetime2().time().increments(), 0);
        // 2021-01-01T00:00:01.000001Z
        let dto = sql_instant(1_609_459_201_000_001).unwrap();
        assert_eq!(
            dto.datetime2().date().days(),
            sql_date(&Date {
                year: 2021,
                month: 1,
                day: 1
            })
            .unwrap()
            .days()
        );
        assert_eq!(dto.datetime2().time().increments(), 10_000_010);
        // One microsecond before the epoch: the last instant of 1969-12-31.
        let dto = sql_instant(-1).unwrap();
        assert_eq!(dto.datetime2().date().days(), 719_161);
        assert_eq!(
            dto.datetime2().time().increments(),
            (MICROS_PER_DAY as u64 - 1) * 10
        );
        assert!(sql_instant(i64::MAX).is_none());
        assert!(sql_instant(i64::MIN).is_none());
        assert!(matches!(
            bind_value(&SqlType::DateTimeOffset, &SqlValue::Instant(0)).unwrap(),
            ColumnData::DateTimeOffset(Some(_))
        ));
    }

    #[test]
    fn values_bind_to_their_column_types() {
        let ty_null = |ty: SqlType| bind_value(&ty, &SqlValue::Null).unwrap();
        assert_eq!(ty_null(SqlType::Uuid), ColumnData::Guid(None));
        assert_eq!(ty_null(SqlType::Date), ColumnData::Date(None));
        assert_eq!(ty_null(SqlType::Bits { width: 1 }), ColumnData::Bit(None));
        assert_eq!(ty_null(SqlType::Bits { width: 9 }), ColumnData::Binary(None));
        assert_eq!(
            ty_null(SqlType::Decimal {
                precision: 50,
                scale: 0
            }),
            ColumnData::String(None)
        );
        assert_eq!(
            bind_value(&SqlType::Duration, &SqlValue::Duration(-3_020_399_000_000)).unwrap(),
            ColumnData::I64(Some(-3_020_399_000_000))
        );
        assert_eq!(
            bind_value(&SqlType::Bits { width: 1 }, &SqlValue::Bits { width: 1, bits: 1 }).unwrap(),
            ColumnData::Bit(Some(true))
        );
        assert_eq!(
            bind_value(
                &SqlType::Bits { width: 10 },
                &SqlValue::Bits {
                    width: 10,
                    bits: 0x2a5
                }
            )
            .unwrap(),
            ColumnData::Binary(Some(Cow::Owned(vec![0x02, 0xa5])))
        );
        assert_eq!(bits_bytes(64, u64::MAX), vec![0xff; 8]);
        assert_eq!(bits_bytes(8, 0x80), vec![0x80]);
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        match bind_value(&SqlType::Uuid, &SqlValue::Uuid(uuid)).unwrap() {
            ColumnData::Guid(Some(u)) => assert_eq!(u.to_string(), "12345678-9abc-def0-0123-456789abcdef"),
            other => panic!("bound as {other:?}"),
        }
        let text = SqlValue::Text("x".into());
        assert_eq!(
            bind_value(&SqlType::Text { max_chars: None }, &text).unwrap(),
            ColumnData::String(Some(Cow::Borrowed("x")))
        );
        let bad = SqlValue::Date(Date {
            year: 0,
            month: 0,
            day: 0,
        });
        let reason = bind_value(&SqlType::Date, &bad).unwrap_err();
        assert!(!reason.contains("0000"), "the reason quotes the value: {reason}");
    }

    #[test]
    fn writes_are_checked_against_the_table() {
        let w = |row_key: &str, change: Change| RowWrite {
            row_key: row_key.into(),
            position: vec![1],
            change,
        };
        let def = keyed();
        assert!(check_writes(&def, &[w("1", Change::Delete(vec![SqlValue::Int(1)]))]).is_ok());
        let err = check_writes(&def, &[w("1", Change::Upsert(vec![SqlValue::Int(1)]))]).unwrap_err();
        assert!(
            err.message.contains("cust_a.orders") && !err.retriable,
            "{}",
            err.message
        );
        let twice = [
            w("1", Change::Delete(vec![SqlValue::Int(1)])),
            w("1", Change::Delete(vec![SqlValue::Int(1)])),
        ];
        assert!(check_writes(&def, &twice).is_err());
        let count = Change::Count {
            values: vec![SqlValue::Null, SqlValue::Null],
            delta: 1,
        };
        assert!(check_writes(&def, &[w("1", count.clone())]).is_err());
        assert!(check_writes(&keyless(), &[w("h", count)]).is_ok());
    }

    #[test]
    fn row_hash_is_sha256_of_the_key_text() {
        assert_eq!(
            row_hash("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn retriable_codes_are_the_transient_ones() {
        for code in [1205, 1222, 3960, 40197, 40501, 40613, 49918, 49919, 49920] {
            assert!(is_retriable_code(code), "{code}");
        }
        for code in [2627, 208, 207, 4060, 18456, 8152, 102] {
            assert!(!is_retriable_code(code), "{code}");
        }
        let io = tiberius::error::Error::Io {
            kind: std::io::ErrorKind::ConnectionReset,
            message: "reset".into(),
        };
        let (error, broken) = classify("write", "cust_a.orders", &io);
        assert!(error.retriable && broken);
        assert!(
            error
                .message
                .starts_with("sqlserver write cust_a.orders: I/O error"),
            "{}",
            error.message
        );
        let conversion =
            tiberius::error::Error::Conversion("cannot interpret String(Some(\"Jane Doe\"))".into());
        let (error, _) = classify("write", "cust_a.orders", &conversion);
        assert!(
            !error.retriable && !error.message.contains("Jane"),
            "{}",
            error.message
        );
    }

    #[test]
    fn urls_give_host_port_database_user_and_tls() {
        let o = ConnectOptions::parse(
            "sqlserver://cdc%40corp@db.example:14330/v2%20db?encrypt=true&trust_server_certificate=true",
        )
        .unwrap();
        assert_eq!(o.host, "db.example");
        assert_eq!(o.port, 14330);
        assert_eq!(o.database, "v2 db");
        assert_eq!(o.user, "cdc@corp");
        assert_eq!(o.encryption, EncryptionLevel::Required);
        assert!(o.trust_server_certificate);
        let o = ConnectOptions::parse("mssql://sa@localhost/cdc?encrypt=strict").unwrap();
        assert_eq!(
            (o.port, o.encryption, o.trust_server_certificate),
            (1433, EncryptionLevel::Strict, false)
        );
        let o = ConnectOptions::parse("sqlserver://sa@localhost/cdc?encrypt=false").unwrap();
        assert_eq!(o.encryption, EncryptionLevel::Off);
        assert!(ConnectOptions::parse("sqlserver://sa@localhost")
            .unwrap_err()
            .contains("database"));
        assert!(ConnectOptions::parse("sqlserver://localhost/cdc")
            .unwrap_err()
            .contains("user"));
        assert!(
            ConnectOptions::parse("sqlserver://sa@localhost/cdc?encrypt=maybe")
                .unwrap_err()
                .contains("encrypt")
        );
        assert!(
            ConnectOptions::parse("sqlserver://sa@localhost/cdc?trustServerCertificate=true")
                .unwrap_err()
                .contains("unknown parameter")
        );
        assert!(ConnectOptions::parse("postgres://sa@localhost/cdc").is_err());
    }

    /// The sink may run a target on a spawned task: its futures must be Send.
    #[allow(dead_code)]
    fn futures_are_send(t: &mut SqlServerTarget, def: &TableDef, writes: &[RowWrite], keys: &[&str]) {
        fn send<T: Send>(_: T) {}
        send(t.write(def, writes));
        send(t.stored_positions(def, keys));
        send(t.claim_offsets("g", "t", &[]));
        send(t.ensure_table(def));
        send(t.record_progress(&[]));
        send(t.rollback());
    }

    #[test]
    fn verify_reads_rows_as_text_filtered_by_tenant() {
        let def = TableDef {
            schema: "dbo".into(),
            name: "Patients".into(),
            columns: vec![
                ColumnDef {
                    name: "Id".into(),
                    ty: SqlType::Uuid,
                    nullable: false,
                },
                ColumnDef {
                    name: "TenantId".into(),
                    ty: SqlType::Text { max_chars: Some(64) },
                    nullable: false,
                },
                ColumnDef {
                    name: "CreatedAtUtc".into(),
                    ty: SqlType::DateTimeOffset,
                    nullable: true,
                },
            ],
            key: vec![0],
            scope: String::new(),
        };
        let sql = read_table_sql(&def, Some("TenantId")).unwrap();
        assert_eq!(
            sql,
            "SELECT LOWER(CONVERT(NVARCHAR(36), [Id])), CONVERT(NVARCHAR(MAX), [TenantId]), \
             CONVERT(NVARCHAR(26), CAST(SWITCHOFFSET([CreatedAtUtc], '+00:00') AS DATETIME2(6)), 121) + N'+00' \
             FROM [dbo].[Patients] AS t WHERE t.[TenantId] = @P1;"
        );
        assert!(read_table_sql(&def, Some("Nope")).is_err());
        let keyless = TableDef { key: vec![], ..def };
        assert!(read_table_sql(&keyless, None)
            .unwrap()
            .contains("SELECT TOP (t.[_cdc_count]) 1"));
        assert_eq!(
            read_table_value(&SqlType::DateTimeOffset, Some("1970-01-01 00:00:01.000001+00")).unwrap(),
            SqlValue::Instant(1_000_001)
        );
        assert_eq!(
            read_table_value(&SqlType::Duration, Some("-1")).unwrap(),
            SqlValue::Duration(-1)
        );
        assert_eq!(read_table_value(&SqlType::Int, None).unwrap(), SqlValue::Null);
    }

    #[test]
    fn deferred_documents_are_merged_with_bound_keys_and_taken_by_tenant() {
        let docs = vec![
            DeferredDoc {
                id: vec![0xAB, 0x01],
                kind: "assessment".into(),
                tenant: "t'1".into(),
                root_key: "{\"id\":\"1\"}".into(),
            },
            DeferredDoc {
                id: vec![0xAB, 0x02],
                kind: "assessment".into(),
                tenant: "t2".into(),
                root_key: "{\"id\":\"2\"}".into(),
            },
        ];
        assert_eq!(
            defer_documents_sql(&docs),
            "MERGE [cdc_bridge].[doc_pending] WITH (HOLDLOCK) AS d USING (VALUES \
             (0xAB01, N'assessment', N't''1', @P1), (0xAB02, N'assessment', N't2', @P2)) \
             AS s ([doc], [kind], [tenant], [root_key]) ON d.[doc] = s.[doc] WHEN NOT MATCHED THEN \
             INSERT ([doc], [kind], [tenant], [root_key]) VALUES (s.[doc], s.[kind], s.[tenant], s.[root_key]);"
        );
        assert_eq!(
            take_deferred_sql(&["t'1", "t2"], 2000),
            "DELETE TOP (2000) FROM [cdc_bridge].[doc_pending] OUTPUT deleted.[doc], deleted.[kind], deleted.[tenant], \
             deleted.[root_key] WHERE [tenant] IN (N't''1', N't2');"
        );
    }

    #[test]
    fn content_hashes_are_computed_by_the_server_seeking_the_key() {
        let def = TableDef {
            schema: "dbo".into(),
            name: "LegacyDocuments".into(),
            columns: vec![
                ColumnDef {
                    name: "Id".into(),
                    ty: SqlType::Uuid,
                    nullable: false,
                },
                ColumnDef {
                    name: "Content".into(),
                    ty: SqlType::Bytes { max_len: None },
                    nullable: true,
                },
            ],
            key: vec![0],
            scope: String::new(),
        };
        assert_eq!(
            content_hash_sql(&def, "Content").unwrap(),
            "SELECT HASHBYTES('SHA2_256', [Content]) FROM [dbo].[LegacyDocuments] WHERE [Id] = @P1;"
        );
        assert!(content_hash_sql(
            &TableDef {
                key: vec![0, 1],
                ..def
            },
            "Content"
        )
        .is_err());
    }
}
