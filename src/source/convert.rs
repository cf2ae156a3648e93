//! MySQL wire values to [`Value`], for both the snapshot and the binlog.
//!
//! The two paths hand over the same column in different shapes (the snapshot's
//! binary protocol gives ENUM as its name and TIMESTAMP as a date in the session
//! zone; the binlog gives ENUM as an index and TIMESTAMP as epoch seconds), so
//! each path has its entry point, and both end in the same constructors: a value
//! read by a snapshot equals the same value read from the binlog.

use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as Wire;

use super::charset;
use super::schema::ColumnSchema;
use crate::event::{Date, DateTime, Decimal, Time, Value};

/// A column value that does not fit its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column} ({data_type}): {reason}")]
pub struct ConvertError {
    pub column: String,
    pub data_type: String,
    /// Describes the mismatch by kind and size, never by content.
    pub reason: String,
}

fn err(col: &ColumnSchema, reason: impl Into<String>) -> ConvertError {
    ConvertError {
        column: col.name.clone(),
        data_type: col.data_type.clone(),
        reason: reason.into(),
    }
}

fn wire_kind(v: &Wire) -> &'static str {
    match v {
        Wire::NULL => "NULL",
        Wire::Bytes(_) => "bytes",
        Wire::Int(_) => "int",
        Wire::UInt(_) => "uint",
        Wire::Float(_) => "float",
        Wire::Double(_) => "double",
        Wire::Date(..) => "date",
        Wire::Time(..) => "time",
    }
}

/// A value from a snapshot `SELECT` (binary protocol, session time zone UTC,
/// `character_set_results = NULL`).
pub fn from_snapshot(col: &ColumnSchema, v: Wire) -> Result<Value, ConvertError> {
    match (col.data_type.as_str(), v) {
        (_, Wire::NULL) => Ok(Value::Null),
        ("timestamp", Wire::Date(y, mo, d, h, mi, s, us)) => {
            timestamp_from_utc_parts(col, y, mo, d, h, mi, s, us)
        }
        ("enum", Wire::Bytes(b)) => Ok(Value::Enum(text_of(col, b)?)),
        ("set", Wire::Bytes(b)) => {
            let text = text_of(col, b)?;
            Ok(Value::Set(if text.is_empty() {
                Vec::new()
            } else {
                text.split(',').map(str::to_owned).collect()
            }))
        }
        ("year", Wire::Int(y)) => year(col, y),
        (_, v) => common(col, v),
    }
}

/// A value from a binlog row event.
pub fn from_binlog(col: &ColumnSchema, v: BinlogValue<'_>) -> Result<Value, ConvertError> {
    let v = match v {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(j) => {
            let json: serde_json::Value = j
                .parse()
                .map_err(|e| err(col, format!("undecodable binary JSON: {e}")))?
                .into();
            return Ok(Value::Json(json.to_string()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err(err(
                col,
                "partial JSON update (binlog_row_value_options=PARTIAL_JSON) is not supported; \
                 set binlog_row_value_options='' on the server",
            ))
        }
    };
    match (col.data_type.as_str(), v) {
        (_, Wire::NULL) => Ok(Value::Null),
        ("timestamp", Wire::Int(secs)) => Ok(Value::Timestamp {
            unix_seconds: secs,
            micros: 0,
        }),
        ("timestamp", Wire::Bytes(b)) => {
            // "seconds[.micros]" since the epoch, as mysql_common renders TIMESTAMP2.
            let text = String::from_utf8(b).map_err(|_| err(col, "non-ASCII timestamp"))?;
            let (secs, frac) = text.split_once('.').unwrap_or((&text, "0"));
            let unix_seconds = secs.parse().map_err(|_| err(col, "bad timestamp seconds"))?;
            let micros = frac.parse().map_err(|_| err(col, "bad timestamp fraction"))?;
            Ok(Value::Timestamp { unix_seconds, micros })
        }
        ("enum", Wire::Int(index)) => match index {
            0 => Ok(Value::Enum(String::new())),
            i => col
                .members
                .get(i as usize - 1)
                .map(|m| Value::Enum(m.clone()))
                .ok_or_else(|| {
                    err(
                        col,
                        format!("enum index {i} beyond {} members", col.members.len()),
                    )
                }),
        },
        ("set", Wire::Bytes(mask)) => {
            let mut bits: u64 = 0;
            for (i, byte) in mask.iter().enumerate().take(8) {
                bits |= u64::from(*byte) << (8 * i);
            }
            if col.members.len() < 64 && bits >> col.members.len() != 0 {
                return Err(err(col, "set bitmask names members beyond the definition"));
            }
            Ok(Value::Set(
                col.members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, m)| m.clone())
                    .collect(),
            ))
        }
        // mysql_common reads a signed MEDIUMINT from the binlog without sign
        // extension (-1 arrives as 16777215): extend it here.
        ("mediumint", Wire::Int(v)) if !col.unsigned && v > 0x7f_ffff => Ok(Value::Int(v - 0x100_0000)),
        ("year", Wire::Bytes(b)) => {
            // mysql_common renders YEAR as 1900 + stored byte, so the zero year comes as 1900.
            let y: i64 = std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| err(col, "bad YEAR"))?;
            year(col, if y == 1900 { 0 } else { y })
        }
        (_, v) => common(col, v),
    }
}

/// Conversions the two paths share.
fn common(col: &ColumnSchema, v: Wire) -> Result<Value, ConvertError> {
    let kind = wire_kind(&v);
    let mismatch = || err(col, format!("unexpected {kind} value"));
    match col.data_type.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => match v {
            Wire::Int(i) if col.unsigned => u64::try_from(i)
                .map(Value::UInt)
                .map_err(|_| err(col, "negative value in an unsigned column")),
            Wire::Int(i) => Ok(Value::Int(i)),
            Wire::UInt(u) if col.unsigned => Ok(Value::UInt(u)),
            Wire::UInt(u) => i64::try_from(u).map(Value::Int).map_err(|_| mismatch()),
            _ => Err(mismatch()),
        },
        "float" => match v {
            Wire::Float(f) => Ok(Value::Float(f)),
            Wire::Double(d) => Ok(Value::Float(d as f32)),
            _ => Err(mismatch()),
        },
        "double" | "real" => match v {
            Wire::Double(d) => Ok(Value::Double(d)),
            Wire::Float(f) => Ok(Value::Double(f64::from(f))),
            _ => Err(mismatch()),
        },
        "decimal" | "numeric" => match v {
            Wire::Bytes(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<Decimal>().ok())
                .map(Value::Decimal)
                .ok_or_else(|| err(col, "not a decimal number")),
            _ => Err(mismatch()),
        },
        "bit" => match v {
            Wire::Bytes(b) if b.len() <= 8 => {
                let bits = b.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
                let width = col.numeric_precision.unwrap_or(b.len() as u64 * 8).clamp(1, 64) as u8;
                Ok(Value::Bit { width, bits })
            }
            _ => Err(mismatch()),
        },
        "date" => match v {
            Wire::Date(y, m, d, ..) => Ok(Value::Date(Date {
                year: y,
                month: m,
                day: d,
            })),
            _ => Err(mismatch()),
        },
        "datetime" => match v {
            Wire::Date(y, mo, d, h, mi, s, us) => Ok(Value::DateTime(datetime(y, mo, d, h, mi, s, us))),
            _ => Err(mismatch()),
        },
        "time" => match v {
            Wire::Time(negative, days, h, m, s, us) => {
                let hours = days
                    .checked_mul(24)
                    .and_then(|x| x.checked_add(u32::from(h)))
                    .and_then(|x| u16::try_from(x).ok())
                    .ok_or_else(|| err(col, "TIME out of range"))?;
                Ok(Value::Time(Time {
                    negative,
                    hours,
                    minutes: m,
                    seconds: s,
                    micros: us,
                }))
            }
            _ => Err(mismatch()),
        },
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => match v {
            Wire::Bytes(b) => Ok(charset::decode(col.charset.as_deref().unwrap_or("utf8mb4"), b)),
            _ => Err(mismatch()),
        },
        "binary" => match v {
            Wire::Bytes(mut b) => {
                // The binlog drops BINARY(n)'s trailing zero bytes; SELECT returns them.
                if let Some(n) = col.octet_length {
                    if (b.len() as u64) < n {
                        b.resize(n as usize, 0);
                    }
                }
                Ok(Value::Bytes(b))
            }
            _ => Err(mismatch()),
        },
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => match v {
            Wire::Bytes(b) => Ok(Value::Bytes(b)),
            _ => Err(mismatch()),
        },
        "json" => match v {
            Wire::Bytes(b) => String::from_utf8(b)
                .map(Value::Json)
                .map_err(|_| err(col, "JSON is not UTF-8")),
            _ => Err(mismatch()),
        },
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => match v {
            Wire::Bytes(b) => Ok(Value::Geometry(b)),
            _ => Err(mismatch()),
        },
        other => Err(err(col, format!("unsupported column type {other}"))),
    }
}

fn text_of(col: &ColumnSchema, bytes: Vec<u8>) -> Result<String, ConvertError> {
    match charset::decode(col.charset.as_deref().unwrap_or("utf8mb4"), bytes) {
        Value::Text(t) => Ok(t),
        _ => Err(err(col, "member name not valid in the column charset")),
    }
}

fn year(col: &ColumnSchema, y: i64) -> Result<Value, ConvertError> {
    match y {
        0 | 1901..=2155 => Ok(Value::Year(y as u16)),
        _ => Err(err(col, "YEAR out of range")),
    }
}

fn datetime(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> DateTime {
    DateTime {
        date: Date {
            year: y,
            month: mo,
            day: d,
        },
        hour: h,
        minute: mi,
        second: s,
        micros: us,
    }
}

#[allow(clippy::too_many_arguments)]
fn timestamp_from_utc_parts(
    col: &ColumnSchema,
    y: u16,
    mo: u8,
    d: u8,
    h: u8,
    mi: u8,
    s: u8,
    us: u32,
) -> Result<Value, ConvertError> {
    if y == 0 && mo == 0 && d == 0 {
        return Ok(Value::Timestamp {
            unix_seconds: 0,
            micros: 0,
        });
    }
    if !(1..=12).contains(&mo) || d == 0 {
        return Err(err(col, "TIMESTAMP with zero month or day"));
    }
    let days = days_from_civil(i64::from(y), u32::from(mo), u32::from(d));
    Ok(Value::Timestamp {
        unix_seconds: days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s),
        micros: us,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: data_type.into(),
            unsigned: false,
            nullable: true,
            charset: Some("utf8mb4".into()),
            members: vec!["a".into(), "b".into(), "c".into()],
            octet_length: Some(4),
            numeric_precision: Some(12),
        }
    }

    #[test]
    fn enum_and_set_agree_between_paths() {
        let e = col("enum");
        assert_eq!(
            from_binlog(&e, BinlogValue::Value(Wire::Int(2))).unwrap(),
            from_snapshot(&e, Wire::Bytes(b"b".to_vec())).unwrap()
        );
        assert_eq!(
            from_binlog(&e, BinlogValue::Value(Wire::Int(0))).unwrap(),
            Value::Enum("".into())
        );
        assert!(from_binlog(&e, BinlogValue::Value(Wire::Int(9))).is_err());
        let s = col("set");
        assert_eq!(
            from_binlog(&s, BinlogValue::Value(Wire::Bytes(vec![0b101]))).unwrap(),
            from_snapshot(&s, Wire::Bytes(b"a,c".to_vec())).unwrap()
        );
        assert_eq!(
            from_snapshot(&s, Wire::Bytes(vec![])).unwrap(),
            Value::Set(vec![])
        );
    }

    #[test]
    fn timestamps_agree_between_paths() {
        let t = col("timestamp");
        let snap = from_snapshot(&t, Wire::Date(2024, 2, 29, 12, 30, 1, 500)).unwrap();
        let bin = from_binlog(&t, BinlogValue::Value(Wire::Bytes(b"1709209801.000500".to_vec()))).unwrap();
        assert_eq!(snap, bin);
        assert_eq!(
            from_snapshot(&t, Wire::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            from_binlog(&t, BinlogValue::Value(Wire::Bytes(b"0".to_vec()))).unwrap()
        );
    }

    #[test]
    fn year_zero_is_not_1900() {
        let y = col("year");
        assert_eq!(
            from_binlog(&y, BinlogValue::Value(Wire::Bytes(b"1900".to_vec()))).unwrap(),
            Value::Year(0)
        );
        assert_eq!(from_snapshot(&y, Wire::Int(0)).unwrap(), Value::Year(0));
        assert_eq!(from_snapshot(&y, Wire::Int(2155)).unwrap(), Value::Year(2155));
    }

    #[test]
    fn unsigned_and_bits_and_binary_padding() {
        let mut c = col("bigint");
        c.unsigned = true;
        assert_eq!(
            from_snapshot(&c, Wire::UInt(u64::MAX)).unwrap(),
            Value::UInt(u64::MAX)
        );
        let mut c = col("tinyint");
        c.unsigned = true;
        assert_eq!(from_snapshot(&c, Wire::Int(255)).unwrap(), Value::UInt(255));
        assert_eq!(
            from_snapshot(&col("bit"), Wire::Bytes(vec![0x0f, 0xff])).unwrap(),
            Value::Bit {
                width: 12,
                bits: 0xfff
            }
        );
        assert_eq!(
            from_binlog(&col("binary"), BinlogValue::Value(Wire::Bytes(vec![1]))).unwrap(),
            Value::Bytes(vec![1, 0, 0, 0])
        );
    }

    #[test]
    fn signed_mediumint_from_the_binlog_is_sign_extended() {
        let c = col("mediumint");
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(Wire::Int(0x80_0000))).unwrap(),
            Value::Int(-8_388_608)
        );
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(Wire::Int(0xff_ffff))).unwrap(),
            Value::Int(-1)
        );
        assert_eq!(
            from_binlog(&c, BinlogValue::Value(Wire::Int(8_388_607))).unwrap(),
            Value::Int(8_388_607)
        );
        let mut u = col("mediumint");
        u.unsigned = true;
        assert_eq!(
            from_binlog(&u, BinlogValue::Value(Wire::Int(0xff_ffff))).unwrap(),
            Value::UInt(16_777_215)
        );
    }

    #[test]
    fn negative_and_long_times() {
        assert_eq!(
            from_snapshot(&col("time"), Wire::Time(true, 34, 22, 59, 59, 0)).unwrap(),
            Value::Time("-838:59:59".parse().unwrap())
        );
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for days in [-800_000, -1, 0, 59, 11_017, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
