//! The HTTP endpoint of a long-running process: `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (connected and making
//! progress: every registered check passed recently).
//!
//! A check is reported by the part of the process it watches (`report`); one
//! not reported again within its `stale_after` counts as failed, so a hung
//! loop turns the process unready. Reasons name servers and stages, never data.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::KafkaConfig;

struct Check {
    ok: bool,
    reason: String,
    at: Instant,
    stale_after: Duration,
}

fn checks() -> &'static Mutex<BTreeMap<&'static str, Check>> {
    static CHECKS: OnceLock<Mutex<BTreeMap<&'static str, Check>>> = OnceLock::new();
    CHECKS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Records the state of check `name`; it must be reported again within
/// `stale_after` to stay passing.
pub fn report(name: &'static str, ok: bool, reason: impl Into<String>, stale_after: Duration) {
    let mut c = checks().lock().unwrap_or_else(|e| e.into_inner());
    c.insert(
        name,
        Check {
            ok,
            reason: reason.into(),
            at: Instant::now(),
            stale_after,
        },
    );
}

/// Ready when at least one check is registered and every check passed
/// within its window; otherwise the failing checks with their reasons.
pub fn readiness() -> Result<Vec<String>, Vec<String>> {
    readiness_at(Instant::now())
}

fn readiness_at(now: Instant) -> Result<Vec<String>, Vec<String>> {
    let c = checks().lock().unwrap_or_else(|e| e.into_inner());
    if c.is_empty() {
        return Err(vec!["starting: nothing connected yet".to_owned()]);
    }
    let mut passing = Vec::new();
    let mut failing = Vec::new();
    for (name, check) in c.iter() {
        let age = now.saturating_duration_since(check.at);
        if !check.ok {
            failing.push(format!("{name}: {}", check.reason));
        } else if age > check.stale_after {
            failing.push(format!("{name}: no progress reported for {} s", age.as_secs()));
        } else {
            passing.push(format!("{name}: ok"));
        }
    }
    if failing.is_empty() {
        Ok(passing)
    } else {
        Err(failing)
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(path: &str, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(StatusCode::OK, handle.render()),
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match readiness() {
            Ok(lines) => text(StatusCode::OK, format!("ready\n{}\n", lines.join("\n"))),
            Err(lines) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready\n{}\n", lines.join("\n")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz\n".to_owned(),
        ),
    }
}

/// Installs the metrics recorder and serves the endpoint on `listen` (empty:
/// no endpoint, metrics still recorded). With `kafka`, a probe reports the
/// `kafka` check every 5 s from a metadata request.
pub async fn serve(listen: &str, kafka: Option<&KafkaConfig>) -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    super::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    if let Some(kafka) = kafka {
        let kafka = kafka.clone();
        tokio::spawn(async move {
            loop {
                let k = kafka.clone();
                let result = tokio::task::spawn_blocking(move || probe_kafka(&k)).await;
                match result {
                    Ok(Ok(())) => report("kafka", true, "", Duration::from_secs(30)),
                    Ok(Err(reason)) => report("kafka", false, reason, Duration::from_secs(30)),
                    Err(e) => report(
                        "kafka",
                        false,
                        format!("probe failed: {e}"),
                        Duration::from_secs(30),
                    ),
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    if listen.is_empty() {
        return Ok(());
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("metrics.listen {listen:?}: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics endpoint on {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = route(req.uri().path(), &handle);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(())
}

/// One metadata request to the cluster.
fn probe_kafka(kafka: &KafkaConfig) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = crate::transport::base_config(kafka)
        .create()
        .map_err(|e| format!("Kafka client: {e}"))?;
    consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map(|_| ())
        .map_err(|e| format!("Kafka at {} unreachable: {e}", kafka.bootstrap_servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check_fresh_and_passing() {
        // One process-wide registry: this test owns the names it uses.
        report("test-a", true, "", Duration::from_secs(60));
        report("test-b", false, "target unreachable", Duration::from_secs(60));
        let failing = readiness().unwrap_err();
        assert!(
            failing.iter().any(|l| l == "test-b: target unreachable"),
            "{failing:?}"
        );
        report("test-b", true, "", Duration::from_secs(1));
        let later = Instant::now() + Duration::from_secs(30);
        let failing = readiness_at(later).unwrap_err();
        assert_eq!(failing, ["test-b: no progress reported for 30 s"]);
        report("test-b", true, "", Duration::from_secs(60));
        let lines = readiness().unwrap();
        assert!(lines.contains(&"test-a: ok".to_owned()));
    }
}
