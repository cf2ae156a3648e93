//! Turning change events into row writes, and the position guard.
//!
//! Every write carries the sortable source position of its event
//! ([`position_key`]). Before a table's writes are applied, the positions the
//! target stores for those rows are read; a write whose position is not newer
//! than the stored one is dropped (a replay, or an event applied before a crash),
//! so v2 never moves backwards and replaying any range changes nothing. Deletes
//! store their position too (a tombstone), so a replayed older insert does not
//! bring a deleted row back. What is left is collapsed to one write per row.
//!
//! `cdc-bridge replay` guards with [`GuardMode::Replay`]: a write at exactly
//! the stored position is applied again (the row's last change, re-derived by
//! a fixed mapping), an older one never is. Counted (keyless) rows keep the
//! strict rule there too, because adding a count twice is not idempotent.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::event::{ChangeEvent, Operation, Phase, Row, SourcePosition};

use super::mirror::{self, MirrorError};
use super::target::{Change, RowWrite, SqlValue, TableDef};

/// The source position as bytes whose byte-wise order is the source order:
/// binlog file sequence, offset, phase, index, each big-endian (25 bytes).
pub fn position_key(p: &SourcePosition) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.extend_from_slice(&p.coordinates.file_sequence().unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&p.coordinates.pos.to_be_bytes());
    out.push(match p.phase {
        Phase::Snapshot => 0,
        Phase::Stream => 1,
    });
    out.extend_from_slice(&p.index.to_be_bytes());
    out
}

/// A value's canonical text in a row key: stable across versions of this
/// program, because stored keys must match for months of replays.
pub fn canonical(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "null".into(),
        SqlValue::Bool(b) => b.to_string(),
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Decimal(s) | SqlValue::Text(s) | SqlValue::Json(s) => s.clone(),
        SqlValue::Real(f) => format!("{f:?}"),
        SqlValue::Double(d) => format!("{d:?}"),
        SqlValue::Date(d) => d.to_string(),
        SqlValue::DateTime(dt) => format!(
            "{} {:02}:{:02}:{:02}.{:06}",
            dt.date, dt.hour, dt.minute, dt.second, dt.micros
        ),
        SqlValue::Instant(m) | SqlValue::Duration(m) => m.to_string(),
        SqlValue::Bytes(b) => hex(b),
        SqlValue::Bits { width, bits } => format!("{width}:{bits}"),
        SqlValue::Uuid(u) => hex(u),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The identity of a keyed row: a JSON array of its key values' canonical texts.
pub fn row_key(values: &[&SqlValue]) -> String {
    serde_json::to_string(&values.iter().map(|v| canonical(v)).collect::<Vec<_>>())
        .expect("strings serialize")
}

/// The identity of a row of a keyless table: SHA-256 of all its values.
pub fn row_hash(values: &[SqlValue]) -> String {
    let refs: Vec<&SqlValue> = values.iter().collect();
    hex(&Sha256::digest(row_key(&refs).as_bytes()))
}

fn key_of(def: &TableDef, values: &[SqlValue]) -> Vec<SqlValue> {
    def.key.iter().map(|&i| values[i].clone()).collect()
}

/// The writes one row event makes to its mirrored table (a DDL makes none).
pub fn mirror_writes(def: &TableDef, ev: &ChangeEvent) -> Result<Vec<RowWrite>, MirrorError> {
    let position = position_key(&ev.position);
    let image = |row: &Option<Row>, which: &str| -> Result<Vec<SqlValue>, MirrorError> {
        match row {
            Some(r) => mirror::row_values(def, r),
            None => Err(MirrorError::Value {
                column: "(row)".into(),
                reason: format!("{} event without its {which} image", ev.op.as_str()),
            }),
        }
    };
    let mut out = Vec::with_capacity(2);
    if def.is_keyless() {
        let mut count = |values: Vec<SqlValue>, delta: i64| {
            out.push(RowWrite {
                row_key: row_hash(&values),
                position: position.clone(),
                change: Change::Count { values, delta },
            });
        };
        match ev.op {
            Operation::Ddl | Operation::Watermark => {}
            Operation::SnapshotRead | Operation::Insert => count(image(&ev.after, "after")?, 1),
            Operation::Update => {
                let before = image(&ev.before, "before")?;
                let after = image(&ev.after, "after")?;
                if before != after {
                    count(before, -1);
                    count(after, 1);
                }
            }
            Operation::Delete => count(image(&ev.before, "before")?, -1),
        }
        return Ok(out);
    }
    let upsert = |values: Vec<SqlValue>| {
        let key = key_of(def, &values);
        RowWrite {
            row_key: row_key(&key.iter().collect::<Vec<_>>()),
            position: position.clone(),
            change: Change::Upsert(values),
        }
    };
    let delete = |values: &[SqlValue]| {
        let key = key_of(def, values);
        RowWrite {
            row_key: row_key(&key.iter().collect::<Vec<_>>()),
            position: position.clone(),
            change: Change::Delete(key),
        }
    };
    match ev.op {
        Operation::Ddl | Operation::Watermark => {}
        Operation::SnapshotRead | Operation::Insert => out.push(upsert(image(&ev.after, "after")?)),
        Operation::Update => {
            let after = image(&ev.after, "after")?;
            if let Some(before) = &ev.before {
                let before = mirror::row_values(def, before)?;
                // An update that changed the key deletes the old row.
                if key_of(def, &before) != key_of(def, &after) {
                    out.push(delete(&before));
                }
            }
            out.push(upsert(after));
        }
        Operation::Delete => {
            let before = match &ev.before {
                Some(b) => mirror::row_values(def, b)?,
                None => mirror::row_values(def, &key_row(&ev.key))?,
            };
            out.push(delete(&before));
        }
    }
    Ok(out)
}

fn key_row(key: &Row) -> Row {
    Row(key.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Result of the guard: the writes to apply, one per row, and how many were skipped.
#[derive(Debug, Default)]
pub struct Guarded {
    pub writes: Vec<RowWrite>,
    pub skipped: usize,
}

/// Which writes the guard lets through, compared with a row's stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// The live sink: only writes newer than the stored position.
    Live,
    /// A replay: writes at the stored position too (re-derived through the
    /// current mapping), never older ones; counted rows only when newer.
    Replay,
}

impl GuardMode {
    /// Whether a write at `position` passes a row whose stored position is `stored`.
    fn passes(self, write: &RowWrite, stored: &[u8]) -> bool {
        match (self, &write.change) {
            (GuardMode::Replay, Change::Upsert(_) | Change::Delete(_)) => write.position.as_slice() >= stored,
            _ => write.position.as_slice() > stored,
        }
    }
}

/// [`guard_with`] as the live sink guards.
pub fn guard(writes: Vec<RowWrite>, stored: &HashMap<String, Vec<u8>>) -> Guarded {
    guard_with(writes, stored, GuardMode::Live)
}

/// Drops writes the mode does not let past the stored position of their row,
/// then collapses the rest to one write per row: the last for keyed rows, the
/// summed count (at the newest position) for keyless ones.
pub fn guard_with(writes: Vec<RowWrite>, stored: &HashMap<String, Vec<u8>>, mode: GuardMode) -> Guarded {
    let mut out: Vec<RowWrite> = Vec::with_capacity(writes.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(writes.len());
    let mut skipped = 0;
    for w in writes {
        if stored.get(&w.row_key).is_some_and(|p| !mode.passes(&w, p)) {
            skipped += 1;
            continue;
        }
        match index.get(&w.row_key) {
            None => {
                index.insert(w.row_key.clone(), out.len());
                out.push(w);
            }
            Some(&i) => {
                let slot = &mut out[i];
                match (&mut slot.change, w.change) {
                    (Change::Count { delta, .. }, Change::Count { delta: more, .. }) => {
                        *delta += more;
                        slot.position = w.position;
                    }
                    (_, change) => {
                        slot.change = change;
                        slot.position = w.position;
                    }
                }
            }
        }
    }
    Guarded { writes: out, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BinlogCoordinates, Value};
    use crate::sink::target::{ColumnDef, SqlType};

    fn pos(file: u32, offset: u64, phase: Phase, index: u64) -> SourcePosition {
        SourcePosition {
            coordinates: BinlogCoordinates::new(format!("mysql-bin.{file:06}"), offset),
            gtid: None,
            phase,
            index,
        }
    }

    #[test]
    fn position_bytes_sort_like_positions() {
        let ps = [
            pos(1, 4, Phase::Snapshot, 0),
            pos(1, 4, Phase::Snapshot, 1),
            pos(1, 4, Phase::Stream, 0),
            pos(1, 300, Phase::Stream, 0),
            pos(1, 300, Phase::Stream, 7),
            pos(2, 4, Phase::Stream, 0),
            pos(10, 4, Phase::Stream, 0),
        ];
        for w in ps.windows(2) {
            assert!(w[0] < w[1]);
            assert!(position_key(&w[0]) < position_key(&w[1]), "{} vs {}", w[0], w[1]);
        }
    }

    fn def(keyless: bool) -> TableDef {
        TableDef {
            scope: String::new(),
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                ColumnDef {
                    name: "id".into(),
                    ty: SqlType::Int,
                    nullable: false,
                },
                ColumnDef {
                    name: "v".into(),
                    ty: SqlType::Text { max_chars: None },
                    nullable: true,
                },
            ],
            key: if keyless { vec![] } else { vec![0] },
        }
    }

    fn row(id: i64, v: &str) -> Row {
        Row(vec![
            ("id".into(), Value::Int(id)),
            ("v".into(), Value::Text(v.into())),
        ])
    }

    fn event(op: Operation, before: Option<Row>, after: Option<Row>, at: u64) -> ChangeEvent {
        ChangeEvent {
            position: pos(1, at, Phase::Stream, 0),
            ..ChangeEvent::test_row("t", op, before, after)
        }
    }

    fn writes(def: &TableDef, evs: &[ChangeEvent]) -> Vec<RowWrite> {
        evs.iter().flat_map(|e| mirror_writes(def, e).unwrap()).collect()
    }

    #[test]
    fn the_last_write_per_row_wins_and_a_key_change_deletes_the_old_row() {
        let d = def(false);
        let evs = [
            event(Operation::Insert, None, Some(row(1, "a")), 10),
            event(Operation::Update, Some(row(1, "a")), Some(row(1, "b")), 20),
            event(Operation::Update, Some(row(1, "b")), Some(row(2, "b")), 30),
        ];
        let g = guard(writes(&d, &evs), &HashMap::new());
        assert_eq!(g.skipped, 0);
        assert_eq!(g.writes.len(), 2);
        assert!(
            matches!(g.writes[0].change, Change::Delete(_)),
            "{:?}",
            g.writes[0]
        );
        assert_eq!(g.writes[0].position, position_key(&evs[2].position));
        assert!(matches!(&g.writes[1].change, Change::Upsert(v) if v[0] == SqlValue::Int(2)));
    }

    #[test]
    fn stored_positions_make_replays_no_ops_and_tombstones_block_resurrection() {
        let d = def(false);
        let evs = [
            event(Operation::Insert, None, Some(row(1, "a")), 10),
            event(Operation::Delete, Some(row(1, "a")), None, 20),
        ];
        let all = writes(&d, &evs);
        let mut stored = HashMap::new();
        stored.insert(all[1].row_key.clone(), all[1].position.clone());
        // Replaying both: the tombstone at 20 skips the insert at 10 and the delete itself.
        let g = guard(all.clone(), &stored);
        assert_eq!(g.skipped, 2);
        assert!(g.writes.is_empty());
        // Replaying from the middle: stored at 10 keeps only the delete.
        stored.insert(all[0].row_key.clone(), all[0].position.clone());
        let g = guard(all, &stored);
        assert_eq!(g.skipped, 1);
        assert!(matches!(g.writes[0].change, Change::Delete(_)));
    }

    #[test]
    fn keyless_rows_are_counted_not_deduplicated() {
        let d = def(true);
        let evs = [
            event(Operation::Insert, None, Some(row(1, "same")), 10),
            event(Operation::Insert, None, Some(row(1, "same")), 20),
            event(Operation::Delete, Some(row(1, "same")), None, 30),
        ];
        let all = writes(&d, &evs);
        let g = guard(all.clone(), &HashMap::new());
        assert_eq!(g.writes.len(), 1);
        assert!(matches!(g.writes[0].change, Change::Count { delta: 1, .. }));
        // After the first insert was applied, a replay counts only the rest.
        let mut stored = HashMap::new();
        stored.insert(all[0].row_key.clone(), all[0].position.clone());
        let g = guard(all, &stored);
        assert_eq!(g.skipped, 1);
        assert!(matches!(g.writes[0].change, Change::Count { delta: 0, .. }));
    }

    #[test]
    fn the_replay_guard_reapplies_the_stored_position_but_nothing_older() {
        let d = def(false);
        let evs = [
            event(Operation::Insert, None, Some(row(1, "a")), 10),
            event(Operation::Update, Some(row(1, "a")), Some(row(1, "b")), 20),
        ];
        let all = writes(&d, &evs);
        let mut stored = HashMap::new();
        stored.insert(all[1].row_key.clone(), all[1].position.clone());
        // Live: both are old news.
        let g = guard_with(all.clone(), &stored, GuardMode::Live);
        assert_eq!((g.skipped, g.writes.len()), (2, 0));
        // Replay: the write at the stored position goes again, the older one never.
        let g = guard_with(all.clone(), &stored, GuardMode::Replay);
        assert_eq!(g.skipped, 1);
        assert_eq!(g.writes, vec![all[1].clone()]);
        // A newer stored position (the row changed after the replayed range) blocks both.
        stored.insert(
            all[1].row_key.clone(),
            position_key(&pos(1, 30, Phase::Stream, 0)),
        );
        let g = guard_with(all, &stored, GuardMode::Replay);
        assert_eq!((g.skipped, g.writes.len()), (2, 0));
    }

    #[test]
    fn the_replay_guard_keeps_tombstones_and_counts() {
        let d = def(false);
        let evs = [
            event(Operation::Insert, None, Some(row(1, "a")), 10),
            event(Operation::Delete, Some(row(1, "a")), None, 20),
        ];
        let all = writes(&d, &evs);
        let mut stored = HashMap::new();
        stored.insert(all[1].row_key.clone(), all[1].position.clone());
        // The older insert stays blocked by the tombstone; the delete itself may go again.
        let g = guard_with(all, &stored, GuardMode::Replay);
        assert_eq!(g.skipped, 1);
        assert_eq!(g.writes.len(), 1);
        assert!(matches!(g.writes[0].change, Change::Delete(_)));
        // A counted row at its stored position was counted already.
        let keyless = def(true);
        let counted = writes(&keyless, &evs[..1]);
        let mut stored = HashMap::new();
        stored.insert(counted[0].row_key.clone(), counted[0].position.clone());
        let g = guard_with(counted, &stored, GuardMode::Replay);
        assert_eq!((g.skipped, g.writes.len()), (1, 0));
    }

    #[test]
    fn row_keys_are_stable_text() {
        assert_eq!(
            row_key(&[&SqlValue::Int(42), &SqlValue::Text("a\"b".into())]),
            r#"["42","a\"b"]"#
        );
        assert_eq!(row_hash(&[SqlValue::Int(1)]).len(), 64);
    }
}
