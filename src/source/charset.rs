//! Character data from MySQL bytes to Unicode, in one place for both paths.
//!
//! The snapshot asks the server not to convert result strings
//! (`character_set_results = NULL`), so snapshot and binlog both hand over the
//! column's own bytes and both decode them here, by the column's charset. Bytes
//! that are not valid in that charset are kept as they are
//! ([`Value::TextBytes`]), never replaced with U+FFFD.

use encoding_rs::Encoding;

use crate::event::Value;

/// Decodes `bytes` stored in the MySQL charset `charset` (e.g. `utf8mb4`, `latin1`).
pub fn decode(charset: &str, bytes: Vec<u8>) -> Value {
    let keep = |bytes: Vec<u8>| Value::TextBytes {
        charset: charset.to_owned(),
        bytes,
    };
    match charset {
        "binary" => Value::Bytes(bytes),
        "utf8mb4" | "utf8mb3" | "utf8" => match String::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(e) => keep(e.into_bytes()),
        },
        "ascii" => {
            if bytes.is_ascii() {
                Value::Text(String::from_utf8(bytes).unwrap_or_default())
            } else {
                keep(bytes)
            }
        }
        // MySQL's latin1 is Windows-1252 with the five bytes cp1252 leaves
        // undefined mapped to the C1 controls, which is what WHATWG's
        // windows-1252 decoder does too: every byte decodes.
        "latin1" => Value::Text(
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(&bytes)
                .0
                .into_owned(),
        ),
        "ucs2" | "utf16" => decode_utf16(&bytes, false).map_or_else(|| keep(bytes), Value::Text),
        "utf16le" => decode_utf16(&bytes, true).map_or_else(|| keep(bytes), Value::Text),
        "utf32" => decode_utf32(&bytes).map_or_else(|| keep(bytes), Value::Text),
        other => match whatwg_label(other).and_then(|label| Encoding::for_label(label.as_bytes())) {
            Some(encoding) => match encoding.decode_without_bom_handling_and_without_replacement(&bytes) {
                Some(text) => Value::Text(text.into_owned()),
                None => keep(bytes),
            },
            // A charset we cannot decode: keep the bytes with its name, lose nothing.
            None => keep(bytes),
        },
    }
}

/// The WHATWG encoding label of a MySQL charset, where one corresponds exactly enough.
fn whatwg_label(charset: &str) -> Option<&'static str> {
    Some(match charset {
        "cp1250" => "windows-1250",
        "cp1251" => "windows-1251",
        "cp1256" => "windows-1256",
        "cp1257" => "windows-1257",
        "latin2" => "iso-8859-2",
        "latin7" => "iso-8859-13",
        "greek" => "iso-8859-7",
        "hebrew" => "iso-8859-8",
        "latin5" => "windows-1254",
        "koi8r" => "koi8-r",
        "koi8u" => "koi8-u",
        "cp866" => "ibm866",
        "macroman" => "macintosh",
        "sjis" | "cp932" => "shift_jis",
        "ujis" | "eucjpms" => "euc-jp",
        "euckr" => "euc-kr",
        "gbk" | "gb2312" => "gbk",
        "gb18030" => "gb18030",
        "big5" => "big5",
        "tis620" => "windows-874",
        _ => return None,
    })
}

fn decode_utf16(bytes: &[u8], little_endian: bool) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units = bytes.chunks_exact(2).map(|c| {
        if little_endian {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units).collect::<Result<String, _>>().ok()
}

fn decode_utf32(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    bytes
        .chunks_exact(4)
        .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8mb4_emoji_and_invalid_bytes() {
        assert_eq!(
            decode("utf8mb4", "Zoë 🙂".as_bytes().to_vec()),
            Value::Text("Zoë 🙂".into())
        );
        assert_eq!(
            decode("utf8mb4", vec![0x61, 0xff]),
            Value::TextBytes {
                charset: "utf8mb4".into(),
                bytes: vec![0x61, 0xff]
            }
        );
    }

    #[test]
    fn latin1_decodes_every_byte_like_mysql() {
        assert_eq!(
            decode("latin1", vec![0x4a, 0xf6, 0x80]),
            Value::Text("Jö€".into())
        );
        assert_eq!(decode("latin1", vec![0x81]), Value::Text("\u{81}".into()));
    }

    #[test]
    fn other_charsets_and_unknown_ones() {
        assert_eq!(decode("cp1251", vec![0xcf, 0xf0]), Value::Text("Пр".into()));
        assert_eq!(
            decode("ucs2", vec![0x00, 0x41, 0x04, 0x1f]),
            Value::Text("AП".into())
        );
        assert_eq!(decode("binary", vec![0, 1]), Value::Bytes(vec![0, 1]));
        assert!(matches!(decode("armscii8", vec![0xb2]), Value::TextBytes { .. }));
        assert!(matches!(decode("sjis", vec![0x82]), Value::TextBytes { .. }));
    }
}
