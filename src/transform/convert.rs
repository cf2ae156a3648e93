//! The conversions a mapping names, one function each, each with the error it
//! gives. Errors name what is wrong, never the value (v1 holds patient data).

use std::collections::BTreeMap;

use jiff::tz::{AmbiguousOffset, TimeZone};

use crate::event::{Date, DateTime, Value};
use crate::sink::target::SqlValue;
use crate::source::convert::days_from_civil;

/// Why a value cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("expected {expected}, found {found}")]
    Type {
        expected: &'static str,
        found: &'static str,
    },
    #[error("a flag must be 0 or 1")]
    NotAFlag,
    #[error("the local time does not exist in {zone} (a daylight-saving gap)")]
    Gap { zone: String },
    #[error("the local time occurs twice in {zone} (a daylight-saving overlap)")]
    Ambiguous { zone: String },
    #[error("the date is outside the range a timestamp holds")]
    OutOfRange,
    #[error("not a PHP-serialized value: {0}")]
    PhpSerialized(String),
    #[error("code not in lookup {0:?}")]
    UnknownCode(String),
}

/// The name of a value's variant, for type errors.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) | Value::Double(_) => "a floating-point number",
        Value::Decimal(_) => "a decimal",
        Value::Date(_) => "a date",
        Value::DateTime(_) => "a datetime",
        Value::Timestamp { .. } => "a timestamp",
        Value::Time(_) => "a time",
        Value::Year(_) => "a year",
        Value::Text(_) | Value::TextBytes { .. } => "text",
        Value::Bytes(_) | Value::Geometry(_) => "bytes",
        Value::Enum(_) => "an enum",
        Value::Set(_) => "a set",
        Value::Bit { .. } => "a bit value",
        Value::Json(_) => "JSON",
    }
}

fn type_error(expected: &'static str, v: &Value) -> ConvertError {
    ConvertError::Type {
        expected,
        found: kind(v),
    }
}

/// TINYINT(1) (or BIT(1), or an ENUM/text '0'/'1') to a boolean.
pub fn bit(v: &Value) -> Result<SqlValue, ConvertError> {
    let n = match v {
        Value::Null => return Ok(SqlValue::Null),
        Value::Int(i) => *i,
        Value::UInt(u) => i64::try_from(*u).unwrap_or(i64::MAX),
        Value::Bit { bits, .. } => i64::try_from(*bits).unwrap_or(i64::MAX),
        Value::Text(s) | Value::Enum(s) => s.trim().parse::<i64>().map_err(|_| ConvertError::NotAFlag)?,
        other => return Err(type_error("a flag", other)),
    };
    match n {
        0 => Ok(SqlValue::Bool(false)),
        1 => Ok(SqlValue::Bool(true)),
        _ => Err(ConvertError::NotAFlag),
    }
}

/// What to do with a local time that falls in a daylight-saving overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ambiguity {
    /// Refuse it (the event goes to the dead-letter topic).
    #[default]
    Reject,
    /// The first occurrence (the offset before the transition).
    Earlier,
    /// The second occurrence.
    Later,
}

fn is_zero(d: &Date) -> bool {
    d.year == 0 || d.month == 0 || d.day == 0
}

/// A v1 DATETIME, wall-clock time in `zone`, to a UTC instant. Zero dates are
/// NULL; a time in a daylight-saving gap is refused; one in an overlap follows
/// `ambiguity`.
pub fn local_to_utc(
    v: &Value,
    zone: &TimeZone,
    zone_name: &str,
    ambiguity: Ambiguity,
) -> Result<SqlValue, ConvertError> {
    let dt = match v {
        Value::Null => return Ok(SqlValue::Null),
        Value::DateTime(dt) if is_zero(&dt.date) => return Ok(SqlValue::Null),
        Value::DateTime(dt) => *dt,
        Value::Date(d) if is_zero(d) => return Ok(SqlValue::Null),
        Value::Date(d) => DateTime {
            date: *d,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
        },
        // TIMESTAMP is an instant already.
        Value::Timestamp {
            unix_seconds: 0,
            micros: 0,
        } => return Ok(SqlValue::Null),
        Value::Timestamp { unix_seconds, micros } => {
            return Ok(SqlValue::Instant(unix_seconds * 1_000_000 + i64::from(*micros)))
        }
        other => return Err(type_error("a datetime", other)),
    };
    let civil = jiff::civil::DateTime::new(
        dt.date.year as i16,
        dt.date.month as i8,
        dt.date.day as i8,
        dt.hour as i8,
        dt.minute as i8,
        dt.second as i8,
        (dt.micros * 1000) as i32,
    )
    .map_err(|_| ConvertError::OutOfRange)?;
    let offset = match zone.to_ambiguous_timestamp(civil).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { .. } => {
            return Err(ConvertError::Gap {
                zone: zone_name.to_owned(),
            })
        }
        AmbiguousOffset::Fold { before, after } => match ambiguity {
            Ambiguity::Reject => {
                return Err(ConvertError::Ambiguous {
                    zone: zone_name.to_owned(),
                })
            }
            Ambiguity::Earlier => before,
            Ambiguity::Later => after,
        },
    };
    let days = days_from_civil(
        i64::from(dt.date.year),
        u32::from(dt.date.month),
        u32::from(dt.date.day),
    );
    let local = days * 86_400 + i64::from(dt.hour) * 3600 + i64::from(dt.minute) * 60 + i64::from(dt.second);
    let utc = local - i64::from(offset.seconds());
    Ok(SqlValue::Instant(utc * 1_000_000 + i64::from(dt.micros)))
}

/// A DATE (or the date of a DATETIME); zero dates are NULL.
pub fn date(v: &Value) -> Result<SqlValue, ConvertError> {
    match v {
        Value::Null => Ok(SqlValue::Null),
        Value::Date(d) if is_zero(d) => Ok(SqlValue::Null),
        Value::Date(d) => Ok(SqlValue::Date(*d)),
        Value::DateTime(dt) if is_zero(&dt.date) => Ok(SqlValue::Null),
        Value::DateTime(dt) => Ok(SqlValue::Date(dt.date)),
        other => Err(type_error("a date", other)),
    }
}

/// Text as it is, trimmed of surrounding whitespace when `trim`, NULL when empty
/// (after trimming) and `null_if_empty`.
pub fn text(v: &Value, trim: bool, null_if_empty: bool) -> Result<SqlValue, ConvertError> {
    let s = match v {
        Value::Null => return Ok(SqlValue::Null),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => s.clone(),
        Value::Set(members) => members.join(","),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Decimal(d) => d.as_str().to_owned(),
        other => return Err(type_error("text", other)),
    };
    let s = if trim { s.trim().to_owned() } else { s };
    if null_if_empty && s.is_empty() {
        return Ok(SqlValue::Null);
    }
    Ok(SqlValue::Text(s))
}

/// A code translated through a lookup table; an unknown code is an error.
pub fn lookup(v: &Value, name: &str, table: &BTreeMap<String, String>) -> Result<SqlValue, ConvertError> {
    let code = match v {
        Value::Null => return Ok(SqlValue::Null),
        Value::Text(s) | Value::Enum(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        other => return Err(type_error("a code", other)),
    };
    table
        .get(&code)
        .map(|v| SqlValue::Text(v.clone()))
        .ok_or_else(|| ConvertError::UnknownCode(name.to_owned()))
}

/// A PHP-serialized value (`serialize()` output) as JSON text. Empty text is NULL.
pub fn php_to_json(v: &Value) -> Result<SqlValue, ConvertError> {
    let bytes: &[u8] = match v {
        Value::Null => return Ok(SqlValue::Null),
        Value::Text(s) => s.as_bytes(),
        Value::Bytes(b) => b,
        other => return Err(type_error("PHP-serialized text", other)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(SqlValue::Null);
    }
    let mut p = PhpParser { bytes, at: 0 };
    let value = p.value(0)?;
    if p.at != bytes.len() {
        return Err(p.error("trailing bytes after the value"));
    }
    Ok(SqlValue::Json(value.to_string()))
}

/// A parser of PHP's `serialize()` format: `N;`, `b:1;`, `i:5;`, `d:1.5;`,
/// `s:<bytes>:"…";`, `a:<n>:{key value …}`, `O:<len>:"Class":<n>:{…}`.
struct PhpParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

const MAX_DEPTH: usize = 64;

impl PhpParser<'_> {
    fn error(&self, what: &str) -> ConvertError {
        ConvertError::PhpSerialized(format!("{what} at byte {}", self.at))
    }

    fn expect(&mut self, b: u8) -> Result<(), ConvertError> {
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", b as char)))
        }
    }

    /// Bytes up to (not including) `end`, which is consumed.
    fn until(&mut self, end: u8) -> Result<&str, ConvertError> {
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| self.error(&format!("missing '{}'", end as char)))?;
        self.at = start + len + 1;
        std::str::from_utf8(&self.bytes[start..start + len]).map_err(|_| self.error("invalid UTF-8"))
    }

    fn count(&mut self, end: u8) -> Result<usize, ConvertError> {
        let text = self.until(end)?;
        text.parse().map_err(|_| self.error("expected a length"))
    }

    fn string_body(&mut self, len: usize) -> Result<String, ConvertError> {
        self.expect(b'"')?;
        let end = self.at.checked_add(len).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.error("string length past the end"))?;
        let s = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| self.error("string is not UTF-8"))?
            .to_owned();
        self.at = end;
        self.expect(b'"')?;
        Ok(s)
    }

    fn value(&mut self, depth: usize) -> Result<serde_json::Value, ConvertError> {
        use serde_json::Value as J;
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let tag = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error("unexpected end"))?;
        self.at += 1;
        if tag == b'N' {
            self.expect(b';')?;
            return Ok(J::Null);
        }
        self.expect(b':')?;
        match tag {
            b'b' => match self.until(b';')? {
                "0" => Ok(J::Bool(false)),
                "1" => Ok(J::Bool(true)),
                _ => Err(self.error("a boolean must be 0 or 1")),
            },
            b'i' => {
                let n: i64 = self.until(b';')?.parse().map_err(|_| self.error("bad integer"))?;
                Ok(J::from(n))
            }
            b'd' => {
                let text = self.until(b';')?;
                let d: f64 = text.parse().map_err(|_| self.error("bad float"))?;
                serde_json::Number::from_f64(d)
                    .map(J::Number)
                    .ok_or_else(|| self.error("INF and NAN have no JSON form"))
            }
            b's' => {
                let len = self.count(b':')?;
                let s = self.string_body(len)?;
                self.expect(b';')?;
                Ok(J::String(s))
            }
            b'a' => {
                let n = self.count(b':')?;
                self.members(n, depth)
            }
            b'O' => {
                let len = self.count(b':')?;
                let _class = self.string_body(len)?;
                self.expect(b':')?;
                let n = self.count(b':')?;
                match self.members(n, depth)? {
                    J::Array(items) if items.is_empty() => Ok(J::Object(serde_json::Map::new())),
                    other => Ok(other),
                }
            }
            b'r' | b'R' => Err(self.error("references are not supported")),
            _ => Err(self.error("unknown type tag")),
        }
    }

    /// `{key value …}` of an array or object: a JSON array when the keys are
    /// 0..n in order, an object otherwise.
    fn members(&mut self, n: usize, depth: usize) -> Result<serde_json::Value, ConvertError> {
        self.expect(b'{')?;
        let mut entries = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let key = match self.value(depth + 1)? {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
                _ => return Err(self.error("array keys must be integers or strings")),
            };
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        self.expect(b'}')?;
        let sequential = entries.iter().enumerate().all(|(i, (k, _))| *k == i.to_string());
        Ok(if sequential {
            serde_json::Value::Array(entries.into_iter().map(|(_, v)| v).collect())
        } else {
            serde_json::Value::Object(entries.into_iter().collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(y: u16, mo: u8, d: u8, h: u8, mi: u8) -> Value {
        Value::DateTime(DateTime {
            date: Date {
                year: y,
                month: mo,
                day: d,
            },
            hour: h,
            minute: mi,
            second: 0,
            micros: 0,
        })
    }

    fn chicago() -> TimeZone {
        TimeZone::get("America/Chicago").expect("bundled tzdb")
    }

    fn utc_micros(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> SqlValue {
        SqlValue::Instant((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60) * 1_000_000)
    }

    #[test]
    fn flags_are_zero_or_one() {
        assert_eq!(bit(&Value::Int(1)), Ok(SqlValue::Bool(true)));
        assert_eq!(bit(&Value::Int(0)), Ok(SqlValue::Bool(false)));
        assert_eq!(bit(&Value::Null), Ok(SqlValue::Null));
        assert_eq!(bit(&Value::Int(2)), Err(ConvertError::NotAFlag));
        assert_eq!(bit(&Value::Int(-1)), Err(ConvertError::NotAFlag));
        assert!(matches!(bit(&Value::Double(1.0)), Err(ConvertError::Type { .. })));
    }

    #[test]
    fn local_times_become_utc_across_the_year() {
        let z = chicago();
        // CST (UTC-6) in winter, CDT (UTC-5) in summer.
        assert_eq!(
            local_to_utc(&dt(2024, 1, 15, 9, 30), &z, "America/Chicago", Ambiguity::Reject),
            Ok(utc_micros(2024, 1, 15, 15, 30))
        );
        assert_eq!(
            local_to_utc(&dt(2024, 7, 1, 9, 30), &z, "America/Chicago", Ambiguity::Reject),
            Ok(utc_micros(2024, 7, 1, 14, 30))
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_is_refused() {
        // 2024-03-10 02:30 does not exist in Chicago (clocks jump from 02:00 to 03:00).
        let err = local_to_utc(
            &dt(2024, 3, 10, 2, 30),
            &chicago(),
            "America/Chicago",
            Ambiguity::Later,
        );
        assert_eq!(
            err,
            Err(ConvertError::Gap {
                zone: "America/Chicago".into()
            })
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "the local time does not exist in America/Chicago (a daylight-saving gap)"
        );
    }

    #[test]
    fn a_time_in_the_autumn_overlap_follows_the_policy() {
        // 2024-11-03 01:30 happens twice in Chicago: at 06:30 UTC (CDT) and 07:30 UTC (CST).
        let v = dt(2024, 11, 3, 1, 30);
        let z = chicago();
        assert_eq!(
            local_to_utc(&v, &z, "America/Chicago", Ambiguity::Reject),
            Err(ConvertError::Ambiguous {
                zone: "America/Chicago".into()
            })
        );
        assert_eq!(
            local_to_utc(&v, &z, "America/Chicago", Ambiguity::Earlier),
            Ok(utc_micros(2024, 11, 3, 6, 30))
        );
        assert_eq!(
            local_to_utc(&v, &z, "America/Chicago", Ambiguity::Later),
            Ok(utc_micros(2024, 11, 3, 7, 30))
        );
    }

    #[test]
    fn zero_dates_are_null_everywhere() {
        let z = chicago();
        assert_eq!(
            local_to_utc(&dt(0, 0, 0, 0, 0), &z, "x", Ambiguity::Reject),
            Ok(SqlValue::Null)
        );
        assert_eq!(
            local_to_utc(&dt(2024, 0, 5, 0, 0), &z, "x", Ambiguity::Reject),
            Ok(SqlValue::Null)
        );
        let zero = Date {
            year: 0,
            month: 0,
            day: 0,
        };
        assert_eq!(date(&Value::Date(zero)), Ok(SqlValue::Null));
        assert!(matches!(date(&Value::Int(3)), Err(ConvertError::Type { .. })));
    }

    #[test]
    fn text_is_trimmed_and_empty_becomes_null_on_request() {
        assert_eq!(
            text(&Value::Text("  Zoë ".into()), true, true),
            Ok(SqlValue::Text("Zoë".into()))
        );
        assert_eq!(text(&Value::Text("   ".into()), true, true), Ok(SqlValue::Null));
        assert_eq!(
            text(&Value::Text("".into()), false, false),
            Ok(SqlValue::Text(String::new()))
        );
        assert!(matches!(
            text(&Value::Bytes(vec![1]), true, true),
            Err(ConvertError::Type { .. })
        ));
    }

    #[test]
    fn lookups_refuse_unknown_codes() {
        let table = BTreeMap::from([("A".to_string(), "Active".to_string())]);
        assert_eq!(
            lookup(&Value::Text("A".into()), "status", &table),
            Ok(SqlValue::Text("Active".into()))
        );
        assert_eq!(
            lookup(&Value::Text("Z".into()), "status", &table),
            Err(ConvertError::UnknownCode("status".into()))
        );
        assert_eq!(
            lookup(&Value::Text("Z".into()), "status", &table)
                .unwrap_err()
                .to_string(),
            "code not in lookup \"status\""
        );
    }

    #[test]
    fn php_serialized_values_become_json() {
        let json = |s: &str| php_to_json(&Value::Text(s.into()));
        assert_eq!(
            json(r#"a:2:{i:0;s:3:"red";i:1;s:5:"green";}"#),
            Ok(SqlValue::Json(r#"["red","green"]"#.into()))
        );
        assert_eq!(
            json(r#"a:2:{s:4:"lang";s:2:"de";s:3:"age";i:83;}"#),
            Ok(SqlValue::Json(r#"{"lang":"de","age":83}"#.into()))
        );
        assert_eq!(json("a:0:{}"), Ok(SqlValue::Json("[]".into())));
        assert_eq!(json("b:1;"), Ok(SqlValue::Json("true".into())));
        assert_eq!(json("d:2.5;"), Ok(SqlValue::Json("2.5".into())));
        assert_eq!(json("N;"), Ok(SqlValue::Json("null".into())));
        // String lengths are in bytes: "Zoë" is 4 bytes.
        assert_eq!(json(r#"s:4:"Zoë";"#), Ok(SqlValue::Json(r#""Zoë""#.into())));
        assert_eq!(
            json(r#"O:8:"stdClass":1:{s:1:"k";a:1:{i:0;i:1;}}"#),
            Ok(SqlValue::Json(r#"{"k":[1]}"#.into()))
        );
        assert_eq!(json(""), Ok(SqlValue::Null));
    }

    #[test]
    fn invalid_php_serialized_strings_say_where() {
        let err = |s: &str| php_to_json(&Value::Text(s.into())).unwrap_err().to_string();
        assert_eq!(
            err(r#"s:10:"short";"#),
            "not a PHP-serialized value: string length past the end at byte 6"
        );
        assert_eq!(
            err("a:1:{i:0;i:1;"),
            "not a PHP-serialized value: expected '}' at byte 13"
        );
        assert_eq!(
            err("x:1;"),
            "not a PHP-serialized value: unknown type tag at byte 2"
        );
        assert_eq!(
            err("i:1;junk"),
            "not a PHP-serialized value: trailing bytes after the value at byte 4"
        );
        assert_eq!(
            err("d:INF;"),
            "not a PHP-serialized value: INF and NAN have no JSON form at byte 6"
        );
        assert_eq!(
            err("a:1:{i:0;R:1;}"),
            "not a PHP-serialized value: references are not supported at byte 11"
        );
        let deep = "a:1:{i:0;".repeat(100) + "N;" + &"}".repeat(100);
        assert!(err(&deep).contains("nested too deeply"));
    }
}
