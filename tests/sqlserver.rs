//! The SQL Server target against a real server: bookkeeping created twice,
//! tables of every type and their new columns, values read back exactly,
//! the offset claim, keyless multisets, tombstones, renames and the content
//! hashes documents are checked by.
//!
//! Needs a server: `MSSQL_URL=sqlserver://user@host:port/db?encrypt=true&trust_server_certificate=true`
//! and the password in `MSSQL_PASSWORD`, then `cargo test --test sqlserver -- --ignored`.
//! Each test works in a schema of its own and its own consumer group, so tests
//! run in parallel and leave the shared `cdc_bridge` tables consistent.

mod common;

use std::collections::HashMap;

use cdc_bridge::config::{Config, TargetConfig};
use cdc_bridge::sink::sqlserver::{connect_client, SqlServerClient, SqlServerTarget};
use cdc_bridge::sink::target::*;

fn target_config() -> TargetConfig {
    let url = std::env::var("MSSQL_URL").expect("MSSQL_URL (sqlserver://user@host:port/db) is not set");
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[sink]
[[sink.targets]]
name = "mssql"
kind = "sql_server"
url = "{url}"
password = "${{MSSQL_PASSWORD}}"
"#
    );
    let config = Config::from_toml_str(&text, "sqlserver-test.toml", &|name| std::env::var(name).ok())
        .unwrap_or_else(|e| panic!("the test configuration is rejected: {e}"));
    let sink = config.sink.expect("the test configuration has a sink");
    sink.targets
        .into_iter()
        .next()
        .expect("the test configuration has a target")
}

async fn connect() -> SqlServerTarget {
    let mut target = SqlServerTarget::connect(&target_config())
        .await
        .unwrap_or_else(|e| panic!("connect to MSSQL_URL: {e}"));
    target.prepare().await.unwrap_or_else(|e| panic!("prepare: {e}"));
    target
}

async fn raw() -> SqlServerClient {
    connect_client(&target_config())
        .await
        .unwrap_or_else(|e| panic!("connect to MSSQL_URL: {e}"))
}

/// Every cell of the first result of `sql` as text (select text expressions).
async fn texts(client: &mut SqlServerClient, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_first_result()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<&str, _>(i)
                        .unwrap_or_else(|e| panic!("{sql}: column {i} is not text: {e}"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .collect()
}

async fn drop_schema(client: &mut SqlServerClient, schema: &str, tables: &[&str]) {
    let mut sql = String::new();
    for table in tables {
        sql += &format!(
            "IF OBJECT_ID(N'[{schema}].[{table}]', N'U') IS NOT NULL DROP TABLE [{schema}].[{table}];\n\
             DELETE FROM [cdc_bridge].[row_positions] WHERE [table_id] = N'{schema}.{table}';\n"
        );
    }
    sql += &format!("IF SCHEMA_ID(N'{schema}') IS NOT NULL DROP SCHEMA [{schema}];");
    let result = match client.simple_query(sql).await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("cleanup of {schema} failed: {e}");
    }
}

fn col(name: &str, ty: SqlType) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        ty,
        nullable: true,
    }
}

/// One column of every type, keyed by `id`.
fn every_type(schema: &str) -> TableDef {
    let mut id = col("id", SqlType::BigInt);
    id.nullable = false;
    TableDef {
        scope: String::new(),
        schema: schema.into(),
        name: "every type".into(),
        columns: vec![
            id,
            col("b", SqlType::Bool),
            col("si", SqlType::SmallInt),
            col("i", SqlType::Int),
            col(
                "d10",
                SqlType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            col(
                "d38",
                SqlType::Decimal {
                    precision: 38,
                    scale: 10,
                },
            ),
            col(
                "d65",
                SqlType::Decimal {
                    precision: 65,
                    scale: 30,
                },
            ),
            col("r", SqlType::Real),
            col("f", SqlType::Double),
            col("day", SqlType::Date),
            col("ts", SqlType::DateTime),
            col("inst", SqlType::DateTimeOffset),
            col("dur", SqlType::Duration),
            col("t40", SqlType::Text { max_chars: Some(40) }),
            col("tmax", SqlType::Text { max_chars: None }),
            col("by16", SqlType::Bytes { max_len: Some(16) }),
            col("bymax", SqlType::Bytes { max_len: None }),
            col("bit1", SqlType::Bits { width: 1 }),
            col("bit10", SqlType::Bits { width: 10 }),
            col("j", SqlType::Json),
            col("u", SqlType::Uuid),
            col("odd ]name", SqlType::Int),
        ],
        key: vec![0],
    }
}

const UUID: [u8; 16] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];

fn long_text() -> String {
    format!("{}é😀", "x".repeat(10_000))
}

fn big_bytes() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

fn full_row(id: i64) -> Vec<SqlValue> {
    vec![
        SqlValue::Int(id),
        SqlValue::Bool(true),
        SqlValue::Int(-32_768),
        SqlValue::Int(2_147_483_647),
        SqlValue::Decimal("-12345678.90".into()),
        SqlValue::Decimal("-1234567890123456789012345678.0123456789".into()),
        SqlValue::Decimal("12345678901234567890123456789012345.123456789012345678901234567890".into()),
        SqlValue::Real(0.3),
        SqlValue::Double(0.1 + 0.2),
        SqlValue::Date(Date {
            year: 2024,
            month: 2,
            day: 29,
        }),
        SqlValue::DateTime(DateTime {
            date: Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            hour: 13,
            minute: 45,
            second: 12,
            micros: 123_456,
        }),
        // 2021-01-01T00:00:01.000001Z
        SqlValue::Instant(1_609_459_201_000_001),
        // -838:59:59
        SqlValue::Duration(-3_020_399_000_000),
        // 40 characters outside the BMP: 80 UTF-16 code units.
        SqlValue::Text("😀".repeat(40)),
        SqlValue::Text(long_text()),
        SqlValue::Bytes((0..16).collect()),
        SqlValue::Bytes(big_bytes()),
        SqlValue::Bits { width: 1, bits: 1 },
        SqlValue::Bits {
            width: 10,
            bits: 0x2a5,
        },
        SqlValue::Json(r#"{"a":[1,2,{"b":null}],"c":"ü"}"#.into()),
        SqlValue::Uuid(UUID),
        SqlValue::Int(7),
    ]
}

fn null_row(id: i64) -> Vec<SqlValue> {
    let mut values = vec![SqlValue::Null; every_type("x").columns.len()];
    values[0] = SqlValue::Int(id);
    values
}

fn upsert(key: &str, position: u8, values: Vec<SqlValue>) -> RowWrite {
    RowWrite {
        row_key: key.into(),
        position: vec![0, 0, 0, position],
        change: Change::Upsert(values),
    }
}

fn delete(key: &str, position: u8, id: i64) -> RowWrite {
    RowWrite {
        row_key: key.into(),
        position: vec![0, 0, 0, position],
        change: Change::Delete(vec![SqlValue::Int(id)]),
    }
}

fn count(key: &str, position: u8, values: Vec<SqlValue>, delta: i64) -> RowWrite {
    RowWrite {
        row_key: key.into(),
        position: vec![0, 0, 0, position],
        change: Change::Count { values, delta },
    }
}

async fn apply(target: &mut SqlServerTarget, def: &TableDef, writes: &[RowWrite]) {
    target.begin().await.unwrap_or_else(|e| panic!("begin: {e}"));
    if let Err(e) = target.write(def, writes).await {
        target.rollback().await;
        panic!("write {}: {e}", def.id());
    }
    target.commit().await.unwrap_or_else(|e| panic!("commit: {e}"));
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn prepare_twice_is_harmless() {
    let mut target = connect().await;
    target.prepare().await.expect("second prepare");
    assert_eq!(target.kind(), "sqlserver");
    let group = common::unique("group");
    let offsets = target
        .read_offsets(&group, "cdc.changes")
        .await
        .expect("read_offsets");
    assert!(offsets.is_empty(), "a new group has offsets: {offsets:?}");
    let mut client = raw().await;
    let tables = texts(
        &mut client,
        "SELECT t.[name] FROM sys.tables AS t WHERE t.[schema_id] = SCHEMA_ID(N'cdc_bridge') ORDER BY t.[name]",
    )
    .await;
    let names: Vec<_> = tables
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        vec![
            "applied",
            "doc_deps",
            "doc_rows",
            "documents",
            "row_positions",
            "sink_offsets"
        ]
    );
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn ensure_table_creates_every_type_and_adds_columns() {
    let schema = common::unique("mssql_types");
    let mut target = connect().await;
    let mut client = raw().await;
    let def = every_type(&schema);
    let now = target.ensure_table(&def).await.expect("ensure_table");
    assert_eq!(now, def);
    // Idempotent.
    assert_eq!(target.ensure_table(&def).await.expect("ensure_table again"), def);

    let columns_sql = format!(
        "SELECT c.[name], t.[name], CONVERT(NVARCHAR(20), c.[max_length]), CONVERT(NVARCHAR(20), c.[precision]), \
         CONVERT(NVARCHAR(20), c.[scale]), CONVERT(NVARCHAR(1), c.[is_nullable]) \
         FROM sys.columns AS c JOIN sys.types AS t ON t.[user_type_id] = c.[user_type_id] \
         WHERE c.[object_id] = OBJECT_ID(N'[{schema}].[every type]') ORDER BY c.[column_id]"
    );
    let rows = texts(&mut client, &columns_sql).await;
    let types: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("id", "bigint"),
        ("b", "bit"),
        ("si", "smallint"),
        ("i", "int"),
        ("d10", "decimal"),
        ("d38", "decimal"),
        ("d65", "nvarchar"),
        ("r", "real"),
        ("f", "float"),
        ("day", "date"),
        ("ts", "datetime2"),
        ("inst", "datetimeoffset"),
        ("dur", "bigint"),
        ("t40", "nvarchar"),
        ("tmax", "nvarchar"),
        ("by16", "varbinary"),
        ("bymax", "varbinary"),
        ("bit1", "bit"),
        ("bit10", "varbinary"),
        ("j", "nvarchar"),
        ("u", "uniqueidentifier"),
        ("odd ]name", "int"),
    ]
    .iter()
    .map(|(c, t)| (c.to_string(), t.to_string()))
    .collect();
    assert_eq!(types, expected, "column types differ");
    let detail = |name: &str| -> Vec<Option<String>> {
        rows.iter()
            .find(|r| r[0].as_deref() == Some(name))
            .map(|r| r[2..].to_vec())
            .unwrap_or_default()
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(detail("id")[3], s("0"), "the key is NOT NULL");
    assert_eq!(detail("d10")[1..3], [s("10"), s("2")]);
    assert_eq!(detail("d38")[1..3], [s("38"), s("10")]);
    assert_eq!(
        detail("t40")[0],
        s("160"),
        "NVARCHAR(80): 2 code units per character"
    );
    assert_eq!(detail("tmax")[0], s("-1"));
    assert_eq!(detail("ts")[2], s("7"));
    assert_eq!(detail("inst")[2], s("7"));
    assert_eq!(detail("bit10")[0], s("8"));
    assert_eq!(detail("b")[3], s("1"), "non-key columns are nullable");

    // A new column is added, nullable.
    let mut wider = def.clone();
    wider.columns.push(ColumnDef {
        name: "added".into(),
        ty: SqlType::Text { max_chars: Some(10) },
        nullable: false,
    });
    let now = target
        .ensure_table(&wider)
        .await
        .expect("ensure_table with a new column");
    assert_eq!(now.columns.len(), def.columns.len() + 1);
    let rows = texts(&mut client, &columns_sql).await;
    let added = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("added"))
        .expect("column added");
    assert_eq!(added[1].as_deref(), Some("nvarchar"));
    assert_eq!(added[5].as_deref(), Some("1"), "an added column is nullable");

    // A definition without it keeps it, as an extra nullable column.
    let now = target
        .ensure_table(&def)
        .await
        .expect("ensure_table without the new column");
    let extra = now.columns.last().expect("columns");
    assert_eq!(extra.name, "added");
    assert!(extra.nullable);
    assert_eq!(now.columns.len(), def.columns.len() + 1);

    drop_schema(&mut client, &schema, &["every type"]).await;
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn writes_read_back_exactly_and_deletes_leave_tombstones() {
    let schema = common::unique("mssql_values");
    let mut target = connect().await;
    let mut client = raw().await;
    let def = target
        .ensure_table(&every_type(&schema))
        .await
        .expect("ensure_table");
    let tenant = common::unique("tenant");

    target.begin().await.expect("begin");
    target
        .write(&def, &[upsert("1", 1, full_row(1)), upsert("2", 1, null_row(2))])
        .await
        .expect("write");
    target
        .record_progress(&[TenantProgress {
            tenant: tenant.clone(),
            source_position: "mysql-bin.000001:1234".into(),
            position_key: vec![0, 0, 0, 1],
            commit_time_micros: 1_700_000_000_000_000,
        }])
        .await
        .expect("record_progress");
    target.commit().await.expect("commit");

    let table = format!("[{schema}].[every type]");
    let select = format!(
        "SELECT CONVERT(NVARCHAR(MAX), [b]), CONVERT(NVARCHAR(MAX), [si]), CONVERT(NVARCHAR(MAX), [i]), \
         CONVERT(NVARCHAR(MAX), [d10]), CONVERT(NVARCHAR(MAX), [d38]), [d65], \
         CONVERT(NVARCHAR(30), [day], 23), \
         CASE WHEN [ts] = CAST(N'2024-02-29T13:45:12.1234560' AS DATETIME2(7)) THEN N'equal' \
           ELSE CONVERT(NVARCHAR(50), [ts], 126) END, \
         CASE WHEN [inst] = CAST(N'2021-01-01T00:00:01.0000010+00:00' AS DATETIMEOFFSET(7)) \
           AND DATEPART(TZOFFSET, [inst]) = 0 THEN N'equal' ELSE CONVERT(NVARCHAR(50), [inst], 127) END, \
         CONVERT(NVARCHAR(MAX), [dur]), [t40], [tmax], LOWER(CONVERT(NVARCHAR(MAX), [by16], 1)), \
         CONVERT(NVARCHAR(MAX), HASHBYTES('SHA2_256', [bymax]), 1), CONVERT(NVARCHAR(MAX), DATALENGTH([bymax])), \
         CONVERT(NVARCHAR(MAX), [bit1]), LOWER(CONVERT(NVARCHAR(MAX), [bit10], 1)), [j], \
         LOWER(CONVERT(NVARCHAR(36), [u])), CONVERT(NVARCHAR(MAX), [odd ]]name]) \
         FROM {table} WHERE [id] = 1"
    );
    let row = texts(&mut client, &select).await.pop().expect("row 1 is there");
    let expected: Vec<String> = [
        "1",
        "-32768",
        "2147483647",
        "-12345678.90",
        "-1234567890123456789012345678.0123456789",
        "12345678901234567890123456789012345.123456789012345678901234567890",
        "2024-02-29",
        "equal",
        "equal",
        "-3020399000000",
        "😀".repeat(40).as_str(),
        long_text().as_str(),
        "0x000102030405060708090a0b0c0d0e0f",
        sha256_hex(&big_bytes()).as_str(),
        "100000",
        "1",
        "0x02a5",
        r#"{"a":[1,2,{"b":null}],"c":"ü"}"#,
        "12345678-9abc-def0-0123-456789abcdef",
        "7",
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    let actual: Vec<String> = row
        .iter()
        .map(|c| c.clone().unwrap_or_else(|| "NULL".into()))
        .collect();
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "value {i} differs (expected {e:?}, actual {a:?})");
    }
    assert_eq!(actual.len(), expected.len());

    // Floating point values, compared as the binary values they are.
    let floats = client
        .simple_query(format!("SELECT [r], [f] FROM {table} WHERE [id] = 1"))
        .await
        .expect("select floats")
        .into_row()
        .await
        .expect("select floats")
        .expect("row 1");
    assert_eq!(floats.try_get::<f32, _>(0).expect("real"), Some(0.3_f32));
    assert_eq!(floats.try_get::<f64, _>(1).expect("float"), Some(0.1 + 0.2));

    let nulls = texts(
        &mut client,
        &format!(
            "SELECT CONVERT(NVARCHAR(MAX), COUNT(*)) FROM {table} WHERE [id] = 2 AND [b] IS NULL AND [d65] IS NULL \
             AND [inst] IS NULL AND [u] IS NULL AND [bit10] IS NULL AND [bymax] IS NULL AND [day] IS NULL"
        ),
    )
    .await;
    assert_eq!(nulls[0][0].as_deref(), Some("1"), "row 2 holds NULLs");

    let progress = texts(
        &mut client,
        &format!(
            "SELECT [source_position], CONVERT(NVARCHAR(MAX), [commit_time_micros]) FROM [cdc_bridge].[applied] \
             WHERE [tenant] = N'{tenant}'"
        ),
    )
    .await;
    assert_eq!(
        progress,
        vec![vec![
            Some("mysql-bin.000001:1234".to_owned()),
            Some("1700000000000000".to_owned())
        ]]
    );

    // Update row 1, delete row 2.
    let mut changed = full_row(1);
    changed[3] = SqlValue::Int(-5);
    apply(&mut target, &def, &[upsert("1", 2, changed), delete("2", 3, 2)]).await;
    let rows = texts(
        &mut client,
        &format!(
            "SELECT CONVERT(NVARCHAR(MAX), [id]), CONVERT(NVARCHAR(MAX), [i]) FROM {table} ORDER BY [id]"
        ),
    )
    .await;
    assert_eq!(rows, vec![vec![Some("1".to_owned()), Some("-5".to_owned())]]);

    target.begin().await.expect("begin");
    let stored = target
        .stored_positions(&def, &["1", "2", "3"])
        .await
        .expect("stored_positions");
    target.rollback().await;
    assert_eq!(stored.get("1"), Some(&vec![0, 0, 0, 2]));
    assert_eq!(
        stored.get("2"),
        Some(&vec![0, 0, 0, 3]),
        "the deleted row keeps its tombstone"
    );
    assert!(!stored.contains_key("3"), "a row never written has no position");
    let flags = texts(
        &mut client,
        &format!(
            "SELECT [row_key], CONVERT(NVARCHAR(1), [deleted]) FROM [cdc_bridge].[row_positions] \
             WHERE [table_id] = N'{}' ORDER BY [row_key]",
            def.id()
        ),
    )
    .await;
    assert_eq!(
        flags,
        vec![
            vec![Some("1".to_owned()), Some("0".to_owned())],
            vec![Some("2".to_owned()), Some("1".to_owned())]
        ]
    );

    drop_schema(&mut client, &schema, &["every type"]).await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    format!(
        "0x{}",
        digest.iter().map(|b| format!("{b:02X}")).collect::<String>()
    )
}

fn claim(partition: i32, expected: Option<i64>, next: i64) -> OffsetClaim {
    OffsetClaim {
        partition,
        expected,
        next,
        source_position: format!("mysql-bin.000001:{next}"),
    }
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn claim_offsets_moves_offsets_only_from_what_is_stored() {
    let mut target = connect().await;
    let group = common::unique("group");
    let topic = "cdc.changes";

    target.begin().await.expect("begin");
    assert!(target
        .claim_offsets(&group, topic, &[claim(0, None, 10), claim(1, None, 5)])
        .await
        .expect("first claim"));
    target.commit().await.expect("commit");
    let offsets = target.read_offsets(&group, topic).await.expect("read_offsets");
    assert_eq!(offsets, HashMap::from([(0, 10), (1, 5)]));

    // A second "first" claim finds the stored offset.
    target.begin().await.expect("begin");
    assert!(!target
        .claim_offsets(&group, topic, &[claim(0, None, 12)])
        .await
        .expect("repeated first claim"));
    target.rollback().await;

    target.begin().await.expect("begin");
    assert!(target
        .claim_offsets(&group, topic, &[claim(0, Some(10), 20), claim(1, Some(5), 6)])
        .await
        .expect("claim from the stored offsets"));
    target.commit().await.expect("commit");

    // Stale: partition 0 is at 20 now; partition 1 must not move either.
    target.begin().await.expect("begin");
    assert!(!target
        .claim_offsets(&group, topic, &[claim(1, Some(6), 7), claim(0, Some(10), 30)])
        .await
        .expect("stale claim"));
    target.rollback().await;
    let offsets = target.read_offsets(&group, topic).await.expect("read_offsets");
    assert_eq!(
        offsets,
        HashMap::from([(0, 20), (1, 6)]),
        "a failed claim changed offsets"
    );

    // The target is usable after a failed claim.
    target.begin().await.expect("begin");
    assert!(target
        .claim_offsets(&group, topic, &[claim(1, Some(6), 7)])
        .await
        .expect("claim after a failed one"));
    target.commit().await.expect("commit");
    assert_eq!(
        target
            .read_offsets(&group, topic)
            .await
            .expect("read_offsets")
            .get(&1),
        Some(&7)
    );
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn keyless_tables_count_identical_rows() {
    let schema = common::unique("mssql_multiset");
    let mut target = connect().await;
    let mut client = raw().await;
    let def = TableDef {
        scope: String::new(),
        schema: schema.clone(),
        name: "visits".into(),
        columns: vec![
            col("patient", SqlType::Int),
            col("note", SqlType::Text { max_chars: None }),
        ],
        key: vec![],
    };
    let def = target.ensure_table(&def).await.expect("ensure_table");
    let values = || vec![SqlValue::Int(42), SqlValue::Text("same".into())];
    let row_key = "hash-of-42-same";

    apply(&mut target, &def, &[count(row_key, 1, values(), 1)]).await;
    apply(&mut target, &def, &[count(row_key, 2, values(), 1)]).await;
    let table = format!("[{schema}].[visits]");
    let counts = |n: &str| {
        vec![vec![
            Some("42".to_owned()),
            Some("same".to_owned()),
            Some(n.to_owned()),
        ]]
    };
    let select = format!(
        "SELECT CONVERT(NVARCHAR(MAX), [patient]), [note], CONVERT(NVARCHAR(MAX), [_cdc_count]) FROM {table}"
    );
    assert_eq!(
        texts(&mut client, &select).await,
        counts("2"),
        "two identical rows"
    );

    apply(&mut target, &def, &[count(row_key, 3, values(), -1)]).await;
    assert_eq!(
        texts(&mut client, &select).await,
        counts("1"),
        "deleting one of two leaves one"
    );

    apply(&mut target, &def, &[count(row_key, 4, values(), -1)]).await;
    assert!(
        texts(&mut client, &select).await.is_empty(),
        "deleting the last removes the row"
    );

    target.begin().await.expect("begin");
    let stored = target
        .stored_positions(&def, &[row_key])
        .await
        .expect("stored_positions");
    target.rollback().await;
    assert_eq!(
        stored.get(row_key),
        Some(&vec![0, 0, 0, 4]),
        "the removed row keeps its tombstone"
    );
    let deleted = texts(
        &mut client,
        &format!(
            "SELECT CONVERT(NVARCHAR(1), [deleted]) FROM [cdc_bridge].[row_positions] WHERE [table_id] = N'{}'",
            def.id()
        ),
    )
    .await;
    assert_eq!(deleted, vec![vec![Some("1".to_owned())]]);

    // A count that starts negative (its insert was before this target existed) leaves nothing.
    apply(&mut target, &def, &[count("other", 5, values(), -1)]).await;
    assert!(texts(&mut client, &select).await.is_empty());

    drop_schema(&mut client, &schema, &["visits"]).await;
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn stored_positions_include_tombstones_and_many_keys() {
    let schema = common::unique("mssql_positions");
    let mut target = connect().await;
    let mut client = raw().await;
    let mut id = col("id", SqlType::Text { max_chars: Some(100) });
    id.nullable = false;
    let def = TableDef {
        scope: String::new(),
        schema: schema.clone(),
        name: "items".into(),
        columns: vec![id, col("qty", SqlType::Int)],
        key: vec![0],
    };
    let def = target.ensure_table(&def).await.expect("ensure_table");
    // More rows than one statement's parameters, to cross the chunking.
    let keys: Vec<String> = (0..2_500).map(|i| format!("item-{i}")).collect();
    let writes: Vec<RowWrite> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| RowWrite {
            row_key: k.clone(),
            position: vec![1, (i % 256) as u8],
            change: Change::Upsert(vec![SqlValue::Text(k.clone()), SqlValue::Int(i as i64)]),
        })
        .collect();
    apply(&mut target, &def, &writes).await;
    let deletes: Vec<RowWrite> = keys[..10]
        .iter()
        .map(|k| RowWrite {
            row_key: k.clone(),
            position: vec![2, 0],
            change: Change::Delete(vec![SqlValue::Text(k.clone())]),
        })
        .collect();
    apply(&mut target, &def, &deletes).await;

    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.push("never-written");
    target.begin().await.expect("begin");
    let stored = target
        .stored_positions(&def, &asked)
        .await
        .expect("stored_positions");
    target.rollback().await;
    assert_eq!(
        stored.len(),
        keys.len(),
        "every written row, deleted or not, has a position"
    );
    assert_eq!(stored.get("item-0"), Some(&vec![2, 0]));
    assert_eq!(stored.get("item-2499"), Some(&vec![1, (2499 % 256) as u8]));
    let left = texts(
        &mut client,
        &format!("SELECT CONVERT(NVARCHAR(MAX), COUNT(*)) FROM [{schema}].[items]"),
    )
    .await;
    assert_eq!(left[0][0].as_deref(), Some("2490"));

    drop_schema(&mut client, &schema, &["items"]).await;
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn rename_column_renames_once() {
    let schema = common::unique("mssql_rename");
    let mut target = connect().await;
    let mut client = raw().await;
    let def = TableDef {
        scope: String::new(),
        schema: schema.clone(),
        name: "t".into(),
        columns: vec![col("id", SqlType::Int), col("old name", SqlType::Int)],
        key: vec![0],
    };
    target.ensure_table(&def).await.expect("ensure_table");
    assert!(target
        .rename_column(&schema, "t", "old name", "new]name")
        .await
        .expect("rename"));
    assert!(!target
        .rename_column(&schema, "t", "old name", "new]name")
        .await
        .expect("rename again"));
    let names = texts(
        &mut client,
        &format!("SELECT [name] FROM sys.columns WHERE [object_id] = OBJECT_ID(N'[{schema}].[t]') ORDER BY [column_id]"),
    )
    .await;
    assert_eq!(
        names,
        vec![vec![Some("id".to_owned())], vec![Some("new]name".to_owned())]]
    );

    drop_schema(&mut client, &schema, &["t"]).await;
}

#[tokio::test]
#[ignore = "needs a SQL Server: set MSSQL_URL (sqlserver://user@host:port/db, password in MSSQL_PASSWORD) and run with --ignored"]
async fn content_hashes_are_the_sha256_of_what_v2_holds() {
    use sha2::Digest;
    let schema = common::unique("mssql_docs");
    let mut target = connect().await;
    let mut client = raw().await;
    let mut id = col("Id", SqlType::Uuid);
    id.nullable = false;
    let def = TableDef {
        scope: String::new(),
        schema: schema.clone(),
        name: "docs".into(),
        columns: vec![id, col("Content", SqlType::Bytes { max_len: None })],
        key: vec![0],
    };
    let def = target.ensure_table(&def).await.expect("ensure_table");
    let (a, b, missing) = ([1u8; 16], [2u8; 16], [3u8; 16]);
    let pdf = b"%PDF-1.7 a document".to_vec();
    let writes = vec![
        RowWrite {
            row_key: "a".into(),
            position: vec![1],
            change: Change::Upsert(vec![SqlValue::Uuid(a), SqlValue::Bytes(pdf.clone())]),
        },
        RowWrite {
            row_key: "b".into(),
            position: vec![1],
            change: Change::Upsert(vec![SqlValue::Uuid(b), SqlValue::Null]),
        },
    ];
    apply(&mut target, &def, &writes).await;
    let hashes = target
        .content_hashes(
            &def,
            "Content",
            &[SqlValue::Uuid(a), SqlValue::Uuid(b), SqlValue::Uuid(missing)],
        )
        .await
        .expect("content_hashes");
    assert_eq!(
        hashes,
        vec![Some(sha2::Sha256::digest(&pdf).to_vec()), None, None],
        "a row's hash, a NULL content and a missing row"
    );
    drop_schema(&mut client, &schema, &["docs"]).await;
}
