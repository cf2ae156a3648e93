//! Sink benchmark against the local stack (`bash tests/stack/stack.sh up` first):
//! rows/s the sink applies into PostgreSQL (mirror mode) from a backlog on the
//! change topic, its batch apply+commit latency and batch size (from its
//! Prometheus summaries), and the sink process's peak RSS.
//!
//! The backlog is made the realistic way: two tenant tables are filled in
//! MariaDB, `cdc-bridge source` snapshots them onto the topic and is stopped,
//! then `cdc-bridge sink` starts with the machine to itself. The clock runs from
//! spawning the sink until the offsets it stores in the target
//! (`cdc_bridge.sink_offsets.next_offset`) are past the last record of every
//! partition with data; the mirrored row counts are checked afterwards.
//!
//! `cargo bench --bench sink` (`CDC_BRIDGE_BENCH_ROWS` changes the backlog, default 500000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdc_bridge::config::KafkaConfig;
use cdc_bridge::sink::mirror;
use cdc_bridge::transport::reader::{StartAt, TopicReader};
use common::pipeline::Pipeline;
use common::process::{alive, peak_rss_kib};
use common::sink::{add_sink, drop_mirror, pg_client, start_sink};
use mysql_async::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

const TENANTS: usize = 2;

/// GET /metrics over a plain TCP connection; `None` while nothing listens yet.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// One sample of a summary (`quantile` = `Some("0.99")`) or its `_sum`/`_count` (`suffix`).
fn sample(text: &str, name: &str, quantile: Option<&str>, suffix: &str) -> Option<f64> {
    let head = match quantile {
        Some(q) => format!("{name}{{quantile=\"{q}\"}} "),
        None => format!("{name}{suffix} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

const BATCH_SECONDS: &str = "cdc_bridge_sink_batch_duration_seconds";
const BATCH_EVENTS: &str = "cdc_bridge_sink_batch_events";

/// A summary's quantiles at one scrape (the exporter's summaries cover a
/// rolling window of about 60 s: 3 buckets of 20 s).
#[derive(Debug, Default, Clone)]
struct Window {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Window {
    fn read(text: &str, name: &str) -> Option<Window> {
        Some(Window {
            p50: sample(text, name, Some("0.5"), "")?,
            p95: sample(text, name, Some("0.95"), "")?,
            p99: sample(text, name, Some("0.99"), "")?,
            max: sample(text, name, Some("1"), "")?,
        })
    }
}

/// Per partition with data: (last record's offset, records) of the change topic
/// as a read-committed consumer sees it, and the partitions' high watermarks.
fn topic_end(kafka: &KafkaConfig) -> (BTreeMap<i32, (i64, u64)>, BTreeMap<i32, i64>) {
    let topic = kafka.changes_topic();
    let reader = TopicReader::open(kafka, &topic, StartAt::Beginning).expect("open the change topic");
    let mut last: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    reader
        .read_to_end(Duration::from_secs(600), |msg| {
            let e = last.entry(msg.partition()).or_insert((-1, 0));
            e.0 = e.0.max(msg.offset());
            e.1 += 1;
        })
        .expect("read the change topic");
    let consumer: BaseConsumer = cdc_bridge::transport::base_config(kafka)
        .set("group.id", common::unique("bench-sink-watermarks"))
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    let mut high = BTreeMap::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, h) = consumer
            .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        high.insert(p.id(), h);
    }
    (last, high)
}

async fn stored_offsets(pg: &tokio_postgres::Client, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    pg.query(
        "SELECT kafka_partition, next_offset FROM cdc_bridge.sink_offsets \
         WHERE consumer_group = $1 AND topic = $2",
        &[&group, &topic],
    )
    .await
    .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    .unwrap_or_default()
}

async fn delete_topics(kafka: &KafkaConfig) {
    let Ok(admin) = cdc_bridge::transport::base_config(kafka).create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let names = [
        kafka.changes_topic(),
        kafka.schema_topic(),
        kafka.offsets_topic(),
        kafka.dead_letter_topic(),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: u64 = std::env::var("CDC_BRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    // CDC_BRIDGE_BENCH_MODE=mapping: the same backlog through a v1→v2 mapping
    // (UUIDv5 ids, a local→UTC conversion, trimming, constants) into a v2 table.
    let mapped = std::env::var("CDC_BRIDGE_BENCH_MODE").is_ok_and(|m| m == "mapping");
    let bench_started = Instant::now();
    let p = Pipeline::new("bench_sink", TENANTS, "snapshot_chunk_rows = 10000").await;
    let pg = pg_client(&p.stack).await;
    let v2_schema = format!("{}_v2", p.prefix);
    let sink = if mapped {
        pg.batch_execute(&format!(
            r#"CREATE SCHEMA "{v2_schema}";
               CREATE TABLE "{v2_schema}"."Items" ("Id" uuid PRIMARY KEY, "TenantId" text NOT NULL,
                 "N" integer, "Note" varchar(40), "Amount" numeric(12,2), "AtUtc" timestamptz(6),
                 "LegacyV1Key" text, "IsLegacy" boolean NOT NULL)"#
        ))
        .await
        .unwrap();
        let mapping = p.config_dir.path().join("mapping.toml");
        std::fs::write(
            &mapping,
            format!(
                r#"namespace = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001"
timezone = "America/Chicago"
ambiguous_times = "earlier"
target_schema = "{v2_schema}"
[[tables]]
name = "Items"
from = "items"
key = "Id"
[tables.columns]
Id = {{ id_of = "items" }}
TenantId = {{ tenant = true }}
N = {{ from = "n" }}
Note = {{ from = "note", convert = "trim_null_if_empty" }}
Amount = {{ from = "amount" }}
AtUtc = {{ from = "at", convert = "local_to_utc" }}
LegacyV1Key = {{ from = "id", convert = "text" }}
IsLegacy = {{ value = true }}
"#
            ),
        )
        .unwrap();
        add_sink(
            &p,
            &format!("mode = \"mapping\"\nmapping = \"{}\"", mapping.display()),
        )
    } else {
        add_sink(&p, "")
    };
    let kafka = p.kafka();
    let topic = kafka.changes_topic();

    // v1: the backlog's rows, split over the tenants.
    let per_tenant: Vec<u64> = (0..TENANTS as u64)
        .map(|i| rows / TENANTS as u64 + u64::from(i < rows % TENANTS as u64))
        .collect();
    let mut conn = p.admin().await;
    let load = Instant::now();
    for (db, &n) in p.databases.iter().zip(&per_tenant) {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.items (id INT PRIMARY KEY, n INT, note VARCHAR(40), \
             amount DECIMAL(12,2), at DATETIME(6))"
        ))
        .await
        .unwrap();
        if n > 0 {
            conn.query_drop(format!(
                "INSERT INTO `{db}`.items SELECT seq, seq * 7 % 100003, CONCAT('item note ', seq), \
                 (seq % 1000000) / 100, '2024-01-01 08:00:00' + INTERVAL seq SECOND + INTERVAL seq % 997 MICROSECOND \
                 FROM `{db}`.seq_1_to_{n}"
            ))
            .await
            .unwrap();
        }
    }
    println!(
        "loaded {rows} rows into {TENANTS} tenant tables in {:.1}s",
        load.elapsed().as_secs_f64()
    );

    // The backlog: the source's snapshot on the change topic, then the source stopped.
    let snap = Instant::now();
    let mut source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(1800)).await;
    let status = source.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the source did not stop cleanly ({status:?}):\n{}",
        source.log_text()
    );
    let (last, high) = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || topic_end(&kafka))
            .await
            .unwrap()
    };
    let events: u64 = last.values().map(|(_, n)| n).sum();
    println!(
        "source put {events} events on {topic} in {:.1}s (snapshot; source stopped); per partition \
         (last offset, events, high watermark): {}",
        snap.elapsed().as_secs_f64(),
        last.iter()
            .map(|(p, (o, n))| format!("p{p} ({o}, {n}, {})", high.get(p).copied().unwrap_or(-1)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        events >= rows,
        "only {events} events for {rows} rows on the topic"
    );

    // The sink, with its metrics endpoint on a port of its own.
    let metrics_port = common::free_port();
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{metrics_port}\""));
    std::fs::write(&p.config_path, text).unwrap();
    let started = Instant::now();
    let mut sink_process = start_sink(&p);
    let pid = sink_process.pid().expect("sink pid");
    let deadline = started + Duration::from_secs(1800);
    // (seconds since spawn, events stored as applied) at the first stored offsets.
    let mut first_commit: Option<(f64, i64)> = None;
    let mut last_scrape = Instant::now();
    let mut windows: Vec<Window> = Vec::new();
    let done = |stored: &BTreeMap<i32, i64>| {
        last.iter()
            .all(|(p, (o, _))| stored.get(p).is_some_and(|next| *next > *o))
    };
    loop {
        let stored = stored_offsets(&pg, &sink.group, &topic).await;
        if first_commit.is_none() && !stored.is_empty() {
            first_commit = Some((started.elapsed().as_secs_f64(), stored.values().sum()));
        }
        if done(&stored) {
            break;
        }
        if !alive(pid) || Instant::now() > deadline {
            panic!(
                "the sink did not reach the end of the topic (alive: {}, stored offsets {stored:?}, \
                 last offsets {last:?}):\n{}",
                alive(pid),
                sink_process.log_text()
            );
        }
        // The summaries forget samples older than about a minute: keep every window.
        if last_scrape.elapsed() >= Duration::from_secs(10) {
            if let Some(w) = scrape(metrics_port).and_then(|t| Window::read(&t, BATCH_SECONDS)) {
                windows.push(w);
            }
            last_scrape = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let metrics = scrape(metrics_port).expect("scrape the sink's /metrics");
    let rss = peak_rss_kib(pid);

    // Every row is there.
    if mapped {
        let count: i64 = pg
            .query_one(&format!(r#"SELECT count(*) FROM "{v2_schema}"."Items""#), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count as u64, rows, "rows mapped into {v2_schema}.Items");
    }
    for (db, &n) in p.databases.iter().zip(&per_tenant).filter(|_| !mapped) {
        let schema = mirror::schema_name(&sink.schema_prefix, db);
        let count: i64 = pg
            .query_one(&format!("SELECT count(*) FROM \"{schema}\".items"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count as u64, n, "rows mirrored into {schema}.items");
    }
    let status = sink_process.terminate();
    let log = sink_process.log_text();
    let kept_log = std::env::temp_dir().join(format!("{}-sink.log", p.prefix));
    let _ = std::fs::write(&kept_log, &log);
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();

    let end = Window::read(&metrics, BATCH_SECONDS).unwrap_or_default();
    windows.push(end.clone());
    let batches = sample(&metrics, BATCH_SECONDS, None, "_count").unwrap_or(f64::NAN);
    let batch_sum = sample(&metrics, BATCH_SECONDS, None, "_sum").unwrap_or(f64::NAN);
    let sizes = Window::read(&metrics, BATCH_EVENTS).unwrap_or_default();
    let size_sum = sample(&metrics, BATCH_EVENTS, None, "_sum").unwrap_or(f64::NAN);
    let worst_p99 = windows.iter().map(|w| w.p99).fold(0.0, f64::max);
    let max = windows.iter().map(|w| w.max).fold(0.0, f64::max);
    let ms = |s: f64| s * 1000.0;
    let (startup, first_events) = first_commit.unwrap_or((f64::NAN, 0));
    // Offsets count a transaction marker or two per chunk besides the events: close enough for a rate.
    let end_offsets: i64 = last.values().map(|(o, _)| o + 1).sum();

    let pg_version: String = pg
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();
    println!(
        "sink benchmark ({rows} rows / {events} events, Kafka → PostgreSQL {pg_version} {} mode, \
         {TENANTS} tenants, {} partitions with data, sink defaults + batch_max_wait_ms = 50, {} cores)",
        if mapped { "mapping" } else { "mirror" },
        last.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  sink backlog: {rows} rows in {secs:.1} s = {:.0} rows/s (spawn → stored next_offset past the last \
         record of every partition; first batch committed at {startup:.1} s, {:.0} rows/s from then on)",
        rows as f64 / secs,
        (end_offsets - first_events) as f64 / (secs - startup)
    );
    println!(
        "  batch: {batches} batches, {:.0} events/batch mean; whole run: apply+commit mean {:.1} ms, \
         max {:.1} ms, worst 60 s-window p99 {:.1} ms",
        size_sum / batches,
        ms(batch_sum / batches),
        ms(max),
        ms(worst_p99)
    );
    println!(
        "  last 60 s window: events/batch p50 {:.0} p95 {:.0} max {:.0}; latency p50 {:.1} ms p95 {:.1} ms \
         p99 {:.1} ms max {:.1} ms",
        sizes.p50,
        sizes.p95,
        sizes.max,
        ms(end.p50),
        ms(end.p95),
        ms(end.p99),
        ms(end.max)
    );
    match rss {
        Some(kib) => println!("  sink peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("  sink peak RSS unknown"),
    }
    println!(
        "  sink exit {:?}; {} WARN/ERROR log lines; log kept at {}",
        status.and_then(|s| s.code()),
        problems.len(),
        kept_log.display()
    );
    for l in problems.iter().take(5) {
        println!("    {l}");
    }

    // Clean up what the bench made.
    drop_mirror(&p, &sink, &pg).await;
    if mapped {
        let _ = pg
            .batch_execute(&format!(
                r#"DROP SCHEMA "{v2_schema}" CASCADE;
                   DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{v2_schema}.');"#
            ))
            .await;
    }
    for db in &p.databases {
        let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`")).await;
    }
    delete_topics(&kafka).await;
    println!("  (bench total {:.1}s)", bench_started.elapsed().as_secs_f64());
}
