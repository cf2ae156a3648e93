//! The sink end to end on the local stack, mirror mode: MariaDB → source →
//! Kafka → sink → PostgreSQL, every value exact, every change applied once.

mod common;

use std::time::Duration;

use common::pipeline::Pipeline;
use common::sink::{add_sink, drop_mirror, pg_client, start_sink, wait_mirrored};
use common::types::{insert_type_rich, TYPE_RICH};
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
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.items (id INT PRIMARY KEY, n INT NOT NULL, note VARCHAR(40)); \
             INSERT INTO `{db}`.items SELECT seq, seq * 2, CONCAT('n', seq) FROM seq_1_to_500; \
             CREATE TABLE `{db}`.tally (who VARCHAR(10), n INT); \
             INSERT INTO `{db}`.tally VALUES ('x', 1), ('x', 1), ('y', 2)"
        ))
        .await
        .unwrap();
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
