//! Table schemas as the source knows them: from `information_schema` at snapshot
//! time, refreshed after DDL, and from the binlog's own table-map metadata where
//! the server writes it (`binlog_row_metadata=FULL`).
//!
//! A schema is versioned per table; every change event names the version its row
//! images follow, and every version is published on the schema topic.

use serde::{Deserialize, Serialize};

/// One column, with what decoding its values needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    /// `information_schema.COLUMNS.DATA_TYPE`, lowercase (`int`, `varchar`, `enum`, ...).
    pub data_type: String,
    /// The full type as declared (`int(10) unsigned`, `enum('a','b')`).
    pub column_type: String,
    pub unsigned: bool,
    pub nullable: bool,
    /// Charset of character columns (`utf8mb4`, `latin1`, ...).
    pub charset: Option<String>,
    /// ENUM or SET members in definition order.
    pub members: Vec<String>,
    /// Declared length in bytes of BINARY(n) columns, whose values are zero-padded to it.
    pub octet_length: Option<u64>,
    /// Declared precision: the width of BIT(n).
    pub numeric_precision: Option<u64>,
}

impl ColumnSchema {
    pub fn is_binary_fixed(&self) -> bool {
        self.data_type == "binary"
    }
}

/// One table of one tenant database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    /// A fingerprint of the columns and key ([`TableSchema::fingerprint`]): the
    /// same shape always has the same version, across restarts and re-snapshots.
    pub version: u32,
    pub columns: Vec<ColumnSchema>,
    /// Primary-key column names in key order; empty when the table has none.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// The same columns and key, ignoring the version.
    pub fn same_shape(&self, other: &TableSchema) -> bool {
        self.columns == other.columns && self.primary_key == other.primary_key
    }

    /// FNV-1a over the JSON of the columns and key.
    pub fn fingerprint(&self) -> u32 {
        let json = serde_json::to_vec(&(&self.columns, &self.primary_key)).unwrap_or_default();
        json.iter().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        })
    }
}

/// Reads the members of `enum('a','b''c')` or `set(...)` from a COLUMN_TYPE.
pub fn parse_members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..];
    let mut members = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        member.push(escaped);
                    }
                }
                c => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

/// Quotes an identifier for MySQL (backticks, doubled inside).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Reads the schemas of `tables` of `database` from `information_schema`.
pub async fn load_tables(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<Vec<TableSchema>, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    type ColumnRow = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<u64>,
        Option<u64>,
    );
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.DATA_TYPE), c.COLUMN_TYPE, c.IS_NULLABLE, \
             c.CHARACTER_SET_NAME, c.CHARACTER_OCTET_LENGTH, c.NUMERIC_PRECISION \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t \
               ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (database,),
        )
        .await?;
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database,),
        )
        .await?;
    let mut tables: Vec<TableSchema> = Vec::new();
    for (table, name, data_type, column_type, nullable, charset, octet_length, precision) in rows {
        if tables.last().is_none_or(|t| t.table != table) {
            tables.push(TableSchema {
                database: database.to_owned(),
                table: table.clone(),
                version: 0,
                columns: Vec::new(),
                primary_key: keys
                    .iter()
                    .filter(|(t, _)| *t == table)
                    .map(|(_, c)| c.clone())
                    .collect(),
            });
        }
        let members = if data_type == "enum" || data_type == "set" {
            parse_members(&column_type)
        } else {
            Vec::new()
        };
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        if let Some(t) = tables.last_mut() {
            t.columns.push(ColumnSchema {
                name,
                data_type,
                column_type,
                unsigned,
                nullable: nullable == "YES",
                charset,
                members,
                octet_length,
                numeric_precision: precision,
            });
        }
    }
    for t in &mut tables {
        t.version = t.fingerprint();
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_with_quotes_and_commas() {
        assert_eq!(parse_members("enum('a','b''c','d,e')"), ["a", "b'c", "d,e"]);
        assert_eq!(parse_members("set('x')"), ["x"]);
        assert!(parse_members("int(11)").is_empty());
        assert_eq!(parse_members("enum('','é')"), ["", "é"]);
    }

    #[test]
    fn identifiers_are_quoted_against_hostile_names() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_ident("x; DROP TABLE y"), "`x; DROP TABLE y`");
    }
}
