//! The lossless JSON form of events, for people (`cdc-bridge tail`) and tools.
//!
//! Integers and doubles are JSON numbers written with all their digits; text is a
//! JSON string; every other type is an object naming its type, so nothing is
//! guessed back: `{"decimal":"12.50"}`, `{"datetime":"2024-02-29 12:00:00.000001"}`,
//! `{"bytes_hex":"00ff"}`, `{"bit":{"width":10,"bits":682}}`.

use serde_json::{json, Map, Value as Json};

use super::{ChangeEvent, Row, Value};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One value in its lossless JSON form.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!({ "float": f.to_string() }),
        Value::Double(d) if d.is_finite() => json!(d),
        Value::Double(d) => json!({ "double": d.to_string() }),
        Value::Decimal(d) => json!({ "decimal": d.as_str() }),
        Value::Date(d) => json!({ "date": d.to_string() }),
        Value::DateTime(d) => json!({ "datetime": d.to_string() }),
        Value::Timestamp {
            unix_seconds: 0,
            micros: 0,
        } => json!({ "timestamp": "0000-00-00 00:00:00" }),
        Value::Timestamp { unix_seconds, micros } => {
            let (days, secs) = (unix_seconds.div_euclid(86_400), unix_seconds.rem_euclid(86_400));
            let (y, m, d) = crate::source::convert::civil_from_days(days);
            json!({ "timestamp": format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            ) })
        }
        Value::Time(t) => json!({ "time": t.to_string() }),
        Value::Year(y) => json!({ "year": y }),
        Value::Text(s) => json!(s),
        Value::TextBytes { charset, bytes } => {
            json!({ "text_bytes": { "charset": charset, "hex": hex(bytes) } })
        }
        Value::Bytes(b) => json!({ "bytes_hex": hex(b) }),
        Value::Enum(e) => json!({ "enum": e }),
        Value::Set(members) => json!({ "set": members }),
        Value::Bit { width, bits } => json!({ "bit": { "width": width, "bits": bits } }),
        Value::Json(text) => json!({ "json": text }),
        Value::Geometry(b) => json!({ "geometry_hex": hex(b) }),
    }
}

/// A row as a JSON object in column order.
pub fn row_to_json(row: &Row) -> Json {
    let mut map = Map::new();
    for (name, value) in &row.0 {
        map.insert(name.clone(), value_to_json(value));
    }
    Json::Object(map)
}

/// A whole event, with row values (for `tail`, which the user asked for).
pub fn event_to_json(ev: &ChangeEvent) -> Json {
    json!({
        "tenant": ev.tenant,
        "database": ev.database,
        "table": ev.table,
        "op": ev.op.as_str(),
        "key": row_to_json(&ev.key),
        "before": ev.before.as_ref().map(row_to_json),
        "after": ev.after.as_ref().map(row_to_json),
        "ddl": ev.ddl,
        "schema_version": ev.schema_version,
        "position": ev.position.to_string(),
        "commit_time_micros": ev.commit_time_micros,
        "transaction": {
            "id": ev.transaction.id,
            "index": ev.transaction.index,
            "last": ev.transaction.last,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_type_and_digits() {
        assert_eq!(
            value_to_json(&Value::UInt(u64::MAX)).to_string(),
            "18446744073709551615"
        );
        assert_eq!(value_to_json(&Value::Double(-0.0)).to_string(), "-0.0");
        assert_eq!(
            value_to_json(&Value::Decimal("-0.50".parse().unwrap())).to_string(),
            r#"{"decimal":"-0.50"}"#
        );
        assert_eq!(
            value_to_json(&Value::Float(0.1)).to_string(),
            r#"{"float":"0.1"}"#
        );
        assert_eq!(
            value_to_json(&Value::Bytes(vec![0, 255])).to_string(),
            r#"{"bytes_hex":"00ff"}"#
        );
    }
}
