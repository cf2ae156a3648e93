//! `cdc-bridge snapshot`: a request on the signals topic that the running
//! source of the server takes between two batches (see `source::resnapshot`).

use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::config::KafkaConfig;
use crate::source::SnapshotSignal;
use crate::transport::TransportError;

/// Publishes the request under the source's name; returns its offset.
pub async fn request_snapshot(
    kafka: &KafkaConfig,
    source: &str,
    tenant: &str,
    tables: &[String],
) -> anyhow::Result<i64> {
    crate::transport::publisher::ensure_topics(kafka, kafka.partitions).await?;
    let producer = crate::transport::idempotent_producer(kafka)?;
    let signal = SnapshotSignal {
        tenant: tenant.to_owned(),
        tables: tables.to_vec(),
        requested_micros: crate::event::now_micros(),
    };
    let payload = serde_json::to_vec(&signal)?;
    let topic = kafka.signals_topic();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key(source).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| TransportError::classify(&kafka.bootstrap_servers, "send signal", e))?;
    Ok(delivery.offset)
}
