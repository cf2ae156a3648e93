//! Document rules: which v1 rows make up a document, how they join, how the
//! document reads and where v2 keeps it. They live in the mapping file:
//!
//! ```toml
//! [[documents]]
//! kind = "Assessment"                 # DocumentKind in v2
//! root = "assessments"                # v1 table: one document per row
//! page = "A4"                         # or "Letter"
//! font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"   # the default
//!
//! [documents.refs]                    # one row each, by a column of root or an earlier ref
//! template = { table = "survey_templates", from = "root.template_id" }
//! patient = { table = "patients", from = "root.patient_id" }
//! facility = { table = "facilities", from = "patient.facility_id" }
//!
//! [documents.items]                   # the rows listed: children of the root
//! table = "assessment_answers"
//! parent = "assessment_id"            # their column holding the root's key
//! order_by = ["question.position", "item.id"]
//! refs = { question = { table = "survey_questions", from = "item.question_id" } }
//!
//! [documents.template]
//! title = "{template.name}"
//! header = [["Patient", "{patient.last_name}, {patient.first_name}"], ["Date of birth", "{patient.dob}"]]
//! question = "{question.question_text}"
//! answer = "{item.answer_text}"
//! score = "{item.score}"
//! scores = [["Total score", "{root.total_score}"]]
//!
//! [documents.target]
//! table = "LegacyDocuments"
//! [documents.target.columns]
//! Id = "id"
//! Content = "content"
//! ContentSha256 = "sha256"
//! PatientId = { id_of = "patients", from = "root.patient_id" }
//! IsLegacy = { value = true }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::transform::mapping::Filter;

/// The font used when a rule names none (Debian's `fonts-dejavu-core`).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Answers longer than this many characters are cut, with a visible note.
pub const DEFAULT_MAX_ANSWER_CHARS: usize = 20_000;

/// Relation names every template may use besides the rule's refs.
pub const ROOT: &str = "root";
pub const ITEM: &str = "item";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PageName {
    #[default]
    A4,
    Letter,
}

/// What deleting the root v1 row does to the v2 document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// The v2 row is deleted.
    #[default]
    Delete,
    /// The v2 row stays with `deleted_column` set to true.
    Mark,
}

/// One row of `table` whose key is the value of `from` (`relation.column`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefRule {
    pub table: String,
    pub from: String,
}

/// The rows a document lists: children of the root.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsRule {
    pub table: String,
    /// The item column holding the root row's key.
    pub parent: String,
    /// `relation.column` sort keys (numbers compare as numbers); the item's key breaks ties.
    #[serde(default)]
    pub order_by: Vec<String>,
    /// Rows each item refers to (e.g. its question).
    #[serde(default)]
    pub refs: BTreeMap<String, RefRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRule {
    pub title: String,
    /// `[label, template]` pairs printed at the top of every page.
    #[serde(default)]
    pub header: Vec<[String; 2]>,
    /// Items with different section text start a new section under that heading.
    pub section: Option<String>,
    pub question: String,
    pub answer: String,
    pub score: Option<String>,
    #[serde(default)]
    pub scores: Vec<[String; 2]>,
}

/// What a column of the v2 document table holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocField {
    /// UUIDv5 of the tenant, the kind and the root key.
    Id,
    Tenant,
    Kind,
    /// The root row's v1 key as text.
    SourceKey,
    /// The PDF bytes.
    Content,
    /// SHA-256 of the PDF bytes.
    Sha256,
    /// `application/pdf`.
    ContentType,
    /// v1 commit time of the newest row the document is made of.
    ChangedAt,
    /// When the sink wrote this version (not part of the PDF).
    RenderedAt,
    /// Length of the PDF in bytes.
    Bytes,
    Pages,
    /// Renderer version: a new one may render different bytes.
    Renderer,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DocColumn {
    Field(DocField),
    /// The v2 id of a v1 row (as the mapping derives it): `from` is `relation.column`.
    IdOf {
        id_of: String,
        from: String,
    },
    Value {
        value: toml::Value,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRule {
    /// v2 table in the mapping's `target_schema`.
    pub table: String,
    #[serde(default)]
    pub on_delete: OnDelete,
    /// The boolean column `on_delete = "mark"` sets.
    pub deleted_column: Option<String>,
    pub columns: BTreeMap<String, DocColumn>,
}

impl TargetRule {
    /// The column holding the PDF, if the rule writes one.
    pub fn content_column(&self) -> Option<&str> {
        self.columns
            .iter()
            .find(|(_, c)| matches!(c, DocColumn::Field(DocField::Content)))
            .map(|(name, _)| name.as_str())
    }
}

/// One kind of document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRule {
    pub kind: String,
    /// v1 table: one document per row (its primary key is the document's source key).
    pub root: String,
    /// Root rows that match have no document (as if deleted).
    #[serde(default)]
    pub skip_if: Vec<Filter>,
    #[serde(default)]
    pub page: PageName,
    /// TrueType font file (relative paths are relative to the mapping file).
    pub font: Option<String>,
    #[serde(default = "default_max_answer_chars")]
    pub max_answer_chars: usize,
    #[serde(default)]
    pub refs: BTreeMap<String, RefRule>,
    pub items: Option<ItemsRule>,
    pub template: TemplateRule,
    pub target: TargetRule,
}

fn default_max_answer_chars() -> usize {
    DEFAULT_MAX_ANSWER_CHARS
}

/// A template: literal text and `{relation.column}` fields (`{{`/`}}` for braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field { relation: String, column: String },
}

pub fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => field.push(c),
                        None => return Err(format!("{text:?}: unclosed '{{'")),
                    }
                }
                let (relation, column) = split_field(&field).map_err(|e| format!("{text:?}: {e}"))?;
                if !lit.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut lit)));
                }
                out.push(Piece::Field { relation, column });
            }
            '}' => return Err(format!("{text:?}: unmatched '}}' (write '}}}}' for a brace)")),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

/// `relation.column` → its parts.
pub fn split_field(field: &str) -> Result<(String, String), String> {
    match field.trim().split_once('.') {
        Some((r, c)) if !r.is_empty() && !c.is_empty() => Ok((r.to_owned(), c.to_owned())),
        _ => Err(format!("{field:?} is not relation.column")),
    }
}

/// The ref names in the order they can be resolved (each after what its `from` names).
pub fn resolution_order<'a>(
    refs: &'a BTreeMap<String, RefRule>,
    known: &[&str],
) -> Result<Vec<&'a str>, String> {
    let mut done: BTreeSet<&str> = known.iter().copied().collect();
    let mut order = Vec::new();
    while order.len() < refs.len() {
        let before = order.len();
        for (name, r) in refs {
            if done.contains(name.as_str()) && !known.contains(&name.as_str()) {
                continue;
            }
            let (from, _) = split_field(&r.from).map_err(|e| format!("refs.{name}.from: {e}"))?;
            if done.contains(from.as_str()) {
                done.insert(name);
                order.push(name.as_str());
            }
        }
        if order.len() == before {
            let stuck: Vec<&str> = refs
                .keys()
                .map(String::as_str)
                .filter(|n| !order.contains(n))
                .collect();
            return Err(format!(
                "refs {stuck:?} refer to relations that are not defined before them (or to each other); \
                 known: {done:?}"
            ));
        }
    }
    Ok(order)
}

impl DocumentRule {
    /// Every relation name a template of this rule may use.
    fn relations(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = [ROOT].into();
        names.extend(self.refs.keys().map(String::as_str));
        if let Some(items) = &self.items {
            names.insert(ITEM);
            names.extend(items.refs.keys().map(String::as_str));
        }
        names
    }

    /// Every v1 table the document is made of.
    pub fn tables(&self) -> BTreeSet<&str> {
        let mut t: BTreeSet<&str> = [self.root.as_str()].into();
        t.extend(self.refs.values().map(|r| r.table.as_str()));
        if let Some(items) = &self.items {
            t.insert(items.table.as_str());
            t.extend(items.refs.values().map(|r| r.table.as_str()));
        }
        t
    }

    /// Problems with the rule on its own, each naming where.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut issues = Vec::new();
        if self.kind.trim().is_empty() {
            issues.push(format!("{at}.kind: empty"));
        }
        if self.max_answer_chars == 0 {
            issues.push(format!("{at}.max_answer_chars: must be at least 1"));
        }
        if let Err(e) = resolution_order(&self.refs, &[ROOT]) {
            issues.push(format!("{at}.refs: {e}"));
        }
        let relations = self.relations();
        for reserved in [ROOT, ITEM] {
            if self.refs.contains_key(reserved)
                || self.items.as_ref().is_some_and(|i| i.refs.contains_key(reserved))
            {
                issues.push(format!("{at}: a ref may not be named {reserved:?}"));
            }
        }
        if let Some(items) = &self.items {
            let mut known: Vec<&str> = vec![ROOT, ITEM];
            known.extend(self.refs.keys().map(String::as_str));
            if let Err(e) = resolution_order(&items.refs, &known) {
                issues.push(format!("{at}.items.refs: {e}"));
            }
            for name in items.refs.keys() {
                if self.refs.contains_key(name) {
                    issues.push(format!(
                        "{at}.items.refs.{name}: the name is already a ref of the root"
                    ));
                }
            }
            for (i, o) in items.order_by.iter().enumerate() {
                match split_field(o) {
                    Ok((r, _)) if relations.contains(r.as_str()) => {}
                    Ok((r, _)) => issues.push(format!("{at}.items.order_by[{i}]: unknown relation {r:?}")),
                    Err(e) => issues.push(format!("{at}.items.order_by[{i}]: {e}")),
                }
            }
        }
        let t = &self.template;
        let mut templates: Vec<(String, &str)> = vec![
            ("template.title".into(), &t.title),
            ("template.question".into(), &t.question),
            ("template.answer".into(), &t.answer),
        ];
        if let Some(s) = &t.section {
            templates.push(("template.section".into(), s));
        }
        if let Some(s) = &t.score {
            templates.push(("template.score".into(), s));
        }
        for (i, [_, v]) in t.header.iter().enumerate() {
            templates.push((format!("template.header[{i}]"), v));
        }
        for (i, [_, v]) in t.scores.iter().enumerate() {
            templates.push((format!("template.scores[{i}]"), v));
        }
        let item_only = self.item_relations();
        for (where_, text) in templates {
            match parse_template(text) {
                Ok(pieces) => {
                    for p in pieces {
                        if let Piece::Field { relation, .. } = p {
                            if !relations.contains(relation.as_str()) {
                                issues.push(format!("{at}.{where_}: unknown relation {relation:?}"));
                            } else if item_only.contains(relation.as_str())
                                && !matches!(
                                    where_.as_str(),
                                    "template.question"
                                        | "template.answer"
                                        | "template.score"
                                        | "template.section"
                                )
                            {
                                issues.push(format!(
                                    "{at}.{where_}: {relation:?} is per item; only question, answer, score and \
                                     section may use it"
                                ));
                            }
                        }
                    }
                }
                Err(e) => issues.push(format!("{at}.{where_}: {e}")),
            }
        }
        let cols = &self.target.columns;
        if !cols.values().any(|c| *c == DocColumn::Field(DocField::Id)) {
            issues.push(format!(
                "{at}.target.columns: one column must be \"id\" (the v2 key)"
            ));
        }
        if !cols.values().any(|c| *c == DocColumn::Field(DocField::Content)) {
            issues.push(format!(
                "{at}.target.columns: one column must be \"content\" (the PDF)"
            ));
        }
        for (name, c) in cols {
            if let DocColumn::IdOf { from, .. } = c {
                match split_field(from) {
                    Ok((r, _)) if relations.contains(r.as_str()) && !item_only.contains(r.as_str()) => {}
                    Ok((r, _)) => issues.push(format!(
                        "{at}.target.columns.{name}.from: unknown or per-item relation {r:?}"
                    )),
                    Err(e) => issues.push(format!("{at}.target.columns.{name}.from: {e}")),
                }
            }
        }
        if self.target.on_delete == OnDelete::Mark && self.target.deleted_column.is_none() {
            issues.push(format!("{at}.target: on_delete = \"mark\" needs deleted_column"));
        }
        issues
    }

    /// The v1 table a relation name stands for.
    pub fn relation_table(&self, relation: &str) -> Option<&str> {
        match relation {
            ROOT => Some(self.root.as_str()),
            ITEM => self.items.as_ref().map(|i| i.table.as_str()),
            name => self
                .refs
                .get(name)
                .or_else(|| self.items.as_ref().and_then(|i| i.refs.get(name)))
                .map(|r| r.table.as_str()),
        }
    }

    /// Every v1 column the rule reads, as (where, relation, column).
    pub fn fields(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (name, r) in &self.refs {
            if let Ok((rel, col)) = split_field(&r.from) {
                out.push((format!("refs.{name}.from"), rel, col));
            }
        }
        if let Some(items) = &self.items {
            out.push(("items.parent".into(), ITEM.into(), items.parent.clone()));
            for (name, r) in &items.refs {
                if let Ok((rel, col)) = split_field(&r.from) {
                    out.push((format!("items.refs.{name}.from"), rel, col));
                }
            }
            for (i, o) in items.order_by.iter().enumerate() {
                if let Ok((rel, col)) = split_field(o) {
                    out.push((format!("items.order_by[{i}]"), rel, col));
                }
            }
        }
        for (name, c) in &self.target.columns {
            if let DocColumn::IdOf { from, .. } = c {
                if let Ok((rel, col)) = split_field(from) {
                    out.push((format!("target.columns.{name}.from"), rel, col));
                }
            }
        }
        let t = &self.template;
        let mut templates: Vec<(String, &str)> = vec![
            ("template.title".into(), &t.title),
            ("template.question".into(), &t.question),
            ("template.answer".into(), &t.answer),
        ];
        templates.extend(t.section.as_deref().map(|s| ("template.section".to_owned(), s)));
        templates.extend(t.score.as_deref().map(|s| ("template.score".to_owned(), s)));
        for (i, [_, v]) in t.header.iter().enumerate() {
            templates.push((format!("template.header[{i}]"), v));
        }
        for (i, [_, v]) in t.scores.iter().enumerate() {
            templates.push((format!("template.scores[{i}]"), v));
        }
        for (at, text) in templates {
            for p in parse_template(text).unwrap_or_default() {
                if let Piece::Field { relation, column } = p {
                    out.push((at.clone(), relation, column));
                }
            }
        }
        out
    }

    /// Relations that exist once per item.
    fn item_relations(&self) -> BTreeSet<&str> {
        let mut s = BTreeSet::new();
        if let Some(items) = &self.items {
            s.insert(ITEM);
            s.extend(items.refs.keys().map(String::as_str));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_fields_and_escapes() {
        assert_eq!(
            parse_template("{patient.last_name}, {{x}} {root.id}").unwrap(),
            vec![
                Piece::Field {
                    relation: "patient".into(),
                    column: "last_name".into()
                },
                Piece::Text(", {x} ".into()),
                Piece::Field {
                    relation: "root".into(),
                    column: "id".into()
                },
            ]
        );
        assert!(parse_template("{patient").unwrap_err().contains("unclosed"));
        assert!(parse_template("{patient}")
            .unwrap_err()
            .contains("relation.column"));
        assert!(parse_template("a } b").unwrap_err().contains("unmatched"));
    }

    fn r(table: &str, from: &str) -> RefRule {
        RefRule {
            table: table.into(),
            from: from.into(),
        }
    }

    #[test]
    fn refs_resolve_after_what_they_refer_to_and_cycles_are_named() {
        let mut refs = BTreeMap::new();
        refs.insert("facility".to_owned(), r("facilities", "patient.facility_id"));
        refs.insert("patient".to_owned(), r("patients", "root.patient_id"));
        assert_eq!(
            resolution_order(&refs, &[ROOT]).unwrap(),
            vec!["patient", "facility"]
        );
        refs.insert("a".to_owned(), r("x", "b.id"));
        refs.insert("b".to_owned(), r("y", "a.id"));
        let e = resolution_order(&refs, &[ROOT]).unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("\"b\""), "{e}");
    }
}
