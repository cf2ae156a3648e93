//! The source against the local MariaDB and Kafka: every type exact through
//! the snapshot and the binlog, transactions whole, DDL followed, tenants keyed
//! and ordered, restarts exact.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cdc_bridge::event::{Operation, Phase, Value};
use common::pipeline::{rebuild, wait_converged, Pipeline};
use common::types::{insert_type_rich, TYPE_RICH};
use mysql_async::prelude::Queryable;

fn find<'a>(tables: &'a common::pipeline::Tables, db: &str, id: u64) -> Option<&'a String> {
    let rows = tables.get(&(db.to_owned(), "everything".to_owned()))?;
    rows.0.keys().find(|r| r.starts_with(&format!("{{\"id\":{id},")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_arrives_exactly_through_snapshot_and_binlog() {
    let p = Pipeline::new("src_types", 1, "").await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!("USE `{db}`")).await.unwrap();
    conn.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
    conn.query_drop(TYPE_RICH).await.unwrap();
    insert_type_rich(&mut conn, &db, 0).await;

    let mut source = p.start_source(&[]);
    let reads = wait_converged(&p, Duration::from_secs(120)).await;
    assert!(
        reads
            .iter()
            .all(|r| matches!(r.event.op, Operation::SnapshotRead | Operation::Watermark)),
        "only snapshot reads expected so far"
    );

    // Literal expectations, so a conversion wrong on both paths alike is caught too.
    let tables = rebuild(&reads);
    let row1 = find(&tables, &db, 1).expect("row 1");
    for fragment in [
        r#""u64":18446744073709551615"#,
        r#""i64":-9223372036854775808"#,
        r#""dec_big":{"decimal":"-12345678901234567890123456789012345.123456789012345678901234567890"}"#,
        r#""dtm6":{"datetime":"9999-12-31 23:59:59.999999"}"#,
        r#""ts":{"timestamp":"1970-01-01T00:00:01.000001Z"}"#,
        r#""tm":{"time":"-838:59:59"}"#,
        r#""yr":{"year":1901}"#,
        r#""vc":"Zoë 🙂 患者 مرحبا""#,
        r#""latin":"Jö€é""#,
        r#""bin":{"bytes_hex":"00010200"}"#,
        r#""e":{"enum":"closed"}"#,
        r#""s":{"set":["red","blue"]}"#,
        r#""b64":{"bit":{"width":64,"bits":18446744073709551615}}"#,
    ] {
        assert!(row1.contains(fragment), "row 1 lacks {fragment}:\n{row1}");
    }
    let row2 = find(&tables, &db, 2).expect("row 2");
    for fragment in [
        r#""dt":{"date":"0000-00-00"}"#,
        r#""dtm":{"datetime":"0000-00-00 00:00:00"}"#,
        r#""tm6":{"time":"-00:00:00.000001"}"#,
        r#""yr":{"year":0}"#,
        r#""bin":{"bytes_hex":"00000000"}"#,
        r#""s":{"set":[]}"#,
        r#""dec_big":{"decimal":"0.000000000000000000000000000001"}"#,
    ] {
        assert!(row2.contains(fragment), "row 2 lacks {fragment}:\n{row2}");
    }

    // The binlog path: the same rows again under other ids, then changes of every kind.
    insert_type_rich(&mut conn, &db, 100).await;
    conn.query_drop(format!(
        "UPDATE `{db}`.everything SET vc = CONCAT(vc, ' ✓'), dtm6 = '2001-02-03 04:05:06.7', u64 = u64 - 1 WHERE id = 101"
    ))
    .await
    .unwrap();
    conn.query_drop(format!("DELETE FROM `{db}`.everything WHERE id = 103"))
        .await
        .unwrap();
    // A multi-statement transaction and a rolled-back one.
    conn.query_drop(format!(
        "START TRANSACTION; INSERT INTO `{db}`.everything (id, vc) VALUES (200, 'in tx'); \
         UPDATE `{db}`.everything SET i8 = 7 WHERE id = 102; DELETE FROM `{db}`.everything WHERE id = 2; COMMIT"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "START TRANSACTION; INSERT INTO `{db}`.everything (id, vc) VALUES (300, 'rolled back'); ROLLBACK"
    ))
    .await
    .unwrap();
    // DDL mid-stream: ADD and RENAME COLUMN, then rows in the new shape.
    conn.query_drop(format!(
        "ALTER TABLE `{db}`.everything ADD COLUMN added VARCHAR(20) DEFAULT 'dflt'"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "ALTER TABLE `{db}`.everything RENAME COLUMN vc TO renamed_vc"
    ))
    .await
    .unwrap();
    // Every row changes once more, so each reaches the topic in the new shape.
    conn.query_drop(format!("UPDATE `{db}`.everything SET added = 'touched'"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "INSERT INTO `{db}`.everything (id, renamed_vc, added) VALUES (400, 'after ddl', 'new col')"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "UPDATE `{db}`.everything SET added = 'changed' WHERE id = 1"
    ))
    .await
    .unwrap();

    let reads = wait_converged(&p, Duration::from_secs(120)).await;
    let stream: Vec<_> = reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Stream && r.event.op != Operation::Watermark)
        .collect();
    assert!(
        !stream
            .iter()
            .any(|r| r.event.after.as_ref().and_then(|a| a.get("id")) == Some(&Value::UInt(300))),
        "a rolled-back row reached the topic"
    );
    let ddl: Vec<_> = stream.iter().filter(|r| r.event.op == Operation::Ddl).collect();
    assert_eq!(ddl.len(), 2, "both ALTER TABLE statements are on the topic");
    // The three changes of the multi-statement transaction share one id, in order, last flagged.
    let tx: Vec<_> = stream
        .iter()
        .filter(|r| r.event.after.as_ref().and_then(|a| a.get("id")) == Some(&Value::UInt(200)))
        .collect();
    let tx_id = &tx[0].event.transaction.id;
    let members: Vec<_> = stream
        .iter()
        .filter(|r| &r.event.transaction.id == tx_id)
        .collect();
    assert_eq!(members.len(), 3, "transaction {tx_id} has its 3 row changes");
    assert_eq!(
        members
            .iter()
            .map(|r| r.event.transaction.index)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(members[2].event.transaction.last && !members[0].event.transaction.last);

    assert_eq!(
        source.terminate().map(|s| s.code()),
        Some(Some(0)),
        "SIGTERM exits 0:\n{}",
        source.log_text()
    );
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_the_snapshot_are_neither_lost_nor_doubled() {
    let p = Pipeline::new("src_concurrent", 1, "snapshot_chunk_rows = 200").await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.items (id INT PRIMARY KEY, n INT NOT NULL, note VARCHAR(40))"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "INSERT INTO `{db}`.items (id, n, note) SELECT seq, 0, 'initial' FROM `{db}`.seq_1_to_20000"
    ))
    .await
    .unwrap();
    let mut source = p.start_source(&[]);
    // Write while the snapshot runs: updates spread over the key range, inserts past it, deletes.
    for round in 0..40 {
        conn.query_drop(format!(
            "UPDATE `{db}`.items SET n = n + 1 WHERE id % 40 = {round}; \
             INSERT INTO `{db}`.items VALUES ({}, {round}, 'during'); \
             DELETE FROM `{db}`.items WHERE id = {}",
            30_000 + round,
            1 + round * 400
        ))
        .await
        .unwrap();
    }
    let reads = wait_converged(&p, Duration::from_secs(180)).await;
    let snapshot_keys: Vec<String> = reads
        .iter()
        .filter(|r| r.event.op == Operation::SnapshotRead)
        .map(|r| format!("{:?}", r.event.key))
        .collect();
    let unique: BTreeSet<&String> = snapshot_keys.iter().collect();
    assert_eq!(
        unique.len(),
        snapshot_keys.len(),
        "a row was read twice by the snapshot"
    );
    source.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_keyed_and_each_keeps_binlog_order() {
    let p = Pipeline::new("src_tenants", 2, "").await;
    let mut conn = p.admin().await;
    for db in &p.databases {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.log (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
        ))
        .await
        .unwrap();
    }
    // This test also scrapes the source's metrics endpoint.
    let metrics_port = common::free_port();
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{metrics_port}\""));
    std::fs::write(&p.config_path, text).unwrap();
    let mut source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(60)).await;
    for i in 0..100 {
        let db = &p.databases[i % 2];
        conn.query_drop(format!("INSERT INTO `{db}`.log (v) VALUES ({i})"))
            .await
            .unwrap();
    }
    let reads = wait_converged(&p, Duration::from_secs(120)).await;
    let mut partition_of: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for r in &reads {
        assert_eq!(r.key, r.event.tenant.as_bytes(), "message key is the tenant");
        partition_of.entry(r.key.clone()).or_default().insert(r.partition);
    }
    assert_eq!(partition_of.len(), 2);
    assert!(
        partition_of.values().all(|p| p.len() == 1),
        "a tenant spans partitions: {partition_of:?}"
    );
    for db in &p.databases {
        let values: Vec<i64> = reads
            .iter()
            .filter(|r| &r.event.database == db && r.event.op == Operation::Insert)
            .map(|r| match r.event.after.as_ref().and_then(|a| a.get("v")) {
                Some(Value::Int(v)) => *v,
                other => panic!("unexpected v {other:?}"),
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "tenant {db} events out of binlog order");
        assert_eq!(values.len(), 50);
        let positions: Vec<_> = reads
            .iter()
            .filter(|r| &r.event.database == db)
            .map(|r| r.event.position.clone())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions not increasing for {db}"
        );
    }
    let metrics = scrape(metrics_port);
    for db in &p.databases {
        let line =
            format!("cdc_bridge_source_events_total{{tenant=\"{db}\",table=\"log\",op=\"insert\"}} 50");
        assert!(metrics.contains(&line), "no `{line}` in /metrics:\n{metrics}");
    }
    assert!(metrics.contains("cdc_bridge_source_delay_seconds "), "{metrics}");
    assert!(!metrics.contains("v=\""), "a value label leaked into metrics");
    source.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_row_passes_through_the_binlog_and_kafka() {
    let p = Pipeline::new("src_big", 1, "").await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.docs (id INT PRIMARY KEY, pdf LONGBLOB)"
    ))
    .await
    .unwrap();
    let mut source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(60)).await;
    let blob: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    conn.exec_drop(format!("INSERT INTO `{db}`.docs VALUES (1, ?)"), (blob.clone(),))
        .await
        .unwrap();
    let event = common::pipeline::wait_for_event(
        &p.kafka(),
        "the 16 MiB row on the topic",
        Duration::from_secs(120),
        |r| r.event.op == Operation::Insert,
    )
    .await;
    match event.event.after.as_ref().and_then(|a| a.get("pdf")) {
        Some(Value::Bytes(b)) => assert!(b == &blob, "the 16 MiB value differs ({} bytes arrived)", b.len()),
        other => panic!("pdf arrived as {:?}", other.map(Value::kind)),
    }
    assert_eq!(
        source.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        source.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_by_mariadb_gtid_continues_exactly() {
    let p = Pipeline::new("src_gtid", 1, "resume_by = \"gtid\"").await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    let mut source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(60)).await;
    for i in 0..10 {
        conn.query_drop(format!("INSERT INTO `{db}`.t VALUES ({i}, 0)"))
            .await
            .unwrap();
    }
    wait_converged(&p, Duration::from_secs(60)).await;
    assert_eq!(source.terminate().and_then(|s| s.code()), Some(0));
    // Changes while the source is down, then it resumes from its GTID position.
    for i in 0..10 {
        conn.query_drop(format!(
            "UPDATE `{db}`.t SET v = v + 1 WHERE id = {i}; INSERT INTO `{db}`.t VALUES ({}, 1)",
            100 + i
        ))
        .await
        .unwrap();
    }
    let mut source = p.start_source(&[]);
    let reads = wait_converged(&p, Duration::from_secs(60)).await;
    let log = source.log_text();
    assert!(
        log.contains("resume_by=Gtid") && log.contains("gtid=\"mariadb:0-1-"),
        "{log}"
    );
    let stream: Vec<_> = reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Stream && r.event.op != Operation::Watermark)
        .collect();
    let positions: BTreeSet<_> = stream.iter().map(|r| r.event.position.clone()).collect();
    assert_eq!(positions.len(), stream.len(), "an event is on the topic twice");
    assert_eq!(stream.len(), 10 + 20, "every change once");
    assert_eq!(source.terminate().and_then(|s| s.code()), Some(0), "{log}");
}

/// GET /metrics over a plain TCP connection.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read /metrics");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_tables_created_later_are_picked_up() {
    let mut p = Pipeline::new("src_late", 1, "").await;
    // Select by pattern rather than by name, and exclude one table by pattern.
    let pattern = format!("{}\\\\_%", p.prefix);
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let text = text.replace(
        &format!("include = [{:?}]", p.databases[0]),
        &format!("include = [\"{pattern}\"]\n[source.tables]\nexclude = [\"tmp\\\\_%\"]"),
    );
    std::fs::write(&p.config_path, text).unwrap();
    let mut conn = p.admin().await;
    let mut source = p.start_source(&[]);
    source.wait_streaming(Duration::from_secs(60)).await;

    let late = format!("{}_late", p.prefix);
    conn.query_drop(format!(
        "CREATE DATABASE `{late}`; CREATE TABLE `{late}`.patients (id INT PRIMARY KEY, name VARCHAR(40)); \
         INSERT INTO `{late}`.patients VALUES (1, 'Zoë'); \
         CREATE TABLE `{late}`.tmp_scratch (id INT PRIMARY KEY); INSERT INTO `{late}`.tmp_scratch VALUES (1)"
    ))
    .await
    .unwrap();
    let first = p.databases[0].clone();
    conn.query_drop(format!(
        "CREATE TABLE `{first}`.later (id INT PRIMARY KEY); INSERT INTO `{first}`.later VALUES (5)"
    ))
    .await
    .unwrap();
    // Databases that do not match stay out.
    let other = common::unique("src_late_other");
    conn.query_drop(format!(
        "CREATE DATABASE `{other}`; CREATE TABLE `{other}`.t (id INT PRIMARY KEY); INSERT INTO `{other}`.t VALUES (1)"
    ))
    .await
    .unwrap();
    p.databases.push(late.clone());
    conn.query_drop(format!("DROP TABLE `{late}`.tmp_scratch"))
        .await
        .unwrap();
    let reads = wait_converged(&p, Duration::from_secs(60)).await;
    assert!(
        reads.iter().all(|r| r.event.database != other),
        "an unselected database reached the topic"
    );
    assert!(
        reads.iter().all(|r| r.event.table != "tmp_scratch"),
        "an excluded table reached the topic"
    );
    assert!(reads
        .iter()
        .any(|r| r.event.tenant == late && r.event.op == Operation::Insert));
    source.terminate();
    conn.query_drop(format!("DROP DATABASE `{other}`")).await.unwrap();
}
