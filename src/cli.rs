//! The command line: one binary, one subcommand per job.
//!
//! Only paths and names are taken on the command line; secrets come from the
//! configuration file's `${ENV}` and `file:` references.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::ops;

/// Change-data-capture replicator: v1 MySQL/MariaDB (snapshot + binlog) into
/// Kafka, and from Kafka into v2 rows and regenerated documents.
#[derive(Debug, Parser)]
#[command(name = "cdc-bridge", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `cdc_bridge=debug`).
    #[arg(long, global = true, env = "CDC_BRIDGE_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The configuration file every server-facing command reads.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path to the TOML configuration file.
    #[arg(long, short = 'c', env = "CDC_BRIDGE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture one MySQL/MariaDB server into Kafka: a consistent snapshot of the
    /// selected tenants' tables, then the binlog from exactly that position.
    /// Restartable at any moment; one active instance per server.
    Source {
        #[command(flatten)]
        config: ConfigArg,
        /// Ignore the stored position and take a new snapshot (e.g. after the
        /// server purged binlogs the source had not read yet).
        #[arg(long)]
        resnapshot: bool,
        /// Serve metrics on this address instead of the configured `metrics.listen`
        /// (when several processes share one configuration file on one host).
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Apply change events from Kafka to the v2 targets (a consumer-group member;
    /// run more of them to scale out). Writes and offsets commit together.
    Sink {
        #[command(flatten)]
        config: ConfigArg,
        /// The target to write to, when the configuration names several.
        #[arg(long)]
        target: Option<String>,
        /// Serve metrics on this address instead of the configured `metrics.listen`.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Per tenant and stage: source position and delay, Kafka lag, sink delay.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The target whose progress to read, when the configuration names several.
        #[arg(long)]
        target: Option<String>,
    },
    /// Compare v1 and v2 for one tenant through the mapping: counts and
    /// content checksums per table, and the first differing keys.
    ///
    /// Exit status: 0 equal, 1 different, 2 could not verify (unreachable, timeout).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// The v2 tenant id.
        #[arg(long)]
        tenant: String,
        /// The target to compare with, when the configuration names several.
        #[arg(long)]
        target: Option<String>,
        /// Print the values of differing rows (v1 holds patient data: off by default).
        #[arg(long)]
        show_values: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Give up waiting for the sink to reach the snapshot position after this long.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Cut one tenant over: require zero lag, verify, optionally freeze v1,
    /// drain, and write a report.
    Cutover {
        #[command(flatten)]
        config: ConfigArg,
        /// The v2 tenant id.
        #[arg(long)]
        tenant: String,
        /// The target, when the configuration names several.
        #[arg(long)]
        target: Option<String>,
        /// Seconds the lag must stay zero (default: `cutover.window_secs`).
        #[arg(long)]
        window_secs: Option<u64>,
        /// Directory for the report (default: `cutover.report_dir`).
        #[arg(long)]
        report_dir: Option<std::path::PathBuf>,
    },
    /// Re-apply a range of the change topic to v2 (a backfill after a mapping fix)
    /// through the sink's transform and position guard, beside the running sink.
    /// Idempotent; never moves a row backwards; ends at the end of the range.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The target to write to, when the configuration names several.
        #[arg(long)]
        target: Option<String>,
        /// Limit to these tenants (tenant id or v1 database; repeatable).
        #[arg(long)]
        tenant: Vec<String>,
        /// Limit to these v1 tables (repeatable).
        #[arg(long)]
        table: Vec<String>,
        /// Limit to these partitions of the change topic (repeatable).
        #[arg(long)]
        partition: Vec<i32>,
        /// Start at this offset in every partition (default: the beginning).
        #[arg(long, conflicts_with = "from_time")]
        from_offset: Option<i64>,
        /// Start at the first message with a Kafka timestamp at or after this time
        /// (RFC 3339 UTC, e.g. 2026-11-25T08:00:00Z, or milliseconds since the epoch).
        #[arg(long)]
        from_time: Option<String>,
        /// End with this offset (inclusive) in every partition (default: the end of
        /// the topic when the replay starts).
        #[arg(long, conflicts_with = "to_time")]
        to_offset: Option<i64>,
        /// End before the first message with a Kafka timestamp after this time.
        #[arg(long)]
        to_time: Option<String>,
    },
    /// Ask the running source to re-snapshot tables or tenants while streaming continues.
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        table: Vec<String>,
    },
    /// Connect to every configured server and report the required settings,
    /// expected against actual; exits non-zero when anything is off.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Only parse and validate the configuration; connect to nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Print decoded change events from the change topic as JSON lines.
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        tenant: Vec<String>,
        #[arg(long)]
        table: Vec<String>,
        /// Keep following new events instead of stopping at the end.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Start at this offset in every partition (default: the beginning).
        #[arg(long, conflicts_with = "from_time")]
        from_offset: Option<i64>,
        /// Start at the first event at or after this time (RFC 3339, e.g. 2026-11-25T08:00:00Z,
        /// or milliseconds since the epoch).
        #[arg(long)]
        from_time: Option<String>,
        /// Stop after printing this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Validate a mapping or preview what a v1 row becomes.
    Mapping {
        #[command(subcommand)]
        action: MappingAction,
    },
    /// Fill sample tenant databases (the PinpointCare example) and run a mutation workload.
    Generate {
        #[command(flatten)]
        config: ConfigArg,
        /// How many tenant databases to create (`<prefix>01`, `<prefix>02`, ...).
        #[arg(long, default_value_t = 3)]
        tenants: u32,
        /// Rows of a patients-sized table in the largest tenant (tenant k gets ~1/k).
        #[arg(long, default_value_t = 100)]
        scale: u32,
        /// Seed: the same seed gives the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Database name prefix (default: the first tenant pattern without its `%`).
        #[arg(long)]
        prefix: Option<String>,
        /// The v1 schema to load into each tenant database.
        #[arg(long, default_value = "connectors/pinpoint/v1-schema.sql")]
        schema: String,
        /// After filling, run a mutation workload at this many statements per second...
        #[arg(long)]
        workload_rate: Option<f64>,
        /// ...for this many seconds (until Ctrl-C when 0).
        #[arg(long, default_value_t = 60)]
        workload_secs: u64,
        /// Skip filling (only run the workload on tenants generated before).
        #[arg(long)]
        workload_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingAction {
    /// Validate a mapping against the v1 and v2 schemas.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the v2 rows one v1 row becomes.
    Preview {
        #[command(flatten)]
        config: ConfigArg,
        /// The v1 table.
        #[arg(long)]
        table: String,
        /// The v1 row as a JSON object (values read with the v1 column types).
        #[arg(long, required_unless_present = "key", conflicts_with = "key")]
        row: Option<String>,
        /// Or: the primary-key value of a row to read from v1 (in `--tenant`'s
        /// database, default the first selected one).
        #[arg(long)]
        key: Option<String>,
        /// The tenant id to derive v2 ids with (default: the first selected tenant database).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Parses the command line, runs the command, and maps the outcome to an exit code:
/// 0 success, 1 a check or command failed, 2 usage or configuration error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                2
            } else {
                1
            })
        }
    }
}

fn init_logging(filter: &str) {
    // PostgreSQL's notices ("already exists, skipping") are not worth a line each.
    let filter = if filter.contains("tokio_postgres") {
        filter.to_owned()
    } else {
        format!("{filter},tokio_postgres=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.config)?)
}

/// Loads requiring only the secrets of the sections the command uses.
fn load_for(arg: &ConfigArg, uses: crate::config::Uses) -> anyhow::Result<Config> {
    Ok(Config::load_for(&arg.config, uses)?)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config, offline } => {
            let cfg = load(&config)?;
            if offline {
                println!("configuration {} is valid", config.config.display());
                return Ok(ExitCode::SUCCESS);
            }
            let report = ops::check::run(&cfg).await;
            print!("{}", report.to_table());
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Source {
            config,
            resnapshot,
            metrics_listen,
        } => {
            let cfg = load_for(&config, crate::config::Uses::SOURCE)?;
            let source = cfg.source.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: the configuration has no [source] section",
                    config.config.display()
                )
            })?;
            ops::health::serve(
                metrics_listen.as_deref().unwrap_or(&cfg.metrics.listen),
                Some(&cfg.kafka),
            )
            .await?;
            let mut options = crate::source::RunOptions::from_config(source, &cfg);
            options.resnapshot = resnapshot;
            let grace = Duration::from_secs(source.shutdown_timeout_secs);
            let (stop, signalled) = shutdown_pair();
            tokio::select! {
                r = crate::source::run(&cfg, options, stop) => r?,
                () = abandon_after(signalled, grace) => std::process::exit(0),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink {
            config,
            target,
            metrics_listen,
        } => {
            let cfg = load_for(&config, crate::config::Uses::SINK)?;
            ops::health::serve(
                metrics_listen.as_deref().unwrap_or(&cfg.metrics.listen),
                Some(&cfg.kafka),
            )
            .await?;
            let grace = Duration::from_secs(cfg.sink.as_ref().map_or(30, |s| s.shutdown_timeout_secs));
            let (stop, signalled) = shutdown_pair();
            tokio::select! {
                r = crate::sink::run(&cfg, target.as_deref(), stop) => r?,
                () = abandon_after(signalled, grace) => std::process::exit(0),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json, target } => {
            let cfg = load_for(&config, crate::config::Uses::SINK)?;
            let status = ops::status::collect(&cfg, target.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", ops::status::table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            config,
            tenant,
            target,
            show_values,
            json,
            timeout_secs,
        } => {
            let cfg = load(&config)?;
            let options = ops::verify::VerifyOptions {
                tenant,
                target,
                timeout: std::time::Duration::from_secs(timeout_secs),
                show_values,
            };
            match ops::verify::run(&cfg, &options).await {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.to_text());
                    }
                    Ok(if report.equal {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
                Err(e) => {
                    eprintln!("error: verify: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Cutover {
            config,
            tenant,
            target,
            window_secs,
            report_dir,
        } => {
            let cfg = load(&config)?;
            let c = &cfg.cutover;
            let options = ops::cutover::CutoverOptions {
                tenant,
                target,
                window: Duration::from_secs(window_secs.unwrap_or(c.window_secs)),
                poll: Duration::from_secs(2),
                report_dir: report_dir.unwrap_or_else(|| c.report_dir.clone().into()),
                freeze_command: c.freeze_command.clone(),
                drain_timeout: Duration::from_secs(c.drain_timeout_secs),
            };
            let report = ops::cutover::run(&cfg, &options).await?;
            print!("{}", report.to_text());
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Replay {
            config,
            target,
            tenant,
            table,
            partition,
            from_offset,
            from_time,
            to_offset,
            to_time,
        } => {
            use crate::sink::replay::{RangeEnd, RangeStart, ReplayOptions};
            let cfg = load_for(&config, crate::config::Uses::SINK)?;
            let from = match (from_offset, from_time.as_deref()) {
                (Some(o), _) => RangeStart::Offset(o),
                (None, Some(t)) => RangeStart::TimeMs(parse_time_ms("--from-time", t)?),
                (None, None) => RangeStart::Beginning,
            };
            let to = match (to_offset, to_time.as_deref()) {
                (Some(o), _) => RangeEnd::Offset(o),
                (None, Some(t)) => RangeEnd::TimeMs(parse_time_ms("--to-time", t)?),
                (None, None) => RangeEnd::Latest,
            };
            let options = ReplayOptions {
                tenants: tenant,
                tables: table,
                partitions: partition,
                from,
                to,
            };
            let summary =
                crate::sink::replay::run(&cfg, target.as_deref(), &options, shutdown_signal()).await?;
            println!("{summary}");
            Ok(if summary.interrupted {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Snapshot {
            config,
            tenant,
            table,
        } => {
            let cfg = load_for(&config, crate::config::Uses::SINK)?;
            let source = cfg.source.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: the configuration has no [source] section (the signal goes to that source)",
                    config.config.display()
                )
            })?;
            let offset = ops::signal::request_snapshot(&cfg.kafka, &source.name, &tenant, &table).await?;
            println!(
                "re-snapshot of {} of tenant {tenant} requested from source {} (signal offset {offset}); \
                 the running source takes it within seconds, streaming goes on (watch `cdc-bridge status`)",
                if table.is_empty() {
                    "every table".to_owned()
                } else {
                    table.join(", ")
                },
                source.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            config,
            tenant,
            table,
            follow,
            from_offset,
            from_time,
            limit,
        } => {
            let cfg = load(&config)?;
            let from_time_ms = from_time
                .as_deref()
                .map(|t| parse_time_ms("--from-time", t))
                .transpose()?;
            let options = ops::tail::TailOptions {
                tenants: tenant,
                tables: table,
                follow,
                from_offset,
                from_time_ms,
                limit,
            };
            let printed = tokio::task::spawn_blocking(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                ops::tail::run(&cfg.kafka, &options, &mut out)
            })
            .await??;
            tracing::debug!(printed, "tail done");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            config,
            tenants,
            scale,
            seed,
            prefix,
            schema,
            workload_rate,
            workload_secs,
            workload_only,
        } => {
            let cfg = load(&config)?;
            let prefix = prefix.unwrap_or_else(|| {
                cfg.source
                    .as_ref()
                    .and_then(|s| s.tenants.include.first())
                    .map(|p| p.trim_end_matches('%').to_owned())
                    .filter(|p| !p.is_empty() && !p.contains('%'))
                    .unwrap_or_else(|| "tenant_".to_owned())
            });
            let hints = match cfg.sink.as_ref().and_then(|s| s.mapping.as_deref()) {
                Some(path) => ops::generate::hints_from_mapping(std::path::Path::new(path))?,
                None => Default::default(),
            };
            let opts = ops::generate::GenerateOptions {
                tenants,
                scale,
                seed,
                prefix,
                schema_file: schema,
                hints,
            };
            if !workload_only {
                for (db, rows) in ops::generate::generate(&cfg, &opts).await? {
                    println!("{db}: {rows} rows");
                }
            }
            if let Some(rate) = workload_rate {
                let duration = if workload_secs == 0 {
                    std::time::Duration::MAX
                } else {
                    std::time::Duration::from_secs(workload_secs)
                };
                let n = ops::generate::workload(&opts, rate, duration, shutdown_signal()).await?;
                println!("workload: {n} statements");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mapping { action } => match action {
            MappingAction::Check { config } => {
                let cfg = load(&config)?;
                let (file, problems) = ops::mapping::check(&cfg).await?;
                if problems.is_empty() {
                    println!("mapping {file}: OK (checked against the v2 target and the v1 source)");
                    Ok(ExitCode::SUCCESS)
                } else {
                    for p in &problems {
                        println!("{p}");
                    }
                    println!("mapping {file}: {} problem(s)", problems.len());
                    Ok(ExitCode::from(1))
                }
            }
            MappingAction::Preview {
                config,
                table,
                row,
                key,
                tenant,
            } => {
                let cfg = load(&config)?;
                let input = match (&row, &key) {
                    (Some(r), _) => ops::mapping::PreviewRow::Json(r),
                    (None, Some(k)) => ops::mapping::PreviewRow::Key(k),
                    (None, None) => anyhow::bail!("give --row or --key"),
                };
                println!(
                    "{}",
                    ops::mapping::preview(&cfg, &table, input, tenant.as_deref()).await?
                );
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

/// Milliseconds since the epoch from `2026-11-25T08:00:00Z` (UTC, optional
/// fraction) or from a plain number of milliseconds.
fn parse_time_ms(flag: &str, text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let trimmed = text.trim_end_matches('Z');
    let dt: crate::event::DateTime = trimmed
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: expected 2026-11-25T08:00:00Z or milliseconds"))?;
    let days = crate::source::convert::days_from_civil(
        i64::from(dt.date.year),
        u32::from(dt.date.month),
        u32::from(dt.date.day),
    );
    let secs = days * 86_400 + i64::from(dt.hour) * 3600 + i64::from(dt.minute) * 60 + i64::from(dt.second);
    Ok(secs * 1000 + i64::from(dt.micros / 1000))
}

/// Resolves on SIGTERM or SIGINT: long-running commands then commit their
/// in-flight work and exit 0.
/// The shutdown future a process runs with, and a receiver told when it fired.
fn shutdown_pair() -> (
    impl std::future::Future<Output = ()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        shutdown_signal().await;
        let _ = tx.send(());
    };
    (stop, rx)
}

/// Resolves `grace` after the shutdown signal: the in-flight work is then
/// abandoned (its open transactions roll back when the process exits).
async fn abandon_after(signalled: tokio::sync::oneshot::Receiver<()>, grace: Duration) {
    if signalled.await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
    tracing::warn!(
        grace_secs = grace.as_secs(),
        "shutdown: the in-flight batch did not finish in time; abandoned (it is read again on the next start)"
    );
}

pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}
