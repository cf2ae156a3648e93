//! `cdc-bridge verify` on the local stack: a synced tenant verifies equal; rows
//! planted directly in v2 (a missing, an extra, an altered row and an altered
//! document) are named by key, and their values shown only when asked.

mod common;

use std::process::Output;
use std::time::Duration;

use common::pinpoint::{example_v1, example_v2};
use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::{add_sink, drop_mirror, pg_client, start_sink, wait_mirrored};
use common::types::{create_items_and_tally, insert_type_rich, TYPE_RICH};
use common::{cdc_bridge, path_str, wait_until};
use mysql_async::prelude::Queryable;

const SEED: &str = r#"
INSERT INTO facilities (id, name, code, timezone, is_active, created_at) VALUES
 (1, 'Riverside Clinic', 'RVS', 'America/Chicago', 1, '2015-03-02 08:00:00');
INSERT INTO users (id, facility_id, username, password_hash, first_name, last_name, role, is_active, created_at)
VALUES (1, 1, 'amorales', '', 'Ana', 'Morales', 'RN', 1, '2015-03-02 08:30:00'),
       (2, 1, 'blindqvist', '', 'Bjorn', 'Lindqvist', 'MD', 1, '2016-01-10 09:00:00');
INSERT INTO patients (id, facility_id, primary_clinician_id, mrn, first_name, last_name, dob, gender,
                      is_active, deleted, created_at) VALUES
 (1, 1, 2, 'MRN-0001', 'Zoe', 'Nunez', '1941-03-07', 'F', 1, 0, '2024-01-15 09:30:00'),
 (2, 1, 1, 'MRN-0002', 'Lee', 'Park', '1950-01-01', 'M', 1, 0, '2024-07-01 09:30:00');
INSERT INTO survey_templates (id, name, code, version, kind, is_active, created_at) VALUES
 (1, 'PHQ-2 Depression Screen', 'PHQ2', 1, 'A', 1, '2015-05-01 08:00:00');
INSERT INTO survey_questions (id, template_id, position, question_text, answer_type, max_score, is_required)
VALUES (1, 1, 1, 'Little interest or pleasure in doing things?', 'number', 3.00, 1),
       (2, 1, 2, 'Feeling down, depressed, or hopeless?', 'number', 3.00, 1);
INSERT INTO assessments (id, patient_id, template_id, clinician_id, reviewed_by, status, started_at,
                         completed_at, total_score, created_at) VALUES
 (1, 1, 1, 1, 0, 'C', '2024-03-10 09:50:00', '2024-03-10 10:10:00', 4.00, '2024-03-10 09:50:00'),
 (2, 2, 1, 2, 0, 'C', '2024-07-02 11:30:00', '2024-07-02 11:40:00', 1.50, '2024-07-02 11:30:00');
INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text, score, answered_at) VALUES
 (1, 1, 1, '1', 1.00, '2024-03-10 09:55:00'),
 (2, 1, 2, '3', 3.00, '2024-03-10 10:05:00'),
 (3, 2, 1, '0', 0.50, '2024-07-02 11:31:00'),
 (4, 2, 2, '1', 1.00, '2024-07-02 11:32:00');
INSERT INTO notes (id, patient_id, author_id, assessment_id, category, subject, body, is_private, created_at)
VALUES (1, 1, 1, 1, 'CLN', 'Follow-up', 'Discussed results.', 0, '2024-03-10 10:15:00'),
       (2, 2, 2, NULL, 'GEN', NULL, 'Chart reviewed.', 0, '2024-07-02 12:00:00');
"#;

/// A value planted in v2 that must appear only with `--show-values`.
const PLANTED: &str = "Planted-Value-7731";

fn verify(p: &Pipeline, tenant: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--config",
        path_str(&p.config_path),
        "--tenant",
        tenant,
        "--timeout-secs",
        "120",
    ];
    args.extend_from_slice(extra);
    cdc_bridge(&args, &p.stack.child_env())
}

fn cutover(p: &Pipeline, tenant: &str, reports: &std::path::Path) -> Output {
    cdc_bridge(
        &[
            "cutover",
            "--config",
            path_str(&p.config_path),
            "--tenant",
            tenant,
            "--window-secs",
            "3",
            "--report-dir",
            path_str(reports),
        ],
        &p.stack.child_env(),
    )
}

/// The one JSON report in `dir`.
fn cutover_report(dir: &std::path::Path) -> serde_json::Value {
    let json: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(json.len(), 1, "one report: {json:?}");
    assert!(json[0].with_extension("txt").exists(), "and its text form");
    serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("verify --json: {e}\n{}", text(out)))
}

/// (table, kind, key) of every differing row the report lists.
fn listed(report: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in report["tables"].as_array().expect("tables") {
        let table = t["table"].as_str().unwrap_or_default();
        let table = table.rsplit('.').next().unwrap_or_default().to_owned();
        for kind in ["missing", "extra", "different"] {
            for r in t[kind].as_array().expect("kind") {
                out.push((
                    table.clone(),
                    kind.to_owned(),
                    r["key"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

async fn uuid_of(pg: &tokio_postgres::Client, sql: &str) -> String {
    let row = pg
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get::<_, String>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_synced_tenant_and_names_exactly_the_planted_differences() {
    let p = Pipeline::new("verify_map", 1, "").await;
    let db = p.databases[0].clone();
    let pg = pg_client(&p.stack).await;
    let mut conn = example_v1(&p, SEED).await;
    let (schema, group) = example_v2(&p, &pg).await;

    let source = p.start_source(&[]);
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    source.wait_streaming(Duration::from_secs(120)).await;
    let counts = format!(
        r#"SELECT (SELECT count(*) FROM "{schema}"."Patients") * 1000
                + (SELECT count(*) FROM "{schema}"."Notes") * 100
                + (SELECT count(*) FROM "{schema}"."AssessmentAnswers") * 10
                + (SELECT count(*) FROM "{schema}"."LegacyDocuments")"#
    );
    wait_until("v2 synced", Duration::from_secs(120), || async {
        let n: i64 = pg.query_one(counts.as_str(), &[]).await.ok()?.get(0);
        (n == 2242).then_some(())
    })
    .await;

    let out = verify(&p, &db, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a synced tenant verifies equal:\n{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("LegacyDocuments"));

    // Cutover of the synced tenant: lag zero through the window, verify equal, a
    // freeze command, the drain, a report.
    let reports = tempfile::tempdir().unwrap();
    let marker = reports.path().join("frozen");
    let mut config = std::fs::read_to_string(&p.config_path).unwrap();
    config.push_str(&format!(
        "\n[cutover]\nfreeze_command = \"echo $CDC_BRIDGE_DATABASE > {}\"\n",
        marker.display()
    ));
    std::fs::write(&p.config_path, config).unwrap();
    let out = cutover(&p, &db, reports.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "cutover of a synced tenant:\n{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        db,
        "the freeze command ran for the tenant"
    );
    let report = cutover_report(reports.path());
    assert_eq!(report["ok"], true);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["lag", "verify", "freeze", "drain", "verify-frozen"]);
    assert_eq!(report["verify_frozen"]["equal"], true);
    assert!(report["verify"]["tables"].as_array().unwrap().len() > 5);
    std::fs::remove_file(&marker).unwrap();

    // Plant the differences directly in v2, with the sink stopped.
    sink.terminate();
    let missing = uuid_of(
        &pg,
        &format!(r#"SELECT "Id"::text FROM "{schema}"."Patients" WHERE "LegacyV1Key" = '1'"#),
    )
    .await;
    let different = uuid_of(
        &pg,
        &format!(r#"SELECT "Id"::text FROM "{schema}"."Clinicians" WHERE "LegacyV1Key" = '2'"#),
    )
    .await;
    let document = uuid_of(
        &pg,
        &format!(r#"SELECT "Id"::text FROM "{schema}"."LegacyDocuments" WHERE "SourceKey" = '1'"#),
    )
    .await;
    let extra = "0a0b0c0d-0000-4000-8000-000000007731";
    pg.batch_execute(&format!(
        r#"DELETE FROM "{schema}"."Patients" WHERE "Id" = '{missing}';
           CREATE TEMP TABLE planted_note AS SELECT * FROM "{schema}"."Notes" WHERE "LegacyV1Key" = '2';
           UPDATE planted_note SET "Id" = '{extra}', "LegacyV1Key" = '9999';
           INSERT INTO "{schema}"."Notes" SELECT * FROM planted_note;
           UPDATE "{schema}"."Clinicians" SET "FirstName" = '{PLANTED}' WHERE "Id" = '{different}';
           UPDATE "{schema}"."LegacyDocuments" SET "Content" = '\x255044462d'::bytea,
                  "ContentSha256" = sha256('\x255044462d'::bytea) WHERE "Id" = '{document}';"#
    ))
    .await
    .unwrap();

    let out = verify(&p, &db, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "planted differences fail:\n{}",
        text(&out)
    );
    let report = json(&out);
    let mut expected = vec![
        (
            "Clinicians".to_owned(),
            "different".to_owned(),
            format!("Id={different}"),
        ),
        (
            "LegacyDocuments".to_owned(),
            "different".to_owned(),
            format!("Id={document}"),
        ),
        ("Notes".to_owned(), "extra".to_owned(), format!("Id={extra}")),
        (
            "Patients".to_owned(),
            "missing".to_owned(),
            format!("Id={missing}"),
        ),
    ];
    expected.sort();
    assert_eq!(
        listed(&report),
        expected,
        "exactly the planted keys:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(PLANTED),
        "no values without --show-values:\n{stdout}"
    );
    assert!(
        stdout.contains("patients {\\\"id\\\":\\\"1\\\"}"),
        "the v1 key is named:\n{stdout}"
    );

    let human = verify(&p, &db, &[]);
    assert_eq!(human.status.code(), Some(1), "{}", text(&human));
    let human_text = String::from_utf8_lossy(&human.stdout);
    assert!(
        human_text.contains("DIFFERENT") && !human_text.contains(PLANTED),
        "{human_text}"
    );

    // Cutover refuses when verify fails, and changes nothing: the freeze never runs.
    let refused = tempfile::tempdir().unwrap();
    let out = cutover(&p, &db, refused.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = cutover_report(refused.path());
    assert_eq!(report["ok"], false);
    assert_eq!(report["steps"][1]["name"], "verify");
    assert_eq!(report["steps"][1]["ok"], false);
    assert!(!marker.exists(), "no freeze after a failed verify");

    let shown = verify(&p, &db, &["--show-values"]);
    assert_eq!(shown.status.code(), Some(1), "{}", text(&shown));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(PLANTED),
        "--show-values shows the value:\n{}",
        text(&shown)
    );

    // ... and while the tenant has lag (a v1 change the stopped sink has not applied).
    conn.query_drop(format!("UPDATE `{db}`.notes SET subject = 'later' WHERE id = 2"))
        .await
        .unwrap();
    wait_until("lag on the topic", Duration::from_secs(60), || async {
        let out = cdc_bridge(
            &["status", "--config", path_str(&p.config_path), "--json"],
            &p.stack.child_env(),
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let t = s["tenants"]
            .as_array()?
            .iter()
            .find(|t| t["tenant"] == db.as_str())?
            .clone();
        (t["kafka_lag_events"].as_u64()? > 0).then_some(())
    })
    .await;
    let lagging = tempfile::tempdir().unwrap();
    let out = cutover(&p, &db, lagging.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = cutover_report(lagging.path());
    assert_eq!(report["steps"][0]["name"], "lag");
    assert_eq!(report["steps"][0]["ok"], false);
    assert_eq!(
        report["steps"].as_array().unwrap().len(),
        1,
        "nothing after a refused lag check"
    );

    // The repair: a replay of the tenant rewrites the removed row, the altered
    // value and the altered document (its bookkeeping hash unchanged, v2's copy
    // not); the restarted sink drains the lag. Only the extra row is left.
    let out = cdc_bridge(
        &["replay", "--config", path_str(&p.config_path), "--tenant", &db],
        &p.stack.child_env(),
    );
    assert!(out.status.success(), "replay:\n{}", text(&out));
    let _sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    let out = verify(&p, &db, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        listed(&json(&out)),
        [("Notes".to_owned(), "extra".to_owned(), format!("Id={extra}"))],
        "a replay repairs all but the row v1 never had:\n{}",
        text(&out)
    );

    drop(source);
    common::pinpoint::drop_example(&pg, &schema, &group, &[db.as_str()]).await;
    let _ = pg
        .execute("DELETE FROM cdc_bridge.applied WHERE tenant = $1", &[&db])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_a_mirrored_tenant_value_for_value() {
    let p = Pipeline::new("vmirror", 1, "").await;
    let sink = add_sink(&p, "");
    let pg = pg_client(&p.stack).await;
    let db = p.databases[0].clone();
    let mut conn = p.admin().await;
    conn.query_drop("SET SESSION time_zone = '+00:00'").await.unwrap();
    conn.query_drop(format!("USE `{db}`")).await.unwrap();
    conn.query_drop(TYPE_RICH).await.unwrap();
    insert_type_rich(&mut conn, &db, 0).await;
    create_items_and_tally(&mut conn, &db, 300).await;

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

    let out = verify(&p, &db, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a mirrored tenant verifies equal:\n{}",
        text(&out)
    );

    sink_process.terminate();
    let mirror = format!("{}{db}", sink.schema_prefix);
    pg.batch_execute(&format!(
        r#"UPDATE "{mirror}".items SET n = -1 WHERE id = 123;
           UPDATE "{mirror}".tally SET "_cdc_count" = 1 WHERE who = 'x';"#
    ))
    .await
    .unwrap();
    let out = verify(&p, &db, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let found = listed(&report);
    assert_eq!(found.len(), 2, "{found:?}\n{}", text(&out));
    assert_eq!(
        found[0],
        ("items".to_owned(), "different".to_owned(), "id=123".to_owned()),
        "{found:?}"
    );
    assert_eq!(found[1].0, "tally");

    // A row changed after verify's snapshot, applied before v2 is read, is set
    // aside (not a difference): verify starts while the sink is stopped with
    // lag (row 7), row 8 changes once verify waits, then the sink drains both.
    conn.query_drop(format!("UPDATE `{db}`.items SET n = n + 1000 WHERE id = 7"))
        .await
        .unwrap();
    let mut waiting = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
        .args([
            "verify",
            "--config",
            path_str(&p.config_path),
            "--tenant",
            &db,
            "--timeout-secs",
            "120",
            "--json",
        ])
        .envs(p.stack.child_env())
        .env("CDC_BRIDGE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run verify");
    let stderr = waiting.stderr.take().unwrap();
    let (said, hear) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("waiting for the sink") {
                let _ = said.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    hear.recv_timeout(Duration::from_secs(120))
        .expect("verify waits for the stopped sink");
    conn.query_drop(format!("UPDATE `{db}`.items SET note = 'later' WHERE id = 8"))
        .await
        .unwrap();
    let _sink_again = start_sink(&p);
    let out = waiting.wait_with_output().expect("verify ends");
    let out = Output {
        stderr: reader.join().unwrap().into_bytes(),
        ..out
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        listed(&report),
        found,
        "only the planted differences:\n{}",
        text(&out)
    );
    let items = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"].as_str().unwrap().ends_with(".items"))
        .unwrap();
    assert_eq!(
        items["changed_after_snapshot"],
        1,
        "row 8 set aside:\n{}",
        text(&out)
    );

    drop(source);
    drop_mirror(&p, &sink, &pg).await;
}
