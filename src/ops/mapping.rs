//! `cdc-bridge mapping check` and `mapping preview`: a mapping validated
//! against both schemas before anything runs, and the v2 rows one v1 row becomes.

use std::path::Path;

use mysql_async::prelude::Queryable;

use crate::config::{Config, TargetKind};
use crate::event::{ChangeEvent, Operation, Row, TransactionInfo, Value};
use crate::sink::target::{Change, SqlType, SqlValue, TableDef, Target};
use crate::source::schema::{load_tables, TableSchema};
use crate::transform::mapping::{Convert, Mapping};

/// The line of `table`'s `column` key in the mapping text (best effort: the
/// first `column =` after the table's `name = "…"`), for error messages.
fn line_of(text: &str, table: &str, column: Option<&str>) -> Option<usize> {
    let start = text.find(&format!("name = \"{table}\""))?;
    let at = match column {
        None => start,
        Some(c) => {
            start
                + text[start..]
                    .find(&format!("\n{c} ="))
                    .or_else(|| text[start..].find(&format!("\n{c}=")))?
                + 1
        }
    };
    Some(text[..at].matches('\n').count() + 1)
}

fn mapping_path(config: &Config) -> anyhow::Result<&str> {
    config
        .sink
        .as_ref()
        .and_then(|s| s.mapping.as_deref())
        .ok_or_else(|| anyhow::anyhow!("the configuration names no sink.mapping file"))
}

/// Whether a conversion can produce a value for a v2 column of type `ty`.
fn fits_v2(convert: Convert, ty: &SqlType) -> bool {
    match convert {
        Convert::Bit => matches!(ty, SqlType::Bool),
        Convert::Date => matches!(ty, SqlType::Date | SqlType::DateTime | SqlType::DateTimeOffset),
        Convert::LocalToUtc => matches!(ty, SqlType::DateTimeOffset | SqlType::DateTime),
        Convert::PhpJson => matches!(ty, SqlType::Json | SqlType::Text { .. }),
        Convert::Text | Convert::Trim | Convert::NullIfEmpty | Convert::TrimNullIfEmpty => {
            matches!(ty, SqlType::Text { .. } | SqlType::Json)
        }
        Convert::AsIs => true,
    }
}

/// Whether a conversion accepts values of the v1 column type `data_type`.
fn fits_v1(convert: Convert, data_type: &str) -> bool {
    let text = matches!(
        data_type,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
    );
    match convert {
        Convert::Bit => matches!(
            data_type,
            "tinyint" | "smallint" | "int" | "bit" | "enum" | "char" | "varchar"
        ),
        Convert::Date => matches!(data_type, "date" | "datetime"),
        Convert::LocalToUtc => matches!(data_type, "datetime" | "date" | "timestamp"),
        Convert::PhpJson => text || matches!(data_type, "blob" | "mediumblob" | "longblob"),
        Convert::Text | Convert::Trim | Convert::NullIfEmpty | Convert::TrimNullIfEmpty => {
            text || matches!(
                data_type,
                "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "decimal" | "json"
            )
        }
        Convert::AsIs => true,
    }
}

/// The v2 catalog definitions of the mapped tables (None where a table is missing).
async fn v2_catalog(config: &Config, mapping: &Mapping) -> anyhow::Result<Vec<Option<TableDef>>> {
    let sink = config.sink.as_ref().expect("checked by mapping_path");
    let target = sink.target(None).map_err(|e| anyhow::anyhow!(e))?;
    let schema = mapping.file.target_schema.clone();
    let names: Vec<String> = mapping
        .file
        .tables
        .iter()
        .map(|t| t.name.clone())
        .chain(mapping.file.documents.iter().map(|d| d.target.table.clone()))
        .collect();
    async fn describe<T: Target>(
        cfg: &crate::config::TargetConfig,
        schema: &str,
        names: &[String],
    ) -> anyhow::Result<Vec<Option<TableDef>>> {
        let mut t = T::connect(cfg).await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(t.describe_table(schema, n).await?);
        }
        Ok(out)
    }
    match target.kind {
        TargetKind::Postgres => {
            describe::<crate::sink::postgres::PostgresTarget>(target, &schema, &names).await
        }
        TargetKind::SqlServer => {
            describe::<crate::sink::sqlserver::SqlServerTarget>(target, &schema, &names).await
        }
    }
}

/// The v1 tables of the first selected tenant database (with its name).
async fn v1_catalog(config: &Config) -> anyhow::Result<Option<(String, Vec<TableSchema>)>> {
    let Some(source) = &config.source else {
        return Ok(None);
    };
    let opts = crate::source::mysql_opts(source)?;
    let mut conn = mysql_async::Conn::new(opts).await?;
    let selection = crate::source::Selection {
        tenants: source.tenants.clone(),
        tables: source.tables.clone(),
    };
    let databases: Vec<String> = conn.query("SHOW DATABASES").await?;
    let Some(db) = databases.into_iter().find(|d| selection.tenant(d).is_some()) else {
        return Ok(None);
    };
    let tables = load_tables(&mut conn, &db).await?;
    Ok(Some((db, tables)))
}

/// Every problem found, each naming file, line and key; empty when the mapping is sound.
pub async fn check(config: &Config) -> anyhow::Result<(String, Vec<String>)> {
    let path = mapping_path(config)?;
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let mapping = match Mapping::from_toml_str(&text, path) {
        Ok(m) => m,
        Err(e) => return Ok((path.to_owned(), e.issues)),
    };
    let mut problems = Vec::new();
    let at = |table: &str, column: Option<&str>| match line_of(&text, table, column) {
        Some(l) => format!("{path}:{l}"),
        None => path.to_owned(),
    };
    let mut catalog = v2_catalog(config, &mapping).await?;
    let doc_catalog = catalog.split_off(mapping.file.tables.len());
    for (i, (d, def)) in mapping.file.documents.iter().zip(&doc_catalog).enumerate() {
        let at = format!("{path}: documents[{i}] ({})", d.kind);
        match def {
            None => problems.push(format!(
                "{at}.target.table: v2 table {}.{} does not exist",
                mapping.file.target_schema, d.target.table
            )),
            Some(def) => {
                for name in d.target.columns.keys() {
                    if !def.columns.iter().any(|c| &c.name == name) {
                        problems.push(format!(
                            "{at}.target.columns.{name}: no such column in v2 {}",
                            d.target.table
                        ));
                    }
                }
            }
        }
    }
    for (i, (t, def)) in mapping.file.tables.iter().zip(&catalog).enumerate() {
        let Some(def) = def else {
            problems.push(format!(
                "{}: tables[{i}].name: v2 table {}.{} does not exist",
                at(&t.name, None),
                mapping.file.target_schema,
                t.name
            ));
            continue;
        };
        if let Err(e) = mapping.projection(i, def) {
            problems.push(format!("{}: tables[{i}]: {e}", at(&t.name, None)));
        }
        for (name, c) in &t.columns {
            let Some(col) = def.columns.iter().find(|x| &x.name == name) else {
                continue;
            };
            let bad_v2 = (c.id_of.is_some() && !matches!(col.ty, SqlType::Uuid | SqlType::Text { .. }))
                || (c.lookup.is_some() && !matches!(col.ty, SqlType::Text { .. }))
                || !fits_v2(c.convert, &col.ty);
            if bad_v2 {
                problems.push(format!(
                    "{}: tables[{i}].columns.{name}: v2 column type {:?} cannot hold what this produces",
                    at(&t.name, Some(name)),
                    col.ty
                ));
            }
            if !col.nullable
                && c.value.is_none()
                && !c.tenant
                && c.id_of.is_none()
                && c.convert != Convert::Bit
            {
                // Conversions may yield NULL (zero dates, empty text): flag NOT NULL targets.
                if matches!(
                    c.convert,
                    Convert::Date | Convert::LocalToUtc | Convert::NullIfEmpty | Convert::TrimNullIfEmpty
                ) {
                    problems.push(format!(
                        "{}: tables[{i}].columns.{name}: v2 column is NOT NULL but {:?} can give NULL",
                        at(&t.name, Some(name)),
                        c.convert
                    ));
                }
            }
        }
    }
    if let Some((db, tables)) = v1_catalog(config).await? {
        for (i, d) in mapping.file.documents.iter().enumerate() {
            let at = format!("{path}: documents[{i}] ({})", d.kind);
            for table in d.tables() {
                if !tables.iter().any(|x| x.table == table) {
                    problems.push(format!("{at}: v1 table {table} is not in {db}"));
                }
            }
            for (place, relation, column) in d.fields() {
                let Some(table) = d.relation_table(&relation) else {
                    continue;
                };
                if let Some(v1) = tables.iter().find(|x| x.table == table) {
                    if v1.column(&column).is_none() {
                        problems.push(format!(
                            "{at}.{place}: v1 column {table}.{column} ({relation}.{column}) does not exist"
                        ));
                    }
                }
            }
        }
        for (i, t) in mapping.file.tables.iter().enumerate() {
            let Some(v1) = tables.iter().find(|x| x.table == t.from) else {
                problems.push(format!(
                    "{}: tables[{i}].from: v1 table {} is not in {db}",
                    at(&t.name, None),
                    t.from
                ));
                continue;
            };
            for (name, c) in &t.columns {
                let Some(from) = &c.from else { continue };
                for col in from.as_slice() {
                    match v1.column(col) {
                        None => problems.push(format!(
                            "{}: tables[{i}].columns.{name}.from: v1 column {}.{col} does not exist",
                            at(&t.name, Some(name)),
                            t.from
                        )),
                        Some(v1col) if !fits_v1(c.convert, &v1col.data_type) => problems.push(format!(
                            "{}: tables[{i}].columns.{name}.convert: {:?} does not accept v1 {} ({})",
                            at(&t.name, Some(name)),
                            c.convert,
                            v1col.data_type,
                            col
                        )),
                        Some(_) => {}
                    }
                }
                if let Some(other) = &c.id_of {
                    if !tables.iter().any(|x| &x.table == other) {
                        problems.push(format!(
                            "{}: tables[{i}].columns.{name}.id_of: v1 table {other} is not in {db}",
                            at(&t.name, Some(name))
                        ));
                    }
                }
            }
        }
    }
    Ok((path.to_owned(), problems))
}

/// A JSON value as the v1 value of a column of type `data_type`.
fn json_value(column: &str, data_type: Option<&str>, v: &serde_json::Value) -> anyhow::Result<Value> {
    use serde_json::Value as J;
    let bad = || {
        anyhow::anyhow!(
            "--row: {column}: cannot read {v} as {}",
            data_type.unwrap_or("a value")
        )
    };
    Ok(match (v, data_type) {
        (J::Null, _) => Value::Null,
        (J::Bool(b), _) => Value::Int(i64::from(*b)),
        (J::Number(n), Some("decimal")) => Value::Decimal(n.to_string().parse().map_err(|_| bad())?),
        (J::Number(n), _) if n.is_i64() => Value::Int(n.as_i64().expect("checked")),
        (J::Number(n), _) if n.is_u64() => Value::UInt(n.as_u64().expect("checked")),
        (J::Number(n), _) => Value::Double(n.as_f64().ok_or_else(bad)?),
        (J::String(s), Some("date")) => Value::Date(s.parse().map_err(|_| bad())?),
        (J::String(s), Some("datetime")) => Value::DateTime(s.parse().map_err(|_| bad())?),
        (J::String(s), Some("decimal")) => Value::Decimal(s.parse().map_err(|_| bad())?),
        (J::String(s), Some("time")) => Value::Time(s.parse().map_err(|_| bad())?),
        (J::String(s), _) => Value::Text(s.clone()),
        (other, _) => Value::Json(other.to_string()),
    })
}

/// Where the previewed v1 row comes from.
pub enum PreviewRow<'a> {
    /// A JSON object, read with the v1 column types where the source is reachable.
    Json(&'a str),
    /// The row with this primary-key value, read from v1 (the tenant's database).
    Key(&'a str),
}

/// Reads the row of `table` whose single-column primary key is `key` from `db`,
/// exactly as the snapshot reads rows.
async fn read_v1_row(config: &Config, db: &str, schema: &TableSchema, key: &str) -> anyhow::Result<Row> {
    let source = config
        .source
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--key reads v1: the configuration has no [source]"))?;
    let [pk] = schema.primary_key.as_slice() else {
        anyhow::bail!("--key needs a table with a one-column primary key; give the row with --row");
    };
    let mut conn = mysql_async::Conn::new(crate::source::mysql_opts(source)?).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
        .await?;
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| crate::source::schema::quote_ident(&c.name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {} = ?",
        cols.join(", "),
        crate::source::schema::quote_ident(db),
        crate::source::schema::quote_ident(&schema.table),
        crate::source::schema::quote_ident(pk)
    );
    let row: Option<mysql_async::Row> = conn.exec_first(sql, (key,)).await?;
    let row = row.ok_or_else(|| anyhow::anyhow!("{db}.{}: no row with {pk} = {key}", schema.table))?;
    Ok(Row(schema
        .columns
        .iter()
        .zip(row.unwrap())
        .map(|(c, v)| Ok((c.name.clone(), crate::source::convert::from_snapshot(c, v)?)))
        .collect::<anyhow::Result<Vec<_>>>()?))
}

/// The v2 rows (as JSON) that a v1 row of `table` becomes in tenant `tenant`.
pub async fn preview(
    config: &Config,
    table: &str,
    input: PreviewRow<'_>,
    tenant: Option<&str>,
) -> anyhow::Result<String> {
    let path = mapping_path(config)?;
    let mapping = Mapping::load(Path::new(path))?;
    let v1 = match input {
        PreviewRow::Key(_) => v1_catalog(config).await?,
        PreviewRow::Json(_) => v1_catalog(config).await.ok().flatten(),
    };
    let schema = v1
        .as_ref()
        .and_then(|(_, tables)| tables.iter().find(|t| t.table == table).cloned());
    let row = match input {
        PreviewRow::Json(row_json) => {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(row_json)
                .map_err(|e| anyhow::anyhow!("--row is not a JSON object: {e}"))?;
            Row(object
                .iter()
                .map(|(k, v)| {
                    let ty = schema
                        .as_ref()
                        .and_then(|s| s.column(k))
                        .map(|c| c.data_type.as_str());
                    Ok((k.clone(), json_value(k, ty, v)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?)
        }
        PreviewRow::Key(key) => {
            let (db, _) = v1.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--key reads v1, but no selected tenant database was found")
            })?;
            let db = tenant.unwrap_or(db);
            let schema = schema
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("v1 table {table} does not exist"))?;
            read_v1_row(config, db, schema, key).await?
        }
    };
    let key_names: Vec<String> = schema
        .as_ref()
        .map(|s| s.primary_key.clone())
        .unwrap_or_else(|| vec!["id".to_owned()]);
    let key = Row(key_names
        .iter()
        .filter_map(|k| row.get(k).map(|v| (k.clone(), v.clone())))
        .collect());
    let tenant = tenant
        .map(str::to_owned)
        .or_else(|| v1.as_ref().map(|(db, _)| db.clone()))
        .unwrap_or_else(|| "tenant".to_owned());
    let ev = ChangeEvent {
        tenant: tenant.clone(),
        database: tenant,
        table: table.to_owned(),
        op: Operation::Insert,
        key,
        before: None,
        after: Some(row),
        ddl: None,
        schema_version: 0,
        position: "preview.000001:4#0".parse().expect("valid position"),
        commit_time_micros: 0,
        transaction: TransactionInfo {
            id: "preview".into(),
            index: 0,
            last: true,
        },
    };
    let catalog = v2_catalog(config, &mapping).await?;
    let mut out = Vec::new();
    for &i in mapping.targets_of(table) {
        let t = mapping.table(i);
        let def = catalog[i]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("v2 table {} does not exist in the target", t.name))?;
        let def = mapping.projection(i, def).map_err(|e| anyhow::anyhow!(e))?;
        for w in mapping.apply(i, &def, &ev)? {
            let row: serde_json::Map<String, serde_json::Value> = match &w.change {
                Change::Upsert(values) => def
                    .columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| (c.name.clone(), sql_json(v)))
                    .collect(),
                Change::Delete(_) => {
                    serde_json::Map::from_iter([("_deleted".to_owned(), serde_json::Value::Bool(true))])
                }
                Change::Count { .. } => continue,
            };
            out.push(serde_json::json!({ "table": t.name, "row": row }));
        }
    }
    if out.is_empty() {
        anyhow::bail!("no v2 table is fed by v1 table {table} (or the row is filtered out)");
    }
    Ok(serde_json::to_string_pretty(&out)?)
}

fn sql_json(v: &SqlValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        SqlValue::Null => J::Null,
        SqlValue::Bool(b) => J::Bool(*b),
        SqlValue::Int(i) => J::from(*i),
        SqlValue::Uuid(u) => J::String(uuid::Uuid::from_bytes(*u).to_string()),
        SqlValue::Instant(m) => {
            let dt = crate::sink::postgres::utc_datetime(*m);
            J::String(format!(
                "{}T{:02}:{:02}:{:02}.{:06}Z",
                dt.date, dt.hour, dt.minute, dt.second, dt.micros
            ))
        }
        SqlValue::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
        other => {
            let mut s = String::new();
            crate::sink::postgres::copy_text(&mut s, other);
            J::String(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_point_at_the_column_of_the_table() {
        let text =
            "x = 1\n[[tables]]\nname = \"A\"\n[tables.columns]\nId = {}\n[[tables]]\nname = \"B\"\nId = {}\n";
        assert_eq!(line_of(text, "A", None), Some(3));
        assert_eq!(line_of(text, "A", Some("Id")), Some(5));
        assert_eq!(line_of(text, "B", Some("Id")), Some(8));
        assert_eq!(line_of(text, "C", None), None);
    }

    #[test]
    fn conversions_are_checked_against_both_column_types() {
        assert!(fits_v2(Convert::Bit, &SqlType::Bool));
        assert!(!fits_v2(Convert::Bit, &SqlType::Int));
        assert!(fits_v2(Convert::LocalToUtc, &SqlType::DateTimeOffset));
        assert!(!fits_v2(Convert::LocalToUtc, &SqlType::Text { max_chars: None }));
        assert!(fits_v1(Convert::LocalToUtc, "datetime"));
        assert!(!fits_v1(Convert::LocalToUtc, "varchar"));
        assert!(fits_v1(Convert::PhpJson, "text"));
        assert!(!fits_v1(Convert::Bit, "datetime"));
    }

    #[test]
    fn json_rows_are_read_with_the_v1_column_types() {
        let v = json_value("dob", Some("date"), &serde_json::json!("1941-03-07")).unwrap();
        assert!(matches!(v, Value::Date(_)));
        let v = json_value("id", None, &serde_json::json!(7)).unwrap();
        assert_eq!(v, Value::Int(7));
        assert!(json_value("dob", Some("date"), &serde_json::json!("not a date")).is_err());
    }
}
