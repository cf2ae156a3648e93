//! `cdc-bridge check`: connect to every configured server and compare the
//! settings the pipeline relies on with what the server actually has.
//!
//! Each finding names the server, the setting, the expected and the actual value.
//! Every connection is bounded by the configured timeout, so an unreachable
//! server makes the check fail in bounded time, never hang.

use std::fmt;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::config::{parse_server_url, Config, KafkaConfig, SourceConfig, TargetConfig, TargetKind};
use crate::transport;

/// How one finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but not as recommended.
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub server: String,
    pub setting: String,
    pub expected: String,
    pub actual: String,
    pub verdict: Verdict,
}

/// Everything `check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(
        &mut self,
        server: &str,
        setting: &str,
        expected: &str,
        actual: impl Into<String>,
        verdict: Verdict,
    ) {
        self.findings.push(Finding {
            server: server.to_owned(),
            setting: setting.to_owned(),
            expected: expected.to_owned(),
            actual: actual.into(),
            verdict,
        });
    }

    fn expect_eq(&mut self, server: &str, setting: &str, expected: &str, actual: Option<&str>) {
        let actual_text = actual.unwrap_or("(not set)");
        let verdict = if actual.is_some_and(|a| a.eq_ignore_ascii_case(expected)) {
            Verdict::Ok
        } else {
            Verdict::Fail
        };
        self.add(server, setting, expected, actual_text, verdict);
    }

    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.verdict != Verdict::Fail)
    }

    /// The report as an aligned table.
    pub fn to_table(&self) -> String {
        let header = Finding {
            server: "SERVER".into(),
            setting: "CHECK".into(),
            expected: "EXPECTED".into(),
            actual: "ACTUAL".into(),
            verdict: Verdict::Ok,
        };
        let rows: Vec<&Finding> = std::iter::once(&header).chain(&self.findings).collect();
        let w = |f: fn(&Finding) -> usize| rows.iter().map(|r| f(r)).max().unwrap_or(0);
        let (ws, wc, we, wa) = (
            w(|r| r.server.chars().count()),
            w(|r| r.setting.chars().count()),
            w(|r| r.expected.chars().count()),
            w(|r| r.actual.chars().count()),
        );
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            let verdict = if i == 0 {
                "RESULT".to_owned()
            } else {
                r.verdict.to_string()
            };
            out.push_str(&format!(
                "{:ws$}  {:wc$}  {:we$}  {:wa$}  {}\n",
                r.server, r.setting, r.expected, r.actual, verdict
            ));
        }
        let failed = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .count();
        out.push_str(&if failed == 0 {
            "check passed\n".to_owned()
        } else {
            format!("check FAILED: {failed} finding(s) off\n")
        });
        out
    }
}

/// Checks every server the configuration names.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    if let Some(source) = &config.source {
        check_source(source, &mut report).await;
    }
    check_kafka(&config.kafka, &mut report).await;
    if let Some(sink) = &config.sink {
        for target in &sink.targets {
            check_target(target, &mut report).await;
        }
    }
    report
}

fn host_port(url: &url::Url, default_port: u16) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(default_port)
    )
}

/// Checks the source server alone (also the source's own start-up check).
pub async fn check_source(source: &SourceConfig, report: &mut Report) {
    let url = match parse_server_url("source.url", &source.url, &["mysql", "mariadb"]) {
        Ok(url) => url,
        Err(e) => {
            report.add("source", "url", "valid URL", e, Verdict::Fail);
            return;
        }
    };
    let server = format!("source {} ({})", source.name, host_port(&url, 3306));
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(url.host_str().unwrap_or_default())
        .tcp_port(url.port().unwrap_or(3306))
        .user(Some(url.username()))
        .pass(Some(source.password.expose()))
        .prefer_socket(false);
    let timeout = Duration::from_secs(source.connect_timeout_secs);
    let conn = tokio::time::timeout(timeout, mysql_async::Conn::new(opts)).await;
    let mut conn = match conn {
        Err(_) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("no: timed out after {}s", timeout.as_secs()),
                Verdict::Fail,
            );
            return;
        }
        Ok(Err(e)) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("no: {}", describe_mysql_error(&e)),
                Verdict::Fail,
            );
            return;
        }
        Ok(Ok(conn)) => conn,
    };
    match tokio::time::timeout(timeout, inspect_source(&mut conn, &server, source, report)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.add(
            &server,
            "inspect",
            "queries succeed",
            describe_mysql_error(&e),
            Verdict::Fail,
        ),
        Err(_) => report.add(&server, "inspect", "answers in time", "timed out", Verdict::Fail),
    }
    let _ = tokio::time::timeout(timeout, conn.disconnect()).await;
}

fn describe_mysql_error(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("server error {} ({}): {}", s.code, s.state, s.message),
        other => other.to_string(),
    }
}

async fn inspect_source(
    conn: &mut mysql_async::Conn,
    server: &str,
    source: &SourceConfig,
    report: &mut Report,
) -> Result<(), mysql_async::Error> {
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    let version = version.unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    report.add(server, "reachable", "yes", format!("yes, {version}"), Verdict::Ok);

    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'server_id', 'gtid_mode', \
             'enforce_gtid_consistency', 'gtid_strict_mode', 'gtid_binlog_pos', \
             'binlog_expire_logs_seconds', 'expire_logs_days')",
        )
        .await?;
    let var = |name: &str| rows.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());

    report.expect_eq(server, "log_bin", "ON", var("log_bin"));
    report.expect_eq(server, "binlog_format", "ROW", var("binlog_format"));
    report.expect_eq(server, "binlog_row_image", "FULL", var("binlog_row_image"));
    match var("binlog_row_metadata") {
        Some(v) if v.eq_ignore_ascii_case("FULL") => {
            report.add(server, "binlog_row_metadata", "FULL", v, Verdict::Ok)
        }
        // Without it the tracked schema names the columns; it works but is weaker.
        Some(v) => report.add(server, "binlog_row_metadata", "FULL", v, Verdict::Warn),
        None => report.add(
            server,
            "binlog_row_metadata",
            "FULL",
            "(not supported by server)",
            Verdict::Warn,
        ),
    }
    let server_id = var("server_id").unwrap_or("0");
    report.add(
        server,
        "server_id",
        "non-zero",
        server_id,
        if server_id != "0" {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
    );
    if mariadb {
        // MariaDB always writes GTIDs; strict mode keeps them monotonic per domain.
        let strict = var("gtid_strict_mode");
        report.add(
            server,
            "gtid_strict_mode",
            "ON",
            strict.unwrap_or("(not set)"),
            if strict.is_some_and(|v| v.eq_ignore_ascii_case("ON")) {
                Verdict::Ok
            } else {
                Verdict::Warn
            },
        );
    } else {
        report.expect_eq(server, "gtid_mode", "ON", var("gtid_mode"));
        report.expect_eq(
            server,
            "enforce_gtid_consistency",
            "ON",
            var("enforce_gtid_consistency"),
        );
    }
    if source.server_id.to_string() == server_id {
        report.add(
            server,
            "source.server_id",
            &format!("differs from the server's own id {server_id}"),
            source.server_id.to_string(),
            Verdict::Fail,
        );
    }

    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let privileges = global_privileges(&grants);
    let has = |p: &str| privileges.iter().any(|g| g == p || g == "ALL PRIVILEGES");
    for (required, aliases) in [
        ("REPLICATION SLAVE", &["REPLICATION SLAVE"][..]),
        (
            "REPLICATION CLIENT",
            &["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"][..],
        ),
        ("SELECT", &["SELECT"][..]),
    ] {
        let granted = aliases.iter().any(|a| has(a));
        report.add(
            server,
            &format!("privilege {required}"),
            "granted ON *.*",
            if granted { "granted" } else { "missing" },
            if granted { Verdict::Ok } else { Verdict::Fail },
        );
    }

    let databases: Vec<String> = conn.query("SHOW DATABASES").await?;
    let tenants = databases.iter().filter(|d| source.tenants.selects(d)).count();
    report.add(
        server,
        "tenant databases",
        "at least one matches",
        tenants.to_string(),
        if tenants > 0 { Verdict::Ok } else { Verdict::Warn },
    );
    Ok(())
}

/// The privileges granted on `*.*` by `SHOW GRANTS` lines.
pub fn global_privileges(grants: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in grants {
        let Some(rest) = line.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, target)) = rest.split_once(" ON ") else {
            continue;
        };
        if !target.trim_start().starts_with("*.*") {
            continue;
        }
        out.extend(privs.split(',').map(|p| p.trim().to_ascii_uppercase()));
    }
    out
}

async fn check_kafka(kafka: &KafkaConfig, report: &mut Report) {
    let server = format!("kafka ({})", kafka.bootstrap_servers);
    let timeout = Duration::from_secs(kafka.connect_timeout_secs);
    match transport::cluster_info(kafka, timeout).await {
        Ok(info) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("yes, {} broker(s)", info.brokers.len()),
                Verdict::Ok,
            );
            for topic in [
                kafka.changes_topic(),
                kafka.schema_topic(),
                kafka.offsets_topic(),
                kafka.dead_letter_topic(),
            ] {
                let present = info.topics.contains(&topic);
                report.add(
                    &server,
                    &format!("topic {topic}"),
                    "exists (created by the source otherwise)",
                    if present { "exists" } else { "absent" },
                    if present { Verdict::Ok } else { Verdict::Warn },
                );
            }
        }
        Err(e) => report.add(&server, "reachable", "yes", format!("no: {e}"), Verdict::Fail),
    }
}

async fn check_target(target: &TargetConfig, report: &mut Report) {
    match target.kind {
        TargetKind::Postgres => check_postgres(target, report).await,
        TargetKind::SqlServer => {
            use crate::sink::target::Target;
            let server = format!("target {} (sqlserver)", target.name);
            match crate::sink::sqlserver::SqlServerTarget::connect(target).await {
                Ok(mut t) => {
                    report.add(&server, "reachable", "yes", "yes", Verdict::Ok);
                    match t.prepare().await {
                        Ok(()) => report.add(
                            &server,
                            "bookkeeping schema cdc_bridge",
                            "creatable",
                            "present",
                            Verdict::Ok,
                        ),
                        Err(e) => report.add(
                            &server,
                            "bookkeeping schema cdc_bridge",
                            "creatable",
                            format!("no: {e}"),
                            Verdict::Fail,
                        ),
                    }
                }
                Err(e) => report.add(&server, "reachable", "yes", format!("no: {e}"), Verdict::Fail),
            }
        }
    }
}

async fn check_postgres(target: &TargetConfig, report: &mut Report) {
    let path = "sink.targets[].url";
    let url = match parse_server_url(path, &target.url, &["postgres", "postgresql"]) {
        Ok(url) => url,
        Err(e) => {
            report.add(
                &format!("target {}", target.name),
                "url",
                "valid URL",
                e,
                Verdict::Fail,
            );
            return;
        }
    };
    let server = format!("target {} (postgres {})", target.name, host_port(&url, 5432));
    let timeout = Duration::from_secs(target.connect_timeout_secs);
    let mut cfg: tokio_postgres::Config = match target.url.parse() {
        Ok(cfg) => cfg,
        Err(e) => {
            report.add(&server, "url", "valid URL", e.to_string(), Verdict::Fail);
            return;
        }
    };
    cfg.password(target.password.expose())
        .connect_timeout(timeout)
        .application_name("cdc-bridge-check");
    let connected = tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls)).await;
    let (client, connection) = match connected {
        Err(_) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("no: timed out after {}s", timeout.as_secs()),
                Verdict::Fail,
            );
            return;
        }
        Ok(Err(e)) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("no: {}", describe_pg_error(&e)),
                Verdict::Fail,
            );
            return;
        }
        Ok(Ok(pair)) => pair,
    };
    let driver = tokio::spawn(connection);
    let queries = async {
        let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        let can_create: bool = client
            .query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[])
            .await?
            .get(0);
        Ok::<_, tokio_postgres::Error>((version, can_create))
    };
    match tokio::time::timeout(timeout, queries).await {
        Ok(Ok((version, can_create))) => {
            report.add(
                &server,
                "reachable",
                "yes",
                format!("yes, PostgreSQL {version}"),
                Verdict::Ok,
            );
            report.add(
                &server,
                "privilege CREATE on database",
                "granted",
                if can_create { "granted" } else { "missing" },
                if can_create { Verdict::Ok } else { Verdict::Fail },
            );
        }
        Ok(Err(e)) => report.add(
            &server,
            "inspect",
            "queries succeed",
            describe_pg_error(&e),
            Verdict::Fail,
        ),
        Err(_) => report.add(&server, "inspect", "answers in time", "timed out", Verdict::Fail),
    }
    drop(client);
    driver.abort();
}

fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_global_privileges_from_show_grants() {
        let grants = vec![
            "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc_reader`@`%` IDENTIFIED BY PASSWORD '*X'".to_owned(),
            "GRANT ALL PRIVILEGES ON `customer_a`.* TO `cdc_reader`@`%`".to_owned(),
        ];
        assert_eq!(
            global_privileges(&grants),
            ["SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"]
        );
    }

    #[test]
    fn report_fails_on_any_failed_finding() {
        let mut r = Report::default();
        r.expect_eq("s", "binlog_format", "ROW", Some("row"));
        assert!(r.passed());
        r.expect_eq("s", "binlog_format", "ROW", Some("STATEMENT"));
        assert!(!r.passed());
        let table = r.to_table();
        assert!(table.contains("STATEMENT") && table.contains("FAIL"), "{table}");
    }
}
