//! The change-event envelope every stage speaks.
//!
//! A change event is one row change (or snapshot read, or DDL) of one tenant's
//! table, with the source position it came from and its place in its v1
//! transaction. On the wire it is one version byte followed by the event encoded
//! with serde + postcard, whose wire format is documented and stable; events stay
//! in the change topic for months of replays, so a reader must either decode a
//! version exactly or refuse it: an unknown version or a truncated message is a
//! typed error, never a guess and never a panic.

pub mod json;
pub mod position;
pub mod value;

use serde::{Deserialize, Serialize};

pub use position::{
    BinlogCoordinates, GtidSet, MariaDbGtid, MariaDbGtidPos, MySqlGtidSet, Phase, PositionParseError,
    SourcePosition,
};
pub use value::{Date, DateTime, Decimal, Time, Value, ValueParseError};

/// The envelope version this build writes, and the only one it reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Now, in microseconds since the Unix epoch (the unit of commit times).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// A row read by the initial (or a re-triggered) snapshot.
    SnapshotRead,
    Insert,
    Update,
    Delete,
    /// A schema change; the statement is in [`ChangeEvent::ddl`].
    Ddl,
    /// No row: the source has published every change of the tenant before
    /// this event's position, as of its commit time (a per-tenant heartbeat,
    /// so lag is measurable while a tenant is idle). `table` and `key` are empty.
    Watermark,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SnapshotRead => "read",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Ddl => "ddl",
            Operation::Watermark => "watermark",
        }
    }
}

/// A row image: column names and values in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row(pub Vec<(String, Value)>);

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.iter().find(|(name, _)| name == column).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }
}

/// The v1 transaction an event belongs to and its place in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransactionInfo {
    /// GTID of the transaction where the server has one, else the binlog
    /// coordinates of its first event; snapshot reads use the snapshot's id.
    pub id: String,
    /// Index of this event within the transaction, from 0.
    pub index: u32,
    /// True on the transaction's last event: the sink may commit after it.
    pub last: bool,
}

/// One change of one row (or one DDL statement) of one tenant's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The v2 tenant id the v1 database maps to.
    pub tenant: String,
    /// The v1 database (one per tenant).
    pub database: String,
    pub table: String,
    pub op: Operation,
    /// Primary-key columns and values; empty for tables without a primary key.
    pub key: Row,
    /// Row before the change (update, delete).
    pub before: Option<Row>,
    /// Row after the change (snapshot read, insert, update).
    pub after: Option<Row>,
    /// The statement of a DDL event.
    pub ddl: Option<String>,
    /// Version of the table schema (on the schema topic) the row images follow.
    pub schema_version: u32,
    pub position: SourcePosition,
    /// Commit time of the v1 transaction, microseconds since the Unix epoch (UTC).
    pub commit_time_micros: i64,
    pub transaction: TransactionInfo,
}

/// Why bytes from the change topic are not a change event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty message: no envelope version byte")]
    Empty,
    #[error("unknown envelope version {found} (this build reads version {ENVELOPE_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("truncated envelope: the message ends inside the event ({len} bytes)")]
    Truncated { len: usize },
    #[error("malformed envelope ({len} bytes): {reason}")]
    Malformed { len: usize, reason: String },
    #[error("envelope has {extra} unexpected trailing bytes after the event")]
    TrailingBytes { extra: usize },
    #[error("cannot encode change event: {0}")]
    Encode(String),
}

impl ChangeEvent {
    /// Encodes the event as the envelope: version byte + postcard.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = vec![ENVELOPE_VERSION];
        postcard::to_io(self, &mut out).map_err(|e| EnvelopeError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// The position as operators read it: a watermark's is the binlog
    /// coordinates it vouches for.
    pub fn position_text(&self) -> String {
        if self.op == Operation::Watermark {
            self.position.coordinates.to_string()
        } else {
            self.position.to_string()
        }
    }

    /// Decodes an envelope, refusing unknown versions, truncation and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<ChangeEvent, EnvelopeError> {
        let (&version, body) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnknownVersion { found: version });
        }
        match postcard::take_from_bytes::<ChangeEvent>(body) {
            Ok((event, [])) => Ok(event),
            Ok((_, rest)) => Err(EnvelopeError::TrailingBytes { extra: rest.len() }),
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                Err(EnvelopeError::Truncated { len: bytes.len() })
            }
            Err(e) => Err(EnvelopeError::Malformed {
                len: bytes.len(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
impl ChangeEvent {
    /// A change of one row for tests: tenant `t` in database `db`, keyed by
    /// the `id` of the after (else before) image, at `mysql-bin.000001:4#0`,
    /// a whole transaction of its own. Other fields by struct update.
    pub(crate) fn test_row(
        table: &str,
        op: Operation,
        before: Option<Row>,
        after: Option<Row>,
    ) -> ChangeEvent {
        let key = after
            .as_ref()
            .or(before.as_ref())
            .and_then(|image| image.get("id"))
            .map(|id| Row(vec![("id".into(), id.clone())]))
            .unwrap_or_default();
        ChangeEvent {
            tenant: "t".into(),
            database: "db".into(),
            table: table.into(),
            op,
            key,
            before,
            after,
            ddl: None,
            schema_version: 1,
            position: "mysql-bin.000001:4#0".parse().expect("a position"),
            commit_time_micros: 0,
            transaction: TransactionInfo {
                id: "tx".into(),
                index: 0,
                last: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn date() -> impl Strategy<Value = Date> {
        (0u16..=9999, 0u8..=12, 0u8..=31).prop_map(|(year, month, day)| Date { year, month, day })
    }

    fn datetime() -> impl Strategy<Value = DateTime> {
        (date(), 0u8..24, 0u8..60, 0u8..60, 0u32..1_000_000).prop_map(
            |(date, hour, minute, second, micros)| DateTime {
                date,
                hour,
                minute,
                second,
                micros,
            },
        )
    }

    fn decimal() -> impl Strategy<Value = Decimal> {
        (any::<bool>(), "[0-9]{1,35}", proptest::option::of("[0-9]{1,30}")).prop_map(|(neg, int, frac)| {
            let text = format!(
                "{}{}{}",
                if neg { "-" } else { "" },
                int,
                frac.map(|f| format!(".{f}")).unwrap_or_default()
            );
            text.parse().expect("generated decimal is valid")
        })
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f32>().prop_map(Value::Float),
            any::<f64>().prop_map(Value::Double),
            Just(Value::Double(-0.0)),
            decimal().prop_map(Value::Decimal),
            date().prop_map(Value::Date),
            datetime().prop_map(Value::DateTime),
            (any::<i64>(), 0u32..1_000_000)
                .prop_map(|(unix_seconds, micros)| Value::Timestamp { unix_seconds, micros }),
            (any::<bool>(), 0u16..=838, 0u8..60, 0u8..60, 0u32..1_000_000).prop_map(
                |(negative, hours, minutes, seconds, micros)| Value::Time(Time {
                    negative,
                    hours,
                    minutes,
                    seconds,
                    micros
                })
            ),
            prop_oneof![Just(0u16), 1901u16..=2155].prop_map(Value::Year),
            any::<String>().prop_map(Value::Text),
            ("[a-z0-9]{1,10}", vec(any::<u8>(), 0..64))
                .prop_map(|(charset, bytes)| Value::TextBytes { charset, bytes }),
            vec(any::<u8>(), 0..512).prop_map(Value::Bytes),
            any::<String>().prop_map(Value::Enum),
            vec(any::<String>(), 0..5).prop_map(Value::Set),
            (1u8..=64, any::<u64>()).prop_map(|(width, bits)| Value::Bit {
                width,
                bits: if width == 64 {
                    bits
                } else {
                    bits & ((1u64 << width) - 1)
                }
            }),
            any::<String>().prop_map(Value::Json),
            vec(any::<u8>(), 0..64).prop_map(Value::Geometry),
        ]
    }

    fn row() -> impl Strategy<Value = Row> {
        vec(("[a-zA-Z_][a-zA-Z0-9_]{0,20}", value()), 0..8).prop_map(Row)
    }

    fn gtid() -> impl Strategy<Value = Option<GtidSet>> {
        prop_oneof![
            Just(None),
            vec((0u32..4, any::<u32>(), any::<u64>()), 1..4).prop_map(|gs| {
                let mut pos = MariaDbGtidPos::default();
                for (domain, server, sequence) in gs {
                    pos.advance(MariaDbGtid {
                        domain,
                        server,
                        sequence,
                    });
                }
                Some(GtidSet::MariaDb(pos))
            }),
            (1u64..1000, 0u64..1000).prop_map(|(start, len)| {
                let set = format!("3e11fa47-71ca-11e1-9e33-c80aa9429562:{}-{}", start, start + len);
                Some(GtidSet::MySql(set.parse().expect("valid set")))
            }),
        ]
    }

    fn event() -> impl Strategy<Value = ChangeEvent> {
        (
            ("[a-z0-9-]{1,36}", "[a-z_]{1,20}", "[a-z_]{1,20}"),
            prop_oneof![
                Just(Operation::SnapshotRead),
                Just(Operation::Insert),
                Just(Operation::Update),
                Just(Operation::Delete),
                Just(Operation::Ddl),
                Just(Operation::Watermark),
            ],
            (row(), proptest::option::of(row()), proptest::option::of(row())),
            proptest::option::of(any::<String>()),
            any::<u32>(),
            (
                "[a-z-]{1,12}\\.[0-9]{6}",
                any::<u64>(),
                gtid(),
                any::<bool>(),
                any::<u64>(),
            ),
            any::<i64>(),
            (any::<String>(), any::<u32>(), any::<bool>()),
        )
            .prop_map(
                |(
                    (tenant, database, table),
                    op,
                    (key, before, after),
                    ddl,
                    schema_version,
                    (file, pos, gtid, snapshot, index),
                    commit_time_micros,
                    (tx_id, tx_index, last),
                )| ChangeEvent {
                    tenant,
                    database,
                    table,
                    op,
                    key,
                    before,
                    after,
                    ddl,
                    schema_version,
                    position: SourcePosition {
                        coordinates: BinlogCoordinates::new(file, pos),
                        gtid,
                        phase: if snapshot { Phase::Snapshot } else { Phase::Stream },
                        index,
                    },
                    commit_time_micros,
                    transaction: TransactionInfo {
                        id: tx_id,
                        index: tx_index,
                        last,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn envelope_round_trips_every_event(ev in event()) {
            let bytes = ev.encode().unwrap();
            prop_assert_eq!(bytes[0], ENVELOPE_VERSION);
            let back = ChangeEvent::decode(&bytes).unwrap();
            prop_assert_eq!(back, ev);
        }

        #[test]
        fn every_strict_prefix_is_an_error_not_a_panic(ev in event()) {
            let bytes = ev.encode().unwrap();
            // Check a spread of cut points, always including the last one.
            let step = (bytes.len() / 32).max(1);
            let cuts = (0..bytes.len()).step_by(step).chain(std::iter::once(bytes.len() - 1));
            for cut in cuts {
                prop_assert!(ChangeEvent::decode(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            let _ = ChangeEvent::decode(&bytes);
        }

        #[test]
        fn positions_print_and_parse_back(ev in event()) {
            let text = ev.position.to_string();
            let back: SourcePosition = text.parse().unwrap();
            prop_assert_eq!(back, ev.position);
        }
    }

    fn sample() -> ChangeEvent {
        ChangeEvent {
            tenant: "t1".into(),
            database: "customer_a".into(),
            table: "patients".into(),
            op: Operation::Insert,
            key: Row(vec![("id".into(), Value::UInt(u64::MAX))]),
            before: None,
            after: Some(Row(vec![
                ("id".into(), Value::UInt(u64::MAX)),
                ("photo".into(), Value::Bytes(vec![7; 4 << 20])),
            ])),
            ddl: None,
            schema_version: 3,
            position: "mysql-bin.000001:4#0".parse().unwrap(),
            commit_time_micros: 1_700_000_000_000_000,
            transaction: TransactionInfo {
                id: "0-1-5".into(),
                index: 0,
                last: true,
            },
        }
    }

    #[test]
    fn unknown_version_and_truncation_are_typed_errors() {
        let mut bytes = sample().encode().unwrap();
        assert_eq!(ChangeEvent::decode(&[]), Err(EnvelopeError::Empty));
        assert!(matches!(
            ChangeEvent::decode(&bytes[..bytes.len() - 1]),
            Err(EnvelopeError::Truncated { .. })
        ));
        bytes.push(0);
        assert_eq!(
            ChangeEvent::decode(&bytes),
            Err(EnvelopeError::TrailingBytes { extra: 1 })
        );
        bytes[0] = 2;
        assert_eq!(
            ChangeEvent::decode(&bytes),
            Err(EnvelopeError::UnknownVersion { found: 2 })
        );
    }

    #[test]
    fn large_blobs_cost_their_size_not_more() {
        let bytes = sample().encode().unwrap();
        assert!(
            bytes.len() < (4 << 20) + 256,
            "4 MiB blob encoded as {} bytes",
            bytes.len()
        );
    }
}
