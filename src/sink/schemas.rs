//! The table schemas change events name, read from the schema topic.
//!
//! The source publishes every version of every table schema (keyed
//! `database.table#version`, in the same Kafka transaction as the first event
//! that uses it), so a version an event names is readable by the time the event
//! is; a miss re-reads the topic once before it is an error.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::KafkaConfig;
use crate::source::schema::TableSchema;
use crate::transport::reader::{StartAt, TopicReader};
use crate::transport::TransportError;

type Key = (String, String, u32);

/// Every schema version read so far.
#[derive(Default)]
pub struct SchemaRegistry {
    versions: HashMap<Key, TableSchema>,
    /// Records on the topic that were not a schema (counted, never fatal).
    pub unreadable: usize,
}

impl SchemaRegistry {
    /// Reads the whole schema topic.
    pub async fn load(kafka: &KafkaConfig) -> Result<SchemaRegistry, TransportError> {
        let mut registry = SchemaRegistry::default();
        registry.refresh(kafka).await?;
        Ok(registry)
    }

    /// Re-reads the schema topic up to its current end.
    pub async fn refresh(&mut self, kafka: &KafkaConfig) -> Result<(), TransportError> {
        let kafka = kafka.clone();
        let read = tokio::task::spawn_blocking(move || {
            let reader = TopicReader::open(&kafka, &kafka.schema_topic(), StartAt::Beginning)?;
            let mut schemas = Vec::new();
            let mut unreadable = 0;
            reader.read_to_end(Duration::from_secs(60), |msg| {
                match rdkafka::Message::payload(msg).map(serde_json::from_slice::<TableSchema>) {
                    Some(Ok(schema)) => schemas.push(schema),
                    _ => unreadable += 1,
                }
            })?;
            Ok::<_, TransportError>((schemas, unreadable))
        })
        .await
        .expect("schema reader task does not panic")?;
        let (schemas, unreadable) = read;
        self.unreadable = unreadable;
        for s in schemas {
            self.versions
                .insert((s.database.clone(), s.table.clone(), s.version), s);
        }
        Ok(())
    }

    pub fn get(&self, database: &str, table: &str, version: u32) -> Option<&TableSchema> {
        self.versions
            .get(&(database.to_owned(), table.to_owned(), version))
    }

    pub fn insert(&mut self, schema: TableSchema) {
        self.versions.insert(
            (schema.database.clone(), schema.table.clone(), schema.version),
            schema,
        );
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}
