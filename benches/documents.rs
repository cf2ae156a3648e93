//! Document rendering in process: the PinpointCare example's assessment rule
//! (`connectors/pinpoint/mapping.toml`) over synthetic stored rows, a few
//! thousand assessments of 25 answers (and one in twenty of 300), built and
//! rendered to PDF on one thread per core as the sink's worker pool does.
//! Prints documents/s, per-document latency percentiles, bytes and peak RSS.
//!
//! `cargo bench --bench documents` (`CDC_BRIDGE_BENCH_DOCS` changes the count).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cdc_bridge::documents::model::{build, Rows, StateRow};
use cdc_bridge::documents::render::{render, Font, PageSize, RenderOptions};
use cdc_bridge::documents::rule::DEFAULT_FONT;
use cdc_bridge::event::{Date, DateTime, Decimal, Row, Value};
use cdc_bridge::transform::mapping::Mapping;

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn state(key: i64, row: Vec<(&str, Value)>) -> StateRow {
    StateRow {
        key: key.to_string(),
        changed_micros: 1_732_000_000_000_000 + key,
        row: Row(row.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let n: usize = std::env::var("CDC_BRIDGE_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors/pinpoint/mapping.toml");
    let mapping = Mapping::load(&path).expect("the example mapping loads");
    let rule = mapping.file.documents[0].clone();
    let font = Arc::new(Font::load(std::path::Path::new(DEFAULT_FONT)).expect("the default font"));

    // Stored rows: one facility, clinician and template per tenant, 25 or 300 questions.
    let mut rows = Rows::default();
    let mut put = |table: &str, r: StateRow| {
        rows.by_key.insert((table.to_owned(), r.key.clone()), r);
    };
    put(
        "facilities",
        state(1, vec![("id", Value::Int(1)), ("name", text("Riverside Clinic"))]),
    );
    put(
        "users",
        state(
            1,
            vec![
                ("id", Value::Int(1)),
                ("first_name", text("Ana")),
                ("last_name", text("Morales")),
                ("credentials", text("RN, BSN")),
            ],
        ),
    );
    for (id, name, version) in [
        (1, "PHQ-9 Depression Screen", 2),
        (2, "Annual wellbeing survey", 1),
    ] {
        put(
            "survey_templates",
            state(
                id,
                vec![
                    ("id", Value::Int(id)),
                    ("name", text(name)),
                    ("version", Value::Int(version)),
                ],
            ),
        );
    }
    for q in 1..=325i64 {
        put(
            "survey_questions",
            state(
                q,
                vec![
                    ("id", Value::Int(q)),
                    ("template_id", Value::Int(if q <= 25 { 1 } else { 2 })),
                    ("position", Value::Int(q)),
                    (
                        "question_text",
                        text(format!(
                            "Question {q}: over the last two weeks, how often have you been bothered by \
                             feeling tired or having little energy (Müdigkeit, fatigue)?"
                        )),
                    ),
                ],
            ),
        );
    }
    let mut answer_id = 0i64;
    let mut roots = Vec::with_capacity(n);
    for a in 1..=n as i64 {
        let long = a % 20 == 0;
        put(
            "patients",
            state(
                a,
                vec![
                    ("id", Value::Int(a)),
                    ("facility_id", Value::Int(1)),
                    ("first_name", text("Zoë")),
                    ("last_name", text(format!("Núñez {a}"))),
                    ("mrn", text(format!("MRN-{a:06}"))),
                    (
                        "dob",
                        Value::Date(Date {
                            year: 1941,
                            month: 3,
                            day: 7,
                        }),
                    ),
                ],
            ),
        );
        let root = state(
            a,
            vec![
                ("id", Value::Int(a)),
                ("patient_id", Value::Int(a)),
                ("template_id", Value::Int(if long { 2 } else { 1 })),
                ("clinician_id", Value::Int(1)),
                ("status", text("C")),
                (
                    "started_at",
                    Value::DateTime(DateTime {
                        date: Date {
                            year: 2024,
                            month: 3,
                            day: 10,
                        },
                        hour: 9,
                        minute: 0,
                        second: 0,
                        micros: 0,
                    }),
                ),
                ("total_score", Value::Decimal("14.00".parse::<Decimal>().unwrap())),
            ],
        );
        let questions: Vec<i64> = if long {
            (26..=325).collect()
        } else {
            (1..=25).collect()
        };
        let items: Vec<StateRow> = questions
            .iter()
            .map(|q| {
                answer_id += 1;
                state(
                    answer_id,
                    vec![
                        ("id", Value::Int(answer_id)),
                        ("assessment_id", Value::Int(a)),
                        ("question_id", Value::Int(*q)),
                        (
                            "answer_text",
                            text("More than half the days; sleeps poorly since the fall in March — très fatigué."),
                        ),
                        ("score", Value::Decimal("2.00".parse::<Decimal>().unwrap())),
                    ],
                )
            })
            .collect();
        rows.items.insert(a.to_string(), items);
        roots.push(root);
    }
    let rows = Arc::new(rows);
    let roots = Arc::new(roots);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let opts = RenderOptions {
        page: PageSize::A4,
        font,
        max_answer_chars: rule.max_answer_chars,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let totals = Arc::new(Mutex::new((0usize, 0u64)));
    let rule = Arc::new(rule);
    let started = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (rows, roots, opts, next, latencies, totals, rule) = (
                rows.clone(),
                roots.clone(),
                opts.clone(),
                next.clone(),
                latencies.clone(),
                totals.clone(),
                rule.clone(),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(root) = roots.get(i) else { break };
                let t = Instant::now();
                let built = build(&rule, "bench", root, &rows);
                let pdf = render(&built.document, &opts).expect("renders");
                latencies.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                let mut tot = totals.lock().unwrap();
                tot.0 += pdf.bytes.len();
                tot.1 += u64::from(pdf.pages);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    let (bytes, pages) = *totals.lock().unwrap();
    println!(
        "documents: {n} assessments ({} of 300 answers, the rest 25) rendered in {secs:.2} s on {workers} \
         threads = {:.0} documents/s, {pages} pages",
        n / 20,
        n as f64 / secs
    );
    println!(
        "documents: per document (build + render) p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         {:.1} KiB per PDF on average; peak RSS {:.0} MiB",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        l.last().copied().unwrap_or(0.0),
        bytes as f64 / n as f64 / 1024.0,
        peak_rss_mib()
    );
}
