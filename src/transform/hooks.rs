//! Transforms a mapping cannot say, written in Rust and registered by name:
//! a column spec `{ hook = "full_name" }` calls the hook with the v1 row.
//! Add one by writing a function with the [`Hook`] signature and listing it in
//! [`HOOKS`]; `mapping check` refuses names that are not listed.

use crate::event::{Row, Value};
use crate::sink::target::SqlValue;

/// A hook: the v1 row (and the tenant) in, one v2 value or a reason out. The
/// reason must not quote row values (it goes to the dead-letter topic and logs).
pub type Hook = fn(row: &Row, tenant: &str) -> Result<SqlValue, String>;

/// Every hook, by the name a mapping uses.
pub const HOOKS: &[(&str, Hook)] = &[("full_name", full_name), ("non_zero_id", non_zero_id)];

pub fn find(name: &str) -> Option<Hook> {
    HOOKS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

fn text_of(row: &Row, column: &str) -> Option<String> {
    match row.get(column)? {
        Value::Text(s) | Value::Enum(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// `first_name last_name`, either part optional; NULL when both are empty.
pub fn full_name(row: &Row, _tenant: &str) -> Result<SqlValue, String> {
    let parts: Vec<String> = ["first_name", "last_name"]
        .iter()
        .filter_map(|c| text_of(row, c))
        .collect();
    Ok(if parts.is_empty() {
        SqlValue::Null
    } else {
        SqlValue::Text(parts.join(" "))
    })
}

/// PHP's "0 means none" for a reference column named `reviewed_by`: the
/// integer as text, NULL for 0 or NULL (a mapping derives ids from it elsewhere).
pub fn non_zero_id(row: &Row, _tenant: &str) -> Result<SqlValue, String> {
    match row.get("reviewed_by") {
        None | Some(Value::Null) | Some(Value::Int(0)) | Some(Value::UInt(0)) => Ok(SqlValue::Null),
        Some(Value::Int(i)) => Ok(SqlValue::Text(i.to_string())),
        Some(Value::UInt(u)) => Ok(SqlValue::Text(u.to_string())),
        Some(_) => Err("reviewed_by is not an integer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_found_by_name_and_compute_from_the_row() {
        let row = Row(vec![
            ("first_name".into(), Value::Text(" Zoë ".into())),
            ("last_name".into(), Value::Text("Müller".into())),
        ]);
        let hook = find("full_name").expect("registered");
        assert_eq!(hook(&row, "t"), Ok(SqlValue::Text("Zoë Müller".into())));
        assert_eq!(hook(&Row::default(), "t"), Ok(SqlValue::Null));
        assert!(find("nope").is_none());
        let zero = Row(vec![("reviewed_by".into(), Value::Int(0))]);
        assert_eq!(non_zero_id(&zero, "t"), Ok(SqlValue::Null));
    }
}
