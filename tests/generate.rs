//! `cdc-bridge generate` on the local MariaDB: the PinpointCare v1 schema in
//! several tenant databases, filled reproducibly with skewed sizes and
//! realistic text, and a mutation workload.

mod common;

use common::pipeline::Pipeline;
use mysql_async::prelude::Queryable;

fn generate(p: &Pipeline, prefix: &str, extra: &[&str]) -> String {
    let s = &p.stack;
    let url = format!(
        "mysql://{}:{}@{}:{}",
        s.mysql_admin_user, s.mysql_admin_password, s.mysql_host, s.mysql_port
    );
    let mut env = s.child_env();
    env.push(("CDC_BRIDGE_GENERATE_URL", url));
    let config = common::path_str(&p.config_path).to_owned();
    let mut args = vec!["generate", "--config", &config, "--prefix", prefix, "--seed", "7"];
    args.extend_from_slice(extra);
    let out = common::cdc_bridge(&args, &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn count(conn: &mut mysql_async::Conn, db: &str, table: &str) -> u64 {
    conn.query_first(format!("SELECT COUNT(*) FROM `{db}`.`{table}`"))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tenants_are_skewed_reproducible_and_consistent() {
    let p = Pipeline::new("generate", 1, "").await;
    let prefix = format!("{}_g", p.prefix);
    let out = generate(&p, &prefix, &["--tenants", "3", "--scale", "60"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let mut conn = p.admin().await;
    let dbs: Vec<String> = (1..=3).map(|k| format!("{prefix}{k:02}")).collect();
    let patients: Vec<u64> = {
        let mut v = Vec::new();
        for db in &dbs {
            v.push(count(&mut conn, db, "patients").await);
        }
        v
    };
    assert!(
        patients[0] > patients[1] && patients[1] > patients[2],
        "skewed sizes: {patients:?}"
    );

    // References point at existing rows; names are not just ASCII; text runs long.
    let orphans: u64 = conn
        .query_first(format!(
            "SELECT COUNT(*) FROM `{0}`.patients p LEFT JOIN `{0}`.facilities f ON f.id = p.facility_id \
             WHERE f.id IS NULL",
            dbs[0]
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(orphans, 0);
    let non_ascii: u64 = conn
        .query_first(format!(
            "SELECT COUNT(*) FROM `{}`.patients WHERE CHAR_LENGTH(last_name) <> LENGTH(last_name)",
            dbs[0]
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(non_ascii > 0, "accented and non-Latin names");

    // The same seed gives the same data.
    let checksum = |db: String| {
        let opts = p.stack.mysql_admin_opts();
        async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let row: (String, Option<u64>) = c
                .query_first(format!("CHECKSUM TABLE `{db}`.patients"))
                .await
                .unwrap()
                .unwrap();
            row.1
        }
    };
    let first = checksum(dbs[0].clone()).await;
    let again = format!("{}_h", p.prefix);
    generate(&p, &again, &["--tenants", "1", "--scale", "60"]);
    assert_eq!(
        checksum(format!("{again}01")).await,
        first,
        "same seed, same rows"
    );

    // A short workload changes rows.
    let out = generate(
        &p,
        &prefix,
        &[
            "--tenants",
            "3",
            "--workload-only",
            "--workload-rate",
            "100",
            "--workload-secs",
            "2",
        ],
    );
    let n: u64 = out
        .trim()
        .strip_prefix("workload: ")
        .and_then(|s| s.strip_suffix(" statements"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 50, "{out}");

    for db in dbs.iter().chain(std::iter::once(&format!("{again}01"))) {
        conn.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
    }
}
