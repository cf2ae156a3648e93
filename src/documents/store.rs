//! The document state the sink keeps in the target, beside v2 and in the same
//! transactions: the v1 rows documents are made of (`cdc_bridge.doc_rows`),
//! which documents read which rows (`cdc_bridge.doc_deps`) and each
//! document's content hash (`cdc_bridge.documents`). Renders read these, never
//! v1, so a replay renders the same bytes. Rows are found by 32-byte hashes of
//! (kind, tenant, table, key), which fit any target's index limits.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::rule::DocumentRule;
use crate::event::{ChangeEvent, Operation, Row, Value};
use crate::sink::apply::position_key;
use crate::sink::target::{Change, ColumnDef, RowWrite, SqlType, SqlValue, TableDef};
use crate::transform::mapping::filter_matches;

pub const STATE_SCHEMA: &str = "cdc_bridge";
pub const STATE_TABLE: &str = "doc_rows";

/// A key value as text: integers in decimal, text as is (how refs find rows).
pub fn key_text(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Text(s) | Value::Enum(s) => s.clone(),
        other => super::model::display(other),
    }
}

/// A row's primary key as text (columns joined by U+001F).
pub fn row_key_text(key: &Row) -> String {
    let parts: Vec<String> = key.0.iter().map(|(_, v)| key_text(v)).collect();
    parts.join("\u{1f}")
}

fn digest(parts: &[&str]) -> [u8; 32] {
    // JSON-quoted parts: no separator can be forged by a value.
    let text = serde_json::to_string(parts).expect("strings serialize");
    Sha256::digest(text.as_bytes()).into()
}

/// Identity of a stored v1 row.
pub fn entry_hash(kind: &str, tenant: &str, table: &str, key: &str) -> [u8; 32] {
    digest(&["row", kind, tenant, table, key])
}

/// What items of the root `root_key` carry, to be found by their root.
pub fn parent_hash(kind: &str, tenant: &str, item_table: &str, root_key: &str) -> [u8; 32] {
    digest(&["parent", kind, tenant, item_table, root_key])
}

/// Identity of one document.
pub fn document_hash(kind: &str, tenant: &str, root_key: &str) -> [u8; 32] {
    digest(&["document", kind, tenant, root_key])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cdc_bridge.doc_rows`, written through the same position guard as v2 rows.
pub fn state_table() -> TableDef {
    let text = |n: u32| SqlType::Text { max_chars: Some(n) };
    let col = |name: &str, ty: SqlType, nullable: bool| ColumnDef {
        name: name.to_owned(),
        ty,
        nullable,
    };
    TableDef {
        schema: STATE_SCHEMA.to_owned(),
        name: STATE_TABLE.to_owned(),
        columns: vec![
            col("entry", SqlType::Bytes { max_len: Some(32) }, false),
            col("parent", SqlType::Bytes { max_len: Some(32) }, true),
            col("kind", text(64), false),
            col("tenant", text(128), false),
            col("tbl", text(128), false),
            col("row_key", text(512), false),
            col("changed_micros", SqlType::BigInt, false),
            col("data", SqlType::Bytes { max_len: None }, false),
        ],
        key: vec![0],
        scope: String::new(),
    }
}

/// The state writes an event makes: for every rule using its table, the row
/// stored (or removed) under that rule's kind.
pub fn state_writes(rules: &[DocumentRule], ev: &ChangeEvent) -> Vec<RowWrite> {
    let mut out = Vec::new();
    if ev.op == Operation::Ddl || ev.key.is_empty() {
        return out;
    }
    let position = position_key(&ev.position);
    let key_of = |row: &Row| -> String {
        let key = Row(ev
            .key
            .0
            .iter()
            .map(|(name, v)| (name.clone(), row.get(name).cloned().unwrap_or_else(|| v.clone())))
            .collect());
        row_key_text(&key)
    };
    for rule in rules {
        if !rule.tables().contains(ev.table.as_str()) {
            continue;
        }
        let item_parent = rule
            .items
            .as_ref()
            .filter(|i| i.table == ev.table)
            .map(|i| i.parent.as_str());
        let before_key = ev.before.as_ref().map(key_of);
        let after = match ev.op {
            Operation::Delete => None,
            _ => ev.after.as_ref(),
        };
        let after_key = after.map(key_of);
        let delete = |key: &str| {
            let entry = entry_hash(&rule.kind, &ev.tenant, &ev.table, key);
            RowWrite {
                row_key: hex(&entry),
                position: position.clone(),
                change: Change::Delete(vec![SqlValue::Bytes(entry.to_vec())]),
            }
        };
        match (&before_key, &after_key) {
            (Some(b), Some(a)) if b != a => out.push(delete(b)),
            (_, None) => out.push(delete(
                &before_key.clone().unwrap_or_else(|| row_key_text(&ev.key)),
            )),
            _ => {}
        }
        if let (Some(row), Some(key)) = (after, &after_key) {
            let entry = entry_hash(&rule.kind, &ev.tenant, &ev.table, key);
            let parent = item_parent
                .and_then(|col| row.get(col))
                .filter(|v| !v.is_null())
                .map(|v| parent_hash(&rule.kind, &ev.tenant, &ev.table, &key_text(v)).to_vec());
            let data = postcard::to_allocvec(row).expect("rows serialize");
            out.push(RowWrite {
                row_key: hex(&entry),
                position: position.clone(),
                change: Change::Upsert(vec![
                    SqlValue::Bytes(entry.to_vec()),
                    parent.map_or(SqlValue::Null, SqlValue::Bytes),
                    SqlValue::Text(rule.kind.clone()),
                    SqlValue::Text(ev.tenant.clone()),
                    SqlValue::Text(ev.table.clone()),
                    SqlValue::Text(key.clone()),
                    SqlValue::Int(ev.commit_time_micros),
                    SqlValue::Bytes(data),
                ]),
            });
        }
    }
    out
}

/// The documents a batch may have changed, before dependencies are looked up.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Dirty {
    /// (rule index, tenant) → root keys changed directly (root or item rows).
    pub roots: BTreeMap<(usize, String), BTreeSet<String>>,
    /// (rule index, tenant) → entry hashes of changed rows other documents may read.
    pub deps: BTreeMap<(usize, String), BTreeSet<[u8; 32]>>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.deps.is_empty()
    }

    /// Notes what `ev` may have changed.
    pub fn mark(&mut self, rules: &[DocumentRule], ev: &ChangeEvent) {
        if ev.op == Operation::Ddl || ev.key.is_empty() {
            return;
        }
        let images: Vec<&Row> = [ev.before.as_ref(), ev.after.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        for (i, rule) in rules.iter().enumerate() {
            let group = (i, ev.tenant.clone());
            if ev.table == rule.root {
                let keys = self.roots.entry(group.clone()).or_default();
                keys.insert(row_key_text(&ev.key));
                for image in &images {
                    if let Some(k) = ev
                        .key
                        .0
                        .iter()
                        .map(|(n, _)| image.get(n))
                        .collect::<Option<Vec<_>>>()
                    {
                        keys.insert(k.into_iter().map(key_text).collect::<Vec<_>>().join("\u{1f}"));
                    }
                }
            }
            if let Some(items) = rule.items.as_ref().filter(|i| i.table == ev.table) {
                for image in &images {
                    if let Some(v) = image.get(&items.parent).filter(|v| !v.is_null()) {
                        self.roots.entry(group.clone()).or_default().insert(key_text(v));
                    }
                }
            }
            let referenced = rule.refs.values().any(|r| r.table == ev.table)
                || rule
                    .items
                    .as_ref()
                    .is_some_and(|i| i.refs.values().any(|r| r.table == ev.table));
            if referenced {
                let deps = self.deps.entry(group).or_default();
                deps.insert(entry_hash(
                    &rule.kind,
                    &ev.tenant,
                    &ev.table,
                    &row_key_text(&ev.key),
                ));
                for image in &images {
                    if let Some(k) = ev
                        .key
                        .0
                        .iter()
                        .map(|(n, _)| image.get(n))
                        .collect::<Option<Vec<_>>>()
                    {
                        let key = k.into_iter().map(key_text).collect::<Vec<_>>().join("\u{1f}");
                        deps.insert(entry_hash(&rule.kind, &ev.tenant, &ev.table, &key));
                    }
                }
            }
        }
    }
}

/// Whether the root row has no document (deleted, or a `skip_if` matches).
pub fn skipped(rule: &DocumentRule, row: &Row) -> bool {
    rule.skip_if.iter().any(|f| filter_matches(f, row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::mapping::Mapping;

    fn rules() -> Vec<DocumentRule> {
        let text = include_str!("../../connectors/pinpoint/mapping.toml");
        Mapping::from_toml_str(text, "mapping.toml")
            .unwrap()
            .file
            .documents
    }

    fn event(table: &str, op: Operation, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            tenant: "t1".into(),
            commit_time_micros: 42,
            ..ChangeEvent::test_row(table, op, before, after)
        }
    }

    fn answer(id: i64, assessment: i64) -> Row {
        Row(vec![
            ("id".into(), Value::Int(id)),
            ("assessment_id".into(), Value::Int(assessment)),
            ("question_id".into(), Value::Int(3)),
        ])
    }

    #[test]
    fn an_answer_moved_between_assessments_dirties_both_and_a_question_dirties_its_readers() {
        let rules = rules();
        let mut dirty = Dirty::default();
        dirty.mark(
            &rules,
            &event(
                "assessment_answers",
                Operation::Update,
                Some(answer(5, 1)),
                Some(answer(5, 2)),
            ),
        );
        let group = (0, "t1".to_owned());
        assert_eq!(dirty.roots[&group], ["1".to_owned(), "2".to_owned()].into());
        assert!(dirty.deps.is_empty());
        let question = Row(vec![
            ("id".into(), Value::Int(3)),
            ("question_text".into(), Value::Text("q".into())),
        ]);
        dirty.mark(
            &rules,
            &event(
                "survey_questions",
                Operation::Update,
                Some(question.clone()),
                Some(question),
            ),
        );
        assert_eq!(
            dirty.deps[&group],
            [entry_hash("Assessment", "t1", "survey_questions", "3")].into()
        );
        // A table no document reads changes nothing.
        let mut other = Dirty::default();
        other.mark(
            &rules,
            &event("notes", Operation::Insert, None, Some(answer(1, 1))),
        );
        assert!(other.is_empty());
    }

    #[test]
    fn state_rows_carry_their_parent_and_deletes_remove_them() {
        let rules = rules();
        let writes = state_writes(
            &rules,
            &event("assessment_answers", Operation::Insert, None, Some(answer(5, 7))),
        );
        assert_eq!(writes.len(), 1);
        let Change::Upsert(values) = &writes[0].change else {
            panic!("an upsert")
        };
        assert_eq!(
            values[0],
            SqlValue::Bytes(entry_hash("Assessment", "t1", "assessment_answers", "5").to_vec())
        );
        assert_eq!(
            values[1],
            SqlValue::Bytes(parent_hash("Assessment", "t1", "assessment_answers", "7").to_vec())
        );
        assert_eq!(values[6], SqlValue::Int(42));
        let row: Row = match &values[7] {
            SqlValue::Bytes(b) => postcard::from_bytes(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(row, answer(5, 7));
        let writes = state_writes(
            &rules,
            &event("assessment_answers", Operation::Delete, Some(answer(5, 7)), None),
        );
        assert!(matches!(
            &writes[..],
            [RowWrite {
                change: Change::Delete(_),
                ..
            }]
        ));
        assert!(state_writes(
            &rules,
            &event("notes", Operation::Insert, None, Some(answer(1, 1)))
        )
        .is_empty());
    }
}
