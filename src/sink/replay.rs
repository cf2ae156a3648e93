//! `cdc-bridge replay`: re-applies a range of the change topic to v2, as a
//! backfill after a mapping fix.
//!
//! A replay is not a sink: it assigns the partitions of its range itself (no
//! consumer group membership), reads committed messages, never commits offsets
//! to Kafka and never touches the live sink's `cdc_bridge.sink_offsets` or
//! tenant progress, so the live sink keeps running beside it unaffected. Its
//! range ends at the high watermarks of the moment it starts (or earlier, by
//! offset or time): it always terminates.
//!
//! Events go through the live sink's own path ([`Applier`]): decode, the
//! tenant/table filter, transform (mirror or mapping mode, documents), guard,
//! write, each batch one target transaction of writes only. The guard runs in
//! [`GuardMode::Replay`](super::apply::GuardMode::Replay): a write at exactly a
//! row's stored position is applied again — the row's last change re-derived by
//! the current mapping — and an older one never is (invariant 6), so a replay is
//! idempotent and never moves a row backwards. Targets leave a row whose values
//! are unchanged untouched, so a replay of an unchanged mapping changes nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    backoff, connect_with_retry, postgres, sqlserver, take_batch, Applier, BatchMode, BatchStats, Part,
    Pending, SinkError, Target,
};
use crate::config::{Config, KafkaConfig, SinkConfig, TargetConfig, TargetKind};
use crate::event::ChangeEvent;
use crate::transport::TransportError;

/// Where the replayed range starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeStart {
    /// The oldest message the topic keeps.
    #[default]
    Beginning,
    /// This offset (the partition's first kept offset if it is older).
    Offset(i64),
    /// The first message whose Kafka timestamp is at or after this time (ms since the epoch).
    TimeMs(i64),
}

/// Where the replayed range ends in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeEnd {
    /// The high watermark when the replay starts: later messages are the live sink's.
    #[default]
    Latest,
    /// This offset, inclusive.
    Offset(i64),
    /// The last message whose Kafka timestamp is at or before this time (ms since the epoch).
    TimeMs(i64),
}

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Tenant ids or v1 database names; empty: all.
    pub tenants: Vec<String>,
    /// v1 table names; empty: all.
    pub tables: Vec<String>,
    /// Partitions of the change topic; empty: all.
    pub partitions: Vec<i32>,
    pub from: RangeStart,
    pub to: RangeEnd,
}

/// Which events of the range a replay applies.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    tenants: Vec<String>,
    tables: Vec<String>,
}

impl EventFilter {
    pub fn new(tenants: Vec<String>, tables: Vec<String>) -> Self {
        EventFilter { tenants, tables }
    }

    fn tenant_matches(&self, tenant: &str, database: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant || t == database)
    }

    fn event_matches(&self, ev: &ChangeEvent) -> bool {
        self.tenant_matches(&ev.tenant, &ev.database)
            && (self.tables.is_empty() || self.tables.contains(&ev.table))
    }

    /// Decoded events by tenant (id or database) and table; an undecodable
    /// message by its Kafka key (the tenant), whatever its table, so a bad
    /// event of a replayed tenant is reported, not passed over.
    pub(super) fn accepts(&self, pending: &Pending) -> bool {
        match &pending.event {
            Ok(ev) => self.event_matches(ev),
            Err(_) => {
                self.tenants.is_empty()
                    || pending
                        .key
                        .as_deref()
                        .is_some_and(|k| self.tenants.iter().any(|t| t.as_bytes() == k))
            }
        }
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Messages read in the range.
    pub events: u64,
    /// Events transformed and applied.
    pub applied: u64,
    /// Events the tenant/table filter left out.
    pub filtered: u64,
    /// Row writes the guard let through (a target skips those whose values are unchanged).
    pub rows_written: u64,
    /// Row writes the guard dropped: the row has a newer stored position.
    pub rows_skipped: u64,
    /// Events sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Stopped by a signal before the end of the range.
    pub interrupted: bool,
}

impl ReplaySummary {
    fn add(&mut self, s: BatchStats) {
        self.events += s.events as u64;
        self.applied += s.applied as u64;
        self.filtered += s.filtered as u64;
        self.rows_written += s.rows_written as u64;
        self.rows_skipped += s.rows_skipped as u64;
        self.dead_letters += s.dead as u64;
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay {}: {} events read, {} applied, {} skipped by filter, {} rows written, \
             {} rows skipped by the position guard, {} dead letters",
            if self.interrupted { "interrupted" } else { "done" },
            self.events,
            self.applied,
            self.filtered,
            self.rows_written,
            self.rows_skipped,
            self.dead_letters
        )
    }
}

/// One partition's range: offsets `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    partition: i32,
    start: i64,
    end: i64,
}

/// Connects to the configured target and replays the range; returns what it did.
pub async fn run(
    config: &Config,
    target_name: Option<&str>,
    options: &ReplayOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReplaySummary, SinkError> {
    let sink = config
        .sink
        .as_ref()
        .ok_or_else(|| SinkError::Config("the configuration has no [sink] section".into()))?;
    let target_cfg = sink.target(target_name).map_err(SinkError::Config)?.clone();
    match target_cfg.kind {
        TargetKind::Postgres => {
            let target: postgres::PostgresTarget = connect_with_retry(sink, &target_cfg).await?;
            replay(config, sink, target_cfg, target, options, shutdown).await
        }
        TargetKind::SqlServer => {
            let target: sqlserver::SqlServerTarget = connect_with_retry(sink, &target_cfg).await?;
            replay(config, sink, target_cfg, target, options, shutdown).await
        }
    }
}

async fn replay<T: Target>(
    config: &Config,
    sink: &SinkConfig,
    target_cfg: TargetConfig,
    target: T,
    options: &ReplayOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReplaySummary, SinkError> {
    let kafka = &config.kafka;
    let topic = kafka.changes_topic();
    let mut applier = Applier::new(config, sink, target_cfg, target).await?;
    // A client id of its own; never subscribed, so never a member of any group.
    let consumer: StreamConsumer =
        crate::transport::read_committed_consumer(kafka, &format!("{}-replay", sink.group_id))?;
    let ranges =
        tokio::task::block_in_place(|| resolve_ranges(&consumer, kafka, &topic, options)).map_err(|e| *e)?;
    let total: u64 = ranges.iter().map(|r| (r.end - r.start).max(0) as u64).sum();
    let mut parts: BTreeMap<i32, Part> = BTreeMap::new();
    let mut ends: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut done: BTreeSet<i32> = BTreeSet::new();
    let mut tpl = TopicPartitionList::new();
    for r in &ranges {
        if r.start >= r.end {
            continue;
        }
        tpl.add_partition_offset(&topic, r.partition, Offset::Offset(r.start))
            .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "assign", e))?;
        parts.insert(
            r.partition,
            Part {
                stored: Some(None),
                fetched: r.start,
                queue: VecDeque::new(),
            },
        );
        ends.insert(r.partition, (r.start, r.end));
    }
    if tpl.count() > 0 {
        consumer
            .assign(&tpl)
            .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "assign", e))?;
    }
    tracing::info!(
        topic = %topic,
        partitions = ?ranges.iter().map(|r| (r.partition, r.start, r.end)).collect::<Vec<_>>(),
        messages = total,
        tenants = options.tenants.len(),
        tables = options.tables.len(),
        "replay started"
    );
    let filter = EventFilter::new(options.tenants.clone(), options.tables.clone());
    let to_time = match options.to {
        RangeEnd::TimeMs(ms) => Some(ms),
        _ => None,
    };
    let mut view = ProgressView::new(total);
    let mut summary = ReplaySummary::default();
    let mut last_position_check = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let all_done = parts.keys().all(|p| done.contains(p));
        let (events, bytes) = parts.values().fold((0, 0), |(n, b), p| {
            (
                n + p.queue.len(),
                b + p.queue.iter().map(|q| q.size).sum::<usize>(),
            )
        });
        if events > 0 && (all_done || events >= sink.batch_max_events || bytes >= sink.batch_max_bytes) {
            let mut batch = take_batch(&mut parts, sink.batch_max_events, sink.max_transaction_events);
            if batch.is_empty() && all_done {
                // The range ends inside a v1 transaction: its part in the range goes as it is.
                batch = parts
                    .iter_mut()
                    .filter(|(_, part)| !part.queue.is_empty())
                    .map(|(p, part)| (*p, part.queue.drain(..).collect()))
                    .collect();
            }
            if !batch.is_empty() {
                match apply_with_retry(&mut applier, &batch, &filter, &mut shutdown).await? {
                    Some(stats) => summary.add(stats),
                    None => {
                        summary.interrupted = true;
                        break;
                    }
                }
                continue;
            }
        }
        if all_done {
            break;
        }
        let received = tokio::select! {
            _ = &mut shutdown => {
                summary.interrupted = true;
                break;
            }
            r = tokio::time::timeout(Duration::from_millis(200), consumer.recv()) => r,
        };
        match received {
            Err(_) => {}
            Ok(Err(e)) => super::read_failed(&kafka.bootstrap_servers, e)?,
            Ok(Ok(msg)) => {
                let partition = msg.partition();
                let offset = msg.offset();
                let (Some(part), Some(&(_, end))) = (parts.get_mut(&partition), ends.get(&partition)) else {
                    continue;
                };
                if done.contains(&partition) || offset < part.fetched {
                    continue;
                }
                let past_time = to_time.is_some_and(|ms| msg.timestamp().to_millis().is_some_and(|t| t > ms));
                if offset >= end || past_time {
                    done.insert(partition);
                    continue;
                }
                part.fetched = offset + 1;
                part.queue.push_back(Pending::from_message(&msg));
                if offset + 1 >= end {
                    done.insert(partition);
                }
            }
        }
        // The last offsets of a partition may be transaction markers, never
        // delivered: the consumer's position says when it passed them.
        if last_position_check.elapsed() >= Duration::from_millis(200) {
            last_position_check = Instant::now();
            mark_done_by_position(&consumer, &topic, &ends, &mut done);
        }
        view.set(
            ends.iter()
                .map(|(p, &(start, end))| {
                    if done.contains(p) {
                        (end - start) as u64
                    } else {
                        parts.get(p).map_or(0, |part| (part.fetched - start) as u64)
                    }
                })
                .sum(),
        );
    }
    view.finish();
    Ok(summary)
}

fn mark_done_by_position(
    consumer: &StreamConsumer,
    topic: &str,
    ends: &BTreeMap<i32, (i64, i64)>,
    done: &mut BTreeSet<i32>,
) {
    let Ok(position) = consumer.position() else {
        return;
    };
    for (&p, &(_, end)) in ends {
        let reached = position
            .find_partition(topic, p)
            .and_then(|e| e.offset().to_raw())
            .is_some_and(|o| o >= end);
        if reached {
            done.insert(p);
        }
    }
}

/// Each selected partition's offsets: from the start option (or the first kept
/// offset) to the end option (or the high watermark now).
fn resolve_ranges(
    consumer: &StreamConsumer,
    kafka: &KafkaConfig,
    topic: &str,
    options: &ReplayOptions,
) -> Result<Vec<Range>, Box<SinkError>> {
    let classify = |op: &'static str| {
        let bootstrap = kafka.bootstrap_servers.clone();
        move |e| Box::new(SinkError::Transport(TransportError::classify(&bootstrap, op, e)))
    };
    let timeout = Duration::from_secs(kafka.connect_timeout_secs.max(5));
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(classify("fetch metadata"))?;
    let mut all: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    all.sort_unstable();
    if all.is_empty() {
        return Err(Box::new(SinkError::Config(format!(
            "the change topic {topic} does not exist or has no partitions"
        ))));
    }
    let selected: Vec<i32> = if options.partitions.is_empty() {
        all.clone()
    } else {
        for p in &options.partitions {
            if !all.contains(p) {
                return Err(Box::new(SinkError::Config(format!(
                    "--partition {p}: the change topic {topic} has partitions {all:?}"
                ))));
            }
        }
        options.partitions.clone()
    };
    let mut ranges = Vec::with_capacity(selected.len());
    for &p in &selected {
        let (low, high) =
            crate::transport::fetch_watermarks(consumer, &kafka.bootstrap_servers, topic, p, timeout)
                .map_err(|e| Box::new(SinkError::Transport(e)))?;
        let start = match options.from {
            RangeStart::Beginning => low,
            RangeStart::Offset(o) => o.max(low),
            RangeStart::TimeMs(_) => low,
        };
        let end = match options.to {
            RangeEnd::Latest | RangeEnd::TimeMs(_) => high,
            RangeEnd::Offset(o) => o.saturating_add(1).min(high),
        };
        ranges.push(Range {
            partition: p,
            start,
            end,
        });
    }
    if let RangeStart::TimeMs(ms) = options.from {
        let mut times = TopicPartitionList::new();
        for &p in &selected {
            times
                .add_partition_offset(topic, p, Offset::Offset(ms))
                .map_err(classify("offsets for times"))?;
        }
        let found = consumer
            .offsets_for_times(times, timeout)
            .map_err(classify("offsets for times"))?;
        for r in &mut ranges {
            // No message at or after the time: nothing of this partition is in range.
            r.start = match found.find_partition(topic, r.partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(r.start),
                _ => r.end,
            };
        }
    }
    Ok(ranges)
}

/// Applies one batch, retrying retriable failures; `None` when stopped by `shutdown`.
async fn apply_with_retry<T: Target>(
    applier: &mut Applier<T>,
    batch: &[(i32, Vec<Pending>)],
    filter: &EventFilter,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Option<BatchStats>, SinkError> {
    let mut attempt = 0u32;
    loop {
        match applier.apply(batch, BatchMode::Replay { filter }).await {
            Ok((_, stats)) => return Ok(Some(stats)),
            Err(e)
                if e.is_retriable()
                    && (applier.cfg.retry_max_attempts == 0 || attempt < applier.cfg.retry_max_attempts) =>
            {
                applier.target.rollback().await;
                attempt += 1;
                let delay = backoff(&applier.cfg, attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "replay batch failed; retrying");
                tokio::select! {
                    _ = shutdown.as_mut() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
                if matches!(e, SinkError::Target { .. }) {
                    applier.reconnect().await?;
                }
            }
            Err(e) => {
                applier.target.rollback().await;
                return Err(e);
            }
        }
    }
}

/// Messages done of the range: a progress bar on a terminal, a log line every
/// 10 seconds otherwise.
struct ProgressView {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    last_log: Instant,
}

impl ProgressView {
    fn new(total: u64) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total.max(1)),
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "replay {bar:40} {human_pos}/{human_len} messages {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        ProgressView {
            bar,
            total,
            done: 0,
            last_log: Instant::now(),
        }
    }

    fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= Duration::from_secs(10) {
            self.last_log = Instant::now();
            tracing::info!(done, total = self.total, "replay progress (messages)");
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Operation;

    fn pending(tenant: &str, database: &str, table: &str) -> Pending {
        let event = ChangeEvent {
            tenant: tenant.into(),
            database: database.into(),
            ..ChangeEvent::test_row(table, Operation::Insert, None, None)
        };
        Pending {
            offset: 0,
            size: 0,
            key: Some(tenant.as_bytes().to_vec()),
            payload: Vec::new(),
            event: Ok(event),
        }
    }

    #[test]
    fn the_filter_selects_by_tenant_or_database_and_table() {
        let all = EventFilter::default();
        assert!(all.accepts(&pending("acme", "customer_acme", "patients")));
        let f = EventFilter::new(vec!["acme".into()], vec!["patients".into()]);
        assert!(f.accepts(&pending("acme", "customer_acme", "patients")));
        assert!(!f.accepts(&pending("acme", "customer_acme", "visits")));
        assert!(!f.accepts(&pending("other", "customer_other", "patients")));
        let by_db = EventFilter::new(vec!["customer_acme".into()], vec![]);
        assert!(by_db.accepts(&pending("acme", "customer_acme", "visits")));
    }

    #[test]
    fn an_undecodable_message_is_kept_by_its_tenant_key() {
        let mut bad = pending("acme", "customer_acme", "patients");
        bad.event = Err("truncated envelope".into());
        assert!(EventFilter::new(vec!["acme".into()], vec!["visits".into()]).accepts(&bad));
        assert!(!EventFilter::new(vec!["other".into()], vec![]).accepts(&bad));
    }

    #[test]
    fn the_summary_names_every_count() {
        let mut s = ReplaySummary::default();
        s.add(BatchStats {
            events: 10,
            applied: 7,
            filtered: 2,
            rows_written: 6,
            rows_skipped: 1,
            dead: 1,
        });
        assert_eq!(
            s.to_string(),
            "replay done: 10 events read, 7 applied, 2 skipped by filter, 6 rows written, \
             1 rows skipped by the position guard, 1 dead letters"
        );
    }
}
