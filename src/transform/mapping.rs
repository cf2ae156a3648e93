//! Declarative v1→v2 mappings (TOML) and their application to change events.
//!
//! ```toml
//! namespace = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001"  # UUIDv5 namespace of v2 ids
//! timezone = "America/Chicago"                        # zone of v1's local DATETIMEs
//! ambiguous_times = "earlier"                         # reject | earlier | later
//! target_schema = "v2"
//!
//! [lookups.patient_status]
//! A = "Active"
//!
//! [[tables]]
//! name = "Patients"          # v2 table
//! from = "patients"          # v1 table
//! key = ["Id"]               # v2 key column(s)
//! skip_if = [{ column = "deleted", equals = 1 }]   # such v1 rows are absent from v2
//! [tables.columns]
//! Id = { id_of = "patients" }                          # UUIDv5 of this row's v1 key
//! TenantId = { tenant = true }
//! FacilityId = { id_of = "facilities", from = ["facility_id"] }   # a foreign key
//! FirstName = { from = "first_name", convert = "trim_null_if_empty" }
//! IsActive = { from = "is_active", convert = "bit" }
//! CreatedAt = { from = "created_at", convert = "local_to_utc" }
//! Status = { from = "status", lookup = "patient_status" }
//! IsLegacy = { value = true }
//! ```
//!
//! Only the mapped columns of a v2 table are written (an upsert leaves the
//! columns v2 maintains itself alone). A v1 row that `skip_if` matches, or a
//! deleted v1 row, deletes its v2 row.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jiff::tz::TimeZone;
use serde::Deserialize;
use uuid::Uuid;

use super::convert::{self, Ambiguity, ConvertError};
use super::keys::v2_id;
use crate::config::{parse_toml, ConfigError};
use crate::event::{ChangeEvent, Operation, Row, Value};
use crate::sink::apply::{position_key, row_key};
use crate::sink::mirror;
use crate::sink::target::{Change, RowWrite, SqlType, SqlValue, TableDef};

/// One name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Names::One(n) => std::slice::from_ref(n),
            Names::Many(v) => v,
        }
    }
}

/// A named conversion of one v1 value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// The value as the v2 column's type holds it.
    #[default]
    AsIs,
    /// TINYINT(1) 0/1 → BIT.
    Bit,
    /// DATE (zero dates → NULL).
    Date,
    /// Local DATETIME in the mapping's `timezone` → UTC instant.
    LocalToUtc,
    Text,
    Trim,
    NullIfEmpty,
    TrimNullIfEmpty,
    /// PHP `serialize()` output → JSON text.
    PhpJson,
}

/// Where a v2 column's value comes from: exactly one of `from`, `value`,
/// `tenant`, `id_of` (with `from` naming the referencing v1 columns for a
/// foreign key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    pub from: Option<Names>,
    #[serde(default)]
    pub convert: Convert,
    pub lookup: Option<String>,
    pub value: Option<toml::Value>,
    #[serde(default)]
    pub tenant: bool,
    pub id_of: Option<String>,
    /// A Rust hook registered by this name ([`super::hooks`]) computes the value.
    pub hook: Option<String>,
}

/// A row filter: the v1 row matches when `column` equals `equals` (or is NULL
/// with `is_null = true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub column: String,
    pub equals: Option<toml::Value>,
    #[serde(default)]
    pub is_null: bool,
}

/// One v2 table fed by one v1 table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMapping {
    pub name: String,
    pub from: String,
    pub key: Names,
    #[serde(default)]
    pub skip_if: Vec<Filter>,
    /// This v1 table fills some columns of v2 rows another entry (the owner,
    /// with the same `name`) creates: its deletes clear its columns instead of
    /// deleting the v2 row. The key must derive the owner's id (e.g.
    /// `Id = { id_of = "patients", from = "patient_id" }`).
    #[serde(default)]
    pub merge: bool,
    pub columns: BTreeMap<String, ColumnMapping>,
}

/// A mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub namespace: Uuid,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub ambiguous_times: Ambiguity,
    pub target_schema: String,
    #[serde(default)]
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
    pub tables: Vec<TableMapping>,
    /// Documents regenerated from v1 rows (see [`crate::documents::rule`]).
    #[serde(default)]
    pub documents: Vec<crate::documents::rule::DocumentRule>,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// Why an event cannot be mapped (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}.{column}: {reason}")]
pub struct MappingError {
    pub table: String,
    pub column: String,
    pub reason: String,
}

/// A loaded, validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub file: MappingFile,
    zone: TimeZone,
    /// v1 table → indexes into `file.tables`.
    by_source: HashMap<String, Vec<usize>>,
}

/// The writes one event makes to one v2 table (only its mapped columns).
#[derive(Debug, Clone, PartialEq)]
pub struct MappedWrites {
    /// Index into the mapping's tables.
    pub table: usize,
    pub writes: Vec<RowWrite>,
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Mapping, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            issues: vec![format!("cannot read the mapping file: {e}")],
        })?;
        Mapping::from_toml_str(&text, &origin)
    }

    pub fn from_toml_str(text: &str, origin: &str) -> Result<Mapping, ConfigError> {
        let file: MappingFile = parse_toml(text, origin)?;
        let issues = validate(&file);
        let zone = TimeZone::get(&file.timezone);
        let mut issues = issues;
        if zone.is_err() {
            issues.push(format!("timezone: {:?} is not a known time zone", file.timezone));
        }
        if !issues.is_empty() {
            return Err(ConfigError {
                origin: origin.to_owned(),
                issues,
            });
        }
        let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in file.tables.iter().enumerate() {
            by_source.entry(t.from.clone()).or_default().push(i);
        }
        Ok(Mapping {
            file,
            zone: zone.expect("checked above"),
            by_source,
        })
    }

    /// The v2 tables a v1 table feeds.
    pub fn targets_of(&self, v1_table: &str) -> &[usize] {
        self.by_source.get(v1_table).map_or(&[], Vec::as_slice)
    }

    pub fn table(&self, i: usize) -> &TableMapping {
        &self.file.tables[i]
    }

    /// For a merge entry, the entry that owns the rows of its v2 table.
    pub fn owner_of(&self, i: usize) -> Option<usize> {
        let t = &self.file.tables[i];
        t.merge
            .then(|| self.file.tables.iter().position(|o| o.name == t.name && !o.merge))
            .flatten()
    }

    /// The columns of the catalog's v2 table this mapping writes, in the
    /// mapping's order, as the definition writes use.
    pub fn projection(&self, i: usize, catalog: &TableDef) -> Result<TableDef, String> {
        let t = &self.file.tables[i];
        let mut columns = Vec::new();
        for name in t.columns.keys() {
            let c = catalog
                .columns
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| format!("{}.{}: no such column in the v2 table", t.name, name))?;
            columns.push(c.clone());
        }
        let key = t
            .key
            .as_slice()
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| &c.name == k)
                    .ok_or_else(|| format!("{}: key column {k} is not mapped", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Several sources of one v2 table keep their row positions apart.
        let shared = self.file.tables.iter().filter(|x| x.name == t.name).count() > 1;
        Ok(TableDef {
            scope: if shared { t.from.clone() } else { String::new() },
            schema: catalog.schema.clone(),
            name: catalog.name.clone(),
            columns,
            key,
        })
    }

    /// The writes `ev` makes to v2 table `i` (whose written columns are `def`).
    pub fn apply(&self, i: usize, def: &TableDef, ev: &ChangeEvent) -> Result<Vec<RowWrite>, MappingError> {
        let t = &self.file.tables[i];
        let position = position_key(&ev.position);
        let present = |row: &Option<Row>| -> Option<Row> {
            row.as_ref()
                .filter(|r| !t.skip_if.iter().any(|f| filter_matches(f, r)))
                .cloned()
        };
        let (before, after) = match ev.op {
            Operation::Ddl | Operation::Watermark => return Ok(Vec::new()),
            Operation::SnapshotRead | Operation::Insert => (None, present(&ev.after)),
            Operation::Update => (ev.before.clone(), present(&ev.after)),
            Operation::Delete => (ev.before.clone().or_else(|| Some(ev.key.clone())), None),
        };
        let mut out = Vec::with_capacity(2);
        // A merge source removes its contribution, not the row.
        let remove = |key: Vec<SqlValue>| -> Change {
            if t.merge {
                let mut values = vec![SqlValue::Null; def.columns.len()];
                for (slot, v) in def.key.iter().zip(key) {
                    values[*slot] = v;
                }
                Change::Upsert(values)
            } else {
                Change::Delete(key)
            }
        };
        let after_values = after.as_ref().map(|r| self.values(t, def, ev, r)).transpose()?;
        let after_key = after_values.as_ref().map(|v| key_values(def, v));
        if let Some(b) = &before {
            // The v2 key of the old image: when it differs from the new one (or
            // the row is gone or filtered out), the old v2 row is deleted.
            let old = self.key_of(t, def, ev, b, &primary_key_of(ev, b))?;
            if after_key.as_ref() != Some(&old) {
                out.push(RowWrite {
                    row_key: row_key(&old.iter().collect::<Vec<_>>()),
                    position: position.clone(),
                    change: remove(old),
                });
            }
        } else if let (None, Some(key_row)) = (&after, &ev.after) {
            // An insert the filter skips: make sure no v2 row exists.
            let old = self.key_of(t, def, ev, key_row, &primary_key_of(ev, key_row))?;
            out.push(RowWrite {
                row_key: row_key(&old.iter().collect::<Vec<_>>()),
                position: position.clone(),
                change: remove(old),
            });
        }
        if let (Some(values), Some(key)) = (after_values, after_key) {
            out.push(RowWrite {
                row_key: row_key(&key.iter().collect::<Vec<_>>()),
                position,
                change: Change::Upsert(values),
            });
        }
        Ok(out)
    }

    /// The v2 key values of a v1 row image (only the key columns are evaluated).
    fn key_of(
        &self,
        t: &TableMapping,
        def: &TableDef,
        ev: &ChangeEvent,
        image: &Row,
        v1_key: &Row,
    ) -> Result<Vec<SqlValue>, MappingError> {
        def.key
            .iter()
            .map(|&i| {
                let c = &def.columns[i];
                let spec = &t.columns[&c.name];
                self.column_value(t, &c.name, &c.ty, spec, ev, image, v1_key)
            })
            .collect()
    }

    /// Every mapped column of a v1 row image, in `def`'s order.
    fn values(
        &self,
        t: &TableMapping,
        def: &TableDef,
        ev: &ChangeEvent,
        row: &Row,
    ) -> Result<Vec<SqlValue>, MappingError> {
        let v1_key = primary_key_of(ev, row);
        def.columns
            .iter()
            .map(|c| self.column_value(t, &c.name, &c.ty, &t.columns[&c.name], ev, row, &v1_key))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn column_value(
        &self,
        t: &TableMapping,
        column: &str,
        ty: &SqlType,
        spec: &ColumnMapping,
        ev: &ChangeEvent,
        row: &Row,
        v1_key: &Row,
    ) -> Result<SqlValue, MappingError> {
        let fail = |reason: String| MappingError {
            table: t.name.clone(),
            column: column.to_owned(),
            reason,
        };
        if let Some(name) = &spec.hook {
            let hook = super::hooks::find(name).ok_or_else(|| fail(format!("no hook named {name:?}")))?;
            return hook(row, &ev.tenant).map_err(fail);
        }
        if spec.tenant {
            return match ty {
                SqlType::Uuid => Uuid::parse_str(&ev.tenant)
                    .map(|u| SqlValue::Uuid(*u.as_bytes()))
                    .map_err(|_| fail("the tenant id is not a UUID (see source.tenants.ids)".into())),
                _ => Ok(SqlValue::Text(ev.tenant.clone())),
            };
        }
        if let Some(value) = &spec.value {
            return constant(value, ty).map_err(fail);
        }
        if let Some(table) = &spec.id_of {
            // Own id: the event's v1 primary key; a foreign key: the named columns.
            let parts: Vec<SqlValue> = match &spec.from {
                Some(cols) => cols
                    .as_slice()
                    .iter()
                    .map(|c| {
                        row.get(c)
                            .ok_or_else(|| fail(format!("v1 column {c} is not in the row")))
                            .and_then(|v| key_part(v).map_err(|e| fail(e.to_string())))
                    })
                    .collect::<Result<_, _>>()?,
                None => v1_key
                    .0
                    .iter()
                    .map(|(_, v)| key_part(v).map_err(|e| fail(e.to_string())))
                    .collect::<Result<_, _>>()?,
            };
            if parts.iter().any(SqlValue::is_null) {
                return Ok(SqlValue::Null);
            }
            let id = v2_id(
                &self.file.namespace,
                &ev.tenant,
                table,
                &parts.iter().collect::<Vec<_>>(),
            );
            return Ok(match ty {
                SqlType::Uuid => SqlValue::Uuid(*id.as_bytes()),
                _ => SqlValue::Text(id.to_string()),
            });
        }
        let from = spec
            .from
            .as_ref()
            .and_then(|f| f.as_slice().first())
            .ok_or_else(|| fail("no source given".into()))?;
        let v = row
            .get(from)
            .ok_or_else(|| fail(format!("v1 column {from} is not in the row")))?;
        if let Some(name) = &spec.lookup {
            let table = &self.file.lookups[name];
            return convert::lookup(v, name, table).map_err(|e| fail(e.to_string()));
        }
        let converted: Result<SqlValue, ConvertError> = match spec.convert {
            Convert::AsIs => {
                mirror::value(column, ty, v).map_err(|e| ConvertError::PhpSerialized(e.to_string()))
            }
            Convert::Bit => convert::bit(v),
            Convert::Date => convert::date(v),
            Convert::LocalToUtc => {
                convert::local_to_utc(v, &self.zone, &self.file.timezone, self.file.ambiguous_times)
            }
            Convert::Text => convert::text(v, false, false),
            Convert::Trim => convert::text(v, true, false),
            Convert::NullIfEmpty => convert::text(v, false, true),
            Convert::TrimNullIfEmpty => convert::text(v, true, true),
            Convert::PhpJson => convert::php_to_json(v),
        };
        converted.map_err(|e| match (spec.convert, e) {
            (Convert::AsIs, ConvertError::PhpSerialized(reason)) => fail(reason),
            (_, e) => fail(format!("{} (v1 column {from})", e)),
        })
    }
}

fn key_values(def: &TableDef, values: &[SqlValue]) -> Vec<SqlValue> {
    def.key.iter().map(|&i| values[i].clone()).collect()
}

/// The event's v1 primary key read from `row` (the key column names come from the event).
fn primary_key_of(ev: &ChangeEvent, row: &Row) -> Row {
    Row(ev
        .key
        .0
        .iter()
        .map(|(name, v)| (name.clone(), row.get(name).cloned().unwrap_or_else(|| v.clone())))
        .collect())
}

/// A v1 key value in the canonical form v2 ids are derived from: integers as
/// integers (signed or not), text as text.
pub(crate) fn key_part(v: &Value) -> Result<SqlValue, ConvertError> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Int(i) => SqlValue::Int(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) => SqlValue::Int(i),
            Err(_) => SqlValue::Decimal(u.to_string()),
        },
        Value::Text(s) | Value::Enum(s) => SqlValue::Text(s.clone()),
        Value::Decimal(d) => SqlValue::Decimal(d.as_str().to_owned()),
        Value::Bytes(b) => SqlValue::Bytes(b.clone()),
        other => {
            return Err(ConvertError::Type {
                expected: "an integer, text or bytes key",
                found: convert::kind(other),
            })
        }
    })
}

pub(crate) fn constant(value: &toml::Value, ty: &SqlType) -> Result<SqlValue, String> {
    Ok(match (value, ty) {
        (toml::Value::Boolean(b), _) => SqlValue::Bool(*b),
        (toml::Value::Integer(i), SqlType::Bool) => SqlValue::Bool(*i != 0),
        (toml::Value::Integer(i), _) => SqlValue::Int(*i),
        (toml::Value::Float(f), _) => SqlValue::Double(*f),
        (toml::Value::String(s), _) => SqlValue::Text(s.clone()),
        (other, _) => return Err(format!("constant {other} is not a boolean, number or string")),
    })
}

pub(crate) fn filter_matches(f: &Filter, row: &Row) -> bool {
    let Some(v) = row.get(&f.column) else {
        return false;
    };
    if f.is_null {
        return matches!(v, Value::Null);
    }
    let Some(want) = &f.equals else {
        return false;
    };
    match (want, v) {
        (toml::Value::Integer(w), Value::Int(i)) => w == i,
        (toml::Value::Integer(w), Value::UInt(u)) => u64::try_from(*w).is_ok_and(|w| w == *u),
        (toml::Value::Boolean(w), Value::Int(i)) => (*i != 0) == *w,
        (toml::Value::String(w), Value::Text(s) | Value::Enum(s)) => w == s,
        _ => false,
    }
}

/// Checks the file on its own: sources, lookups, keys.
fn validate(file: &MappingFile) -> Vec<String> {
    let mut issues = Vec::new();
    let mut owners: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in &file.tables {
        let e = owners.entry(t.name.as_str()).or_default();
        if t.merge {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    for (name, (owned, merged)) in owners {
        if owned != 1 && (owned > 1 || merged > 0) {
            issues.push(format!(
                "tables: v2 table {name} has {owned} owning entries; exactly one entry without \
                 `merge = true` creates its rows, the others merge into them"
            ));
        }
    }
    for (i, t) in file.tables.iter().enumerate() {
        let at = format!("tables[{i}] ({})", t.name);
        for k in t.key.as_slice() {
            if !t.columns.contains_key(k) {
                issues.push(format!("{at}.key: column {k} is not mapped"));
            }
        }
        for (name, c) in &t.columns {
            let sources = usize::from(c.value.is_some())
                + usize::from(c.tenant)
                + usize::from(c.id_of.is_some())
                + usize::from(c.hook.is_some())
                + usize::from(c.from.is_some() && c.id_of.is_none());
            if sources != 1 {
                issues.push(format!(
                    "{at}.columns.{name}: give exactly one of from, value, tenant, id_of, hook"
                ));
            }
            if let Some(h) = &c.hook {
                if super::hooks::find(h).is_none() {
                    let known: Vec<&str> = super::hooks::HOOKS.iter().map(|(n, _)| *n).collect();
                    issues.push(format!(
                        "{at}.columns.{name}.hook: no hook named {h:?} (registered: {})",
                        known.join(", ")
                    ));
                }
            }
            if let Some(l) = &c.lookup {
                if !file.lookups.contains_key(l) {
                    issues.push(format!("{at}.columns.{name}.lookup: no lookup named {l:?}"));
                }
                if c.from.is_none() {
                    issues.push(format!("{at}.columns.{name}.lookup: needs `from`"));
                }
            }
            if c.convert != Convert::AsIs && c.from.is_none() {
                issues.push(format!("{at}.columns.{name}.convert: needs `from`"));
            }
        }
    }
    let mut kinds = std::collections::BTreeSet::new();
    for (i, d) in file.documents.iter().enumerate() {
        let at = format!("documents[{i}] ({})", d.kind);
        if !kinds.insert(d.kind.as_str()) {
            issues.push(format!("{at}.kind: another document rule has the same kind"));
        }
        issues.extend(d.validate(&at));
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DateTime;
    use crate::sink::target::ColumnDef;

    const MAPPING: &str = r#"
namespace = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001"
timezone = "America/Chicago"
target_schema = "v2"

[lookups.status]
A = "Active"
I = "Inactive"

[[tables]]
name = "Patients"
from = "patients"
key = "Id"
skip_if = [{ column = "deleted", equals = 1 }]

[tables.columns]
Id = { id_of = "patients" }
TenantId = { tenant = true }
FacilityId = { id_of = "facilities", from = "facility_id" }
LastName = { from = "last_name", convert = "trim_null_if_empty" }
IsActive = { from = "is_active", convert = "bit" }
CreatedAt = { from = "created_at", convert = "local_to_utc" }
Status = { from = "status", lookup = "status" }
IsLegacy = { value = true }
DisplayName = { hook = "full_name" }
"#;

    fn catalog() -> TableDef {
        let col = |name: &str, ty: SqlType| ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
        };
        TableDef {
            scope: String::new(),
            schema: "v2".into(),
            name: "Patients".into(),
            columns: vec![
                col("Id", SqlType::Uuid),
                col("TenantId", SqlType::Text { max_chars: None }),
                col("FacilityId", SqlType::Uuid),
                col("LastName", SqlType::Text { max_chars: Some(60) }),
                col("IsActive", SqlType::Bool),
                col("CreatedAt", SqlType::DateTimeOffset),
                col("Status", SqlType::Text { max_chars: None }),
                col("IsLegacy", SqlType::Bool),
                col("V2Only", SqlType::Int),
                col("DisplayName", SqlType::Text { max_chars: None }),
            ],
            key: vec![0],
        }
    }

    fn row(id: i64, deleted: i64, status: &str) -> Row {
        Row(vec![
            ("id".into(), Value::Int(id)),
            ("facility_id".into(), Value::Int(3)),
            ("last_name".into(), Value::Text(" Núñez ".into())),
            ("is_active".into(), Value::Int(1)),
            (
                "created_at".into(),
                Value::DateTime(DateTime {
                    date: crate::event::Date {
                        year: 2024,
                        month: 1,
                        day: 15,
                    },
                    hour: 9,
                    minute: 30,
                    second: 0,
                    micros: 0,
                }),
            ),
            ("status".into(), Value::Text(status.into())),
            ("deleted".into(), Value::Int(deleted)),
        ])
    }

    fn event(op: Operation, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            tenant: "pinpoint_alpha".into(),
            database: "pinpoint_alpha".into(),
            ..ChangeEvent::test_row("patients", op, before, after)
        }
    }

    fn mapping() -> (Mapping, TableDef) {
        let m = Mapping::from_toml_str(MAPPING, "test.toml").unwrap();
        let def = m.projection(0, &catalog()).unwrap();
        (m, def)
    }

    #[test]
    fn a_row_maps_to_its_v2_columns_only() {
        let (m, def) = mapping();
        assert!(
            def.columns.iter().all(|c| c.name != "V2Only"),
            "unmapped v2 columns are not written"
        );
        let writes = m
            .apply(0, &def, &event(Operation::Insert, None, Some(row(7, 0, "A"))))
            .unwrap();
        assert_eq!(writes.len(), 1);
        let Change::Upsert(values) = &writes[0].change else {
            panic!("upsert expected")
        };
        let get = |name: &str| &values[def.column_index(name).unwrap()];
        let ns = m.file.namespace;
        let id = v2_id(&ns, "pinpoint_alpha", "patients", &[&SqlValue::Int(7)]);
        assert_eq!(get("Id"), &SqlValue::Uuid(*id.as_bytes()));
        let facility = v2_id(&ns, "pinpoint_alpha", "facilities", &[&SqlValue::Int(3)]);
        assert_eq!(get("FacilityId"), &SqlValue::Uuid(*facility.as_bytes()));
        assert_eq!(get("TenantId"), &SqlValue::Text("pinpoint_alpha".into()));
        assert_eq!(get("LastName"), &SqlValue::Text("Núñez".into()));
        assert_eq!(get("IsActive"), &SqlValue::Bool(true));
        assert_eq!(get("Status"), &SqlValue::Text("Active".into()));
        assert_eq!(get("IsLegacy"), &SqlValue::Bool(true));
        assert_eq!(
            get("DisplayName"),
            &SqlValue::Text("Núñez".into()),
            "a Rust hook by name"
        );
        // 09:30 CST = 15:30 UTC.
        let utc =
            (crate::source::convert::days_from_civil(2024, 1, 15) * 86_400 + 15 * 3600 + 30 * 60) * 1_000_000;
        assert_eq!(get("CreatedAt"), &SqlValue::Instant(utc));
    }

    #[test]
    fn filtered_and_deleted_rows_delete_the_v2_row() {
        let (m, def) = mapping();
        let soft_deleted = m
            .apply(
                0,
                &def,
                &event(Operation::Update, Some(row(7, 0, "A")), Some(row(7, 1, "A"))),
            )
            .unwrap();
        assert_eq!(soft_deleted.len(), 1);
        assert!(matches!(soft_deleted[0].change, Change::Delete(_)));
        let deleted = m
            .apply(0, &def, &event(Operation::Delete, Some(row(7, 0, "A")), None))
            .unwrap();
        assert!(matches!(deleted[0].change, Change::Delete(_)));
        assert_eq!(deleted[0].row_key, soft_deleted[0].row_key);
        let key_change = m
            .apply(
                0,
                &def,
                &event(Operation::Update, Some(row(7, 0, "A")), Some(row(8, 0, "A"))),
            )
            .unwrap();
        assert_eq!(key_change.len(), 2);
        assert!(matches!(key_change[0].change, Change::Delete(_)));
        assert!(matches!(key_change[1].change, Change::Upsert(_)));
    }

    #[test]
    fn a_mapping_error_names_table_column_and_reason() {
        let (m, def) = mapping();
        let err = m
            .apply(0, &def, &event(Operation::Insert, None, Some(row(7, 0, "Q"))))
            .unwrap_err();
        assert_eq!(err.to_string(), "Patients.Status: code not in lookup \"status\"");
    }

    #[test]
    fn the_file_is_checked_before_anything_runs() {
        let bad = MAPPING
            .replace("lookup = \"status\"", "lookup = \"nope\"")
            .replace(
                "IsLegacy = { value = true }",
                "IsLegacy = { value = true, tenant = true }",
            )
            .replace("America/Chicago", "Mars/Olympus")
            .replace("hook = \"full_name\"", "hook = \"fullname\"");
        let err = Mapping::from_toml_str(&bad, "m.toml").unwrap_err();
        let text = err.issues.join("\n");
        assert!(
            text.contains("columns.Status.lookup: no lookup named \"nope\""),
            "{text}"
        );
        assert!(text.contains("columns.IsLegacy: give exactly one of"), "{text}");
        assert!(text.contains("timezone: \"Mars/Olympus\""), "{text}");
        assert!(
            text.contains("columns.DisplayName.hook: no hook named \"fullname\""),
            "{text}"
        );
        let typo = MAPPING.replace("convert = \"bit\"", "convert = \"bits\"");
        let err = Mapping::from_toml_str(&typo, "m.toml").unwrap_err();
        assert!(err.issues[0].contains("line"), "{:?}", err.issues);
        let err = m_projection_error();
        assert_eq!(err, "Patients.Nope: no such column in the v2 table");
    }

    #[test]
    fn a_merge_source_fills_and_clears_its_columns_of_the_owners_row() {
        let text = format!(
            "{MAPPING}\n[[tables]]\nname = \"Patients\"\nfrom = \"contacts\"\nkey = \"Id\"\nmerge = true\n\
             [tables.columns]\nId = {{ id_of = \"patients\", from = \"patient_id\" }}\n\
             LastName = {{ from = \"name\", convert = \"trim\" }}\n"
        );
        let m = Mapping::from_toml_str(&text, "m.toml").unwrap();
        let owner = m.projection(0, &catalog()).unwrap();
        let merged = m.projection(1, &catalog()).unwrap();
        assert_ne!(owner.id(), merged.id(), "each source keeps its own row positions");
        assert_eq!(merged.id(), "v2.Patients@contacts");
        let contact = Row(vec![
            ("id".into(), Value::Int(50)),
            ("patient_id".into(), Value::Int(7)),
            ("name".into(), Value::Text(" X ".into())),
        ]);
        let mut ev = event(Operation::Insert, None, Some(contact.clone()));
        ev.table = "contacts".into();
        ev.key = Row(vec![("id".into(), Value::Int(50))]);
        let w = m.apply(1, &merged, &ev).unwrap();
        let patient = v2_id(
            &m.file.namespace,
            "pinpoint_alpha",
            "patients",
            &[&SqlValue::Int(7)],
        );
        assert_eq!(
            w[0].change,
            Change::Upsert(vec![
                SqlValue::Uuid(*patient.as_bytes()),
                SqlValue::Text("X".into())
            ])
        );
        ev.op = Operation::Delete;
        ev.before = Some(contact);
        ev.after = None;
        let w = m.apply(1, &merged, &ev).unwrap();
        assert_eq!(
            w[0].change,
            Change::Upsert(vec![SqlValue::Uuid(*patient.as_bytes()), SqlValue::Null])
        );
        // Two owners of one v2 table are refused.
        let two = text.replace("merge = true\n", "");
        let err = Mapping::from_toml_str(&two, "m.toml").unwrap_err();
        assert!(
            err.issues.iter().any(|i| i.contains("has 2 owning entries")),
            "{:?}",
            err.issues
        );
    }

    fn m_projection_error() -> String {
        let text = MAPPING.replace("IsLegacy = { value = true }", "Nope = { value = 1 }");
        let m = Mapping::from_toml_str(&text, "m.toml").unwrap();
        m.projection(0, &catalog()).unwrap_err()
    }
}
