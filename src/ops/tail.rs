//! `cdc-bridge tail`: the change topic as JSON lines, for people.
//!
//! Reads committed events only, from the beginning, an offset or a time, and
//! stops at the end of the topic as it was when tail started (or follows it).
//! Row values are printed: the user asked for them.

use std::io::Write;
use std::time::Duration;

use rdkafka::message::Message;

use crate::config::KafkaConfig;
use crate::event::{json::event_to_json, ChangeEvent};
use crate::transport::reader::{StartAt, TopicReader};
use crate::transport::TransportError;

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
    let start = match (options.from_offset, options.from_time_ms) {
        (Some(o), _) => StartAt::Offset(o),
        (None, Some(ms)) => StartAt::TimeMs(ms),
        (None, None) => StartAt::Beginning,
    };
    let reader = TopicReader::open(kafka, &kafka.changes_topic(), start)?;
    let mut printed = 0u64;
    loop {
        if let Some(msg) = reader.poll(Duration::from_millis(300))? {
            let tenant_ok = options.tenants.is_empty()
                || msg
                    .key()
                    .is_some_and(|k| options.tenants.iter().any(|t| t.as_bytes() == k));
            let line = match msg.payload().map(ChangeEvent::decode) {
                _ if !tenant_ok => None,
                Some(Ok(ev)) if options.tables.is_empty() || options.tables.contains(&ev.table) => {
                    let mut json = event_to_json(&ev);
                    json["partition"] = msg.partition().into();
                    json["offset"] = msg.offset().into();
                    Some(json)
                }
                Some(Ok(_)) | None => None,
                Some(Err(e)) => Some(serde_json::json!({
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "error": e.to_string(),
                })),
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
        if !options.follow && reader.at_end()? {
            let _ = out.flush();
            return Ok(printed);
        }
    }
}
