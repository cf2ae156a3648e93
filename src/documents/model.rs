//! From the stored v1 rows of one document to what the renderer prints: pure,
//! so the same rows always give the same document (invariant 8).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::render::{Document, Item, Section};
use super::rule::{self, parse_template, DocumentRule, Piece, ITEM, ROOT};
use super::store::{entry_hash, key_text};
use crate::event::{Row, Value};

/// A stored v1 row: its table's key as text, the v1 commit time of its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub key: String,
    pub changed_micros: i64,
    pub row: Row,
}

/// The stored rows one document's rendering may read, found by table and key.
#[derive(Debug, Default)]
pub struct Rows {
    /// (table, key) → row.
    pub by_key: HashMap<(String, String), StateRow>,
    /// Root key → its items.
    pub items: HashMap<String, Vec<StateRow>>,
}

/// A document ready to render, with what it was made of.
#[derive(Debug, Clone)]
pub struct Built {
    pub document: Document,
    /// Entry hashes of every referenced row (found or not): a change to one
    /// of them re-renders this document.
    pub deps: BTreeSet<[u8; 32]>,
    /// Newest v1 change among the rows used.
    pub changed_micros: i64,
    /// Values of root and root refs' columns (for v2 columns such as a patient id).
    pub scope: BTreeMap<String, Option<Row>>,
}

/// The text a value prints as in a document.
pub fn display(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Date(d) if d.is_zero() => String::new(),
        Value::Date(d) => d.to_string(),
        Value::DateTime(dt) if dt.date.is_zero() => String::new(),
        Value::DateTime(dt) => format!("{} {:02}:{:02}", dt.date, dt.hour, dt.minute),
        Value::Timestamp { unix_seconds, .. } => utc_text(*unix_seconds * 1_000_000),
        Value::Time(t) => t.to_string(),
        Value::Year(y) => y.to_string(),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => s.clone(),
        Value::TextBytes { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
        Value::Bytes(b) => format!("[{} bytes]", b.len()),
        Value::Set(members) => members.join(", "),
        Value::Bit { bits, .. } => bits.to_string(),
        Value::Geometry(_) => "[geometry]".to_owned(),
    }
}

/// `2026-11-25 10:00:00 UTC` for microseconds since the epoch.
pub fn utc_text(micros: i64) -> String {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(ts) => format!("{} UTC", ts.strftime("%Y-%m-%d %H:%M:%S")),
        Err(_) => "unknown time".to_owned(),
    }
}

/// Rows in scope by relation name (`None`: looked up, not found).
type Scope = BTreeMap<String, Option<Row>>;

/// What building one document gathers: its dependencies, newest change, notes.
struct Ctx<'a> {
    rule: &'a DocumentRule,
    tenant: &'a str,
    rows: &'a Rows,
    deps: BTreeSet<[u8; 32]>,
    changed: i64,
    notes: BTreeSet<String>,
}

impl Ctx<'_> {
    /// Fills a template from the rows in scope, noting columns the rows lack.
    fn fill(&mut self, template: &str, scope: &Scope) -> String {
        let Ok(pieces) = parse_template(template) else {
            return String::new();
        };
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Text(t) => out.push_str(&t),
                Piece::Field { relation, column } => {
                    // A missing row is noted where it is looked up.
                    if let Some(Some(row)) = scope.get(&relation) {
                        match row.get(&column) {
                            Some(v) => out.push_str(&display(v)),
                            None => {
                                self.notes.insert(format!(
                                    "The template names {relation}.{column}, a column the v1 row does not have."
                                ));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Looks up the ref `name` from the rows in scope; records its dependency.
    fn resolve(&mut self, name: &str, r: &rule::RefRule, scope: &mut Scope) {
        let (from, column) = rule::split_field(&r.from).unwrap_or_default();
        let value = scope
            .get(&from)
            .and_then(|row| row.as_ref())
            .and_then(|row| row.get(&column))
            .filter(|v| !v.is_null());
        let Some(value) = value else {
            scope.insert(name.to_owned(), None);
            return;
        };
        let key = key_text(value);
        self.deps
            .insert(entry_hash(&self.rule.kind, self.tenant, &r.table, &key));
        match self.rows.by_key.get(&(r.table.clone(), key.clone())) {
            Some(found) => {
                self.changed = self.changed.max(found.changed_micros);
                scope.insert(name.to_owned(), Some(found.row.clone()));
            }
            None => {
                self.notes.insert(format!(
                    "{name}: {} {key} (from {}) does not exist in v1.",
                    r.table, r.from
                ));
                scope.insert(name.to_owned(), None);
            }
        }
    }
}

/// One item with its sort keys and the rows in its scope.
struct Listed {
    keys: Vec<SortKey>,
    tie: SortKey,
    key: String,
    scope: Scope,
}

/// A sort key: numbers compare as numbers, before text; NULL first.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum SortKey {
    Null,
    Num(f64),
    Text(String),
}

fn sort_key(v: Option<&Value>) -> SortKey {
    match v {
        None | Some(Value::Null) => SortKey::Null,
        Some(Value::Int(i)) => SortKey::Num(*i as f64),
        Some(Value::UInt(u)) => SortKey::Num(*u as f64),
        Some(Value::Float(f)) => SortKey::Num(f64::from(*f)),
        Some(Value::Double(d)) => SortKey::Num(*d),
        Some(Value::Decimal(d)) => d
            .as_str()
            .parse()
            .map_or(SortKey::Text(d.to_string()), SortKey::Num),
        Some(other) => SortKey::Text(display(other)),
    }
}

fn compare_keys(a: &[SortKey], b: &[SortKey]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) | None => continue,
            Some(o) => return o,
        }
    }
    Ordering::Equal
}

/// The document of root row `root` (which must exist and not be skipped).
pub fn build(rule: &DocumentRule, tenant: &str, root: &StateRow, rows: &Rows) -> Built {
    let mut ctx = Ctx {
        rule,
        tenant,
        rows,
        deps: BTreeSet::new(),
        changed: root.changed_micros,
        notes: BTreeSet::new(),
    };
    let mut scope = Scope::new();
    scope.insert(ROOT.to_owned(), Some(root.row.clone()));
    for name in rule::resolution_order(&rule.refs, &[ROOT]).unwrap_or_default() {
        ctx.resolve(name, &rule.refs[name], &mut scope);
    }
    let mut sections: Vec<Section> = Vec::new();
    if let Some(items_rule) = &rule.items {
        let mut known: Vec<&str> = vec![ROOT, ITEM];
        known.extend(rule.refs.keys().map(String::as_str));
        let item_order = rule::resolution_order(&items_rule.refs, &known).unwrap_or_default();
        let mut items: Vec<Listed> = Vec::new();
        for item in rows.items.get(&root.key).map(Vec::as_slice).unwrap_or_default() {
            ctx.changed = ctx.changed.max(item.changed_micros);
            let mut s = scope.clone();
            s.insert(ITEM.to_owned(), Some(item.row.clone()));
            for name in &item_order {
                ctx.resolve(name, &items_rule.refs[*name], &mut s);
            }
            let keys: Vec<SortKey> = items_rule
                .order_by
                .iter()
                .map(|o| {
                    let (rel, col) = rule::split_field(o).unwrap_or_default();
                    sort_key(s.get(&rel).and_then(|r| r.as_ref()).and_then(|r| r.get(&col)))
                })
                .collect();
            let tie = item
                .key
                .parse::<f64>()
                .map_or_else(|_| SortKey::Text(item.key.clone()), SortKey::Num);
            items.push(Listed {
                keys,
                tie,
                key: item.key.clone(),
                scope: s,
            });
        }
        items.sort_by(|a, b| {
            compare_keys(&a.keys, &b.keys)
                .then_with(|| a.tie.partial_cmp(&b.tie).unwrap_or(Ordering::Equal))
                .then_with(|| a.key.cmp(&b.key))
        });
        let t = &rule.template;
        for (n, listed) in items.iter().enumerate() {
            let s = &listed.scope;
            let heading = t
                .section
                .as_ref()
                .map(|sec| ctx.fill(sec, s))
                .filter(|h| !h.is_empty());
            let mut question = ctx.fill(&t.question, s);
            let answer = ctx.fill(&t.answer, s);
            let score = t
                .score
                .as_ref()
                .map(|sc| ctx.fill(sc, s))
                .filter(|x| !x.is_empty());
            let missing: Vec<&str> = items_rule
                .refs
                .keys()
                .filter(|name| matches!(s.get(*name), Some(None)))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                question = format!(
                    "[{} of {} {} not found in v1] {question}",
                    missing.join(", "),
                    items_rule.table,
                    listed.key
                );
            }
            let new_section = sections.last().is_none_or(|last| last.heading != heading);
            if new_section {
                sections.push(Section {
                    heading: heading.clone(),
                    items: Vec::new(),
                });
            }
            sections.last_mut().expect("pushed above").items.push(Item {
                label: format!("{}.", n + 1),
                question,
                answer,
                score,
            });
        }
    }
    let t = &rule.template;
    let title = ctx.fill(&t.title, &scope);
    let header: Vec<(String, String)> = t
        .header
        .iter()
        .map(|[label, v]| (label.clone(), ctx.fill(v, &scope)))
        .collect();
    let scores: Vec<(String, String)> = t
        .scores
        .iter()
        .map(|[label, v]| (label.clone(), ctx.fill(v, &scope)))
        .collect();
    let footer = format!(
        "Source: v1 {} {} · v1 change {}",
        rule.root,
        root.key,
        utc_text(ctx.changed)
    );
    Built {
        document: Document {
            title: if title.trim().is_empty() {
                rule.kind.clone()
            } else {
                title
            },
            header,
            sections,
            scores,
            notes: ctx.notes.into_iter().collect(),
            footer,
        },
        deps: ctx.deps,
        changed_micros: ctx.changed,
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::mapping::Mapping;

    fn rule() -> DocumentRule {
        let text = include_str!("../../connectors/pinpoint/mapping.toml");
        Mapping::from_toml_str(text, "mapping.toml")
            .unwrap()
            .file
            .documents[0]
            .clone()
    }

    fn row(key: i64, changed: i64, cols: &[(&str, Value)]) -> StateRow {
        StateRow {
            key: key.to_string(),
            changed_micros: changed,
            row: Row(cols.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn items_follow_the_question_order_and_missing_rows_become_notes_and_dependencies() {
        let rule = rule();
        let mut rows = Rows::default();
        rows.by_key.insert(
            ("survey_templates".into(), "1".into()),
            row(1, 5, &[("name", text("PHQ")), ("version", Value::Int(2))]),
        );
        for (id, pos, q) in [(1, 2, "Second"), (2, 1, "First")] {
            rows.by_key.insert(
                ("survey_questions".into(), id.to_string()),
                row(
                    id,
                    7,
                    &[("position", Value::Int(pos)), ("question_text", text(q))],
                ),
            );
        }
        let answer = |id: i64, q: i64, a: &str| {
            row(
                id,
                9,
                &[
                    ("assessment_id", Value::Int(10)),
                    ("question_id", Value::Int(q)),
                    ("answer_text", text(a)),
                    ("score", Value::Null),
                ],
            )
        };
        rows.items.insert(
            "10".into(),
            vec![answer(1, 1, "b"), answer(2, 2, "a"), answer(3, 99, "orphan")],
        );
        let root = row(
            10,
            3,
            &[
                ("template_id", Value::Int(1)),
                ("patient_id", Value::Int(4)),
                ("clinician_id", Value::Null),
                ("total_score", Value::Null),
                ("status", text("C")),
                ("started_at", Value::Null),
            ],
        );
        let built = build(&rule, "t1", &root, &rows);
        let items: Vec<(&str, &str)> = built.document.sections[0]
            .items
            .iter()
            .map(|i| (i.question.as_str(), i.answer.as_str()))
            .collect();
        // Position 1, position 2, then the answer whose question is missing (NULL sorts first
        // among keys only when present: it has no position, so it sorts before).
        assert_eq!(
            items,
            [
                ("[question of assessment_answers 3 not found in v1] ", "orphan"),
                ("First", "a"),
                ("Second", "b")
            ]
        );
        assert!(built
            .document
            .notes
            .iter()
            .any(|n| n.contains("patients 4") && n.contains("does not exist")));
        assert!(built
            .document
            .notes
            .iter()
            .any(|n| n.contains("survey_questions 99")));
        // The missing patient and question are dependencies: their arrival re-renders.
        for (table, key) in [
            ("patients", "4"),
            ("survey_questions", "99"),
            ("survey_templates", "1"),
        ] {
            assert!(
                built.deps.contains(&entry_hash("Assessment", "t1", table, key)),
                "{table} {key}"
            );
        }
        assert_eq!(built.changed_micros, 9, "the newest contributing change");
        assert_eq!(built.document.title, "PHQ");
        assert!(built
            .document
            .footer
            .starts_with("Source: v1 assessments 10 · v1 change 1970-01-01"));
    }
}
