//! Documents end to end on the local stack: v1 assessments of the PinpointCare
//! example regenerated as PDFs in v2 (`LegacyDocuments`), read back with
//! `pdftotext` (poppler-utils), kept current by exactly the changes that
//! touch them, unchanged by a replay, and never stale after a crash between
//! a batch's rows and its documents.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pinpoint::{example_v1, example_v2};
use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::pg_client;
use common::wait_until;
use mysql_async::prelude::Queryable;

/// Questions of template 1 by id, with their positions (not in id order).
const SHORT_QUESTIONS: &[(u32, u32, &str)] = &[
    (1, 3, "Little interest or pleasure in doing things?"),
    (2, 1, "Feeling down, depressed — or hopeless?"),
    (3, 2, "Trouble sleeping (Schlafstörung) ± naps?"),
];

fn seed() -> String {
    let mut sql = String::from(
        r#"
ALTER TABLE assessment_answers MODIFY answer_text LONGTEXT NULL;
INSERT INTO facilities (id, name, created_at) VALUES (1, 'Riverside Clinic', '2015-03-02 08:00:00');
INSERT INTO users (id, facility_id, username, first_name, last_name, role, credentials, created_at)
  VALUES (1, 1, 'amorales', 'Ana', 'Morales', 'RN', 'RN, BSN', '2015-03-02 08:30:00');
INSERT INTO patients (id, facility_id, mrn, first_name, last_name, dob, gender, created_at) VALUES
  (1, 1, 'MRN-0001', 'Zoë', 'Núñez', '1941-03-07', 'F', '2024-01-15 09:30:00'),
  (2, 1, 'MRN-0002', 'Иван', 'Петров', '1950-01-01', 'M', '2024-01-15 09:30:00');
INSERT INTO survey_templates (id, name, version, kind, created_at) VALUES
  (1, 'PHQ-3 Screen ✓', 2, 'A', '2020-01-01 00:00:00'),
  (2, 'Wellbeing survey (long)', 1, 'S', '2020-01-01 00:00:00');
INSERT INTO assessments (id, patient_id, template_id, clinician_id, status, started_at, total_score, created_at)
VALUES
  (1, 1, 1, 1, 'C', '2024-03-10 09:00:00', 4.00, '2024-03-10 09:00:00'),
  (2, 2, 1, 1, 'C', '2024-03-11 09:00:00', 1.00, '2024-03-11 09:00:00'),
  (3, 1, 2, 1, 'C', '2024-03-12 09:00:00', NULL, '2024-03-12 09:00:00'),
  (4, 1, 1, 1, 'P', '2024-03-13 09:00:00', NULL, '2024-03-13 09:00:00'),
  (5, 1, 999, 1, 'P', '2024-03-14 09:00:00', NULL, '2024-03-14 09:00:00'),
  (6, 1, 1, 1, 'P', '2024-03-15 09:00:00', NULL, '2024-03-15 09:00:00');
INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text, score) VALUES
  (1, 1, 1, 'Several days — très peu', 1.00),
  (2, 1, 2, 'Καθόλου (not at all)', 0.00),
  (3, 1, 3, 'Nearly every day €5 ✓', 3.00),
  (4, 2, 1, 'Not at all', 0.00),
  (5, 2, 2, 'Not at all', 0.00),
  (6, 2, 3, 'Several days', 1.00),
  (7, 4, 1, 'Sometimes', NULL),
  (8, 4, 9999, 'An answer to a question v1 lost', NULL),
  (9, 5, 1, 'Answered on a deleted template', NULL),
  (10, 6, 1, REPEAT('Lorem ipsum dolor ', 300000), NULL);
"#,
    );
    for (id, pos, text) in SHORT_QUESTIONS {
        sql.push_str(&format!(
            "INSERT INTO survey_questions (id, template_id, position, question_text) VALUES ({id}, 1, {pos}, '{text}');\n"
        ));
    }
    // Template 2: 300 questions, and assessment 3 answers every one.
    let mut questions = Vec::new();
    let mut answers = Vec::new();
    for n in 1..=300u32 {
        questions.push(format!(
            "({}, 2, {n}, 'Question {n}: how often this week?')",
            100 + n
        ));
        answers.push(format!("({}, 3, {}, 'Answer {n}: sometimes')", 100 + n, 100 + n));
    }
    sql.push_str(&format!(
        "INSERT INTO survey_questions (id, template_id, position, question_text) VALUES {};\n",
        questions.join(", ")
    ));
    sql.push_str(&format!(
        "INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text) VALUES {};\n",
        answers.join(", ")
    ));
    sql
}

/// One v2 document: (sha256 hex, rendered at, pages, content).
type Doc = (String, String, i32, Vec<u8>);

async fn documents(pg: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Doc> {
    pg.query(
        &format!(
            r#"SELECT "SourceKey", encode("ContentSha256", 'hex'), "RenderedAtUtc"::text,
                      coalesce("PageCount", 0), "Content"
               FROM "{schema}"."LegacyDocuments""#
        ),
        &[],
    )
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect()
    })
    .unwrap_or_default()
}

/// The PDF's text as `pdftotext -layout` extracts it, whitespace collapsed.
fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (Debian package poppler-utils) is installed");
    assert!(
        out.status.success(),
        "pdftotext: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts that `parts` appear in `text` in this order.
fn assert_in_order(what: &str, text: &str, parts: &[&str]) {
    let mut at = 0;
    for p in parts {
        match text[at..].find(p) {
            Some(i) => at += i + p.len(),
            None => panic!("{what}: {p:?} is missing or out of order after byte {at} in:\n{text}"),
        }
    }
}

async fn wait_docs<F>(
    pg: &tokio_postgres::Client,
    schema: &str,
    sink: &BridgeProcess,
    what: &str,
    cond: F,
) -> BTreeMap<String, Doc>
where
    F: Fn(&BTreeMap<String, Doc>) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let docs = documents(pg, schema).await;
        if cond(&docs) {
            return docs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; documents: {:?}\n--- sink log\n{}",
            docs.keys().collect::<Vec<_>>(),
            sink.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The keys whose rendering time changed between two reads.
fn rewritten(before: &BTreeMap<String, Doc>, after: &BTreeMap<String, Doc>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, d)| before.get(*k).is_some_and(|b| b.1 != d.1))
        .map(|(k, _)| k.clone())
        .collect()
}

async fn sink_offsets(pg: &tokio_postgres::Client, group: &str) -> Vec<(i32, i64)> {
    pg.query(
        "SELECT kafka_partition, next_offset FROM cdc_bridge.sink_offsets WHERE consumer_group = $1 \
         ORDER BY 1",
        &[&group],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assessments_become_pdfs_that_follow_exactly_the_changes_that_touch_them() {
    // Small chunks and batches: the snapshot reaches the sink in many batches,
    // a document's tables in different ones; the deferred documents are
    // rendered two per batch.
    let p = Pipeline::new("docs", 1, "snapshot_chunk_rows = 40").await;
    let db = p.databases[0].clone();
    let pg = pg_client(&p.stack).await;
    let mut conn = example_v1(&p, &seed()).await;
    let (schema, group) = example_v2(&p, &pg).await;
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    std::fs::write(
        &p.config_path,
        config
            .replacen(
                "[sink]\n",
                "[sink]\nbatch_max_events = 20\ndeferred_documents_per_batch = 2\n",
                1,
            )
            // Sinks killed by the failpoints leave the group sooner.
            .replacen(
                "[metrics]\n",
                "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\n[metrics]\n",
                1,
            ),
    )
    .unwrap();

    let source = p.start_source(&[]);
    let env = p.stack.child_env();
    // Killed right after a batch that deferred documents committed: the
    // deferral survives, and the next sink renders them (nothing lost).
    let mut env_deferring = env.clone();
    env_deferring.push(("CDC_BRIDGE_FAILPOINT", "after_deferring".to_owned()));
    let mut crashing = BridgeProcess::spawn_command("sink", &p.config_path, &env_deferring, &[]);
    let status = crashing
        .wait_exit(Duration::from_secs(180))
        .expect("the failpoint aborts the sink");
    assert!(!status.success());
    let waiting: i64 = pg
        .query_one(
            "SELECT count(*) FROM cdc_bridge.doc_pending WHERE tenant = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(waiting > 0, "the aborted sink left deferred documents");
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    // The snapshot arrives table by table; its documents wait until the
    // source streams (its first watermark) and are rendered once, complete.
    let counts = format!(
        r#"SELECT (SELECT count(*) FROM "{schema}"."AssessmentQuestions") = 303
              AND (SELECT count(*) FROM "{schema}"."AssessmentAnswers") = 310
              AND (SELECT count(*) FROM "{schema}"."AssessmentTemplates") = 2
              AND (SELECT count(*) FROM "{schema}"."Clinicians") = 1
              AND (SELECT count(*) FROM "{schema}"."Patients") = 2
              AND (SELECT count(*) FROM "{schema}"."Facilities") = 1"#
    );
    wait_until("v2 holds the seed", Duration::from_secs(180), || async {
        let done: bool = pg.query_one(counts.as_str(), &[]).await.ok()?.get(0);
        done.then_some(())
    })
    .await;
    let docs = wait_docs(&pg, &schema, &sink, "six documents", |d| d.len() == 6).await;
    // Written once each: inserted, never updated while the snapshot went on
    // (statistics reach pg_stat once the sink's session reports them).
    let (inserted, updated) = wait_until("document statistics", Duration::from_secs(60), || async {
        let row = pg
            .query_one(
                "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables \
                 WHERE schemaname = $1 AND relname = 'LegacyDocuments'",
                &[&schema],
            )
            .await
            .ok()?;
        let (ins, upd): (i64, i64) = (row.get(0), row.get(1));
        (ins >= 6).then_some((ins, upd))
    })
    .await;
    assert_eq!(
        (inserted, updated),
        (6, 0),
        "each document written once during the initial sync"
    );

    // 1. Content: header, questions in template order with their answers, non-ASCII text.
    let one = pdf_text(&docs["1"].3);
    // The header is laid out in two columns: its fields are checked for presence,
    // the body for order.
    for field in [
        "PHQ-3 Screen ✓",
        "Núñez, Zoë",
        "1941-03-07",
        "MRN-0001",
        "Riverside Clinic",
        "Ana Morales RN, BSN",
        "2024-03-10 09:00",
    ] {
        assert!(one.contains(field), "assessment 1 lacks {field:?}:\n{one}");
    }
    assert_in_order(
        "assessment 1",
        &one,
        &[
            "Feeling down, depressed — or hopeless?",
            "Καθόλου (not at all)",
            "Trouble sleeping (Schlafstörung) ± naps?",
            "Nearly every day €5 ✓",
            "Little interest or pleasure in doing things?",
            "Several days — très peu",
            "Total score",
            "4.00",
        ],
    );
    assert!(one.contains("Source: v1 assessments 1"), "{one}");
    assert!(one.contains("Page 1 of 1"), "{one}");
    assert!(pdf_text(&docs["2"].3).contains("Петров, Иван"));

    // 300 answers: several pages, every one numbered "Page i of n", answers in order.
    let (_, _, pages, pdf) = &docs["3"];
    assert!(*pages > 2, "a 300-answer assessment spans pages: {pages}");
    let long = pdf_text(pdf);
    let page_marks: Vec<String> = (1..=*pages).map(|i| format!("Page {i} of {pages}")).collect();
    assert_in_order(
        "page numbers",
        &long,
        &page_marks.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!long.contains(&format!("Page {} of", pages + 1)));
    let answers: Vec<String> = (1..=300).map(|n| format!("Answer {n}: sometimes")).collect();
    assert_in_order(
        "300 answers",
        &long,
        &answers.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // Malformed input renders with a visible note.
    let four = pdf_text(&docs["4"].3);
    assert!(four.contains("survey_questions 9999"), "{four}");
    assert!(four.contains("An answer to a question v1 lost"), "{four}");
    let five = pdf_text(&docs["5"].3);
    assert!(five.contains("survey_templates 999"), "{five}");
    let six = pdf_text(&docs["6"].3);
    assert!(six.contains("answer truncated"), "{six}");
    assert!(
        docs["6"].3.len() < 2_000_000,
        "a 5 MB answer is cut: {} bytes",
        docs["6"].3.len()
    );

    // 2. One answer edited: exactly that assessment is rewritten.
    conn.query_drop("UPDATE assessment_answers SET answer_text = 'Changed ✓' WHERE id = 2")
        .await
        .unwrap();
    let after = wait_docs(&pg, &schema, &sink, "assessment 1 re-rendered", |d| {
        d.get("1").is_some_and(|x| x.0 != docs["1"].0)
    })
    .await;
    assert_eq!(rewritten(&docs, &after), ["1"]);
    assert!(pdf_text(&after["1"].3).contains("Changed ✓"));

    // 3. A shared question edited: every assessment answering it, no other.
    let docs = after;
    conn.query_drop("UPDATE survey_questions SET question_text = 'Feeling down (edited)?' WHERE id = 2")
        .await
        .unwrap();
    let after = wait_docs(&pg, &schema, &sink, "assessments 1 and 2 re-rendered", |d| {
        ["1", "2"]
            .iter()
            .all(|k| d.get(*k).is_some_and(|x| x.0 != docs[*k].0))
    })
    .await;
    assert_eq!(rewritten(&docs, &after), ["1", "2"]);
    assert!(pdf_text(&after["2"].3).contains("Feeling down (edited)?"));

    // 4. The root deleted: its document goes.
    conn.query_drop("DELETE FROM assessments WHERE id = 2")
        .await
        .unwrap();
    let docs = wait_docs(&pg, &schema, &sink, "document 2 removed", |d| {
        !d.contains_key("2") && d.len() == 5
    })
    .await;

    // 5. A replay of the whole topic rewrites no document.
    let offsets = sink_offsets(&pg, &group).await;
    sink.terminate();
    pg.execute(
        "DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = $1",
        &[&group],
    )
    .await
    .unwrap();
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    wait_until("the replay reaches the end", Duration::from_secs(180), || async {
        // Watermarks keep arriving: past where the sink was, not equal to it.
        let now = sink_offsets(&pg, &group).await;
        let past = offsets
            .iter()
            .all(|(p, o)| now.iter().any(|(q, n)| q == p && n >= o));
        past.then_some(())
    })
    .await;
    let replayed = documents(&pg, &schema).await;
    assert_eq!(
        rewritten(&docs, &replayed),
        Vec::<String>::new(),
        "a replay rewrote documents"
    );
    assert_eq!(replayed.len(), 5);

    // 6. Killed between a batch's rows and its documents: nothing of the batch
    // commits, and after a restart the document matches the rows.
    sink.terminate();
    let mut env_crash = env.clone();
    env_crash.push(("CDC_BRIDGE_FAILPOINT", "before_documents".to_owned()));
    let mut crashing = BridgeProcess::spawn_command("sink", &p.config_path, &env_crash, &[]);
    conn.query_drop("UPDATE assessment_answers SET answer_text = 'After the crash' WHERE id = 3")
        .await
        .unwrap();
    let status = crashing
        .wait_exit(Duration::from_secs(120))
        .expect("the failpoint aborts the sink");
    assert!(!status.success());
    let answer: String = pg
        .query_one(
            &format!(r#"SELECT "AnswerText" FROM "{schema}"."AssessmentAnswers" WHERE "LegacyV1Key" = '3'"#),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        answer, "Nearly every day €5 ✓",
        "the aborted batch's rows did not commit"
    );
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &env, &[]);
    let after = wait_docs(&pg, &schema, &sink, "assessment 1 after the crash", |d| {
        d.get("1").is_some_and(|x| x.0 != replayed["1"].0)
    })
    .await;
    assert!(pdf_text(&after["1"].3).contains("After the crash"));
    assert_eq!(rewritten(&replayed, &after), ["1"]);
    // No patient data in the logs: names and answers stay in v2.
    for log in [sink.log_text(), crashing.log_text()] {
        for value in ["Núñez", "Петров", "Καθόλου", "After the crash", "Lorem ipsum"] {
            assert!(!log.contains(value), "{value:?} in a sink log:\n{log}");
        }
    }

    sink.terminate();
    drop(source);
    common::pinpoint::drop_example(&pg, &schema, &group, &[db.as_str()]).await;
    conn.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}
