//! A table with every MySQL type and edge values, shared by source and sink tests.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;

pub const TYPE_RICH: &str = "CREATE TABLE everything (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED,
    i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
    flag TINYINT(1),
    f FLOAT, d DOUBLE,
    dec_small DECIMAL(5,2), dec_big DECIMAL(65,30),
    dt DATE, dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME, tm6 TIME(6), yr YEAR,
    c CHAR(10), vc VARCHAR(300), latin VARCHAR(100) CHARACTER SET latin1, txt TEXT, ltxt LONGTEXT,
    bin BINARY(4), vbin VARBINARY(50), blb BLOB, lblb LONGBLOB,
    e ENUM('new','active','closed'), s SET('red','green','blue'),
    b1 BIT(1), b64 BIT(64), j JSON
) ENGINE=InnoDB";

pub const ROW_COLUMNS: &str =
    "id, i8, u8, i16, i24, u24, i32, u32, i64, u64, flag, f, d, dec_small, dec_big, \
    dt, dtm, dtm6, ts, tm, tm6, yr, c, vc, latin, txt, ltxt, bin, vbin, blb, lblb, e, s, b1, b64, j";

/// Edge values, one row each (the 4 MB BLOB goes in separately as a parameter).
pub const ROWS: &[&str] = &[
    "1, -128, 255, -32768, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, 1, \
     -0e0, -0e0, -999.99, '-12345678901234567890123456789012345.123456789012345678901234567890', \
     '1000-01-01', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01.000001', '-838:59:59', '838:59:59.000000', 1901, \
     'héllo', 'Zoë 🙂 患者 مرحبا', X'4AF680E9', 'line1\\nline2\\ttab', REPEAT('x', 70000), \
     X'00010200', X'FF00', X'00FF00FF', X'DEADBEEF', 'closed', 'red,blue', b'1', b'1111111111111111111111111111111111111111111111111111111111111111', '{\"k\": [1, 2.50, \"ü\"], \"n\": null}'",
    "2, 127, 0, 32767, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, 0, \
     3.40282e38, 1.7976931348623157e308, 999.99, '0.000000000000000000000000000001', \
     '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 12:34:56.000001', '2038-01-19 03:14:07.999999', '00:00:00', '-00:00:00.000001', 0, \
     '', '', '', '', '', X'', X'', X'', X'', 'new', '', b'0', b'0', '[]'",
    "3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
];

pub async fn insert_type_rich(conn: &mut mysql_async::Conn, db: &str, offset: u64) {
    for row in ROWS {
        let sql = format!("INSERT INTO `{db}`.everything ({ROW_COLUMNS}) VALUES ({row})");
        conn.query_drop(sql.replacen("VALUES (", &format!("VALUES ({offset} + "), 1))
            .await
            .unwrap_or_else(|e| panic!("insert type-rich row: {e}"));
    }
    let blob: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    conn.exec_drop(
        format!("INSERT INTO `{db}`.everything (id, lblb, latin) VALUES (?, ?, ?)"),
        (offset + 10, blob, "Ärger"),
    )
    .await
    .expect("insert 4 MB blob");
}

/// A keyed table `items` with `rows` rows (`n = 2 * id`, `note = 'n<id>'`) and
/// a keyless `tally` holding two identical rows, in database `db`.
pub async fn create_items_and_tally(conn: &mut mysql_async::Conn, db: &str, rows: u32) {
    conn.query_drop(format!(
        "CREATE TABLE `{db}`.items (id INT PRIMARY KEY, n INT NOT NULL, note VARCHAR(40)); \
         INSERT INTO `{db}`.items SELECT seq, seq * 2, CONCAT('n', seq) FROM seq_1_to_{rows}; \
         CREATE TABLE `{db}`.tally (who VARCHAR(10), n INT); \
         INSERT INTO `{db}`.tally VALUES ('x', 1), ('x', 1), ('y', 2)"
    ))
    .await
    .unwrap();
}
