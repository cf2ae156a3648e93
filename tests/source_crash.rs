//! kill -9 of the source at random moments, in the snapshot and in streaming,
//! while a workload runs: the committed topic holds every change exactly once,
//! in order per tenant, and rebuilds to exactly what MariaDB has.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_bridge::event::{GtidSet, Operation, Phase};
use common::pipeline::{wait_converged, Pipeline};
use mysql_async::prelude::Queryable;

/// A small deterministic generator (the workload must not depend on a crate's RNG stream).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let p = Pipeline::new("src_crash", 2, "snapshot_chunk_rows = 300").await;
    let mut conn = p.admin().await;
    for db in &p.databases {
        conn.query_drop(format!(
            "CREATE TABLE `{db}`.acct (id INT PRIMARY KEY, n INT NOT NULL, note VARCHAR(64) NOT NULL)"
        ))
        .await
        .unwrap();
        conn.query_drop(format!(
            "INSERT INTO `{db}`.acct SELECT seq, 0, CONCAT('row ', seq) FROM `{db}`.seq_1_to_15000"
        ))
        .await
        .unwrap();
    }

    // The workload: transactions of 1-4 row changes, each recording its GTID and change count.
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let stop = stop.clone();
        let databases = p.databases.clone();
        let opts = p.stack.mysql_admin_opts();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            let mut rng = Lcg(42);
            let mut next_id = 100_000;
            let mut done: Vec<(String, usize)> = Vec::new();
            while !stop.load(Ordering::Relaxed) && done.len() < 20_000 {
                let db = &databases[rng.next(2) as usize];
                let mut tx = conn.start_transaction(Default::default()).await.unwrap();
                let mut changes = 0;
                next_id += 1;
                tx.exec_drop(
                    format!("INSERT INTO `{db}`.acct VALUES (?, 0, 'new')"),
                    (next_id,),
                )
                .await
                .unwrap();
                changes += tx.affected_rows();
                for _ in 0..rng.next(3) {
                    let id = 1 + rng.next(15_000);
                    if rng.next(4) == 0 {
                        tx.exec_drop(format!("DELETE FROM `{db}`.acct WHERE id = ?"), (id,))
                            .await
                            .unwrap();
                    } else {
                        tx.exec_drop(format!("UPDATE `{db}`.acct SET n = n + 1 WHERE id = ?"), (id,))
                            .await
                            .unwrap();
                    }
                    changes += tx.affected_rows();
                }
                tx.commit().await.unwrap();
                let gtid: String = conn.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
                done.push((gtid, changes as usize));
            }
            done
        })
    };

    let mut rng = Lcg(7);
    let mut logs = Vec::new();
    for round in 0..12 {
        let mut source = p.start_source(&[]);
        // Early rounds land in the snapshot, later ones in streaming.
        let delay = if round < 3 {
            200 + rng.next(800)
        } else {
            300 + rng.next(1500)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        source.kill9();
        logs.push(source.log_text());
    }
    let mut source = p.start_source(&[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let transactions = workload.await.unwrap();
    assert!(
        transactions.len() > 50,
        "the workload ran only {} transactions",
        transactions.len()
    );

    let reads = wait_converged(&p, Duration::from_secs(300)).await;
    assert_eq!(
        source.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        source.log_text()
    );
    let snapshot_runs = logs.iter().filter(|l| l.contains("snapshot started")).count();
    assert!(
        snapshot_runs >= 2,
        "no kill landed in the snapshot; logs:\n{}",
        logs.join("\n---\n")
    );

    // Nothing doubled: every streamed event's position is unique, and positions only grow per partition.
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<i32, cdc_bridge::event::SourcePosition> = BTreeMap::new();
    for r in reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Stream && r.event.op != Operation::Watermark)
    {
        assert!(
            seen.insert(r.event.position.clone()),
            "event at {} is on the topic twice",
            r.event.position
        );
        if let Some(prev) = last.get(&r.partition) {
            assert!(
                *prev < r.event.position,
                "partition {} goes back from {prev} to {}",
                r.partition,
                r.event.position
            );
        }
        last.insert(r.partition, r.event.position.clone());
    }
    // Snapshot rows are read once each.
    let mut snapshot_keys = BTreeSet::new();
    for r in reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Snapshot && r.event.op != Operation::Watermark)
    {
        assert!(
            snapshot_keys.insert((r.event.database.clone(), format!("{:?}", r.event.key))),
            "snapshot read {}.{:?} twice",
            r.event.database,
            r.event.key
        );
    }

    // Nothing lost: every workload transaction after the snapshot's position is on the
    // topic with exactly its number of row changes.
    let snapshot_seq = reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Snapshot && r.event.op != Operation::Watermark)
        .filter_map(|r| match &r.event.position.gtid {
            Some(GtidSet::MariaDb(pos)) => pos.get(0).map(|g| g.sequence),
            _ => None,
        })
        .min()
        .expect("snapshot events carry the GTID position");
    let mut per_tx: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reads
        .iter()
        .filter(|r| r.event.position.phase == Phase::Stream && r.event.op != Operation::Watermark)
    {
        *per_tx.entry(r.event.transaction.id.as_str()).or_default() += 1;
    }
    let mut checked = 0;
    for (gtid, changes) in &transactions {
        let seq: u64 = gtid.rsplit('-').next().unwrap().parse().unwrap();
        if seq <= snapshot_seq {
            continue;
        }
        checked += 1;
        assert_eq!(
            per_tx.get(gtid.as_str()).copied().unwrap_or(0),
            *changes,
            "transaction {gtid} should have {changes} events on the topic"
        );
    }
    assert!(
        checked > 20,
        "only {checked} transactions came after the snapshot"
    );
}
