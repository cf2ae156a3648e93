//! The sink end to end on the local stack, mirror mode: MariaDB → source →
//! Kafka → sink → PostgreSQL, every value exact, every change applied once.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use common::sink::{add_sink, drop_mirror, pg_client, start_sink, wait_mirrored};
use common::types::{create_items_and_tally, insert_type_rich, TYPE_RICH};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_holds_every_value_and_follows_a_mixed_workload() {
    let p = Pipeline::new("sink_mirror", 2, "").await;
    let sink = add_sink(&p, "");
    let pg = pg_client(&p.stack).await;
    let (a, b) = (p.databases[0].clone(), p.databases[1].clone());
    let mut conn = p.admin().await;
    conn.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
    conn.query_drop(format!("USE `{a}`")).await.unwrap();
    conn.query_drop(TYPE_RICH).await.unwrap();
    insert_type_rich(&mut conn, &a, 0).await;
    for db in [&a, &b] {
        create_items_and_tally(&mut conn, db, 500).await;
    }

    let source = p.start_source(&[]);
    let mut sink_process = start_sink(&p);
    wait_mirrored(
        &p,
        &sink,
        &pg,
        &[&source, &sink_process],
        Duration::from_secs(120),
    )
    .await;

    // The binlog path: the type-rich rows again, then changes of every kind.
    insert_type_rich(&mut conn, &a, 100).await;
    for db in [&a, &b] {
        conn.query_drop(format!(
            "START TRANSACTION; \
             UPDATE `{db}`.items SET n = n + 1 WHERE id % 3 = 0; \
             DELETE FROM `{db}`.items WHERE id % 7 = 0; \
             INSERT INTO `{db}`.items VALUES (1000, 1, 'new'); \
             COMMIT; \
             UPDATE `{db}`.items SET id = id + 2000 WHERE id < 5; \
             DELETE FROM `{db}`.tally WHERE who = 'x' LIMIT 1; \
             INSERT INTO `{db}`.tally VALUES ('y', 2); \
             UPDATE `{db}`.tally SET n = 3 WHERE who = 'y' LIMIT 1; \
             CREATE TABLE `{db}`.later (k VARCHAR(8) PRIMARY KEY, v JSON); \
             INSERT INTO `{db}`.later VALUES ('a', '{{\"x\": 1}}')"
        ))
        .await
        .unwrap();
    }
    // Schema changes, each once the source has passed the one before (the
    // source reads a table's shape after a DDL from information_schema).
    for db in [&a, &b] {
        conn.query_drop(format!(
            "ALTER TABLE `{db}`.items ADD COLUMN extra VARCHAR(20); \
             UPDATE `{db}`.items SET extra = 'e' WHERE id > 400"
        ))
        .await
        .unwrap();
    }
    wait_mirrored(
        &p,
        &sink,
        &pg,
        &[&source, &sink_process],
        Duration::from_secs(120),
    )
    .await;
    for db in [&a, &b] {
        conn.query_drop(format!(
            "ALTER TABLE `{db}`.items RENAME COLUMN note TO remark; \
             INSERT INTO `{db}`.items (id, n, remark, extra) VALUES (1001, 5, 'after rename', 'z')"
        ))
        .await
        .unwrap();
    }
    conn.query_drop(format!(
        "UPDATE `{a}`.everything SET vc = CONCAT(vc, ' ✓'), dtm6 = '2001-02-03 04:05:06.7', u64 = u64 - 1 WHERE id = 101; \
         DELETE FROM `{a}`.everything WHERE id = 102"
    ))
    .await
    .unwrap();
    wait_mirrored(
        &p,
        &sink,
        &pg,
        &[&source, &sink_process],
        Duration::from_secs(120),
    )
    .await;

    // Bookkeeping: offsets per partition of this group, progress per tenant.
    let offsets: i64 = pg
        .query_one(
            "SELECT count(*) FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
            &[&sink.group],
        )
        .await
        .unwrap()
        .get(0);
    assert!(offsets >= 1, "offsets stored in the target");
    let applied: i64 = pg
        .query_one(
            "SELECT count(*) FROM cdc_bridge.applied WHERE tenant = ANY($1)",
            &[&p.databases],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 2, "progress recorded per tenant");
    let log = sink_process.log_text();
    assert!(!log.contains("dead-letter"), "no dead letters expected:\n{log}");
    sink_process.terminate();
    drop_mirror(&p, &sink, &pg).await;
}

/// Appends TOML to the pipeline's configuration.
fn append_config(p: &Pipeline, text: &str) {
    let mut config = std::fs::read_to_string(&p.config_path).unwrap();
    config.push_str(text);
    std::fs::write(&p.config_path, config).unwrap();
}

/// Invariants 1 and 3: two sinks in one group, killed with SIGKILL at random
/// moments while v1 keeps changing; v2 ends exactly equal to v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sinks_converge_exactly() {
    let p = Pipeline::new("sink_kill", 3, "").await;
    let sink = add_sink(&p, "batch_max_events = 200");
    // Dead members leave the group fast, so partitions move on within seconds.
    append_config(
        &p,
        "\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
    );
    let pg = pg_client(&p.stack).await;
    let mut conn = p.admin().await;
    for db in &p.databases {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.acct (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(30)); \
             INSERT INTO `{db}`.acct SELECT seq, 0, 'start' FROM `{db}`.seq_1_to_2000; \
             CREATE TABLE `{db}`.journal (acct INT, amount INT)"
        ))
        .await
        .unwrap();
    }
    let source = p.start_source(&[]);
    let mut sinks = [start_sink(&p), start_sink(&p)];

    // v1 keeps changing in transactions of several statements while sinks die.
    let databases = p.databases.clone();
    let opts = p.stack.mysql_admin_opts();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    let writer = tokio::spawn(async move {
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        let mut round = 0u32;
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
            let db = &databases[round as usize % databases.len()];
            let id = 1 + (round * 37) % 2000;
            conn.query_drop(format!(
                "START TRANSACTION; \
                 UPDATE `{db}`.acct SET balance = balance + {round}, note = 'r{round}' WHERE id IN ({id}, {}); \
                 INSERT INTO `{db}`.journal VALUES ({id}, {round}), ({id}, {round}); \
                 DELETE FROM `{db}`.acct WHERE id = {}; \
                 INSERT INTO `{db}`.acct VALUES ({}, {round}, 'new') ON DUPLICATE KEY UPDATE balance = balance - 1; \
                 COMMIT",
                1 + (id + 500) % 2000,
                1 + (id + 1000) % 2000,
                3000 + round
            ))
            .await
            .unwrap();
            round += 1;
        }
        round
    });

    for kill in 0..12 {
        // A random moment: between 0.2 and 1.5 s after the last restart.
        tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(0..1300))).await;
        let victim = kill % 2;
        sinks[victim].kill9();
        sinks[victim] = start_sink(&p);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 50, "the workload ran ({rounds} transactions)");
    wait_mirrored(
        &p,
        &sink,
        &pg,
        &[&source, &sinks[0], &sinks[1]],
        Duration::from_secs(180),
    )
    .await;
    for s in &mut sinks {
        s.terminate();
    }
    drop_mirror(&p, &sink, &pg).await;
}

/// Invariant 6: replaying the whole topic into the live target (a second
/// group from the beginning, beside the running sink) never shows an older
/// version of any row, never brings a deleted row back, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topic_never_moves_a_row_backwards() {
    let p = Pipeline::new("sink_replay", 1, "").await;
    let sink = add_sink(&p, "batch_max_events = 100");
    let pg = pg_client(&p.stack).await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.doc (id INT PRIMARY KEY, version INT NOT NULL); \
         INSERT INTO `{db}`.doc SELECT seq, 0 FROM `{db}`.seq_1_to_300"
    ))
    .await
    .unwrap();
    let source = p.start_source(&[]);
    let live = start_sink(&p);
    // Many versions of every row, and deletes, all in the topic.
    for v in 1..=20 {
        conn.query_drop(format!(
            "UPDATE `{db}`.doc SET version = {v} WHERE id % 20 >= {v} - 1"
        ))
        .await
        .unwrap();
    }
    conn.query_drop(format!("DELETE FROM `{db}`.doc WHERE id % 10 = 0"))
        .await
        .unwrap();
    wait_mirrored(&p, &sink, &pg, &[&source, &live], Duration::from_secs(120)).await;
    let schema = cdc_bridge::sink::mirror::schema_name(&sink.schema_prefix, &db);
    let sample_sql = format!("SELECT id, version FROM \"{schema}\".doc");
    let sample = || async {
        pg.query(&sample_sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i32>(1)))
            .collect::<std::collections::BTreeMap<i32, i32>>()
    };
    let before = sample().await;

    // The replay: the same config under another consumer group, from offset 0.
    let replay_config = p.config_dir.path().join("replay.toml");
    let text = std::fs::read_to_string(&p.config_path).unwrap().replace(
        &format!("group_id = \"{}\"", sink.group),
        &format!("group_id = \"{}-replay\"", sink.group),
    );
    std::fs::write(&replay_config, text).unwrap();
    let replay =
        common::pipeline::BridgeProcess::spawn_command("sink", &replay_config, &p.stack.child_env(), &[]);
    let replay_group = format!("{}-replay", sink.group);
    let end: i64 = {
        let kafka = p.kafka();
        tokio::task::spawn_blocking(move || {
            common::pipeline::read_raw(&kafka, &kafka.changes_topic())
                .iter()
                .map(|(_, o, _, _)| *o)
                .max()
                .unwrap_or(0)
        })
        .await
        .unwrap()
    };
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = sample().await;
        samples += 1;
        assert_eq!(now, before, "a row changed during the replay (sample {samples})");
        let done: Option<i64> = pg
            .query_opt(
                "SELECT max(next_offset) FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
                &[&replay_group],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0));
        if done.is_some_and(|o| o > end) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replay did not finish:\n{}",
            replay.log_text()
        );
    }
    assert!(samples >= 2, "sampled during the replay");
    let log = replay.log_text();
    assert!(!log.contains("dead-letter"), "{log}");
    wait_mirrored(
        &p,
        &sink,
        &pg,
        &[&source, &live, &replay],
        Duration::from_secs(30),
    )
    .await;
    let _ = pg
        .execute(
            "DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
            &[&replay_group],
        )
        .await;
    drop_mirror(&p, &sink, &pg).await;
}

/// Invariant 10: an undecodable message lands in the dead-letter topic with its
/// bytes, the error, the stage and the time, and everything around it applies;
/// with `on_error = "stop"` the sink stops before it, naming where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_the_rest_applies() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let p = Pipeline::new("sink_poison", 1, "").await;
    let sink = add_sink(&p, "");
    let pg = pg_client(&p.stack).await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT); INSERT INTO `{db}`.t VALUES (1, 1)"
    ))
    .await
    .unwrap();
    let source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(60)).await;

    // Poison in the tenant's partition (key = tenant), between good events.
    let kafka = p.kafka();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .create()
        .unwrap();
    let poison: &[u8] = &[1, 0xff, 0xfe, 0x00, 0x42];
    producer
        .send(
            BaseRecord::to(&kafka.changes_topic())
                .key(db.as_bytes())
                .payload(poison),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    conn.query_drop(format!("INSERT INTO `{db}`.t VALUES (2, 2)"))
        .await
        .unwrap();

    // on_error = stop: the sink exits, naming the partition and offset.
    let stop_config = p.config_dir.path().join("stop.toml");
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace("[sink]\n", "[sink]\non_error = \"stop\"\n");
    std::fs::write(
        &stop_config,
        text.replace(&sink.group, &format!("{}-stop", sink.group)),
    )
    .unwrap();
    let mut stopping =
        common::pipeline::BridgeProcess::spawn_command("sink", &stop_config, &p.stack.child_env(), &[]);
    let status = stopping
        .wait_exit(Duration::from_secs(60))
        .expect("the sink stops on the poison event");
    assert!(!status.success());
    let log = stopping.log_text();
    assert!(log.contains("stopped before") && log.contains("offset"), "{log}");
    assert!(log.contains("envelope"), "{log}");

    // dead_letter (the default): the record is written and the rest applies.
    let mut live = start_sink(&p);
    wait_mirrored(&p, &sink, &pg, &[&source, &live], Duration::from_secs(60)).await;
    let records = common::sink::dead_letters(&kafka).await;
    let (payload, headers) = records
        .iter()
        .find(|(_, h)| h.get("cdc_bridge.stage").map(String::as_str) == Some("decode"))
        .expect("a dead-letter record from the sink");
    assert_eq!(payload.as_slice(), poison, "the original bytes");
    assert!(headers["cdc_bridge.error"].contains("envelope"), "{headers:?}");
    assert!(headers["cdc_bridge.time_micros"].parse::<i64>().unwrap() > 0);
    assert!(headers.contains_key("cdc_bridge.offset"));
    live.terminate();
    let _ = pg
        .execute(
            "DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
            &[&format!("{}-stop", sink.group)],
        )
        .await;
    drop_mirror(&p, &sink, &pg).await;
}
