//! Mirror mode: each v1 table lands in a same-named table of a per-tenant
//! schema, columns and values as in v1.
//!
//! Types are mapped to keep every value exact ([`column_type`]); values that a
//! target type cannot hold are the documented exceptions: zero dates and zero
//! timestamps become NULL (as Debezium does), and text whose bytes are not valid
//! in its charset is rejected to the dead-letter topic rather than altered.

use crate::event::{Row, Value};
use crate::source::schema::{ColumnSchema, TableSchema};

use super::target::{ColumnDef, SqlType, SqlValue, TableDef};

/// Why a value or a table cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    #[error("column {column}: unsupported MySQL type {column_type:?}")]
    UnknownType { column: String, column_type: String },
    #[error("column {column}: {reason}")]
    Value { column: String, reason: String },
}

/// The target schema name of a v1 database.
pub fn schema_name(prefix: &str, database: &str) -> String {
    format!("{prefix}{database}")
}

/// The target table for a v1 table schema.
pub fn table_def(prefix: &str, schema: &TableSchema) -> Result<TableDef, MirrorError> {
    let columns = schema
        .columns
        .iter()
        .map(|c| {
            Ok(ColumnDef {
                name: c.name.clone(),
                ty: column_type(c)?,
                // The landing zone never rejects a row v1 accepted: zero dates
                // arrive as NULL even in NOT NULL columns.
                nullable: true,
            })
        })
        .collect::<Result<Vec<_>, MirrorError>>()?;
    let key = schema
        .primary_key
        .iter()
        .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
        .collect::<Vec<_>>();
    let mut columns = columns;
    for &i in &key {
        columns[i].nullable = false;
    }
    Ok(TableDef {
        scope: String::new(),
        schema: schema_name(prefix, &schema.database),
        name: schema.table.clone(),
        columns,
        key,
    })
}

/// `(precision, scale)` from `decimal(10,2)`, `decimal(10)` or `decimal`.
fn precision_scale(column_type: &str) -> (u8, u8) {
    let inner = column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner);
    let mut parts = inner.unwrap_or("10,0").split(',');
    let p = parts.next().and_then(|p| p.trim().parse().ok()).unwrap_or(10);
    let s = parts.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    (p, s)
}

/// Declared length of `varchar(40)` / `binary(16)`.
fn declared_length(column_type: &str) -> Option<u32> {
    column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(inner, _)| inner.trim().parse().ok())
}

/// The target type that holds every value of a MySQL column exactly.
pub fn column_type(c: &ColumnSchema) -> Result<SqlType, MirrorError> {
    let t = c.data_type.as_str();
    Ok(match t {
        "tinyint" => SqlType::SmallInt,
        "smallint" if c.unsigned => SqlType::Int,
        "smallint" => SqlType::SmallInt,
        "mediumint" => SqlType::Int,
        "int" | "integer" if c.unsigned => SqlType::BigInt,
        "int" | "integer" => SqlType::Int,
        "bigint" if c.unsigned => SqlType::Decimal {
            precision: 20,
            scale: 0,
        },
        "bigint" => SqlType::BigInt,
        "decimal" | "numeric" => {
            let (precision, scale) = precision_scale(&c.column_type);
            SqlType::Decimal { precision, scale }
        }
        "float" => SqlType::Real,
        "double" | "real" => SqlType::Double,
        "date" => SqlType::Date,
        "datetime" => SqlType::DateTime,
        "timestamp" => SqlType::DateTimeOffset,
        "time" => SqlType::Duration,
        "year" => SqlType::SmallInt,
        "char" | "varchar" => SqlType::Text {
            max_chars: declared_length(&c.column_type),
        },
        "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => SqlType::Text { max_chars: None },
        "binary" | "varbinary" => SqlType::Bytes {
            max_len: declared_length(&c.column_type),
        },
        "tinyblob" | "blob" | "mediumblob" | "longblob" => SqlType::Bytes { max_len: None },
        "bit" => SqlType::Bits {
            width: c.numeric_precision.unwrap_or(1).clamp(1, 64) as u8,
        },
        "json" => SqlType::Json,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => SqlType::Bytes { max_len: None },
        _ => {
            return Err(MirrorError::UnknownType {
                column: c.name.clone(),
                column_type: c.column_type.clone(),
            })
        }
    })
}

fn micros_of(seconds: i64, micros: u32) -> i64 {
    seconds * 1_000_000 + i64::from(micros)
}

/// A v1 value as the target stores it in a column of type `ty`.
pub fn value(column: &str, ty: &SqlType, v: &Value) -> Result<SqlValue, MirrorError> {
    let bad = |reason: String| MirrorError::Value {
        column: column.to_owned(),
        reason,
    };
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Int(i) => SqlValue::Int(*i),
        Value::UInt(u) => match ty {
            SqlType::Decimal { .. } => SqlValue::Decimal(u.to_string()),
            _ => SqlValue::Int(i64::try_from(*u).map_err(|_| bad("unsigned value out of range".into()))?),
        },
        Value::Float(f) => SqlValue::Real(*f),
        Value::Double(d) => SqlValue::Double(*d),
        Value::Decimal(d) => SqlValue::Decimal(d.as_str().to_owned()),
        Value::Date(d) if d.year == 0 || d.month == 0 || d.day == 0 => SqlValue::Null,
        Value::Date(d) => SqlValue::Date(*d),
        Value::DateTime(dt) if dt.date.year == 0 || dt.date.month == 0 || dt.date.day == 0 => SqlValue::Null,
        Value::DateTime(dt) => SqlValue::DateTime(*dt),
        Value::Timestamp {
            unix_seconds: 0,
            micros: 0,
        } => SqlValue::Null,
        Value::Timestamp { unix_seconds, micros } => SqlValue::Instant(micros_of(*unix_seconds, *micros)),
        Value::Time(t) => {
            let secs = i64::from(t.hours) * 3600 + i64::from(t.minutes) * 60 + i64::from(t.seconds);
            let m = micros_of(secs, t.micros);
            SqlValue::Duration(if t.negative { -m } else { m })
        }
        Value::Year(y) => SqlValue::Int(i64::from(*y)),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) if s.contains('\0') => {
            return Err(bad(
                "text with NUL characters cannot be stored in the target".into()
            ))
        }
        Value::Text(s) | Value::Enum(s) => SqlValue::Text(s.clone()),
        Value::TextBytes { charset, .. } => {
            return Err(bad(format!(
                "bytes not valid in charset {charset} cannot be stored as text"
            )))
        }
        Value::Bytes(b) | Value::Geometry(b) => SqlValue::Bytes(b.clone()),
        Value::Set(members) => SqlValue::Text(members.join(",")),
        Value::Bit { width, bits } => SqlValue::Bits {
            width: *width,
            bits: *bits,
        },
        Value::Json(s) => SqlValue::Json(s.clone()),
    })
}

/// The values of `row` in the order of `def`'s columns (absent columns are NULL).
pub fn row_values(def: &TableDef, row: &Row) -> Result<Vec<SqlValue>, MirrorError> {
    def.columns
        .iter()
        .map(|c| match row.get(&c.name) {
            Some(v) => value(&c.name, &c.ty, v),
            None => Ok(SqlValue::Null),
        })
        .collect()
}

/// A column rename a DDL statement performs, when it is one of the forms
/// `ALTER TABLE t RENAME COLUMN a TO b` or `ALTER TABLE t CHANGE [COLUMN] a b <type>`.
pub fn renamed_columns(ddl: &str) -> Vec<(String, String)> {
    let tokens = tokenize(ddl);
    let lower: Vec<String> = tokens.iter().map(|t| t.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    if lower.first().map(String::as_str) != Some("alter") {
        return out;
    }
    let mut i = 0;
    while i < tokens.len() {
        match lower[i].as_str() {
            "rename" if lower.get(i + 1).map(String::as_str) == Some("column") => {
                if let (Some(from), Some(to_kw), Some(to)) =
                    (tokens.get(i + 2), lower.get(i + 3), tokens.get(i + 4))
                {
                    if to_kw == "to" {
                        out.push((from.clone(), to.clone()));
                    }
                }
                i += 5;
            }
            "change" => {
                let skip = usize::from(lower.get(i + 1).map(String::as_str) == Some("column"));
                if let (Some(from), Some(to)) = (tokens.get(i + 1 + skip), tokens.get(i + 2 + skip)) {
                    if from != to {
                        out.push((from.clone(), to.clone()));
                    }
                }
                i += 3 + skip;
            }
            _ => i += 1,
        }
    }
    out
}

/// Splits SQL into identifiers/keywords (backquotes removed), skipping
/// strings, comments and punctuation.
fn tokenize(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut name = String::new();
                while let Some(n) = chars.next() {
                    if n == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            name.push('`');
                        } else {
                            break;
                        }
                    } else {
                        name.push(n);
                    }
                }
                out.push(name);
            }
            '\'' | '"' => {
                let quote = c;
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == quote {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(word);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Date, DateTime, Time};

    fn col(name: &str, data_type: &str, column_type: &str, unsigned: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            unsigned,
            nullable: true,
            charset: None,
            members: vec![],
            octet_length: None,
            numeric_precision: None,
        }
    }

    #[test]
    fn integer_types_widen_to_hold_unsigned_ranges() {
        assert_eq!(
            column_type(&col("a", "tinyint", "tinyint(3) unsigned", true)),
            Ok(SqlType::SmallInt)
        );
        assert_eq!(
            column_type(&col("a", "int", "int(10) unsigned", true)),
            Ok(SqlType::BigInt)
        );
        assert_eq!(
            column_type(&col("a", "bigint", "bigint(20) unsigned", true)),
            Ok(SqlType::Decimal {
                precision: 20,
                scale: 0
            })
        );
        assert_eq!(
            value(
                "a",
                &SqlType::Decimal {
                    precision: 20,
                    scale: 0
                },
                &Value::UInt(u64::MAX)
            ),
            Ok(SqlValue::Decimal("18446744073709551615".into()))
        );
    }

    #[test]
    fn decimal_and_text_lengths_come_from_the_declared_type() {
        assert_eq!(
            column_type(&col("a", "decimal", "decimal(65,30)", false)),
            Ok(SqlType::Decimal {
                precision: 65,
                scale: 30
            })
        );
        assert_eq!(
            column_type(&col("a", "varchar", "varchar(40)", false)),
            Ok(SqlType::Text { max_chars: Some(40) })
        );
        assert_eq!(
            column_type(&col("a", "binary", "binary(16)", false)),
            Ok(SqlType::Bytes { max_len: Some(16) })
        );
        assert!(matches!(
            column_type(&col("a", "vector", "vector(3)", false)),
            Err(MirrorError::UnknownType { .. })
        ));
    }

    #[test]
    fn zero_dates_become_null_and_times_keep_their_sign() {
        let zero = Date {
            year: 0,
            month: 0,
            day: 0,
        };
        assert_eq!(value("d", &SqlType::Date, &Value::Date(zero)), Ok(SqlValue::Null));
        let partial = Date {
            year: 2024,
            month: 0,
            day: 1,
        };
        assert_eq!(
            value("d", &SqlType::Date, &Value::Date(partial)),
            Ok(SqlValue::Null)
        );
        let dt = DateTime {
            date: Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            hour: 23,
            minute: 59,
            second: 59,
            micros: 999_999,
        };
        assert_eq!(
            value("d", &SqlType::DateTime, &Value::DateTime(dt)),
            Ok(SqlValue::DateTime(dt))
        );
        let t = Time {
            negative: true,
            hours: 838,
            minutes: 59,
            seconds: 59,
            micros: 1,
        };
        assert_eq!(
            value("t", &SqlType::Duration, &Value::Time(t)),
            Ok(SqlValue::Duration(-(838 * 3600 + 59 * 60 + 59) * 1_000_000 - 1))
        );
        assert_eq!(
            value(
                "ts",
                &SqlType::DateTimeOffset,
                &Value::Timestamp {
                    unix_seconds: 0,
                    micros: 0
                }
            ),
            Ok(SqlValue::Null)
        );
    }

    #[test]
    fn invalid_charset_bytes_are_rejected_not_altered() {
        let v = Value::TextBytes {
            charset: "latin1".into(),
            bytes: vec![0x81],
        };
        let err = value("name", &SqlType::Text { max_chars: None }, &v).unwrap_err();
        assert!(err.to_string().contains("column name"), "{err}");
        assert!(!err.to_string().contains("\u{81}"));
    }

    #[test]
    fn renames_are_read_from_both_ddl_forms() {
        assert_eq!(
            renamed_columns("ALTER TABLE `p` RENAME COLUMN `nm` TO `name`"),
            vec![("nm".to_string(), "name".to_string())]
        );
        assert_eq!(
            renamed_columns("alter table p change column nm full_name varchar(80) not null, add x int"),
            vec![("nm".to_string(), "full_name".to_string())]
        );
        assert_eq!(renamed_columns("ALTER TABLE p CHANGE a a bigint"), vec![]);
        assert_eq!(
            renamed_columns("ALTER TABLE p ADD COLUMN note text DEFAULT 'rename column a to b'"),
            vec![]
        );
        assert_eq!(renamed_columns("CREATE TABLE x (a int)"), vec![]);
    }
}
