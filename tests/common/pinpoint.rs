//! The PinpointCare example (`connectors/pinpoint/`) on the local stack: its
//! files, v1 statements, and its v2 schema and mapping moved to a test's own schema.
#![allow(dead_code)]

use std::path::PathBuf;

use mysql_async::prelude::Queryable;

use super::pipeline::Pipeline;
use super::sink::add_sink;

pub fn example_dir() -> PathBuf {
    super::repo_root().join("connectors/pinpoint")
}

pub fn example_file(name: &str) -> String {
    let path = example_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The statements of a SQL file: `--` comments dropped, split at `;` outside quotes.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == '\\' && q == '\'' {
                    if let Some(next) = chars.next() {
                        current.push(next);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            None if c == ';' => {
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
            None => {
                if matches!(c, '\'' | '"' | '`') {
                    quote = Some(c);
                } else if c == '[' {
                    quote = Some(']');
                }
                current.push(c);
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// An admin connection to the pipeline's first tenant database holding the
/// example v1 schema and `seed`.
pub async fn example_v1(p: &Pipeline, seed: &str) -> mysql_async::Conn {
    let mut conn = p.admin().await;
    conn.query_drop(format!("USE `{}`", p.databases[0]))
        .await
        .unwrap();
    run_mysql(&mut conn, &example_file("v1-schema.sql")).await;
    run_mysql(&mut conn, seed).await;
    conn
}

pub async fn run_mysql(conn: &mut mysql_async::Conn, sql: &str) {
    for stmt in statements(sql) {
        conn.query_drop(stmt.as_str())
            .await
            .unwrap_or_else(|e| panic!("v1 statement failed: {e}\n{stmt}"));
    }
}

/// Saves the schema's foreign keys in a temporary table and drops them (for
/// the initial sync), as README.md describes.
pub fn drop_foreign_keys_sql(schema: &str) -> String {
    format!(
        r#"CREATE TEMP TABLE pinpoint_fks AS
             SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
             FROM pg_constraint WHERE contype = 'f' AND connamespace = '"{schema}"'::regnamespace;
           DO $$ DECLARE r record; BEGIN
             FOR r IN SELECT * FROM pinpoint_fks LOOP
               EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
             END LOOP;
           END $$;"#
    )
}

/// Adds the saved foreign keys back; PostgreSQL checks every row as it does.
pub const RESTORE_FOREIGN_KEYS: &str = r#"DO $$ DECLARE r record; BEGIN
      FOR r IN SELECT * FROM pinpoint_fks LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.tbl, r.conname, r.def);
      END LOOP;
    END $$;"#;

/// The example's v2 schema and mapping moved to a schema of the test's own,
/// its foreign keys dropped for the initial sync (saved in `pinpoint_fks`, as
/// README.md describes), and a `[sink]` in mapping mode: (v2 schema, group).
pub async fn example_v2(p: &Pipeline, pg: &tokio_postgres::Client) -> (String, String) {
    let schema = format!("{}_v2", p.prefix);
    let quoted = format!("\"{schema}\".");
    let ddl = example_file("v2-postgres.sql")
        .replace(
            "SCHEMA IF NOT EXISTS v2",
            &format!("SCHEMA IF NOT EXISTS \"{schema}\""),
        )
        .replace("\"v2\".", &quoted)
        .replace("v2.", &quoted);
    pg.batch_execute(&ddl).await.expect("v2-postgres.sql runs");
    pg.batch_execute(&drop_foreign_keys_sql(&schema)).await.unwrap();
    let mapping_text = example_file("mapping.toml");
    let target = "target_schema = \"v2\"";
    assert!(mapping_text.contains(target));
    let mapping_path = p.config_dir.path().join("mapping.toml");
    std::fs::write(
        &mapping_path,
        mapping_text.replace(target, &format!("target_schema = \"{schema}\"")),
    )
    .unwrap();
    let sink = add_sink(
        p,
        &format!("mode = \"mapping\"\nmapping = \"{}\"", mapping_path.display()),
    );
    (schema, sink.group)
}

/// Removes what a test of the example left in PostgreSQL: its v2 schema, the
/// sink's bookkeeping of that schema and group, and the document state of its tenants.
pub async fn drop_example(pg: &tokio_postgres::Client, schema: &str, group: &str, tenants: &[&str]) {
    pg.batch_execute(&format!(
        r#"DROP SCHEMA "{schema}" CASCADE;
           DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{schema}.');
           DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = '{group}';"#
    ))
    .await
    .unwrap();
    let tenants: Vec<String> = tenants.iter().map(|t| (*t).to_owned()).collect();
    pg.execute(
        "DELETE FROM cdc_bridge.row_positions WHERE table_id = 'cdc_bridge.doc_rows' AND row_key IN \
         (SELECT encode(entry, 'hex') FROM cdc_bridge.doc_rows WHERE tenant = ANY($1))",
        &[&tenants],
    )
    .await
    .unwrap();
    for sql in [
        "DELETE FROM cdc_bridge.doc_deps WHERE doc IN (SELECT doc FROM cdc_bridge.documents WHERE tenant = ANY($1))",
        "DELETE FROM cdc_bridge.documents WHERE tenant = ANY($1)",
        "DELETE FROM cdc_bridge.doc_rows WHERE tenant = ANY($1)",
    ] {
        pg.execute(sql, &[&tenants]).await.unwrap();
    }
}
