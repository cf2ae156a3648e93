//! The one TOML configuration file: typed, strict, validated, secrets by reference.
//!
//! Every struct rejects unknown keys, and every error names the key path it is
//! about (`sink.targets[0].url: ...`), so a typo never silently falls back to a
//! default. Secrets are never literal: a secret field holds `${ENV_NAME}` or
//! `file:/path`, resolved at load time; resolved values print as `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use url::Url;

/// A problem with the configuration, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}", issues.join("; "))]
pub struct ConfigError {
    /// The file (or "<inline>") the configuration came from.
    pub origin: String,
    /// One entry per problem, each starting with its key path.
    pub issues: Vec<String>,
}

/// A secret given by reference: `${ENV_NAME}` or `file:/path/to/secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef {
    reference: String,
    resolved: Option<String>,
}

impl SecretRef {
    /// The resolved secret. Empty until the configuration was loaded through
    /// [`Config::from_toml_str`] or [`Config::load`], which resolve every secret.
    pub fn expose(&self) -> &str {
        self.resolved.as_deref().unwrap_or("")
    }

    /// The reference as written (safe to print).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    fn resolve(&mut self, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        self.resolved = Some(resolve_reference(&self.reference, path, env)?);
        Ok(())
    }
}

fn resolve_reference(
    reference: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        env(name).ok_or_else(|| format!("{path}: environment variable {name} is not set"))
    } else if let Some(file) = reference.strip_prefix("file:") {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{path}: cannot read secret file {file}: {e}"))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        Err(format!(
            "{path}: secrets are given as ${{ENV_NAME}} or file:/path, not as literal values"
        ))
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({} = <redacted>)", self.reference)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let reference = String::deserialize(d)?;
        Ok(SecretRef {
            reference,
            resolved: None,
        })
    }
}

/// What to do with an event that cannot be decoded, transformed or applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Write it to the dead-letter topic with the reason and keep going.
    #[default]
    DeadLetter,
    /// Stop with the position named, so a restart resumes there after a fix.
    Stop,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The v1 MySQL/MariaDB server to capture (needed by `source`, `snapshot`, `verify`).
    pub source: Option<SourceConfig>,
    pub kafka: KafkaConfig,
    /// Where change events are applied (needed by `sink`, `replay`, `verify`).
    pub sink: Option<SinkConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub cutover: CutoverConfig,
}

/// `cdc-bridge cutover`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverConfig {
    /// Seconds the tenant's lag must stay zero before verify runs.
    #[serde(default = "default_cutover_window_secs")]
    pub window_secs: u64,
    /// A shell command run after verify passes, to stop writes to the v1
    /// tenant (it gets CDC_BRIDGE_TENANT and CDC_BRIDGE_DATABASE); the final
    /// drain follows. Unset: no freeze.
    pub freeze_command: Option<String>,
    /// How long verify may wait for the sink, and the drain after the freeze.
    #[serde(default = "default_cutover_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
    /// Where the JSON and text reports go.
    #[serde(default = "default_cutover_report_dir")]
    pub report_dir: String,
}

impl Default for CutoverConfig {
    fn default() -> Self {
        CutoverConfig {
            window_secs: default_cutover_window_secs(),
            freeze_command: None,
            drain_timeout_secs: default_cutover_drain_timeout_secs(),
            report_dir: default_cutover_report_dir(),
        }
    }
}

fn default_cutover_window_secs() -> u64 {
    30
}

fn default_cutover_drain_timeout_secs() -> u64 {
    300
}

fn default_cutover_report_dir() -> String {
    "cutover-reports".to_owned()
}

/// The v1 server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Names the server; the key of its position on the offsets topic.
    pub name: String,
    /// `mysql://user@host:port`, without a password.
    pub url: String,
    pub password: SecretRef,
    /// Server id this reader announces to the server when reading the binlog;
    /// unique among the server's replicas.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    pub tenants: TenantSelection,
    #[serde(default)]
    pub tables: TableSelection,
    #[serde(default)]
    pub on_error: OnError,
    /// Rows per snapshot chunk (one Kafka transaction each, and the resume granularity).
    #[serde(default = "default_snapshot_chunk_rows")]
    pub snapshot_chunk_rows: usize,
    /// A streaming batch is committed at this many events...
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// ...or this many bytes of row data...
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ...or this long after its first transaction, whichever comes first.
    /// Transactions are never split across batches.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Heartbeat period asked of the server, so an idle server still advances the position.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// After SIGTERM/SIGINT, how long the in-flight batch may take to commit
    /// before it is abandoned (rolled back, read again on the next start).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// How streaming resumes: `position` (binlog file and offset: exact on the same
    /// server) or `gtid` (the GTID position: also after a failover to a replica;
    /// MariaDB only for now).
    #[serde(default)]
    pub resume_by: ResumeBy,
}

/// See [`SourceConfig::resume_by`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeBy {
    #[default]
    Position,
    Gtid,
}

fn default_snapshot_chunk_rows() -> usize {
    5_000
}

fn default_batch_max_events() -> usize {
    5_000
}

fn default_batch_max_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_batch_max_wait_ms() -> u64 {
    100
}

fn default_heartbeat_secs() -> u64 {
    5
}

fn default_server_id() -> u32 {
    5401
}

fn default_connect_timeout_secs() -> u64 {
    10
}

/// Which databases are tenants, and the v2 tenant id of each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSelection {
    /// Database names or SQL LIKE patterns (`customer_%`).
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Database → v2 tenant id; a database not listed uses its own name.
    #[serde(default)]
    pub ids: BTreeMap<String, String>,
}

impl TenantSelection {
    pub fn selects(&self, database: &str) -> bool {
        self.include.iter().any(|p| like_match(p, database))
            && !self.exclude.iter().any(|p| like_match(p, database))
    }

    pub fn tenant_id<'a>(&'a self, database: &'a str) -> &'a str {
        self.ids.get(database).map_or(database, String::as_str)
    }
}

/// Which tables of each tenant database are captured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSelection {
    /// Table names or SQL LIKE patterns.
    #[serde(default = "match_all")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Default for TableSelection {
    fn default() -> Self {
        TableSelection {
            include: match_all(),
            exclude: Vec::new(),
        }
    }
}

impl TableSelection {
    pub fn selects(&self, table: &str) -> bool {
        self.include.iter().any(|p| like_match(p, table))
            && !self.exclude.iter().any(|p| like_match(p, table))
    }
}

fn match_all() -> Vec<String> {
    vec!["%".to_owned()]
}

/// SQL LIKE matching (`%` any run, `_` one character, `\` escapes), case-sensitive
/// as database names are on Linux servers.
pub fn like_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `%`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => {
                pi += 2;
                ti += 1;
                continue;
            }
            Some('_') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some(&c) if c != '\\' && c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

/// The Kafka cluster and the topics under one prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`
    pub bootstrap_servers: String,
    /// Topics are `<prefix>.changes`, `<prefix>.schema`, `<prefix>.offsets`, `<prefix>.dlq`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Partitions of the change topic when the source creates it. Tenants spread
    /// over partitions (key = tenant); sink replicas beyond this number stay idle.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.mechanism`, ...).
    /// A value may be a `${ENV}` or `file:` reference, which is resolved.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_partitions() -> i32 {
    3
}

fn default_topic_prefix() -> String {
    "cdc".to_owned()
}

impl KafkaConfig {
    pub fn changes_topic(&self) -> String {
        format!("{}.changes", self.topic_prefix)
    }
    pub fn schema_topic(&self) -> String {
        format!("{}.schema", self.topic_prefix)
    }
    pub fn offsets_topic(&self) -> String {
        format!("{}.offsets", self.topic_prefix)
    }
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic_prefix)
    }
    /// Requests to running sources (re-snapshots), keyed by source name.
    pub fn signals_topic(&self) -> String {
        format!("{}.signals", self.topic_prefix)
    }
}

/// The sink: consumer group and targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Kafka consumer group; every sink process of one target uses the same one.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// The v2 databases; a sink process writes to one (`--target NAME` when there are several).
    pub targets: Vec<TargetConfig>,
    /// An event that cannot be decoded or applied: `dead_letter` (record it on
    /// `<prefix>.dlq` and go on) or `stop` (halt with its position named).
    #[serde(default)]
    pub on_error: OnError,
    /// `mirror`: each v1 table lands in a same-named table of a per-tenant schema;
    /// `mapping`: v1 rows become v2 rows as the `mapping` file says.
    #[serde(default)]
    pub mode: SinkMode,
    /// The mapping file (mode `mapping`), relative to the working directory.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Schema name of a tenant's mirrored tables: this prefix + the v1 database name.
    #[serde(default)]
    pub mirror_schema_prefix: String,
    /// A batch (one target transaction) closes at this many events...
    #[serde(default = "default_sink_batch_max_events")]
    pub batch_max_events: usize,
    /// ...or this many bytes of messages...
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ...or this long after its first event, at the next v1 transaction boundary.
    #[serde(default = "default_sink_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// A v1 transaction larger than this many events is applied in several
    /// consecutive target transactions, in order; smaller ones are never split.
    #[serde(default = "default_max_transaction_events")]
    pub max_transaction_events: usize,
    /// First retry delay after a retriable failure (doubles, with jitter)...
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// ...up to this delay between attempts.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Attempts before a retriable failure stops the sink; 0 retries forever.
    #[serde(default)]
    pub retry_max_attempts: u32,
    /// After SIGTERM/SIGINT, how long the in-flight batch may take to commit
    /// before it is abandoned (rolled back, read again on the next start).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Documents deferred during a snapshot rendered per batch at most (the
    /// rest by the next batches), so the batch after a large snapshot stays
    /// bounded in time and memory.
    #[serde(default = "default_deferred_documents_per_batch")]
    pub deferred_documents_per_batch: usize,
}

pub fn default_shutdown_timeout_secs() -> u64 {
    30
}

fn default_deferred_documents_per_batch() -> usize {
    2_000
}

/// How change events become v2 rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// v1 tables copied as they are into one target schema per tenant.
    #[default]
    Mirror,
    /// v1 rows turned into v2 rows by a declarative mapping file.
    Mapping,
}

fn default_sink_batch_max_events() -> usize {
    10_000
}

fn default_sink_batch_max_wait_ms() -> u64 {
    200
}

fn default_max_transaction_events() -> usize {
    100_000
}

fn default_retry_initial_ms() -> u64 {
    200
}

fn default_retry_max_ms() -> u64 {
    30_000
}

impl SinkConfig {
    /// The target named `name`, or the only one when `name` is `None`.
    pub fn target(&self, name: Option<&str>) -> Result<&TargetConfig, String> {
        match name {
            Some(name) => self.targets.iter().find(|t| t.name == name).ok_or_else(|| {
                let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
                format!(
                    "sink.targets: no target named {name:?} (there are: {})",
                    names.join(", ")
                )
            }),
            None => match self.targets.as_slice() {
                [only] => Ok(only),
                _ => Err(format!(
                    "sink.targets: {} targets are configured; choose one with --target NAME",
                    self.targets.len()
                )),
            },
        }
    }
}

fn default_group_id() -> String {
    "cdc-bridge-sink".to_owned()
}

/// The database kinds a sink can write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Postgres,
    SqlServer,
}

/// One v2 database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
    /// `postgres://user@host:port/db` or `sqlserver://user@host:port/db`, without a password.
    pub url: String,
    pub password: SecretRef,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
}

/// The Prometheus endpoint with `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`; empty disables the endpoint.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

/// Which sections' secrets a command needs resolved. A secret of another
/// section that is unavailable here (its variable unset, its file absent) is
/// left unresolved, so a source process needs no target password and a sink
/// no MySQL password; a malformed reference is refused everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    pub source: bool,
    pub sink: bool,
}

impl Uses {
    pub const ALL: Uses = Uses {
        source: true,
        sink: true,
    };
    pub const SOURCE: Uses = Uses {
        source: true,
        sink: false,
    };
    pub const SINK: Uses = Uses {
        source: false,
        sink: true,
    };
}

/// Keeps a secret-resolution error unless the secret is of an unused section
/// and merely unavailable in this process.
fn secret_issue(used: bool, error: String) -> Option<String> {
    let unavailable = error.contains(" is not set") || error.contains("cannot read secret file");
    (used || !unavailable).then_some(error)
}

impl Config {
    /// Reads, parses, validates and resolves the file at `path` with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Uses::ALL)
    }

    /// [`Config::load`] requiring only the secrets of the sections `uses` names.
    pub fn load_for(path: &Path, uses: Uses) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            issues: vec![format!("cannot read the configuration file: {e}")],
        })?;
        Config::from_toml_str_for(&text, &origin, &|name| std::env::var(name).ok(), uses)
    }

    /// Parses and validates `text`; `env` looks up environment variables for `${ENV}` secrets.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::from_toml_str_for(text, origin, env, Uses::ALL)
    }

    /// [`Config::from_toml_str`] requiring only the secrets of the sections `uses` names.
    pub fn from_toml_str_for(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
        uses: Uses,
    ) -> Result<Config, ConfigError> {
        let fail = |issues: Vec<String>| ConfigError {
            origin: origin.to_owned(),
            issues,
        };
        let mut config: Config = parse_toml(text, origin)?;
        let issues = config.validate_and_resolve(env, uses);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(fail(issues))
        }
    }

    fn validate_and_resolve(&mut self, env: &dyn Fn(&str) -> Option<String>, uses: Uses) -> Vec<String> {
        let mut issues = Vec::new();
        if let Some(source) = &mut self.source {
            if source.name.trim().is_empty() {
                issues.push("source.name: must not be empty".to_owned());
            }
            if let Err(e) = parse_server_url("source.url", &source.url, &["mysql", "mariadb"]) {
                issues.push(e);
            }
            if let Err(e) = source.password.resolve("source.password", env) {
                issues.extend(secret_issue(uses.source, e));
            }
            if source.server_id == 0 {
                issues.push("source.server_id: must be non-zero".to_owned());
            }
            if source.tenants.include.is_empty() {
                issues.push("source.tenants.include: name at least one database or pattern".to_owned());
            }
            if source.connect_timeout_secs == 0 {
                issues.push("source.connect_timeout_secs: must be at least 1".to_owned());
            }
            for (key, value) in [
                ("snapshot_chunk_rows", source.snapshot_chunk_rows as u64),
                ("batch_max_events", source.batch_max_events as u64),
                ("batch_max_bytes", source.batch_max_bytes as u64),
                ("batch_max_wait_ms", source.batch_max_wait_ms),
                ("heartbeat_secs", source.heartbeat_secs),
            ] {
                if value == 0 {
                    issues.push(format!("source.{key}: must be at least 1"));
                }
            }
        }
        let kafka = &mut self.kafka;
        if kafka.partitions < 1 {
            issues.push("kafka.partitions: must be at least 1".to_owned());
        }
        if let Err(e) = validate_bootstrap("kafka.bootstrap_servers", &kafka.bootstrap_servers) {
            issues.push(e);
        }
        if kafka.topic_prefix.is_empty()
            || !kafka
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            issues.push(format!(
                "kafka.topic_prefix: {:?} is not a valid topic name prefix (letters, digits, '.', '_', '-')",
                kafka.topic_prefix
            ));
        }
        for (key, value) in kafka.properties.iter_mut() {
            if value.starts_with("${") || value.starts_with("file:") {
                match resolve_reference(value, &format!("kafka.properties.{key:?}"), env) {
                    Ok(v) => *value = v,
                    Err(e) => issues.push(e),
                }
            } else if key.contains("password") || key.contains("secret") {
                issues.push(format!(
                    "kafka.properties.{key:?}: secrets are given as ${{ENV_NAME}} or file:/path, not as literal values"
                ));
            }
        }
        if let Some(sink) = &mut self.sink {
            if sink.targets.is_empty() {
                issues.push("sink.targets: name at least one target".to_owned());
            }
            for (key, value) in [
                ("batch_max_events", sink.batch_max_events as u64),
                ("batch_max_bytes", sink.batch_max_bytes as u64),
                ("batch_max_wait_ms", sink.batch_max_wait_ms),
                ("max_transaction_events", sink.max_transaction_events as u64),
                (
                    "deferred_documents_per_batch",
                    sink.deferred_documents_per_batch as u64,
                ),
                ("retry_initial_ms", sink.retry_initial_ms),
                ("retry_max_ms", sink.retry_max_ms),
            ] {
                if value == 0 {
                    issues.push(format!("sink.{key}: must be at least 1"));
                }
            }
            if !sink
                .mirror_schema_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                issues.push(format!(
                    "sink.mirror_schema_prefix: {:?} may hold only letters, digits and '_'",
                    sink.mirror_schema_prefix
                ));
            }
            match (sink.mode, &sink.mapping) {
                (SinkMode::Mapping, None) => {
                    issues.push("sink.mapping: mode \"mapping\" needs a mapping file".to_owned())
                }
                (SinkMode::Mirror, Some(_)) => issues
                    .push("sink.mapping: a mapping file is used only with mode = \"mapping\"".to_owned()),
                _ => {}
            }
            let mut names = std::collections::BTreeSet::new();
            for target in &sink.targets {
                if !names.insert(target.name.as_str()) {
                    issues.push(format!("sink.targets: the name {:?} is used twice", target.name));
                }
            }
            for (i, target) in sink.targets.iter_mut().enumerate() {
                let schemes: &[&str] = match target.kind {
                    TargetKind::Postgres => &["postgres", "postgresql"],
                    TargetKind::SqlServer => &["sqlserver", "mssql"],
                };
                if let Err(e) = parse_server_url(&format!("sink.targets[{i}].url"), &target.url, schemes) {
                    issues.push(e);
                }
                if let Err(e) = target
                    .password
                    .resolve(&format!("sink.targets[{i}].password"), env)
                {
                    issues.extend(secret_issue(uses.sink, e));
                }
            }
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            issues.push(format!(
                "metrics.listen: {:?} is not an address like 127.0.0.1:9464",
                self.metrics.listen
            ));
        }
        issues
    }
}

/// Parses a server URL, requiring one of `schemes`, a host, and no inline password.
pub fn parse_server_url(path: &str, text: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{path}: {text:?} is not a valid URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "{path}: scheme {:?} is not one of {}",
            url.scheme(),
            schemes.join(", ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{path}: the URL names no host"));
    }
    if url.password().is_some() {
        return Err(format!(
            "{path}: the URL contains a password; give it in the password key as ${{ENV_NAME}} or file:/path"
        ));
    }
    if url.username().is_empty() {
        return Err(format!("{path}: the URL names no user (scheme://user@host:port)"));
    }
    Ok(url)
}

fn validate_bootstrap(path: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{path}: must name at least one host:port"));
    }
    for server in text.split(',').map(str::trim) {
        let ok = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("{path}: {server:?} is not host:port"));
        }
    }
    Ok(())
}

/// Parses TOML into `T`, every error naming its key path and line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let fail = |issues: Vec<String>| ConfigError {
        origin: origin.to_owned(),
        issues,
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| fail(vec![one_line(&e)]))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let line = inner
            .span()
            .map(|span| {
                format!(
                    " (line {})",
                    text[..span.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        let message = one_line(&inner.message());
        if path == "." || path.is_empty() {
            fail(vec![format!("{message}{line}")])
        } else {
            fail(vec![format!("{path}{line}: {message}")])
        }
    })
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like_match("customer_%", "customer_alpha"));
        assert!(like_match("customer_%", "customer_"));
        assert!(!like_match("customer_%", "customer"));
        assert!(like_match("%", ""));
        assert!(like_match("a%b%c", "aXXbYYc"));
        assert!(!like_match("a%b%c", "aXXbYY"));
        assert!(like_match("t\\_1", "t_1"));
        assert!(!like_match("t\\_1", "tx1"));
        assert!(like_match("c_stomer", "customer"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let mut s = SecretRef {
            reference: "${X}".into(),
            resolved: None,
        };
        s.resolve("k", &|_| Some("hunter2".into())).unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
