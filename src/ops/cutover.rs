//! `cdc-bridge cutover --tenant T`: the last step of a tenant's migration.
//!
//! 1. Lag: the tenant's Kafka lag must be zero (and its state `caught up`)
//!    at every look during the window (`cutover.window_secs`), else refuse.
//! 2. Verify: v1 and v2 must be equal (`ops::verify`), else refuse.
//! 3. Freeze (optional): `cutover.freeze_command` runs with the tenant in the
//!    environment (e.g. a SQL statement through the `mysql` client that puts the
//!    v1 tenant read-only); then the final drain: lag zero again; then verify
//!    once more (`verify-frozen`): with v1 still, it compares every row, also
//!    those changed between the first verify and the freeze or set aside by it.
//! 4. Report: JSON and text in the report directory, with positions, per-table
//!    counts and hashes, and the time each step took.
//!
//! Nothing in v2 is changed by any step; any failure exits non-zero.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::ops::status;
use crate::ops::verify::{self, VerifyOptions};

#[derive(Debug, Clone)]
pub struct CutoverOptions {
    pub tenant: String,
    pub target: Option<String>,
    pub window: Duration,
    pub poll: Duration,
    pub report_dir: std::path::PathBuf,
    pub freeze_command: Option<String>,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    pub tenant: String,
    pub ok: bool,
    pub started_micros: i64,
    pub steps: Vec<Step>,
    pub source_position: Option<String>,
    pub sink_position: Option<String>,
    pub verify: Option<verify::Report>,
    /// The verify after the freeze and the drain.
    pub verify_frozen: Option<verify::Report>,
}

impl CutoverReport {
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "cutover of tenant {}: {}\n",
            self.tenant,
            if self.ok { "DONE" } else { "REFUSED" }
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "  {:<13} {:<6} {:>7.1} s  {}",
                s.name,
                if s.ok { "ok" } else { "FAILED" },
                s.seconds,
                s.detail
            );
        }
        let _ = writeln!(
            out,
            "  source position {}\n  sink position   {}",
            self.source_position.as_deref().unwrap_or("-"),
            self.sink_position.as_deref().unwrap_or("-")
        );
        for v in [&self.verify, &self.verify_frozen].into_iter().flatten() {
            out.push('\n');
            out.push_str(&v.to_text());
        }
        out
    }
}

use crate::event::now_micros;

/// Looks at the tenant's status every `poll` for `window`; Err names the first look with lag.
async fn lag_stays_zero(
    config: &Config,
    opts: &CutoverOptions,
    window: Duration,
) -> anyhow::Result<Result<status::TenantStatus, String>> {
    let until = Instant::now() + window;
    loop {
        let s = status::collect(config, opts.target.as_deref()).await?;
        let Some(t) = s.tenants.into_iter().find(|t| t.tenant == opts.tenant) else {
            return Ok(Err(format!(
                "tenant {} is not on the change topic or in the target",
                opts.tenant
            )));
        };
        if t.kafka_lag_events > 0 || t.state != "caught up" {
            return Ok(Err(format!(
                "tenant {} is {} with {} event(s) of lag",
                opts.tenant, t.state, t.kafka_lag_events
            )));
        }
        if Instant::now() >= until {
            return Ok(Ok(t));
        }
        tokio::time::sleep(opts.poll.min(until.saturating_duration_since(Instant::now()))).await;
    }
}

/// Waits (bounded) until the tenant's lag is zero again.
async fn drain(
    config: &Config,
    opts: &CutoverOptions,
) -> anyhow::Result<Result<status::TenantStatus, String>> {
    let until = Instant::now() + opts.drain_timeout;
    loop {
        match lag_stays_zero(config, opts, Duration::ZERO).await? {
            Ok(t) => return Ok(Ok(t)),
            Err(e) if Instant::now() >= until => return Ok(Err(format!("not drained: {e}"))),
            Err(_) => tokio::time::sleep(opts.poll).await,
        }
    }
}

pub async fn run(config: &Config, opts: &CutoverOptions) -> anyhow::Result<CutoverReport> {
    let mut report = CutoverReport {
        tenant: opts.tenant.clone(),
        ok: false,
        started_micros: now_micros(),
        steps: Vec::new(),
        source_position: None,
        sink_position: None,
        verify: None,
        verify_frozen: None,
    };
    // 1. Lag zero for the whole window.
    let t0 = Instant::now();
    match lag_stays_zero(config, opts, opts.window).await? {
        Ok(t) => {
            report.steps.push(Step {
                name: "lag",
                ok: true,
                seconds: t0.elapsed().as_secs_f64(),
                detail: format!("zero for {} s", opts.window.as_secs()),
            });
            report.source_position = t.source_position;
            report.sink_position = t.sink_position;
        }
        Err(reason) => {
            report.steps.push(Step {
                name: "lag",
                ok: false,
                seconds: t0.elapsed().as_secs_f64(),
                detail: reason,
            });
            return finish(report, opts);
        }
    }
    // 2. Verify.
    let (step, verified) = verify_step(config, opts, "verify").await;
    let ok = step.ok;
    report.steps.push(step);
    report.verify = verified;
    if !ok {
        return finish(report, opts);
    }
    // 3. Freeze v1 and drain.
    if let Some(command) = &opts.freeze_command {
        let t2 = Instant::now();
        let database = report
            .verify
            .as_ref()
            .map(|v| v.database.clone())
            .unwrap_or_else(|| opts.tenant.clone());
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("CDC_BRIDGE_TENANT", &opts.tenant)
            .env("CDC_BRIDGE_DATABASE", &database)
            .output()
            .await;
        let (ok, detail) = match out {
            Ok(o) if o.status.success() => (true, "freeze command succeeded".to_owned()),
            Ok(o) => (
                false,
                format!(
                    "freeze command failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Err(e) => (false, format!("freeze command could not start: {e}")),
        };
        report.steps.push(Step {
            name: "freeze",
            ok,
            seconds: t2.elapsed().as_secs_f64(),
            detail,
        });
        if !ok {
            return finish(report, opts);
        }
        let t3 = Instant::now();
        match drain(config, opts).await? {
            Ok(t) => {
                report.steps.push(Step {
                    name: "drain",
                    ok: true,
                    seconds: t3.elapsed().as_secs_f64(),
                    detail: "lag zero after the freeze".to_owned(),
                });
                report.source_position = t.source_position;
                report.sink_position = t.sink_position;
                let (step, verified) = verify_step(config, opts, "verify-frozen").await;
                let ok = step.ok;
                report.steps.push(step);
                report.verify_frozen = verified;
                if !ok {
                    return finish(report, opts);
                }
            }
            Err(reason) => {
                report.steps.push(Step {
                    name: "drain",
                    ok: false,
                    seconds: t3.elapsed().as_secs_f64(),
                    detail: reason,
                });
                return finish(report, opts);
            }
        }
    }
    report.ok = true;
    finish(report, opts)
}

/// Runs verify as step `name`: ok when v1 and v2 are equal.
async fn verify_step(
    config: &Config,
    opts: &CutoverOptions,
    name: &'static str,
) -> (Step, Option<verify::Report>) {
    let started = Instant::now();
    let verified = verify::run(
        config,
        &VerifyOptions {
            tenant: opts.tenant.clone(),
            target: opts.target.clone(),
            timeout: opts.drain_timeout,
            show_values: false,
        },
    )
    .await;
    let seconds = || started.elapsed().as_secs_f64();
    match verified {
        Ok(v) => {
            let differing: usize = v
                .tables
                .iter()
                .map(|t| t.missing_total + t.extra_total + t.different_total)
                .sum();
            let set_aside: usize = v.tables.iter().map(|t| t.changed_after_snapshot).sum();
            let detail = if v.equal {
                let mut d = format!("{} tables equal at {}", v.tables.len(), v.snapshot_position);
                if set_aside > 0 {
                    d += &format!(" ({set_aside} row(s) changed after it, not compared)");
                }
                d
            } else {
                format!("{differing} differing row(s)")
            };
            let step = Step {
                name,
                ok: v.equal,
                seconds: seconds(),
                detail,
            };
            (step, Some(v))
        }
        Err(e) => (
            Step {
                name,
                ok: false,
                seconds: seconds(),
                detail: format!("could not verify: {e}"),
            },
            None,
        ),
    }
}

/// Writes `cutover-<tenant>-<time>.json` and `.txt` into the report directory.
fn finish(report: CutoverReport, opts: &CutoverOptions) -> anyhow::Result<CutoverReport> {
    std::fs::create_dir_all(&opts.report_dir)
        .map_err(|e| anyhow::anyhow!("report directory {}: {e}", opts.report_dir.display()))?;
    let stem = format!(
        "cutover-{}-{}",
        opts.tenant.replace(['/', '\\'], "_"),
        report.started_micros / 1_000_000
    );
    let json = opts.report_dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?;
    let text = opts.report_dir.join(format!("{stem}.txt"));
    std::fs::write(&text, report.to_text()).map_err(|e| anyhow::anyhow!("{}: {e}", text.display()))?;
    tracing::info!(tenant = %opts.tenant, ok = report.ok, report = %json.display(), "cutover report written");
    Ok(report)
}
