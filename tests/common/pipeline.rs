//! Helpers for tests that run the source: a tenant database of the test's own,
//! the `cdc-bridge source` process, and a read-committed consumer that rebuilds
//! the tables from the change topic.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cdc_bridge::config::KafkaConfig;
use cdc_bridge::event::{ChangeEvent, Operation, Row, SourcePosition, Value};
use cdc_bridge::source::{convert, schema};
use cdc_bridge::transport::reader::{StartAt, TopicReader};
use mysql_async::prelude::Queryable;
use rdkafka::message::Message;

use super::{path_str, temp_config, unique, Stack};

/// One test's slice of the pipeline: its tenant databases, topic prefix and server name.
pub struct Pipeline {
    pub stack: Stack,
    pub databases: Vec<String>,
    pub prefix: String,
    pub server: String,
    pub config_dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
}

impl Pipeline {
    /// Creates `tenants` empty databases and a config selecting exactly them.
    pub async fn new(name: &str, tenants: usize, extra_source_config: &str) -> Pipeline {
        let stack = Stack::from_env();
        let base = unique(name);
        let databases: Vec<String> = (0..tenants).map(|i| format!("{base}_t{i}")).collect();
        let mut conn = mysql_async::Conn::new(stack.mysql_admin_opts())
            .await
            .expect("admin connection");
        for db in &databases {
            conn.query_drop(format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"))
                .await
                .expect("create tenant database");
        }
        drop(conn);
        let include = databases
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"
[source]
name = "{base}"
url = "{url}"
password = "${{CDC_BRIDGE_MYSQL_PASSWORD}}"
server_id = {server_id}
heartbeat_secs = 1
batch_max_wait_ms = 50
{extra_source_config}
[source.tenants]
include = [{include}]

[kafka]
bootstrap_servers = "{kafka}"
topic_prefix = "{base}"
partitions = 3

[metrics]
listen = ""
"#,
            url = stack.mysql_url(),
            kafka = stack.kafka_bootstrap,
            server_id = unique_server_id(),
        );
        let (config_dir, config_path) = temp_config(&text);
        Pipeline {
            stack,
            databases,
            prefix: base.clone(),
            server: base,
            config_dir,
            config_path,
        }
    }

    pub fn kafka(&self) -> KafkaConfig {
        kafka_config(&self.stack.kafka_bootstrap, &self.prefix)
    }

    pub async fn admin(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.stack.mysql_admin_opts())
            .await
            .expect("admin connection")
    }

    /// Starts `cdc-bridge source` for this pipeline.
    pub fn start_source(&self, extra_args: &[&str]) -> BridgeProcess {
        BridgeProcess::spawn(&self.config_path, &self.stack.mysql_password, extra_args)
    }

    /// Every table of every tenant database as `SELECT *` returns it.
    pub async fn select_all(&self) -> Tables {
        let mut out = Tables::new();
        for (t, rows) in self.select_rows().await {
            let table = out.entry((t.database.clone(), t.table.clone())).or_default();
            for r in rows {
                table.insert_row(r);
            }
        }
        out
    }

    /// Every table of every tenant database: its schema now and its rows as values.
    pub async fn select_rows(&self) -> Vec<(schema::TableSchema, Vec<Row>)> {
        let mut conn = self.admin().await;
        conn.query_drop("SET SESSION time_zone = '+00:00', SESSION character_set_results = NULL")
            .await
            .unwrap();
        let mut out = Vec::new();
        for db in &self.databases {
            for t in schema::load_tables(&mut conn, db).await.unwrap() {
                let cols = t
                    .columns
                    .iter()
                    .map(|c| schema::quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let rows: Vec<mysql_async::Row> = conn
                    .exec(format!("SELECT {cols} FROM `{db}`.`{}`", t.table), ())
                    .await
                    .unwrap();
                let rows = rows
                    .into_iter()
                    .map(|row| {
                        Row(t
                            .columns
                            .iter()
                            .zip(row.unwrap())
                            .map(|(c, v)| (c.name.clone(), convert::from_snapshot(c, v).unwrap()))
                            .collect())
                    })
                    .collect();
                out.push((t, rows));
            }
        }
        out
    }
}

/// Client settings for the topics under `prefix` on `bootstrap`.
pub fn kafka_config(bootstrap: &str, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        topic_prefix: prefix.to_owned(),
        connect_timeout_secs: 10,
        partitions: 3,
        properties: Default::default(),
    }
}

/// Waits until the change topic holds an event `pick` selects, and returns it.
pub async fn wait_for_event(
    kafka: &KafkaConfig,
    what: &str,
    timeout: Duration,
    pick: fn(&Read) -> bool,
) -> Read {
    super::wait_until(what, timeout, || {
        let kafka = kafka.clone();
        async move {
            tokio::task::spawn_blocking(move || read_topic(&kafka))
                .await
                .unwrap()
                .into_iter()
                .find(pick)
        }
    })
    .await
}

/// A replica server id no other running test uses (readers sharing one are
/// disconnected by the server).
pub fn unique_server_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    10_000 + (std::process::id() % 100_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// Rows per (database, table), as a multiset keyed by the row's JSON.
pub type Tables = BTreeMap<(String, String), TableRows>;

/// A multiset of rows (identical rows of a table without a key count twice).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableRows(pub BTreeMap<String, usize>);

impl TableRows {
    pub fn insert_row(&mut self, row: Row) {
        *self.0.entry(row_text(&row)).or_default() += 1;
    }

    pub fn len(&self) -> usize {
        self.0.values().sum()
    }
}

pub fn row_text(row: &Row) -> String {
    cdc_bridge::event::json::row_to_json(row).to_string()
}

/// A running `cdc-bridge source` or `sink`; killed (SIGKILL) on drop.
pub struct BridgeProcess {
    child: Option<Child>,
    pub log: std::path::PathBuf,
}

impl BridgeProcess {
    /// Starts `cdc-bridge source --config <config>` with the source password in
    /// `CDC_BRIDGE_MYSQL_PASSWORD`; its log goes to a file beside the config.
    pub fn spawn(config: &std::path::Path, password: &str, extra_args: &[&str]) -> BridgeProcess {
        Self::spawn_command(
            "source",
            config,
            &[
                ("CDC_BRIDGE_MYSQL_PASSWORD", password.to_owned()),
                ("CDC_BRIDGE_PG_PASSWORD", Stack::from_env().pg_password),
            ],
            extra_args,
        )
    }

    /// Starts `cdc-bridge <command> --config <config>` with `env`; its log goes
    /// to a file beside the config.
    pub fn spawn_command(
        command: &str,
        config: &std::path::Path,
        env: &[(&str, String)],
        extra_args: &[&str],
    ) -> BridgeProcess {
        let dir = config.parent().expect("config directory");
        let log = dir.join(format!("{command}-{}.log", unique("run")));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"))
            .args([command, "--config", path_str(config)])
            .args(extra_args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // CDC_BRIDGE_TEST_LOG raises the children's log level when debugging a test.
            .env(
                "CDC_BRIDGE_LOG",
                std::env::var("CDC_BRIDGE_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start cdc-bridge {command}: {e}"));
        BridgeProcess {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status (bounded).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself (bounded).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the source says it is streaming the binlog (its snapshot is done).
    pub async fn wait_streaming(&self, timeout: Duration) {
        let log = self.log.clone();
        super::wait_until("the source to start streaming", timeout, || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|t| t.contains("streaming the binlog"))
                    .map(|_| ())
            }
        })
        .await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A committed event with where it was read.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub event: ChangeEvent,
}

/// Reads every committed event of the change topic currently there.
pub fn read_topic(kafka: &KafkaConfig) -> Vec<Read> {
    read_raw(kafka, &kafka.changes_topic())
        .into_iter()
        .map(|(partition, offset, key, payload)| Read {
            partition,
            offset,
            key,
            event: ChangeEvent::decode(&payload).expect("every event decodes"),
        })
        .collect()
}

/// Every committed record of `topic` currently there: (partition, offset, key, payload).
pub fn read_raw(kafka: &KafkaConfig, topic: &str) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let reader = match TopicReader::open(kafka, topic, StartAt::Beginning) {
        Ok(r) => r,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    reader
        .read_to_end(Duration::from_secs(120), |msg| {
            out.push((
                msg.partition(),
                msg.offset(),
                msg.key().unwrap_or_default().to_vec(),
                msg.payload().unwrap_or_default().to_vec(),
            ))
        })
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"));
    out
}

/// Rebuilds the tables from events, as a sink with a position guard would:
/// per key, an event older than the one applied is ignored; deletes leave a
/// tombstone position. Tables without a key are rebuilt as multisets.
pub fn rebuild(reads: &[Read]) -> Tables {
    type Keyed = BTreeMap<String, (SourcePosition, Option<Row>)>;
    let mut keyed: BTreeMap<(String, String), Keyed> = BTreeMap::new();
    let mut keyless: Tables = Tables::new();
    for r in reads {
        let ev = &r.event;
        if matches!(ev.op, Operation::Ddl | Operation::Watermark) {
            continue;
        }
        let table = (ev.database.clone(), ev.table.clone());
        if ev.key.is_empty() {
            let rows = keyless.entry(table).or_default();
            if let Some(before) = &ev.before {
                let k = row_text(before);
                if let Some(n) = rows.0.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        rows.0.remove(&k);
                    }
                }
            }
            if let Some(after) = &ev.after {
                rows.insert_row(after.clone());
            }
            continue;
        }
        let rows = keyed.entry(table).or_default();
        // An update that changed the key removes the old key.
        if let (Some(before), Some(_)) = (&ev.before, &ev.after) {
            let old_key = Row(ev
                .key
                .0
                .iter()
                .map(|(k, _)| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
                .collect());
            if old_key != ev.key {
                let k = row_text(&old_key);
                let newer = rows.get(&k).is_some_and(|(p, _)| *p > ev.position);
                if !newer {
                    rows.insert(k, (ev.position.clone(), None));
                }
            }
        }
        let k = row_text(&ev.key);
        if rows.get(&k).is_some_and(|(p, _)| *p > ev.position) {
            continue;
        }
        let image = match ev.op {
            Operation::Delete => None,
            _ => ev.after.clone(),
        };
        rows.insert(k, (ev.position.clone(), image));
    }
    let mut out = keyless;
    for (table, rows) in keyed {
        let t = out.entry(table).or_default();
        for (_, (_, row)) in rows {
            if let Some(row) = row {
                t.insert_row(row);
            }
        }
    }
    out.retain(|_, rows| rows.len() > 0);
    out
}

/// Describes how two table sets differ (first few rows each way).
pub fn diff(expected: &Tables, actual: &Tables) -> String {
    let mut out = String::new();
    let tables: std::collections::BTreeSet<_> = expected.keys().chain(actual.keys()).collect();
    for t in tables {
        let empty = TableRows::default();
        let e = expected.get(t).unwrap_or(&empty);
        let a = actual.get(t).unwrap_or(&empty);
        if e == a {
            continue;
        }
        out.push_str(&format!(
            "table {}.{}: expected {} rows, got {}\n",
            t.0,
            t.1,
            e.len(),
            a.len()
        ));
        for (row, n) in &e.0 {
            if a.0.get(row) != Some(n) {
                out.push_str(&format!("  missing/different (x{n}): {}\n", truncate(row)));
            }
        }
        for (row, n) in &a.0 {
            if e.0.get(row) != Some(n) {
                out.push_str(&format!("  extra/different (x{n}): {}\n", truncate(row)));
            }
        }
    }
    out
}

fn truncate(s: &str) -> String {
    if s.len() > 400 {
        format!("{}… ({} bytes)", &s[..s.floor_char_boundary(400)], s.len())
    } else {
        s.to_owned()
    }
}

/// Waits until the tables rebuilt from the topic equal `SELECT *`, or panics with the difference.
pub async fn wait_converged(p: &Pipeline, timeout: Duration) -> Vec<Read> {
    wait_converged_on(p, &p.kafka(), timeout).await
}

/// [`wait_converged`] reading the change topic from another cluster.
pub async fn wait_converged_on(p: &Pipeline, kafka: &KafkaConfig, timeout: Duration) -> Vec<Read> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let expected = p.select_all().await;
        let kafka = kafka.clone();
        let reads = tokio::task::spawn_blocking(move || read_topic(&kafka))
            .await
            .unwrap();
        let actual = rebuild(&reads);
        let expected: Tables = expected.into_iter().filter(|(_, r)| r.len() > 0).collect();
        if expected == actual {
            return reads;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "the topic never converged to SELECT * within {timeout:?}:\n{}",
                diff(&expected, &actual)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
