//! Kafka through rdkafka against the local broker: a transactional producer's
//! committed events are read by a read-committed consumer, exactly once, and an
//! aborted transaction's are never seen.

mod common;

use std::time::Duration;

use cdc_bridge::config::KafkaConfig;
use cdc_bridge::event::{ChangeEvent, Operation, Row, TransactionInfo, Value};
use cdc_bridge::transport;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::util::Timeout;

fn kafka_config(prefix: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: common::Stack::from_env().kafka_bootstrap,
        topic_prefix: prefix.to_owned(),
        connect_timeout_secs: 10,
        partitions: 1,
        properties: Default::default(),
    }
}

fn event(i: u64) -> ChangeEvent {
    ChangeEvent {
        tenant: "tenant-a".into(),
        database: "customer_a".into(),
        table: "patients".into(),
        op: Operation::Insert,
        key: Row(vec![("id".into(), Value::UInt(i))]),
        before: None,
        after: Some(Row(vec![
            ("id".into(), Value::UInt(i)),
            ("name".into(), Value::Text(format!("Zoë {i} 患者 🙂"))),
        ])),
        ddl: None,
        schema_version: 1,
        position: format!("mysql-bin.000001:{}#0", 1000 + i).parse().unwrap(),
        commit_time_micros: 1_700_000_000_000_000 + i as i64,
        transaction: TransactionInfo {
            id: format!("0-1-{i}"),
            index: 0,
            last: true,
        },
    }
}

async fn create_topic(kafka: &KafkaConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> =
        transport::base_config(kafka).create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

#[tokio::test]
async fn transactional_produce_and_read_committed_consume_round_trip() {
    let prefix = common::unique("kafka_rt");
    let kafka = kafka_config(&prefix);
    let topic = kafka.changes_topic();
    create_topic(&kafka, &topic).await;

    let producer = transport::transactional_producer(&kafka, &format!("{prefix}-tx")).expect("producer");
    producer
        .init_transactions(Timeout::After(Duration::from_secs(30)))
        .expect("init transactions");

    let send = |ev: ChangeEvent| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let bytes = ev.encode().unwrap();
            producer
                .send(
                    FutureRecord::to(&topic).key(ev.tenant.as_str()).payload(&bytes),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("send");
        }
    };
    producer.begin_transaction().unwrap();
    for i in 0..3 {
        send(event(i)).await;
    }
    producer
        .commit_transaction(Timeout::After(Duration::from_secs(30)))
        .expect("commit");

    producer.begin_transaction().unwrap();
    send(event(100)).await;
    producer
        .abort_transaction(Timeout::After(Duration::from_secs(30)))
        .expect("abort");

    producer.begin_transaction().unwrap();
    send(event(3)).await;
    producer
        .commit_transaction(Timeout::After(Duration::from_secs(30)))
        .expect("commit");

    let consumer: StreamConsumer =
        transport::read_committed_consumer(&kafka, &format!("{prefix}-group")).expect("consumer");
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of 4 committed events read", seen.len()))
            .expect("receive");
        assert_eq!(msg.key(), Some(&b"tenant-a"[..]));
        seen.push(ChangeEvent::decode(msg.payload().expect("payload")).expect("decode"));
    }
    let expected: Vec<ChangeEvent> = (0..4).map(event).collect();
    assert_eq!(seen, expected, "read-committed consumer saw the wrong events");

    // Nothing else follows: in particular not the aborted event 100. The end of
    // the partition is the high watermark minus the transaction markers.
    let more = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await;
    assert!(
        more.is_err(),
        "an extra event was delivered: {:?}",
        more.map(|m| m.map(|m| m.offset()))
    );
}
