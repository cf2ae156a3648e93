//! The source's side of Kafka: topics, and batches committed together with the
//! position they reach.
//!
//! A batch's change events, the schema versions it introduces and the source
//! checkpoint it reaches are produced in one Kafka transaction (invariant 2):
//! a read-committed reader sees all of them or none, and the checkpoint read at
//! start is always the position right after the last committed event.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use super::reader::{StartAt, TopicReader};
use super::{base_config, transactional_producer, TransportError, MAX_MESSAGE_BYTES};
use crate::config::KafkaConfig;
use crate::event::{BinlogCoordinates, ChangeEvent, EnvelopeError, Row};

/// How far the source has come on one server, stored on the offsets topic under
/// the key `source/<server name>`, as JSON so operators can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    pub server: String,
    /// Binlog coordinates where streaming resumes (after the last committed transaction).
    pub coordinates: BinlogCoordinates,
    /// The GTID state at that point, in its printed form (`mariadb:0-1-42`).
    pub gtid: Option<String>,
    /// Set while the initial snapshot is running; `None` once it is complete.
    pub snapshot: Option<SnapshotProgress>,
    /// Commit time of the last event covered, microseconds since the epoch.
    pub last_commit_micros: i64,
    /// The next offset of the signals topic (partition 0) to act on; `None`
    /// until the source first streams (it then starts at the topic's end).
    #[serde(default)]
    pub signals_next: Option<i64>,
}

/// Where an interrupted snapshot resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Tables (`db.table`) copied completely.
    pub tables_done: Vec<String>,
    /// The table being copied and the last primary key copied from it.
    pub current: Option<TableProgress>,
    /// Snapshot rows published so far (continues the event index after a restart).
    pub rows_done: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    pub table: String,
    pub last_key: Row,
}

/// Topic names and a transactional producer bound to one source server.
pub struct Publisher {
    producer: FutureProducer,
    kafka: KafkaConfig,
    changes: String,
    schema: String,
    offsets: String,
    dead_letter: String,
    checkpoint_key: String,
}

/// What one batch carries.
pub struct Batch<'a> {
    pub events: &'a [ChangeEvent],
    /// Schema versions first seen in this batch, keyed `db.table`, as JSON.
    pub schemas: &'a [(String, Vec<u8>)],
    /// Dead-letter records (key, JSON) for events that could not be decoded.
    pub dead_letters: &'a [(String, Vec<u8>)],
    pub checkpoint: &'a SourceCheckpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Transport(Box<TransportError>),
    #[error("cannot encode event of {table} at {position}: {source}")]
    Encode {
        table: String,
        position: String,
        source: EnvelopeError,
    },
    #[error("offsets topic {topic}: checkpoint at offset {offset} is unreadable: {reason}")]
    BadCheckpoint {
        topic: String,
        offset: i64,
        reason: String,
    },
}

impl From<TransportError> for PublishError {
    fn from(e: TransportError) -> Self {
        PublishError::Transport(Box::new(e))
    }
}

impl PublishError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, PublishError::Transport(t) if t.is_retriable())
    }
}

const TX_TIMEOUT: Duration = Duration::from_secs(60);
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than `message.timeout.ms` (30 s), so librdkafka reports first when it can.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(40);

impl Publisher {
    /// Creates the topics if missing and a producer fenced to `server`: a second
    /// source for the same server fences the first one out.
    pub async fn connect(
        kafka: &KafkaConfig,
        server: &str,
        partitions: i32,
    ) -> Result<Publisher, PublishError> {
        ensure_topics(kafka, partitions).await?;
        let producer = transactional_producer(
            kafka,
            &format!("cdc-bridge-source-{}-{server}", kafka.topic_prefix),
        )?;
        let p = producer.clone();
        let bootstrap = kafka.bootstrap_servers.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(Timeout::After(TX_TIMEOUT)))
            .await
            .expect("init_transactions task")
            .map_err(|e| TransportError::classify(&bootstrap, "init transactions", e))?;
        Ok(Publisher {
            producer,
            kafka: kafka.clone(),
            changes: kafka.changes_topic(),
            schema: kafka.schema_topic(),
            offsets: kafka.offsets_topic(),
            dead_letter: kafka.dead_letter_topic(),
            checkpoint_key: checkpoint_key(server),
        })
    }

    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// Produces the batch and its checkpoint in one transaction.
    pub async fn publish(&self, batch: Batch<'_>) -> Result<(), PublishError> {
        let bootstrap = &self.kafka.bootstrap_servers;
        let kafka_err = |op: &'static str| move |e: KafkaError| TransportError::classify(bootstrap, op, e);
        self.producer
            .begin_transaction()
            .map_err(kafka_err("begin transaction"))?;
        // librdkafka's own timeouts do not bound every wait of a transactional
        // producer whose broker is gone; this one does, so an outage always ends
        // in a retriable error and the source starts over from its checkpoint.
        let result = match tokio::time::timeout(PRODUCE_TIMEOUT, self.produce_all(&batch)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::classify(
                bootstrap,
                "deliver batch",
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            )
            .into()),
        };
        match result {
            Ok(()) => {
                let p = self.producer.clone();
                tokio::task::spawn_blocking(move || p.commit_transaction(Timeout::After(TX_TIMEOUT)))
                    .await
                    .expect("commit task")
                    .map_err(kafka_err("commit transaction"))?;
                // Batches, checkpoints and heartbeats all come through here.
                crate::ops::health::report("source", true, "", Duration::from_secs(120));
                Ok(())
            }
            Err(e) => {
                let p = self.producer.clone();
                // Best effort: the caller starts over with a new producer, which
                // fences this one and aborts whatever it left open.
                let _ =
                    tokio::task::spawn_blocking(move || p.abort_transaction(Timeout::After(ABORT_TIMEOUT)))
                        .await;
                Err(e)
            }
        }
    }

    async fn produce_all(&self, batch: &Batch<'_>) -> Result<(), PublishError> {
        let mut pending = Vec::with_capacity(batch.events.len() + batch.schemas.len() + 1);
        for (key, schema) in batch.schemas {
            pending.push(self.enqueue(&self.schema, key.as_bytes(), schema).await?);
        }
        for (key, record) in batch.dead_letters {
            pending.push(self.enqueue(&self.dead_letter, key.as_bytes(), record).await?);
        }
        for ev in batch.events {
            let bytes = ev.encode().map_err(|source| PublishError::Encode {
                table: format!("{}.{}", ev.database, ev.table),
                position: ev.position.to_string(),
                source,
            })?;
            pending.push(self.enqueue(&self.changes, ev.tenant.as_bytes(), &bytes).await?);
        }
        let checkpoint = serde_json::to_vec(batch.checkpoint).expect("checkpoint serializes");
        pending.push(
            self.enqueue(&self.offsets, self.checkpoint_key.as_bytes(), &checkpoint)
                .await?,
        );
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(TransportError::classify(&self.kafka.bootstrap_servers, "deliver", e).into())
                }
                Err(_) => {
                    return Err(TransportError::classify(
                        &self.kafka.bootstrap_servers,
                        "deliver",
                        KafkaError::Canceled,
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    /// Queues one record, waiting while librdkafka's queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<rdkafka::producer::DeliveryFuture, PublishError> {
        loop {
            match self
                .producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
            {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(TransportError::classify(&self.kafka.bootstrap_servers, "produce", e).into())
                }
            }
        }
    }
}

pub fn checkpoint_key(server: &str) -> String {
    format!("source/{server}")
}

/// Creates the change, schema, offsets and dead-letter topics where missing.
/// Change events may carry multi-MB BLOBs, so every topic accepts messages up
/// to [`MAX_MESSAGE_BYTES`]; the offsets and schema topics are compacted.
pub async fn ensure_topics(kafka: &KafkaConfig, partitions: i32) -> Result<(), TransportError> {
    let bootstrap = kafka.bootstrap_servers.clone();
    let admin: AdminClient<DefaultClientContext> = base_config(kafka)
        .create()
        .map_err(|e| TransportError::classify(&bootstrap, "create admin client", e))?;
    let max_bytes = MAX_MESSAGE_BYTES.to_string();
    let changes = kafka.changes_topic();
    let schema = kafka.schema_topic();
    let offsets = kafka.offsets_topic();
    let dlq = kafka.dead_letter_topic();
    let signals = kafka.signals_topic();
    let topics = [
        NewTopic::new(&changes, partitions, TopicReplication::Fixed(-1))
            .set("max.message.bytes", &max_bytes)
            .set("retention.ms", "-1"),
        NewTopic::new(&schema, 1, TopicReplication::Fixed(-1))
            .set("max.message.bytes", &max_bytes)
            .set("retention.ms", "-1"),
        NewTopic::new(&offsets, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact"),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(-1))
            .set("max.message.bytes", &max_bytes)
            .set("retention.ms", "-1"),
        NewTopic::new(&signals, 1, TopicReplication::Fixed(-1)),
    ];
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(30)))
                .request_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| TransportError::classify(&bootstrap, "create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(TransportError::classify(
                    &bootstrap,
                    "create topics",
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

/// Reads the last committed checkpoint of `server` from the offsets topic.
pub async fn read_checkpoint(
    kafka: &KafkaConfig,
    server: &str,
) -> Result<Option<SourceCheckpoint>, PublishError> {
    let kafka = kafka.clone();
    let key = checkpoint_key(server);
    tokio::task::spawn_blocking(move || read_last_value(&kafka, &kafka.offsets_topic(), key.as_bytes()))
        .await
        .expect("checkpoint reader task")?
        .map(|(offset, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| PublishError::BadCheckpoint {
                topic: kafka_topic_name(server),
                offset,
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn kafka_topic_name(server: &str) -> String {
    format!("offsets topic (key {})", checkpoint_key(server))
}

/// The last committed value under `key` in `topic`, reading up to the end as it is now.
fn read_last_value(
    kafka: &KafkaConfig,
    topic: &str,
    key: &[u8],
) -> Result<Option<(i64, Vec<u8>)>, PublishError> {
    let reader = TopicReader::open(kafka, topic, StartAt::Beginning)?;
    let mut last: Option<(i64, Vec<u8>)> = None;
    let deadline = Duration::from_secs(kafka.connect_timeout_secs.max(10) * 3);
    reader.read_to_end(deadline, |msg| {
        if msg.key() == Some(key) {
            last = msg.payload().map(|p| (msg.offset(), p.to_vec()));
        }
    })?;
    Ok(last)
}
