//! `cdc-bridge status`: per tenant, where each stage is, read from Kafka and
//! the target (no running process needs to be reachable).
//!
//! - source: the newest event or watermark of the tenant on the change topic
//!   (its position and v1 time) and whether the server's snapshot is running;
//! - Kafka: the tenant's events on the topic past the offset the sink stored in
//!   the target (counted by reading them; above [`MAX_SCAN`] per partition the
//!   count is a lower bound);
//! - sink: the tenant's applied position and v1 time (`cdc_bridge.applied`);
//! - dead letters on the DLQ topic for the tenant, and documents pending:
//!   events touching document tables not applied yet, plus documents deferred
//!   until the tenant's snapshot has ended (`cdc_bridge.doc_pending`).
//!
//! Delays are now minus the v1 time; the source's watermarks keep them true
//! for idle tenants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::message::Message;
use serde::Serialize;

use crate::config::{Config, TargetKind};
use crate::event::{ChangeEvent, Operation};
use crate::sink::target::{Target, TenantProgress};
use crate::transport::reader::{StartAt, TopicReader};

/// Messages read per partition at most.
pub const MAX_SCAN: i64 = 200_000;
/// A tenant with events left whose progress is older than this is stalled.
pub const STALLED_AFTER_SECS: f64 = 60.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantStatus {
    pub tenant: String,
    pub state: String,
    pub source_position: Option<String>,
    pub source_delay_secs: Option<f64>,
    /// Events of the tenant on the topic not applied yet.
    pub kafka_lag_events: u64,
    /// True when the count stopped at the scan limit.
    pub kafka_lag_at_least: bool,
    pub sink_position: Option<String>,
    pub sink_delay_secs: Option<f64>,
    /// Seconds since the sink last recorded progress for the tenant.
    pub sink_updated_secs: Option<f64>,
    pub dead_letters: u64,
    pub documents_pending: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub source_snapshotting: bool,
    pub source_checkpoint: Option<String>,
    pub tenants: Vec<TenantStatus>,
}

use crate::event::now_micros;

/// What the target holds: the sink's stored offsets, each tenant's progress
/// and the documents deferred per tenant.
#[derive(Default)]
struct TargetState {
    offsets: BTreeMap<i32, i64>,
    applied: Vec<(TenantProgress, f64)>,
    deferred: HashMap<String, u64>,
}

async fn target_state(config: &Config, target: Option<&str>) -> anyhow::Result<TargetState> {
    let Some(sink) = config.sink.as_ref() else {
        return Ok(TargetState::default());
    };
    let cfg = sink.target(target).map_err(|e| anyhow::anyhow!(e))?;
    let topic = config.kafka.changes_topic();
    async fn read<T: Target>(
        cfg: &crate::config::TargetConfig,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<TargetState> {
        let mut t = T::connect(cfg)
            .await
            .map_err(|e| anyhow::anyhow!("target {}: {e}", cfg.name))?;
        t.prepare()
            .await
            .map_err(|e| anyhow::anyhow!("target {}: {e}", cfg.name))?;
        let offsets = t
            .read_offsets(group, topic)
            .await
            .map_err(|e| anyhow::anyhow!("target {}: {e}", cfg.name))?;
        let applied = t
            .read_applied()
            .await
            .map_err(|e| anyhow::anyhow!("target {}: {e}", cfg.name))?;
        let deferred = t
            .deferred_counts()
            .await
            .map_err(|e| anyhow::anyhow!("target {}: {e}", cfg.name))?;
        Ok(TargetState {
            offsets: offsets.into_iter().collect(),
            applied,
            deferred,
        })
    }
    match cfg.kind {
        TargetKind::Postgres => {
            read::<crate::sink::postgres::PostgresTarget>(cfg, &sink.group_id, &topic).await
        }
        TargetKind::SqlServer => {
            read::<crate::sink::sqlserver::SqlServerTarget>(cfg, &sink.group_id, &topic).await
        }
    }
}

/// What the tail of the change topic says per tenant.
#[derive(Default)]
struct Scan {
    /// Newest (position, v1 time) per tenant.
    /// (position, its text, v1 time).
    newest: BTreeMap<String, (crate::event::SourcePosition, String, i64)>,
    lag: BTreeMap<String, u64>,
    at_least: BTreeSet<String>,
    documents: BTreeMap<String, u64>,
}

fn scan_changes(
    config: &Config,
    stored: &BTreeMap<i32, i64>,
    document_tables: &BTreeSet<String>,
) -> anyhow::Result<Scan> {
    let topic = config.kafka.changes_topic();
    let reader = TopicReader::open(&config.kafka, &topic, StartAt::Beginning)?;
    let mut starts = Vec::new();
    let mut capped = BTreeSet::new();
    for &(p, low, high) in reader.ends() {
        let sink_at = stored.get(&p).copied().unwrap_or(low);
        // Enough of the tail for every tenant's latest watermark, and the backlog.
        let mut from = sink_at.min(high - 2_000).max(low);
        if high - from > MAX_SCAN {
            from = high - MAX_SCAN;
            capped.insert(p);
        }
        starts.push((p, from));
    }
    reader.start_at(&starts)?;
    let mut scan = Scan::default();
    reader.read_to_end(Duration::from_secs(120), |msg| {
        let Ok(ev) = ChangeEvent::decode(msg.payload().unwrap_or_default()) else {
            return;
        };
        let newer = scan
            .newest
            .get(&ev.tenant)
            .is_none_or(|(pos, _, _)| ev.position > *pos);
        if newer {
            scan.newest.insert(
                ev.tenant.clone(),
                (ev.position.clone(), ev.position_text(), ev.commit_time_micros),
            );
        }
        let partition = msg.partition();
        let sink_at = stored.get(&partition).copied().unwrap_or(0);
        if msg.offset() >= sink_at && ev.op != Operation::Watermark {
            *scan.lag.entry(ev.tenant.clone()).or_default() += 1;
            if capped.contains(&partition) {
                scan.at_least.insert(ev.tenant.clone());
            }
            if document_tables.contains(&ev.table) {
                *scan.documents.entry(ev.tenant.clone()).or_default() += 1;
            }
        }
    })?;
    Ok(scan)
}

/// Dead letters per tenant: the sink's carry the tenant as key, the source's `db.table`.
fn count_dead_letters(config: &Config) -> anyhow::Result<BTreeMap<String, u64>> {
    let reader = TopicReader::open(
        &config.kafka,
        &config.kafka.dead_letter_topic(),
        StartAt::Beginning,
    )?;
    let mut by_key: BTreeMap<String, u64> = BTreeMap::new();
    reader.read_to_end(Duration::from_secs(120), |msg| {
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        *by_key.entry(key).or_default() += 1;
    })?;
    Ok(by_key)
}

/// The state of one tenant from its figures.
pub fn state(snapshotting: bool, lag: u64, sink_updated_secs: Option<f64>, has_progress: bool) -> String {
    if snapshotting {
        "snapshotting".to_owned()
    } else if lag == 0 && has_progress {
        "caught up".to_owned()
    } else if sink_updated_secs.is_some_and(|s| s > STALLED_AFTER_SECS) || (!has_progress && lag > 0) {
        "stalled".to_owned()
    } else {
        "streaming".to_owned()
    }
}

pub async fn collect(config: &Config, target: Option<&str>) -> anyhow::Result<Status> {
    let checkpoint = match &config.source {
        Some(source) => crate::transport::publisher::read_checkpoint(&config.kafka, &source.name).await?,
        None => None,
    };
    let snapshotting = checkpoint.as_ref().is_some_and(|c| c.snapshot.is_some());
    let TargetState {
        offsets: stored,
        applied,
        deferred,
    } = target_state(config, target).await?;
    let document_tables: BTreeSet<String> = match config.sink.as_ref().and_then(|s| s.mapping.as_deref()) {
        Some(path) => crate::transform::mapping::Mapping::load(std::path::Path::new(path))
            .map(|m| {
                m.file
                    .documents
                    .iter()
                    .flat_map(|d| d.tables().into_iter().map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            })
            .unwrap_or_default(),
        None => BTreeSet::new(),
    };
    let kafka = config.clone();
    let stored_for_scan = stored.clone();
    let (scan, dead) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok((
            scan_changes(&kafka, &stored_for_scan, &document_tables)?,
            count_dead_letters(&kafka)?,
        ))
    })
    .await??;
    let now = now_micros();
    let applied: BTreeMap<String, (TenantProgress, f64)> = applied
        .into_iter()
        .map(|(p, age)| (p.tenant.clone(), (p, age)))
        .collect();
    // The target may hold other pipelines' tenants: only this source's are shown.
    let ours = |t: &str| {
        scan.newest.contains_key(t)
            || config
                .source
                .as_ref()
                .is_none_or(|s| s.tenants.selects(t) || s.tenants.ids.values().any(|v| v == t))
    };
    let tenants: BTreeSet<String> = scan
        .newest
        .keys()
        .chain(applied.keys().filter(|t| ours(t)))
        .cloned()
        .collect();
    let mut out = Vec::new();
    for tenant in tenants {
        let newest = scan.newest.get(&tenant);
        let progress = applied.get(&tenant);
        let lag = scan.lag.get(&tenant).copied().unwrap_or(0);
        let dead_letters = dead
            .iter()
            .filter(|(k, _)| **k == tenant || k.starts_with(&format!("{tenant}.")))
            .map(|(_, n)| *n)
            .sum();
        let delay = |micros: i64| ((now - micros).max(0) as f64 / 1e6 * 10.0).round() / 10.0;
        // Deferred documents are work left, like events.
        let deferred_docs = deferred.get(&tenant).copied().unwrap_or(0);
        out.push(TenantStatus {
            state: state(
                snapshotting,
                lag + deferred_docs,
                progress.map(|p| p.1),
                progress.is_some(),
            ),
            source_position: newest.map(|(_, text, _)| text.clone()),
            source_delay_secs: newest.map(|(_, _, t)| delay(*t)),
            kafka_lag_events: lag,
            kafka_lag_at_least: scan.at_least.contains(&tenant),
            sink_position: progress.map(|(p, _)| p.source_position.clone()),
            sink_delay_secs: progress.map(|(p, _)| delay(p.commit_time_micros)),
            sink_updated_secs: progress.map(|(_, age)| (age * 10.0).round() / 10.0),
            dead_letters,
            documents_pending: scan.documents.get(&tenant).copied().unwrap_or(0) + deferred_docs,
            tenant,
        });
    }
    Ok(Status {
        source_snapshotting: snapshotting,
        source_checkpoint: checkpoint.map(|c| c.coordinates.to_string()),
        tenants: out,
    })
}

/// The status as a table.
pub fn table(status: &Status) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.1}"));
    let mut rows = vec![[
        "tenant".to_owned(),
        "state".to_owned(),
        "source position".to_owned(),
        "source delay s".to_owned(),
        "kafka lag".to_owned(),
        "sink position".to_owned(),
        "sink delay s".to_owned(),
        "dlq".to_owned(),
        "docs pending".to_owned(),
    ]];
    for t in &status.tenants {
        rows.push([
            t.tenant.clone(),
            t.state.clone(),
            t.source_position.clone().unwrap_or_else(|| "-".into()),
            opt(t.source_delay_secs),
            format!(
                "{}{}",
                if t.kafka_lag_at_least { ">=" } else { "" },
                t.kafka_lag_events
            ),
            t.sink_position.clone().unwrap_or_else(|| "-".into()),
            opt(t.sink_delay_secs),
            t.dead_letters.to_string(),
            t.documents_pending.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "source checkpoint: {}{}\n",
        status.source_checkpoint.as_deref().unwrap_or("none"),
        if status.source_snapshotting {
            " (snapshot running)"
        } else {
            ""
        }
    );
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_lag_and_progress() {
        assert_eq!(state(true, 0, Some(1.0), true), "snapshotting");
        assert_eq!(state(false, 0, Some(1.0), true), "caught up");
        assert_eq!(state(false, 5, Some(1.0), true), "streaming");
        assert_eq!(state(false, 5, Some(600.0), true), "stalled");
        assert_eq!(state(false, 5, None, false), "stalled");
        assert_eq!(state(false, 0, None, false), "streaming");
    }
}
