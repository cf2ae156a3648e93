//! The source: a consistent snapshot of the selected tenants' tables, then the
//! binlog from exactly the position the snapshot corresponds to, into Kafka.
//!
//! # Exactly once
//! Every batch of events is produced in one Kafka transaction together with the
//! checkpoint it reaches (invariant 2). The source keeps no other state: on any
//! retriable failure (Kafka or MySQL unreachable, a dropped binlog connection) it
//! starts over from the last committed checkpoint, so a crash at any moment loses
//! nothing and, for a read-committed reader, doubles nothing.
//!
//! # Order
//! Events are keyed by tenant, so each tenant's events stay in binlog order in
//! one partition (invariant 5).
//!
//! # Values
//! Values are decoded once, here, into the typed [`crate::event::Value`]; the
//! snapshot and the binlog decode through the same conversions so a row reads
//! the same whichever path brought it.

pub mod binlog;
pub mod charset;
pub mod convert;
pub mod schema;
pub mod snapshot;

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::sync::mpsc;

use crate::config::{Config, OnError, SourceConfig, TableSelection, TenantSelection};
use crate::event::{
    BinlogCoordinates, ChangeEvent, GtidSet, Operation, Phase, SourcePosition, TransactionInfo,
};
use crate::ops::metrics as M;
use crate::transport::publisher::{
    read_checkpoint, Batch, PublishError, Publisher, SnapshotProgress, SourceCheckpoint, TableProgress,
};
use binlog::{BinlogReader, Committed, RejectedEvent, StreamItem};
use schema::TableSchema;

/// Databases that are never tenants.
const SYSTEM_DATABASES: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Source failures, split by whether starting over from the last checkpoint can help.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("MySQL: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("MySQL server settings: {details}")]
    Settings { details: String },
    #[error(
        "binlog position {position} is no longer on the server (purged; oldest binlog is {oldest}). \
         The changes in between are lost to the binlog: re-snapshot with `cdc-bridge source --resnapshot`"
    )]
    BinlogPurged { position: String, oldest: String },
    #[error("binlog at {position}: cannot decode: {reason}")]
    Undecodable { position: String, reason: String },
    #[error("binlog at {position}: unsupported: {what}")]
    Unsupported { position: String, what: String },
    #[error(
        "{table} at {position}: {reason} (source.on_error = \"stop\"; fix and restart, the position is kept)"
    )]
    Rejected {
        table: String,
        position: String,
        reason: String,
    },
    #[error("binlog stream from {file} ended (connection closed by the server)")]
    StreamEnded { file: String },
    #[error("snapshot of {table}: {source}")]
    Convert {
        table: String,
        #[source]
        source: convert::ConvertError,
    },
    #[error(transparent)]
    Publish(Box<PublishError>),
    #[error("configuration: {0}")]
    Config(String),
}

impl SourceError {
    /// Whether starting over from the last committed checkpoint may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SourceError::Mysql(e) => match e {
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
                // Lock wait timeout, deadlock, too many connections, server shutdown.
                mysql_async::Error::Server(s) => matches!(s.code, 1205 | 1213 | 1040 | 1053 | 2013),
                _ => false,
            },
            SourceError::StreamEnded { .. } => true,
            SourceError::Publish(p) => p.is_retriable(),
            _ => false,
        }
    }

    fn from_binlog_open(e: mysql_async::Error, from: &BinlogCoordinates) -> SourceError {
        match e {
            mysql_async::Error::Server(ref s) if s.code == 1236 => SourceError::BinlogPurged {
                position: from.to_string(),
                oldest: format!("unknown ({})", s.message),
            },
            e => SourceError::Mysql(e),
        }
    }

    fn from_stream(e: mysql_async::Error, file: &str) -> SourceError {
        match e {
            // MariaDB 4052 / MySQL 1236 with "same server_uuid/server_id": another
            // binlog reader announced our server id, and the server dropped one of us.
            mysql_async::Error::Server(ref s) if s.code == 4052 || s.message.contains("same server_uuid") => {
                SourceError::Settings {
                    details: format!(
                        "another binlog reader is connected with the same source.server_id; \
                         give every reader of this server its own id ({})",
                        s.message
                    ),
                }
            }
            mysql_async::Error::Server(ref s) if s.code == 1236 => SourceError::BinlogPurged {
                position: file.to_owned(),
                oldest: format!("unknown ({})", s.message),
            },
            e => SourceError::Mysql(e),
        }
    }
}

impl From<PublishError> for SourceError {
    fn from(e: PublishError) -> Self {
        SourceError::Publish(Box::new(e))
    }
}

/// Which databases are tenants and which of their tables are captured.
#[derive(Debug, Clone)]
pub struct Selection {
    pub tenants: TenantSelection,
    pub tables: TableSelection,
}

impl Selection {
    /// The v2 tenant id of `database`, when it is a selected tenant.
    pub fn tenant<'a>(&'a self, database: &'a str) -> Option<&'a str> {
        (!SYSTEM_DATABASES.contains(&database) && self.tenants.selects(database))
            .then(|| self.tenants.tenant_id(database))
    }
}

/// Tuning knobs of a source run (from the configuration and the command line).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Ignore the stored checkpoint and take a new snapshot.
    pub resnapshot: bool,
    pub snapshot_chunk_rows: usize,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub heartbeat: Duration,
    pub partitions: i32,
}

impl RunOptions {
    pub fn from_config(source: &SourceConfig, config: &Config) -> RunOptions {
        RunOptions {
            resnapshot: false,
            snapshot_chunk_rows: source.snapshot_chunk_rows,
            batch_max_events: source.batch_max_events,
            batch_max_bytes: source.batch_max_bytes,
            batch_max_wait: Duration::from_millis(source.batch_max_wait_ms),
            heartbeat: Duration::from_secs(source.heartbeat_secs),
            partitions: config.kafka.partitions,
        }
    }
}

/// Connection options for the source server.
pub fn mysql_opts(source: &SourceConfig) -> Result<mysql_async::Opts, SourceError> {
    let url = crate::config::parse_server_url("source.url", &source.url, &["mysql", "mariadb"])
        .map_err(SourceError::Config)?;
    Ok(mysql_async::OptsBuilder::default()
        .ip_or_hostname(url.host_str().unwrap_or_default())
        .tcp_port(url.port().unwrap_or(3306))
        .user(Some(url.username()))
        .pass(Some(source.password.expose()))
        .prefer_socket(false)
        .conn_ttl(None)
        .into())
}

async fn connect(opts: &mysql_async::Opts) -> Result<mysql_async::Conn, SourceError> {
    match tokio::time::timeout(Duration::from_secs(30), mysql_async::Conn::new(opts.clone())).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SourceError::Mysql(mysql_async::Error::Io(
            mysql_async::IoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out after 30s",
            )),
        ))),
    }
}

/// Runs the source until `shutdown` resolves (then it commits what it has and
/// returns `Ok`), or until a failure that starting over cannot fix.
pub async fn run(
    config: &Config,
    mut options: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SourceError> {
    let source = config
        .source
        .as_ref()
        .ok_or_else(|| SourceError::Config("the configuration has no [source] section".into()))?;
    tokio::pin!(shutdown);
    // Not ready until its first Kafka transaction commits.
    crate::ops::health::report("source", false, "starting", Duration::from_secs(600));
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = run_once(config, source, &options, shutdown.as_mut());
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() => {
                metrics::counter!(M::SOURCE_RESTARTS).increment(1);
                crate::ops::health::report(
                    "source",
                    false,
                    format!("starting over: {e}"),
                    Duration::from_secs(120),
                );
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "source failed; starting over from the last committed checkpoint");
                let jitter = Duration::from_millis(u64::from(std::process::id() % 250));
                tokio::select! {
                    _ = tokio::time::sleep(backoff + jitter) => {}
                    _ = shutdown.as_mut() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
        // A re-snapshot request applies to the first attempt only.
        options.resnapshot = false;
    }
}

async fn run_once(
    config: &Config,
    source: &SourceConfig,
    options: &RunOptions,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), SourceError> {
    let selection = Selection {
        tenants: source.tenants.clone(),
        tables: source.tables.clone(),
    };
    let opts = mysql_opts(source)?;
    preflight(source).await?;
    let publisher = Publisher::connect(&config.kafka, &source.name, options.partitions).await?;
    let checkpoint = if options.resnapshot {
        None
    } else {
        read_checkpoint(&config.kafka, &source.name).await?
    };
    let (checkpoint, snapshot_schemas) = match checkpoint {
        Some(cp) if cp.snapshot.is_none() => (cp, Vec::new()),
        previous => {
            let (cp, schemas) =
                run_snapshot(source, &opts, &selection, &publisher, previous, options).await?;
            (cp, schemas)
        }
    };
    if source.resume_by == crate::config::ResumeBy::Position {
        // By GTID the server itself says when the position is gone (error 1236).
        check_not_purged(&opts, &checkpoint.coordinates).await?;
    }
    stream(
        source,
        &opts,
        selection,
        &publisher,
        checkpoint,
        snapshot_schemas,
        options,
        shutdown.as_mut(),
    )
    .await
}

/// Checks the server settings the source depends on, naming expected and actual values.
async fn preflight(source: &SourceConfig) -> Result<(), SourceError> {
    let mut report = crate::ops::check::Report::default();
    crate::ops::check::check_source(source, &mut report).await;
    let failures: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.verdict == crate::ops::check::Verdict::Fail)
        .map(|f| {
            format!(
                "{} {}: expected {}, actual {}",
                f.server, f.setting, f.expected, f.actual
            )
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    // An unreachable server may come back; wrong settings need a person.
    let unreachable = report.findings.iter().any(|f| {
        f.setting == "reachable"
            && f.verdict == crate::ops::check::Verdict::Fail
            && !f.actual.contains("Access denied")
    });
    let details = failures.join("; ");
    if unreachable {
        Err(SourceError::Mysql(mysql_async::Error::Io(
            mysql_async::IoError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                details,
            )),
        )))
    } else {
        Err(SourceError::Settings { details })
    }
}

async fn check_not_purged(opts: &mysql_async::Opts, at: &BinlogCoordinates) -> Result<(), SourceError> {
    let mut conn = connect(opts).await?;
    let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    let names: Vec<String> = logs
        .into_iter()
        .filter_map(|mut r| r.take::<String, usize>(0))
        .collect();
    let _ = conn.disconnect().await;
    if names.contains(&at.file) {
        return Ok(());
    }
    Err(SourceError::BinlogPurged {
        position: at.to_string(),
        oldest: names.first().cloned().unwrap_or_else(|| "(none)".into()),
    })
}

/// Schema-topic records: one per table version (the topic is compacted by this
/// key, so every version a change event can name stays readable for replays).
fn schema_records(schemas: &[TableSchema]) -> Vec<(String, Vec<u8>)> {
    schemas
        .iter()
        .map(|t| {
            (
                format!("{}.{}#{}", t.database, t.table, t.version),
                serde_json::to_vec(t).expect("schema serializes"),
            )
        })
        .collect()
}

/// A request to a running source to snapshot tables of a tenant again while
/// streaming goes on; published by `cdc-bridge snapshot` on the signals topic
/// under the source's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotSignal {
    /// The v2 tenant id.
    pub tenant: String,
    /// v1 table names; empty: every captured table of the tenant.
    pub tables: Vec<String>,
    pub requested_micros: i64,
}

/// The source's reader of the signals topic (one partition).
struct Signals {
    consumer: rdkafka::consumer::BaseConsumer,
    next: i64,
}

impl Signals {
    /// Reads from `next`, or from the topic's end when the source never read it.
    fn open(kafka: &crate::config::KafkaConfig, next: Option<i64>) -> Result<Signals, SourceError> {
        use rdkafka::consumer::Consumer;
        let topic = kafka.signals_topic();
        let classify = |op: &'static str| {
            let b = kafka.bootstrap_servers.clone();
            move |e| {
                SourceError::from(PublishError::from(crate::transport::TransportError::classify(
                    &b, op, e,
                )))
            }
        };
        let consumer: rdkafka::consumer::BaseConsumer = crate::transport::base_config(kafka)
            .set("group.id", format!("cdc-bridge-signals-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(classify("create signals consumer"))?;
        let (low, high) = crate::transport::fetch_watermarks(
            &consumer,
            &kafka.bootstrap_servers,
            &topic,
            0,
            Duration::from_secs(kafka.connect_timeout_secs.max(5)),
        )
        .map_err(|e| SourceError::from(PublishError::from(e)))?;
        let next = next.unwrap_or(high).max(low);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(next))
            .map_err(classify("assign signals"))?;
        consumer.assign(&tpl).map_err(classify("assign signals"))?;
        Ok(Signals { consumer, next })
    }

    /// The next signal if one is there: (offset, key, request or `None` when unreadable).
    fn poll(&self) -> Option<(i64, String, Option<SnapshotSignal>)> {
        use rdkafka::message::Message;
        let msg = self.consumer.poll(Duration::ZERO)?.ok()?;
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        let request = serde_json::from_slice(msg.payload().unwrap_or_default()).ok();
        Some((msg.offset(), key, request))
    }
}

/// Snapshots `tables` of one tenant database again in a new consistent view,
/// while the stream waits: rows carry the view's binlog position, so a stream
/// event before it (published later, the stream being behind) loses to the
/// snapshot row in the sink's position guard and one after it wins. Tables
/// without a primary key are left out (their copies would add up).
async fn resnapshot(
    opts: &mysql_async::Opts,
    publisher: &Publisher,
    checkpoint: &SourceCheckpoint,
    (database, tenant): (&str, &str),
    tables: &[String],
    selection: &TableSelection,
    chunk_rows: usize,
) -> Result<(), SourceError> {
    let mut conn = connect(opts).await?;
    let version: String = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut view = snapshot::open_view(conn, mariadb).await?;
    let all = schema::load_tables(&mut view.conn, database).await?;
    for missing in tables.iter().filter(|t| !all.iter().any(|s| &s.table == *t)) {
        tracing::warn!(database, table = %missing, "re-snapshot: no such table; skipped");
    }
    let chosen: Vec<TableSchema> = all
        .into_iter()
        .filter(|t| selection.selects(&t.table) && (tables.is_empty() || tables.contains(&t.table)))
        .collect();
    tracing::info!(database, view = %view.coordinates, tables = chosen.len(), "re-snapshot started");
    let mut index = 0u64;
    for table in &chosen {
        let name = format!("{}.{}", table.database, table.table);
        if !table.has_primary_key() {
            tracing::warn!(table = %name, "re-snapshot: no primary key, left out (its rows are counted, not keyed)");
            continue;
        }
        let mut pending_schemas = schema_records(std::slice::from_ref(table));
        let mut last_key = None;
        let mut rows_done = 0u64;
        loop {
            let (rows, done) =
                snapshot::read_chunk(&mut view.conn, table, last_key.as_ref(), chunk_rows).await?;
            let events = snapshot_events(tenant, table, rows, &view, index);
            index += events.len() as u64;
            rows_done += events.len() as u64;
            if let Some(last) = events.last().and_then(|e| e.after.as_ref()) {
                last_key = Some(binlog::key_of(table, last));
            }
            publisher
                .publish(Batch {
                    events: &events,
                    schemas: &pending_schemas,
                    dead_letters: &[],
                    checkpoint,
                })
                .await?;
            pending_schemas.clear();
            if done {
                tracing::info!(table = %name, rows = rows_done, "re-snapshot of table done");
                break;
            }
        }
    }
    let _ = view.conn.query_drop("COMMIT").await;
    let _ = view.conn.disconnect().await;
    Ok(())
}

/// Snapshot-read events of `rows` of `table` read in `view`, numbered from `first`.
fn snapshot_events(
    tenant: &str,
    table: &TableSchema,
    rows: Vec<crate::event::Row>,
    view: &snapshot::SnapshotView,
    first: u64,
) -> Vec<ChangeEvent> {
    let n = rows.len();
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| ChangeEvent {
            tenant: tenant.to_owned(),
            database: table.database.clone(),
            table: table.table.clone(),
            op: Operation::SnapshotRead,
            key: binlog::key_of(table, &row),
            before: None,
            after: Some(row),
            ddl: None,
            schema_version: table.version,
            position: SourcePosition {
                coordinates: view.coordinates.clone(),
                gtid: view.gtid.clone(),
                phase: Phase::Snapshot,
                index: first + i as u64,
            },
            commit_time_micros: now_micros(),
            transaction: TransactionInfo {
                id: format!("snapshot@{}", view.coordinates),
                index: i as u32,
                last: i + 1 == n,
            },
        })
        .collect()
}

/// Takes (or resumes) the snapshot; returns the checkpoint streaming starts from.
async fn run_snapshot(
    source: &SourceConfig,
    opts: &mysql_async::Opts,
    selection: &Selection,
    publisher: &Publisher,
    previous: Option<SourceCheckpoint>,
    options: &RunOptions,
) -> Result<(SourceCheckpoint, Vec<TableSchema>), SourceError> {
    let conn = connect(opts).await?;
    let version: String = {
        let mut conn = connect(opts).await?;
        let v = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
        let _ = conn.disconnect().await;
        v
    };
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut view = snapshot::open_view(conn, mariadb).await?;
    // Streaming starts where the first view of this snapshot was taken.
    let (resume, resume_gtid, mut progress) = match previous {
        Some(cp) => (
            cp.coordinates,
            cp.gtid,
            cp.snapshot.unwrap_or(SnapshotProgress {
                tables_done: Vec::new(),
                current: None,
                rows_done: 0,
            }),
        ),
        None => (
            view.coordinates.clone(),
            view.gtid.as_ref().map(ToString::to_string),
            SnapshotProgress {
                tables_done: Vec::new(),
                current: None,
                rows_done: 0,
            },
        ),
    };
    tracing::info!(server = %source.name, view = %view.coordinates, resume = %resume, "snapshot started");

    let databases: Vec<Vec<u8>> = view.conn.query("SHOW DATABASES").await?;
    let mut tables: Vec<(String, TableSchema)> = Vec::new();
    for db in databases
        .into_iter()
        .map(|d| String::from_utf8_lossy(&d).into_owned())
    {
        let Some(tenant) = selection.tenant(&db).map(str::to_owned) else {
            continue;
        };
        for t in schema::load_tables(&mut view.conn, &db).await? {
            if selection.tables.selects(&t.table) {
                tables.push((tenant.clone(), t));
            }
        }
    }
    let all_schemas: Vec<TableSchema> = tables.iter().map(|(_, t)| t.clone()).collect();
    let mut pending_schemas = schema_records(&all_schemas);
    let checkpoint = |progress: &SnapshotProgress| SourceCheckpoint {
        server: source.name.clone(),
        coordinates: resume.clone(),
        gtid: resume_gtid.clone(),
        snapshot: Some(progress.clone()),
        last_commit_micros: now_micros(),
        signals_next: None,
    };
    for (tenant, table) in &tables {
        let name = format!("{}.{}", table.database, table.table);
        if progress.tables_done.contains(&name) {
            continue;
        }
        if !table.has_primary_key() {
            tracing::warn!(table = %name, "table has no primary key: copied whole, and its changes are keyed by the full row");
        }
        let mut last_key = progress
            .current
            .as_ref()
            .filter(|c| c.table == name && table.has_primary_key())
            .map(|c| c.last_key.clone());
        let mut table_rows = 0u64;
        let estimate = estimated_rows(&mut view.conn, table).await;
        metrics::gauge!(M::SOURCE_SNAPSHOT_ROWS_ESTIMATE, "tenant" => tenant.clone(), "table" => table.table.clone())
            .set(estimate.unwrap_or(0) as f64);
        let mut progress_view = SnapshotProgressView::new(&name, estimate);
        loop {
            let (rows, done) = snapshot::read_chunk(
                &mut view.conn,
                table,
                last_key.as_ref(),
                options.snapshot_chunk_rows,
            )
            .await?;
            let n = rows.len();
            let events = snapshot_events(tenant, table, rows, &view, progress.rows_done);
            progress.rows_done += n as u64;
            table_rows += n as u64;
            if let Some(last) = events.last().and_then(|e| e.after.as_ref()) {
                if table.has_primary_key() {
                    last_key = Some(binlog::key_of(table, last));
                }
            }
            if done {
                progress.tables_done.push(name.clone());
                progress.current = None;
            } else {
                progress.current = last_key.clone().map(|k| TableProgress {
                    table: name.clone(),
                    last_key: k,
                });
            }
            publisher
                .publish(Batch {
                    events: &events,
                    schemas: &pending_schemas,
                    dead_letters: &[],
                    checkpoint: &checkpoint(&progress),
                })
                .await?;
            pending_schemas.clear();
            for ev in &events {
                metrics::counter!(M::SOURCE_EVENTS, "tenant" => ev.tenant.clone(), "table" => ev.table.clone(), "op" => "read")
                    .increment(1);
            }
            metrics::counter!(M::SOURCE_SNAPSHOT_ROWS, "tenant" => tenant.clone(), "table" => table.table.clone())
                .increment(n as u64);
            progress_view.advance(table_rows);
            if done {
                progress_view.finish(table_rows);
                tracing::info!(table = %name, rows = table_rows, "snapshot of table done");
                break;
            }
        }
    }
    let _ = view.conn.query_drop("COMMIT").await;
    let _ = view.conn.disconnect().await;
    let done = SourceCheckpoint {
        server: source.name.clone(),
        coordinates: resume.clone(),
        gtid: resume_gtid.clone(),
        snapshot: None,
        last_commit_micros: now_micros(),
        signals_next: None,
    };
    publisher
        .publish(Batch {
            events: &[],
            schemas: &pending_schemas,
            dead_letters: &[],
            checkpoint: &done,
        })
        .await?;
    tracing::info!(server = %source.name, rows = progress.rows_done, "snapshot complete; streaming from {resume}");
    Ok((done, all_schemas))
}

/// The server's row estimate for a table (`information_schema.TABLES.TABLE_ROWS`).
async fn estimated_rows(conn: &mut mysql_async::Conn, table: &TableSchema) -> Option<u64> {
    conn.exec_first(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (&table.database, &table.table),
    )
    .await
    .ok()
    .flatten()
}

/// Snapshot progress of one table: a progress bar on a terminal (rows done of the
/// estimate, rate), a log line every 10 seconds otherwise.
struct SnapshotProgressView {
    bar: Option<indicatif::ProgressBar>,
    table: String,
    estimate: Option<u64>,
    last_log: std::time::Instant,
    started: std::time::Instant,
}

impl SnapshotProgressView {
    fn new(table: &str, estimate: Option<u64>) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(estimate.unwrap_or(0).max(1)),
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40} {bar:30} {human_pos}/~{human_len} rows {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(table.to_owned());
            bar
        });
        SnapshotProgressView {
            bar,
            table: table.to_owned(),
            estimate,
            last_log: std::time::Instant::now(),
            started: std::time::Instant::now(),
        }
    }

    fn advance(&mut self, rows: u64) {
        if let Some(bar) = &self.bar {
            if rows > bar.length().unwrap_or(0) {
                bar.set_length(rows);
            }
            bar.set_position(rows);
        } else if self.last_log.elapsed() >= Duration::from_secs(10) {
            self.last_log = std::time::Instant::now();
            let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                table = %self.table,
                rows,
                estimated_rows = self.estimate.unwrap_or(0),
                rows_per_sec = rate as u64,
                "snapshot progress"
            );
        }
    }

    fn finish(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(rows.max(1));
            bar.finish_with_message(format!("{} done", self.table));
        }
    }
}

use crate::event::now_micros;

/// A dead-letter record: where and why, never the row's values.
fn dead_letter(source: &str, r: &RejectedEvent) -> (String, Vec<u8>) {
    let record = serde_json::json!({
        "stage": "source",
        "server": source,
        "database": r.database,
        "table": r.table,
        "position": r.position.to_string(),
        "reason": r.reason,
        "time_micros": now_micros(),
    });
    (
        format!("{}.{}", r.database, r.table),
        record.to_string().into_bytes(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    source: &SourceConfig,
    opts: &mysql_async::Opts,
    selection: Selection,
    publisher: &Publisher,
    mut checkpoint: SourceCheckpoint,
    seed: Vec<TableSchema>,
    options: &RunOptions,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), SourceError> {
    let gtid: Option<GtidSet> = checkpoint.gtid.as_deref().and_then(|g| g.parse().ok());
    // Tenants known so far (database → tenant id), for their watermarks.
    let mut tenants: BTreeMap<String, String> = seed
        .iter()
        .filter_map(|s| Some((s.database.clone(), selection.tenant(&s.database)?.to_owned())))
        .collect();
    let table_selection = selection.tables.clone();
    // Blocking Kafka calls (metadata, watermarks): off the runtime's threads.
    let signals = {
        let (kafka, next) = (publisher.kafka().clone(), checkpoint.signals_next);
        tokio::task::spawn_blocking(move || Signals::open(&kafka, next))
            .await
            .expect("opening the signals consumer does not panic")?
    };
    checkpoint.signals_next = Some(signals.next);
    let mut signal_tick = tokio::time::interval(Duration::from_secs(1));
    let mut reader = BinlogReader::start(
        opts.clone(),
        source.server_id,
        &checkpoint.coordinates,
        gtid,
        selection,
        options.heartbeat,
        source.resume_by,
    )
    .await?;
    reader.seed_schemas(seed);
    tracing::info!(
        server = %source.name,
        from = %checkpoint.coordinates,
        gtid = checkpoint.gtid.as_deref().unwrap_or("-"),
        resume_by = ?source.resume_by,
        "streaming the binlog"
    );

    // The reader runs in its own task: its next() is not cancel-safe, the channel is.
    let (tx, mut rx) = mpsc::channel::<Result<StreamItem, SourceError>>(64);
    let reader_task = tokio::spawn(async move {
        loop {
            let item = reader.next().await;
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    let _abort_reader = AbortOnDrop(reader_task);

    let mut events: Vec<ChangeEvent> = Vec::new();
    let mut schemas: Vec<TableSchema> = Vec::new();
    let mut dead: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    let mut dirty = false;
    let mut first_pending: Option<tokio::time::Instant> = None;
    let mut last_flush = tokio::time::Instant::now();
    let idle_flush = Duration::from_secs(2);
    // Watermarks go out with the first flush after each heartbeat interval.
    let mut last_watermark: Option<tokio::time::Instant> = None;
    // When the reader last stood at the end of the binlog (a server heartbeat).
    let mut caught_up_micros = 0i64;

    loop {
        let wait = match first_pending {
            Some(t) if !events.is_empty() || !dead.is_empty() => t + options.batch_max_wait,
            _ if dirty => last_flush + idle_flush,
            _ => tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        let mut stop = false;
        tokio::select! {
            item = rx.recv() => match item {
                Some(Ok(StreamItem::Transaction(c))) => {
                    let Committed { events: evs, schemas: sch, rejected, end, gtid, commit_micros } = c;
                    if let (Some(first), OnError::Stop) = (rejected.first(), source.on_error) {
                        // Commit what came before this transaction, then stop at it.
                        flush(publisher, &mut events, &mut schemas, &mut dead, &checkpoint).await?;
                        return Err(SourceError::Rejected {
                            table: format!("{}.{}", first.database, first.table),
                            position: first.position.to_string(),
                            reason: first.reason.clone(),
                        });
                    }
                    for r in &rejected {
                        tracing::error!(table = %format!("{}.{}", r.database, r.table), position = %r.position, reason = %r.reason, "event sent to the dead-letter topic");
                        metrics::counter!(M::SOURCE_DEAD_LETTERS).increment(1);
                        dead.push(dead_letter(&source.name, r));
                    }
                    for ev in &evs {
                        let size = ev.after.as_ref().map_or(0, row_size) + ev.before.as_ref().map_or(0, row_size);
                        bytes += size;
                        metrics::counter!(M::SOURCE_EVENTS, "tenant" => ev.tenant.clone(), "table" => ev.table.clone(), "op" => ev.op.as_str())
                            .increment(1);
                        metrics::counter!(M::SOURCE_BYTES, "tenant" => ev.tenant.clone(), "table" => ev.table.clone())
                            .increment(size as u64);
                    }
                    if commit_micros > 0 {
                        let delay = (now_micros() - commit_micros).max(0) as f64 / 1e6;
                        metrics::gauge!(M::SOURCE_DELAY).set(delay);
                    }
                    for ev in &evs {
                        if !tenants.contains_key(&ev.database) {
                            tenants.insert(ev.database.clone(), ev.tenant.clone());
                        }
                    }
                    events.extend(evs);
                    schemas.extend(sch);
                    if let Some(end) = end {
                        checkpoint.coordinates = end;
                    }
                    checkpoint.gtid = gtid.map(|g| g.to_string()).or(checkpoint.gtid.take());
                    if commit_micros > 0 {
                        checkpoint.last_commit_micros = commit_micros;
                    }
                    dirty = true;
                    first_pending.get_or_insert_with(tokio::time::Instant::now);
                }
                Some(Ok(StreamItem::Heartbeat(at))) => {
                    if events.is_empty() {
                        caught_up_micros = now_micros();
                        if at > checkpoint.coordinates {
                            checkpoint.coordinates = at;
                            dirty = true;
                        }
                    }
                    if last_watermark.is_none_or(|t| t.elapsed() >= options.heartbeat) {
                        dirty = true;
                    }
                }
                Some(Err(e)) => {
                    // Whole transactions received so far are still committed.
                    flush(publisher, &mut events, &mut schemas, &mut dead, &checkpoint).await?;
                    return Err(e);
                }
                None => return Err(SourceError::StreamEnded { file: checkpoint.coordinates.file.clone() }),
            },
            _ = tokio::time::sleep_until(wait) => {}
            _ = signal_tick.tick() => {}
            _ = shutdown.as_mut() => stop = true,
        }
        while let Some((offset, key, request)) = signals.poll() {
            if key == source.name {
                match request {
                    Some(request) => {
                        // What came before the request is published first.
                        flush(publisher, &mut events, &mut schemas, &mut dead, &checkpoint).await?;
                        bytes = 0;
                        first_pending = None;
                        let database = tenants
                            .iter()
                            .find(|(_, t)| **t == request.tenant)
                            .map(|(db, _)| db.clone());
                        match database {
                            Some(db) => {
                                resnapshot(
                                    opts,
                                    publisher,
                                    &checkpoint,
                                    (&db, &request.tenant),
                                    &request.tables,
                                    &table_selection,
                                    options.snapshot_chunk_rows,
                                )
                                .await?
                            }
                            None => tracing::warn!(
                                tenant = %request.tenant,
                                "re-snapshot requested for a tenant this source does not capture; ignored"
                            ),
                        }
                    }
                    None => tracing::warn!(offset, "unreadable signal ignored"),
                }
            }
            checkpoint.signals_next = Some(offset + 1);
            dirty = true;
            last_flush = tokio::time::Instant::now() - idle_flush;
        }
        let full = events.len() >= options.batch_max_events || bytes >= options.batch_max_bytes;
        let due = first_pending.is_some_and(|t| t.elapsed() >= options.batch_max_wait)
            || (dirty && last_flush.elapsed() >= idle_flush);
        if dirty && (full || due || stop) {
            if last_watermark.is_none_or(|t| t.elapsed() >= options.heartbeat) {
                let time = checkpoint.last_commit_micros.max(caught_up_micros);
                events.extend(watermarks(&tenants, &checkpoint, time));
                last_watermark = Some(tokio::time::Instant::now());
            }
            flush(publisher, &mut events, &mut schemas, &mut dead, &checkpoint).await?;
            metrics::gauge!(M::SOURCE_POSITION).set(checkpoint.coordinates.pos as f64);
            metrics::gauge!(M::SOURCE_FILE).set(checkpoint.coordinates.file_sequence().unwrap_or(0) as f64);
            bytes = 0;
            dirty = false;
            first_pending = None;
            last_flush = tokio::time::Instant::now();
        }
        if stop {
            tracing::info!(position = %checkpoint.coordinates, "source stopped; position committed");
            return Ok(());
        }
    }
}

/// One watermark per tenant: every change before `checkpoint` is published.
/// Its position is the checkpoint's coordinates in the snapshot phase with an
/// index above any snapshot row's: after every event of the transactions
/// before them (which start earlier) and of a snapshot taken there, before
/// every event of the next transaction (stream phase at those coordinates);
/// tenants sharing a partition get distinct indexes.
fn watermarks(
    tenants: &BTreeMap<String, String>,
    checkpoint: &SourceCheckpoint,
    time: i64,
) -> Vec<ChangeEvent> {
    let coordinates = checkpoint.coordinates.clone();
    let first = u64::MAX - tenants.len() as u64;
    tenants
        .iter()
        .enumerate()
        .map(|(i, (database, tenant))| ChangeEvent {
            tenant: tenant.clone(),
            database: database.clone(),
            table: String::new(),
            op: Operation::Watermark,
            key: crate::event::Row::default(),
            before: None,
            after: None,
            ddl: None,
            schema_version: 0,
            position: SourcePosition {
                coordinates: coordinates.clone(),
                gtid: None,
                phase: Phase::Snapshot,
                index: first + i as u64,
            },
            commit_time_micros: time,
            transaction: TransactionInfo {
                id: format!("watermark {}", checkpoint.coordinates),
                index: 0,
                last: true,
            },
        })
        .collect()
}

async fn flush(
    publisher: &Publisher,
    events: &mut Vec<ChangeEvent>,
    schemas: &mut Vec<TableSchema>,
    dead: &mut Vec<(String, Vec<u8>)>,
    checkpoint: &SourceCheckpoint,
) -> Result<(), SourceError> {
    let records = schema_records(schemas);
    publisher
        .publish(Batch {
            events,
            schemas: &records,
            dead_letters: dead,
            checkpoint,
        })
        .await?;
    events.clear();
    schemas.clear();
    dead.clear();
    Ok(())
}

fn row_size(row: &crate::event::Row) -> usize {
    use crate::event::Value;
    row.0
        .iter()
        .map(|(name, v)| {
            name.len()
                + match v {
                    Value::Text(s) | Value::Json(s) | Value::Enum(s) => s.len(),
                    Value::Bytes(b) | Value::Geometry(b) | Value::TextBytes { bytes: b, .. } => b.len(),
                    _ => 8,
                }
        })
        .sum()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pos: u64, phase: Phase, index: u64) -> SourcePosition {
        SourcePosition {
            coordinates: BinlogCoordinates::new("mysql-bin.000007", pos),
            gtid: None,
            phase,
            index,
        }
    }

    #[test]
    fn watermarks_sort_between_what_came_before_and_the_next_transaction() {
        let tenants: BTreeMap<String, String> = [("db_a", "a"), ("db_b", "b")]
            .map(|(d, t)| (d.to_owned(), t.to_owned()))
            .into();
        let checkpoint = SourceCheckpoint {
            server: "s".into(),
            coordinates: BinlogCoordinates::new("mysql-bin.000007", 1000),
            gtid: None,
            snapshot: None,
            last_commit_micros: 42,
            signals_next: None,
        };
        let marks = watermarks(&tenants, &checkpoint, 42);
        assert_eq!(marks.len(), 2);
        // The last transaction before (it starts earlier), a snapshot taken at the
        // checkpoint, and the next transaction (which starts at it).
        let before = [at(900, Phase::Stream, 7), at(1000, Phase::Snapshot, 1_000_000)];
        let next = at(1000, Phase::Stream, 0);
        for m in &marks {
            assert_eq!(m.op, Operation::Watermark);
            assert_eq!(m.commit_time_micros, 42);
            assert!(
                before.iter().all(|b| *b < m.position),
                "{} not after {before:?}",
                m.position
            );
            assert!(m.position < next, "{} not before {next}", m.position);
            assert_eq!(m.position_text(), "mysql-bin.000007:1000");
        }
        // Tenants sharing a partition: distinct, growing positions.
        assert!(marks[0].position < marks[1].position);
    }
}
