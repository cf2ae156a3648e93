//! Operations on the local stack: per-tenant lag through the source's
//! watermarks (`status` shows idle tenants caught up with a small delay, and
//! lag rising while the sink is stopped), the metrics and health endpoints
//! (`/readyz` unready while Kafka is down), and SIGTERM during a large batch
//! (exit 0, then no loss and no duplicate).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::{add_sink, drop_mirror, pg_client, wait_mirrored};
use common::{cdc_bridge, free_port, temp_config, wait_until, ThrowawayKafka};
use mysql_async::prelude::Queryable;

/// `GET path` on 127.0.0.1:port: (status code, body); `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

fn status(p: &Pipeline) -> serde_json::Value {
    let out = cdc_bridge(
        &["status", "--config", p.config_path.to_str().unwrap(), "--json"],
        &p.stack.child_env(),
    );
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

fn tenant<'a>(s: &'a serde_json::Value, t: &str) -> Option<&'a serde_json::Value> {
    s["tenants"].as_array()?.iter().find(|x| x["tenant"] == t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_idle_tenants_caught_up_and_lag_under_a_stopped_sink() {
    let p = Pipeline::new("ops", 3, "").await;
    let mirror = add_sink(&p, "");
    let pg = pg_client(&p.stack).await;
    let mut conn = p.admin().await;
    for db in &p.databases {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.items (id INT PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO `{db}`.items VALUES (1, 'a'), (2, 'b')"
        ))
        .await
        .unwrap();
    }
    let source = p.start_source(&[]);
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let env = p.stack.child_env();
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &["--metrics-listen", &listen]);
    wait_mirrored(&p, &mirror, &pg, &[&source, &sink], Duration::from_secs(120)).await;
    let last_write = Instant::now();

    // Idle: every tenant caught up, and its delay stays small because the
    // source's watermarks keep arriving (without them it would grow with idleness).
    let deadline = Instant::now() + Duration::from_secs(90);
    let s = loop {
        let s = status(&p);
        let ok = last_write.elapsed() > Duration::from_secs(6)
            && p.databases.iter().all(|db| {
                tenant(&s, db).is_some_and(|t| {
                    t["state"] == "caught up"
                        && t["kafka_lag_events"] == 0
                        && t["sink_delay_secs"].as_f64().is_some_and(|d| d < 4.0)
                })
            });
        if ok {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not every tenant caught up with a fresh watermark:\n{s:#}\n--- sink\n{}\n--- source\n{}",
            sink.log_text(),
            source.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(s["source_snapshotting"], false);

    // The endpoint: metrics with a delay gauge per tenant, healthy and ready.
    let (code, body) = http_get(metrics_port, "/metrics").expect("metrics endpoint");
    assert_eq!(code, 200);
    for db in &p.databases {
        assert!(
            body.contains(&format!("cdc_bridge_sink_delay_seconds{{tenant=\"{db}\"}}")),
            "no delay gauge for {db}:\n{body}"
        );
    }
    assert_eq!(http_get(metrics_port, "/healthz").map(|r| r.0), Some(200));
    let ready = http_get(metrics_port, "/readyz").unwrap();
    assert_eq!(ready.0, 200, "{}", ready.1);

    // SIGTERM: the sink exits 0.
    let exit = sink.terminate().expect("the sink stops within a minute");
    assert!(exit.success(), "sink exit after SIGTERM: {exit:?}");

    // With the sink stopped, changes of one tenant queue up as its lag.
    let busy = &p.databases[0];
    for i in 10..15 {
        conn.query_drop(format!("INSERT INTO `{busy}`.items VALUES ({i}, 'x')"))
            .await
            .unwrap();
    }
    let s = wait_until("five events of lag", Duration::from_secs(60), || {
        let p = &p;
        async move {
            let s = status(p);
            (tenant(&s, busy)?["kafka_lag_events"] == 5).then_some(s)
        }
    })
    .await;
    assert_ne!(tenant(&s, busy).unwrap()["state"], "caught up");
    for db in &p.databases[1..] {
        assert_eq!(
            tenant(&s, db).unwrap()["kafka_lag_events"],
            0,
            "{db} has no changes"
        );
    }

    // The sink back: caught up again.
    let sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    wait_until("caught up again", Duration::from_secs(90), || {
        let p = &p;
        async move {
            let s = status(p);
            (tenant(&s, busy)?["state"] == "caught up").then_some(())
        }
    })
    .await;
    wait_mirrored(&p, &mirror, &pg, &[&source, &sink], Duration::from_secs(60)).await;
    drop(sink);
    drop(source);
    drop_mirror(&p, &mirror, &pg).await;
}

/// SIGTERM while the sink applies a large backlog: exit 0 in bounded time, and
/// the restarted sink converges with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_batch_loses_and_doubles_nothing() {
    let p = Pipeline::new("opsterm", 1, "").await;
    let mirror = add_sink(&p, "batch_max_events = 20000");
    let pg = pg_client(&p.stack).await;
    let db = &p.databases[0];
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "USE `{db}`; CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO big SELECT seq, CONCAT('row ', seq) FROM seq_1_to_60000"
    ))
    .await
    .unwrap();
    let source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(120)).await;
    let env = p.stack.child_env();
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    // Stop it once the first batch is in and more are on the way.
    wait_until("a first batch applied", Duration::from_secs(120), || async {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
                &[&mirror.group],
            )
            .await
            .ok()?
            .get(0);
        (n > 0).then_some(())
    })
    .await;
    let exit = sink.terminate().expect("the sink stops within a minute");
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit:?}\n{}",
        sink.log_text()
    );
    let sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    wait_mirrored(&p, &mirror, &pg, &[&source, &sink], Duration::from_secs(180)).await;
    drop(sink);
    drop(source);
    drop_mirror(&p, &mirror, &pg).await;
}

/// `/readyz` of a sink turns 503 naming Kafka while its broker is down, and 200 again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_kafka_going_away_and_coming_back() {
    let mut kafka = ThrowawayKafka::start().await;
    let p = Pipeline::new("opsready", 1, "").await;
    add_sink(&p, "");
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace(&p.stack.kafka_bootstrap, &kafka.bootstrap());
    let (_dir, config) = temp_config(&text);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let sink = BridgeProcess::spawn_command(
        "sink",
        &config,
        &p.stack.child_env(),
        &["--metrics-listen", &listen],
    );
    wait_readyz(port, 200, Duration::from_secs(180), &sink, &kafka).await;
    kafka.kill();
    let body = wait_readyz(port, 503, Duration::from_secs(90), &sink, &kafka).await;
    assert!(body.contains("kafka"), "{body}");
    kafka.resume().await;
    wait_readyz(port, 200, Duration::from_secs(180), &sink, &kafka).await;
    drop(sink);
}

/// Polls `/readyz` until it answers `want`; the body. On timeout, panics with
/// the last answer, the sink's log and the broker's.
async fn wait_readyz(
    port: u16,
    want: u16,
    timeout: Duration,
    sink: &BridgeProcess,
    kafka: &ThrowawayKafka,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = http_get(port, "/readyz");
        match answer {
            Some((code, body)) if code == want => return body,
            _ if Instant::now() >= deadline => panic!(
                "/readyz not {want} within {timeout:?}; last answer {answer:?}\n--- sink\n{}\n--- broker (end)\n{}",
                sink.log_text(),
                kafka.log_tail(4000)
            ),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
