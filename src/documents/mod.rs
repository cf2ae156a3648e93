//! Documents: the v1 assessments and surveys regenerated as PDFs in v2.
//!
//! A document rule (in the mapping file, see [`rule`]) names the v1 tables a
//! document is made of. The sink keeps those rows in the target
//! ([`store`]) in the same transaction as the v2 rows; a change to any of them
//! marks the documents that read it dirty, and each dirty document is
//! re-rendered once per batch, after the batch's rows, before its offsets
//! commit: a crash leaves either the old rows and documents or the new ones.
//! Rendering ([`render`]) is deterministic; a document whose hash did not
//! change is not rewritten.

pub mod model;
pub mod render;
pub mod rule;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use uuid::Uuid;

use self::model::{Rows, StateRow};
use self::render::{Font, PageSize, RenderOptions};
use self::rule::{DocColumn, DocField, DocumentRule, OnDelete, ITEM, ROOT};
use self::store::{document_hash, entry_hash, key_text, parent_hash, Dirty};
use crate::event::{ChangeEvent, Row};
use crate::ops::metrics as m;
use crate::sink::apply::row_key;
use crate::sink::target::{
    Change, DeferredDoc, DocRecord, RowWrite, SqlValue, StoredRow, TableDef, Target, TargetError,
};
use crate::transform::keys::v2_id;
use crate::transform::mapping::Mapping;

/// Changes whenever the same input could render different bytes.
pub const RENDERER_VERSION: &str = concat!("cdc-bridge-pdf/", env!("CARGO_PKG_VERSION"), "/1");
pub const CONTENT_TYPE: &str = "application/pdf";
/// Crash tests: `before_documents` aborts the sink after a batch's rows are
/// written and before its documents render; `after_deferring` aborts it
/// right after a batch that deferred documents committed.
pub const FAILPOINT_ENV: &str = "CDC_BRIDGE_FAILPOINT";

/// The documents of a mapping, ready to keep current.
pub struct Documents {
    rules: Vec<DocumentRule>,
    fonts: Vec<Arc<Font>>,
    namespace: Uuid,
    target_schema: String,
    state: Arc<TableDef>,
    /// Per rule: the v2 table's written columns, and for `on_delete = "mark"`
    /// the id and deleted columns.
    targets: Vec<Option<Arc<TableDef>>>,
    marks: Vec<Option<Arc<TableDef>>>,
    workers: usize,
    crash_before_render: bool,
    crash_after_deferring: bool,
}

/// What one batch did to documents.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub rendered: usize,
    pub unchanged: usize,
    /// Of those rendered: unchanged by the bookkeeping, rewritten because v2's
    /// copy was missing or differed.
    pub repaired: usize,
    /// Left for after their tenant's snapshot.
    pub deferred: usize,
    pub deleted: usize,
}

impl Documents {
    /// The mapping's document rules with their fonts loaded; `None` without rules.
    pub fn load(mapping: &Mapping, mapping_path: &Path) -> Result<Option<Documents>, String> {
        let rules = mapping.file.documents.clone();
        if rules.is_empty() {
            return Ok(None);
        }
        let base = mapping_path.parent().unwrap_or(Path::new("."));
        let mut loaded: HashMap<std::path::PathBuf, Arc<Font>> = HashMap::new();
        let mut fonts = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let path = base.join(r.font.as_deref().unwrap_or(rule::DEFAULT_FONT));
            let font = match loaded.get(&path) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(
                        Font::load(&path).map_err(|e| format!("documents[{i}] ({}): font: {e}", r.kind))?,
                    );
                    loaded.insert(path, f.clone());
                    f
                }
            };
            fonts.push(font);
        }
        let n = rules.len();
        Ok(Some(Documents {
            rules,
            fonts,
            namespace: mapping.file.namespace,
            target_schema: mapping.file.target_schema.clone(),
            state: Arc::new(store::state_table()),
            targets: vec![None; n],
            marks: vec![None; n],
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            crash_before_render: std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == "before_documents"),
            crash_after_deferring: std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == "after_deferring"),
        }))
    }

    pub fn rules(&self) -> &[DocumentRule] {
        &self.rules
    }

    /// The v2 columns rule `i` writes, as the catalog of its v2 table has them.
    pub fn target_def(&self, i: usize, catalog: &TableDef) -> Result<TableDef, String> {
        let r = &self.rules[i];
        projection(r, catalog, r.target.columns.keys().map(String::as_str))
    }

    /// The v2 rows of rule `i`'s documents of `tenant` built from `rows` (every
    /// root among them that `skip_if` keeps) and rendered, in `def`'s column
    /// order, with their root keys; the render time reads as 0. For `verify`.
    pub async fn expected_rows(
        &self,
        i: usize,
        tenant: &str,
        rows: &Rows,
        def: &TableDef,
    ) -> Result<Vec<(String, Vec<SqlValue>)>, TargetError> {
        let rule = &self.rules[i];
        let mut jobs: Vec<(String, model::Built)> = rows
            .by_key
            .iter()
            .filter(|((table, _), root)| *table == rule.root && !store::skipped(rule, &root.row))
            .map(|((_, key), root)| (key.clone(), model::build(rule, tenant, root, rows)))
            .collect();
        jobs.sort_by(|a, b| a.0.cmp(&b.0));
        let rendered = self.render_all(i, jobs).await?;
        Ok(rendered
            .into_iter()
            .map(|(key, built, pdf)| {
                let values = self.values(rule, def, tenant, &key, &built, &pdf, 0);
                (key, values)
            })
            .collect())
    }

    /// Reads the v2 document tables and prepares their writes (outside any batch).
    pub async fn prepare<T: Target>(&mut self, target: &mut T) -> Result<(), TargetError> {
        target.ensure_table(&self.state).await?;
        for (i, r) in self.rules.iter().enumerate() {
            let catalog = target
                .describe_table(&self.target_schema, &r.target.table)
                .await?
                .ok_or_else(|| {
                    TargetError::fatal(format!(
                        "documents[{i}] ({}): v2 table {}.{} does not exist in the target",
                        r.kind, self.target_schema, r.target.table
                    ))
                })?;
            let def = projection(r, &catalog, r.target.columns.keys().map(String::as_str))
                .map_err(|e| TargetError::fatal(format!("documents[{i}] ({}): {e}", r.kind)))?;
            target.ensure_table(&def).await?;
            self.targets[i] = Some(Arc::new(def));
            if r.target.on_delete == OnDelete::Mark {
                let id = id_column(r);
                let deleted = r.target.deleted_column.clone().unwrap_or_default();
                let def = projection(r, &catalog, [id, deleted.as_str()].into_iter())
                    .map_err(|e| TargetError::fatal(format!("documents[{i}] ({}): {e}", r.kind)))?;
                target.ensure_table(&def).await?;
                self.marks[i] = Some(Arc::new(def));
            }
        }
        Ok(())
    }

    /// The state table and the writes `ev` makes to it.
    pub fn state_writes(&self, ev: &ChangeEvent) -> Option<(Arc<TableDef>, Vec<RowWrite>)> {
        let writes = store::state_writes(&self.rules, ev);
        (!writes.is_empty()).then(|| (self.state.clone(), writes))
    }

    pub fn mark(&self, dirty: &mut Dirty, ev: &ChangeEvent) {
        dirty.mark(&self.rules, ev);
    }

    /// Called once a batch committed with `deferred` documents deferred (the
    /// `after_deferring` failpoint).
    pub fn committed(&self, deferred: usize) {
        if self.crash_after_deferring && deferred > 0 {
            tracing::error!("failpoint after_deferring: aborting");
            std::process::abort();
        }
    }

    /// Re-renders the dirty documents inside the open batch transaction (the
    /// batch's rows already written): reads the stored rows, renders on the
    /// worker pool, writes changed documents, records hashes and dependencies.
    /// `positions` holds each tenant's last position in the batch.
    ///
    /// While a tenant's snapshot is being copied (`snapshotting`: the batch
    /// holds only snapshot reads of it) its documents are not rendered but
    /// recorded as deferred: a snapshot brings a document's tables one after
    /// another, and each would re-render it. The deferred documents of the
    /// tenants in `streaming` (a change or a watermark in the batch: their
    /// snapshot has ended) are rendered with the dirty ones, at most
    /// `flush_limit` of them per batch.
    pub async fn apply<T: Target>(
        &self,
        t: &mut T,
        dirty: Dirty,
        positions: &HashMap<String, Vec<u8>>,
        snapshotting: &BTreeSet<&str>,
        streaming: &[&str],
        flush_limit: usize,
    ) -> Result<Outcome, TargetError> {
        if self.crash_before_render && !dirty.is_empty() {
            tracing::error!("failpoint before_documents: aborting");
            std::process::abort();
        }
        let mut outcome = Outcome::default();
        let mut groups: BTreeMap<(usize, String), BTreeSet<String>> = dirty.roots;
        for (group, deps) in dirty.deps {
            let deps: Vec<Vec<u8>> = deps.iter().map(|d| d.to_vec()).collect();
            let roots = t.doc_dependents(&deps).await?;
            groups.entry(group).or_default().extend(roots);
        }
        let mut deferred = Vec::new();
        groups.retain(|(i, tenant), roots| {
            if !snapshotting.contains(tenant.as_str()) {
                return true;
            }
            let kind = &self.rules[*i].kind;
            deferred.extend(roots.iter().map(|root| DeferredDoc {
                id: document_hash(kind, tenant, root).to_vec(),
                kind: kind.clone(),
                tenant: tenant.clone(),
                root_key: root.clone(),
            }));
            false
        });
        outcome.deferred = deferred.len();
        t.defer_documents(&deferred).await?;
        for d in t.take_deferred(streaming, flush_limit).await? {
            match self.rules.iter().position(|r| r.kind == d.kind) {
                Some(i) => {
                    groups.entry((i, d.tenant)).or_default().insert(d.root_key);
                }
                // The mapping no longer has the kind: nothing to render.
                None => {
                    tracing::warn!(kind = %d.kind, tenant = %d.tenant, "deferred document of a kind no longer in the mapping dropped")
                }
            }
        }
        if outcome.deferred > 0 {
            metrics::counter!(m::DOCUMENTS_DEFERRED).increment(outcome.deferred as u64);
        }
        for ((i, tenant), roots) in groups {
            if roots.is_empty() {
                continue;
            }
            let position = positions.get(&tenant).cloned().unwrap_or_default();
            let o = self.apply_group(t, i, &tenant, roots, position).await?;
            outcome.rendered += o.rendered;
            outcome.unchanged += o.unchanged;
            outcome.repaired += o.repaired;
            outcome.deleted += o.deleted;
        }
        Ok(outcome)
    }

    async fn apply_group<T: Target>(
        &self,
        t: &mut T,
        i: usize,
        tenant: &str,
        roots: BTreeSet<String>,
        position: Vec<u8>,
    ) -> Result<Outcome, TargetError> {
        let rule = &self.rules[i];
        let kind = rule.kind.as_str();
        let rows = load(t, rule, tenant, &roots).await?;
        // Build each present root's document; the others are gone.
        let mut jobs = Vec::new();
        let mut gone = Vec::new();
        for key in &roots {
            match rows.by_key.get(&(rule.root.clone(), key.clone())) {
                Some(root) if !store::skipped(rule, &root.row) => {
                    jobs.push((key.clone(), model::build(rule, tenant, root, &rows)));
                }
                _ => gone.push(key.clone()),
            }
        }
        let ids: Vec<Vec<u8>> = roots
            .iter()
            .map(|k| document_hash(kind, tenant, k).to_vec())
            .collect();
        let stored = t.doc_hashes(&ids).await?;
        let rendered = self.render_all(i, jobs).await?;
        let def = self.targets[i]
            .clone()
            .ok_or_else(|| TargetError::fatal(format!("documents of kind {kind} written before prepared")))?;
        let now = crate::event::now_micros();
        let mut outcome = Outcome::default();
        let docs: Vec<Vec<u8>> = rendered
            .iter()
            .map(|(key, _, _)| document_hash(kind, tenant, key).to_vec())
            .collect();
        let mut unchanged: Vec<bool> = rendered
            .iter()
            .zip(&docs)
            .map(|((_, _, pdf), doc)| {
                stored
                    .get(doc)
                    .is_some_and(|h| h.as_slice() == pdf.sha256.as_slice())
            })
            .collect();
        // Unchanged by the bookkeeping: still rewritten when v2's copy is
        // missing or differs (removed or altered there), so a replay or a
        // re-snapshot repairs it.
        if let Some(content) = rule.target.content_column() {
            let (at, ids): (Vec<usize>, Vec<SqlValue>) = rendered
                .iter()
                .enumerate()
                .filter(|(n, _)| unchanged[*n])
                .map(|(n, (key, _, _))| (n, self.id(rule, tenant, key)))
                .unzip();
            for (n, hash) in at.into_iter().zip(t.content_hashes(&def, content, &ids).await?) {
                if hash.as_deref() != Some(rendered[n].2.sha256.as_slice()) {
                    unchanged[n] = false;
                    outcome.repaired += 1;
                }
            }
        }
        let mut writes = Vec::new();
        let mut records = Vec::new();
        for ((n, (key, built, pdf)), doc) in rendered.into_iter().enumerate().zip(docs) {
            if unchanged[n] {
                outcome.unchanged += 1;
            } else {
                outcome.rendered += 1;
                let values = self.values(rule, &def, tenant, &key, &built, &pdf, now);
                let id = self.id(rule, tenant, &key);
                writes.push(RowWrite {
                    row_key: row_key(&[&id]),
                    position: position.clone(),
                    change: Change::Upsert(values),
                });
            }
            records.push(DocRecord {
                id: doc,
                kind: kind.to_owned(),
                tenant: tenant.to_owned(),
                root_key: key,
                sha256: Some(pdf.sha256.to_vec()),
                pages: pdf.pages as i32,
                deps: built.deps.iter().map(|d| d.to_vec()).collect(),
            });
        }
        let mut marks = Vec::new();
        for key in gone {
            let doc = document_hash(kind, tenant, &key).to_vec();
            if !stored.contains_key(&doc) {
                continue;
            }
            outcome.deleted += 1;
            let id = self.id(rule, tenant, &key);
            match rule.target.on_delete {
                OnDelete::Delete => writes.push(RowWrite {
                    row_key: row_key(&[&id]),
                    position: position.clone(),
                    change: Change::Delete(vec![id]),
                }),
                OnDelete::Mark => marks.push(RowWrite {
                    row_key: row_key(&[&id]),
                    position: position.clone(),
                    change: Change::Upsert(vec![id, SqlValue::Bool(true)]),
                }),
            }
            records.push(DocRecord {
                id: doc,
                kind: kind.to_owned(),
                tenant: tenant.to_owned(),
                root_key: key,
                sha256: None,
                pages: 0,
                deps: Vec::new(),
            });
        }
        t.write(&def, &writes).await?;
        if let Some(mark) = &self.marks[i] {
            t.write(mark, &marks).await?;
        }
        t.record_documents(&records).await?;
        metrics::counter!(m::DOCUMENTS_RENDERED, "kind" => kind.to_owned())
            .increment(outcome.rendered as u64);
        metrics::counter!(m::DOCUMENTS_UNCHANGED, "kind" => kind.to_owned())
            .increment(outcome.unchanged as u64);
        metrics::counter!(m::DOCUMENTS_DELETED, "kind" => kind.to_owned()).increment(outcome.deleted as u64);
        if outcome.repaired > 0 {
            metrics::counter!(m::DOCUMENTS_REPAIRED, "kind" => kind.to_owned())
                .increment(outcome.repaired as u64);
            tracing::info!(
                kind,
                tenant,
                documents = outcome.repaired,
                "documents missing or altered in v2 rewritten"
            );
        }
        Ok(outcome)
    }

    /// Renders on a pool of `workers` blocking threads, in order; the batch
    /// waits (backpressure), the queue-depth gauge shows what is left.
    async fn render_all(
        &self,
        i: usize,
        jobs: Vec<(String, model::Built)>,
    ) -> Result<Vec<(String, model::Built, render::Rendered)>, TargetError> {
        let rule = &self.rules[i];
        let opts = RenderOptions {
            page: match rule.page {
                rule::PageName::A4 => PageSize::A4,
                rule::PageName::Letter => PageSize::Letter,
            },
            font: self.fonts[i].clone(),
            max_answer_chars: rule.max_answer_chars,
        };
        let left = Arc::new(AtomicUsize::new(jobs.len()));
        metrics::gauge!(m::DOCUMENTS_QUEUE).set(jobs.len() as f64);
        let kind = rule.kind.clone();
        let results: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(key, built)| {
            let opts = opts.clone();
            let left = left.clone();
            let kind = kind.clone();
            async move {
                let started = Instant::now();
                let mut built = built;
                let document = std::mem::take(&mut built.document);
                let result = tokio::task::spawn_blocking(move || render::render(&document, &opts)).await;
                let n = left.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!(m::DOCUMENTS_QUEUE).set(n as f64);
                metrics::histogram!(m::DOCUMENT_RENDER_SECONDS, "kind" => kind)
                    .record(started.elapsed().as_secs_f64());
                (key, built, result)
            }
        }))
        .buffered(self.workers)
        .collect()
        .await;
        let mut out = Vec::with_capacity(results.len());
        for (key, built, result) in results {
            let pdf = result
                .map_err(|e| TargetError::fatal(format!("document {kind} {key}: render task failed: {e}")))?
                .map_err(|e| TargetError::fatal(format!("document {kind} {key}: {e}")))?;
            out.push((key, built, pdf));
        }
        Ok(out)
    }

    fn id(&self, rule: &DocumentRule, tenant: &str, key: &str) -> SqlValue {
        let id = v2_id(
            &self.namespace,
            tenant,
            &format!("document:{}", rule.kind),
            &[&SqlValue::Text(key.to_owned())],
        );
        SqlValue::Uuid(*id.as_bytes())
    }

    /// The v2 row of a rendered document, in `def`'s column order.
    #[allow(clippy::too_many_arguments)]
    fn values(
        &self,
        rule: &DocumentRule,
        def: &TableDef,
        tenant: &str,
        key: &str,
        built: &model::Built,
        pdf: &render::Rendered,
        now: i64,
    ) -> Vec<SqlValue> {
        def.columns
            .iter()
            .map(|c| match &rule.target.columns[&c.name] {
                DocColumn::Field(f) => match f {
                    DocField::Id => self.id(rule, tenant, key),
                    DocField::Tenant => SqlValue::Text(tenant.to_owned()),
                    DocField::Kind => SqlValue::Text(rule.kind.clone()),
                    DocField::SourceKey => SqlValue::Text(key.to_owned()),
                    DocField::Content => SqlValue::Bytes(pdf.bytes.clone()),
                    DocField::Sha256 => SqlValue::Bytes(pdf.sha256.to_vec()),
                    DocField::ContentType => SqlValue::Text(CONTENT_TYPE.to_owned()),
                    DocField::ChangedAt => SqlValue::Instant(built.changed_micros),
                    DocField::RenderedAt => SqlValue::Instant(now),
                    DocField::Bytes => SqlValue::Int(pdf.bytes.len() as i64),
                    DocField::Pages => SqlValue::Int(i64::from(pdf.pages)),
                    DocField::Renderer => SqlValue::Text(RENDERER_VERSION.to_owned()),
                },
                DocColumn::IdOf { id_of, from } => {
                    let (rel, col) = rule::split_field(from).unwrap_or_default();
                    built
                        .scope
                        .get(&rel)
                        .and_then(|r| r.as_ref())
                        .and_then(|r| r.get(&col))
                        .filter(|v| !v.is_null())
                        .and_then(|v| crate::transform::mapping::key_part(v).ok())
                        .map_or(SqlValue::Null, |k| {
                            SqlValue::Uuid(*v2_id(&self.namespace, tenant, id_of, &[&k]).as_bytes())
                        })
                }
                DocColumn::Value { value } => {
                    crate::transform::mapping::constant(value, &c.ty).unwrap_or(SqlValue::Null)
                }
            })
            .collect()
    }
}

fn id_column(rule: &DocumentRule) -> &str {
    rule.target
        .columns
        .iter()
        .find(|(_, c)| **c == DocColumn::Field(DocField::Id))
        .map_or("", |(n, _)| n.as_str())
}

/// The catalog's columns named by `names`, keyed by the rule's id column.
fn projection<'a>(
    rule: &DocumentRule,
    catalog: &TableDef,
    names: impl Iterator<Item = &'a str>,
) -> Result<TableDef, String> {
    let mut columns = Vec::new();
    for name in names {
        let c = catalog
            .columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("{}.{name}: no such column in the v2 table", catalog.name))?;
        columns.push(c.clone());
    }
    let id = id_column(rule);
    let key = columns
        .iter()
        .position(|c| c.name == id)
        .ok_or_else(|| format!("{}: the id column {id:?} is not written", catalog.name))?;
    Ok(TableDef {
        schema: catalog.schema.clone(),
        name: catalog.name.clone(),
        columns,
        key: vec![key],
        scope: format!("document:{}", rule.kind),
    })
}

fn decode(stored: StoredRow) -> Result<(String, StateRow), TargetError> {
    let row: Row = postcard::from_bytes(&stored.data).map_err(|e| {
        TargetError::fatal(format!(
            "document state row {} {} cannot be decoded: {e}",
            stored.table, stored.key
        ))
    })?;
    Ok((
        stored.table,
        StateRow {
            key: stored.key,
            changed_micros: stored.changed_micros,
            row,
        },
    ))
}

/// Reads the stored rows the documents of `roots` are made of: roots, items,
/// then refs in resolution order, one query per relation.
async fn load<T: Target>(
    t: &mut T,
    rule: &DocumentRule,
    tenant: &str,
    roots: &BTreeSet<String>,
) -> Result<Rows, TargetError> {
    let kind = rule.kind.as_str();
    let mut rows = Rows::default();
    // Rows each relation resolved to, to follow refs of refs.
    let mut of: HashMap<String, Vec<Row>> = HashMap::new();
    let entries: Vec<Vec<u8>> = roots
        .iter()
        .map(|k| entry_hash(kind, tenant, &rule.root, k).to_vec())
        .collect();
    for s in t.doc_rows(&entries).await? {
        let (table, row) = decode(s)?;
        of.entry(ROOT.to_owned()).or_default().push(row.row.clone());
        rows.by_key.insert((table, row.key.clone()), row);
    }
    let mut refs: Vec<(&str, &rule::RefRule)> = rule::resolution_order(&rule.refs, &[ROOT])
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n, &rule.refs[n]))
        .collect();
    if let Some(items) = &rule.items {
        let parents: Vec<Vec<u8>> = roots
            .iter()
            .map(|k| parent_hash(kind, tenant, &items.table, k).to_vec())
            .collect();
        for s in t.doc_children(&parents).await? {
            let (_, row) = decode(s)?;
            let Some(parent) = row.row.get(&items.parent).map(key_text) else {
                continue;
            };
            of.entry(ITEM.to_owned()).or_default().push(row.row.clone());
            rows.items.entry(parent).or_default().push(row);
        }
        let mut known: Vec<&str> = vec![ROOT, ITEM];
        known.extend(rule.refs.keys().map(String::as_str));
        refs.extend(
            rule::resolution_order(&items.refs, &known)
                .unwrap_or_default()
                .into_iter()
                .map(|n| (n, &items.refs[n])),
        );
    }
    for (name, r) in refs {
        let (from, column) = rule::split_field(&r.from).unwrap_or_default();
        let keys: BTreeSet<String> = of
            .get(&from)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row.get(&column))
            .filter(|v| !v.is_null())
            .map(key_text)
            .filter(|k| !rows.by_key.contains_key(&(r.table.clone(), k.clone())))
            .collect();
        let entries: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| entry_hash(kind, tenant, &r.table, k).to_vec())
            .collect();
        if !entries.is_empty() {
            for s in t.doc_rows(&entries).await? {
                let (table, row) = decode(s)?;
                rows.by_key.insert((table, row.key.clone()), row);
            }
        }
        // Rows found earlier under another relation count too.
        let all = of
            .get(&from)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row.get(&column))
            .filter(|v| !v.is_null())
            .filter_map(|v| rows.by_key.get(&(r.table.clone(), key_text(v))))
            .map(|s| s.row.clone())
            .collect::<Vec<_>>();
        of.insert(name.to_owned(), all);
    }
    Ok(rows)
}
