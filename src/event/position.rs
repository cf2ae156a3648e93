//! Source positions: where in a server's binlog an event came from.
//!
//! Positions parse from and print to the forms users see in MySQL/MariaDB
//! (`mysql-bin.000003:1234`, MariaDB GTID lists `0-1-100,1-2-7`, MySQL GTID sets
//! `3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9`), serialize into the envelope,
//! and compare, so the sink's position guard can tell an older event from a newer one.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a position string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {reason}")]
pub struct PositionParseError {
    pub what: &'static str,
    pub text: String,
    pub reason: &'static str,
}

fn bad(what: &'static str, text: &str, reason: &'static str) -> PositionParseError {
    PositionParseError {
        what,
        text: text.to_owned(),
        reason,
    }
}

/// A binlog file name and byte offset in it.
///
/// Ordered by the file's numeric suffix, then the offset: binlog files are named
/// `<base>.<sequence>` and the sequence only grows on one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogCoordinates {
    pub file: String,
    pub pos: u64,
}

impl BinlogCoordinates {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        BinlogCoordinates {
            file: file.into(),
            pos,
        }
    }

    /// The numeric suffix of the file name (`mysql-bin.000042` → 42).
    pub fn file_sequence(&self) -> Option<u64> {
        self.file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }
}

impl Ord for BinlogCoordinates {
    fn cmp(&self, other: &Self) -> Ordering {
        self.file_sequence()
            .cmp(&other.file_sequence())
            .then_with(|| self.file.cmp(&other.file))
            .then(self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for BinlogCoordinates {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl FromStr for BinlogCoordinates {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (file, pos) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("binlog coordinates", text, "expected <file>:<offset>"))?;
        if file.is_empty() || file.contains(char::is_whitespace) {
            return Err(bad("binlog coordinates", text, "empty or blank file name"));
        }
        let pos = pos
            .parse()
            .map_err(|_| bad("binlog coordinates", text, "offset is not a number"))?;
        Ok(BinlogCoordinates::new(file, pos))
    }
}

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaDbGtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl fmt::Display for MariaDbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

impl FromStr for MariaDbGtid {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.trim().splitn(3, '-');
        let mut next = || parts.next().filter(|p| !p.is_empty());
        let (Some(d), Some(s), Some(n)) = (next(), next(), next()) else {
            return Err(bad("MariaDB GTID", text, "expected domain-server-sequence"));
        };
        Ok(MariaDbGtid {
            domain: d
                .parse()
                .map_err(|_| bad("MariaDB GTID", text, "bad domain id"))?,
            server: s
                .parse()
                .map_err(|_| bad("MariaDB GTID", text, "bad server id"))?,
            sequence: n
                .parse()
                .map_err(|_| bad("MariaDB GTID", text, "bad sequence number"))?,
        })
    }
}

/// A MariaDB GTID position: the last GTID seen in each replication domain,
/// as in `@@gtid_binlog_pos` and `@slave_connect_state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaDbGtidPos {
    /// domain → last GTID of that domain.
    domains: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidPos {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records `gtid` as the newest of its domain.
    pub fn advance(&mut self, gtid: MariaDbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    pub fn get(&self, domain: u32) -> Option<MariaDbGtid> {
        self.domains.get(&domain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &MariaDbGtid> {
        self.domains.values()
    }
}

impl PartialOrd for MariaDbGtidPos {
    /// `a <= b` when every domain of `a` is at or behind `b`'s sequence in that domain.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let behind_or_equal = |a: &Self, b: &Self| {
            a.domains
                .iter()
                .all(|(domain, g)| b.domains.get(domain).is_some_and(|h| h.sequence >= g.sequence))
        };
        match (behind_or_equal(self, other), behind_or_equal(other, self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl fmt::Display for MariaDbGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaDbGtidPos {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut pos = MariaDbGtidPos::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid: MariaDbGtid = part.parse()?;
            if pos.domains.insert(gtid.domain, gtid).is_some() {
                return Err(bad("MariaDB GTID position", text, "a domain appears twice"));
            }
        }
        Ok(pos)
    }
}

/// A MySQL GTID set: per source UUID, closed intervals of transaction numbers.
/// Kept normalized (sorted, merged) so equal sets print equally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MySqlGtidSet {
    /// lowercase UUID → sorted, disjoint, non-adjacent inclusive intervals.
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn contains(&self, uuid: &str, transaction: u64) -> bool {
        self.sources
            .get(&uuid.to_ascii_lowercase())
            .is_some_and(|ivs| ivs.iter().any(|&(a, b)| a <= transaction && transaction <= b))
    }

    /// Adds one transaction, e.g. after its GTID event was read.
    pub fn add(&mut self, uuid: &str, transaction: u64) {
        self.add_interval(&uuid.to_ascii_lowercase(), transaction, transaction);
    }

    fn add_interval(&mut self, uuid: &str, start: u64, end: u64) {
        let ivs = self.sources.entry(uuid.to_owned()).or_default();
        ivs.push((start, end));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(a, b) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ivs = merged;
    }

    /// True when every transaction of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.sources.iter().all(|(uuid, ivs)| {
            let Some(theirs) = other.sources.get(uuid) else {
                return false;
            };
            ivs.iter()
                .all(|&(a, b)| theirs.iter().any(|&(c, d)| c <= a && b <= d))
        })
    }
}

impl PartialOrd for MySqlGtidSet {
    /// Set inclusion.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.is_subset(other), other.is_subset(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, ivs)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(uuid)?;
            for &(a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MySqlGtidSet {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = MySqlGtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
            if !is_uuid(&uuid) {
                return Err(bad("MySQL GTID set", text, "expected a source UUID"));
            }
            let mut any = false;
            for iv in pieces {
                let (a, b) = match iv.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (iv, iv),
                };
                let a: u64 = a
                    .parse()
                    .map_err(|_| bad("MySQL GTID set", text, "bad interval start"))?;
                let b: u64 = b
                    .parse()
                    .map_err(|_| bad("MySQL GTID set", text, "bad interval end"))?;
                if a == 0 || b < a {
                    return Err(bad("MySQL GTID set", text, "interval must be 1 <= start <= end"));
                }
                set.add_interval(&uuid, a, b);
                any = true;
            }
            if !any {
                return Err(bad("MySQL GTID set", text, "a UUID without intervals"));
            }
        }
        Ok(set)
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The GTID state of a server, in its flavour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GtidSet {
    MariaDb(MariaDbGtidPos),
    MySql(MySqlGtidSet),
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::MariaDb(p) => write!(f, "mariadb:{p}"),
            GtidSet::MySql(s) => write!(f, "mysql:{s}"),
        }
    }
}

impl FromStr for GtidSet {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("mariadb:") {
            Ok(GtidSet::MariaDb(rest.parse()?))
        } else if let Some(rest) = text.strip_prefix("mysql:") {
            Ok(GtidSet::MySql(rest.parse()?))
        } else {
            Err(bad("GTID set", text, "expected a 'mariadb:' or 'mysql:' prefix"))
        }
    }
}

/// Whether an event came from the snapshot or from the binlog stream.
///
/// At equal coordinates a snapshot read is older than a streamed change: the
/// snapshot shows the state *at* its coordinates, the stream what came after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    Snapshot,
    Stream,
}

/// Where an event came from: binlog coordinates of its transaction (or of the
/// snapshot), the GTID state after that transaction where known, the phase, and
/// the event's index (within the transaction, or the snapshot row number).
///
/// Ordered by coordinates, then phase, then index; the GTID set is carried for
/// resuming and display and does not take part in the order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    pub coordinates: BinlogCoordinates,
    pub gtid: Option<GtidSet>,
    pub phase: Phase,
    pub index: u64,
}

impl Ord for SourcePosition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.coordinates
            .cmp(&other.coordinates)
            .then(self.phase.cmp(&other.phase))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for SourcePosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SourcePosition {
    /// `[snapshot@]file:pos#index[ gtid=<flavour>:<set>]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.phase == Phase::Snapshot {
            f.write_str("snapshot@")?;
        }
        write!(f, "{}#{}", self.coordinates, self.index)?;
        if let Some(gtid) = &self.gtid {
            write!(f, " gtid={gtid}")?;
        }
        Ok(())
    }
}

impl FromStr for SourcePosition {
    type Err = PositionParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (main, gtid) = match text.split_once(" gtid=") {
            Some((main, gtid)) => (main, Some(gtid.parse()?)),
            None => (text, None),
        };
        let (phase, main) = match main.strip_prefix("snapshot@") {
            Some(rest) => (Phase::Snapshot, rest),
            None => (Phase::Stream, main),
        };
        let (coords, index) = main
            .rsplit_once('#')
            .ok_or_else(|| bad("source position", text, "expected <file>:<offset>#<index>"))?;
        Ok(SourcePosition {
            coordinates: coords.parse()?,
            gtid,
            phase,
            index: index
                .parse()
                .map_err(|_| bad("source position", text, "index is not a number"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_order_by_file_sequence_then_offset() {
        let a: BinlogCoordinates = "mysql-bin.000009:900".parse().unwrap();
        let b: BinlogCoordinates = "mysql-bin.000010:4".parse().unwrap();
        assert!(a < b, "000009 must sort before 000010 whatever the offsets");
        assert!(b < "mysql-bin.000010:5".parse().unwrap());
    }

    #[test]
    fn mariadb_positions_compare_per_domain() {
        let a: MariaDbGtidPos = "0-1-10,1-2-5".parse().unwrap();
        let b: MariaDbGtidPos = "0-1-11,1-2-5".parse().unwrap();
        let c: MariaDbGtidPos = "0-1-12,1-2-4".parse().unwrap();
        assert_eq!(a.partial_cmp(&b), Some(Ordering::Less));
        assert_eq!(b.partial_cmp(&c), None, "diverged domains are incomparable");
        assert_eq!(a.to_string(), "0-1-10,1-2-5");
        assert!("0-1-10,0-2-11".parse::<MariaDbGtidPos>().is_err());
        assert!("0-1".parse::<MariaDbGtidPos>().is_err());
    }

    #[test]
    fn mysql_sets_normalize_and_compare() {
        let uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let mut s: MySqlGtidSet = format!("{uuid}:1-5:7").parse().unwrap();
        assert!(s.contains(uuid, 3));
        assert!(!s.contains(uuid, 6));
        s.add(uuid, 6);
        assert_eq!(s.to_string(), format!("{}:1-7", uuid.to_ascii_lowercase()));
        let smaller: MySqlGtidSet = format!("{uuid}:2-4").parse().unwrap();
        assert_eq!(smaller.partial_cmp(&s), Some(Ordering::Less));
        assert!(format!("{uuid}:5-3").parse::<MySqlGtidSet>().is_err());
        assert!("not-a-uuid:1-3".parse::<MySqlGtidSet>().is_err());
    }

    #[test]
    fn snapshot_reads_sort_before_stream_at_equal_coordinates() {
        let snap: SourcePosition = "snapshot@mysql-bin.000003:1234#99".parse().unwrap();
        let stream: SourcePosition = "mysql-bin.000003:1234#0 gtid=mariadb:0-1-7".parse().unwrap();
        assert!(snap < stream);
        assert_eq!(stream.to_string(), "mysql-bin.000003:1234#0 gtid=mariadb:0-1-7");
        assert_eq!(snap.to_string(), "snapshot@mysql-bin.000003:1234#99");
    }
}
