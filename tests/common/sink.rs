//! Helpers for tests that run `cdc-bridge sink` into the stack's PostgreSQL in
//! mirror mode, and compare every mirrored row with v1.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use cdc_bridge::config::KafkaConfig;
use cdc_bridge::sink::mirror;
use cdc_bridge::sink::postgres::read_rows;
use cdc_bridge::transport::reader::{StartAt, TopicReader};

use super::pipeline::{diff, BridgeProcess, Pipeline, Tables};
use super::Stack;

/// The sink side of a test pipeline: its schema prefix and consumer group.
pub struct MirrorSink {
    pub schema_prefix: String,
    pub group: String,
}

/// Adds a `[sink]` section writing to the stack's PostgreSQL, mirror mode, with
/// schemas and a consumer group of this test's own; `extra` goes into `[sink]`.
pub fn add_sink(p: &Pipeline, extra: &str) -> MirrorSink {
    let schema_prefix = format!("{}_", p.prefix);
    let group = format!("{}-sink", p.prefix);
    let mut text = std::fs::read_to_string(&p.config_path).expect("read config");
    text.push_str(&format!(
        r#"
[sink]
group_id = "{group}"
mirror_schema_prefix = "{schema_prefix}"
batch_max_wait_ms = 50
retry_initial_ms = 50
retry_max_ms = 1000
{extra}

[[sink.targets]]
name = "pg"
kind = "postgres"
url = "{url}"
password = "${{CDC_BRIDGE_PG_PASSWORD}}"
"#,
        url = p.stack.pg_url(),
    ));
    std::fs::write(&p.config_path, text).expect("write config");
    MirrorSink { schema_prefix, group }
}

/// Starts `cdc-bridge sink` for this pipeline.
pub fn start_sink(p: &Pipeline) -> BridgeProcess {
    BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[])
}

/// A client of the stack's PostgreSQL database, in the session settings the sink uses.
pub async fn pg_client(stack: &Stack) -> tokio_postgres::Client {
    pg_connect(stack, &stack.pg_database).await
}

/// A client of database `db` on the stack's PostgreSQL.
pub async fn pg_connect(stack: &Stack, db: &str) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&stack.pg_host)
        .port(stack.pg_port)
        .user(&stack.pg_user)
        .password(&stack.pg_password)
        .dbname(db)
        .options("-c TimeZone=UTC -c IntervalStyle=postgres -c bytea_output=hex -c DateStyle=ISO")
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the stack's PostgreSQL");
    tokio::spawn(conn);
    client
}

/// Every record of the dead-letter topic: its value and its headers.
pub async fn dead_letters(kafka: &KafkaConfig) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    use rdkafka::message::{Headers, Message};
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let reader = TopicReader::open(&kafka, &kafka.dead_letter_topic(), StartAt::Beginning).unwrap();
        let mut out = Vec::new();
        reader
            .read_to_end(Duration::from_secs(30), |m| {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                let value = String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned();
                                (x.key.to_owned(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
            })
            .unwrap();
        out
    })
    .await
    .unwrap()
}

/// v1 (as the mirror must hold it) and the mirror, every row of every table,
/// as multisets of rows in the target's value types.
pub async fn expected_and_actual(
    p: &Pipeline,
    sink: &MirrorSink,
    pg: &tokio_postgres::Client,
) -> (Tables, Tables) {
    let mut expected = Tables::new();
    let mut actual = Tables::new();
    for (schema, rows) in p.select_rows().await {
        let def = mirror::table_def(&sink.schema_prefix, &schema).expect("mirrorable table");
        let id = (schema.database.clone(), schema.table.clone());
        let e = expected.entry(id.clone()).or_default();
        for r in rows {
            let values = mirror::row_values(&def, &r).expect("mirrorable row");
            *e.0.entry(format!("{values:?}")).or_default() += 1;
        }
        let a = actual.entry(id).or_default();
        // A table not created yet reads as empty.
        for values in read_rows(pg, &def).await.unwrap_or_default() {
            *a.0.entry(format!("{values:?}")).or_default() += 1;
        }
    }
    (expected, actual)
}

/// Waits until the mirror equals v1 row for row, or panics with the difference
/// and the end of the processes' logs.
pub async fn wait_mirrored(
    p: &Pipeline,
    sink: &MirrorSink,
    pg: &tokio_postgres::Client,
    processes: &[&BridgeProcess],
    timeout: Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (expected, actual) = expected_and_actual(p, sink, pg).await;
        if expected == actual {
            return;
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = processes
                .iter()
                .map(|proc| {
                    let text = proc.log_text();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    format!(
                        "--- {} ---\n{}",
                        proc.log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            let mut d = diff(&expected, &actual);
            d.truncate(d.floor_char_boundary(20_000));
            panic!("the mirror did not converge on v1:\n{d}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Drops what the sink created for this test in PostgreSQL.
pub async fn drop_mirror(p: &Pipeline, sink: &MirrorSink, pg: &tokio_postgres::Client) {
    for db in &p.databases {
        let schema = mirror::schema_name(&sink.schema_prefix, db);
        let _ = pg
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
    let _ = pg
        .execute(
            "DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, $1)",
            &[&sink.schema_prefix],
        )
        .await;
    let _ = pg
        .execute(
            "DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
            &[&sink.group],
        )
        .await;
    let _ = pg
        .execute(
            "DELETE FROM cdc_bridge.applied WHERE tenant = ANY($1)",
            &[&p.databases],
        )
        .await;
}
