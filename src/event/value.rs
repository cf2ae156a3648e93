//! Typed MySQL values, exact for every type the source can read.
//!
//! A `Value` is what the binlog decoder and the snapshot reader produce and what a
//! target binds as a parameter; nothing in between turns it into a string. Each
//! variant keeps the full range and precision of its MySQL type: unsigned 64-bit,
//! 65-digit DECIMAL as text, DATETIME(6) microseconds, negative TIME, zero dates,
//! `-0.0`, BIT widths, BLOBs of many MB. Character data is decoded to Unicode from
//! the column's charset; bytes that are not valid in that charset are kept as they
//! were (`Value::TextBytes`), never replaced.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One column value.
///
/// Equality is exact: floating-point values compare by their bits, so `-0.0`
/// differs from `0.0` and a round trip that changed the sign would be caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    Null,
    /// TINYINT, SMALLINT, MEDIUMINT, INT, BIGINT (signed).
    Int(i64),
    /// The same types declared UNSIGNED.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE / REAL.
    Double(f64),
    /// DECIMAL / NUMERIC, exact, up to 65 digits.
    Decimal(Decimal),
    /// DATE, including the zero date and zero parts.
    Date(Date),
    /// DATETIME(0..6): wall-clock time without zone, as stored.
    DateTime(DateTime),
    /// TIMESTAMP(0..6): an instant, seconds and microseconds since the Unix epoch in UTC.
    /// The zero timestamp is `{ unix_seconds: 0, micros: 0 }` (1970-01-01 00:00:00 UTC
    /// itself is outside TIMESTAMP's range, so the two cannot be confused).
    Timestamp {
        unix_seconds: i64,
        micros: u32,
    },
    /// TIME(0..6), negative and above 24 hours included.
    Time(Time),
    /// YEAR: 0 (the zero year) or 1901..=2155.
    Year(u16),
    /// CHAR, VARCHAR, TEXT, decoded from the column's charset.
    Text(String),
    /// Character data whose bytes are not valid in the column's charset, kept verbatim.
    TextBytes {
        charset: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// BINARY, VARBINARY, BLOB.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// ENUM, by member name (the empty string is MySQL's invalid-value member 0).
    Enum(String),
    /// SET, member names in definition order.
    Set(Vec<String>),
    /// BIT(width), width 1..=64.
    Bit {
        width: u8,
        bits: u64,
    },
    /// JSON, as the server's text rendering (numbers keep their digits).
    Json(String),
    /// GEOMETRY and its subtypes: the server's internal format (SRID + WKB).
    Geometry(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (DateTime(a), DateTime(b)) => a == b,
            (
                Timestamp {
                    unix_seconds: a,
                    micros: am,
                },
                Timestamp {
                    unix_seconds: b,
                    micros: bm,
                },
            ) => a == b && am == bm,
            (Time(a), Time(b)) => a == b,
            (Year(a), Year(b)) => a == b,
            (Text(a), Text(b)) => a == b,
            (
                TextBytes {
                    charset: ac,
                    bytes: ab,
                },
                TextBytes {
                    charset: bc,
                    bytes: bb,
                },
            ) => ac == bc && ab == bb,
            (Bytes(a), Bytes(b)) => a == b,
            (Enum(a), Enum(b)) => a == b,
            (Set(a), Set(b)) => a == b,
            (Bit { width: aw, bits: ab }, Bit { width: bw, bits: bb }) => aw == bw && ab == bb,
            (Json(a), Json(b)) => a == b,
            (Geometry(a), Geometry(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Value {
    /// The MySQL type family, for error messages and metrics labels (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Date(_) => "date",
            Value::DateTime(_) => "datetime",
            Value::Timestamp { .. } => "timestamp",
            Value::Time(_) => "time",
            Value::Year(_) => "year",
            Value::Text(_) => "text",
            Value::TextBytes { .. } => "text_bytes",
            Value::Bytes(_) => "bytes",
            Value::Enum(_) => "enum",
            Value::Set(_) => "set",
            Value::Bit { .. } => "bit",
            Value::Json(_) => "json",
            Value::Geometry(_) => "geometry",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Why a textual value could not be read as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} literal {text:?}: {reason}")]
pub struct ValueParseError {
    pub kind: &'static str,
    pub text: String,
    pub reason: &'static str,
}

fn parse_error(kind: &'static str, text: &str, reason: &'static str) -> ValueParseError {
    ValueParseError {
        kind,
        text: text.to_owned(),
        reason,
    }
}

/// An exact decimal number in MySQL's canonical text form (`-12.340`).
///
/// Kept as text because MySQL's DECIMAL has up to 65 digits, more than any
/// fixed-width binary decimal type holds; the scale (digits after the point) is
/// part of the value, as MySQL prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal(String);

impl Decimal {
    /// The most digits a MySQL DECIMAL can have.
    pub const MAX_DIGITS: usize = 65;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point.
    pub fn scale(&self) -> usize {
        self.0.find('.').map_or(0, |dot| self.0.len() - dot - 1)
    }
}

impl FromStr for Decimal {
    type Err = ValueParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unsigned = text.strip_prefix('-').unwrap_or(text);
        let (int_part, frac_part) = match unsigned.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (unsigned, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(parse_error("decimal", text, "expected digits before the point"));
        }
        if let Some(frac) = frac_part {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(parse_error("decimal", text, "expected digits after the point"));
            }
        }
        let digits = int_part.len() + frac_part.map_or(0, str::len);
        if digits > Self::MAX_DIGITS + 1 {
            // MySQL prints a leading "0" before the point for pure fractions of 65 digits.
            return Err(parse_error("decimal", text, "more than 65 digits"));
        }
        Ok(Decimal(text.to_owned()))
    }
}

impl TryFrom<String> for Decimal {
    type Error = ValueParseError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Decimal> for String {
    fn from(d: Decimal) -> String {
        d.0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DATE as MySQL stores it: parts may be zero (`0000-00-00`, `2024-00-00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn is_zero(&self) -> bool {
        self.year == 0 && self.month == 0 && self.day == 0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = ValueParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, '-');
        let mut next = |max: u32| -> Result<u32, ValueParseError> {
            let part = parts
                .next()
                .ok_or_else(|| parse_error("date", text, "expected YYYY-MM-DD"))?;
            let n: u32 = parse_digits(part).ok_or_else(|| parse_error("date", text, "expected digits"))?;
            if n > max {
                return Err(parse_error("date", text, "part out of range"));
            }
            Ok(n)
        };
        let year = next(9999)? as u16;
        let month = next(12)? as u8;
        let day = next(31)? as u8;
        Ok(Date { year, month, day })
    }
}

/// A DATETIME: wall-clock date and time with microseconds, no zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DateTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
}

impl fmt::Display for DateTime {
    /// Prints microseconds only when they are non-zero; the column's declared
    /// precision (in the schema) decides how a target renders it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}:{:02}",
            self.date, self.hour, self.minute, self.second
        )?;
        if self.micros != 0 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

impl FromStr for DateTime {
    type Err = ValueParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (date, time) = text
            .split_once([' ', 'T'])
            .ok_or_else(|| parse_error("datetime", text, "expected 'YYYY-MM-DD hh:mm:ss[.ffffff]'"))?;
        let date: Date = date
            .parse()
            .map_err(|_| parse_error("datetime", text, "bad date part"))?;
        let (hms, micros) =
            split_fraction(time).ok_or_else(|| parse_error("datetime", text, "bad fraction"))?;
        let [hour, minute, second] =
            parse_hms(hms).ok_or_else(|| parse_error("datetime", text, "expected hh:mm:ss"))?;
        if hour > 23 || minute > 59 || second > 59 {
            return Err(parse_error("datetime", text, "time part out of range"));
        }
        Ok(DateTime {
            date,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            micros,
        })
    }
}

/// A TIME: a signed duration of up to 838:59:59.999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Time {
    pub negative: bool,
    pub hours: u16,
    pub minutes: u8,
    pub seconds: u8,
    pub micros: u32,
}

impl Time {
    pub const MAX_HOURS: u16 = 838;
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        write!(f, "{:02}:{:02}:{:02}", self.hours, self.minutes, self.seconds)?;
        if self.micros != 0 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

impl FromStr for Time {
    type Err = ValueParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (hms, micros) = split_fraction(rest).ok_or_else(|| parse_error("time", text, "bad fraction"))?;
        let [hours, minutes, seconds] =
            parse_hms(hms).ok_or_else(|| parse_error("time", text, "expected [-]hhh:mm:ss"))?;
        if hours > u32::from(Time::MAX_HOURS) || minutes > 59 || seconds > 59 {
            return Err(parse_error("time", text, "out of range"));
        }
        Ok(Time {
            negative,
            hours: hours as u16,
            minutes: minutes as u8,
            seconds: seconds as u8,
            micros,
        })
    }
}

fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_hms(s: &str) -> Option<[u32; 3]> {
    let mut it = s.split(':');
    let h = parse_digits(it.next()?)?;
    let m = parse_digits(it.next()?)?;
    let sec = parse_digits(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some([h, m, sec])
}

/// Splits `hh:mm:ss.ffffff` into the whole part and microseconds (1..6 fraction digits).
fn split_fraction(s: &str) -> Option<(&str, u32)> {
    match s.split_once('.') {
        None => Some((s, 0)),
        Some((whole, frac)) => {
            if frac.is_empty() || frac.len() > 6 {
                return None;
            }
            let n = parse_digits(frac)?;
            Some((whole, n * 10u32.pow(6 - frac.len() as u32)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_differs_from_zero() {
        assert_ne!(Value::Double(-0.0), Value::Double(0.0));
        assert_eq!(Value::Float(-0.0), Value::Float(-0.0));
    }

    #[test]
    fn decimal_accepts_65_digits_and_rejects_garbage() {
        let big = format!("-{}.{}", "9".repeat(35), "9".repeat(30));
        assert_eq!(big.parse::<Decimal>().unwrap().scale(), 30);
        assert!("1e5".parse::<Decimal>().is_err());
        assert!(".5".parse::<Decimal>().is_err());
        assert!("5.".parse::<Decimal>().is_err());
        assert!(format!("1{}", "0".repeat(66)).parse::<Decimal>().is_err());
    }

    #[test]
    fn temporal_text_round_trips() {
        for text in ["0000-00-00", "2024-02-29", "2024-00-00"] {
            assert_eq!(text.parse::<Date>().unwrap().to_string(), text);
        }
        for text in [
            "0000-00-00 00:00:00",
            "2024-12-31 23:59:59.999999",
            "1000-01-01 00:00:00.000001",
        ] {
            assert_eq!(text.parse::<DateTime>().unwrap().to_string(), text);
        }
        for text in ["-838:59:59", "838:59:59.000001", "00:00:00", "-00:00:01.500000"] {
            assert_eq!(text.parse::<Time>().unwrap().to_string(), text);
        }
        assert_eq!(
            "12:00:00.5".parse::<Time>().unwrap().micros,
            500_000,
            "fraction digits scale to microseconds"
        );
        assert!("839:00:00".parse::<Time>().is_err());
        assert!("2024-13-01".parse::<Date>().is_err());
        assert!("2024-01-01 24:00:00".parse::<DateTime>().is_err());
    }
}
