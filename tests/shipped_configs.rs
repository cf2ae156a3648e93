//! Every configuration shipped for deployment (`docker/`, `k8s/`) parses and
//! validates with `cdc-bridge check --offline`, so it cannot rot; a broken copy
//! proves the check bites.

mod common;

use common::{cdc_bridge, repo_root, temp_config};

const SHIPPED: &[&str] = &["docker/cdc-bridge.toml", "k8s/cdc-bridge.toml"];

fn env() -> Vec<(&'static str, String)> {
    // The secrets the files reference; `check` resolves every one.
    vec![
        ("CDC_BRIDGE_MYSQL_PASSWORD", "not-a-real-password".to_owned()),
        ("CDC_BRIDGE_MSSQL_PASSWORD", "not-a-real-password".to_owned()),
    ]
}

#[test]
fn shipped_configs_pass_the_offline_check() {
    for file in SHIPPED {
        let path = repo_root().join(file);
        let out = cdc_bridge(
            &["check", "--config", path.to_str().unwrap(), "--offline"],
            &env(),
        );
        assert!(
            out.status.success(),
            "{file}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_broken_copy_fails_the_offline_check_naming_the_key() {
    for file in SHIPPED {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(text.contains("server_id = 5401"), "{file} sets server_id");
        let (_dir, path) = temp_config(&text.replace("server_id = 5401", "server_id = \"5401\""));
        let out = cdc_bridge(
            &["check", "--config", path.to_str().unwrap(), "--offline"],
            &env(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: a string server_id was accepted");
        assert!(stderr.contains("server_id"), "{file}: {stderr}");
    }
}
