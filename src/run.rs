//! Connecting and running: the Temporal client, the worker, the API server.
//!
//! Used by every subcommand and by the end-to-end tests, so that tests run exactly what
//! production runs.

use crate::config::Config;
use anyhow::{Context, anyhow};
use orderflow_activities::{OrderActivitiesImpl, OrderSettings};
use orderflow_provider::{PaymentProvider, ProviderConfig};
use orderflow_store::Db;
use orderflow_workflows::model::ReconcileInput;
use orderflow_workflows::{
    BaselineWorkflow, OrderRefundWorkflow, OrderWorkflow, PaymentDecisionWorkflow,
    ReconcileWorkflow, RedemptionWorkflow, RefundWorkflow,
};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use temporalio_client::errors::ClientConnectError;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// How long `connect_temporal` waits for a server that answers but is still starting.
const TEMPORAL_STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects to the Temporal frontend.
///
/// A server that accepts the connection but answers `Unavailable` ("Frontend is not healthy
/// yet") is starting: that is waited for, up to a minute, with one log line. Anything else, and
/// a server still starting after that, is an error at once.
pub async fn connect_temporal(address: &str, namespace: &str) -> anyhow::Result<Client> {
    let url = Url::from_str(address)
        .with_context(|| format!("TEMPORAL_ADDRESS {address:?} is not a URL"))?;
    let options = ConnectionOptions::new(url)
        .identity(format!("orderflow@{}", std::process::id()))
        .build();
    let started = std::time::Instant::now();
    let mut told = false;
    let connection = loop {
        match Connection::connect(options.clone()).await {
            Err(ClientConnectError::SystemInfoCallError(status))
                if status.code() == temporalio_client::tonic::Code::Unavailable
                    && started.elapsed() < TEMPORAL_STARTING_WAIT =>
            {
                if !told {
                    tracing::info!(%address, reason = status.message(), "Temporal is starting; waiting for it");
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            result => {
                break result.with_context(|| {
                    format!("cannot reach Temporal at {address}; is the server running?")
                })?;
            }
        }
    };
    Client::new(connection, ClientOptions::new(namespace.to_owned()).build())
        .map_err(|e| anyhow!("{e}"))
}

/// Opens the database, applying migrations if `migrate` is set.
pub async fn open_db(url: &str, migrate: bool) -> anyhow::Result<Db> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
    {
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let db = orderflow_store::db::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))?;
    if migrate {
        orderflow_store::db::migrate_up(&db)
            .await
            .context("applying migrations")?;
    }
    Ok(db)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// What a worker runs with, beyond its connections (`Config::worker_settings`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub task_queue: String,
    /// How long a payment for an unknown order is held before it is refunded.
    pub unknown_order_hold_secs: u64,
    /// What an order workflow started again by reconciliation carries.
    pub order: OrderSettings,
    /// Workflows kept in memory between their tasks (the SDK's sticky cache).
    pub workflow_cache: usize,
}

/// Builds the worker for order and refund workflows and their activities on its task queue.
pub fn worker(
    runtime: &Runtime,
    client: Client,
    db: Db,
    provider: &ProviderConfig,
    settings: &WorkerSettings,
) -> anyhow::Result<Worker> {
    let provider = PaymentProvider::new(provider).map_err(|e| anyhow!("{e}"))?;
    // Fault points a crash test armed (a build with the `faults` feature only).
    orderflow_activities::faults::setup();
    let options = WorkerOptions::new(&settings.task_queue)
        .max_cached_workflows(settings.workflow_cache)
        .register_workflow::<OrderWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_workflow::<RefundWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_workflow::<OrderRefundWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_workflow::<RedemptionWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_workflow::<ReconcileWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_workflow::<PaymentDecisionWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        // The benchmark's bare workflow (`orderflow-bench`); no order runs it.
        .register_workflow::<BaselineWorkflow>()
        .map_err(|e| anyhow!("{e}"))?
        .register_activities(OrderActivitiesImpl::new(
            db,
            provider,
            settings.unknown_order_hold_secs,
            settings.order,
        ))
        .build();
    Worker::new(runtime, client, options).map_err(|e| anyhow!("{e}"))
}

/// The provider sandbox of `orderflow dev` and `orderflow provider-sandbox`, bound to
/// `config.sandbox_addr`, signing webhooks with the current webhook secret.
pub async fn bind_sandbox(
    config: &Config,
) -> anyhow::Result<(orderflow_sandbox::Sandbox, tokio::net::TcpListener)> {
    let listener = tokio::net::TcpListener::bind(&config.sandbox_addr)
        .await
        .with_context(|| format!("cannot listen on {} (SANDBOX_ADDR)", config.sandbox_addr))?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let sandbox = orderflow_sandbox::Sandbox::new(orderflow_sandbox::SandboxConfig {
        api_key: config.provider.api_key.clone(),
        webhook_url: config.sandbox_webhook_url.clone(),
        webhook_secret: config.webhook_secrets[0].clone(),
        public_url,
        webhook_retry_base: std::time::Duration::from_millis(500),
        webhook_attempts: 12,
        authorization_ttl: std::time::Duration::from_secs(config.sandbox_authorization_ttl_secs),
    });
    Ok((sandbox, listener))
}

/// Creates the Schedule that runs the `reconcile` workflow every `every` on `task_queue`. An
/// existing schedule of that id is kept as it is (its runs and history stay visible).
pub async fn ensure_reconcile_schedule(
    client: &Client,
    schedule_id: &str,
    task_queue: &str,
    every: std::time::Duration,
    input: ReconcileInput,
) -> anyhow::Result<temporalio_client::schedules::ScheduleHandle<Client>> {
    use temporalio_client::schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec,
    };
    let options = CreateScheduleOptions::builder()
        .action(ScheduleAction::start_workflow(
            ReconcileWorkflow::run,
            input,
            task_queue,
            format!("{schedule_id}-run"),
        ))
        .spec(ScheduleSpec::from_interval(every))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .note("orderflow: repairs orders whose row and workflow disagree; purges the webhook inbox")
        .build();
    match client.create_schedule(schedule_id, options).await {
        Ok(handle) => Ok(handle),
        Err(temporalio_client::schedules::ScheduleError::Rpc(status))
            if status.code() == temporalio_client::tonic::Code::AlreadyExists =>
        {
            Ok(client.get_schedule_handle(schedule_id))
        }
        Err(e) => Err(anyhow!("cannot create the schedule {schedule_id}: {e}")),
    }
}

/// The SDK runtime on the current tokio runtime. With `metrics_addr`, the SDK's Prometheus
/// exporter serves the worker's own metrics (task slots, polls, latencies) there; the address
/// it bound is returned (port 0 picks one).
pub fn sdk_runtime(
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<(Runtime, Option<std::net::SocketAddr>)> {
    use temporalio_common::telemetry::{
        PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
    };
    let Some(addr) = metrics_addr else {
        let runtime =
            Runtime::from_current_tokio(Default::default()).map_err(|e| anyhow!("{e}"))?;
        return Ok((runtime, None));
    };
    let exporter = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            .counters_total_suffix(true)
            .build(),
    )
    .with_context(|| format!("cannot serve worker metrics on {addr}"))?;
    let telemetry =
        TelemetryOptions::builder()
            .metrics(
                exporter.meter.clone() as Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>
            )
            .build();
    let options = temporalio_sdk::runtime::RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let runtime = Runtime::from_current_tokio(options).map_err(|e| anyhow!("{e}"))?;
    Ok((runtime, Some(exporter.bound_addr)))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes requests in flight.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    db: Db,
    client: Client,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let api_config = Arc::new(config.api());
    let engine = orderflow_api::temporal::TemporalEngine {
        client,
        config: api_config.clone(),
    };
    let state = orderflow_api::AppState {
        db,
        engine: Arc::new(engine),
        config: api_config,
        metrics: Arc::new(orderflow_api::metrics::Metrics::new(
            std::time::Duration::from_secs(config.metrics_cache_secs),
        )),
        provider: PaymentProvider::new(&config.provider).map_err(|e| anyhow!("{e}"))?,
    };
    axum::serve(listener, orderflow_api::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server")
}

/// Starts delivering the outbox's events to their subscribers on the current runtime, for as
/// long as it runs (`orderflow_activities::events_out`). Every worker process runs one; leases
/// keep them off each other's deliveries.
pub fn deliver_events(
    db: Db,
    settings: orderflow_activities::events_out::DispatchSettings,
) -> anyhow::Result<()> {
    let dispatcher = orderflow_activities::events_out::Dispatcher::new(db, settings)
        .context("cannot build the event dispatcher's HTTP client")?;
    tokio::spawn(dispatcher.run());
    Ok(())
}

/// Runs the worker until it ends, Ctrl-C/SIGTERM arrives, or the process's resident memory
/// passes `max_rss_mb` (checked every 5 s; `None`: never). Then `on_stop` runs, the worker
/// stops polling, and running activities get `grace` to finish; after that they are handed back
/// (they time out on the server and another worker retries them, idempotently).
///
/// One `run()` future is polled throughout: dropping it mid-flight and calling `run()` again
/// would lose the workflows it holds.
pub async fn run_worker_until_signal(
    worker: &mut Worker,
    grace: std::time::Duration,
    max_rss_mb: Option<u64>,
    on_stop: impl FnOnce(),
) -> anyhow::Result<WorkerStopped> {
    let stop = worker.shutdown_handle();
    let run = worker.run();
    tokio::pin!(run);
    let stopped = tokio::select! {
        result = &mut run => return result.context("worker").map(|()| WorkerStopped::Finished),
        _ = shutdown_signal() => WorkerStopped::Signal,
        over = memory_limit_reached(max_rss_mb) => over,
    };
    match stopped {
        WorkerStopped::MemoryLimit { rss_mb, limit_mb } => tracing::warn!(
            rss_mb,
            limit_mb,
            grace_secs = grace.as_secs(),
            "the worker's memory passed ORDERFLOW_WORKER_MAX_RSS_MB: stopping it to be restarted; \
             no new tasks, running activities finish"
        ),
        _ => tracing::info!(
            grace_secs = grace.as_secs(),
            "stopping the worker: no new tasks, running activities finish"
        ),
    }
    on_stop();
    stop();
    match tokio::time::timeout(grace, &mut run).await {
        Ok(result) => result.context("worker shutdown")?,
        Err(_) => {
            tracing::warn!("activities still running after the grace period are handed back")
        }
    }
    Ok(stopped)
}

/// Why [`run_worker_until_signal`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStopped {
    /// The worker ended by itself.
    Finished,
    /// Ctrl-C or SIGTERM.
    Signal,
    /// The process's resident memory passed `ORDERFLOW_WORKER_MAX_RSS_MB`: the process should
    /// exit with an error, so that its supervisor starts a fresh one.
    MemoryLimit { rss_mb: u64, limit_mb: u64 },
}

/// A process's resident memory in MB (`pid`: a number, or `self`), from `/proc` (Linux);
/// `None` where it cannot be read.
pub fn rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Resolves once this process's RSS passes `limit_mb` (checked every 5 s); never without a
/// limit, or where RSS cannot be read.
async fn memory_limit_reached(limit_mb: Option<u64>) -> WorkerStopped {
    let Some(limit_mb) = limit_mb else {
        return std::future::pending().await;
    };
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        match rss_mb("self") {
            Some(rss) if rss > limit_mb as f64 => {
                return WorkerStopped::MemoryLimit {
                    rss_mb: rss as u64,
                    limit_mb,
                };
            }
            Some(_) => {}
            None => return std::future::pending().await,
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact("sqlite://data/orderflow.db"),
            "sqlite://data/orderflow.db"
        );
    }
}
