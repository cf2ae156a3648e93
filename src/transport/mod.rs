//! Kafka: client settings shared by every stage.
//!
//! Producers are idempotent and transactional, consumers read committed only, so
//! a reader never sees events of a transaction the source did not commit
//! (invariant 2). Message size limits are raised together on both sides so an
//! event carrying a multi-MB BLOB fits.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;

/// Largest message the clients produce or fetch (64 MiB); topics need
/// `max.message.bytes` at least this large for events with big BLOBs.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Kafka client errors, split by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker is unreachable or busy: retry with backoff.
    #[error("kafka {bootstrap}: {operation}: {source} (retriable)")]
    Retriable {
        bootstrap: String,
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Configuration or authorization errors: stop.
    #[error("kafka {bootstrap}: {operation}: {source}")]
    Fatal {
        bootstrap: String,
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl TransportError {
    /// Errors a person must fix (authorization, configuration, limits) or that
    /// mean another instance took over (fencing) are fatal; everything else —
    /// unreachable brokers, timeouts, leader changes, the queue purged by an
    /// aborted transaction — is retriable: starting over from the last committed
    /// position loses and doubles nothing.
    pub fn classify(bootstrap: &str, operation: &'static str, source: rdkafka::error::KafkaError) -> Self {
        use rdkafka::types::RDKafkaErrorCode as C;
        let fatal = matches!(
            source.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::TopicAuthorizationFailed
                    | C::GroupAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::TransactionalIdAuthorizationFailed
                    | C::SaslAuthenticationFailed
                    | C::Authentication
                    | C::InvalidConfig
                    | C::InvalidArgument
                    | C::InvalidReplicationFactor
                    | C::PolicyViolation
                    | C::UnsupportedVersion
                    | C::InvalidTransactionTimeout
                    | C::ProducerFenced
                    | C::InvalidProducerEpoch
                    | C::Fenced
            )
        ) || matches!(source, rdkafka::error::KafkaError::ClientCreation(_));
        let bootstrap = bootstrap.to_owned();
        if fatal {
            TransportError::Fatal {
                bootstrap,
                operation,
                source,
            }
        } else {
            TransportError::Retriable {
                bootstrap,
                operation,
                source,
            }
        }
    }

    pub fn is_retriable(&self) -> bool {
        matches!(self, TransportError::Retriable { .. })
    }
}

/// The (low, high) watermarks of one partition. A partition created moments
/// ago may have no leader yet (`NotLeaderForPartition`, `LeaderNotAvailable`,
/// `UnknownTopicOrPartition`): those answers are asked again until `timeout`.
pub fn fetch_watermarks<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), TransportError> {
    use rdkafka::types::RDKafkaErrorCode as E;
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match consumer.fetch_watermarks(topic, partition, left.max(Duration::from_millis(500))) {
            Ok(w) => return Ok(w),
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(E::NotLeaderForPartition | E::LeaderNotAvailable | E::UnknownTopicOrPartition)
                ) && std::time::Instant::now() + pause < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(TransportError::classify(bootstrap, "fetch watermarks", e)),
        }
    }
}

/// Settings every client shares: brokers, the user's extra properties, size limits.
pub fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set(
            "socket.connection.setup.timeout.ms",
            (kafka.connect_timeout_secs * 1000).to_string(),
        )
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .set("log_level", "4");
    for (key, value) in &kafka.properties {
        cfg.set(key, value);
    }
    cfg
}

/// An idempotent, transactional producer; call `init_transactions` before use.
pub fn transactional_producer(
    kafka: &KafkaConfig,
    transactional_id: &str,
) -> Result<FutureProducer, TransportError> {
    let mut cfg = base_config(kafka);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000")
        // A batch that cannot be delivered fails within this time, so the
        // source starts over from its checkpoint instead of waiting on a dead broker.
        .set("message.timeout.ms", "30000")
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    cfg.create()
        .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "create producer", e))
}

/// A consumer that sees only committed transactions and never commits offsets to
/// Kafka by itself (positions are stored where the work they cover is stored).
pub fn read_committed_consumer(
    kafka: &KafkaConfig,
    group_id: &str,
) -> Result<StreamConsumer, TransportError> {
    read_committed_consumer_with(kafka, group_id, DefaultConsumerContext)
}

/// [`read_committed_consumer`] with a context that sees rebalances.
pub fn read_committed_consumer_with<C: ConsumerContext + 'static>(
    kafka: &KafkaConfig,
    group_id: &str,
    context: C,
) -> Result<StreamConsumer<C>, TransportError> {
    let mut cfg = base_config(kafka);
    cfg.set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Partitions added to the change topic are picked up within seconds.
        .set("topic.metadata.refresh.interval.ms", "10000")
        // Read-ahead bound: a backlog is fetched as it is applied, not all at once.
        // A message larger than the per-partition fetch size still arrives (the
        // broker returns at least one message per fetch), up to message.max.bytes.
        .set("fetch.message.max.bytes", (8 * 1024 * 1024).to_string())
        .set("queued.max.messages.kbytes", "16384");
    // The user's properties win over these defaults.
    for (key, value) in &kafka.properties {
        cfg.set(key, value);
    }
    cfg.create_with_context(context)
        .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "create consumer", e))
}

/// An idempotent (not transactional) producer, for the dead-letter topic.
pub fn idempotent_producer(kafka: &KafkaConfig) -> Result<FutureProducer, TransportError> {
    let mut cfg = base_config(kafka);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000");
    cfg.create()
        .map_err(|e| TransportError::classify(&kafka.bootstrap_servers, "create producer", e))
}

/// What a metadata request says about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
}

/// Asks the cluster for its metadata, giving up after `timeout`.
pub async fn cluster_info(kafka: &KafkaConfig, timeout: Duration) -> Result<ClusterInfo, TransportError> {
    let mut cfg = base_config(kafka);
    cfg.set("group.id", "cdc-bridge-check");
    let bootstrap = kafka.bootstrap_servers.clone();
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| TransportError::classify(&bootstrap, "create client", e))?;
    tokio::task::spawn_blocking(move || {
        let md = consumer
            .fetch_metadata(None, timeout)
            .map_err(|e| TransportError::classify(&bootstrap, "fetch metadata", e))?;
        Ok(ClusterInfo {
            brokers: md
                .brokers()
                .iter()
                .map(|b| format!("{}:{}", b.host(), b.port()))
                .collect(),
            topics: md.topics().iter().map(|t| t.name().to_owned()).collect(),
        })
    })
    .await
    .expect("metadata task panicked")
}
pub mod publisher;
pub mod reader;
