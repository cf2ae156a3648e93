//! `cdc-bridge check` against real servers: the local stack passes; a MariaDB
//! with statement-based binlogs, a closed port and a wrong password fail with a
//! line naming the server, in bounded time.

mod common;

use std::time::{Duration, Instant};

use common::{cdc_bridge, free_port, path_str, temp_config, Stack, ThrowawayMariaDb};

fn config(mysql_url: &str, kafka: &str, pg_url: &str) -> String {
    format!(
        r#"
[source]
name = "v1"
url = "{mysql_url}"
password = "${{CHECK_MYSQL_PW}}"
connect_timeout_secs = 5
[source.tenants]
include = ["%"]

[kafka]
bootstrap_servers = "{kafka}"
connect_timeout_secs = 5

[sink]
[[sink.targets]]
name = "v2"
kind = "postgres"
url = "{pg_url}"
password = "${{CHECK_PG_PW}}"
connect_timeout_secs = 5
"#
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run_check(text: &str, mysql_pw: &str, pg_pw: &str) -> Run {
    let (_dir, path) = temp_config(text);
    let start = Instant::now();
    let out = cdc_bridge(
        &["check", "--config", path_str(&path)],
        &[
            ("CHECK_MYSQL_PW", mysql_pw.to_owned()),
            ("CHECK_PG_PW", pg_pw.to_owned()),
        ],
    );
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// The report line about `server` and `setting`, if any.
fn line<'a>(run: &'a Run, server: &str, setting: &str) -> Option<&'a str> {
    run.stdout
        .lines()
        .find(|l| l.starts_with(server) && l.contains(setting))
}

#[test]
fn check_passes_against_the_local_stack() {
    let s = Stack::from_env();
    let run = run_check(
        &config(&s.mysql_url(), &s.kafka_bootstrap, &s.pg_url()),
        &s.mysql_password,
        &s.pg_password,
    );
    assert_eq!(run.code, Some(0), "check failed:\n{}\n{}", run.stdout, run.stderr);
    for (server, setting) in [
        ("source v1", "binlog_format"),
        ("source v1", "binlog_row_image"),
        ("source v1", "privilege REPLICATION SLAVE"),
        ("kafka", "reachable"),
        ("target v2", "reachable"),
    ] {
        let l = line(&run, server, setting)
            .unwrap_or_else(|| panic!("no {server} {setting} line:\n{}", run.stdout));
        assert!(l.trim_end().ends_with("ok"), "not ok: {l}");
    }
}

#[tokio::test]
async fn check_fails_on_statement_binlog_format_with_expected_and_actual() {
    let db = ThrowawayMariaDb::start(&["--binlog-format=STATEMENT"]).await;
    let s = Stack::from_env();
    let url = format!("mysql://{}@127.0.0.1:{}", db.user, db.port);
    let password = db.password.clone();
    let text = config(&url, &s.kafka_bootstrap, &s.pg_url());
    let pg_password = s.pg_password.clone();
    let run = tokio::task::spawn_blocking(move || run_check(&text, &password, &pg_password))
        .await
        .unwrap();
    assert_eq!(run.code, Some(1), "check must fail:\n{}", run.stdout);
    let l = line(&run, "source v1", "binlog_format")
        .unwrap_or_else(|| panic!("no binlog_format line:\n{}", run.stdout));
    let words: Vec<&str> = l.split_whitespace().collect();
    assert!(
        words.ends_with(&["binlog_format", "ROW", "STATEMENT", "FAIL"]),
        "expected 'binlog_format ROW STATEMENT FAIL', got: {l}"
    );
    // Everything else about that server is in order, so it is the one failure.
    let fails: Vec<&str> = run.stdout.lines().filter(|l| l.ends_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "unexpected failures:\n{}", run.stdout);
}

#[test]
fn check_fails_in_bounded_time_on_closed_ports() {
    let s = Stack::from_env();
    let (mysql_port, kafka_port, pg_port) = (free_port(), free_port(), free_port());
    let text = config(
        &format!("mysql://cdc_reader@127.0.0.1:{mysql_port}"),
        &format!("127.0.0.1:{kafka_port}"),
        &format!("postgres://cdc@127.0.0.1:{pg_port}/cdc"),
    );
    let run = run_check(&text, &s.mysql_password, &s.pg_password);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.took < Duration::from_secs(60), "check took {:?}", run.took);
    for server in [
        format!("source v1 (127.0.0.1:{mysql_port})"),
        format!("kafka (127.0.0.1:{kafka_port})"),
        format!("target v2 (postgres 127.0.0.1:{pg_port})"),
    ] {
        let l = line(&run, &server, "reachable")
            .unwrap_or_else(|| panic!("no line for {server}:\n{}", run.stdout));
        assert!(l.contains(" no") && l.ends_with("FAIL"), "{l}");
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn check_names_the_server_on_a_wrong_password() {
    let s = Stack::from_env();
    let run = run_check(
        &config(&s.mysql_url(), &s.kafka_bootstrap, &s.pg_url()),
        "wrong-password",
        "wrong-too",
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let mysql = line(&run, "source v1", "reachable").expect("source line");
    assert!(
        mysql.contains("Access denied") && mysql.ends_with("FAIL"),
        "{mysql}"
    );
    let pg = line(&run, "target v2", "reachable").expect("target line");
    assert!(
        pg.contains("password authentication failed") && pg.ends_with("FAIL"),
        "{pg}"
    );
    assert!(!run.stdout.contains("wrong-password"), "the password is printed");
}
