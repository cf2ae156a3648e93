//! The local PostgreSQL accepts the sink's kind of work: a database of the
//! test's own, a table, a transaction, and cleanup; and the PostgreSQL target
//! keeps a replay from writing a brand-new row past a live batch.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cdc_bridge::config::{Config, TargetConfig};
use cdc_bridge::sink::apply::{guard_with, GuardMode};
use cdc_bridge::sink::postgres::PostgresTarget;
use cdc_bridge::sink::target::*;

async fn connect(db: &str) -> tokio_postgres::Client {
    common::sink::pg_connect(&common::Stack::from_env(), db).await
}

#[tokio::test]
async fn postgres_connects_and_commits() {
    let s = common::Stack::from_env();
    let admin = connect(&s.pg_database).await;
    let db = common::unique("pg_connect");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();

    {
        let mut client = connect(&db).await;
        client
            .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, amount numeric(65,30), at timestamp(6))")
            .await
            .unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO t VALUES (1, '12345678901234567890123456789012345.123456789012345678901234567890', '2024-02-29 23:59:59.999999')",
            &[],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let row = client
            .query_one("SELECT amount::text, at::text FROM t WHERE id = 1", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            "12345678901234567890123456789012345.123456789012345678901234567890"
        );
        assert_eq!(row.get::<_, String>(1), "2024-02-29 23:59:59.999999");
    }

    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

fn target_config(s: &common::Stack) -> TargetConfig {
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\n\n[sink]\n[[sink.targets]]\nname = \"pg\"\nkind = \"postgres\"\n\
         url = \"{}\"\npassword = \"${{CDC_BRIDGE_PG_PASSWORD}}\"\n",
        s.kafka_bootstrap,
        s.pg_url()
    );
    let password = s.pg_password.clone();
    let config = Config::from_toml_str(&text, "postgres-test.toml", &|name| {
        (name == "CDC_BRIDGE_PG_PASSWORD").then(|| password.clone())
    })
    .unwrap_or_else(|e| panic!("the test configuration is rejected: {e}"));
    let mut sink = config.sink.expect("a sink");
    sink.targets.remove(0)
}

async fn target(s: &common::Stack) -> PostgresTarget {
    let mut t = PostgresTarget::connect(&target_config(s))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    t.prepare().await.unwrap_or_else(|e| panic!("prepare: {e}"));
    t
}

fn upsert(key: i64, text: &str, position: u8) -> RowWrite {
    RowWrite {
        row_key: key.to_string(),
        position: vec![0, 0, 0, position],
        change: Change::Upsert(vec![SqlValue::Int(key), SqlValue::Text(text.into())]),
    }
}

/// A replay and a lagging live sink both hold a change of a row the target
/// has never stored. The live batch (newer) takes the tenant first; the
/// replay's batch waits for it, then sees the live position and writes nothing:
/// the row is never moved back. Two live batches of one tenant never wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_a_live_batch_of_its_tenant_and_never_moves_a_new_row_back() {
    let s = common::Stack::from_env();
    let admin = connect(&s.pg_database).await;
    let schema = common::unique("tenant_lock");
    let tenant = common::unique("tenant");
    let def = TableDef {
        schema: schema.clone(),
        name: "rows".into(),
        columns: vec![
            ColumnDef {
                name: "id".into(),
                ty: SqlType::BigInt,
                nullable: false,
            },
            ColumnDef {
                name: "txt".into(),
                ty: SqlType::Text { max_chars: None },
                nullable: true,
            },
        ],
        key: vec![0],
        scope: String::new(),
    };
    let mut live = target(&s).await;
    let def = live.ensure_table(&def).await.unwrap();

    // Another live batch of the same tenant is not held up by this one.
    live.begin().await.unwrap();
    live.lock_tenants(&[&tenant], false).await.unwrap();
    let mut other_live = target(&s).await;
    other_live.begin().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        other_live.lock_tenants(&[&tenant], false),
    )
    .await
    .expect("two live batches of a tenant do not wait for each other")
    .unwrap();
    other_live.rollback().await;

    // The live batch writes the row's newer version, not committed yet.
    assert!(live.stored_positions(&def, &["1"]).await.unwrap().is_empty());
    live.write(&def, &[upsert(1, "newer", 2)]).await.unwrap();

    let replay_def = def.clone();
    let replay_tenant = tenant.clone();
    let replay_stack = s.clone();
    let replay = tokio::spawn(async move {
        let mut t = target(&replay_stack).await;
        let replay_def = t.ensure_table(&replay_def).await.unwrap();
        t.begin().await.unwrap();
        t.lock_tenants(&[&replay_tenant], true).await.unwrap();
        let stored = t.stored_positions(&replay_def, &["1"]).await.unwrap();
        let guarded = guard_with(vec![upsert(1, "older", 1)], &stored, GuardMode::Replay);
        t.write(&replay_def, &guarded.writes).await.unwrap();
        t.commit().await.unwrap();
        (stored, guarded.skipped)
    });
    common::wait_until(
        "the replay waiting for the tenant",
        Duration::from_secs(60),
        || async {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (n > 0).then_some(())
        },
    )
    .await;
    assert!(!replay.is_finished(), "the replay went ahead of the live batch");
    live.commit().await.unwrap();
    let (stored, skipped) = replay.await.expect("replay task");
    assert_eq!(
        stored,
        HashMap::from([("1".to_owned(), vec![0, 0, 0, 2])]),
        "the replay sees the live position"
    );
    assert_eq!(skipped, 1, "the replay's older change is skipped");
    let row = admin
        .query_one(&format!("SELECT txt FROM \"{schema}\".rows WHERE id = 1"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "newer");

    admin
        .batch_execute(&format!(
            "DROP SCHEMA \"{schema}\" CASCADE; \
             DELETE FROM cdc_bridge.row_positions WHERE table_id = '{schema}.rows'"
        ))
        .await
        .unwrap();
}
