//! Reading a topic's committed records up to where it ended when reading began.
//!
//! Used by `tail`, by the source to find its checkpoint, and by tests. The end
//! is the high watermark of each partition at open time; a partition is done when
//! the consumer's position reaches it, which also moves past transaction markers,
//! so reading ends even when a topic's last offsets are control records.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::{base_config, TransportError, MAX_MESSAGE_BYTES};
use crate::config::KafkaConfig;

/// Where reading starts in every partition.
#[derive(Debug, Clone, Copy)]
pub enum StartAt {
    Beginning,
    Offset(i64),
    /// The first record at or after this time (milliseconds since the epoch).
    TimeMs(i64),
}

/// A read-committed reader of one topic, assigned all its partitions.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
    bootstrap: String,
    /// (partition, low watermark, high watermark) at open time.
    ends: Vec<(i32, i64, i64)>,
}

impl TopicReader {
    pub fn open(kafka: &KafkaConfig, topic: &str, start: StartAt) -> Result<TopicReader, TransportError> {
        let bootstrap = kafka.bootstrap_servers.clone();
        let classify = |op: &'static str| {
            let bootstrap = bootstrap.clone();
            move |e: KafkaError| TransportError::classify(&bootstrap, op, e)
        };
        let mut cfg = base_config(kafka);
        cfg.set("group.id", format!("cdc-bridge-reader-{}", std::process::id()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", MAX_MESSAGE_BYTES.to_string());
        let consumer: BaseConsumer = cfg.create().map_err(classify("create consumer"))?;
        let timeout = Duration::from_secs(kafka.connect_timeout_secs.max(5));
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(classify("fetch metadata"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut ends = Vec::with_capacity(partitions.len());
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = super::fetch_watermarks(&consumer, &bootstrap, topic, p, timeout)?;
            ends.push((p, low, high));
            let offset = match start {
                StartAt::Offset(o) => Offset::Offset(o),
                // Resolved below for all partitions at once.
                StartAt::Beginning | StartAt::TimeMs(_) => Offset::Beginning,
            };
            tpl.add_partition_offset(topic, p, offset)
                .map_err(classify("assign"))?;
        }
        if let StartAt::TimeMs(ms) = start {
            let mut times = TopicPartitionList::new();
            for &p in &partitions {
                times
                    .add_partition_offset(topic, p, Offset::Offset(ms))
                    .map_err(classify("assign"))?;
            }
            tpl = consumer
                .offsets_for_times(times, timeout)
                .map_err(classify("offsets for times"))?;
        }
        if !partitions.is_empty() {
            consumer.assign(&tpl).map_err(classify("assign"))?;
        }
        Ok(TopicReader {
            consumer,
            topic: topic.to_owned(),
            bootstrap,
            ends,
        })
    }

    /// (partition, low watermark, high watermark) of every partition at open time.
    pub fn ends(&self) -> &[(i32, i64, i64)] {
        &self.ends
    }

    /// Reads each listed partition from its offset instead (the others as opened).
    pub fn start_at(&self, offsets: &[(i32, i64)]) -> Result<(), TransportError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, _, _) in &self.ends {
            let offset = offsets
                .iter()
                .find(|(q, _)| *q == p)
                .map_or(Offset::Beginning, |(_, o)| Offset::Offset(*o));
            tpl.add_partition_offset(&self.topic, p, offset)
                .map_err(|e| TransportError::classify(&self.bootstrap, "assign", e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| TransportError::classify(&self.bootstrap, "assign", e))
    }

    /// The next record, if one arrives within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<Option<BorrowedMessage<'_>>, TransportError> {
        if self.ends.is_empty() {
            return Ok(None);
        }
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(TransportError::classify(&self.bootstrap, "read", e)),
        }
    }

    /// Whether every partition was read up to its end at open time.
    pub fn at_end(&self) -> Result<bool, TransportError> {
        let position = self
            .consumer
            .position()
            .map_err(|e| TransportError::classify(&self.bootstrap, "position", e))?;
        Ok(self.ends.iter().all(|&(p, low, high)| {
            high <= low
                || position
                    .find_partition(&self.topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= high)
        }))
    }

    /// Calls `each` with every record up to the end, failing after `deadline`.
    pub fn read_to_end(
        &self,
        deadline: Duration,
        mut each: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<(), TransportError> {
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Some(msg) = self.poll(Duration::from_millis(200))? {
                each(&msg);
            }
            if self.at_end()? {
                return Ok(());
            }
            if std::time::Instant::now() > until {
                return Err(TransportError::classify(
                    &self.bootstrap,
                    "read to the end of the topic",
                    KafkaError::Global(rdkafka::types::RDKafkaErrorCode::OperationTimedOut),
                ));
            }
        }
    }
}
