//! `cdc-bridge snapshot`: the running source snapshots a table again while
//! streaming and a workload go on; v2 converges to v1 exactly — rows damaged
//! directly in v2 (which no stream event would repair) are restored, and
//! nothing is doubled or moved backwards.

mod common;

use std::time::Duration;

use cdc_bridge::sink::mirror;
use common::cdc_bridge;
use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::{add_sink, drop_mirror, pg_client, wait_mirrored};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_snapshotted_again_under_a_workload_converges_exactly() {
    let p = Pipeline::new("resnap", 1, "").await;
    let mirror_sink = add_sink(&p, "");
    let pg = pg_client(&p.stack).await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_3000"
    ))
    .await
    .unwrap();
    let source = p.start_source(&[]);
    let sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    wait_mirrored(&p, &mirror_sink, &pg, &[&source, &sink], Duration::from_secs(120)).await;

    // Damage v2 where no v1 change will come: one row gone, one altered.
    let table = format!(
        "\"{}\".\"t\"",
        mirror::schema_name(&mirror_sink.schema_prefix, &db)
    );
    pg.batch_execute(&format!(
        "DELETE FROM {table} WHERE id = 1; UPDATE {table} SET v = 'damaged' WHERE id = 2"
    ))
    .await
    .unwrap();

    // A workload on other rows while the table is snapshotted again.
    let opts = p.stack.mysql_admin_opts();
    let workload_db = db.clone();
    let workload = tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(opts).await.unwrap();
        for i in 0..300 {
            let id = 100 + (i * 7) % 2900;
            let sql = match i % 3 {
                0 => format!("UPDATE `{workload_db}`.t SET v = 'updated {i}' WHERE id = {id}"),
                1 => format!("DELETE FROM `{workload_db}`.t WHERE id = {id}"),
                _ => format!("INSERT INTO `{workload_db}`.t VALUES ({}, 'new {i}')", 10_000 + i),
            };
            c.query_drop(sql).await.unwrap();
        }
    });
    let out = cdc_bridge(
        &[
            "snapshot",
            "--config",
            p.config_path.to_str().unwrap(),
            "--tenant",
            &db,
            "--table",
            "t",
        ],
        &p.stack.child_env(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    workload.await.unwrap();
    wait_mirrored(&p, &mirror_sink, &pg, &[&source, &sink], Duration::from_secs(180)).await;
    let log = source.log_text();
    assert!(log.contains("re-snapshot of table done"), "{log}");
    drop(sink);
    drop(source);
    drop_mirror(&p, &mirror_sink, &pg).await;
}
