//! Mapping mode end to end on the local stack: v1 rows become v2 rows in
//! PostgreSQL as the mapping says (checked against an expectation derived here,
//! independently of the mapping code), foreign keys resolve, a row the mapping
//! rejects goes to the dead-letter topic while the rest applies, and v2 ids are
//! the same after the target is emptied and the topic re-applied from offset 0.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pipeline::{BridgeProcess, Pipeline};
use common::sink::{add_sink, dead_letters, pg_client};
use mysql_async::prelude::Queryable;
use uuid::Uuid;

const NAMESPACE: &str = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001";

/// The v2 id of v1 row `id` of `table`: UUIDv5 over the JSON of
/// `[tenant, table, "[\"<id>\"]"]`, written out here rather than taken from the crate.
fn expected_id(tenant: &str, table: &str, id: i64) -> Uuid {
    let name = format!(r#"["{tenant}","{table}","[\"{id}\"]"]"#);
    Uuid::new_v5(&Uuid::parse_str(NAMESPACE).unwrap(), name.as_bytes())
}

fn mapping_toml(schema: &str) -> String {
    format!(
        r#"
namespace = "{NAMESPACE}"
timezone = "America/Chicago"
ambiguous_times = "earlier"
target_schema = "{schema}"

[lookups.status]
A = "Active"
I = "Inactive"

[[tables]]
name = "Facilities"
from = "facilities"
key = "Id"
[tables.columns]
Id = {{ id_of = "facilities" }}
TenantId = {{ tenant = true }}
Name = {{ from = "name", convert = "trim" }}
LegacyV1Key = {{ from = "id", convert = "text" }}
IsLegacy = {{ value = true }}

[[tables]]
name = "Patients"
from = "patients"
key = "Id"
skip_if = [{{ column = "deleted", equals = 1 }}]
[tables.columns]
Id = {{ id_of = "patients" }}
TenantId = {{ tenant = true }}
FacilityId = {{ id_of = "facilities", from = "facility_id" }}
LastName = {{ from = "last_name", convert = "trim_null_if_empty" }}
DateOfBirth = {{ from = "dob", convert = "date" }}
IsActive = {{ from = "is_active", convert = "bit" }}
Status = {{ from = "status", lookup = "status" }}
Preferences = {{ from = "prefs", convert = "php_json" }}
CreatedAtUtc = {{ from = "created_at", convert = "local_to_utc" }}
LegacyV1Key = {{ from = "id", convert = "text" }}
LegacySource = {{ value = "v1" }}

# A second v1 table filling columns of the same v2 rows.
[[tables]]
name = "Patients"
from = "patient_contacts"
key = "Id"
merge = true
[tables.columns]
Id = {{ id_of = "patients", from = "patient_id" }}
TenantId = {{ tenant = true }}
Phone = {{ from = "phone", convert = "trim_null_if_empty" }}
"#
    )
}

fn v2_ddl(schema: &str) -> String {
    format!(
        r#"CREATE SCHEMA "{schema}";
CREATE TABLE "{schema}"."Facilities" (
    "Id" uuid PRIMARY KEY, "TenantId" text NOT NULL, "Name" varchar(120) NOT NULL,
    "LegacyV1Key" text, "IsLegacy" boolean NOT NULL, "V2Notes" text DEFAULT 'kept');
CREATE TABLE "{schema}"."Patients" (
    "Id" uuid PRIMARY KEY, "TenantId" text NOT NULL, "FacilityId" uuid,
    "LastName" varchar(60), "DateOfBirth" date, "IsActive" boolean NOT NULL DEFAULT false,
    "Phone" varchar(30),
    "Status" text, "Preferences" json, "CreatedAtUtc" timestamptz(6),
    "LegacyV1Key" text, "LegacySource" text);"#
    )
}

async fn v1_rows(conn: &mut mysql_async::Conn, db: &str) {
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.facilities (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(120) NOT NULL); \
         CREATE TABLE `{db}`.patients (id INT AUTO_INCREMENT PRIMARY KEY, facility_id INT NOT NULL, \
           last_name VARCHAR(60), dob DATE NOT NULL DEFAULT '0000-00-00', is_active TINYINT(1) NOT NULL, \
           status CHAR(1) NOT NULL, prefs TEXT, created_at DATETIME NOT NULL, deleted TINYINT(1) NOT NULL DEFAULT 0); \
         CREATE TABLE `{db}`.patient_contacts (id INT PRIMARY KEY, patient_id INT NOT NULL, phone VARCHAR(30)); \
         INSERT INTO `{db}`.patient_contacts VALUES (1, 1, ' 555-0101 '), (2, 2, '555-0202'), (3, 3, '555-0303'); \
         INSERT INTO `{db}`.facilities VALUES (1, ' Riverside '), (2, 'Maple'); \
         INSERT INTO `{db}`.patients VALUES \
           (1, 1, 'Müller', '1941-03-07', 1, 'A', 'a:1:{{s:4:\"lang\";s:2:\"de\";}}', '2024-01-15 09:30:00', 0), \
           (2, 2, '  ', '0000-00-00', 0, 'I', NULL, '2024-07-01 09:30:00', 0), \
           (3, 1, 'Gone', '1950-01-01', 1, 'A', NULL, '2024-11-03 01:30:00', 1)"
    ))
    .await
    .unwrap();
}

/// `Id -> (FacilityId, LastName, DateOfBirth, IsActive, Status, Preferences, CreatedAtUtc)` as text.
async fn patients(pg: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Vec<Option<String>>> {
    pg.query(
        &format!(
            r#"SELECT "Id"::text, "FacilityId"::text, "LastName", "DateOfBirth"::text, "IsActive"::text,
                      "Status", "Preferences"::text, "CreatedAtUtc"::text, "TenantId", "LegacySource"
               FROM "{schema}"."Patients""#
        ),
        &[],
    )
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get::<_, String>(0), (1..10).map(|i| r.get(i)).collect()))
            .collect()
    })
    .unwrap_or_default()
}

/// A pipeline with the v2 schema in PostgreSQL, the mapping file and a `[sink]`
/// in mapping mode: (pipeline, v2 schema, consumer group, mapping path).
async fn setup(name: &str, tenants: usize) -> (Pipeline, String, String, std::path::PathBuf) {
    let p = Pipeline::new(name, tenants, "").await;
    let pg = pg_client(&p.stack).await;
    let schema = format!("{}_v2", p.prefix);
    pg.batch_execute(&v2_ddl(&schema)).await.unwrap();
    let mapping_path = p.config_dir.path().join("mapping.toml");
    std::fs::write(&mapping_path, mapping_toml(&schema)).unwrap();
    let sink = add_sink(
        &p,
        &format!("mode = \"mapping\"\nmapping = \"{}\"", mapping_path.display()),
    );
    let group = sink.group;
    (p, schema, group, mapping_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_mode_writes_v2_rows_with_stable_ids() {
    let (p, schema, group, _) = setup("mapping", 2).await;
    let pg = pg_client(&p.stack).await;
    let mut conn = p.admin().await;
    for db in &p.databases {
        v1_rows(&mut conn, db).await;
    }
    let source = p.start_source(&[]);
    let mut sink = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);

    // Streamed changes too: an update, a soft delete, a row the mapping rejects
    // (unknown status code), and one more valid row after it.
    let (a, b) = (&p.databases[0], &p.databases[1]);
    conn.query_drop(format!(
        "UPDATE `{a}`.patients SET last_name = 'Müller-Lang' WHERE id = 1; \
         UPDATE `{b}`.patients SET deleted = 1 WHERE id = 1; \
         INSERT INTO `{a}`.patients VALUES (4, 2, 'Bad', '1960-01-01', 1, 'Q', NULL, '2024-01-01 00:00:00', 0); \
         INSERT INTO `{a}`.patients VALUES (5, 2, 'After', '1970-05-05', 1, 'A', 'a:0:{{}}', '2024-03-10 12:00:00', 0); \
         DELETE FROM `{a}`.patient_contacts WHERE id = 2"
    ))
    .await
    .unwrap();

    // Expectation, derived here: ids, FKs, conversions.
    let row = |tenant: &str, id: i64, facility: i64, rest: [Option<&str>; 6]| {
        let mut v = vec![Some(expected_id(tenant, "facilities", facility).to_string())];
        v.extend(rest.iter().map(|s| s.map(str::to_owned)));
        v.push(Some(tenant.to_owned()));
        v.push(Some("v1".to_owned()));
        (expected_id(tenant, "patients", id).to_string(), v)
    };
    let mut expected = BTreeMap::new();
    for t in [a, b] {
        let last = if t == a { "Müller-Lang" } else { "Müller" };
        expected.extend([
            // 09:30 CST = 15:30 UTC; 09:30 CDT = 14:30 UTC.
            row(
                t,
                1,
                1,
                [
                    Some(last),
                    Some("1941-03-07"),
                    Some("true"),
                    Some("Active"),
                    Some(r#"{"lang":"de"}"#),
                    Some("2024-01-15 15:30:00+00"),
                ],
            ),
            row(
                t,
                2,
                2,
                [
                    None,
                    None,
                    Some("false"),
                    Some("Inactive"),
                    None,
                    Some("2024-07-01 14:30:00+00"),
                ],
            ),
        ]);
    }
    expected.remove(&expected_id(b, "patients", 1).to_string()); // soft-deleted
    expected.extend([row(
        a,
        5,
        2,
        [
            Some("After"),
            Some("1970-05-05"),
            Some("true"),
            Some("Active"),
            Some("[]"),
            Some("2024-03-10 17:00:00+00"),
        ],
    )]);

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let actual = patients(&pg, &schema).await;
        if actual == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "v2 Patients differ:\nexpected {expected:#?}\nactual {actual:#?}\n{}\n{}",
            source.log_text(),
            sink.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The merged source: its columns on the owner's rows, cleared (not deleted) by its delete.
    let phones: BTreeMap<String, Option<String>> = pg
        .query(
            &format!(r#"SELECT "Id"::text, "Phone" FROM "{schema}"."Patients""#),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let phone = |t: &str, id| phones.get(&expected_id(t, "patients", id).to_string()).cloned();
    assert_eq!(phone(a, 1), Some(Some("555-0101".to_owned())), "{phones:?}");
    assert_eq!(
        phone(a, 2),
        Some(None),
        "a deleted contact clears its column: {phones:?}"
    );
    assert_eq!(phone(b, 2), Some(Some("555-0202".to_owned())), "{phones:?}");
    assert_eq!(
        phone(b, 1),
        None,
        "the owner's (soft) delete removes the row: {phones:?}"
    );
    // Patient 3 is soft-deleted from the start: its contact creates no partial row.
    assert_eq!(phone(a, 3), None, "{phones:?}");
    assert_eq!(phone(b, 3), None, "{phones:?}");

    // Every foreign key resolves; only mapped columns were written.
    let orphans: i64 = pg
        .query_one(
            &format!(
                r#"SELECT count(*) FROM "{schema}"."Patients" p
                   LEFT JOIN "{schema}"."Facilities" f ON f."Id" = p."FacilityId" WHERE f."Id" IS NULL"#
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "every FacilityId resolves");
    let kept: i64 = pg
        .query_one(&format!(r#"SELECT count(*) FROM "{schema}"."Facilities" WHERE "V2Notes" = 'kept' AND "Name" = 'Riverside'"#), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2, "names trimmed, v2-only columns left to v2");

    // The rejected row is in the dead-letter topic with table, key, position and reason.
    let kafka = p.kafka();
    let dead: Vec<BTreeMap<String, String>> = dead_letters(&kafka)
        .await
        .into_iter()
        .map(|(_, headers)| headers)
        .collect();
    let record = dead
        .iter()
        .find(|h| h.get("cdc_bridge.stage").map(String::as_str) == Some("transform"))
        .expect("a transform dead letter");
    assert_eq!(record["cdc_bridge.table"], format!("{a}.patients"));
    assert_eq!(record["cdc_bridge.key"], r#"{"id":"4"}"#);
    assert!(record["cdc_bridge.position"].contains("mysql-bin"), "{record:?}");
    assert_eq!(
        record["cdc_bridge.error"],
        "Patients.Status: code not in lookup \"status\""
    );
    assert!(!sink.log_text().contains("Bad"), "no row values in the log");

    // Empty v2 and re-apply the whole topic from offset 0: the same ids.
    // (SIGTERM: the sink leaves the group, so the next one is assigned at once.)
    sink.terminate();
    let before = patients(&pg, &schema).await;
    pg.batch_execute(&format!(
        r#"DELETE FROM "{schema}"."Patients"; DELETE FROM "{schema}"."Facilities";
           DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{schema}.');
           DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = '{group}';"#
    ))
    .await
    .unwrap();
    let again = BridgeProcess::spawn_command("sink", &p.config_path, &p.stack.child_env(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while patients(&pg, &schema).await != before {
        assert!(
            std::time::Instant::now() < deadline,
            "re-applied v2 differs:\n{}",
            again.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(again);
    drop(source);
    pg.batch_execute(&format!(
        r#"DROP SCHEMA "{schema}" CASCADE;
           DELETE FROM cdc_bridge.row_positions WHERE starts_with(table_id, '{schema}.');
           DELETE FROM cdc_bridge.sink_offsets WHERE consumer_group = '{group}';"#
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_check_and_preview_explain_before_anything_runs() {
    let (p, schema, _, mapping_path) = setup("mapping_check", 1).await;
    let pg = pg_client(&p.stack).await;
    let mut conn = p.admin().await;
    v1_rows(&mut conn, &p.databases[0]).await;
    let config = common::path_str(&p.config_path).to_owned();
    let env = p.stack.child_env();

    let ok = common::cdc_bridge(&["mapping", "check", "--config", &config], &env);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("OK"), "{out}");

    // A v1 column that does not exist and a conversion the v2 column cannot hold.
    let good = std::fs::read_to_string(&mapping_path).unwrap();
    let bad = good
        .replace(r#"from = "last_name""#, r#"from = "surname""#)
        .replace(
            r#"IsActive = { from = "is_active", convert = "bit" }"#,
            r#"IsActive = { from = "is_active", convert = "trim" }"#,
        );
    std::fs::write(&mapping_path, &bad).unwrap();
    let failed = common::cdc_bridge(&["mapping", "check", "--config", &config], &env);
    let out = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    let file = mapping_path.display().to_string();
    let line = |needle: &str| bad.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    assert!(
        out.contains(&format!(
            "{file}:{}: tables[1].columns.LastName.from: v1 column patients.surname does not exist",
            line("LastName")
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:{}: tables[1].columns.IsActive: v2 column type Bool",
            line("IsActive")
        )),
        "{out}"
    );
    std::fs::write(&mapping_path, &good).unwrap();

    // Preview: the v2 row one v1 row becomes, values read with the v1 types.
    let row = r#"{"id": 9, "facility_id": 1, "last_name": " Okafor ", "dob": "1962-02-14", "is_active": 1,
                  "status": "A", "prefs": "a:1:{i:0;s:3:\"tea\";}", "created_at": "2024-11-03 01:30:00", "deleted": 0}"#;
    let shown = common::cdc_bridge(
        &[
            "mapping", "preview", "--config", &config, "--table", "patients", "--row", row, "--tenant", "t1",
        ],
        &env,
    );
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v2 = &rows[0]["row"];
    assert_eq!(rows[0]["table"], "Patients");
    assert_eq!(v2["Id"], expected_id("t1", "patients", 9).to_string());
    assert_eq!(v2["FacilityId"], expected_id("t1", "facilities", 1).to_string());
    assert_eq!(v2["LastName"], "Okafor");
    assert_eq!(v2["Preferences"], serde_json::json!(["tea"]));
    // 01:30 on the autumn overlap, "earlier": CDT, 06:30 UTC.
    assert_eq!(v2["CreatedAtUtc"], "2024-11-03T06:30:00.000000Z");
    // Preview of a row read from v1 by its key, exactly as the snapshot reads it.
    let shown = common::cdc_bridge(
        &[
            "mapping", "preview", "--config", &config, "--table", "patients", "--key", "1",
        ],
        &env,
    );
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tenant = &p.databases[0];
    assert_eq!(
        rows[0]["row"]["Id"],
        expected_id(tenant, "patients", 1).to_string()
    );
    assert_eq!(rows[0]["row"]["LastName"], "Müller");
    assert_eq!(rows[0]["row"]["CreatedAtUtc"], "2024-01-15T15:30:00.000000Z");
    pg.batch_execute(&format!(r#"DROP SCHEMA "{schema}" CASCADE"#))
        .await
        .unwrap();
}
