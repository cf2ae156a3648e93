//! `cdc-bridge replay` on the local stack, beside a running sink in mapping
//! mode: after a mapping fix (a column now trimmed) a replay rewrites exactly
//! the v2 rows the fix changes — every other row keeps its row version
//! (PostgreSQL `xmin`) — a second replay changes nothing, and rows changed in
//! v1 after the snapshot keep their newest value (the replay never moves a row
//! backwards).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::{add_sink, pg_client};
use common::{path_str, wait_until};
use mysql_async::prelude::Queryable;

const NAMESPACE: &str = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001";
const ROWS: i64 = 20;
/// v1 ids whose names carry spaces the buggy mapping keeps.
const PADDED: [i64; 3] = [3, 7, 11];

/// The mapping; `fixed` adds the `trim` the first version forgot.
fn mapping_toml(schema: &str, fixed: bool) -> String {
    let last_name = if fixed {
        r#"{ from = "last_name", convert = "trim" }"#
    } else {
        r#"{ from = "last_name" }"#
    };
    format!(
        r#"
namespace = "{NAMESPACE}"
timezone = "UTC"
target_schema = "{schema}"

[[tables]]
name = "Patients"
from = "patients"
key = "Id"
[tables.columns]
Id = {{ id_of = "patients" }}
TenantId = {{ tenant = true }}
LastName = {last_name}
Note = {{ from = "note" }}
LegacyV1Key = {{ from = "id", convert = "text" }}
"#
    )
}

/// v1 name of row `id` when the table is filled: a few padded with spaces.
fn v1_name(id: i64) -> String {
    if PADDED.contains(&id) {
        format!("  Name{id} ")
    } else {
        format!("Name{id}")
    }
}

/// v1 id → (LastName, xmin) of every v2 row.
async fn v2_rows(pg: &tokio_postgres::Client, schema: &str) -> BTreeMap<i64, (Option<String>, String)> {
    pg.query(
        &format!(r#"SELECT "LegacyV1Key", "LastName", xmin::text FROM "{schema}"."Patients""#),
        &[],
    )
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| {
                let key: String = r.get(0);
                (key.parse().expect("numeric v1 key"), (r.get(1), r.get(2)))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Runs `cdc-bridge replay --config <config> <args>` to its end; returns its summary line.
async fn replay(p: &Pipeline, args: &[&str]) -> String {
    let out = p
        .config_dir
        .path()
        .join(format!("{}.out", common::unique("replay")));
    let err = p
        .config_dir
        .path()
        .join(format!("{}.err", common::unique("replay")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
        .args(["replay", "--config", path_str(&p.config_path)])
        .args(args)
        .envs(p.stack.child_env())
        .env("CDC_BRIDGE_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("start cdc-bridge replay");
    let status = wait_until("the replay to exit", Duration::from_secs(180), || {
        let status = child.try_wait().expect("replay status");
        async move { status }
    })
    .await;
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.success(),
        "replay exited with {status}:\n{stdout}\n{stderr}"
    );
    for value in ["Name11", "Updated7"] {
        assert!(!stderr.contains(value), "no row values in the log:\n{stderr}");
    }
    stdout
        .lines()
        .find(|l| l.starts_with("replay done"))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}\n{stderr}"))
        .to_owned()
}

/// A count from the summary line: the number before `what`.
fn count(summary: &str, what: &str) -> u64 {
    let at = summary
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} in {summary}"));
    summary[..at]
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count before {what:?} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_mapping_fix_rewrites_exactly_the_affected_rows() {
    let p = Pipeline::new("replay", 1, "").await;
    let db = p.databases[0].clone();
    let pg = pg_client(&p.stack).await;
    let schema = format!("{}_v2", p.prefix);
    pg.batch_execute(&format!(
        r#"CREATE SCHEMA "{schema}";
           CREATE TABLE "{schema}"."Patients" ("Id" uuid PRIMARY KEY, "TenantId" text NOT NULL,
               "LastName" varchar(60), "Note" text, "LegacyV1Key" text NOT NULL);"#
    ))
    .await
    .unwrap();
    let mapping = p.config_dir.path().join("mapping.toml");
    std::fs::write(&mapping, mapping_toml(&schema, false)).unwrap();
    let sink = add_sink(
        &p,
        &format!("mode = \"mapping\"\nmapping = \"{}\"", mapping.display()),
    );

    // 1. v1 rows, a few with the padding the buggy mapping keeps; the live sink applies them.
    let mut conn = p.admin().await;
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.patients (id INT PRIMARY KEY, last_name VARCHAR(60), note VARCHAR(60))"
    ))
    .await
    .unwrap();
    for id in 1..=ROWS {
        conn.exec_drop(
            format!("INSERT INTO `{db}`.patients VALUES (?, ?, ?)"),
            (id, v1_name(id), format!("note {id}")),
        )
        .await
        .unwrap();
    }
    let source = p.start_source(&[]);
    let live = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    let logs = || format!("{}\n{}", source.log_text(), live.log_text());
    wait_until("v2 to hold every v1 row", Duration::from_secs(120), || {
        let (pg, schema) = (&pg, &schema);
        async move {
            let rows = v2_rows(pg, schema).await;
            (rows.len() as i64 == ROWS).then_some(())
        }
    })
    .await;

    // 5 (setup). Changes after the first sync: row 5 plainly, row 7 (affected by
    // the bug) to another padded name. Their stored positions are now newer
    // than their snapshot events, which the replay reads first.
    conn.query_drop(format!(
        "UPDATE `{db}`.patients SET last_name = 'Updated5' WHERE id = 5; \
         UPDATE `{db}`.patients SET last_name = ' Updated7  ' WHERE id = 7"
    ))
    .await
    .unwrap();
    let synced = wait_until("the v1 updates in v2", Duration::from_secs(120), || {
        let (pg, schema) = (&pg, &schema);
        async move {
            let rows = v2_rows(pg, schema).await;
            let name = |id| rows.get(&id).and_then(|r| r.0.clone());
            (name(5).as_deref() == Some("Updated5") && name(7).as_deref() == Some(" Updated7  "))
                .then_some(rows)
        }
    })
    .await;
    for id in 1..=ROWS {
        let expected = match id {
            5 => "Updated5".to_owned(),
            7 => " Updated7  ".to_owned(),
            _ => v1_name(id),
        };
        assert_eq!(
            synced[&id].0.as_deref(),
            Some(expected.as_str()),
            "the buggy mapping's row {id}: {synced:?}\n{}",
            logs()
        );
    }

    // 2.-3. Fix the mapping and replay the tenant's table (the live sink keeps running).
    std::fs::write(&mapping, mapping_toml(&schema, true)).unwrap();
    let summary = replay(&p, &["--tenant", &db, "--table", "patients"]).await;
    let after = v2_rows(&pg, &schema).await;
    let mut differences = Vec::new();
    for id in 1..=ROWS {
        let (before_name, before_xmin) = &synced[&id];
        let (name, xmin) = &after[&id];
        let affected = PADDED.contains(&id);
        let expected = before_name.as_deref().map(str::trim).map(str::to_owned);
        if *name != expected {
            differences.push(format!("row {id}: LastName {name:?}, expected {expected:?}"));
        }
        if affected == (xmin == before_xmin) {
            differences.push(format!(
                "row {id}: xmin {before_xmin} -> {xmin}, expected {}",
                if affected {
                    "a new row version"
                } else {
                    "the same row version"
                }
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "after the first replay ({summary}):\n{}\n{}",
        differences.join("\n"),
        logs()
    );
    // Row 7 carries its update's value, fixed, not its snapshot's (never backwards).
    assert_eq!(after[&7].0.as_deref(), Some("Updated7"));
    assert_eq!(after[&5].0.as_deref(), Some("Updated5"));
    // Every event of the range was read; the two older snapshot events were
    // stopped by the guard.
    assert_eq!(count(&summary, "applied"), ROWS as u64 + 2, "{summary}");
    assert_eq!(
        count(&summary, "rows skipped by the position guard"),
        2,
        "{summary}"
    );
    assert_eq!(count(&summary, "dead letters"), 0, "{summary}");

    // A replay filtered to another table reads the range and applies nothing.
    let none = replay(&p, &["--table", "no_such_table"]).await;
    assert_eq!(count(&none, "applied"), 0, "{none}");
    assert!(count(&none, "skipped by filter") >= ROWS as u64 + 2, "{none}");

    // 4. Replaying again (the whole topic, no filter) changes nothing.
    let again_summary = replay(&p, &[]).await;
    let again = v2_rows(&pg, &schema).await;
    assert_eq!(again, after, "a second replay changed rows ({again_summary})");

    // The live sink still applies new changes with its own offsets untouched by the replays.
    conn.query_drop(format!("UPDATE `{db}`.patients SET note = 'later' WHERE id = 1"))
        .await
        .unwrap();
    wait_until(
        "a later change through the live sink",
        Duration::from_secs(60),
        || {
            let pg = &pg;
            let schema = &schema;
            async move {
                pg.query_one(
                    &format!(r#"SELECT count(*) FROM "{schema}"."Patients" WHERE "Note" = 'later'"#),
                    &[],
                )
                .await
                .ok()
                .map(|r| r.get::<_, i64>(0))
                .filter(|&n| n == 1)
            }
        },
    )
    .await;
    let replay_offsets: i64 = pg
        .query_one(
            "SELECT count(*) FROM cdc_bridge.sink_offsets WHERE consumer_group LIKE $1",
            &[&format!("{}-replay%", sink.group)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replay_offsets, 0, "a replay stores no offsets");

    // Clean up what the test created.
    drop(live);
    drop(source);
    pg.batch_execute(&format!(
        r#"DROP SCHEMA "{schema}" CASCADE;
           DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{schema}.');
           DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = '{group}';
           DELETE FROM cdc_bridge.applied WHERE tenant = '{db}';"#,
        group = sink.group
    ))
    .await
    .unwrap();
    conn.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}
