//! The sink: a consumer-group member that applies change events to a v2 database.
//!
//! Flow per batch: read committed messages of the assigned partitions, decode,
//! transform (mirror mode: [`mirror`]; the seam where a mapping plugs in is
//! [`Applier::transform`]), then apply in **one target transaction** together with
//! the offsets the batch reaches (invariant 3): the transaction first claims the
//! partitions' offsets (compare-and-set on `cdc_bridge.sink_offsets`, which also
//! fences a second sink that still thinks it owns a partition), then applies
//! each table's writes after the position guard ([`apply::guard`], invariant 6),
//! records per-tenant progress and commits. Offsets live in the target; on start
//! and on every assignment the sink seeks to them, and Kafka's committed offsets
//! are only written afterwards, for monitoring.
//!
//! The per-batch work — transform, guard, write, dead letters — is the
//! [`Applier`]'s, shared with [`replay`], which re-applies a range of the topic
//! through the same path under its own guard rule and without offsets.
//!
//! A batch closes at a v1 transaction boundary of every partition in it (it
//! never splits a v1 transaction, invariant 4, unless that transaction exceeds
//! `max_transaction_events`), and a DDL event starts a batch of its own
//! partition so a table is altered between the rows before and after it.

pub mod apply;
pub mod mirror;
pub mod postgres;
pub mod replay;
pub mod schemas;
pub mod sqlserver;
pub mod target;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{Config, KafkaConfig, OnError, SinkConfig, TargetConfig, TargetKind};
use crate::event::{ChangeEvent, Operation};
use crate::ops::metrics as m;
use crate::transport::TransportError;

pub use apply::position_key;
use schemas::SchemaRegistry;
use target::{OffsetClaim, RowWrite, TableDef, Target, TargetError, TenantProgress};

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("target {target}: {error}")]
    Target { target: String, error: TargetError },
    /// A replay met an event it could not decode or apply and `on_error = "stop"`.
    #[error(
        "replay stopped at {topic} partition {partition} offset {offset} ({what}): {reason}; \
         the batches before it are applied: fix the cause and replay from this offset"
    )]
    ReplayStopped {
        topic: String,
        partition: i32,
        offset: i64,
        what: String,
        reason: String,
    },
    /// An event could not be decoded or applied and `on_error = "stop"`.
    #[error(
        "stopped before {topic} partition {partition} offset {offset} ({what}): {reason}; \
         fix the cause and restart: the sink resumes at this event"
    )]
    Stopped {
        topic: String,
        partition: i32,
        offset: i64,
        what: String,
        reason: String,
    },
}

impl SinkError {
    /// Whether retrying the batch can succeed (an unreachable target or broker).
    fn is_retriable(&self) -> bool {
        match self {
            SinkError::Target { error, .. } => error.retriable,
            SinkError::Transport(error) => error.is_retriable(),
            SinkError::Config(_) | SinkError::Stopped { .. } | SinkError::ReplayStopped { .. } => false,
        }
    }
}

/// A message read and decoded, waiting for its batch.
struct Pending {
    offset: i64,
    size: usize,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    event: Result<ChangeEvent, String>,
}

impl Pending {
    /// The message as read from the change topic, decoded (or why not).
    fn from_message(msg: &impl Message) -> Pending {
        let payload = msg.payload().unwrap_or_default().to_vec();
        Pending {
            offset: msg.offset(),
            size: payload.len(),
            key: msg.key().map(<[u8]>::to_vec),
            event: ChangeEvent::decode(&payload).map_err(|e| e.to_string()),
            payload,
        }
    }

    fn is_ddl(&self) -> bool {
        matches!(&self.event, Ok(ev) if ev.op == Operation::Ddl)
    }

    /// Whether a batch may end after this message.
    fn ends_transaction(&self) -> bool {
        match &self.event {
            Ok(ev) => ev.transaction.last || ev.op == Operation::Ddl,
            Err(_) => true,
        }
    }
}

/// One assigned partition.
struct Part {
    /// The next offset the target stores for it (`None`: never written), once sought.
    stored: Option<Option<i64>>,
    /// The next offset expected from the consumer.
    fetched: i64,
    queue: VecDeque<Pending>,
}

impl Part {
    fn unsought() -> Part {
        Part {
            stored: None,
            fetched: 0,
            queue: VecDeque::new(),
        }
    }
}

enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records assignments and revocations for the loop to act on.
struct SinkContext {
    topic: String,
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect()
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "consumer group rebalance error");
                return;
            }
        };
        self.events.lock().expect("rebalance events lock").push(event);
    }
}

/// A record for the dead-letter topic.
struct DeadLetter {
    partition: i32,
    offset: i64,
    stage: &'static str,
    table: Option<String>,
    /// The v1 key (column values of the primary key: ids, not patient data) and position.
    key: Option<String>,
    position: Option<String>,
    reason: String,
}

/// The per-batch work the live sink and `replay` share: transform (mirror or
/// mapping mode, documents), guard and write in one target transaction, and
/// the dead-letter topic for events that cannot be applied.
struct Applier<T: Target> {
    cfg: SinkConfig,
    kafka: KafkaConfig,
    target_cfg: TargetConfig,
    topic: String,
    target: T,
    producer: FutureProducer,
    schemas: SchemaRegistry,
    /// Table definitions per (database, table, schema version), each created or
    /// extended in the target by this connection before it is listed here.
    defs: HashMap<(String, String, u32), Arc<TableDef>>,
    /// Mapping mode: the mapping, and per mapped v2 table the columns written
    /// (prepared in the target by this connection, like `defs`).
    mapping: Option<crate::transform::mapping::Mapping>,
    projections: HashMap<usize, Arc<TableDef>>,
    /// Merge sources' table ids → their owner's definition (whose tombstones they respect).
    merge_owners: HashMap<String, TableDef>,
    /// Mapping mode with document rules: the documents kept current.
    documents: Option<crate::documents::Documents>,
}

/// How a batch is applied.
enum BatchMode<'a> {
    /// The live sink: the batch claims these offsets in its transaction, the
    /// guard lets only newer writes through, and tenant progress is recorded.
    Live { claims: Vec<OffsetClaim> },
    /// A replay: only the events the filter accepts, the replay guard
    /// ([`apply::GuardMode::Replay`]), no offsets and no progress.
    Replay { filter: &'a replay::EventFilter },
}

/// What one batch came to, for a replay's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Messages in the batch.
    pub events: usize,
    /// Events transformed and applied.
    pub applied: usize,
    /// Events a replay's tenant or table filter left out.
    pub filtered: usize,
    /// Row writes the guard let through.
    pub rows_written: usize,
    /// Row writes the guard dropped as older than the row's stored position.
    pub rows_skipped: usize,
    /// Events sent to the dead-letter topic.
    pub dead: usize,
}

/// The running sink: one consumer, one target connection.
pub struct Sink<T: Target> {
    applier: Applier<T>,
    consumer: StreamConsumer<SinkContext>,
    rebalances: Arc<Mutex<Vec<RebalanceEvent>>>,
    parts: BTreeMap<i32, Part>,
}

/// Connects to the configured target and runs the sink until `shutdown`.
pub async fn run(
    config: &Config,
    target_name: Option<&str>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SinkError> {
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| SinkError::Config("the configuration has no [sink] section".into()))?;
    // Not ready until the consume loop runs.
    crate::ops::health::report("sink", false, "starting", Duration::from_secs(600));
    let target_cfg = sink.target(target_name).map_err(SinkError::Config)?.clone();
    match target_cfg.kind {
        TargetKind::Postgres => {
            let target: postgres::PostgresTarget = connect_with_retry(sink, &target_cfg).await?;
            Sink::new(config, sink, target_cfg, target)
                .await?
                .run(shutdown)
                .await
        }
        TargetKind::SqlServer => {
            let target: sqlserver::SqlServerTarget = connect_with_retry(sink, &target_cfg).await?;
            Sink::new(config, sink, target_cfg, target)
                .await?
                .run(shutdown)
                .await
        }
    }
}

/// Connects, retrying retriable failures (an unreachable server) with backoff.
async fn connect_with_retry<T: Target>(sink: &SinkConfig, cfg: &TargetConfig) -> Result<T, SinkError> {
    retry_at_start(
        sink,
        &format!("target {}", cfg.name),
        |e: &TargetError| e.retriable,
        || T::connect(cfg),
    )
    .await
    .map_err(|error| SinkError::Target {
        target: cfg.name.clone(),
        error,
    })
}

/// Runs a step of starting up, retrying the failures `retriable` accepts (a
/// server not up yet, a topic created a moment ago without a leader) with
/// backoff while reporting not ready.
async fn retry_at_start<R, E, F, Fut>(
    sink: &SinkConfig,
    what: &str,
    retriable: impl Fn(&E) -> bool,
    mut step: F,
) -> Result<R, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R, E>>,
{
    let mut attempt = 0u32;
    loop {
        match step().await {
            Ok(r) => return Ok(r),
            Err(e)
                if retriable(&e) && (sink.retry_max_attempts == 0 || attempt < sink.retry_max_attempts) =>
            {
                attempt += 1;
                let delay = backoff(sink, attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "{what} not ready; retrying");
                crate::ops::health::report("sink", false, format!("starting: {e}"), Duration::from_secs(120));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs a Kafka step of starting up with [`retry_at_start`].
async fn retry_kafka_at_start<R, F, Fut>(sink: &SinkConfig, step: F) -> Result<R, TransportError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R, TransportError>>,
{
    retry_at_start(sink, "Kafka", TransportError::is_retriable, step).await
}

/// A failed read of the change topic: logged and read on when retriable.
fn read_failed(bootstrap: &str, e: rdkafka::error::KafkaError) -> Result<(), TransportError> {
    let err = TransportError::classify(bootstrap, "read", e);
    if !err.is_retriable() {
        return Err(err);
    }
    tracing::warn!(error = %err, "reading the change topic; retrying");
    Ok(())
}

/// Exponential backoff with full jitter between half and the whole delay.
fn backoff(cfg: &SinkConfig, attempt: u32) -> Duration {
    let base = cfg
        .retry_initial_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(cfg.retry_max_ms);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

use crate::event::now_micros;

/// What applying a batch came to.
enum Outcome {
    Committed,
    /// Another sink moved one of the partitions: nothing was written.
    Fenced,
}

impl<T: Target> Applier<T> {
    /// Prepares the target (bookkeeping tables, documents), loads the mapping
    /// and the schema topic.
    async fn new(
        config: &Config,
        sink: &SinkConfig,
        target_cfg: TargetConfig,
        mut target: T,
    ) -> Result<Self, SinkError> {
        let kafka = config.kafka.clone();
        let topic = kafka.changes_topic();
        let target_err = |error| SinkError::Target {
            target: target_cfg.name.clone(),
            error,
        };
        target.prepare().await.map_err(target_err)?;
        let producer = crate::transport::idempotent_producer(&kafka)?;
        let mapping = match (sink.mode, &sink.mapping) {
            (crate::config::SinkMode::Mapping, Some(path)) => Some(
                crate::transform::mapping::Mapping::load(std::path::Path::new(path))
                    .map_err(|e| SinkError::Config(e.to_string()))?,
            ),
            _ => None,
        };
        let documents = match (&mapping, &sink.mapping) {
            (Some(mapping), Some(path)) => {
                let mut docs = crate::documents::Documents::load(mapping, std::path::Path::new(path))
                    .map_err(SinkError::Config)?;
                if let Some(docs) = &mut docs {
                    docs.prepare(&mut target).await.map_err(target_err)?;
                }
                docs
            }
            _ => None,
        };
        let schemas = retry_kafka_at_start(sink, || SchemaRegistry::load(&kafka)).await?;
        Ok(Applier {
            cfg: sink.clone(),
            kafka,
            target_cfg,
            topic,
            target,
            producer,
            schemas,
            defs: HashMap::new(),
            mapping,
            projections: HashMap::new(),
            merge_owners: HashMap::new(),
            documents,
        })
    }

    fn target_error(&self, error: TargetError) -> SinkError {
        SinkError::Target {
            target: self.target_cfg.name.clone(),
            error,
        }
    }
    async fn reconnect(&mut self) -> Result<(), SinkError> {
        self.target.rollback().await;
        // A new connection prepares its tables (and staging) again.
        self.defs.clear();
        self.projections.clear();
        match T::connect(&self.target_cfg).await {
            Ok(t) => {
                self.target = t;
                self.target.prepare().await.map_err(|e| self.target_error(e))
            }
            Err(e) if e.retriable => Ok(()),
            Err(e) => Err(self.target_error(e)),
        }
    }
    /// The transform seam: the writes one decoded event makes. Mirror mode
    /// copies the row into its per-tenant table.
    async fn transform(
        &mut self,
        ev: &ChangeEvent,
    ) -> Result<Vec<(Arc<TableDef>, Vec<RowWrite>)>, TransformFailure> {
        if self.mapping.is_some() {
            return self.transform_mapped(ev).await;
        }
        let key = (ev.database.clone(), ev.table.clone(), ev.schema_version);
        if !self.defs.contains_key(&key) {
            if self
                .schemas
                .get(&ev.database, &ev.table, ev.schema_version)
                .is_none()
            {
                self.schemas
                    .refresh(&self.kafka)
                    .await
                    .map_err(TransformFailure::Transport)?;
            }
            let schema = self
                .schemas
                .get(&ev.database, &ev.table, ev.schema_version)
                .ok_or_else(|| {
                    TransformFailure::Rejected(format!(
                        "schema version {} of {}.{} is not on the schema topic",
                        ev.schema_version, ev.database, ev.table
                    ))
                })?;
            let def = mirror::table_def(&self.cfg.mirror_schema_prefix, schema)
                .map_err(|e| TransformFailure::Rejected(e.to_string()))?;
            self.target
                .ensure_table(&def)
                .await
                .map_err(TransformFailure::Target)?;
            self.defs.insert(key.clone(), Arc::new(def));
        }
        let def = Arc::clone(&self.defs[&key]);
        let writes = apply::mirror_writes(&def, ev).map_err(|e| TransformFailure::Rejected(e.to_string()))?;
        Ok(vec![(def, writes)])
    }
    /// Mapping mode: the v2 rows the mapping derives from the event, for every
    /// v2 table its v1 table feeds. v2 tables are v2's: read from the target's
    /// catalog, never created or altered.
    async fn transform_mapped(
        &mut self,
        ev: &ChangeEvent,
    ) -> Result<Vec<(Arc<TableDef>, Vec<RowWrite>)>, TransformFailure> {
        let targets = self
            .mapping
            .as_ref()
            .expect("mapping mode")
            .targets_of(&ev.table)
            .to_vec();
        let mut out = Vec::with_capacity(targets.len());
        for i in targets {
            if !self.projections.contains_key(&i) {
                let mapping = self.mapping.as_ref().expect("mapping mode");
                let schema = mapping.file.target_schema.clone();
                let name = mapping.table(i).name.clone();
                let catalog = self
                    .target
                    .describe_table(&schema, &name)
                    .await
                    .map_err(TransformFailure::Target)?
                    .ok_or_else(|| {
                        TransformFailure::Target(TargetError::fatal(format!(
                            "v2 table {schema}.{name} named by the mapping does not exist in the target"
                        )))
                    })?;
                let mapping = self.mapping.as_ref().expect("mapping mode");
                let fatal = |e: String| TransformFailure::Target(TargetError::fatal(format!("mapping: {e}")));
                let projection = mapping.projection(i, &catalog).map_err(fatal)?;
                if let Some(owner) = mapping.owner_of(i) {
                    let owner_def = mapping.projection(owner, &catalog).map_err(fatal)?;
                    self.merge_owners.insert(projection.id(), owner_def);
                }
                // Prepares the target's staging for these columns (the table exists).
                self.target
                    .ensure_table(&projection)
                    .await
                    .map_err(TransformFailure::Target)?;
                self.projections.insert(i, Arc::new(projection));
            }
            let def = Arc::clone(&self.projections[&i]);
            let writes = self
                .mapping
                .as_ref()
                .expect("mapping mode")
                .apply(i, &def, ev)
                .map_err(|e| TransformFailure::Rejected(e.to_string()))?;
            out.push((def, writes));
        }
        Ok(out)
    }
    /// DDL: renames columns it renames, creates or extends the table to its new schema.
    async fn apply_ddl(&mut self, ev: &ChangeEvent) -> Result<(), TransformFailure> {
        if self.mapping.is_some() {
            // v2's schema is v2's: a v1 DDL changes nothing there.
            return Ok(());
        }
        let schema_name = mirror::schema_name(&self.cfg.mirror_schema_prefix, &ev.database);
        for (from, to) in mirror::renamed_columns(ev.ddl.as_deref().unwrap_or_default()) {
            let renamed = self
                .target
                .rename_column(&schema_name, &ev.table, &from, &to)
                .await
                .map_err(TransformFailure::Target)?;
            if renamed {
                tracing::info!(table = %format!("{schema_name}.{}", ev.table), %from, %to, "renamed column");
                self.defs
                    .retain(|(db, table, _), _| !(*db == ev.database && *table == ev.table));
            }
        }
        if self
            .schemas
            .get(&ev.database, &ev.table, ev.schema_version)
            .is_none()
        {
            self.schemas
                .refresh(&self.kafka)
                .await
                .map_err(TransformFailure::Transport)?;
        }
        if let Some(schema) = self.schemas.get(&ev.database, &ev.table, ev.schema_version) {
            let def = mirror::table_def(&self.cfg.mirror_schema_prefix, schema)
                .map_err(|e| TransformFailure::Rejected(e.to_string()))?;
            let key = (ev.database.clone(), ev.table.clone(), ev.schema_version);
            if !self.defs.contains_key(&key) {
                self.target
                    .ensure_table(&def)
                    .await
                    .map_err(TransformFailure::Target)?;
                self.defs.insert(key, Arc::new(def));
            }
        }
        Ok(())
    }
    /// Applies one batch in one target transaction: the live sink's together
    /// with its offset claim and tenant progress, a replay's with writes only.
    async fn apply(
        &mut self,
        batch: &[(i32, Vec<Pending>)],
        mode: BatchMode<'_>,
    ) -> Result<(Outcome, BatchStats), SinkError> {
        let mut stats = BatchStats::default();
        // 1. Outside the transaction: DDL, table creation, transform.
        let mut tables: Vec<(Arc<TableDef>, Vec<RowWrite>)> = Vec::new();
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut counts: HashMap<(&str, &str, &'static str), u64> = HashMap::new();
        // The last event of each tenant: its progress is recorded once per batch.
        let mut last: BTreeMap<&str, &ChangeEvent> = BTreeMap::new();
        let mut dirty = crate::documents::store::Dirty::default();
        // Tenants with snapshot reads, and with anything else (a change or a
        // watermark: their snapshot has ended), for the documents.
        let mut reading: BTreeSet<&str> = BTreeSet::new();
        let mut streaming: BTreeSet<&str> = BTreeSet::new();
        for (p, pendings) in batch {
            for pending in pendings {
                stats.events += 1;
                if let BatchMode::Replay { filter } = &mode {
                    if !filter.accepts(pending) {
                        stats.filtered += 1;
                        continue;
                    }
                }
                let ev = match &pending.event {
                    Ok(ev) => ev,
                    Err(reason) => {
                        dead.push(DeadLetter {
                            partition: *p,
                            offset: pending.offset,
                            stage: "decode",
                            table: None,
                            key: None,
                            position: None,
                            reason: reason.clone(),
                        });
                        continue;
                    }
                };
                let result = if ev.op == Operation::Ddl {
                    self.apply_ddl(ev).await.map(|()| Vec::new())
                } else if ev.op == Operation::Watermark {
                    // No row: only the tenant's progress below moves.
                    Ok(Vec::new())
                } else {
                    self.transform(ev).await
                };
                match result {
                    Ok(mut effects) => {
                        if let Some(docs) = &self.documents {
                            effects.extend(docs.state_writes(ev));
                            docs.mark(&mut dirty, ev);
                        }
                        for (def, writes) in effects {
                            match tables.iter_mut().find(|(d, _)| Arc::ptr_eq(d, &def)) {
                                Some((_, all)) => all.extend(writes),
                                None => tables.push((def, writes)),
                            }
                        }
                        if ev.op != Operation::Watermark {
                            stats.applied += 1;
                            *counts
                                .entry((ev.tenant.as_str(), ev.table.as_str(), ev.op.as_str()))
                                .or_default() += 1;
                        }
                    }
                    Err(TransformFailure::Rejected(reason)) => dead.push(DeadLetter {
                        partition: *p,
                        offset: pending.offset,
                        stage: "transform",
                        table: Some(format!("{}.{}", ev.database, ev.table)),
                        key: Some(v1_key_text(&ev.key)),
                        position: Some(ev.position.to_string()),
                        reason,
                    }),
                    Err(TransformFailure::Target(e)) => return Err(self.target_error(e)),
                    Err(TransformFailure::Transport(e)) => return Err(e.into()),
                }
                if ev.op == Operation::SnapshotRead {
                    reading.insert(ev.tenant.as_str());
                } else {
                    streaming.insert(ev.tenant.as_str());
                }
                last.insert(ev.tenant.as_str(), ev);
            }
        }
        let snapshotting: BTreeSet<&str> = reading.difference(&streaming).copied().collect();
        let streaming: Vec<&str> = streaming.into_iter().collect();
        let progress: Vec<TenantProgress> = last
            .values()
            .map(|ev| TenantProgress {
                tenant: ev.tenant.clone(),
                source_position: ev.position_text(),
                position_key: position_key(&ev.position),
                commit_time_micros: ev.commit_time_micros,
            })
            .collect();
        stats.dead = dead.len();
        let replay = matches!(mode, BatchMode::Replay { .. });
        // 2. Dead letters are delivered before the offsets past them commit.
        if !dead.is_empty() {
            if self.cfg.on_error == OnError::Stop {
                let d = &dead[0];
                let (topic, partition, offset) = (self.topic.clone(), d.partition, d.offset);
                let what = format!(
                    "{} stage{}",
                    d.stage,
                    d.table
                        .as_ref()
                        .map(|t| format!(", table {t}"))
                        .unwrap_or_default()
                );
                let reason = d.reason.clone();
                return Err(if replay {
                    SinkError::ReplayStopped {
                        topic,
                        partition,
                        offset,
                        what,
                        reason,
                    }
                } else {
                    SinkError::Stopped {
                        topic,
                        partition,
                        offset,
                        what,
                        reason,
                    }
                });
            }
            self.dead_letter(batch, &dead, replay).await?;
        }
        // 3. One transaction: claim the offsets (live), apply, record progress (live).
        let owners = self.merge_owners.clone();
        let t = &mut self.target;
        let name = self.target_cfg.name.clone();
        let err = |error| SinkError::Target {
            target: name.clone(),
            error,
        };
        t.begin().await.map_err(err)?;
        let guard_mode = match &mode {
            BatchMode::Live { claims } => {
                if !t
                    .claim_offsets(&self.cfg.group_id, &self.topic, claims)
                    .await
                    .map_err(err)?
                {
                    t.rollback().await;
                    return Ok((Outcome::Fenced, stats));
                }
                apply::GuardMode::Live
            }
            BatchMode::Replay { .. } => apply::GuardMode::Replay,
        };
        // Every tenant of the batch: rows, or documents a watermark lets render.
        let tenants: Vec<&str> = last.keys().copied().collect();
        t.lock_tenants(&tenants, replay).await.map_err(err)?;
        let mut skipped = 0usize;
        // Tables in a stable order, so concurrent sinks take row locks alike.
        let mut tables: Vec<(String, Arc<TableDef>, Vec<RowWrite>)> = tables
            .into_iter()
            .map(|(def, writes)| (def.id(), def, writes))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, def, mut writes) in tables {
            if let Some(owner) = owners.get(&id) {
                // A merge source never brings back a row its owner deleted.
                let keys: Vec<&str> = writes.iter().map(|w| w.row_key.as_str()).collect();
                let gone = t.deleted_rows(owner, &keys).await.map_err(err)?;
                writes.retain(|w| !gone.contains(&w.row_key));
            }
            let keys: Vec<&str> = writes.iter().map(|w| w.row_key.as_str()).collect();
            let stored = t.stored_positions(&def, &keys).await.map_err(err)?;
            let guarded = apply::guard_with(writes, &stored, guard_mode);
            skipped += guarded.skipped;
            stats.rows_written += guarded.writes.len();
            if guarded.skipped > 0 {
                metrics::counter!(m::SINK_ROWS_SKIPPED, "table" => id).increment(guarded.skipped as u64);
            }
            t.write(&def, &guarded.writes).await.map_err(err)?;
        }
        let mut deferred = 0;
        if let Some(docs) = &self.documents {
            if !dirty.is_empty() || !streaming.is_empty() {
                let positions: HashMap<String, Vec<u8>> = progress
                    .iter()
                    .map(|p| (p.tenant.clone(), p.position_key.clone()))
                    .collect();
                let o = docs
                    .apply(
                        t,
                        dirty,
                        &positions,
                        &snapshotting,
                        &streaming,
                        self.cfg.deferred_documents_per_batch,
                    )
                    .await
                    .map_err(err)?;
                tracing::debug!(
                    rendered = o.rendered,
                    unchanged = o.unchanged,
                    deferred = o.deferred,
                    deleted = o.deleted,
                    "documents"
                );
                deferred = o.deferred;
            }
        }
        stats.rows_skipped = skipped;
        if replay {
            // A replay's positions are older than the live sink's: its
            // progress stays the live sink's.
            t.commit().await.map_err(err)?;
            return Ok((Outcome::Committed, stats));
        }
        t.record_progress(&progress).await.map_err(err)?;
        t.commit().await.map_err(err)?;
        if let Some(docs) = &self.documents {
            docs.committed(deferred);
        }
        let now = now_micros();
        for p in &progress {
            metrics::gauge!(m::SINK_DELAY, "tenant" => p.tenant.clone())
                .set((now - p.commit_time_micros).max(0) as f64 / 1e6);
        }
        for ((tenant, table, op), n) in counts {
            metrics::counter!(m::SINK_ROWS, "tenant" => tenant.to_owned(), "table" => table.to_owned(), "op" => op)
                .increment(n);
        }
        tracing::debug!(
            events = batch.iter().map(|(_, v)| v.len()).sum::<usize>(),
            skipped,
            dead = dead.len(),
            "batch committed"
        );
        Ok((Outcome::Committed, stats))
    }
    /// Writes the records and waits for every delivery.
    async fn dead_letter(
        &self,
        batch: &[(i32, Vec<Pending>)],
        dead: &[DeadLetter],
        replay: bool,
    ) -> Result<(), SinkError> {
        let topic = self.kafka.dead_letter_topic();
        let time = now_micros().to_string();
        let mut deliveries = Vec::with_capacity(dead.len());
        for d in dead {
            let Some(pending) = batch
                .iter()
                .find(|(p, _)| *p == d.partition)
                .and_then(|(_, v)| v.iter().find(|q| q.offset == d.offset))
            else {
                continue;
            };
            let partition = d.partition.to_string();
            let offset = d.offset.to_string();
            let mut headers = OwnedHeaders::new();
            for (name, value) in [
                ("cdc_bridge.stage", Some(d.stage)),
                ("cdc_bridge.error", Some(d.reason.as_str())),
                ("cdc_bridge.time_micros", Some(time.as_str())),
                ("cdc_bridge.topic", Some(self.topic.as_str())),
                ("cdc_bridge.partition", Some(partition.as_str())),
                ("cdc_bridge.offset", Some(offset.as_str())),
                ("cdc_bridge.table", d.table.as_deref()),
                ("cdc_bridge.key", d.key.as_deref()),
                ("cdc_bridge.position", d.position.as_deref()),
                ("cdc_bridge.replay", replay.then_some("true")),
            ] {
                if let Some(value) = value {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value),
                    });
                }
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(&pending.payload)
                .headers(headers);
            if let Some(key) = &pending.key {
                record = record.key(key);
            }
            tracing::warn!(
                partition = d.partition,
                offset = d.offset,
                stage = d.stage,
                table = d.table.as_deref().unwrap_or("-"),
                reason = %d.reason,
                "event sent to the dead-letter topic"
            );
            deliveries.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for (delivery, d) in futures::future::join_all(deliveries).await.into_iter().zip(dead) {
            delivery.map_err(|(e, _)| {
                TransportError::classify(&self.kafka.bootstrap_servers, "dead-letter", e)
            })?;
            metrics::counter!(m::SINK_DEAD_LETTERS, "stage" => d.stage).increment(1);
        }
        Ok(())
    }
}

impl<T: Target> Sink<T> {
    async fn new(
        config: &Config,
        sink: &SinkConfig,
        target_cfg: TargetConfig,
        target: T,
    ) -> Result<Self, SinkError> {
        let kafka = config.kafka.clone();
        let topic = kafka.changes_topic();
        // A sink started before its source finds the topics there, not absent
        // until the next metadata refresh.
        retry_kafka_at_start(sink, || {
            crate::transport::publisher::ensure_topics(&kafka, kafka.partitions)
        })
        .await?;
        let applier = Applier::new(config, sink, target_cfg, target).await?;
        let rebalances = Arc::new(Mutex::new(Vec::new()));
        let context = SinkContext {
            topic: topic.clone(),
            events: rebalances.clone(),
        };
        let consumer: StreamConsumer<SinkContext> =
            crate::transport::read_committed_consumer_with(&kafka, &sink.group_id, context)?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "subscribe", e))?;
        tracing::info!(
            target = %applier.target_cfg.name,
            kind = applier.target.kind(),
            group = %sink.group_id,
            topic = %topic,
            schemas = applier.schemas.len(),
            "sink started"
        );
        Ok(Sink {
            applier,
            consumer,
            rebalances,
            parts: BTreeMap::new(),
        })
    }

    async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), SinkError> {
        tokio::pin!(shutdown);
        let max_wait = Duration::from_millis(self.applier.cfg.batch_max_wait_ms);
        let mut first_queued: Option<Instant> = None;
        loop {
            crate::ops::health::report("sink", true, "", Duration::from_secs(120));
            self.handle_rebalances();
            self.seek_unsought().await?;
            let (events, bytes) = self.queued();
            let due = first_queued.is_some_and(|t| t.elapsed() >= max_wait)
                || events >= self.applier.cfg.batch_max_events
                || bytes >= self.applier.cfg.batch_max_bytes;
            if due {
                let batch = self.take_batch();
                if !batch.is_empty() {
                    self.apply_with_retry(batch, &mut shutdown).await?;
                    first_queued = (self.queued().0 > 0).then(Instant::now);
                    continue;
                }
                // Only unfinished v1 transactions are queued: read on.
            }
            let wait = match first_queued {
                Some(t) => max_wait
                    .saturating_sub(t.elapsed())
                    .max(Duration::from_millis(20)),
                None => Duration::from_millis(500),
            };
            let received = tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("sink stopping; an unfinished batch is read again on the next start");
                    return Ok(());
                }
                r = tokio::time::timeout(wait, self.consumer.recv()) => r,
            };
            match received {
                Err(_) => {}
                Ok(Err(e)) => read_failed(&self.applier.kafka.bootstrap_servers, e)?,
                Ok(Ok(msg)) => {
                    let partition = msg.partition();
                    let offset = msg.offset();
                    let Some(part) = self.parts.get_mut(&partition) else {
                        continue;
                    };
                    if part.stored.is_none() || offset < part.fetched {
                        continue;
                    }
                    part.fetched = offset + 1;
                    part.queue.push_back(Pending::from_message(&msg));
                    first_queued.get_or_insert_with(Instant::now);
                }
            }
        }
    }
    fn queued(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(n, b), p| {
            (
                n + p.queue.len(),
                b + p.queue.iter().map(|q| q.size).sum::<usize>(),
            )
        })
    }
    fn handle_rebalances(&mut self) {
        let events = std::mem::take(&mut *self.rebalances.lock().expect("rebalance events lock"));
        for event in events {
            match event {
                RebalanceEvent::Assigned(ps) => {
                    tracing::info!(partitions = ?ps, "partitions assigned");
                    for p in ps {
                        self.parts.insert(p, Part::unsought());
                    }
                }
                RebalanceEvent::Revoked(ps) => {
                    tracing::info!(partitions = ?ps, "partitions revoked");
                    for p in ps {
                        self.parts.remove(&p);
                    }
                }
            }
        }
    }
    /// Seeks every newly assigned partition to the offset stored in the target.
    async fn seek_unsought(&mut self) -> Result<(), SinkError> {
        if self.parts.values().all(|p| p.stored.is_some()) {
            return Ok(());
        }
        let stored = match self
            .applier
            .target
            .read_offsets(&self.applier.cfg.group_id, &self.applier.topic)
            .await
        {
            Ok(s) => s,
            Err(e) if e.retriable => {
                tracing::warn!(error = %e, "reading stored offsets; retrying");
                tokio::time::sleep(backoff(&self.applier.cfg, 1)).await;
                self.reconnect().await?;
                return Ok(());
            }
            Err(e) => return Err(self.applier.target_error(e)),
        };
        for (&p, part) in self.parts.iter_mut().filter(|(_, part)| part.stored.is_none()) {
            let at = stored.get(&p).copied();
            let offset = at.map_or(Offset::Beginning, Offset::Offset);
            // A partition whose fetch has not started yet refuses the seek;
            // it is tried again on the next turn of the loop.
            // The seek waits up to a second for librdkafka: off the async workers.
            let seek = tokio::task::block_in_place(|| {
                self.consumer
                    .seek(&self.applier.topic, p, offset, Duration::from_secs(1))
            });
            match seek {
                Ok(()) => {
                    tracing::info!(partition = p, offset = ?at, "resuming at the offset stored in the target");
                    part.stored = Some(at);
                    part.fetched = at.unwrap_or(0);
                    part.queue.clear();
                }
                Err(e) => tracing::debug!(partition = p, error = %e, "seek not possible yet"),
            }
        }
        Ok(())
    }
    fn take_batch(&mut self) -> Vec<(i32, Vec<Pending>)> {
        take_batch(
            &mut self.parts,
            self.applier.cfg.batch_max_events,
            self.applier.cfg.max_transaction_events,
        )
    }
    async fn reconnect(&mut self) -> Result<(), SinkError> {
        self.applier.reconnect().await
    }

    /// The offsets a batch claims: from the one this process last stored to
    /// the one past the batch, per partition.
    fn claims(&self, batch: &[(i32, Vec<Pending>)]) -> Vec<OffsetClaim> {
        batch
            .iter()
            .filter_map(|(p, pendings)| {
                let last = pendings.last()?;
                let stored = self.parts.get(p).and_then(|part| part.stored).flatten();
                Some(OffsetClaim {
                    partition: *p,
                    expected: stored,
                    next: last.offset + 1,
                    source_position: match &last.event {
                        Ok(ev) => ev.position.to_string(),
                        Err(_) => format!("offset {}", last.offset),
                    },
                })
            })
            .collect()
    }

    async fn apply_with_retry(
        &mut self,
        batch: Vec<(i32, Vec<Pending>)>,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), SinkError> {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let mode = BatchMode::Live {
                claims: self.claims(&batch),
            };
            let result = self.applier.apply(&batch, mode).await.map(|(outcome, _)| outcome);
            match result {
                Ok(Outcome::Committed) => {
                    let events: usize = batch.iter().map(|(_, v)| v.len()).sum();
                    metrics::histogram!(m::SINK_BATCH_EVENTS).record(events as f64);
                    metrics::histogram!(m::SINK_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
                    self.after_commit(&batch);
                    return Ok(());
                }
                Ok(Outcome::Fenced) => {
                    metrics::counter!(m::SINK_FENCED).increment(1);
                    tracing::warn!(
                        partitions = ?batch.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                        "another sink moved these partitions' offsets; re-reading them from the target"
                    );
                    for (p, _) in &batch {
                        if let Some(part) = self.parts.get_mut(p) {
                            *part = Part::unsought();
                        }
                    }
                    return Ok(());
                }
                Err(e)
                    if e.is_retriable()
                        && (self.applier.cfg.retry_max_attempts == 0
                            || attempt < self.applier.cfg.retry_max_attempts) =>
                {
                    self.applier.target.rollback().await;
                    attempt += 1;
                    metrics::counter!(m::SINK_RETRIES).increment(1);
                    let delay = backoff(&self.applier.cfg, attempt);
                    tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "batch failed; retrying");
                    crate::ops::health::report(
                        "sink",
                        false,
                        format!("batch failing (attempt {attempt}): {e}"),
                        Duration::from_secs(120),
                    );
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    if matches!(e, SinkError::Target { .. }) {
                        self.reconnect().await?;
                    }
                }
                Err(e) => {
                    self.applier.target.rollback().await;
                    return Err(e);
                }
            }
        }
    }
    /// Records the new offsets and tells Kafka (for monitoring only).
    fn after_commit(&mut self, batch: &[(i32, Vec<Pending>)]) {
        let mut tpl = TopicPartitionList::new();
        for (p, pendings) in batch {
            let Some(last) = pendings.last() else { continue };
            if let Some(part) = self.parts.get_mut(p) {
                part.stored = Some(Some(last.offset + 1));
            }
            let _ = tpl.add_partition_offset(&self.applier.topic, *p, Offset::Offset(last.offset + 1));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets to Kafka (informational) failed");
        }
    }
}

/// Takes, from every sought partition, the queued messages up to a v1
/// transaction boundary: whole transactions only (one larger than
/// `max_transaction_events` is cut at that size), at most `max_events` in all
/// unless a single transaction is larger, and no row after a DDL event (a DDL
/// starts a batch of its partition, so its table is altered in between).
fn take_batch(parts: &mut BTreeMap<i32, Part>, max_events: usize, max_tx: usize) -> Vec<(i32, Vec<Pending>)> {
    let mut budget = max_events;
    let mut out = Vec::new();
    for (&p, part) in parts.iter_mut() {
        if part.stored.is_none() || budget == 0 {
            continue;
        }
        let mut end = 0;
        let mut open = 0;
        let mut rows = false;
        for (i, pending) in part.queue.iter().enumerate() {
            let ddl = pending.is_ddl();
            if ddl && rows {
                break;
            }
            rows |= !ddl;
            open += 1;
            if pending.ends_transaction() || open >= max_tx {
                // A transaction larger than the batch limit still goes whole,
                // alone: only `max_transaction_events` splits one.
                if end > 0 && i + 1 > budget {
                    break;
                }
                end = i + 1;
                open = 0;
                if end >= budget {
                    break;
                }
            }
        }
        if end > 0 {
            budget = budget.saturating_sub(end);
            out.push((p, part.queue.drain(..end).collect()));
        }
    }
    out
}

/// A v1 key as `{"id":"7"}`: column names and canonical values (keys are ids).
pub(crate) fn v1_key_text(key: &crate::event::Row) -> String {
    let map: serde_json::Map<String, serde_json::Value> = key
        .0
        .iter()
        .map(|(name, v)| {
            let text = match v {
                crate::event::Value::Int(i) => i.to_string(),
                crate::event::Value::UInt(u) => u.to_string(),
                crate::event::Value::Text(s) | crate::event::Value::Enum(s) => s.clone(),
                other => format!("({})", crate::transform::convert::kind(other)),
            };
            (name.clone(), serde_json::Value::String(text))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Why an event produced no writes.
enum TransformFailure {
    /// The event is bad: dead-letter it (or stop, per config).
    Rejected(String),
    /// The target failed: the batch is retried or the sink stops.
    Target(TargetError),
    Transport(TransportError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(offset: i64, op: Operation, last: bool) -> Pending {
        let mut event = ChangeEvent::test_row("x", op, None, None);
        event.transaction.last = last;
        Pending {
            offset,
            size: 10,
            key: None,
            payload: Vec::new(),
            event: Ok(event),
        }
    }

    /// A partition holding transactions of these sizes (a `0` is a DDL event).
    fn part(sizes: &[usize]) -> Part {
        let mut queue = VecDeque::new();
        let mut offset = 0;
        for &n in sizes {
            if n == 0 {
                queue.push_back(pending(offset, Operation::Ddl, false));
                offset += 1;
            }
            for i in 0..n {
                queue.push_back(pending(offset, Operation::Insert, i + 1 == n));
                offset += 1;
            }
        }
        Part {
            stored: Some(None),
            fetched: offset,
            queue,
        }
    }

    fn taken(batch: &[(i32, Vec<Pending>)]) -> Vec<(i32, usize)> {
        batch.iter().map(|(p, v)| (*p, v.len())).collect()
    }

    #[test]
    fn batches_end_at_transaction_boundaries() {
        let mut parts = BTreeMap::from([(0, part(&[3, 4, 2])), (1, part(&[2]))]);
        // Budget 8: transactions of 3 and 4 fit, the third would not.
        let batch = take_batch(&mut parts, 8, 1000);
        assert_eq!(taken(&batch), vec![(0, 7), (1, 2)]);
        assert_eq!(parts[&0].queue.len(), 2);
    }

    #[test]
    fn an_unfinished_transaction_waits() {
        let mut parts = BTreeMap::from([(0, part(&[2, 5]))]);
        parts.get_mut(&0).unwrap().queue.pop_back();
        let batch = take_batch(&mut parts, 100, 1000);
        assert_eq!(taken(&batch), vec![(0, 2)]);
        assert!(take_batch(&mut parts, 100, 1000).is_empty());
    }

    #[test]
    fn a_transaction_larger_than_a_batch_goes_whole_and_alone() {
        let mut parts = BTreeMap::from([(0, part(&[270, 3]))]);
        let batch = take_batch(&mut parts, 100, 1000);
        assert_eq!(taken(&batch), vec![(0, 270)]);
    }

    #[test]
    fn only_transactions_over_the_limit_are_split_in_order() {
        let mut parts = BTreeMap::from([(0, part(&[25]))]);
        // Within the batch limit the transaction stays whole...
        let mut whole = BTreeMap::from([(0, part(&[25]))]);
        assert_eq!(taken(&take_batch(&mut whole, 100, 10)), vec![(0, 25)]);
        // ...beyond it, it is cut at multiples of the limit, in order.
        let batch = take_batch(&mut parts, 15, 10);
        assert_eq!(taken(&batch), vec![(0, 10)]);
        assert_eq!(parts[&0].queue.front().map(|p| p.offset), Some(10));
        assert_eq!(taken(&take_batch(&mut parts, 15, 10)), vec![(0, 15)]);
    }

    #[test]
    fn a_ddl_event_starts_a_batch_of_its_own_partition() {
        let mut parts = BTreeMap::from([(0, part(&[2, 0, 3]))]);
        assert_eq!(taken(&take_batch(&mut parts, 100, 1000)), vec![(0, 2)]);
        // The DDL goes first in the next batch, with the rows after it.
        assert_eq!(taken(&take_batch(&mut parts, 100, 1000)), vec![(0, 4)]);
    }

    #[test]
    fn unsought_partitions_are_not_taken() {
        let mut unsought = part(&[2]);
        unsought.stored = None;
        let mut parts = BTreeMap::from([(0, unsought)]);
        assert!(take_batch(&mut parts, 100, 1000).is_empty());
    }

    #[test]
    fn backoff_grows_to_the_maximum_with_jitter() {
        let cfg: SinkConfig =
            toml::from_str("targets = []\nretry_initial_ms = 100\nretry_max_ms = 1000").unwrap();
        for attempt in 1..20 {
            let d = backoff(&cfg, attempt).as_millis() as u64;
            let base = (100u64 << (attempt - 1).min(20)).min(1000);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d} ms");
        }
    }
}
