//! Kafka going away while the source streams: the source retries with backoff
//! and, once the broker is back, the topic holds every change exactly once.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cdc_bridge::event::{Operation, Phase};
use common::pipeline::{wait_converged_on, BridgeProcess, Pipeline};
use common::{temp_config, ThrowawayKafka};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_loses_and_doubles_nothing() {
    let mut kafka = ThrowawayKafka::start().await;
    let p = Pipeline::new("src_outage", 1, "").await;
    let db = p.databases[0].clone();
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace(&p.stack.kafka_bootstrap, &kafka.bootstrap());
    let (_dir, config) = temp_config(&text);
    let mut kafka_config = p.kafka();
    kafka_config.bootstrap_servers = kafka.bootstrap();

    let mut conn = p.admin().await;
    conn.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "INSERT INTO `{db}`.t SELECT seq, 0 FROM `{db}`.seq_1_to_100"
    ))
    .await
    .unwrap();
    let mut source = BridgeProcess::spawn(&config, &p.stack.mysql_password, &[]);
    source.wait_streaming(Duration::from_secs(90)).await;

    for i in 0..50 {
        conn.query_drop(format!("INSERT INTO `{db}`.t VALUES ({}, {i})", 1000 + i))
            .await
            .unwrap();
    }
    kafka.kill();
    // Writes while Kafka is down; the source must notice and retry.
    for i in 0..50 {
        conn.query_drop(format!("UPDATE `{db}`.t SET v = v + 1 WHERE id = {}", 1 + i))
            .await
            .unwrap();
        conn.query_drop(format!("INSERT INTO `{db}`.t VALUES ({}, {i})", 2000 + i))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !source
        .log_text()
        .contains("starting over from the last committed checkpoint")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the source never reported the outage:\n{}",
            source.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kafka.resume().await;
    for i in 0..50 {
        conn.query_drop(format!("DELETE FROM `{db}`.t WHERE id = {}", 2000 + i))
            .await
            .unwrap();
    }

    let reads = wait_converged_on(&p, &kafka_config, Duration::from_secs(180)).await;
    let log = source.log_text();
    let outage = log.lines().filter(|l| l.contains("starting over")).count();
    assert!(outage >= 1, "{log}");
    let mut seen = BTreeSet::new();
    for r in reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Stream && r.event.op != Operation::Watermark)
    {
        assert!(
            seen.insert(r.event.position.clone()),
            "event at {} is doubled",
            r.event.position
        );
    }
    assert_eq!(seen.len(), 50 + 100 + 50, "every streamed change once");
    assert_eq!(
        source.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        source.log_text()
    );
}
