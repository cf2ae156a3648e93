//! What a sink writes, independent of the database it writes to, and the
//! [`Target`] trait each database implements.
//!
//! The sink decides *what* to write (which rows, at which source position, after
//! the position guard); a target only knows *how*: creating tables, staging rows
//! and applying them set-based, keeping the offsets and row positions it is asked
//! to keep, inside one transaction per batch.

use std::collections::HashMap;
use std::fmt;

pub use crate::event::{Date, DateTime};

/// A column's type in the target, chosen by the mirror (from the v1 column) or by a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlType {
    Bool,
    SmallInt,
    Int,
    BigInt,
    /// Exact; precision up to 38 everywhere, up to 65 where the target allows it.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Real,
    Double,
    Date,
    /// Wall-clock date and time without zone, microseconds.
    DateTime,
    /// An instant (UTC), microseconds.
    DateTimeOffset,
    /// A signed duration in microseconds (MySQL TIME: -838:59:59 to 838:59:59).
    Duration,
    /// Unicode text; `None` = unbounded.
    Text {
        max_chars: Option<u32>,
    },
    /// Bytes; `None` = unbounded.
    Bytes {
        max_len: Option<u32>,
    },
    /// A bit string of this width (1..=64).
    Bits {
        width: u8,
    },
    Json,
    Uuid,
}

/// One value as a target binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    /// Exact decimal text: `-123.4500`.
    Decimal(String),
    Real(f32),
    Double(f64),
    Date(Date),
    DateTime(DateTime),
    /// Microseconds since the Unix epoch, UTC.
    Instant(i64),
    /// Signed microseconds.
    Duration(i64),
    Text(String),
    Bytes(Vec<u8>),
    Bits {
        width: u8,
        bits: u64,
    },
    Json(String),
    Uuid([u8; 16]),
}

impl SqlValue {
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }

    /// Approximate size in bytes, for batch accounting.
    pub fn size(&self) -> usize {
        match self {
            SqlValue::Decimal(s) | SqlValue::Text(s) | SqlValue::Json(s) => s.len(),
            SqlValue::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

/// A column of a target table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
}

/// Name of the synthetic key column of a table without a primary key.
pub const ROW_KEY_COLUMN: &str = "_cdc_row_key";
/// Name of the multiplicity column of a table without a primary key.
pub const COUNT_COLUMN: &str = "_cdc_count";

/// A target table. A table without a key (`key` empty) is kept as a multiset:
/// one row per distinct v1 row, identified by [`ROW_KEY_COLUMN`] (a hash of all
/// its values) and counted in [`COUNT_COLUMN`], so identical v1 rows stay distinct
/// in number: deleting one of two leaves one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableDef {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Indexes into `columns` of the primary key, in key order.
    pub key: Vec<usize>,
    /// Which writer of the table these columns are (a mapping's v1 source):
    /// several sources may each write some columns of one v2 table, and each
    /// keeps its own row positions. Empty for a table with one writer.
    pub scope: String,
}

impl TableDef {
    /// `schema.name` (`schema.name@scope` for a scoped writer), as rows are
    /// identified in the row-position table.
    pub fn id(&self) -> String {
        if self.scope.is_empty() {
            format!("{}.{}", self.schema, self.name)
        } else {
            format!("{}.{}@{}", self.schema, self.name, self.scope)
        }
    }

    pub fn is_keyless(&self) -> bool {
        self.key.is_empty()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.key.iter().map(|&i| &self.columns[i])
    }
}

/// What one (collapsed) change does to one target row.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace the row; values in [`TableDef::columns`] order.
    Upsert(Vec<SqlValue>),
    /// Delete the row; values of the key columns in key order.
    Delete(Vec<SqlValue>),
    /// Keyless tables: add `delta` (negative to remove) copies of the row with
    /// these values (in column order); a row whose count reaches 0 is deleted.
    Count { values: Vec<SqlValue>, delta: i64 },
}

/// One row write with the identity and source position the guard keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// Canonical text of the key (or, keyless, the row hash): the row's identity
    /// in the row-position table.
    pub row_key: String,
    /// Sortable source position (see [`crate::sink::position_key`]).
    pub position: Vec<u8>,
    pub change: Change,
}

/// The claim a batch makes on one partition: it applies the messages from
/// `expected` (the next offset the target has stored, `None` when it has none)
/// up to `next` (exclusive). The claim fails when another sink moved the
/// partition since, and the whole batch is rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetClaim {
    pub partition: i32,
    pub expected: Option<i64>,
    pub next: i64,
    /// Display form of the source position reached, for operators.
    pub source_position: String,
}

/// Per tenant, the last source position a batch applied (for status and lag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantProgress {
    pub tenant: String,
    pub source_position: String,
    pub position_key: Vec<u8>,
    pub commit_time_micros: i64,
}

/// A stored v1 row of the document state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub table: String,
    pub key: String,
    pub changed_micros: i64,
    /// The row image (postcard).
    pub data: Vec<u8>,
}

/// One document's bookkeeping after a render (or its removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRecord {
    /// The document's identity hash.
    pub id: Vec<u8>,
    pub kind: String,
    pub tenant: String,
    pub root_key: String,
    /// `None`: the document is gone.
    pub sha256: Option<Vec<u8>>,
    pub pages: i32,
    /// Entry hashes of the rows it read beyond its root and items.
    pub deps: Vec<Vec<u8>>,
}

/// A document whose render waits until its tenant's snapshot has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredDoc {
    /// The document's identity hash.
    pub id: Vec<u8>,
    pub kind: String,
    pub tenant: String,
    pub root_key: String,
}

/// Why a target operation failed, and whether trying again can help.
#[derive(Debug)]
pub struct TargetError {
    pub retriable: bool,
    pub message: String,
}

impl TargetError {
    pub fn fatal(message: impl Into<String>) -> Self {
        TargetError {
            retriable: false,
            message: message.into(),
        }
    }

    pub fn retriable(message: impl Into<String>) -> Self {
        TargetError {
            retriable: true,
            message: message.into(),
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TargetError {}

/// A v2 database the sink writes to.
///
/// Bookkeeping lives in the target's `cdc_bridge` schema:
/// - `sink_offsets (consumer_group, topic, kafka_partition) → next_offset, source_position`
/// - `row_positions (table_id, row_key) → position, deleted`: the position guard and tombstones
/// - `applied (tenant) → source_position, position_key, commit_time_micros`
/// - documents: `doc_rows (entry) → parent, kind, tenant, tbl, row_key, changed_micros, data`
///   (written with [`Target::write`]), `doc_deps (dep, doc) → root_key` and
///   `documents (doc) → kind, tenant, root_key, sha256, pages`,
///   `doc_pending (doc) → kind, tenant, root_key` (renders waiting for a snapshot to end)
///
/// A batch is `begin`, `claim_offsets` (live) or nothing (replay),
/// `lock_tenants`, then per table `stored_positions` and `write`, then
/// `record_progress` and `commit`; any error leaves the transaction to `rollback`.
#[allow(async_fn_in_trait)]
pub trait Target: Send {
    /// Connects with the target's settings (the password from its secret reference).
    async fn connect(cfg: &crate::config::TargetConfig) -> Result<Self, TargetError>
    where
        Self: Sized;

    /// `postgres` or `sqlserver`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Creates the bookkeeping schema and tables where missing.
    async fn prepare(&mut self) -> Result<(), TargetError>;

    /// The next offset stored per partition for this group and topic.
    async fn read_offsets(&mut self, group: &str, topic: &str) -> Result<HashMap<i32, i64>, TargetError>;

    /// Creates the table (and its schema) if missing and adds the columns it
    /// lacks; returns the table as it now is (existing columns it has beyond
    /// `def` are kept and made nullable, never dropped).
    async fn ensure_table(&mut self, def: &TableDef) -> Result<TableDef, TargetError>;

    /// The table as the target's catalog describes it, or `None` when it does not exist.
    async fn describe_table(&mut self, schema: &str, table: &str) -> Result<Option<TableDef>, TargetError>;

    /// Renames a column when `from` exists and `to` does not; returns whether it did.
    async fn rename_column(
        &mut self,
        schema: &str,
        table: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, TargetError>;

    async fn begin(&mut self) -> Result<(), TargetError>;

    /// Moves each partition's stored offset from `expected` to `next`; false
    /// (and nothing changed) when any partition's stored offset is not `expected`.
    async fn claim_offsets(
        &mut self,
        group: &str,
        topic: &str,
        claims: &[OffsetClaim],
    ) -> Result<bool, TargetError>;

    /// Serializes a replay's batch against the live sinks' batches of the same
    /// tenants until the transaction ends: live batches lock their tenants
    /// shared (they never wait for each other), a replay exclusive. Without it
    /// a row neither had stored yet could be written by both, the older
    /// position last. `tenants` sorted, so lockers never wait in a cycle.
    async fn lock_tenants(&mut self, tenants: &[&str], exclusive: bool) -> Result<(), TargetError>;

    /// The stored position of each of these rows that has one (tombstones included).
    async fn stored_positions(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, TargetError>;

    /// Which of these rows of `table` are deleted (have a tombstone).
    async fn deleted_rows(
        &mut self,
        table: &TableDef,
        row_keys: &[&str],
    ) -> Result<std::collections::HashSet<String>, TargetError>;

    /// Applies the writes (one per row key) and stores their positions.
    async fn write(&mut self, table: &TableDef, writes: &[RowWrite]) -> Result<(), TargetError>;

    async fn record_progress(&mut self, progress: &[TenantProgress]) -> Result<(), TargetError>;

    /// Every tenant's recorded progress, with the age of its last update in seconds.
    async fn read_applied(&mut self) -> Result<Vec<(TenantProgress, f64)>, TargetError>;

    /// Stored document state rows by entry hash.
    async fn doc_rows(&mut self, entries: &[Vec<u8>]) -> Result<Vec<StoredRow>, TargetError>;

    /// Stored document state rows by parent hash (the items of documents).
    async fn doc_children(&mut self, parents: &[Vec<u8>]) -> Result<Vec<StoredRow>, TargetError>;

    /// Root keys of the documents that read any of these entries.
    async fn doc_dependents(&mut self, deps: &[Vec<u8>]) -> Result<Vec<String>, TargetError>;

    /// The stored content hash of each of these documents that has one.
    async fn doc_hashes(&mut self, docs: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Vec<u8>>, TargetError>;

    /// Records documents whose render waits for their tenant's snapshot to end
    /// (already recorded ones stay).
    async fn defer_documents(&mut self, docs: &[DeferredDoc]) -> Result<(), TargetError>;

    /// Removes and returns deferred documents of these tenants, at most `limit`.
    async fn take_deferred(
        &mut self,
        tenants: &[&str],
        limit: usize,
    ) -> Result<Vec<DeferredDoc>, TargetError>;

    /// How many documents wait per tenant.
    async fn deferred_counts(&mut self) -> Result<HashMap<String, u64>, TargetError>;

    /// SHA-256 of column `content` of the rows of `table` whose (single) key
    /// is each of `ids`, in `ids` order; `None` where the row or its content
    /// is missing. Computed by the server, so documents are not read back.
    async fn content_hashes(
        &mut self,
        table: &TableDef,
        content: &str,
        ids: &[SqlValue],
    ) -> Result<Vec<Option<Vec<u8>>>, TargetError>;

    /// Replaces each document's hash and dependencies (removes both when `sha256` is `None`).
    async fn record_documents(&mut self, docs: &[DocRecord]) -> Result<(), TargetError>;

    async fn commit(&mut self) -> Result<(), TargetError>;

    /// Every row of `table` (its columns, in order; a keyless table's row once
    /// per copy), or only those whose column `filter.0` equals `filter.1`. For
    /// comparisons (`verify`), outside any batch.
    async fn read_table(
        &mut self,
        table: &TableDef,
        filter: Option<(&str, &SqlValue)>,
    ) -> Result<Vec<Vec<SqlValue>>, TargetError>;

    /// Rolls back an open transaction; errors are logged, the connection reset if needed.
    async fn rollback(&mut self);
}
