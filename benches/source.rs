//! Source benchmark against the local stack (`bash tests/stack/stack.sh up` first):
//! snapshot rows/s of a 1M-row table, streaming events/s of a burst, end-to-end
//! source delay percentiles under a steady light load (v1 commit → event readable
//! in Kafka), and the source process's peak RSS.
//!
//! `cargo bench --bench source` (`CDC_BRIDGE_BENCH_ROWS` changes the table size).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cdc_bridge::event::{ChangeEvent, Operation, Value};
use common::pipeline::Pipeline;
use common::process::{alive, peak_rss_kib};
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Counts events of `op` as they arrive; records delay for rows carrying `t_us`.
struct Counter {
    consumer: StreamConsumer,
    /// The source process: a bench waiting on a dead source fails instead of hanging.
    source_pid: u32,
}

impl Counter {
    async fn until(&self, op: Operation, want: u64, delays: &mut Vec<f64>, timeout: Duration) -> u64 {
        let mut n = 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while n < want {
            let wait = (tokio::time::Instant::now() + Duration::from_secs(5)).min(deadline);
            let msg = match tokio::time::timeout_at(wait, self.consumer.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => panic!("consume: {e}"),
                Err(_) if tokio::time::Instant::now() < deadline && alive(self.source_pid) => continue,
                Err(_) => panic!(
                    "no progress with {n} of {want} {op:?} events (source alive: {})",
                    alive(self.source_pid)
                ),
            };
            let ev = ChangeEvent::decode(msg.payload().unwrap()).unwrap();
            if ev.op != op {
                continue;
            }
            n += 1;
            if let Some(Value::Int(t)) = ev.after.as_ref().and_then(|a| a.get("t_us")) {
                if *t > 0 {
                    delays.push((now_us() - t) as f64 / 1000.0);
                }
            }
        }
        n
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: u64 = std::env::var("CDC_BRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let p = Pipeline::new("bench_src", 1, "snapshot_chunk_rows = 10000").await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.visits (id BIGINT PRIMARY KEY, patient INT NOT NULL, at DATETIME(6) NOT NULL, \
         score DECIMAL(8,2), note VARCHAR(200), t_us BIGINT NOT NULL DEFAULT 0)"
    ))
    .await
    .unwrap();
    let load = Instant::now();
    conn.query_drop(format!(
        "INSERT INTO `{db}`.visits (id, patient, at, score, note) \
         SELECT seq, seq % 5000, '2024-01-01 08:00:00' + INTERVAL seq SECOND, (seq % 10000) / 100, \
         CONCAT('visit note number ', seq, ' — Zoë, Jörg, 患者') FROM `{db}`.seq_1_to_{rows}"
    ))
    .await
    .unwrap();
    println!(
        "loaded {rows} rows into v1 in {:.1}s",
        load.elapsed().as_secs_f64()
    );

    let kafka = p.kafka();
    let consumer: StreamConsumer =
        cdc_bridge::transport::read_committed_consumer(&kafka, &common::unique("bench")).expect("consumer");
    cdc_bridge::transport::publisher::ensure_topics(&kafka, 3)
        .await
        .unwrap();
    consumer.subscribe(&[&kafka.changes_topic()]).unwrap();

    // Snapshot.
    let started = Instant::now();
    let mut source = p.start_source(&[]);
    let pid = source.pid();
    let counter = Counter {
        consumer,
        source_pid: pid.expect("source pid"),
    };
    let mut ignore = Vec::new();
    counter
        .until(
            Operation::SnapshotRead,
            rows,
            &mut ignore,
            Duration::from_secs(1800),
        )
        .await;
    let snapshot_secs = started.elapsed().as_secs_f64();
    source.wait_streaming(Duration::from_secs(120)).await;

    // Streaming burst: 1000-row transactions.
    let burst: u64 = (rows / 5).max(10_000);
    let started = Instant::now();
    let writer = {
        let opts = p.stack.mysql_admin_opts();
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            let mut id = 10_000_000u64;
            while id < 10_000_000 + burst {
                conn.query_drop(format!(
                    "INSERT INTO `{db}`.visits (id, patient, at, score, note) SELECT {id} + seq, seq, NOW(6), 1.5, 'burst' \
                     FROM `{db}`.seq_1_to_1000"
                ))
                .await
                .unwrap();
                id += 1000;
            }
        })
    };
    counter
        .until(Operation::Insert, burst, &mut ignore, Duration::from_secs(1800))
        .await;
    writer.await.unwrap();
    let stream_secs = started.elapsed().as_secs_f64();

    // Steady light load: single-row transactions, about 200 per second.
    let mut delays = Vec::new();
    let steady = 1000u64;
    let writer = {
        let opts = p.stack.mysql_admin_opts();
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for i in 0..steady {
                tick.tick().await;
                conn.exec_drop(
                    format!("INSERT INTO `{db}`.visits (id, patient, at, t_us) VALUES (?, 1, NOW(6), ?)"),
                    (20_000_000 + i, now_us()),
                )
                .await
                .unwrap();
            }
        })
    };
    counter
        .until(Operation::Insert, steady, &mut delays, Duration::from_secs(600))
        .await;
    writer.await.unwrap();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rss = pid.and_then(peak_rss_kib);
    source.terminate();

    println!("source benchmark ({rows} rows, MariaDB 10.11 → Kafka on loopback, 2 cores)");
    println!(
        "  snapshot        {rows} rows in {snapshot_secs:.1}s = {:.0} rows/s",
        rows as f64 / snapshot_secs
    );
    println!(
        "  streaming burst {burst} events in {stream_secs:.1}s = {:.0} events/s",
        burst as f64 / stream_secs
    );
    println!(
        "  source delay (commit → readable in Kafka, {steady} single-row tx at ~200/s): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays, 0.50),
        percentile(&delays, 0.95),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    match rss {
        Some(kib) => println!("  source peak RSS {:.1} MiB", kib as f64 / 1024.0),
        None => println!("  source peak RSS unknown"),
    }
}
