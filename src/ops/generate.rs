//! `cdc-bridge generate`: tenant databases filled with realistic, seeded,
//! reproducible data for a v1 schema, and a steady mutation workload.
//!
//! The generator reads the tables it fills from the server after loading the
//! schema file, so it follows the schema rather than a copy of it: ids are
//! explicit and dense (1..n), a column `<x>_id` refers to the table `<x>s`
//! (`facility_id` → `facilities`, `template_id` → `survey_templates`), code
//! columns take the codes of the mapping's lookups (or the ENUM's members),
//! names mix accents and non-Latin scripts, free text is long and multilingual,
//! local times avoid the small hours (so no value falls in a daylight-saving
//! gap), and tenants are skewed: tenant k gets about 1/k of the first one's rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::config::Config;
use crate::source::schema::{load_tables, quote_ident, ColumnSchema, TableSchema};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub tenants: u32,
    /// Rows of a "patients"-sized table in the largest tenant.
    pub scale: u32,
    pub seed: u64,
    /// Tenant database names are `<prefix>NN`.
    pub prefix: String,
    pub schema_file: String,
    /// What the mapping says about v1 columns (`table.column`): lookup codes
    /// they take, and which hold PHP-serialized values.
    pub hints: Hints,
}

const FIRST: &[&str] = &[
    "Zoë",
    "José",
    "Åsa",
    "Chidi",
    "María",
    "Søren",
    "Nguyễn",
    "Mārtiņš",
    "Ōta",
    "Renée",
    "Björn",
    "Zofia",
    "Ana",
    "Mohammed",
    "Αλέξανδρος",
    "Мария",
    "王芳",
    "محمد",
    "Priya",
    "Lúcia",
    "Jürgen",
    "Aoife",
    "Tomás",
    "Émile",
];
const LAST: &[&str] = &[
    "Müller",
    "Núñez",
    "Lindqvist",
    "Okafor",
    "García",
    "Ørsted",
    "Trần",
    "Bērziņš",
    "Saitō",
    "Dubois",
    "O'Brien",
    "Kowalczyk",
    "Smith",
    "Al-Sayed",
    "Παπαδόπουλος",
    "Иванова",
    "李",
    "حداد",
    "Patel",
    "Gonçalves",
    "Weiß",
    "Ní Bhriain",
];
const WORDS: &[&str] = &[
    "patient",
    "reports",
    "improved",
    "mobility",
    "since",
    "last",
    "visit",
    "pain",
    "score",
    "stable",
    "family",
    "meeting",
    "scheduled",
    "medication",
    "reviewed",
    "fall",
    "risk",
    "low",
    "dietary",
    "plan",
    "über",
    "Schmerz",
    "très",
    "bien",
    "mañana",
    "café",
    "naïve",
    "日本語",
    "テスト",
    "доктор",
    "ملاحظة",
    "✓",
    "→",
    "½",
];

/// Column facts a mapping gives, keyed `table.column`.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub codes: BTreeMap<String, Vec<String>>,
    pub php_serialized: std::collections::BTreeSet<String>,
}

/// The table a `<x>_id` column refers to, among `tables`; a qualified stem
/// (`primary_clinician_id`) falls back to its last words (`clinician`).
fn referenced<'a>(column: &str, tables: &'a [String]) -> Option<&'a String> {
    let stem = column.strip_suffix("_id")?;
    referenced_stem(stem, tables).or_else(|| {
        let mut rest = stem;
        while let Some((_, tail)) = rest.split_once('_') {
            if let Some(t) = referenced_stem(tail, tables) {
                return Some(t);
            }
            rest = tail;
        }
        None
    })
}

fn referenced_stem<'a>(stem: &str, tables: &'a [String]) -> Option<&'a String> {
    let plural = |s: &str| -> Vec<String> {
        let mut v = vec![format!("{s}s"), format!("{s}es"), s.to_owned()];
        if let Some(y) = s.strip_suffix('y') {
            v.push(format!("{y}ies"));
        }
        v
    };
    let candidates = plural(stem);
    tables
        .iter()
        .find(|t| candidates.iter().any(|c| *t == c))
        .or_else(|| {
            tables
                .iter()
                .find(|t| candidates.iter().any(|c| t.ends_with(&format!("_{c}"))))
        })
        .or_else(|| {
            // `clinician_id` → `users`, `author_id` → `users` when there is one.
            ["clinician", "author", "user", "created_by", "assigned_to"]
                .contains(&stem)
                .then(|| tables.iter().find(|t| *t == "users" || *t == "clinicians"))
                .flatten()
        })
}

/// Relative row count of a table, by what its name says it holds.
fn weight(table: &str) -> f64 {
    let t = table.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    if has("facilit") {
        0.05
    } else if has("template") {
        0.02
    } else if has("question") {
        0.3
    } else if has("user") || has("clinician") {
        0.2
    } else if has("answer") {
        10.0
    } else if has("intervention") {
        3.0
    } else if has("goal") || has("assessment") {
        2.0
    } else if has("note") || has("log") {
        3.0
    } else if has("contact") {
        1.5
    } else {
        1.0
    }
}

/// Tables ordered so that referenced tables come first.
fn fill_order(tables: &[TableSchema]) -> Vec<usize> {
    let names: Vec<String> = tables.iter().map(|t| t.table.clone()).collect();
    let mut order = Vec::new();
    let mut done = vec![false; tables.len()];
    for _ in 0..tables.len() {
        for (i, t) in tables.iter().enumerate() {
            if done[i] {
                continue;
            }
            let ready = t.columns.iter().all(|c| match referenced(&c.name, &names) {
                Some(r) if *r != t.table => names.iter().position(|n| n == r).is_some_and(|j| done[j]),
                _ => true,
            });
            if ready {
                done[i] = true;
                order.push(i);
            }
        }
    }
    // Cycles (if any) go last in schema order.
    order.extend((0..tables.len()).filter(|i| !done[*i]));
    order
}

struct Gen<'a> {
    rng: fastrand::Rng,
    hints: &'a Hints,
}

impl Gen<'_> {
    fn pick<'b>(&mut self, items: &'b [&'b str]) -> &'b str {
        items[self.rng.usize(..items.len())]
    }

    fn text(&mut self, words: usize) -> String {
        (0..words).map(|_| self.pick(WORDS)).collect::<Vec<_>>().join(" ")
    }

    fn local_datetime(&mut self) -> String {
        // Hours 06..=22: never in a daylight-saving gap or overlap.
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.rng.u32(2014..=2026),
            self.rng.u32(1..=12),
            self.rng.u32(1..=28),
            self.rng.u32(6..=22),
            self.rng.u32(0..60),
            self.rng.u32(0..60)
        )
    }

    fn php_serialized(&mut self) -> String {
        let lang = self.pick(&["en", "de", "es", "fr"]);
        let items: Vec<String> = (0..self.rng.usize(0..4))
            .map(|i| {
                let w = self.pick(WORDS);
                format!("i:{i};s:{}:\"{w}\";", w.len())
            })
            .collect();
        format!(
            "a:3:{{s:4:\"lang\";s:2:\"{lang}\";s:6:\"alerts\";b:{};s:5:\"items\";a:{}:{{{}}}}}",
            self.rng.u8(..2),
            items.len(),
            items.concat()
        )
    }

    /// A value for column `c` of row `id` of `table`, as a MySQL parameter.
    fn value(
        &mut self,
        table: &str,
        c: &ColumnSchema,
        id: u64,
        refs: &HashMap<String, u64>,
    ) -> mysql_async::Value {
        use mysql_async::Value as V;
        let name = c.name.to_ascii_lowercase();
        let qualified = format!("{table}.{name}");
        if let Some(&n) = refs.get(&c.name) {
            if c.nullable && self.rng.u8(..100) < 3 {
                return V::NULL;
            }
            return V::UInt(1 + self.rng.u64(..n.max(1)));
        }
        // Codes: the mapping's lookup codes for this column, else ENUM members.
        if let Some(codes) = self.hints.codes.get(&qualified).filter(|c| !c.is_empty()) {
            return V::from(codes[self.rng.usize(..codes.len())].clone());
        }
        if self.hints.php_serialized.contains(&qualified) {
            return V::from(self.php_serialized());
        }
        if !c.members.is_empty() && c.data_type == "enum" {
            return V::from(c.members[self.rng.usize(..c.members.len())].clone());
        }
        if c.nullable && !name.ends_with("name") && self.rng.u8(..100) < 5 {
            return V::NULL;
        }
        match c.data_type.as_str() {
            "tinyint"
                if c.column_type.starts_with("tinyint(1)")
                    || name.starts_with("is_")
                    || name == "deleted" =>
            {
                let one = if name.contains("delete") { 5 } else { 80 };
                V::Int(i64::from(self.rng.u8(..100) < one))
            }
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => {
                V::Int(i64::from(self.rng.u32(0..100)))
            }
            "decimal" => V::from(format!("{}.{:02}", self.rng.u32(0..100), self.rng.u32(0..100))),
            "float" | "double" => V::Double(f64::from(self.rng.u32(0..10_000)) / 100.0),
            "date" if name.contains("birth") || name == "dob" => {
                if !c.nullable && self.rng.u8(..100) < 2 {
                    V::from("0000-00-00")
                } else {
                    V::from(format!(
                        "{}-{:02}-{:02}",
                        self.rng.u32(1925..=2010),
                        self.rng.u32(1..=12),
                        self.rng.u32(1..=28)
                    ))
                }
            }
            "date" => V::from(self.local_datetime()[..10].to_owned()),
            "datetime" | "timestamp" => V::from(self.local_datetime()),
            "time" => V::from(format!(
                "{:02}:{:02}:00",
                self.rng.u32(0..24),
                self.rng.u32(0..60)
            )),
            "year" => V::Int(i64::from(self.rng.u32(1950..=2026))),
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                let max = c
                    .column_type
                    .split_once('(')
                    .and_then(|(_, r)| r.trim_end_matches(')').parse::<usize>().ok())
                    .unwrap_or(if c.data_type.ends_with("text") {
                        20_000
                    } else {
                        255
                    });
                let s = if name.contains("first") {
                    self.pick(FIRST).to_owned()
                } else if name.contains("last") || name.contains("surname") {
                    self.pick(LAST).to_owned()
                } else if name.contains("email") {
                    format!("user{id}@example.org")
                } else if name.contains("phone") {
                    format!("+1-555-{:04}", self.rng.u32(0..10_000))
                } else if name.contains("pref") || name.contains("serial") || name.contains("settings") {
                    self.php_serialized()
                } else if name.contains("name") || name.contains("title") {
                    format!("{} {}", self.text(2), id)
                } else if c.data_type.ends_with("text") {
                    // Long free text: notes and answers run to pages.
                    let words = self.rng.usize(5..=600);
                    self.text(words)
                } else {
                    self.text(3)
                };
                // Only what the column's charset can hold.
                let limit = match c.charset.as_deref() {
                    Some(cs) if cs.starts_with("utf8") => u32::MAX,
                    Some("ascii") => 0x7f,
                    Some(_) => 0xff,
                    None => u32::MAX,
                };
                V::from(
                    s.chars()
                        .filter(|ch| u32::from(*ch) <= limit)
                        .take(max)
                        .collect::<String>(),
                )
            }
            "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => {
                V::Bytes((0..self.rng.usize(0..64)).map(|_| self.rng.u8(..)).collect())
            }
            "json" => V::from(format!("{{\"v\": {}}}", self.rng.u32(0..1000))),
            _ => V::NULL,
        }
    }
}

/// Loads the schema file into `db` (statements split at `;` line ends).
async fn load_schema(conn: &mut mysql_async::Conn, db: &str, file: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
        quote_ident(db)
    ))
    .await?;
    conn.query_drop(format!("USE {}", quote_ident(db))).await?;
    let mut statement = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        statement.push_str(line);
        statement.push('\n');
        if trimmed.ends_with(';') {
            conn.query_drop(statement.as_str())
                .await
                .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            statement.clear();
        }
    }
    Ok(())
}

/// Creates and fills the tenant databases; returns (database, rows) per tenant.
pub async fn generate(config: &Config, opts: &GenerateOptions) -> anyhow::Result<Vec<(String, u64)>> {
    let source = config
        .source
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the configuration has no [source] section"))?;
    let admin = std::env::var("CDC_BRIDGE_GENERATE_URL").map_err(|_| {
        anyhow::anyhow!(
            "generate writes to v1: set CDC_BRIDGE_GENERATE_URL to a MySQL URL of a user allowed to \
             create databases (mysql://user:password@host:port); the source's replication user is read-only"
        )
    })?;
    let _ = source;
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&admin)?).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00', SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")
        .await?;
    let mut out = Vec::new();
    for k in 1..=opts.tenants {
        let db = format!("{}{k:02}", opts.prefix);
        load_schema(&mut conn, &db, &opts.schema_file).await?;
        let tables = load_tables(&mut conn, &db).await?;
        let names: Vec<String> = tables.iter().map(|t| t.table.clone()).collect();
        // Skewed sizes: tenant k holds about 1/k of tenant 1's rows.
        let scale = (f64::from(opts.scale) / f64::from(k)).max(1.0);
        let mut gen = Gen {
            rng: fastrand::Rng::with_seed(opts.seed.wrapping_add(u64::from(k))),
            hints: &opts.hints,
        };
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut rows = 0u64;
        for i in fill_order(&tables) {
            let t = &tables[i];
            let n = (scale * weight(&t.table)).ceil().max(1.0) as u64;
            let refs: HashMap<String, u64> = t
                .columns
                .iter()
                .filter_map(|c| {
                    let r = referenced(&c.name, &names)?;
                    Some((c.name.clone(), counts.get(r).copied().unwrap_or(1)))
                })
                .collect();
            let cols: Vec<&ColumnSchema> = t.columns.iter().collect();
            let col_list = cols
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ");
            let single_key = t.primary_key.len() == 1;
            for chunk_start in (1..=n).step_by(500) {
                let chunk_end = (chunk_start + 499).min(n);
                let mut params = Vec::new();
                let mut groups = Vec::new();
                for id in chunk_start..=chunk_end {
                    for c in &cols {
                        let v = if single_key && t.primary_key[0] == c.name {
                            mysql_async::Value::UInt(id)
                        } else {
                            gen.value(&t.table, c, id, &refs)
                        };
                        params.push(v);
                    }
                    groups.push(format!("({})", vec!["?"; cols.len()].join(", ")));
                }
                conn.exec_drop(
                    format!(
                        "INSERT IGNORE INTO {}.{} ({col_list}) VALUES {}",
                        quote_ident(&db),
                        quote_ident(&t.table),
                        groups.join(", ")
                    ),
                    params,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{db}.{}: {e}", t.table))?;
            }
            counts.insert(t.table.clone(), n);
            rows += n;
        }
        tracing::info!(database = %db, rows, "tenant generated");
        out.push((db, rows));
    }
    Ok(out)
}

/// Runs updates, inserts and deletes at about `rate` per second for `duration`
/// against the generated tenants; returns how many statements ran.
pub async fn workload(
    opts: &GenerateOptions,
    rate: f64,
    duration: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u64> {
    let admin = std::env::var("CDC_BRIDGE_GENERATE_URL")
        .map_err(|_| anyhow::anyhow!("set CDC_BRIDGE_GENERATE_URL (see `generate`)"))?;
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&admin)?).await?;
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x5eed);
    let mut tenants = Vec::new();
    for k in 1..=opts.tenants {
        let db = format!("{}{k:02}", opts.prefix);
        let tables = load_tables(&mut conn, &db).await?;
        tenants.push((db, tables));
    }
    let mut gen = Gen {
        rng: fastrand::Rng::with_seed(opts.seed ^ 0xfeed),
        hints: &opts.hints,
    };
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    tokio::pin!(shutdown);
    let mut done = 0u64;
    while start.elapsed() < duration {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        // Skewed like the data: tenant 1 gets the most traffic.
        let k = (rng.f64().powi(2) * tenants.len() as f64) as usize;
        let (db, tables) = &tenants[k.min(tenants.len() - 1)];
        let keyed: Vec<&TableSchema> = tables.iter().filter(|t| t.primary_key.len() == 1).collect();
        let Some(t) = keyed.get(rng.usize(..keyed.len().max(1))).copied() else {
            continue;
        };
        let key = quote_ident(&t.primary_key[0]);
        let target = format!("{}.{}", quote_ident(db), quote_ident(&t.table));
        let max: Option<u64> = conn
            .query_first(format!("SELECT MAX({key}) FROM {target}"))
            .await?;
        let max = max.unwrap_or(0);
        let id = 1 + rng.u64(..max.max(1));
        let editable: Vec<&ColumnSchema> = t
            .columns
            .iter()
            .filter(|c| !t.primary_key.contains(&c.name) && !c.name.ends_with("_id"))
            .collect();
        match rng.u8(..10) {
            0 if max > 10 => {
                conn.exec_drop(format!("DELETE FROM {target} WHERE {key} = ?"), (id,))
                    .await?;
            }
            1..=3 => {
                let refs = HashMap::new();
                let cols: Vec<&ColumnSchema> = t.columns.iter().collect();
                let values: Vec<mysql_async::Value> = cols
                    .iter()
                    .map(|c| {
                        if c.name == t.primary_key[0] {
                            mysql_async::Value::UInt(max + 1)
                        } else if c.name.ends_with("_id") {
                            mysql_async::Value::UInt(1)
                        } else {
                            gen.value(&t.table, c, max + 1, &refs)
                        }
                    })
                    .collect();
                let list = cols
                    .iter()
                    .map(|c| quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                conn.exec_drop(
                    format!(
                        "INSERT IGNORE INTO {target} ({list}) VALUES ({})",
                        vec!["?"; cols.len()].join(", ")
                    ),
                    values,
                )
                .await?;
            }
            _ if !editable.is_empty() => {
                let c = editable[rng.usize(..editable.len())];
                let v = gen.value(&t.table, c, id, &HashMap::new());
                conn.exec_drop(
                    format!("UPDATE {target} SET {} = ? WHERE {key} = ?", quote_ident(&c.name)),
                    (v, id),
                )
                .await?;
            }
            _ => continue,
        }
        done += 1;
    }
    Ok(done)
}

/// What a mapping says about v1 columns: a column mapped through a lookup
/// takes that lookup's codes; one converted with `php_json` holds PHP-serialized values.
pub fn hints_from_mapping(path: &Path) -> anyhow::Result<Hints> {
    let mapping = crate::transform::mapping::Mapping::load(path)?;
    let mut out = Hints::default();
    for t in &mapping.file.tables {
        for c in t.columns.values() {
            let Some(col) = c.from.as_ref().and_then(|f| f.as_slice().first()) else {
                continue;
            };
            let key = format!("{}.{}", t.from, col.to_ascii_lowercase());
            if let Some(codes) = c.lookup.as_ref().and_then(|l| mapping.file.lookups.get(l)) {
                out.codes.insert(key.clone(), codes.keys().cloned().collect());
            }
            if c.convert == crate::transform::mapping::Convert::PhpJson {
                out.php_serialized.insert(key);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_columns_find_their_tables() {
        let tables: Vec<String> = [
            "facilities",
            "users",
            "patients",
            "survey_templates",
            "care_plans",
            "care_plan_goals",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = |c: &str| referenced(c, &tables).map(String::as_str);
        assert_eq!(r("facility_id"), Some("facilities"));
        assert_eq!(r("patient_id"), Some("patients"));
        assert_eq!(r("template_id"), Some("survey_templates"));
        assert_eq!(r("care_plan_id"), Some("care_plans"));
        assert_eq!(r("goal_id"), Some("care_plan_goals"));
        assert_eq!(r("clinician_id"), Some("users"));
        assert_eq!(r("primary_clinician_id"), Some("users"));
        assert_eq!(r("assigned_to_id"), Some("users"));
        assert_eq!(r("external_id"), None);
        assert_eq!(r("name"), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let hints = Hints::default();
        let col = ColumnSchema {
            name: "notes".into(),
            data_type: "text".into(),
            column_type: "text".into(),
            unsigned: false,
            nullable: false,
            charset: None,
            members: vec![],
            octet_length: None,
            numeric_precision: None,
        };
        let run = |seed| {
            let mut g = Gen {
                rng: fastrand::Rng::with_seed(seed),
                hints: &hints,
            };
            (0..20)
                .map(|i| format!("{:?}", g.value("notes", &col, i, &HashMap::new())))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
