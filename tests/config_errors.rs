//! Configuration errors name the key they are about.

mod common;

use cdc_bridge::config::{Config, ConfigError};

const VALID: &str = r#"
[source]
name = "v1"
url = "mysql://cdc_reader@127.0.0.1:13306"
password = "${MYSQL_PW}"
[source.tenants]
include = ["customer_%"]

[kafka]
bootstrap_servers = "127.0.0.1:19092"

[sink]
[[sink.targets]]
name = "v2"
kind = "postgres"
url = "postgres://cdc@127.0.0.1:15432/cdc"
password = "${PG_PW}"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "MYSQL_PW" => Some("m".into()),
        "PG_PW" => Some("p".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml", &env)
}

fn expect_issue(text: &str, needles: &[&str]) {
    let err = parse(text).expect_err("the configuration must be rejected");
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    }
    assert!(
        msg.starts_with("test.toml: "),
        "error {msg:?} does not name the file"
    );
}

#[test]
fn the_valid_config_parses_with_secrets_resolved() {
    let cfg = parse(VALID).expect("valid config");
    let source = cfg.source.expect("source");
    assert_eq!(source.password.expose(), "m");
    assert!(source.tenants.selects("customer_alpha"));
    assert!(!source.tenants.selects("mysql"));
    assert_eq!(cfg.kafka.changes_topic(), "cdc.changes");
    assert!(
        !format!("{:?}", cfg.sink).contains("\"p\""),
        "secrets leak into Debug"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_path() {
    let text = VALID.replace("[source.tenants]", "bogus_key = 1\n[source.tenants]");
    expect_issue(&text, &["source", "unknown field `bogus_key`"]);
    let text = VALID.replace("kind = \"postgres\"", "kind = \"postgres\"\nurll = \"x\"");
    expect_issue(&text, &["sink.targets[0]", "unknown field `urll`"]);
}

#[test]
fn a_missing_secret_env_names_key_and_variable() {
    let text = VALID.replace("${PG_PW}", "${NOT_SET_ANYWHERE}");
    expect_issue(
        &text,
        &["sink.targets[0].password", "NOT_SET_ANYWHERE", "not set"],
    );
}

#[test]
fn a_process_needs_only_the_secrets_of_its_own_sections() {
    use cdc_bridge::config::{Config, Uses};
    let env = |name: &str| (name == "MYSQL_PW").then(|| "m".to_owned());
    let text = VALID.to_owned();
    // The source runs without the target's password in its environment...
    let cfg = Config::from_toml_str_for(&text, "t.toml", &env, Uses::SOURCE).expect("source config");
    assert_eq!(cfg.source.unwrap().password.expose(), "m");
    // ...the sink does not, and a literal secret is refused for every process.
    let err = Config::from_toml_str_for(&text, "t.toml", &env, Uses::SINK).unwrap_err();
    assert!(err.to_string().contains("sink.targets[0].password"), "{err}");
    let literal = VALID.replace("${PG_PW}", "hunter2");
    let err = Config::from_toml_str_for(&literal, "t.toml", &env, Uses::SOURCE).unwrap_err();
    assert!(err.to_string().contains("sink.targets[0].password"), "{err}");
}

#[test]
fn a_literal_secret_is_refused() {
    let text = VALID.replace("${MYSQL_PW}", "hunter2");
    let err = parse(&text).expect_err("literal secret").to_string();
    assert!(err.contains("source.password"), "{err}");
    assert!(!err.contains("hunter2"), "the refused secret is echoed: {err}");
}

#[test]
fn a_secret_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let text = VALID.replace("${PG_PW}", &format!("file:{}", file.display()));
    let cfg = parse(&text).expect("file secret");
    assert_eq!(cfg.sink.unwrap().targets[0].password.expose(), "from-file");
    let text = VALID.replace("${PG_PW}", "file:/nonexistent/secret");
    expect_issue(&text, &["sink.targets[0].password", "/nonexistent/secret"]);
}

#[test]
fn a_bad_url_names_its_key() {
    expect_issue(
        &VALID.replace("mysql://cdc_reader@127.0.0.1:13306", "not a url"),
        &["source.url", "not a valid URL"],
    );
    expect_issue(
        &VALID.replace("postgres://cdc@", "mysql://cdc@"),
        &["sink.targets[0].url", "scheme"],
    );
    expect_issue(
        &VALID.replace("mysql://cdc_reader@", "mysql://cdc_reader:pw@"),
        &["source.url", "contains a password"],
    );
    expect_issue(
        &VALID.replace("127.0.0.1:19092", "localhost"),
        &["kafka.bootstrap_servers", "host:port"],
    );
}

#[test]
fn a_wrong_type_names_its_key() {
    let text = VALID.replace("include = [\"customer_%\"]", "include = \"customer_%\"");
    expect_issue(&text, &["source.tenants.include"]);
}

#[test]
fn several_problems_are_reported_together() {
    let text = VALID
        .replace("${PG_PW}", "${NOT_SET_ANYWHERE}")
        .replace("mysql://cdc_reader@127.0.0.1:13306", "http://x@y:1");
    let err = parse(&text).expect_err("two problems");
    assert_eq!(err.issues.len(), 2, "{err}");
}

#[test]
fn the_shipped_local_configs_are_valid() {
    for file in ["connectors/local.toml", "connectors/demo.toml"] {
        let path = common::repo_root().join(file);
        let out = common::cdc_bridge(
            &["check", "--offline", "--config", common::path_str(&path)],
            &common::Stack::from_env().child_env(),
        );
        assert!(
            out.status.success(),
            "{file}: check --offline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_cli_exits_2_on_a_bad_config_and_names_the_key() {
    let (_dir, path) = common::temp_config(&VALID.replace("name = \"v1\"", "name = \"v1\"\nextra = true"));
    let out = common::cdc_bridge(&["check", "--offline", "--config", common::path_str(&path)], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `extra`"), "{stderr}");
}
