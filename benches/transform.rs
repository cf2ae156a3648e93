//! The transform's own speed, in process: a v1→v2 mapping (UUIDv5 ids, a
//! foreign key, local→UTC, trimming, a lookup, PHP-serialized → JSON, constants)
//! applied to synthetic change events. No servers needed.
//!
//! `cargo bench --bench transform` (`CDC_BRIDGE_BENCH_ROWS` changes the count).

use std::time::Instant;

use cdc_bridge::event::{ChangeEvent, Date, DateTime, Operation, Row, TransactionInfo, Value};
use cdc_bridge::sink::target::{ColumnDef, SqlType, TableDef};
use cdc_bridge::transform::mapping::Mapping;

const MAPPING: &str = r#"
namespace = "6f1c2a64-2a43-4f3e-9d7e-1c5b1b7a0001"
timezone = "America/Chicago"
ambiguous_times = "earlier"
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
DateOfBirth = { from = "dob", convert = "date" }
IsActive = { from = "is_active", convert = "bit" }
Status = { from = "status", lookup = "status" }
Preferences = { from = "prefs", convert = "php_json" }
CreatedAtUtc = { from = "created_at", convert = "local_to_utc" }
LegacyV1Key = { from = "id", convert = "text" }
IsLegacy = { value = true }
"#;

fn main() {
    let n: u64 = std::env::var("CDC_BRIDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let mapping = Mapping::from_toml_str(MAPPING, "bench").expect("valid mapping");
    let col = |name: &str, ty: SqlType| ColumnDef {
        name: name.into(),
        ty,
        nullable: true,
    };
    let catalog = TableDef {
        scope: String::new(),
        schema: "v2".into(),
        name: "Patients".into(),
        columns: vec![
            col("Id", SqlType::Uuid),
            col("TenantId", SqlType::Text { max_chars: None }),
            col("FacilityId", SqlType::Uuid),
            col("LastName", SqlType::Text { max_chars: Some(60) }),
            col("DateOfBirth", SqlType::Date),
            col("IsActive", SqlType::Bool),
            col("Status", SqlType::Text { max_chars: None }),
            col("Preferences", SqlType::Json),
            col("CreatedAtUtc", SqlType::DateTimeOffset),
            col("LegacyV1Key", SqlType::Text { max_chars: None }),
            col("IsLegacy", SqlType::Bool),
        ],
        key: vec![0],
    };
    let def = mapping.projection(0, &catalog).expect("projection");
    let events: Vec<ChangeEvent> = (0..n)
        .map(|i| {
            let row = Row(vec![
                ("id".into(), Value::Int(i as i64)),
                ("facility_id".into(), Value::Int((i % 50) as i64)),
                ("last_name".into(), Value::Text(format!("  Núñez {i} "))),
                (
                    "dob".into(),
                    Value::Date(Date {
                        year: 1950,
                        month: 3,
                        day: 7,
                    }),
                ),
                ("is_active".into(), Value::Int((i % 2) as i64)),
                (
                    "status".into(),
                    Value::Text(if i % 3 == 0 { "I" } else { "A" }.into()),
                ),
                (
                    "prefs".into(),
                    Value::Text(r#"a:2:{s:4:"lang";s:2:"de";s:6:"alerts";b:1;}"#.into()),
                ),
                (
                    "created_at".into(),
                    Value::DateTime(DateTime {
                        date: Date {
                            year: 2024,
                            month: 1 + (i % 12) as u8,
                            day: 15,
                        },
                        hour: 9,
                        minute: 30,
                        second: 0,
                        micros: 0,
                    }),
                ),
                ("deleted".into(), Value::Int(0)),
            ]);
            ChangeEvent {
                tenant: "pinpoint_alpha".into(),
                database: "pinpoint_alpha".into(),
                table: "patients".into(),
                op: Operation::Insert,
                key: Row(vec![("id".into(), Value::Int(i as i64))]),
                before: None,
                after: Some(row),
                ddl: None,
                schema_version: 1,
                position: "mysql-bin.000001:4#0".parse().unwrap(),
                commit_time_micros: 0,
                transaction: TransactionInfo {
                    id: "t".into(),
                    index: 0,
                    last: true,
                },
            }
        })
        .collect();
    let started = Instant::now();
    let mut writes = 0usize;
    for ev in &events {
        writes += mapping.apply(0, &def, ev).expect("maps").len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "transform: {n} events → {writes} v2 rows in {secs:.2} s = {:.0} rows/s (one core; 11 columns: \
         2 UUIDv5, local→UTC, trim, lookup, PHP→JSON, bit, date, constant)",
        n as f64 / secs
    );
}
