//! `cdc-bridge tail`: the change topic as JSON lines, for people.
//!
//! Reads committed events only, from the beginning, an offset or a time, and
//! stops at the end of the topic as it was when tail started (or follows it).
//! Row values are printed: the user asked for them.

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::event::{json::event_to_json, ChangeEvent};
use crate::transport::{base_config, TransportError, MAX_MESSAGE_BYTES};

/// What to print.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    pub tenants: Vec<String>,
    pub tables: Vec<String>,
    pub follow: bool,
    /// Start at this offset in every partition.
    pub from_offset: Option<i64>,
    /// Start at the first event at or after this time (milliseconds since the epoch).
    pub from_time_ms: Option<i64>,
    /// Stop after this many printed events.
    pub limit: Option<u64>,
}

/// Prints matching events to `out`; returns how many were printed.
pub fn run(kafka: &KafkaConfig, options: &TailOptions, out: &mut dyn Write) -> Result<u64, TransportError> {
    let bootstrap = &kafka.bootstrap_servers;
    let classify = |op: &'static str| move |e| TransportError::classify(bootstrap, op, e);
    let topic = kafka.changes_topic();
    let mut cfg = base_config(kafka);
    cfg.set("group.id", format!("cdc-bridge-tail-{}", std::process::id()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string());
    let consumer: BaseConsumer = cfg.create().map_err(classify("create consumer"))?;
    let timeout = Duration::from_secs(kafka.connect_timeout_secs.max(5));
    let metadata = consumer
        .fetch_metadata(Some(&topic), timeout)
        .map_err(classify("fetch metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, timeout)
            .map_err(classify("fetch watermarks"))?;
        ends.push((p, low, high));
        let start = match options.from_offset {
            Some(o) => Offset::Offset(o),
            None => Offset::Beginning,
        };
        tpl.add_partition_offset(&topic, p, start)
            .map_err(classify("assign"))?;
    }
    if let Some(ms) = options.from_time_ms {
        let mut times = TopicPartitionList::new();
        for &p in &partitions {
            times
                .add_partition_offset(&topic, p, Offset::Offset(ms))
                .map_err(classify("assign"))?;
        }
        tpl = consumer
            .offsets_for_times(times, timeout)
            .map_err(classify("offsets for times"))?;
    }
    consumer.assign(&tpl).map_err(classify("assign"))?;

    let mut printed = 0u64;
    loop {
        if let Some(result) = consumer.poll(Duration::from_millis(300)) {
            let msg = result.map_err(classify("read"))?;
            let tenant_ok = options.tenants.is_empty()
                || msg
                    .key()
                    .is_some_and(|k| options.tenants.iter().any(|t| t.as_bytes() == k));
            if tenant_ok {
                let line = match msg.payload().map(ChangeEvent::decode) {
                    Some(Ok(ev)) if options.tables.is_empty() || options.tables.contains(&ev.table) => {
                        let mut json = event_to_json(&ev);
                        json["partition"] = msg.partition().into();
                        json["offset"] = msg.offset().into();
                        Some(json)
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(serde_json::json!({
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "error": e.to_string(),
                    })),
                    None => None,
                };
                if let Some(line) = line {
                    // A closed pipe (tail | head) ends the command quietly.
                    if writeln!(out, "{line}").is_err() {
                        return Ok(printed);
                    }
                    printed += 1;
                    if options.limit.is_some_and(|l| printed >= l) {
                        return Ok(printed);
                    }
                }
            }
        }
        if !options.follow {
            let position = consumer.position().map_err(classify("position"))?;
            // A partition is done when it is empty or read past the end it had at
            // the start; the position also moves past transaction markers.
            let done = ends.iter().all(|&(p, low, high)| {
                high <= low
                    || position
                        .find_partition(&topic, p)
                        .and_then(|e| e.offset().to_raw())
                        .is_some_and(|o| o >= high)
            });
            if done {
                let _ = out.flush();
                return Ok(printed);
            }
        }
    }
}
