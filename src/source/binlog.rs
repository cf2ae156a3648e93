//! Binlog streaming: row events grouped into whole v1 transactions.
//!
//! # Reading
//! The binlog is read with `mysql_async`'s binlog stream from binlog coordinates
//! (the resume point is always a transaction boundary). MariaDB's own event types
//! (GTID 162, GTID_LIST 163) are parsed from their raw bytes, after asking the
//! server for them with `@mariadb_slave_capability=4`; otherwise it would replace
//! GTID events with BEGIN queries.
//!
//! # Transactions
//! Row events are buffered until their transaction commits (XID, or a COMMIT
//! query for non-transactional tables); a rolled-back transaction never reaches
//! the binlog. A committed transaction is handed over whole, with the coordinates
//! just after its commit event: that is where a restart resumes.
//!
//! # Schemas
//! Row images are decoded with the tracked schema (`information_schema`, reloaded
//! after DDL on a tenant database). When the server writes column names into the
//! table-map event (`binlog_row_metadata=FULL`) they are checked against the
//! tracked schema, so a schema the tracker could not follow is detected instead
//! of mis-decoded.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};

use super::convert;
use super::schema::{self, TableSchema};
use super::{Selection, SourceError};
use crate::config::ResumeBy;
use crate::event::{
    BinlogCoordinates, ChangeEvent, GtidSet, MariaDbGtid, MariaDbGtidPos, MySqlGtidSet, Operation, Phase,
    Row, SourcePosition, TransactionInfo,
};

/// MariaDB event types that mysql_common does not know.
const MARIADB_GTID_EVENT: u8 = 162;
const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// MariaDB's compressed query/rows events (`log_bin_compress=ON`).
const MARIADB_COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 165..=171;
const MARIADB_FL_STANDALONE: u8 = 1;

/// A committed v1 transaction (or DDL statement), ready to publish.
#[derive(Debug, Default)]
pub struct Committed {
    pub events: Vec<ChangeEvent>,
    /// Schema versions this transaction introduced (DDL).
    pub schemas: Vec<TableSchema>,
    /// Events of this transaction that could not be decoded, with the reason.
    pub rejected: Vec<RejectedEvent>,
    pub end: Option<BinlogCoordinates>,
    pub gtid: Option<GtidSet>,
    pub commit_micros: i64,
}

/// A row event the source could not decode: it goes to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct RejectedEvent {
    pub database: String,
    pub table: String,
    pub position: SourcePosition,
    pub reason: String,
}

/// What the stream hands to the runner.
#[derive(Debug)]
pub enum StreamItem {
    Transaction(Committed),
    /// The server is idle; its binlog is at these coordinates.
    Heartbeat(BinlogCoordinates),
}

/// The open transaction being assembled.
struct OpenTx {
    start: BinlogCoordinates,
    id: String,
    events: Vec<ChangeEvent>,
    rejected: Vec<RejectedEvent>,
    standalone: bool,
}

impl OpenTx {
    /// Records a row event of this transaction that cannot be decoded.
    fn reject(&mut self, database: String, table: String, at: BinlogCoordinates, reason: String) {
        let index = (self.events.len() + self.rejected.len()) as u64;
        self.rejected.push(RejectedEvent {
            database,
            table,
            position: SourcePosition {
                coordinates: at,
                gtid: None,
                phase: Phase::Stream,
                index,
            },
            reason,
        });
    }
}

pub struct BinlogReader {
    stream: BinlogStream,
    /// For schema queries (the binlog connection is busy streaming).
    query_conn: mysql_async::Conn,
    selection: Selection,
    mariadb: bool,
    file: String,
    seen_format_description: bool,
    gtid_mariadb: MariaDbGtidPos,
    gtid_mysql: MySqlGtidSet,
    open: Option<OpenTx>,
    schemas: HashMap<(String, String), TableSchema>,
    /// Schema versions introduced since the last transaction was handed over.
    changed: Vec<TableSchema>,
}

impl BinlogReader {
    /// Connects a binlog stream at `from`.
    pub async fn start(
        opts: mysql_async::Opts,
        server_id: u32,
        from: &BinlogCoordinates,
        gtid: Option<GtidSet>,
        selection: Selection,
        heartbeat: Duration,
        resume_by: ResumeBy,
    ) -> Result<BinlogReader, SourceError> {
        let mut conn = super::connect(&opts).await?;
        let query_conn = super::connect(&opts).await?;
        let version: String = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        if mariadb {
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        }
        // MySQL 8.0.26+ reads `source_heartbeat_period`, older servers and MariaDB the old name.
        conn.query_drop(format!(
            "SET @master_heartbeat_period = {n}, @source_heartbeat_period = {n}",
            n = heartbeat.as_nanos()
        ))
        .await?;
        let by_gtid = match (&gtid, resume_by) {
            (_, ResumeBy::Position) => false,
            (Some(GtidSet::MariaDb(pos)), ResumeBy::Gtid) if mariadb && !pos.is_empty() => {
                // The server finds the binlog file holding this GTID position itself;
                // the fake ROTATE that starts the stream names it.
                conn.exec_drop("SET @slave_connect_state = ?", (pos.to_string(),))
                    .await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
                true
            }
            (_, ResumeBy::Gtid) => {
                return Err(SourceError::Unsupported {
                    position: from.to_string(),
                    what: "source.resume_by = \"gtid\" needs a MariaDB server and a stored MariaDB GTID \
                           position; use resume_by = \"position\""
                        .into(),
                })
            }
        };
        let request = if by_gtid {
            BinlogStreamRequest::new(server_id).with_filename(b"").with_pos(4)
        } else {
            BinlogStreamRequest::new(server_id)
                .with_filename(from.file.as_bytes())
                .with_pos(from.pos)
        };
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| SourceError::from_binlog_open(e, from))?;
        let (gtid_mariadb, gtid_mysql) = match gtid {
            Some(GtidSet::MariaDb(p)) => (p, MySqlGtidSet::default()),
            Some(GtidSet::MySql(s)) => (MariaDbGtidPos::default(), s),
            None => Default::default(),
        };
        Ok(BinlogReader {
            stream,
            query_conn,
            selection,
            mariadb,
            file: from.file.clone(),
            seen_format_description: false,
            gtid_mariadb,
            gtid_mysql,
            open: None,
            schemas: HashMap::new(),
            changed: Vec::new(),
        })
    }

    fn gtid_state(&self) -> Option<GtidSet> {
        if self.mariadb {
            (!self.gtid_mariadb.is_empty()).then(|| GtidSet::MariaDb(self.gtid_mariadb.clone()))
        } else {
            (!self.gtid_mysql.is_empty()).then(|| GtidSet::MySql(self.gtid_mysql.clone()))
        }
    }

    /// The next committed transaction or heartbeat.
    pub async fn next(&mut self) -> Result<StreamItem, SourceError> {
        loop {
            let event = match self.stream.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(SourceError::from_stream(e, &self.file)),
                None => {
                    return Err(SourceError::StreamEnded {
                        file: self.file.clone(),
                    })
                }
            };
            if let Some(item) = self.handle(event).await? {
                return Ok(item);
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Result<Option<StreamItem>, SourceError> {
        let header = event.header();
        let type_raw = header.event_type_raw();
        let end = u64::from(header.log_pos());
        let start = end.saturating_sub(u64::from(header.event_size()));
        let here = |file: &str| BinlogCoordinates::new(file, start);

        if type_raw == MARIADB_GTID_EVENT {
            let data = event.data();
            if data.len() < 13 {
                return Err(SourceError::Undecodable {
                    position: here(&self.file).to_string(),
                    reason: "MariaDB GTID event shorter than 13 bytes".into(),
                });
            }
            let sequence = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
            let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
            let flags = data[12];
            let gtid = MariaDbGtid {
                domain,
                server: header.server_id(),
                sequence,
            };
            self.open = Some(OpenTx {
                start: here(&self.file),
                id: gtid.to_string(),
                events: Vec::new(),
                rejected: Vec::new(),
                standalone: flags & MARIADB_FL_STANDALONE != 0,
            });
            self.gtid_mariadb.advance(gtid);
            return Ok(None);
        }
        if type_raw == MARIADB_GTID_LIST_EVENT {
            return Ok(None);
        }
        if MARIADB_COMPRESSED_EVENTS.contains(&type_raw) && self.mariadb {
            return Err(SourceError::Unsupported {
                position: here(&self.file).to_string(),
                what: "compressed binlog events (log_bin_compress=ON); turn log_bin_compress off".into(),
            });
        }

        let data = event.read_data().map_err(|e| SourceError::Undecodable {
            position: here(&self.file).to_string(),
            reason: format!("event type {type_raw}: {e}"),
        })?;
        let Some(data) = data else {
            return Ok(None);
        };
        match data {
            EventData::FormatDescriptionEvent(_) => {
                self.seen_format_description = true;
            }
            EventData::RotateEvent(rotate) => {
                let mut name = rotate.name_raw().to_vec();
                // The first, fake ROTATE comes before the format description, so the
                // reader could not strip its checksum: the name ends in 4 CRC bytes.
                if !self.seen_format_description
                    && name.len() > 4
                    && !name.iter().rev().take(4).all(u8::is_ascii_digit)
                {
                    name.truncate(name.len() - 4);
                }
                self.file = String::from_utf8_lossy(&name).into_owned();
                self.seen_format_description = false;
                if self.open.is_none() && rotate.position() >= 4 {
                    return Ok(Some(StreamItem::Heartbeat(BinlogCoordinates::new(
                        self.file.clone(),
                        rotate.position(),
                    ))));
                }
            }
            EventData::HeartbeatEvent if self.open.is_none() && end > 0 => {
                return Ok(Some(StreamItem::Heartbeat(BinlogCoordinates::new(
                    self.file.clone(),
                    end,
                ))));
            }
            EventData::GtidEvent(g) => {
                let uuid = format_uuid(&g.sid());
                self.gtid_mysql.add(&uuid, g.gno());
                self.open = Some(OpenTx {
                    start: here(&self.file),
                    id: format!("{uuid}:{}", g.gno()),
                    events: Vec::new(),
                    rejected: Vec::new(),
                    standalone: false,
                });
            }
            EventData::QueryEvent(q) => {
                let statement = q.query();
                let trimmed = statement.trim_start();
                let keyword = trimmed
                    .split(|c: char| c.is_whitespace() || c == ';')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                match keyword.as_str() {
                    "BEGIN" | "XA" | "SAVEPOINT" if self.open.is_none() => {
                        self.open = Some(OpenTx {
                            start: here(&self.file),
                            id: here(&self.file).to_string(),
                            events: Vec::new(),
                            rejected: Vec::new(),
                            standalone: false,
                        });
                    }
                    "COMMIT" => return Ok(Some(self.commit(end, header.timestamp()))),
                    "ROLLBACK" => {
                        // Only non-transactional changes are logged before a ROLLBACK;
                        // they happened, so they are kept.
                        return Ok(Some(self.commit(end, header.timestamp())));
                    }
                    "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE" => {
                        let database = q.schema().into_owned();
                        let statement = statement.into_owned();
                        self.ddl(&database, &statement, here(&self.file), header.timestamp())
                            .await?;
                        if self.open.as_ref().is_some_and(|t| t.standalone) || !self.mariadb {
                            return Ok(Some(self.commit(end, header.timestamp())));
                        }
                    }
                    _ => {}
                }
            }
            EventData::XidEvent(_) => return Ok(Some(self.commit(end, header.timestamp()))),
            EventData::RowsEvent(rows) => self.rows(&rows, here(&self.file), header.timestamp()).await?,
            _ => {}
        }
        Ok(None)
    }

    fn commit(&mut self, end: u64, timestamp: u32) -> StreamItem {
        let open = self.open.take();
        let commit_micros = i64::from(timestamp) * 1_000_000;
        let gtid = self.gtid_state();
        let mut committed = Committed {
            end: Some(BinlogCoordinates::new(self.file.clone(), end)),
            gtid: gtid.clone(),
            commit_micros,
            schemas: std::mem::take(&mut self.changed),
            ..Committed::default()
        };
        if let Some(mut tx) = open {
            let n = tx.events.len();
            for (i, ev) in tx.events.iter_mut().enumerate() {
                ev.position.gtid = gtid.clone();
                ev.commit_time_micros = commit_micros;
                ev.transaction.last = i + 1 == n;
            }
            committed.events = tx.events;
            committed.rejected = tx.rejected;
        }
        StreamItem::Transaction(committed)
    }

    fn open_tx(&mut self, at: &BinlogCoordinates) -> &mut OpenTx {
        self.open.get_or_insert_with(|| OpenTx {
            start: at.clone(),
            id: at.to_string(),
            events: Vec::new(),
            rejected: Vec::new(),
            standalone: false,
        })
    }

    async fn ddl(
        &mut self,
        default_db: &str,
        statement: &str,
        at: BinlogCoordinates,
        timestamp: u32,
    ) -> Result<(), SourceError> {
        // Every tenant database the statement may touch: the session's database and
        // any known tenant named in the statement.
        let mut databases: Vec<String> = Vec::new();
        if self.selection.tenant(default_db).is_some() {
            databases.push(default_db.to_owned());
        }
        for (db, _) in self.schemas.keys() {
            if !databases.contains(db) && statement.contains(db.as_str()) {
                databases.push(db.clone());
            }
        }
        let table = ddl_table(statement).unwrap_or_default();
        // Statements about excluded tables still refresh the tracker, but are not published.
        let publish = table.is_empty() || self.selection.tables.selects(&table);
        for db in databases {
            let Some(tenant) = self.selection.tenant(&db).map(str::to_owned) else {
                continue;
            };
            let fresh = schema::load_tables(&mut self.query_conn, &db).await?;
            let mut seen = Vec::new();
            for t in fresh {
                if !self.selection.tables.selects(&t.table) {
                    continue;
                }
                let key = (db.clone(), t.table.clone());
                seen.push(key.clone());
                if self.schemas.get(&key).is_some_and(|old| old.same_shape(&t)) {
                    continue;
                }
                self.changed.push(t.clone());
                self.schemas.insert(key, t);
            }
            // Dropped tables leave the tracker.
            self.schemas.retain(|k, _| k.0 != db || seen.contains(k));
            if !publish {
                continue;
            }
            let version = self
                .schemas
                .get(&(db.clone(), table.clone()))
                .map_or(0, |t| t.version);
            let tx = self.open_tx(&at);
            let index = tx.events.len() as u64;
            let id = tx.id.clone();
            tx.events.push(ChangeEvent {
                tenant,
                database: db.clone(),
                table: table.clone(),
                op: Operation::Ddl,
                key: Row::default(),
                before: None,
                after: None,
                ddl: Some(statement.to_owned()),
                schema_version: version,
                position: SourcePosition {
                    coordinates: at.clone(),
                    gtid: None,
                    phase: Phase::Stream,
                    index,
                },
                commit_time_micros: i64::from(timestamp) * 1_000_000,
                transaction: TransactionInfo {
                    id,
                    index: index as u32,
                    last: false,
                },
            });
        }
        Ok(())
    }

    /// The tracked schema of a table, loaded on first sight.
    async fn table_schema(&mut self, db: &str, table: &str) -> Result<Option<TableSchema>, SourceError> {
        let key = (db.to_owned(), table.to_owned());
        if let Some(t) = self.schemas.get(&key) {
            return Ok(Some(t.clone()));
        }
        for t in schema::load_tables(&mut self.query_conn, db).await? {
            let k = (t.database.clone(), t.table.clone());
            if self.selection.tables.selects(&t.table) && !self.schemas.contains_key(&k) {
                self.changed.push(t.clone());
                self.schemas.insert(k, t);
            }
        }
        Ok(self.schemas.get(&key).cloned())
    }

    /// Seeds the tracker with the schemas the snapshot used, so versions continue.
    pub fn seed_schemas(&mut self, schemas: impl IntoIterator<Item = TableSchema>) {
        for t in schemas {
            self.schemas.insert((t.database.clone(), t.table.clone()), t);
        }
    }

    async fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        at: BinlogCoordinates,
        timestamp: u32,
    ) -> Result<(), SourceError> {
        let Some(tme) = self.stream.get_tme(rows.table_id()).cloned() else {
            return Err(SourceError::Undecodable {
                position: at.to_string(),
                reason: format!("row event for unknown table id {}", rows.table_id()),
            });
        };
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let Some(tenant) = self.selection.tenant(&db).map(str::to_owned) else {
            return Ok(());
        };
        if !self.selection.tables.selects(&table) {
            return Ok(());
        }
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Operation::Insert,
            RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Operation::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Operation::Delete,
        };
        let mut schema = self.table_schema(&db, &table).await?;
        if schema.as_ref().is_some_and(|s| !matches_tme(s, &tme)) {
            // The table changed after our last load (or before a DDL we have not
            // reached): reload once, then decide.
            self.schemas.remove(&(db.clone(), table.clone()));
            schema = self.table_schema(&db, &table).await?;
        }
        let tx_id = self.open_tx(&at).id.clone();
        let schema = match schema {
            Some(s) if matches_tme(&s, &tme) => s,
            other => {
                let reason = match other {
                    None => "table not found in information_schema".to_owned(),
                    Some(s) => format!(
                        "binlog has {} columns{}, tracked schema version {} has {}",
                        tme.columns_count(),
                        tme_names(&tme)
                            .map(|n| format!(" ({})", n.join(", ")))
                            .unwrap_or_default(),
                        s.version,
                        s.columns.len()
                    ),
                };
                self.open_tx(&at)
                    .reject(db, table, at, format!("schema cannot be followed: {reason}"));
                return Ok(());
            }
        };
        let mut decoded = Vec::new();
        let mut failure = None;
        for row in rows.rows(&tme) {
            let (before, after) = match row {
                Ok(pair) => pair,
                Err(e) => {
                    failure = Some(format!("undecodable row image: {e}"));
                    break;
                }
            };
            let before = before.map(|r| decode_row(&schema, r)).transpose();
            let after = after.map(|r| decode_row(&schema, r)).transpose();
            match (before, after) {
                (Ok(b), Ok(a)) => decoded.push((b, a)),
                (Err(e), _) | (_, Err(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let tx = self.open_tx(&at);
        if let Some(reason) = failure {
            tx.reject(db, table, at, reason);
            return Ok(());
        }
        for (before, after) in decoded {
            let index = tx.events.len() as u64;
            let image = after.as_ref().or(before.as_ref());
            let key = image.map(|r| key_of(&schema, r)).unwrap_or_default();
            tx.events.push(ChangeEvent {
                tenant: tenant.clone(),
                database: db.clone(),
                table: table.clone(),
                op,
                key,
                before,
                after,
                ddl: None,
                schema_version: schema.version,
                position: SourcePosition {
                    coordinates: tx.start.clone(),
                    gtid: None,
                    phase: Phase::Stream,
                    index,
                },
                commit_time_micros: i64::from(timestamp) * 1_000_000,
                transaction: TransactionInfo {
                    id: tx_id.clone(),
                    index: index as u32,
                    last: false,
                },
            });
        }
        Ok(())
    }
}

fn tme_names(tme: &TableMapEvent<'_>) -> Option<Vec<String>> {
    let meta = mysql_async::binlog::events::OptionalMetaExtractor::new(tme.iter_optional_meta()).ok()?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .ok()?;
    (!names.is_empty()).then_some(names)
}

/// Whether the tracked schema describes the table-map event's columns.
fn matches_tme(schema: &TableSchema, tme: &TableMapEvent<'_>) -> bool {
    if schema.columns.len() as u64 != tme.columns_count() {
        return false;
    }
    match tme_names(tme) {
        Some(names) => names.iter().zip(&schema.columns).all(|(n, c)| *n == c.name),
        None => true,
    }
}

fn decode_row(
    schema: &TableSchema,
    row: mysql_async::binlog::row::BinlogRow,
) -> Result<Row, convert::ConvertError> {
    let mut row = row;
    let mut out = Vec::with_capacity(schema.columns.len());
    for (i, col) in schema.columns.iter().enumerate() {
        let value = match row.take(i) {
            Some(v) => convert::from_binlog(col, v)?,
            None => {
                return Err(convert::ConvertError {
                    column: col.name.clone(),
                    data_type: col.data_type.clone(),
                    reason: "missing from the row image (binlog_row_image is not FULL)".into(),
                })
            }
        };
        out.push((col.name.clone(), value));
    }
    Ok(Row(out))
}

/// The primary-key columns of a row; the whole row for a table without a key.
pub fn key_of(schema: &TableSchema, row: &Row) -> Row {
    if !schema.has_primary_key() {
        return Row::default();
    }
    Row(schema
        .primary_key
        .iter()
        .filter_map(|k| row.get(k).map(|v| (k.clone(), v.clone())))
        .collect())
}

fn format_uuid(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The table a DDL statement names (`ALTER TABLE [db.]t ...`), unquoted.
pub fn ddl_table(statement: &str) -> Option<String> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let at = upper.iter().position(|w| w == "TABLE")?;
    let mut i = at + 1;
    // Skip IF [NOT] EXISTS.
    while i < upper.len() && matches!(upper[i].as_str(), "IF" | "NOT" | "EXISTS") {
        i += 1;
    }
    let name = words.get(i)?;
    let name = name
        .split('(')
        .next()
        .unwrap_or(name)
        .trim_end_matches([',', ';']);
    let last = name.rsplit('.').next().unwrap_or(name);
    Some(last.trim_matches('`').replace("``", "`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_table_names() {
        assert_eq!(
            ddl_table("ALTER TABLE patients ADD COLUMN x INT").as_deref(),
            Some("patients")
        );
        assert_eq!(
            ddl_table("create table if not exists `a``b`(id int)").as_deref(),
            Some("a`b")
        );
        assert_eq!(ddl_table("DROP TABLE db1.t1").as_deref(), Some("t1"));
        assert_eq!(ddl_table("CREATE DATABASE x"), None);
    }

    #[test]
    fn uuids_print_in_mysql_form() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62,
        ];
        assert_eq!(format_uuid(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }
}
