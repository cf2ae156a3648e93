//! The PinpointCare example (`connectors/pinpoint/`): the two v2 DDL files
//! describe the same tables, the mapping names only tables and columns that
//! exist on both sides (and cannot put a NULL into a NOT NULL column), and on
//! the local stack a v1 tenant loaded from `v1-schema.sql` arrives in v2 with
//! every row and every declared foreign key resolved.
//!
//! The DDL is read by a small parser here (CREATE TABLE, columns, NOT NULL,
//! DEFAULT, PRIMARY KEY, FOREIGN KEY), enough for these files, not for SQL at large.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cdc_bridge::sink::target::SqlType;
use cdc_bridge::transform::mapping::{ColumnMapping, Convert, Mapping};
use common::pinpoint::{
    example_dir, example_file, example_v1, example_v2, run_mysql, statements, RESTORE_FOREIGN_KEYS,
};
use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::pg_client;
use mysql_async::prelude::Queryable;
use uuid::Uuid;

/// The mapping's namespace, written out here so ids are derived independently.
const NAMESPACE: &str = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001";

// ---------------------------------------------------------------------------
// A DDL reader for the example's files.

#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    /// Lower case, no blanks: `nvarchar(120)`, `decimal(9,2)`, `timestamptz(6)`.
    ty: String,
    nullable: bool,
    has_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    parent: String,
    parent_columns: Vec<String>,
    deferred: bool,
}

#[derive(Debug, Clone, Default)]
struct Table {
    name: String,
    columns: Vec<Column>,
    primary_key: Vec<String>,
    foreign_keys: Vec<ForeignKey>,
}

impl Table {
    fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn unquote(ident: &str) -> String {
    ident
        .trim()
        .trim_matches(|c| matches!(c, '[' | ']' | '"' | '`'))
        .to_owned()
}

/// The last part of a possibly schema-qualified name.
fn object_name(qualified: &str) -> String {
    unquote(qualified.trim().rsplit('.').next().unwrap_or_default())
}

/// Splits at commas outside parentheses and quotes.
fn split_top_level(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut current) = (0usize, None::<char>, String::new());
    for c in body.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '[' => quote = Some(']'),
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(current.trim().to_owned());
                    current.clear();
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// `("A", "B")` (the first parenthesized list in `text`) as names.
fn ident_list(text: &str) -> Vec<String> {
    let open = text.find('(').expect("a column list");
    let close = open + text[open..].find(')').expect("a closed column list");
    text[open + 1..close].split(',').map(unquote).collect()
}

fn parse_column(item: &str) -> Column {
    let item = item.trim();
    let name_end = item.find(char::is_whitespace).expect("a column type");
    let rest = item[name_end..].trim_start();
    let word_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let mut ty = rest[..word_end].to_ascii_lowercase();
    let after = &rest[word_end..];
    if after.trim_start().starts_with('(') {
        let open = after.find('(').expect("checked");
        let close = open + after[open..].find(')').expect("closed type arguments");
        let args: String = after[open..=close]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        ty.push_str(&args.to_ascii_lowercase());
    }
    let upper = item.to_ascii_uppercase();
    Column {
        name: unquote(&item[..name_end]),
        ty,
        nullable: !upper.contains("NOT NULL") && !upper.contains("PRIMARY KEY"),
        has_default: upper.contains(" DEFAULT ") || upper.contains("AUTO_INCREMENT"),
    }
}

/// Every CREATE TABLE of a file, in file order.
fn parse_tables(sql: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    for stmt in statements(sql) {
        let upper = stmt.to_ascii_uppercase();
        if !upper.starts_with("CREATE TABLE") {
            continue;
        }
        let open = stmt.find('(').expect("a table body");
        let close = stmt.rfind(')').expect("a closed table body");
        let head = stmt["CREATE TABLE".len()..open].trim();
        let head = if head.to_ascii_uppercase().starts_with("IF NOT EXISTS") {
            &head["IF NOT EXISTS".len()..]
        } else {
            head
        };
        let mut table = Table {
            name: object_name(head),
            ..Table::default()
        };
        for item in split_top_level(&stmt[open + 1..close]) {
            let upper = item.to_ascii_uppercase();
            let at = |word: &str| upper.find(word);
            if let Some(fk) = at("FOREIGN KEY") {
                let refs = at("REFERENCES").expect("REFERENCES");
                let target = &item[refs + "REFERENCES".len()..];
                let target_open = target.find('(').expect("referenced columns");
                table.foreign_keys.push(ForeignKey {
                    columns: ident_list(&item[fk..refs]),
                    parent: object_name(&target[..target_open]),
                    parent_columns: ident_list(target),
                    deferred: upper.contains("DEFERRABLE INITIALLY DEFERRED"),
                });
            } else if upper.starts_with("CONSTRAINT") || upper.starts_with("PRIMARY KEY") {
                if let Some(pk) = at("PRIMARY KEY") {
                    table.primary_key = ident_list(&item[pk..]);
                }
            } else if ["KEY ", "UNIQUE ", "INDEX "].iter().any(|k| upper.starts_with(k)) {
                // An index: not part of what is compared.
            } else {
                let column = parse_column(&item);
                if upper.contains("PRIMARY KEY") {
                    table.primary_key = vec![column.name.clone()];
                }
                table.columns.push(column);
            }
        }
        tables.push(table);
    }
    tables
}

fn by_name(tables: Vec<Table>) -> BTreeMap<String, Table> {
    tables.into_iter().map(|t| (t.name.clone(), t)).collect()
}

/// The PostgreSQL type the example's README promises for a SQL Server type.
fn pg_equivalent(mssql: &str) -> Option<String> {
    let (word, args) = match mssql.split_once('(') {
        Some((w, a)) => (w, Some(a.trim_end_matches(')'))),
        None => (mssql, None),
    };
    Some(match (word, args) {
        ("uniqueidentifier", None) => "uuid".into(),
        ("nvarchar", Some("max")) => "text".into(),
        ("nvarchar", Some(n)) => format!("varchar({n})"),
        ("bit", None) => "boolean".into(),
        ("datetimeoffset", Some("7")) => "timestamptz(6)".into(),
        ("datetime2", Some("7")) => "timestamp(6)".into(),
        ("decimal", Some(ps)) => format!("numeric({ps})"),
        ("int", None) => "integer".into(),
        ("bigint", None) => "bigint".into(),
        ("date", None) => "date".into(),
        ("varbinary" | "binary", Some(_)) => "bytea".into(),
        _ => return None,
    })
}

/// The type the SQL Server sink reads from its catalog for a declared type.
fn mssql_sink_type(ty: &str) -> Option<SqlType> {
    let (word, args) = ty.split_once('(').unwrap_or((ty, ""));
    let args: Vec<&str> = args.trim_end_matches(')').split(',').collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<i32>().ok());
    let length = if args.first() == Some(&"max") {
        Some(-1)
    } else {
        num(0)
    };
    let (precision, scale) = match word {
        "decimal" | "numeric" => (num(0).map(|p| p as u8), num(1)),
        _ => (None, None),
    };
    cdc_bridge::sink::sqlserver::mssql_type(word, length, precision, scale)
}

/// The type the PostgreSQL sink reads from `information_schema` for a declared type.
fn pg_sink_type(ty: &str) -> Option<SqlType> {
    let (word, args) = ty.split_once('(').unwrap_or((ty, ""));
    let args: Vec<i32> = args
        .trim_end_matches(')')
        .split(',')
        .filter_map(|a| a.parse().ok())
        .collect();
    let (data_type, length, precision, scale) = match word {
        "varchar" => ("character varying", args.first().copied(), None, None),
        "numeric" => ("numeric", None, args.first().copied(), args.get(1).copied()),
        "timestamptz" => ("timestamp with time zone", None, None, None),
        "timestamp" => ("timestamp without time zone", None, None, None),
        other => (other, None, None, None),
    };
    cdc_bridge::sink::postgres::pg_type(data_type, length, precision, scale)
}

/// Bounded and unbounded binary types hold the same values for this purpose.
fn comparable(ty: SqlType) -> SqlType {
    match ty {
        SqlType::Bytes { .. } => SqlType::Bytes { max_len: None },
        other => other,
    }
}

#[test]
fn sqlserver_and_postgres_ddl_are_equivalent() {
    let mssql = parse_tables(&example_file("v2-sqlserver.sql"));
    let pg = parse_tables(&example_file("v2-postgres.sql"));
    let names = |ts: &[Table]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&mssql), names(&pg), "the same tables in the same order");
    assert_eq!(mssql.len(), 13, "{:?}", names(&mssql));

    let mut problems = Vec::new();
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let order = names(&pg);
    for (m, p) in mssql.iter().zip(&pg) {
        let column_names = |t: &Table| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if column_names(m) != column_names(p) {
            problems.push(format!(
                "{}: columns differ\n  sqlserver {:?}\n  postgres  {:?}",
                m.name,
                column_names(m),
                column_names(p)
            ));
            continue;
        }
        for (mc, pc) in m.columns.iter().zip(&p.columns) {
            let at = format!("{}.{}", m.name, mc.name);
            match pg_equivalent(&mc.ty) {
                Some(want) if want == pc.ty => {}
                want => problems.push(format!(
                    "{at}: {} should be {want:?} in PostgreSQL, is {}",
                    mc.ty, pc.ty
                )),
            }
            if mc.nullable != pc.nullable {
                problems.push(format!(
                    "{at}: nullable {} in SQL Server, {} in PostgreSQL",
                    mc.nullable, pc.nullable
                ));
            }
            match (mssql_sink_type(&mc.ty), pg_sink_type(&pc.ty)) {
                (Some(a), Some(b)) if comparable(a.clone()) == comparable(b.clone()) => {}
                (a, b) => problems.push(format!(
                    "{at}: the sinks read {} as {a:?} and {} as {b:?}",
                    mc.ty, pc.ty
                )),
            }
        }
        if m.primary_key != p.primary_key || m.primary_key != ["Id"] {
            problems.push(format!(
                "{}: primary keys {:?} / {:?}, want [\"Id\"]",
                m.name, m.primary_key, p.primary_key
            ));
        }
        let plain = |fks: &[ForeignKey]| {
            fks.iter()
                .map(|f| (f.columns.clone(), f.parent.clone(), f.parent_columns.clone()))
                .collect::<BTreeSet<_>>()
        };
        if plain(&m.foreign_keys) != plain(&p.foreign_keys) {
            problems.push(format!(
                "{}: foreign keys differ\n  sqlserver {:?}\n  postgres  {:?}",
                m.name, m.foreign_keys, p.foreign_keys
            ));
        }
        for fk in &p.foreign_keys {
            if !fk.deferred {
                problems.push(format!("{}: {fk:?} is not DEFERRABLE INITIALLY DEFERRED", p.name));
            }
            // Parents come first, so each file runs top to bottom.
            match (
                order.iter().position(|n| *n == fk.parent),
                order.iter().position(|n| *n == p.name),
            ) {
                (Some(parent), Some(child)) if parent < child => {}
                _ => problems.push(format!(
                    "{}: {fk:?} references a table not created before it",
                    p.name
                )),
            }
            declared.insert(format!("{}.{}", p.name, fk.columns.join(",")));
        }
    }
    assert!(
        problems.is_empty(),
        "the v2 DDL files differ:\n{}",
        problems.join("\n")
    );
    assert!(
        !declared.iter().any(|fk| fk.ends_with(".PatientId")),
        "no FK points at Patients (soft-deleted patients are filtered): {declared:?}"
    );
}

// ---------------------------------------------------------------------------
// The mapping against the three schemas.

/// Whether a mapped value can be NULL, given the v1 column(s) it reads.
fn can_be_null(spec: &ColumnMapping, v1: &Table) -> bool {
    if spec.tenant || spec.value.is_some() {
        return false;
    }
    let sources: Vec<&Column> = spec
        .from
        .as_ref()
        .map(|f| f.as_slice().iter().filter_map(|c| v1.column(c)).collect())
        .unwrap_or_default();
    let any_nullable = sources.iter().any(|c| c.nullable);
    if spec.id_of.is_some() || spec.lookup.is_some() {
        return any_nullable;
    }
    // Zero dates read as NULL whatever the conversion.
    let temporal = sources
        .iter()
        .any(|c| matches!(c.ty.as_str(), "date" | "datetime"));
    any_nullable
        || temporal
        || matches!(
            spec.convert,
            Convert::NullIfEmpty
                | Convert::TrimNullIfEmpty
                | Convert::Date
                | Convert::LocalToUtc
                | Convert::PhpJson
        )
}

fn load_mapping() -> Mapping {
    Mapping::load(&example_dir().join("mapping.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_mapping_validates_against_both_schemas() {
    let mapping = load_mapping();
    assert_eq!(mapping.file.namespace, Uuid::parse_str(NAMESPACE).unwrap());
    assert_eq!(mapping.file.target_schema, "v2");
    let v1 = by_name(parse_tables(&example_file("v1-schema.sql")));
    let mssql = by_name(parse_tables(&example_file("v2-sqlserver.sql")));
    let pg = by_name(parse_tables(&example_file("v2-postgres.sql")));
    // v1 table -> the v2 table whose Id is that table's id.
    let v2_of: BTreeMap<&str, &str> = mapping
        .file
        .tables
        .iter()
        .map(|t| (t.from.as_str(), t.name.as_str()))
        .collect();

    let mut problems = Vec::new();
    for t in &mapping.file.tables {
        let at = format!("{} (from {})", t.name, t.from);
        let (Some(v2), Some(v1t)) = (mssql.get(&t.name), v1.get(&t.from)) else {
            problems.push(format!("{at}: no such v2 table or v1 table"));
            continue;
        };
        if !pg.contains_key(&t.name) {
            problems.push(format!("{at}: not in v2-postgres.sql"));
        }
        if t.key.as_slice() != v2.primary_key.as_slice() {
            problems.push(format!(
                "{at}: key {:?} is not the primary key {:?}",
                t.key, v2.primary_key
            ));
        }
        for f in &t.skip_if {
            if v1t.column(&f.column).is_none() {
                problems.push(format!("{at}: skip_if column {} is not in v1", f.column));
            }
        }
        for (name, spec) in &t.columns {
            let Some(v2c) = v2.column(name) else {
                problems.push(format!("{at}: v2 has no column {name}"));
                continue;
            };
            for from in spec.from.iter().flat_map(|f| f.as_slice()) {
                if v1t.column(from).is_none() {
                    problems.push(format!("{at}.{name}: v1 {} has no column {from}", t.from));
                }
            }
            if let Some(of) = &spec.id_of {
                match (v1.get(of), &spec.from) {
                    (None, _) => problems.push(format!("{at}.{name}: id_of names no v1 table: {of}")),
                    (Some(_), None) if *of != t.from => {
                        problems.push(format!("{at}.{name}: an own id must be of {}, not {of}", t.from))
                    }
                    (Some(parent), Some(from)) if parent.primary_key.len() != from.as_slice().len() => {
                        problems.push(format!(
                            "{at}.{name}: {} columns for the {}-column key of {of}",
                            from.as_slice().len(),
                            parent.primary_key.len()
                        ))
                    }
                    _ => {}
                }
                if v2c.ty != "uniqueidentifier" {
                    problems.push(format!("{at}.{name}: an id in a {} column", v2c.ty));
                }
                // A declared FK on this column must point where the id points.
                for fk in v2.foreign_keys.iter().filter(|f| f.columns == [name.clone()]) {
                    if v2_of.get(of.as_str()) != Some(&fk.parent.as_str()) {
                        problems.push(format!("{at}.{name}: id of {of} but FK to {}", fk.parent));
                    }
                }
            }
            if !v2c.nullable && can_be_null(spec, v1t) {
                problems.push(format!(
                    "{at}.{name}: NOT NULL in v2 but the mapping can give NULL"
                ));
            }
        }
        for c in &v2.columns {
            if !c.nullable && !c.has_default && !t.columns.contains_key(&c.name) {
                problems.push(format!(
                    "{at}: NOT NULL column {} without a default is not mapped",
                    c.name
                ));
            }
        }
        for fk in &v2.foreign_keys {
            let column = fk.columns.join(",");
            if t.columns.get(&column).is_some_and(|c| c.id_of.is_none()) {
                problems.push(format!("{at}.{column}: a foreign key not mapped with id_of"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the mapping does not fit:\n{}",
        problems.join("\n")
    );

    // Everything with a key is mapped; what is not is known and said in the README.
    let mapped_v1: BTreeSet<&str> = v2_of.keys().copied().collect();
    let unmapped_v1: Vec<&String> = v1.keys().filter(|n| !mapped_v1.contains(n.as_str())).collect();
    assert_eq!(unmapped_v1, ["audit_log"]);
    assert!(v1["audit_log"].primary_key.is_empty());
    assert!(v1
        .values()
        .filter(|t| t.name != "audit_log")
        .all(|t| t.primary_key == ["id"]));
    let mapped_v2: BTreeSet<&str> = v2_of.values().copied().collect();
    let unmapped_v2: Vec<&String> = mssql.keys().filter(|n| !mapped_v2.contains(n.as_str())).collect();
    assert_eq!(unmapped_v2, ["LegacyDocuments"]);
}

// ---------------------------------------------------------------------------
// End to end on the local stack.

/// A small tenant: patient 4 is soft-deleted from the start, patient 3 while
/// streaming (see `STREAMED`); both have children.
const SEED: &str = r#"
INSERT INTO facilities (id, name, code, timezone, phone, city, state, zip, is_active, created_at) VALUES
 (1, 'Riverside Clinic', 'RVS', 'America/Chicago', '312-555-0100', 'Chicago', 'IL', '60601', 1,
  '2015-03-02 08:00:00'),
 (2, ' Maple Grove Home Health ', '', 'America/Chicago', NULL, 'Evanston', 'IL', '60201', 1,
  '0000-00-00 00:00:00');
INSERT INTO users (id, facility_id, username, password_hash, email, first_name, last_name, role, credentials,
                   is_active, last_login_at, created_at) VALUES
 (1, 1, 'amorales', '$2y$10$abc', 'ana@example.org', 'Ana', 'Morales', 'RN', 'RN, BSN', 1,
  '2024-06-30 17:45:00', '2015-03-02 08:30:00'),
 (2, 1, 'blindqvist', '$2y$10$def', NULL, 'Björn', 'Lindqvist', 'MD', 'MD', 1, NULL, '2016-01-10 09:00:00'),
 (3, 2, 'swilson', '', '', '', 'Wilson', 'SW', NULL, 0, NULL, '0000-00-00 00:00:00');
INSERT INTO patients (id, facility_id, primary_clinician_id, mrn, first_name, last_name, dob, gender,
                      is_active, deleted, prefs, created_at, updated_at) VALUES
 (1, 1, 2, 'MRN-0001', 'Zoë', ' Núñez ', '1941-03-07', 'F', 1, 0,
  'a:2:{s:4:"lang";s:2:"es";s:9:"reminders";b:1;}', '2024-01-15 09:30:00', NULL),
 (2, 2, NULL, NULL, '  ', 'Okafor', '0000-00-00', '', 0, 0, NULL, '2024-11-03 01:30:00', NULL),
 (3, 1, 1, 'MRN-0003', 'Lee', 'Park', '1950-01-01', 'M', 1, 0, 'a:0:{}', '2024-07-01 09:30:00',
  '2024-07-02 10:00:00'),
 (4, 2, NULL, NULL, 'Gone', 'Away', '1960-05-05', 'U', 0, 1, NULL, '2023-02-01 12:00:00', NULL);
INSERT INTO patient_contacts (id, patient_id, contact_type, relationship, name, phone, email, is_primary,
                              notes, created_at) VALUES
 (1, 1, 1, 'Daughter', 'María Núñez', '312-555-0199', NULL, 1, NULL, '2024-01-15 09:45:00'),
 (2, 1, 2, 'Son', 'Luis Núñez', NULL, 'luis@example.org', 0, 'Legal guardian since 2023',
  '2024-01-16 10:00:00'),
 (3, 4, 3, NULL, 'Pat Away', NULL, NULL, 0, '', '2023-02-01 12:05:00');
INSERT INTO care_plans (id, patient_id, created_by_id, title, status, start_date, end_date, created_at) VALUES
 (1, 1, 1, 'Fall prevention', 'active', '2024-01-20', '0000-00-00', '2024-01-20 14:00:00'),
 (2, 3, 2, 'Diabetes self-management', 'draft', '0000-00-00', '0000-00-00', '2024-07-02 11:00:00');
INSERT INTO care_plan_goals (id, care_plan_id, description, target_date, status, sort_order, created_at)
VALUES
 (1, 1, 'No falls in 90 days', '2024-04-20', 'O', 1, '2024-01-20 14:05:00'),
 (2, 1, 'Uses walker indoors', '0000-00-00', 'M', 2, '2024-01-20 14:06:00'),
 (3, 2, 'HbA1c below 7%', '2024-12-31', 'O', 1, '2024-07-02 11:02:00');
INSERT INTO care_plan_interventions (id, care_plan_id, goal_id, assigned_to_id, description, frequency,
                                     is_completed, completed_at, created_at) VALUES
 (1, 1, 1, 1, 'Home safety walk-through', 'once', 1, '2024-01-25 15:00:00', '2024-01-20 14:10:00'),
 (2, 1, 2, NULL, 'Physical therapy referral', '', 0, NULL, '2024-01-20 14:12:00'),
 (3, 2, NULL, 2, 'Glucose log review', 'weekly', 0, NULL, '2024-07-02 11:05:00');
INSERT INTO survey_templates (id, name, code, version, kind, is_active, scoring, created_at) VALUES
 (1, 'PHQ-9 Depression Screen', 'PHQ9', 2, 'A', 1,
  'a:2:{i:0;a:2:{s:3:"max";i:4;s:5:"label";s:7:"minimal";}i:1;a:2:{s:3:"max";i:9;s:5:"label";s:4:"mild";}}',
  '2015-05-01 08:00:00'),
 (2, 'Visit satisfaction', NULL, 1, 'S', 1, NULL, '2019-09-09 09:09:09');
INSERT INTO survey_questions (id, template_id, position, question_text, answer_type, options, max_score,
                              is_required) VALUES
 (1, 1, 1, 'Little interest or pleasure in doing things?', 'choice',
  CONCAT('a:4:{i:0;s:10:"Not at all";i:1;s:12:"Several days";',
         'i:2;s:23:"More than half the days";i:3;s:16:"Nearly every day";}'),
  3.00, 1),
 (2, 1, 2, 'Feeling down, depressed, or hopeless?', 'choice',
  CONCAT('a:4:{i:0;s:10:"Not at all";i:1;s:12:"Several days";',
         'i:2;s:23:"More than half the days";i:3;s:16:"Nearly every day";}'),
  3.00, 1),
 (3, 1, 3, ' Comments ', 'text', NULL, NULL, 0),
 (4, 2, 1, 'Would you recommend us?', 'yesno', NULL, NULL, 1),
 (5, 2, 2, 'Anything else?', 'text', '', NULL, 0);
INSERT INTO assessments (id, patient_id, template_id, clinician_id, reviewed_by, status, started_at,
                         completed_at, total_score, created_at) VALUES
 (1, 1, 1, 1, 0, 'C', '2024-03-10 01:50:00', '2024-03-10 03:10:00', 4.00, '2024-03-10 01:50:00'),
 (2, 3, 2, 2, 2, 'P', '2024-07-02 11:30:00', NULL, NULL, '2024-07-02 11:30:00');
INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text, score, answered_at) VALUES
 (1, 1, 1, '1', 1.00, '2024-03-10 01:55:00'),
 (2, 1, 2, '3', 3.00, '2024-03-10 03:05:00'),
 (3, 1, 3, 'Feels isolated since moving.', NULL, '2024-03-10 03:09:00'),
 (4, 2, 4, 'yes', NULL, '2024-07-02 11:31:00');
INSERT INTO notes (id, patient_id, author_id, assessment_id, category, subject, body, is_private, created_at)
VALUES
 (1, 1, 1, 1, 'CLN', 'PHQ-9 follow-up', 'Discussed results.\nWill re-screen in 2 weeks.', 0,
  '2024-03-10 03:15:00'),
 (2, 4, 2, NULL, 'GEN', NULL, 'Chart closed.', 1, '2023-02-02 08:00:00'),
 (3, 3, 1, NULL, 'SOC', '', '  Lives alone; daughter visits weekly.', 0, '2024-07-02 12:00:00');
INSERT INTO audit_log (logged_at, user_id, action, table_name, row_id, ip, details) VALUES
 ('2024-03-10 03:15:00', 1, 'create', 'notes', 1, '10.0.0.5', NULL),
 ('2024-03-10 03:15:00', 1, 'create', 'notes', 1, '10.0.0.5', NULL);
"#;

/// Changes made while the source streams the binlog.
const STREAMED: &str = r#"
UPDATE patients SET deleted = 1, updated_at = '2024-08-01 09:00:00' WHERE id = 3;
INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text, score, answered_at) VALUES
 (5, 2, 5, '', NULL, NULL);
UPDATE notes SET body = CONCAT(body, '\nRe-screen booked.'), updated_at = '2024-03-11 08:00:00' WHERE id = 1;
INSERT INTO audit_log (logged_at, user_id, action, table_name, row_id) VALUES
 ('2024-08-01 09:00:00', 2, 'delete', 'patients', 3);
"#;

/// One v1 transaction across tables, applied once v2's foreign keys are back:
/// the sink writes AssessmentAnswers before Assessments (name order) in one
/// target transaction, which the deferred constraints allow.
const STREAMED_WITH_FKS: &str = r#"
START TRANSACTION;
INSERT INTO assessments (id, patient_id, template_id, clinician_id, status, started_at, completed_at,
                         total_score, created_at) VALUES
 (3, 1, 1, 2, 'C', '2024-03-24 10:00:00', '2024-03-24 10:20:00', 2.00, '2024-03-24 10:00:00');
INSERT INTO assessment_answers (id, assessment_id, question_id, answer_text, score, answered_at) VALUES
 (6, 3, 1, '1', 1.00, '2024-03-24 10:05:00'),
 (7, 3, 2, '1', 1.00, '2024-03-24 10:10:00');
INSERT INTO notes (id, patient_id, author_id, assessment_id, category, subject, body, created_at) VALUES
 (4, 1, 2, 3, 'CLN', 'PHQ-9 re-screen', 'Improved.', '2024-03-24 10:25:00');
COMMIT;
"#;

/// v2 rows expected after `SEED` and `STREAMED`.
const EXPECTED_ROWS: &[(&str, i64)] = &[
    ("Facilities", 2),
    ("Clinicians", 3),
    ("Patients", 2), // 3 and 4 soft-deleted
    ("PatientContacts", 3),
    ("CarePlans", 2),
    ("CarePlanGoals", 3),
    ("CarePlanInterventions", 3),
    ("AssessmentTemplates", 2),
    ("AssessmentQuestions", 5),
    ("Assessments", 2),
    ("AssessmentAnswers", 5),
    ("Notes", 3),
];

/// What `STREAMED_WITH_FKS` adds.
const ADDED_WITH_FKS: &[(&str, i64)] = &[("Assessments", 1), ("AssessmentAnswers", 2), ("Notes", 1)];

/// Children of the soft-deleted patients 3 and 4: their PatientId resolves to nothing.
const EXPECTED_DANGLING: &[(&str, &str, i64)] = &[
    ("PatientContacts", "PatientId", 1),
    ("CarePlans", "PatientId", 1),
    ("Assessments", "PatientId", 1),
    ("Notes", "PatientId", 2),
];

/// The v2 id of v1 row `id` of `table`: UUIDv5 over the JSON of
/// `[tenant, table, "[\"<id>\"]"]`, written out here rather than taken from the crate.
fn expected_id(tenant: &str, table: &str, id: i64) -> String {
    let name = format!(r#"["{tenant}","{table}","[\"{id}\"]"]"#);
    Uuid::new_v5(&Uuid::parse_str(NAMESPACE).unwrap(), name.as_bytes()).to_string()
}

async fn row_counts(pg: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (table, _) in EXPECTED_ROWS {
        let n = pg
            .query_one(&format!(r#"SELECT count(*) FROM "{schema}"."{table}""#), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1);
        out.insert((*table).to_owned(), n);
    }
    out
}

/// Waits until every mapped v2 table holds `expected` rows (logs on timeout).
async fn wait_for_counts(
    pg: &tokio_postgres::Client,
    schema: &str,
    expected: &BTreeMap<String, i64>,
    processes: [&BridgeProcess; 2],
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let actual = row_counts(pg, schema).await;
        if &actual == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "v2 row counts differ:\nexpected {expected:#?}\nactual {actual:#?}\n--- source\n{}\n--- sink\n{}",
            processes[0].log_text(),
            processes[1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_loads_and_maps_end_to_end() {
    let p = Pipeline::new("ppexample", 1, "").await;
    let db = p.databases[0].clone();
    let pg = pg_client(&p.stack).await;

    // v1: the example schema and a few rows, in the tenant database.
    let mut conn = example_v1(&p, SEED).await;

    // v2: the example DDL and mapping, moved to a schema of this test's own.
    // The snapshot arrives table by table in name order, over several batches
    // (children before parents): the initial sync runs without the FKs.
    let (schema, group) = example_v2(&p, &pg).await;
    let saved_fks: i64 = pg
        .query_one("SELECT count(*) FROM pinpoint_fks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(saved_fks, 16, "the foreign keys of v2-postgres.sql");

    let source = p.start_source(&[]);
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    source.wait_streaming(Duration::from_secs(120)).await;
    run_mysql(&mut conn, STREAMED).await;

    let mut expected: BTreeMap<String, i64> =
        EXPECTED_ROWS.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
    wait_for_counts(&pg, &schema, &expected, [&source, &sink]).await;

    // Caught up: the foreign keys go back on, checked against every row.
    pg.batch_execute(RESTORE_FOREIGN_KEYS)
        .await
        .unwrap_or_else(|e| panic!("re-adding the v2 foreign keys: {e:?}"));
    run_mysql(&mut conn, STREAMED_WITH_FKS).await;
    for (table, n) in ADDED_WITH_FKS {
        *expected.get_mut(*table).unwrap() += n;
    }
    wait_for_counts(&pg, &schema, &expected, [&source, &sink]).await;

    // Conversions, spot-checked against values worked out by hand.
    let s = &schema;
    let checks: Vec<(String, Option<String>)> = vec![
        (
            format!(r#"SELECT "Id"::text FROM "{s}"."Patients" WHERE "LegacyV1Key" = '1'"#),
            Some(expected_id(&db, "patients", 1)),
        ),
        (
            format!(r#"SELECT "FacilityId"::text FROM "{s}"."Patients" WHERE "LegacyV1Key" = '2'"#),
            Some(expected_id(&db, "facilities", 2)),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', "TenantId", "FirstName", "LastName", "DateOfBirth", "Gender",
                          "IsActive"::text, "PreferencesJson", "CreatedAtUtc", "IsLegacy"::text,
                          "LegacySource")
                   FROM "{s}"."Patients" WHERE "LegacyV1Key" = '1'"#
            ),
            // 09:30 CST = 15:30 UTC.
            Some(format!(
                r#"{db}|Zoë|Núñez|1941-03-07|Female|true|{}|2024-01-15 15:30:00+00|true|v1"#,
                r#"{"lang":"es","reminders":true}"#
            )),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', coalesce("FirstName", '-'), coalesce("DateOfBirth"::text, '-'),
                          "Gender", "IsActive"::text, coalesce("PrimaryClinicianId"::text, '-'),
                          "CreatedAtUtc")
                   FROM "{s}"."Patients" WHERE "LegacyV1Key" = '2'"#
            ),
            // Blank name and zero date become NULL; 01:30 on 2024-11-03 happens
            // twice in Chicago, the earlier (CDT, UTC-5) is taken.
            Some("-|-|Unknown|false|-|2024-11-03 06:30:00+00".to_owned()),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', "Name", coalesce("Code", '-'), coalesce("CreatedAtUtc"::text, '-'))
                   FROM "{s}"."Facilities" WHERE "LegacyV1Key" = '2'"#
            ),
            Some("Maple Grove Home Health|-|-".to_owned()),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', "FirstName", "Role") FROM "{s}"."Clinicians"
                   WHERE "LegacyV1Key" = '2'"#
            ),
            Some("Björn|Physician".to_owned()),
        ),
        (
            // 01:50 CST = 07:50 UTC; 03:10 CDT (after the gap) = 08:10 UTC.
            format!(
                r#"SELECT concat_ws('|', "Status", "StartedAtUtc", "CompletedAtUtc", "TotalScore",
                          coalesce("ReviewedByClinicianId"::text, '-'))
                   FROM "{s}"."Assessments" WHERE "LegacyV1Key" = '1'"#
            ),
            Some("Completed|2024-03-10 07:50:00+00|2024-03-10 08:10:00+00|4.00|-".to_owned()),
        ),
        (
            format!(r#"SELECT "OptionsJson" FROM "{s}"."AssessmentQuestions" WHERE "LegacyV1Key" = '1'"#),
            Some(r#"["Not at all","Several days","More than half the days","Nearly every day"]"#.to_owned()),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', "Category", "Body") FROM "{s}"."Notes" WHERE "LegacyV1Key" = '1'"#
            ),
            Some("Clinical|Discussed results.\nWill re-screen in 2 weeks.\nRe-screen booked.".to_owned()),
        ),
        (
            format!(
                r#"SELECT concat_ws('|', "Status", coalesce("EndDate"::text, '-'))
                   FROM "{s}"."CarePlans" WHERE "LegacyV1Key" = '1'"#
            ),
            Some("Active|-".to_owned()),
        ),
    ];
    let mut differ = Vec::new();
    for (sql, want) in &checks {
        let got: Option<String> = pg
            .query_opt(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"))
            .and_then(|r| r.get(0));
        if &got != want {
            differ.push(format!("{sql}\n  expected {want:?}\n  actual   {got:?}"));
        }
    }
    assert!(differ.is_empty(), "v2 values differ:\n{}", differ.join("\n"));

    // Every declared foreign key resolves; the only dangling references are the
    // undeclared PatientId columns of soft-deleted patients' children.
    let mapping = load_mapping();
    let ddl_tables = by_name(parse_tables(&example_file("v2-postgres.sql")));
    let v2_of: BTreeMap<&str, &str> = mapping
        .file
        .tables
        .iter()
        .map(|t| (t.from.as_str(), t.name.as_str()))
        .collect();
    let mut dangling = BTreeMap::new();
    let mut declared_checked = 0;
    for t in &mapping.file.tables {
        for (column, spec) in &t.columns {
            let (Some(of), Some(_)) = (&spec.id_of, &spec.from) else {
                continue;
            };
            let parent = v2_of[of.as_str()];
            let declared = ddl_tables[&t.name]
                .foreign_keys
                .iter()
                .any(|f| f.columns == [column.clone()] && f.parent == parent);
            declared_checked += usize::from(declared);
            let n: i64 = pg
                .query_one(
                    &format!(
                        r#"SELECT count(*) FROM "{s}"."{child}" c
                           LEFT JOIN "{s}"."{parent}" p ON p."Id" = c."{column}"
                           WHERE c."{column}" IS NOT NULL AND p."Id" IS NULL"#,
                        child = t.name
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n != 0 || !declared {
                dangling.insert((t.name.clone(), column.clone(), declared), n);
            }
        }
    }
    let expected_dangling: BTreeMap<(String, String, bool), i64> = EXPECTED_DANGLING
        .iter()
        .map(|(t, c, n)| (((*t).to_owned(), (*c).to_owned(), false), *n))
        .collect();
    assert_eq!(
        dangling, expected_dangling,
        "references that resolve to nothing, as (table, column, declared FK) -> rows"
    );
    assert_eq!(declared_checked, 15, "declared foreign keys checked");

    let log = sink.log_text();
    assert!(!log.contains("dead-letter"), "no event was dead-lettered:\n{log}");

    sink.terminate();
    drop(source);
    common::pinpoint::drop_example(&pg, &schema, &group, &[db.as_str()]).await;
    conn.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}

/// Mapping mode on three tenants made by `cdc-bridge generate`: every mapped
/// v2 table holds the v1 rows the mapping keeps, a sample of patients has the
/// ids and names derived here independently, no event is dead-lettered, and
/// the foreign keys, re-added after the initial sync, hold for every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tenants_map_end_to_end() {
    let p = Pipeline::new("ppexample_gen", 1, "").await;
    let pg = pg_client(&p.stack).await;
    let prefix = format!("{}_g", p.prefix);
    let tenants: Vec<String> = (1..=3).map(|k| format!("{prefix}{k:02}")).collect();

    // v2 schema of the test's own, FKs off for the initial sync (see README.md);
    // the source captures the generated tenants.
    let (schema, group) = example_v2(&p, &pg).await;
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    let include_line = config
        .lines()
        .find(|l| l.starts_with("include = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &p.config_path,
        config.replace(&include_line, &format!("include = [\"{prefix}%\"]")),
    )
    .unwrap();

    // v1: three generated tenants (codes and PHP-serialized columns from the mapping).
    let s = &p.stack;
    let mut env = s.child_env();
    env.push((
        "CDC_BRIDGE_GENERATE_URL",
        format!(
            "mysql://{}:{}@{}:{}",
            s.mysql_admin_user, s.mysql_admin_password, s.mysql_host, s.mysql_port
        ),
    ));
    let schema_file = example_dir().join("v1-schema.sql");
    let out = common::cdc_bridge(
        &[
            "generate",
            "--config",
            common::path_str(&p.config_path),
            "--prefix",
            &prefix,
            "--tenants",
            "3",
            "--scale",
            "30",
            "--seed",
            "11",
            "--schema",
            common::path_str(&schema_file),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Expected v2 row counts: every v1 row, less the patients `skip_if` drops.
    let mapping = load_mapping();
    let mut conn = p.admin().await;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for t in &mapping.file.tables {
        let mut n = 0i64;
        for db in &tenants {
            let filter = if t.skip_if.is_empty() {
                ""
            } else {
                " WHERE deleted = 0"
            };
            let c: i64 = conn
                .query_first(format!("SELECT COUNT(*) FROM `{db}`.`{}`{filter}", t.from))
                .await
                .unwrap()
                .unwrap();
            n += c;
        }
        expected.insert(t.name.clone(), n);
    }
    assert!(expected["Patients"] > 0 && expected["AssessmentAnswers"] > expected["Patients"]);

    let source = p.start_source(&[]);
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut actual = BTreeMap::new();
        for table in expected.keys() {
            let n: i64 = pg
                .query_one(&format!(r#"SELECT count(*) FROM "{schema}"."{table}""#), &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            actual.insert(table.clone(), n);
        }
        if actual == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 row counts differ:\nexpected {expected:#?}\nactual {actual:#?}\n--- sink\n{}",
            sink.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = sink.log_text();
    assert!(!log.contains("dead-letter"), "no event was dead-lettered:\n{log}");

    // A sample of patients: ids and names derived here, from v1.
    for db in &tenants {
        let rows: Vec<(u64, Option<String>)> = conn
            .query(format!(
                "SELECT id, NULLIF(TRIM(last_name), '') FROM `{db}`.patients WHERE deleted = 0 ORDER BY id LIMIT 5"
            ))
            .await
            .unwrap();
        for (id, last) in rows {
            let row = pg
                .query_one(
                    &format!(r#"SELECT "Id"::text, "LastName", "TenantId" FROM "{schema}"."Patients" WHERE "Id"::text = $1"#),
                    &[&expected_id(db, "patients", id as i64)],
                )
                .await
                .unwrap_or_else(|e| panic!("patient {id} of {db}: {e}"));
            assert_eq!(row.get::<_, Option<String>>(1), last, "patient {id} of {db}");
            assert_eq!(row.get::<_, String>(2), *db);
        }
    }

    // The foreign keys go back on: PostgreSQL checks every row.
    pg.batch_execute(RESTORE_FOREIGN_KEYS)
        .await
        .unwrap_or_else(|e| panic!("re-adding the v2 foreign keys: {e:?}"));

    // Empty v2 and re-apply the topic from offset 0: the very same ids.
    let ids = || async {
        let mut out = BTreeMap::new();
        for t in expected.keys() {
            let rows = pg
                .query(
                    &format!(r#"SELECT "Id"::text FROM "{schema}"."{t}" ORDER BY 1"#),
                    &[],
                )
                .await
                .unwrap();
            out.insert(
                t.clone(),
                rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(),
            );
        }
        out
    };
    let before = ids().await;
    sink.terminate();
    // Off again for the second initial sync (the saved definitions stay in pinpoint_fks).
    pg.batch_execute(
        r#"DO $$ DECLARE r record; BEGIN
             FOR r IN SELECT * FROM pinpoint_fks LOOP
               EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
             END LOOP;
           END $$;"#,
    )
    .await
    .unwrap();
    let mut wipe = String::new();
    for t in expected.keys() {
        wipe.push_str(&format!(r#"TRUNCATE "{schema}"."{t}" CASCADE;"#));
    }
    pg.batch_execute(&format!(
        r#"{wipe}
           DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{schema}.');
           DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = '{group}';"#
    ))
    .await
    .unwrap();
    let again = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now = ids().await;
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "re-applied ids differ:\n{}",
            again.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(again);
    drop(source);
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    common::pinpoint::drop_example(&pg, &schema, &group, &names).await;
    for db in &tenants {
        conn.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
    }
}
