//! Helpers shared by the integration tests: the local stack's settings, unique
//! names, condition waits with deadlines, the binary, and throwaway servers.
//!
//! The stack is started by `bash tests/stack/stack.sh up`; its settings are read
//! from the same environment variables `stack.sh env` prints, with the same defaults.
#![allow(dead_code)]

pub mod pinpoint;
pub mod pipeline;
pub mod process;
pub mod sink;
pub mod types;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Connection settings of the local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub mysql_host: String,
    pub mysql_port: u16,
    pub mysql_admin_user: String,
    pub mysql_admin_password: String,
    pub mysql_user: String,
    pub mysql_password: String,
    pub kafka_bootstrap: String,
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub pg_password: String,
    pub pg_database: String,
    pub mariadbd: String,
    pub mariadb_install_db: String,
}

impl Stack {
    pub fn from_env() -> Stack {
        Stack {
            mysql_host: var("CDC_BRIDGE_MYSQL_HOST", "127.0.0.1"),
            mysql_port: var("CDC_BRIDGE_MYSQL_PORT", "13306")
                .parse()
                .expect("CDC_BRIDGE_MYSQL_PORT"),
            mysql_admin_user: var("CDC_BRIDGE_MYSQL_ADMIN_USER", "root"),
            mysql_admin_password: var("CDC_BRIDGE_MYSQL_ADMIN_PASSWORD", "cdc-admin-local"),
            mysql_user: var("CDC_BRIDGE_MYSQL_USER", "cdc_reader"),
            mysql_password: var("CDC_BRIDGE_MYSQL_PASSWORD", "cdc-reader-local"),
            kafka_bootstrap: var("CDC_BRIDGE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            pg_host: var("CDC_BRIDGE_PG_HOST", "127.0.0.1"),
            pg_port: var("CDC_BRIDGE_PG_PORT", "15432")
                .parse()
                .expect("CDC_BRIDGE_PG_PORT"),
            pg_user: var("CDC_BRIDGE_PG_USER", "cdc"),
            pg_password: var("CDC_BRIDGE_PG_PASSWORD", "cdc-pg-local"),
            pg_database: var("CDC_BRIDGE_PG_DATABASE", "cdc"),
            mariadbd: var("CDC_BRIDGE_MARIADB_BIN", "/usr/sbin/mariadbd"),
            mariadb_install_db: var("CDC_BRIDGE_MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db"),
        }
    }

    pub fn mysql_url(&self) -> String {
        format!(
            "mysql://{}@{}:{}",
            self.mysql_user, self.mysql_host, self.mysql_port
        )
    }

    pub fn pg_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.pg_user, self.pg_host, self.pg_port, self.pg_database
        )
    }

    /// Admin connection options for the stack's MariaDB.
    pub fn mysql_admin_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.mysql_host.clone())
            .tcp_port(self.mysql_port)
            .user(Some(self.mysql_admin_user.clone()))
            .pass(Some(self.mysql_admin_password.clone()))
            .prefer_socket(false)
            .into()
    }

    /// The environment a `cdc-bridge` child needs for the shipped example configs.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CDC_BRIDGE_MYSQL_PASSWORD", self.mysql_password.clone()),
            ("CDC_BRIDGE_PG_PASSWORD", self.pg_password.clone()),
        ]
    }
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<n>_<millis>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{millis}", std::process::id())
}

/// Polls `cond` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The crate's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `cdc-bridge` binary with `args` and extra environment, capturing output.
pub fn cdc_bridge(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdc-bridge"));
    cmd.args(args)
        .env_remove("CDC_BRIDGE_CONFIG")
        .env("CDC_BRIDGE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cdc-bridge")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A MariaDB server of the test's own, on a free port with its own data
/// directory, killed and removed on drop. For settings the shared stack must
/// not change (e.g. `--binlog-format=STATEMENT`).
pub struct ThrowawayMariaDb {
    pub port: u16,
    pub user: String,
    pub password: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ThrowawayMariaDb {
    pub async fn start(extra_args: &[&str]) -> ThrowawayMariaDb {
        let stack = Stack::from_env();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let status = Command::new(&stack.mariadb_install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run mariadb-install-db");
        assert!(status.success(), "mariadb-install-db failed");
        let user = "cdc_check".to_owned();
        let password = "throwaway-pass".to_owned();
        let init = dir.path().join("init.sql");
        std::fs::write(
            &init,
            format!(
                "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';\n\
                 GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{user}'@'%';\n"
            ),
        )
        .expect("write init file");
        let port = free_port();
        let child = Command::new(&stack.mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.path().join("error.log").display()))
            .arg(format!("--init-file={}", init.display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root", "--server-id=7"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .arg(format!("--log-bin={}", dir.path().join("binlog").display()))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        let server = ThrowawayMariaDb {
            port,
            user,
            password,
            child,
            _dir: dir,
        };
        let opts: mysql_async::Opts = server.opts();
        let log = server._dir.path().join("error.log");
        wait_until(
            &format!("throwaway MariaDB on port {port} (log: {})", log.display()),
            Duration::from_secs(60),
            || {
                let opts = opts.clone();
                async move { mysql_async::Conn::new(opts).await.ok().map(|_| ()) }
            },
        )
        .await;
        server
    }

    /// Runs SQL as root over the server's socket (the mariadb client, socket auth).
    pub fn sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .arg(format!(
                "--socket={}",
                self._dir.path().join("mysqld.sock").display()
            ))
            .args(["-uroot", "-e", sql])
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "SQL failed on the throwaway server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .into()
    }
}

impl Drop for ThrowawayMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` into a fresh temporary file and returns it (kept alive by the caller).
pub fn temp_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A Kafka broker of the test's own (KRaft, single node, from the stack's jars),
/// on free ports, that a test may stop and start again; killed on drop.
pub struct ThrowawayKafka {
    pub port: u16,
    controller_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ThrowawayKafka {
    fn libs() -> PathBuf {
        if let Ok(dir) = std::env::var("CDC_BRIDGE_KAFKA_LIBS") {
            return PathBuf::from(dir);
        }
        let pom = std::fs::read_to_string(repo_root().join("tests/stack/kafka-pom.xml")).expect("kafka pom");
        let version = pom
            .split("<kafka.version>")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .expect("kafka.version in the pom");
        let cache = std::env::var("CDC_BRIDGE_CACHE_DIR").unwrap_or_else(|_| "/var/cache/cdc-bridge".into());
        PathBuf::from(cache).join(format!("kafka-{version}/libs"))
    }

    fn java(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("java");
        cmd.args(["-Xms128m", "-Xmx384m"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", Self::libs().display()))
            .args(args);
        cmd
    }

    pub async fn start() -> ThrowawayKafka {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, controller_port) = (free_port(), free_port());
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\nlog.dirs={}\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\ntransaction.state.log.num.partitions=1\noffsets.topic.num.partitions=1\n\
             group.initial.rebalance.delay.ms=0\nmessage.max.bytes=67108864\nreplica.fetch.max.bytes=67108864\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("server.properties"), props).expect("write properties");
        std::fs::write(
            dir.path().join("log4j2.properties"),
            format!(
                "appender.f.type=File\nappender.f.name=f\nappender.f.fileName={}\nappender.f.layout.type=PatternLayout\n\
                 appender.f.layout.pattern=%d %p %m%n\nrootLogger.level=info\nrootLogger.appenderRef.f.ref=f\n",
                dir.path().join("server.log").display()
            ),
        )
        .expect("write log4j2 config");
        let mut kafka = ThrowawayKafka {
            port,
            controller_port,
            dir,
            child: None,
        };
        let props = kafka.dir.path().join("server.properties");
        let status = kafka
            .java(&[
                "kafka.tools.StorageTool",
                "format",
                "-t",
                "q1Sh-9_ISia_zwGINzRvyQ",
                "-c",
            ])
            .arg(&props)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("format kafka storage");
        assert!(status.success(), "kafka storage format failed");
        kafka.resume().await;
        kafka
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) and waits until it accepts connections.
    pub async fn resume(&mut self) {
        let props = self.dir.path().join("server.properties");
        let child = self
            .java(&["kafka.Kafka"])
            .arg(&props)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kafka");
        self.child = Some(child);
        let log = self.dir.path().join("server.log");
        wait_until(
            &format!("throwaway Kafka on {}", self.port),
            Duration::from_secs(90),
            || {
                let log = log.clone();
                async move {
                    std::fs::read_to_string(&log)
                        .ok()
                        .filter(|l| l.matches("Kafka Server started").count() > 0)
                        .map(|_| ())
                }
            },
        )
        .await;
        let _ = self.controller_port;
    }

    /// Stops the broker hard (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The next start's readiness is read from a fresh log.
        let _ = std::fs::remove_file(self.dir.path().join("server.log"));
    }

    /// The last `bytes` of the broker's log (for failure messages).
    pub fn log_tail(&self, bytes: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(bytes);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }
}

impl Drop for ThrowawayKafka {
    fn drop(&mut self) {
        self.kill();
    }
}
