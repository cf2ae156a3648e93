//! Source errors that tell the user what to do: wrong binlog format, a missing
//! privilege, binlogs purged past the stored position, and a table whose schema
//! the tracker cannot follow (dead-letter topic, or stop with the position).

mod common;

use std::time::Duration;

use common::pipeline::{kafka_config, read_raw, read_topic, wait_for_event, BridgeProcess, Pipeline};
use common::{temp_config, unique, wait_until, Stack, ThrowawayMariaDb};
use mysql_async::prelude::Queryable;

fn throwaway_config(
    db: &ThrowawayMariaDb,
    database: &str,
    prefix: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let stack = Stack::from_env();
    temp_config(&format!(
        r#"
[source]
name = "{prefix}"
url = "mysql://{user}@127.0.0.1:{port}"
password = "${{CDC_BRIDGE_MYSQL_PASSWORD}}"
connect_timeout_secs = 5
heartbeat_secs = 1
[source.tenants]
include = ["{database}"]

[kafka]
bootstrap_servers = "{kafka}"
topic_prefix = "{prefix}"
partitions = 1
"#,
        user = db.user,
        port = db.port,
        kafka = stack.kafka_bootstrap,
    ))
}

/// A throwaway row-based MariaDB with `binlog_row_metadata = <row_metadata>`, a
/// tenant database made by `setup`, and a source streaming it.
async fn streaming_on_throwaway(
    row_metadata: &str,
    database: &str,
    setup: &str,
) -> (
    ThrowawayMariaDb,
    String,
    tempfile::TempDir,
    std::path::PathBuf,
    BridgeProcess,
) {
    let db = ThrowawayMariaDb::start(&[
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        &format!("--binlog-row-metadata={row_metadata}"),
    ])
    .await;
    db.sql(&format!("CREATE DATABASE {database}; {setup}"));
    let prefix = unique(&format!("src_{database}"));
    let (dir, config) = throwaway_config(&db, database, &prefix);
    let source = BridgeProcess::spawn(&config, &db.password, &[]);
    source.wait_streaming(Duration::from_secs(60)).await;
    (db, prefix, dir, config, source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_based_binlog_stops_the_source_with_expected_and_actual() {
    let db = ThrowawayMariaDb::start(&["--binlog-format=STATEMENT"]).await;
    let (_dir, config) = throwaway_config(&db, "nothing_here", &unique("src_fmt"));
    let mut source = BridgeProcess::spawn(&config, &db.password, &[]);
    let status = source
        .wait_exit(Duration::from_secs(60))
        .expect("the source exits by itself");
    let log = source.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("binlog_format: expected ROW, actual STATEMENT"),
        "the error names setting, expected and actual:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_is_named() {
    let p = Pipeline::new("src_priv", 1, "").await;
    let user = unique("nopriv");
    let mut admin = p.admin().await;
    admin
        .query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'; GRANT SELECT, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
        ))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&p.config_path).unwrap().replace(
        &format!("mysql://{}@", p.stack.mysql_user),
        &format!("mysql://{user}@"),
    );
    let (_dir, config) = temp_config(&text);
    let mut source = BridgeProcess::spawn(&config, &format!("pw-{user}"), &[]);
    let status = source
        .wait_exit(Duration::from_secs(60))
        .expect("the source exits by itself");
    let log = source.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("privilege REPLICATION SLAVE: expected granted ON *.*, actual missing"),
        "the error names the privilege:\n{log}"
    );
    admin.query_drop(format!("DROP USER '{user}'@'%'")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlogs_stop_the_source_and_name_both_positions() {
    let (db, prefix, _dir, config, mut source) = streaming_on_throwaway(
        "FULL",
        "shop",
        "CREATE TABLE shop.t (id INT PRIMARY KEY, v INT); INSERT INTO shop.t VALUES (1, 1)",
    )
    .await;
    assert_eq!(
        source.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        source.log_text()
    );

    // Changes the stopped source never read, then the binlog holding them is purged.
    db.sql(
        "FLUSH BINARY LOGS; INSERT INTO shop.t VALUES (2, 2); FLUSH BINARY LOGS; FLUSH BINARY LOGS; \
         SET @last = (SELECT 1); PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY",
    );
    let mut source = BridgeProcess::spawn(&config, &db.password, &[]);
    let status = source
        .wait_exit(Duration::from_secs(60))
        .expect("the source exits by itself");
    let log = source.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("purged; oldest binlog is binlog.0000"),
        "names the oldest binlog:\n{log}"
    );
    assert!(
        log.contains("binlog position binlog.000001:"),
        "names the stored position:\n{log}"
    );
    assert!(log.contains("--resnapshot"), "offers the way out:\n{log}");

    // The way out works: a new snapshot has both rows.
    let mut source = BridgeProcess::spawn(&config, &db.password, &["--resnapshot"]);
    source.wait_streaming(Duration::from_secs(60)).await;
    let kafka = kafka_config(&Stack::from_env().kafka_bootstrap, &prefix);
    let ids: Vec<String> = read_topic(&kafka)
        .into_iter()
        .filter(|r| r.event.op == cdc_bridge::event::Operation::SnapshotRead)
        .map(|r| format!("{:?}", r.event.key))
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "first snapshot (1 row) and re-snapshot (2 rows): {ids:?}"
    );
    source.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_tracker_cannot_follow_goes_to_the_dead_letter_topic() {
    for stop in [false, true] {
        let p = Pipeline::new(
            "src_dlq",
            1,
            if stop {
                "on_error = \"stop\""
            } else {
                "on_error = \"dead_letter\""
            },
        )
        .await;
        let db = p.databases[0].clone();
        let mut conn = p.admin().await;
        conn.query_drop(format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, a INT)"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE TABLE `{db}`.other (id INT PRIMARY KEY)"))
            .await
            .unwrap();
        let mut source = p.start_source(&[]);
        source.wait_streaming(Duration::from_secs(60)).await;
        assert_eq!(source.terminate().and_then(|s| s.code()), Some(0));
        // While the source is down: a row in the old shape, then the shape changes,
        // so when the source reads the row only the new shape is left to read.
        conn.query_drop(format!(
            "INSERT INTO `{db}`.t VALUES (1, 1); ALTER TABLE `{db}`.t ADD COLUMN b INT; \
             INSERT INTO `{db}`.t VALUES (2, 2, 2); INSERT INTO `{db}`.other VALUES (7)"
        ))
        .await
        .unwrap();
        let mut source = p.start_source(&[]);
        if stop {
            let status = source
                .wait_exit(Duration::from_secs(60))
                .expect("the source stops");
            let log = source.log_text();
            assert_eq!(status.code(), Some(1), "{log}");
            assert!(
                log.contains(&format!("{db}.t at mysql-bin.")) && log.contains("schema cannot be followed"),
                "the stop names table, position and reason:\n{log}"
            );
            // Restarting stops at the same place: the position was kept, nothing skipped.
            let mut again = p.start_source(&[]);
            let status = again.wait_exit(Duration::from_secs(60)).expect("stops again");
            assert_eq!(status.code(), Some(1));
        } else {
            let kafka = p.kafka();
            let dlq = wait_until("a dead-letter record", Duration::from_secs(60), || {
                let kafka = kafka.clone();
                async move {
                    let records =
                        tokio::task::spawn_blocking(move || read_raw(&kafka, &kafka.dead_letter_topic()))
                            .await
                            .unwrap();
                    (!records.is_empty()).then_some(records)
                }
            })
            .await;
            let record: serde_json::Value = serde_json::from_slice(&dlq[0].3).unwrap();
            assert_eq!(record["stage"], "source");
            assert_eq!(record["table"], "t");
            assert_eq!(record["database"], db.as_str());
            assert!(
                record["position"].as_str().unwrap().starts_with("mysql-bin."),
                "{record}"
            );
            assert!(
                record["reason"]
                    .as_str()
                    .unwrap()
                    .contains("schema cannot be followed"),
                "{record}"
            );
            // The rest goes on: the other table's row and the new-shape row arrive.
            let kafka = p.kafka();
            wait_until("the rows after the bad one", Duration::from_secs(60), || {
                let kafka = kafka.clone();
                async move {
                    let reads = tokio::task::spawn_blocking(move || read_topic(&kafka))
                        .await
                        .unwrap();
                    let inserted: Vec<_> = reads
                        .iter()
                        .filter(|r| r.event.op == cdc_bridge::event::Operation::Insert)
                        .map(|r| r.event.table.clone())
                        .collect();
                    (inserted.contains(&"other".to_owned()) && inserted.contains(&"t".to_owned()))
                        .then_some(())
                }
            })
            .await;
            source.terminate();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_full_row_metadata_the_tracked_schema_names_the_columns() {
    let (db, prefix, _dir, _config, mut source) = streaming_on_throwaway(
        "MINIMAL",
        "clinic",
        "CREATE TABLE clinic.p (id INT PRIMARY KEY, name VARCHAR(20), s SET('a','b'))",
    )
    .await;
    db.sql(
        "INSERT INTO clinic.p VALUES (1, 'Zoë', 'b'); ALTER TABLE clinic.p ADD COLUMN born DATE; \
         UPDATE clinic.p SET born = '1970-01-01' WHERE id = 1",
    );
    let kafka = kafka_config(&Stack::from_env().kafka_bootstrap, &prefix);
    let update = wait_for_event(&kafka, "the update on the topic", Duration::from_secs(60), |r| {
        r.event.op == cdc_bridge::event::Operation::Update
    })
    .await;
    let after = cdc_bridge::event::json::row_to_json(update.event.after.as_ref().unwrap()).to_string();
    assert_eq!(
        after,
        r#"{"id":1,"name":"Zoë","s":{"set":["b"]},"born":{"date":"1970-01-01"}}"#
    );
    assert_eq!(
        source.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        source.log_text()
    );
}
