//! `cdc-bridge verify --tenant T`: v1 and v2 compared through the mapping.
//!
//! # What is compared
//! A consistent snapshot of the tenant's v1 database is read exactly as the
//! source reads it (the same view, decoding and table selection) and turned
//! into snapshot-read change events at the view's position. Those go through
//! the transform the sink uses (mirror mode: [`crate::sink::mirror`] and
//! [`crate::sink::apply::mirror_writes`]; mapping mode:
//! [`crate::transform::mapping::Mapping::apply`] over the v2 catalog's
//! projections), and the resulting writes, collapsed per row, are the expected
//! v2 state. Document rules render the expected documents from the same rows;
//! their v2 rows are compared by content hash (the rule's `sha256` column, or
//! the hash of the content column when there is none), never by render time.
//!
//! Per table, the row counts and an order-independent hash (the sum modulo
//! 2^256 of each row's SHA-256 over a canonical encoding of the compared
//! columns) are compared. When they differ, the sorted keys are split into
//! ranges whose hashes are compared on both sides, recursing into differing
//! ranges down to single keys, which are then listed as missing, extra or
//! different. Values are never printed unless asked for (`--show-values`):
//! v1 holds patient data.
//!
//! # Waiting for the sink
//! v2 is read once the sink has applied the tenant up to the snapshot position:
//! either `cdc_bridge.applied` holds a position for the tenant at or after the
//! snapshot's, or (an idle tenant, whose applied position only moves when its
//! own events arrive) the source has published everything up to the snapshot
//! position (its committed checkpoint is at or after it) and the change topic
//! holds no committed change of the tenant (watermarks aside) after the
//! offsets the target stores for the sink's group. Either way, every change
//! of the tenant before the snapshot is applied.
//!
//! # A tenant that keeps changing
//! v2 keeps moving while verify runs. A differing row whose stored position
//! (`cdc_bridge.row_positions`, any writer of the table) is after the
//! snapshot position (a transaction at or after its coordinates) was changed
//! after the snapshot: it is set aside, counted as `changed_after_snapshot`
//! and not compared, and the table is compared without it. Keyless tables
//! have no such positions: verify them quiet.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, SinkConfig, SinkMode, SourceConfig, TargetConfig, TargetKind};
use crate::documents::model::{Rows, StateRow};
use crate::documents::rule::{DocColumn, DocField};
use crate::documents::store::{entry_hash, key_text, row_key_text};
use crate::event::{ChangeEvent, Operation, Phase, Row, SourcePosition, TransactionInfo};
use crate::sink::apply::{self, canonical, position_key, row_hash, row_key};
use crate::sink::mirror;
use crate::sink::target::{Change, ColumnDef, RowWrite, SqlType, SqlValue, TableDef, Target, TargetError};
use crate::source::schema::TableSchema;
use crate::source::{binlog, snapshot, Selection};
use crate::transform::mapping::Mapping;

/// Differing keys listed per table and kind.
pub const LIST_LIMIT: usize = 20;
/// Ranges of at most this many keys are compared key by key.
const LEAF_KEYS: usize = 8;
/// Ranges are split into this many parts.
const FAN_OUT: usize = 4;
const SNAPSHOT_CHUNK_ROWS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub tenant: String,
    pub target: Option<String>,
    pub timeout: Duration,
    pub show_values: bool,
}

/// Why verify could not come to a verdict (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("v1: {0}")]
    Source(#[from] crate::source::SourceError),
    #[error("v1: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("target: {0}")]
    Target(#[from] TargetError),
    #[error("Kafka: {0}")]
    Transport(Box<crate::transport::TransportError>),
    #[error("Kafka: {0}")]
    Publish(#[from] crate::transport::publisher::PublishError),
    #[error("{table}: {reason}")]
    Transform { table: String, reason: String },
    #[error("timed out after {secs} s waiting for the sink: {waiting_for}")]
    Timeout { secs: u64, waiting_for: String },
}

impl From<crate::transport::TransportError> for VerifyError {
    fn from(e: crate::transport::TransportError) -> Self {
        VerifyError::Transport(Box::new(e))
    }
}

/// One differing row: its v2 key, the v1 row it derives from, and (only with
/// `--show-values`) the values.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub key: String,
    pub v1_key: Option<String>,
    /// Names of the columns that differ (for `different`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<BTreeMap<String, Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub expected_rows: u64,
    pub v2_rows: u64,
    pub expected_hash: String,
    pub v2_hash: String,
    pub equal: bool,
    /// Key ranges whose hashes were compared while narrowing down.
    pub ranges_compared: usize,
    /// v1 rows the transform rejects (the sink dead-letters them: absent from v2 too).
    pub rejected_v1_rows: usize,
    /// Differing rows v2 holds at a position after the snapshot's (changed
    /// since): not compared.
    pub changed_after_snapshot: usize,
    pub missing_total: usize,
    pub extra_total: usize,
    pub different_total: usize,
    pub missing: Vec<DiffRow>,
    pub extra: Vec<DiffRow>,
    pub different: Vec<DiffRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant: String,
    pub database: String,
    pub mode: &'static str,
    pub target: String,
    pub snapshot_position: String,
    /// Which rule of the wait was met.
    pub sink_caught_up: String,
    pub equal: bool,
    pub tables: Vec<TableReport>,
}

impl Report {
    /// The per-table table, then the differing keys.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verify tenant {} (v1 database {}, {} mode, target {}) at {}",
            self.tenant, self.database, self.mode, self.target, self.snapshot_position
        );
        let _ = writeln!(out, "sink: {}", self.sink_caught_up);
        let width = self
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "{:width$}  {:>13}  {:>8}  {:16}  {:16}  STATUS",
            "TABLE", "EXPECTED ROWS", "V2 ROWS", "EXPECTED HASH", "V2 HASH"
        );
        for t in &self.tables {
            let _ = writeln!(
                out,
                "{:width$}  {:>13}  {:>8}  {:16}  {:16}  {}",
                t.table,
                t.expected_rows,
                t.v2_rows,
                &t.expected_hash[..16],
                &t.v2_hash[..16],
                if t.equal { "ok" } else { "DIFFERENT" }
            );
        }
        for t in self.tables.iter().filter(|t| t.changed_after_snapshot > 0) {
            let _ = writeln!(
                out,
                "{}: {} rows changed after the snapshot position, not compared",
                t.table, t.changed_after_snapshot
            );
        }
        for t in self.tables.iter().filter(|t| !t.equal) {
            let _ = writeln!(
                out,
                "\n{}: {} missing, {} extra, {} different ({} key ranges compared)",
                t.table, t.missing_total, t.extra_total, t.different_total, t.ranges_compared
            );
            for (kind, rows, total) in [
                ("missing", &t.missing, t.missing_total),
                ("extra", &t.extra, t.extra_total),
                ("different", &t.different, t.different_total),
            ] {
                for r in rows {
                    let _ = write!(out, "  {kind:9} {}", r.key);
                    if let Some(v1) = &r.v1_key {
                        let _ = write!(out, "  (v1 {v1})");
                    }
                    if !r.columns.is_empty() {
                        let _ = write!(out, "  columns: {}", r.columns.join(", "));
                    }
                    out.push('\n');
                    for (side, values) in [("expected", &r.expected), ("v2", &r.actual)] {
                        if let Some(values) = values {
                            let _ = writeln!(out, "            {side}: {}", values_text(values));
                        }
                    }
                }
                if total > rows.len() {
                    let _ = writeln!(out, "  ... {} more {kind}", total - rows.len());
                }
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.equal {
                "verify: v1 and v2 are equal"
            } else {
                "verify: v1 and v2 DIFFER"
            }
        );
        out
    }
}

fn values_text(values: &BTreeMap<String, Option<String>>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of one side.
#[derive(Debug, Clone)]
struct Entry {
    values: Vec<SqlValue>,
    /// Copies of a keyless table's row; 1 otherwise.
    count: i64,
    v1_key: Option<String>,
}

/// Row digests by row key.
type Digests<'a> = BTreeMap<&'a str, [u8; 32]>;

/// One compared v2 table: its columns and the expected and actual rows by row key.
struct Compared {
    label: String,
    columns: Vec<ColumnDef>,
    key: Vec<usize>,
    expected: BTreeMap<String, Entry>,
    actual: BTreeMap<String, Entry>,
    rejected: usize,
    /// The tables (with their writer scopes) under which the sink stores the
    /// rows' positions.
    writers: Vec<TableDef>,
    /// Rows set aside as changed after the snapshot.
    moved: usize,
}

impl Compared {
    fn new(label: String, columns: Vec<ColumnDef>, key: Vec<usize>) -> Compared {
        Compared {
            label,
            columns,
            key,
            expected: BTreeMap::new(),
            actual: BTreeMap::new(),
            rejected: 0,
            writers: Vec::new(),
            moved: 0,
        }
    }

    /// Row digests of both sides.
    fn digests(&self) -> (Digests<'_>, Digests<'_>) {
        (
            self.expected
                .iter()
                .map(|(k, e)| (k.as_str(), self.row_digest(e)))
                .collect(),
            self.actual
                .iter()
                .map(|(k, e)| (k.as_str(), self.row_digest(e)))
                .collect(),
        )
    }

    /// Sets aside the differing rows that v2 holds at a position after
    /// `snapshot` (changed since): they are not compared.
    async fn set_aside_changed<T: Target>(
        &mut self,
        target: &mut T,
        snapshot: &[u8],
    ) -> Result<(), VerifyError> {
        if self.keyless() || self.writers.is_empty() {
            return Ok(());
        }
        let (exp, act) = self.digests();
        let (differing, _) = differing(&exp, &act);
        let differing: Vec<String> = differing.into_iter().map(str::to_owned).collect();
        let mut moved = std::collections::BTreeSet::new();
        for chunk in differing.chunks(1000) {
            let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for def in &self.writers {
                for (key, position) in target.stored_positions(def, &keys).await? {
                    if position.as_slice() > snapshot {
                        moved.insert(key);
                    }
                }
            }
        }
        for key in &moved {
            self.expected.remove(key);
            self.actual.remove(key);
        }
        self.moved = moved.len();
        Ok(())
    }

    fn keyless(&self) -> bool {
        self.key.is_empty()
    }

    /// Applies one write; `slots` maps the write's columns to ours.
    fn expect(&mut self, w: RowWrite, slots: &[usize], v1_key: &str) {
        let width = self.columns.len();
        match w.change {
            Change::Upsert(values) => {
                let entry = self.expected.entry(w.row_key).or_insert_with(|| Entry {
                    values: vec![SqlValue::Null; width],
                    count: 1,
                    v1_key: Some(v1_key.to_owned()),
                });
                for (v, &slot) in values.into_iter().zip(slots) {
                    entry.values[slot] = v;
                }
            }
            Change::Delete(_) => {
                self.expected.remove(&w.row_key);
            }
            Change::Count { values, delta } => {
                let entry = self.expected.entry(w.row_key.clone()).or_insert_with(|| Entry {
                    values,
                    count: 0,
                    v1_key: Some(v1_key.to_owned()),
                });
                entry.count += delta;
                if entry.count <= 0 {
                    self.expected.remove(&w.row_key);
                }
            }
        }
    }

    /// Adds rows read from v2 (in our column order).
    fn read(&mut self, rows: Vec<Vec<SqlValue>>) {
        for values in rows {
            if self.keyless() {
                let key = row_hash(&values);
                self.actual
                    .entry(key)
                    .or_insert_with(|| Entry {
                        values,
                        count: 0,
                        v1_key: None,
                    })
                    .count += 1;
            } else {
                let key: Vec<&SqlValue> = self.key.iter().map(|&i| &values[i]).collect();
                let key = row_key(&key);
                self.actual.insert(
                    key,
                    Entry {
                        values,
                        count: 1,
                        v1_key: None,
                    },
                );
            }
        }
    }

    /// The row's hash over the canonical encoding of its compared columns.
    fn row_digest(&self, e: &Entry) -> [u8; 32] {
        let mut parts: Vec<serde_json::Value> = self
            .columns
            .iter()
            .zip(&e.values)
            .map(|(c, v)| {
                canonical_value(&c.ty, v).map_or(serde_json::Value::Null, serde_json::Value::String)
            })
            .collect();
        if self.keyless() {
            parts.push(serde_json::Value::from(e.count));
        }
        let text = serde_json::Value::Array(parts).to_string();
        Sha256::digest(text.as_bytes()).into()
    }

    fn key_display(&self, row_key: &str, e: &Entry) -> String {
        if self.keyless() {
            return format!("(row hash {})", &row_key[..16.min(row_key.len())]);
        }
        self.key
            .iter()
            .map(|&i| {
                let name = &self.columns[i].name;
                let v = match &e.values[i] {
                    SqlValue::Uuid(u) => uuid::Uuid::from_bytes(*u).to_string(),
                    other => canonical(other),
                };
                format!("{name}={v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn shown(&self, e: &Entry, only: Option<&[String]>) -> BTreeMap<String, Option<String>> {
        self.columns
            .iter()
            .zip(&e.values)
            .filter(|(c, _)| only.is_none_or(|o| o.contains(&c.name)))
            .map(|(c, v)| (c.name.clone(), display_value(&c.ty, v)))
            .collect()
    }

    fn compare(&self, show_values: bool) -> TableReport {
        let (exp, act) = self.digests();
        let count = |m: &BTreeMap<String, Entry>| m.values().map(|e| e.count.max(0) as u64).sum::<u64>();
        let (expected_rows, v2_rows) = (count(&self.expected), count(&self.actual));
        let expected_hash = sum_hashes(exp.values());
        let v2_hash = sum_hashes(act.values());
        let mut report = TableReport {
            table: self.label.clone(),
            expected_rows,
            v2_rows,
            expected_hash: hex(&expected_hash),
            v2_hash: hex(&v2_hash),
            equal: expected_rows == v2_rows && expected_hash == v2_hash,
            ranges_compared: 0,
            rejected_v1_rows: self.rejected,
            changed_after_snapshot: self.moved,
            missing_total: 0,
            extra_total: 0,
            different_total: 0,
            missing: Vec::new(),
            extra: Vec::new(),
            different: Vec::new(),
        };
        if report.equal {
            return report;
        }
        let (differing, ranges) = differing(&exp, &act);
        report.ranges_compared = ranges;
        for k in differing {
            match (self.expected.get(k), self.actual.get(k)) {
                (Some(e), None) => {
                    report.missing_total += 1;
                    if report.missing.len() < LIST_LIMIT {
                        report.missing.push(DiffRow {
                            key: self.key_display(k, e),
                            v1_key: e.v1_key.clone(),
                            columns: Vec::new(),
                            expected: show_values.then(|| self.shown(e, None)),
                            actual: None,
                        });
                    }
                }
                (None, Some(a)) => {
                    report.extra_total += 1;
                    if report.extra.len() < LIST_LIMIT {
                        report.extra.push(DiffRow {
                            key: self.key_display(k, a),
                            v1_key: None,
                            columns: Vec::new(),
                            expected: None,
                            actual: show_values.then(|| self.shown(a, None)),
                        });
                    }
                }
                (Some(e), Some(a)) => {
                    report.different_total += 1;
                    if report.different.len() < LIST_LIMIT {
                        let mut columns: Vec<String> = self
                            .columns
                            .iter()
                            .enumerate()
                            .filter(|(i, c)| {
                                canonical_value(&c.ty, &e.values[*i]) != canonical_value(&c.ty, &a.values[*i])
                            })
                            .map(|(_, c)| c.name.clone())
                            .collect();
                        if e.count != a.count {
                            columns.push("(copies)".to_owned());
                        }
                        report.different.push(DiffRow {
                            key: self.key_display(k, e),
                            v1_key: e.v1_key.clone(),
                            expected: show_values.then(|| self.shown(e, Some(&columns))),
                            actual: show_values.then(|| self.shown(a, Some(&columns))),
                            columns,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        report
    }
}

/// Compares the hashes of the range `keys` on both sides; recurses into the
/// parts of a differing range and collects the differing keys of small ones.
fn narrow<'a>(
    keys: &[&'a str],
    exp: &BTreeMap<&str, [u8; 32]>,
    act: &BTreeMap<&str, [u8; 32]>,
    out: &mut Vec<&'a str>,
    ranges: &mut usize,
) {
    if keys.is_empty() {
        return;
    }
    *ranges += 1;
    let side = |m: &BTreeMap<&str, [u8; 32]>| {
        let present: Vec<&[u8; 32]> = keys.iter().filter_map(|k| m.get(k)).collect();
        (present.len(), sum_hashes(present.into_iter()))
    };
    if side(exp) == side(act) {
        return;
    }
    if keys.len() <= LEAF_KEYS {
        out.extend(keys.iter().filter(|k| exp.get(*k) != act.get(*k)));
        return;
    }
    for part in keys.chunks(keys.len().div_ceil(FAN_OUT)) {
        narrow(part, exp, act, out, ranges);
    }
}

/// The keys whose rows differ (found by narrowing), and how many key ranges
/// that compared.
fn differing<'a>(exp: &Digests<'a>, act: &Digests<'a>) -> (Vec<&'a str>, usize) {
    let mut ranges = 0;
    if exp.len() == act.len() && sum_hashes(exp.values()) == sum_hashes(act.values()) {
        return (Vec::new(), ranges);
    }
    let mut keys: Vec<&str> = exp.keys().chain(act.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    narrow(&keys, exp, act, &mut out, &mut ranges);
    (out, ranges)
}

/// Sum modulo 2^256 of big-endian 256-bit numbers: independent of order.
fn sum_hashes<'a>(hashes: impl Iterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut acc = [0u8; 32];
    for h in hashes {
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let s = u16::from(acc[i]) + u16::from(h[i]) + carry;
            acc[i] = s as u8;
            carry = s >> 8;
        }
    }
    acc
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `12.50` for `12.5` in a column of scale 2: decimals compared by value at the
/// column's scale, whichever side wrote them.
fn decimal_text(text: &str, scale: Option<u8>) -> String {
    let (negative, body) = match text.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim()),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut frac = frac.to_owned();
    match scale {
        Some(s) => {
            let s = usize::from(s);
            while frac.len() < s {
                frac.push('0');
            }
            while frac.len() > s && frac.ends_with('0') {
                frac.pop();
            }
        }
        None => {
            while frac.ends_with('0') {
                frac.pop();
            }
        }
    }
    let zero = int == "0" && frac.chars().all(|c| c == '0');
    let sign = if negative && !zero { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// A value's canonical text in a column of type `ty` (`None` for NULL): the
/// same for the value the transform derives and the value read back from v2.
fn canonical_value(ty: &SqlType, v: &SqlValue) -> Option<String> {
    Some(match (ty, v) {
        (_, SqlValue::Null) => return None,
        (SqlType::Decimal { scale, .. }, SqlValue::Decimal(s)) => decimal_text(s, Some(*scale)),
        (SqlType::Decimal { scale, .. }, SqlValue::Int(i)) => decimal_text(&i.to_string(), Some(*scale)),
        (_, SqlValue::Decimal(s)) => decimal_text(s, None),
        (SqlType::Real, SqlValue::Double(d)) => format!("{:?}", *d as f32),
        (SqlType::Double, SqlValue::Real(f)) => format!("{:?}", f64::from(*f)),
        (_, SqlValue::Instant(m)) => format!("@{m}"),
        (_, SqlValue::Duration(m)) => format!("{m}us"),
        (_, other) => canonical(other),
    })
}

/// A value as `--show-values` prints it (long bytes as their length and hash).
fn display_value(ty: &SqlType, v: &SqlValue) -> Option<String> {
    match v {
        SqlValue::Bytes(b) if b.len() > 32 => {
            Some(format!("({} bytes, sha256 {})", b.len(), hex(&Sha256::digest(b))))
        }
        SqlValue::Uuid(u) => Some(uuid::Uuid::from_bytes(*u).to_string()),
        SqlValue::Instant(m) => Some(format!("{} UTC", {
            let dt = crate::sink::postgres::utc_datetime(*m);
            format!(
                "{} {:02}:{:02}:{:02}.{:06}",
                dt.date, dt.hour, dt.minute, dt.second, dt.micros
            )
        })),
        other => canonical_value(ty, other),
    }
}

/// The snapshot of the tenant's database: its tables and rows, and the position.
struct Snapshot {
    database: String,
    position: SourcePosition,
    tables: Vec<(TableSchema, Vec<Row>)>,
}

impl Snapshot {
    /// The change events the source would publish for these rows.
    fn events<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = (&'a TableSchema, ChangeEvent)> + 'a {
        let mut index = 0u64;
        self.tables
            .iter()
            .flat_map(move |(schema, rows)| rows.iter().map(move |row| (schema, row)).collect::<Vec<_>>())
            .map(move |(schema, row)| {
                index += 1;
                let ev = ChangeEvent {
                    tenant: tenant.to_owned(),
                    database: schema.database.clone(),
                    table: schema.table.clone(),
                    op: Operation::SnapshotRead,
                    key: binlog::key_of(schema, row),
                    before: None,
                    after: Some(row.clone()),
                    ddl: None,
                    schema_version: schema.version,
                    position: SourcePosition {
                        index: index - 1,
                        ..self.position.clone()
                    },
                    commit_time_micros: 0,
                    transaction: TransactionInfo {
                        id: format!("verify@{}", self.position.coordinates),
                        index: 0,
                        last: true,
                    },
                };
                (schema, ev)
            })
    }
}

async fn connect_v1(source: &SourceConfig) -> Result<mysql_async::Conn, VerifyError> {
    let opts = crate::source::mysql_opts(source)?;
    match tokio::time::timeout(Duration::from_secs(30), mysql_async::Conn::new(opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(VerifyError::Config(format!(
            "source.url: no connection to {} within 30 s",
            source.url
        ))),
    }
}

/// Reads the tenant's selected tables in one consistent view, decoded as the source decodes them.
async fn read_snapshot(source: &SourceConfig, tenant: &str) -> Result<Snapshot, VerifyError> {
    let selection = Selection {
        tenants: source.tenants.clone(),
        tables: source.tables.clone(),
    };
    let mut probe = connect_v1(source).await?;
    let version: String = probe.query_first("SELECT VERSION()").await?.unwrap_or_default();
    let databases: Vec<Vec<u8>> = probe.query("SHOW DATABASES").await?;
    let _ = probe.disconnect().await;
    let database = databases
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .find(|d| selection.tenant(d) == Some(tenant))
        .ok_or_else(|| {
            VerifyError::Config(format!(
                "no database of the v1 server is the selected tenant {tenant:?} (source.tenants)"
            ))
        })?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut view = snapshot::open_view(connect_v1(source).await?, mariadb).await?;
    let mut tables = Vec::new();
    for schema in crate::source::schema::load_tables(&mut view.conn, &database).await? {
        if !selection.tables.selects(&schema.table) {
            continue;
        }
        let mut rows: Vec<Row> = Vec::new();
        let mut last: Option<Row> = None;
        loop {
            let (chunk, done) =
                snapshot::read_chunk(&mut view.conn, &schema, last.as_ref(), SNAPSHOT_CHUNK_ROWS).await?;
            if schema.has_primary_key() {
                last = chunk.last().map(|r| binlog::key_of(&schema, r)).or(last);
            }
            rows.extend(chunk);
            if done {
                break;
            }
        }
        tables.push((schema, rows));
    }
    let _ = view.conn.query_drop("COMMIT").await;
    let _ = view.conn.disconnect().await;
    Ok(Snapshot {
        database,
        position: SourcePosition {
            coordinates: view.coordinates,
            gtid: view.gtid,
            phase: Phase::Snapshot,
            index: 0,
        },
        tables,
    })
}

/// Runs verify for one tenant.
pub async fn run(config: &Config, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    let source = config
        .source
        .as_ref()
        .ok_or_else(|| VerifyError::Config("verify reads v1: the configuration has no [source]".into()))?;
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| VerifyError::Config("verify reads v2: the configuration has no [sink]".into()))?;
    let target = sink.target(opts.target.as_deref()).map_err(VerifyError::Config)?;
    match target.kind {
        TargetKind::Postgres => {
            let t = crate::sink::postgres::PostgresTarget::connect(target).await?;
            run_with(config, source, sink, target, t, opts).await
        }
        TargetKind::SqlServer => {
            let t = crate::sink::sqlserver::SqlServerTarget::connect(target).await?;
            run_with(config, source, sink, target, t, opts).await
        }
    }
}

async fn run_with<T: Target>(
    config: &Config,
    source: &SourceConfig,
    sink: &SinkConfig,
    target_cfg: &TargetConfig,
    mut target: T,
    opts: &VerifyOptions,
) -> Result<Report, VerifyError> {
    let snap = read_snapshot(source, &opts.tenant).await?;
    tracing::info!(
        tenant = %opts.tenant,
        position = %snap.position,
        tables = snap.tables.len(),
        rows = snap.tables.iter().map(|(_, r)| r.len()).sum::<usize>(),
        "v1 snapshot read"
    );
    let caught_up = wait_for_sink(
        config,
        source,
        sink,
        &mut target,
        &opts.tenant,
        &snap.position,
        opts.timeout,
    )
    .await?;
    let (mode, mut compared) = match sink.mode {
        SinkMode::Mapping => ("mapping", mapped(sink, &mut target, &snap, &opts.tenant).await?),
        _ => ("mirror", mirrored(sink, &mut target, &snap, &opts.tenant).await?),
    };
    // Everything at the snapshot's coordinates in the snapshot phase (rows of
    // a snapshot taken there, watermarks) reflects v1 as the snapshot saw it.
    let snapshot_key = position_key(&SourcePosition {
        phase: Phase::Snapshot,
        index: u64::MAX,
        ..snap.position.clone()
    });
    for c in &mut compared {
        c.set_aside_changed(&mut target, &snapshot_key).await?;
    }
    let tables: Vec<TableReport> = compared.iter().map(|c| c.compare(opts.show_values)).collect();
    Ok(Report {
        tenant: opts.tenant.clone(),
        database: snap.database.clone(),
        mode,
        target: target_cfg.name.clone(),
        snapshot_position: snap.position.to_string(),
        sink_caught_up: caught_up,
        equal: tables.iter().all(|t| t.equal),
        tables,
    })
}

/// Waits until the sink has applied the tenant up to `at` (see the module
/// notes); returns which rule was met.
#[allow(clippy::too_many_arguments)]
async fn wait_for_sink<T: Target>(
    config: &Config,
    source: &SourceConfig,
    sink: &SinkConfig,
    target: &mut T,
    tenant: &str,
    at: &SourcePosition,
    timeout: Duration,
) -> Result<String, VerifyError> {
    let wanted = position_key(at);
    let started = Instant::now();
    let mut announced = false;
    loop {
        let applied = target
            .read_applied()
            .await?
            .into_iter()
            .find(|(p, _)| p.tenant == tenant)
            .map(|(p, _)| (p.source_position, p.position_key));
        if let Some((shown, key)) = &applied {
            if *key >= wanted {
                return Ok(format!("applied {shown}, at or after the snapshot position"));
            }
        }
        let checkpoint = crate::transport::publisher::read_checkpoint(&config.kafka, &source.name).await?;
        let published = checkpoint
            .as_ref()
            .is_some_and(|cp| cp.snapshot.is_none() && cp.coordinates >= at.coordinates);
        if published {
            let topic = config.kafka.changes_topic();
            let stored = target.read_offsets(&sink.group_id, &topic).await?;
            let kafka = config.kafka.clone();
            let tenant_key = tenant.to_owned();
            let pending = tokio::task::spawn_blocking(move || {
                tenant_events_after(&kafka, &topic, &stored, &tenant_key)
            })
            .await
            .map_err(|e| VerifyError::Config(format!("topic reader task: {e}")))??;
            if !pending {
                return Ok(format!(
                    "applied {}; the source published past the snapshot position and none of the \
                     tenant's changes is left on the change topic after the sink's stored offsets",
                    applied.as_ref().map_or("nothing yet", |(s, _)| s.as_str())
                ));
            }
        }
        let waiting_for = format!(
            "tenant {tenant} applied at {} (cdc_bridge.applied), snapshot position {at}; source published up to {}",
            applied.as_ref().map_or("nothing", |(s, _)| s.as_str()),
            checkpoint
                .as_ref()
                .map_or("nothing".to_owned(), |c| c.coordinates.to_string()),
        );
        if started.elapsed() >= timeout {
            return Err(VerifyError::Timeout {
                secs: timeout.as_secs(),
                waiting_for,
            });
        }
        if !announced {
            eprintln!("verify: waiting for the sink: {waiting_for}");
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the change topic holds a committed change (not a watermark) of
/// `tenant` at or after the stored offsets (partitions without one: from their beginning).
fn tenant_events_after(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    stored: &HashMap<i32, i64>,
    tenant: &str,
) -> Result<bool, VerifyError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let classify = |op: &'static str| {
        let bootstrap = kafka.bootstrap_servers.clone();
        move |e| crate::transport::TransportError::classify(&bootstrap, op, e)
    };
    let mut cfg = crate::transport::base_config(kafka);
    cfg.set("group.id", format!("cdc-bridge-verify-{}", std::process::id()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create().map_err(classify("create consumer"))?;
    let timeout = Duration::from_secs(kafka.connect_timeout_secs.max(5));
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(classify("fetch metadata"))?;
    let mut ends: Vec<(i32, i64)> = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) =
            crate::transport::fetch_watermarks(&consumer, &kafka.bootstrap_servers, topic, p, timeout)?;
        let from = stored.get(&p).copied();
        // Empty, or read to its end: an empty partition never reports a position.
        if high <= low || from.is_some_and(|o| o >= high) {
            continue;
        }
        ends.push((p, high));
        tpl.add_partition_offset(topic, p, from.map_or(Offset::Beginning, Offset::Offset))
            .map_err(classify("assign"))?;
    }
    if ends.is_empty() {
        return Ok(false);
    }
    consumer.assign(&tpl).map_err(classify("assign"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.map_err(classify("read"))?;
            // A watermark changes nothing in v2: only the tenant's changes
            // (and undecodable records, which may be) are waited for.
            let watermark = msg
                .payload()
                .and_then(|p| ChangeEvent::decode(p).ok())
                .is_some_and(|ev| ev.op == Operation::Watermark);
            if msg.key() == Some(tenant.as_bytes()) && !watermark {
                return Ok(true);
            }
        }
        let position = consumer.position().map_err(classify("position"))?;
        let done = ends.iter().all(|&(p, high)| {
            position
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|o| o >= high)
        });
        if done {
            return Ok(false);
        }
        if Instant::now() > deadline {
            // Not known to be consumed: keep waiting on the applied position.
            return Ok(true);
        }
    }
}

/// Mirror mode: each v1 table against its table in the tenant's mirror schema.
async fn mirrored<T: Target>(
    sink: &SinkConfig,
    target: &mut T,
    snap: &Snapshot,
    tenant: &str,
) -> Result<Vec<Compared>, VerifyError> {
    let mut out: Vec<Compared> = Vec::new();
    let mut defs: HashMap<String, TableDef> = HashMap::new();
    for (schema, _) in &snap.tables {
        let def =
            mirror::table_def(&sink.mirror_schema_prefix, schema).map_err(|e| VerifyError::Transform {
                table: schema.table.clone(),
                reason: e.to_string(),
            })?;
        let mut c = Compared::new(def.id(), def.columns.clone(), def.key.clone());
        c.writers.push(def.clone());
        out.push(c);
        defs.insert(schema.table.clone(), def);
    }
    for (schema, ev) in snap.events(tenant) {
        let def = &defs[&schema.table];
        let c = out
            .iter_mut()
            .find(|c| c.label == def.id())
            .expect("one per table");
        let slots: Vec<usize> = (0..def.columns.len()).collect();
        match apply::mirror_writes(def, &ev) {
            Ok(writes) => {
                let v1 = crate::sink::v1_key_text(&ev.key);
                for w in writes {
                    c.expect(w, &slots, &format!("{} {v1}", ev.table));
                }
            }
            Err(_) => c.rejected += 1,
        }
    }
    for c in &mut out {
        let def = defs.values().find(|d| d.id() == c.label).expect("defined above");
        let rows = match target.describe_table(&def.schema, &def.name).await? {
            Some(_) => target.read_table(def, None).await?,
            None => Vec::new(),
        };
        c.read(rows);
    }
    Ok(out)
}

/// The value of a tenant column for `tenant` (a UUID column holds it parsed).
fn tenant_value(ty: &SqlType, tenant: &str) -> SqlValue {
    match (ty, uuid::Uuid::parse_str(tenant)) {
        (SqlType::Uuid, Ok(u)) => SqlValue::Uuid(*u.as_bytes()),
        _ => SqlValue::Text(tenant.to_owned()),
    }
}

/// Mapping mode: every mapped v2 table (entries writing one table together)
/// and every document rule's table, restricted to the tenant.
async fn mapped<T: Target>(
    sink: &SinkConfig,
    target: &mut T,
    snap: &Snapshot,
    tenant: &str,
) -> Result<Vec<Compared>, VerifyError> {
    let path = sink
        .mapping
        .as_deref()
        .ok_or_else(|| VerifyError::Config("sink.mapping: mapping mode needs a mapping file".into()))?;
    let mapping =
        Mapping::load(std::path::Path::new(path)).map_err(|e| VerifyError::Config(e.to_string()))?;
    let schema = mapping.file.target_schema.clone();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, t) in mapping.file.tables.iter().enumerate() {
        groups.entry(t.name.clone()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (name, entries) in &groups {
        let catalog = target.describe_table(&schema, name).await?.ok_or_else(|| {
            VerifyError::Config(format!(
                "v2 table {schema}.{name} named by the mapping does not exist in the target"
            ))
        })?;
        // The union of the entries' columns; the key of the owner (the first non-merge entry).
        let mut columns: Vec<ColumnDef> = Vec::new();
        let mut projections = Vec::new();
        for &i in entries {
            let p = mapping
                .projection(i, &catalog)
                .map_err(|reason| VerifyError::Transform {
                    table: name.clone(),
                    reason,
                })?;
            let slots: Vec<usize> = p
                .columns
                .iter()
                .map(|c| match columns.iter().position(|x| x.name == c.name) {
                    Some(s) => s,
                    None => {
                        columns.push(c.clone());
                        columns.len() - 1
                    }
                })
                .collect();
            projections.push((i, p, slots));
        }
        let owner = projections
            .iter()
            .find(|(i, _, _)| !mapping.table(*i).merge)
            .unwrap_or(&projections[0]);
        let key: Vec<usize> = owner.1.key.iter().map(|&k| owner.2[k]).collect();
        let label = format!("{}.{}", catalog.schema, catalog.name);
        let mut c = Compared::new(label, columns, key);
        c.writers = projections.iter().map(|(_, p, _)| p.clone()).collect();
        for (i, def, slots) in &projections {
            let from = &mapping.table(*i).from;
            for (_, ev) in snap.events(tenant).filter(|(s, _)| s.table == *from) {
                match mapping.apply(*i, def, &ev) {
                    Ok(writes) => {
                        let v1 = format!("{} {}", ev.table, crate::sink::v1_key_text(&ev.key));
                        for w in writes {
                            c.expect(w, slots, &v1);
                        }
                    }
                    Err(_) => c.rejected += 1,
                }
            }
        }
        let tenant_column = entries.iter().find_map(|&i| {
            mapping
                .table(i)
                .columns
                .iter()
                .find(|(_, spec)| spec.tenant)
                .map(|(n, _)| n.clone())
        });
        let Some(tenant_column) = tenant_column else {
            return Err(VerifyError::Config(format!(
                "v2 table {name}: no mapped column has `tenant = true`, so its rows cannot be told apart by tenant"
            )));
        };
        let read_def = TableDef {
            schema: catalog.schema.clone(),
            name: catalog.name.clone(),
            columns: c.columns.clone(),
            key: c.key.clone(),
            scope: String::new(),
        };
        let ty = read_def
            .columns
            .iter()
            .find(|x| x.name == tenant_column)
            .map(|x| x.ty.clone())
            .unwrap_or(SqlType::Text { max_chars: None });
        let value = tenant_value(&ty, tenant);
        let rows = target
            .read_table(&read_def, Some((tenant_column.as_str(), &value)))
            .await?;
        c.read(rows);
        out.push(c);
    }
    out.extend(documents(path, &mapping, target, snap, tenant).await?);
    Ok(out)
}

/// The document rules' v2 tables: expected rows rendered from the snapshot.
async fn documents<T: Target>(
    path: &str,
    mapping: &Mapping,
    target: &mut T,
    snap: &Snapshot,
    tenant: &str,
) -> Result<Vec<Compared>, VerifyError> {
    let Some(docs) = crate::documents::Documents::load(mapping, std::path::Path::new(path))
        .map_err(VerifyError::Config)?
    else {
        return Ok(Vec::new());
    };
    let schema = &mapping.file.target_schema;
    let mut out = Vec::new();
    for (i, rule) in docs.rules().iter().enumerate() {
        let catalog = target
            .describe_table(schema, &rule.target.table)
            .await?
            .ok_or_else(|| {
                VerifyError::Config(format!(
                    "documents[{i}] ({}): v2 table {schema}.{} does not exist",
                    rule.kind, rule.target.table
                ))
            })?;
        let def = docs
            .target_def(i, &catalog)
            .map_err(|reason| VerifyError::Transform {
                table: rule.target.table.clone(),
                reason,
            })?;
        let field = |name: &str| match rule.target.columns.get(name) {
            Some(DocColumn::Field(f)) => Some(f.clone()),
            _ => None,
        };
        let has_sha = def
            .columns
            .iter()
            .any(|c| field(&c.name) == Some(DocField::Sha256));
        // Compared: every written column but the render time, and the content
        // by its hash (or not at all beside a hash column).
        let keep: Vec<usize> = (0..def.columns.len())
            .filter(|&k| match field(&def.columns[k].name) {
                Some(DocField::RenderedAt) => false,
                Some(DocField::Content) => !has_sha,
                _ => true,
            })
            .collect();
        let view = |values: Vec<SqlValue>| -> Vec<SqlValue> {
            keep.iter()
                .map(|&k| match (&values[k], field(&def.columns[k].name)) {
                    (SqlValue::Bytes(b), Some(DocField::Content)) => {
                        SqlValue::Bytes(Sha256::digest(b).to_vec())
                    }
                    (v, _) => v.clone(),
                })
                .collect()
        };
        let columns: Vec<ColumnDef> = keep
            .iter()
            .map(|&k| {
                let mut c = def.columns[k].clone();
                if field(&c.name) == Some(DocField::Content) {
                    c.ty = SqlType::Bytes { max_len: Some(32) };
                }
                c
            })
            .collect();
        let key: Vec<usize> = def
            .key
            .iter()
            .filter_map(|k| keep.iter().position(|x| x == k))
            .collect();
        let mut c = Compared::new(format!("{}.{}", def.schema, def.name), columns, key.clone());
        c.writers.push(def.clone());

        // The rows the rule reads, with the v1 change times the sink recorded
        // (they are printed in the document; v1 itself does not keep them).
        let tables = rule.tables();
        let mut rows = Rows::default();
        let mut entries: Vec<(Vec<u8>, String, String)> = Vec::new();
        for (schema, table_rows) in &snap.tables {
            if !tables.contains(schema.table.as_str()) {
                continue;
            }
            for row in table_rows {
                let k = row_key_text(&binlog::key_of(schema, row));
                entries.push((
                    entry_hash(&rule.kind, tenant, &schema.table, &k).to_vec(),
                    schema.table.clone(),
                    k,
                ));
            }
        }
        let mut changed: HashMap<(String, String), i64> = HashMap::new();
        for chunk in entries.chunks(1000) {
            let hashes: Vec<Vec<u8>> = chunk.iter().map(|(h, _, _)| h.clone()).collect();
            for s in target.doc_rows(&hashes).await? {
                changed.insert((s.table, s.key), s.changed_micros);
            }
        }
        for (schema, table_rows) in &snap.tables {
            if !tables.contains(schema.table.as_str()) {
                continue;
            }
            let parent = rule
                .items
                .as_ref()
                .filter(|it| it.table == schema.table)
                .map(|it| it.parent.clone());
            for row in table_rows {
                let k = row_key_text(&binlog::key_of(schema, row));
                let state = StateRow {
                    key: k.clone(),
                    changed_micros: changed
                        .get(&(schema.table.clone(), k.clone()))
                        .copied()
                        .unwrap_or(0),
                    row: row.clone(),
                };
                if let Some(parent) = &parent {
                    if let Some(p) = row.get(parent).filter(|v| !v.is_null()) {
                        rows.items.entry(key_text(p)).or_default().push(state.clone());
                    }
                }
                rows.by_key.insert((schema.table.clone(), k), state);
            }
        }
        for (root_key, values) in docs.expected_rows(i, tenant, &rows, &def).await? {
            let values = view(values);
            let id: Vec<&SqlValue> = key.iter().map(|&k| &values[k]).collect();
            let w = RowWrite {
                row_key: row_key(&id),
                position: Vec::new(),
                change: Change::Upsert(values),
            };
            let slots: Vec<usize> = (0..c.columns.len()).collect();
            c.expect(w, &slots, &format!("{} {root_key}", rule.root));
        }
        let tenant_column = def
            .columns
            .iter()
            .find(|col| field(&col.name) == Some(DocField::Tenant))
            .cloned()
            .ok_or_else(|| {
                VerifyError::Config(format!(
                    "documents[{i}] ({}): no target column is the tenant, so its rows cannot be told apart by tenant",
                    rule.kind
                ))
            })?;
        let value = tenant_value(&tenant_column.ty, tenant);
        let read = target
            .read_table(&def, Some((tenant_column.name.as_str(), &value)))
            .await?;
        c.read(read.into_iter().map(view).collect());
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: SqlType) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
        }
    }

    fn table() -> Compared {
        Compared::new(
            "s.t".into(),
            vec![
                col("id", SqlType::Int),
                col(
                    "amount",
                    SqlType::Decimal {
                        precision: 9,
                        scale: 2,
                    },
                ),
            ],
            vec![0],
        )
    }

    fn upsert(id: i64, amount: &str) -> RowWrite {
        RowWrite {
            row_key: row_key(&[&SqlValue::Int(id)]),
            position: Vec::new(),
            change: Change::Upsert(vec![SqlValue::Int(id), SqlValue::Decimal(amount.into())]),
        }
    }

    #[test]
    fn decimals_compare_at_the_column_scale() {
        assert_eq!(decimal_text("12.5", Some(2)), "12.50");
        assert_eq!(decimal_text("012.500", Some(2)), "12.50");
        assert_eq!(decimal_text("-0.00", Some(2)), "0.00");
        assert_eq!(decimal_text("7", Some(0)), "7");
        assert_eq!(decimal_text("1.2345", Some(2)), "1.2345");
    }

    #[test]
    fn the_table_hash_does_not_depend_on_order() {
        let a = [[1u8; 32], [2u8; 32], [255u8; 32]];
        let b = [a[2], a[0], a[1]];
        assert_eq!(sum_hashes(a.iter()), sum_hashes(b.iter()));
    }

    #[test]
    fn equal_sides_are_equal_whatever_the_decimal_text() {
        let mut t = table();
        for i in 0..100 {
            t.expect(upsert(i, "1.5"), &[0, 1], "x");
        }
        t.read(
            (0..100)
                .rev()
                .map(|i| vec![SqlValue::Int(i), SqlValue::Decimal("1.50".into())])
                .collect(),
        );
        let r = t.compare(false);
        assert!(r.equal, "{r:?}");
        assert_eq!(r.ranges_compared, 0);
    }

    #[test]
    fn ranges_narrow_down_to_the_differing_keys() {
        let mut t = table();
        for i in 0..1000 {
            t.expect(upsert(i, "1.00"), &[0, 1], &format!("v1 {i}"));
        }
        let mut actual: Vec<Vec<SqlValue>> = (0..1000)
            .filter(|&i| i != 10)
            .map(|i| vec![SqlValue::Int(i), SqlValue::Decimal("1.00".into())])
            .collect();
        actual.push(vec![SqlValue::Int(5000), SqlValue::Decimal("1.00".into())]);
        actual[500][1] = SqlValue::Decimal("9.99".into());
        t.read(actual);
        let r = t.compare(false);
        assert!(!r.equal);
        assert_eq!(
            (r.missing_total, r.extra_total, r.different_total),
            (1, 1, 1),
            "{r:?}"
        );
        assert_eq!(r.missing[0].key, "id=10");
        assert_eq!(r.missing[0].v1_key.as_deref(), Some("v1 10"));
        assert_eq!(r.extra[0].key, "id=5000");
        assert_eq!(r.different[0].columns, vec!["amount".to_owned()]);
        assert!(
            r.different[0].expected.is_none(),
            "no values without --show-values"
        );
        // Far fewer ranges than keys were compared.
        assert!(r.ranges_compared < 200, "{}", r.ranges_compared);
        let shown = t.compare(true);
        let values = shown.different[0].actual.as_ref().unwrap();
        assert_eq!(values["amount"].as_deref(), Some("9.99"));
    }

    #[test]
    fn keyless_rows_compare_as_multisets() {
        let mut t = Compared::new("s.k".into(), vec![col("v", SqlType::Int)], vec![]);
        let values = vec![SqlValue::Int(1)];
        let w = RowWrite {
            row_key: row_hash(&values),
            position: Vec::new(),
            change: Change::Count {
                values: values.clone(),
                delta: 2,
            },
        };
        t.expect(w, &[0], "k");
        t.read(vec![values.clone()]);
        let r = t.compare(false);
        assert!(!r.equal);
        assert_eq!(r.different_total, 1);
        t.read(vec![values]);
        assert!(t.compare(false).equal);
    }
}
