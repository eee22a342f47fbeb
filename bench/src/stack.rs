//! The stack under measurement, started and owned by the benchmark: a file-backed Temporal dev
//! server, the database (a fresh SQLite file, or a fresh database on the PostgreSQL server that
//! `DATABASE_URL` names), the provider sandbox (in this process: it is the outside world), and
//! `orderflow worker` and `orderflow api` as child processes, so that each part's CPU and memory
//! can be read apart. Everything is stopped when the [`Stack`] is dropped.
//!
//! It must never point at a database or Temporal namespace someone else uses: it creates its
//! own and leaves them behind for inspection.

use anyhow::{Context, bail};
use orderflow::devserver::{self, DevServer};
use orderflow_sandbox::{Sandbox, SandboxConfig};
use orderflow_store::Db;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use temporalio_client::Client;

pub const WEBHOOK_SECRET: &str = "whsec_orderflow_bench";
pub const JWT_SECRET: &str = "orderflow-bench-jwt-secret";
const PROVIDER_KEY: &str = "sk_sandbox_orderflow_bench";

/// Which database the run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub backend: Backend,
    pub database_url: String,
    pub db: Db,
    pub base: String,
    pub task_queue: String,
    pub temporal_address: String,
    pub client: Client,
    pub sandbox: Sandbox,
    pub server: DevServer,
    worker: Child,
    api: Child,
    /// The PostgreSQL postmaster's pid, when the server runs on this machine.
    pub postmaster: Option<u32>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in [&mut self.worker, &mut self.api] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `orderflow` binary built next to this one (`scripts/bench` builds both).
fn orderflow_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("orderflow");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with the benchmark (`./scripts/bench` does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A fresh database: a SQLite file in `dir`, or `CREATE DATABASE` on `DATABASE_URL`'s server.
async fn fresh_database(dir: &std::path::Path, run: &str) -> anyhow::Result<(Backend, String)> {
    match std::env::var("DATABASE_URL") {
        Ok(admin_url) if admin_url.starts_with("postgres") => {
            let admin = orderflow_store::db::connect(&admin_url)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach DATABASE_URL {}",
                        orderflow::run::redact(&admin_url)
                    )
                })?;
            let name = format!("orderflow_bench_{run}");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .with_context(|| format!("CREATE DATABASE {name}"))?;
            admin.close().await;
            let base = admin_url.split('?').next().unwrap_or(&admin_url);
            let server = &base[..base
                .rfind('/')
                .context("DATABASE_URL has no database name")?];
            Ok((Backend::Postgres, format!("{server}/{name}")))
        }
        Ok(other) if !other.is_empty() && !other.starts_with("sqlite") => {
            bail!("DATABASE_URL must be postgres://... or sqlite://... (or unset for SQLite)")
        }
        _ => Ok((
            Backend::Sqlite,
            format!("sqlite://{}", dir.join("orderflow.db").display()),
        )),
    }
}

/// The postmaster's pid, if PostgreSQL runs here: read from `postmaster.pid` in its data
/// directory (needs a superuser to see `data_directory`; `None` otherwise).
async fn local_postmaster(db: &Db) -> Option<u32> {
    let dir: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            .fetch_one(db)
            .await
            .ok()?;
    let pid = std::fs::read_to_string(format!("{dir}/postmaster.pid")).ok()?;
    pid.lines().next()?.trim().parse().ok()
}

fn spawn(
    bin: &std::path::Path,
    command: &str,
    env: &[(&str, String)],
    log: &std::path::Path,
) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only asks the kernel to kill the child when this process dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("starting `{} {command}`", bin.display()))
}

async fn wait_ready(base: &str, api: &mut Child, log: &std::path::Path) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Some(status) = api.try_wait()? {
            bail!(
                "`orderflow api` exited with {status}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "`orderflow api` was not ready within 60 s; see {}",
        log.display()
    )
}

impl Stack {
    /// Starts everything in `dir` (logs, the dev server's file, the SQLite database).
    pub async fn start(
        dir: PathBuf,
        run: &str,
        temporal_sync: devserver::Synchronous,
        low_latency: bool,
    ) -> anyhow::Result<Stack> {
        let bin = orderflow_binary()?;
        let (backend, database_url) = fresh_database(&dir, run).await?;
        let db = orderflow::run::open_db(&database_url, true).await?;
        let postmaster = match backend {
            Backend::Postgres => local_postmaster(&db).await,
            Backend::Sqlite => None,
        };

        let port = devserver::free_port()?;
        let server = devserver::start(&devserver::StartOptions {
            port,
            ui_port: None,
            db_file: Some(dir.join("temporal.db").display().to_string()),
            synchronous: temporal_sync,
            low_latency,
        })?;
        let temporal_address = server.address.clone();
        let client = orderflow::run::connect_temporal(&temporal_address, "default").await?;
        devserver::register_search_attributes(&client, "default").await?;

        let sandbox_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sandbox_url = format!("http://{}", sandbox_listener.local_addr()?);
        let http_addr = format!("127.0.0.1:{}", devserver::free_port()?);
        let base = format!("http://{http_addr}");
        let sandbox = Sandbox::new(SandboxConfig {
            api_key: PROVIDER_KEY.into(),
            webhook_url: format!("{base}/v1/payments/webhook"),
            webhook_secret: WEBHOOK_SECRET.into(),
            public_url: sandbox_url.clone(),
            webhook_retry_base: Duration::from_millis(500),
            webhook_attempts: 12,
            authorization_ttl: orderflow_sandbox::DEFAULT_AUTHORIZATION_TTL,
        });
        tokio::spawn(sandbox.clone().serve(sandbox_listener));

        let task_queue = format!("orderflow-bench-{run}");
        let env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", database_url.clone()),
            ("TEMPORAL_ADDRESS", temporal_address.clone()),
            ("ORDERFLOW_TASK_QUEUE", task_queue.clone()),
            ("ORDERFLOW_HTTP_ADDR", http_addr),
            ("PAYMENT_PROVIDER_URL", sandbox_url),
            ("PAYMENT_PROVIDER_API_KEY", PROVIDER_KEY.into()),
            ("PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            ("ORDERFLOW_JWT_SECRET", JWT_SECRET.into()),
            ("ORDER_MAX_OPEN_PER_USER", "10000".into()),
            ("ORDERFLOW_WORKER_METRICS_ADDR", "off".into()),
            ("RUST_LOG", "warn,temporalio_sdk_core=error".into()),
        ];
        let worker_log = dir.join("worker.log");
        let api_log = dir.join("api.log");
        let worker = spawn(&bin, "worker", &env, &worker_log)?;
        let mut api = spawn(&bin, "api", &env, &api_log)?;
        wait_ready(&base, &mut api, &api_log).await?;
        Ok(Stack {
            dir,
            backend,
            database_url,
            db,
            base,
            task_queue,
            temporal_address,
            client,
            sandbox,
            server,
            worker,
            api,
            postmaster,
        })
    }

    /// CPU seconds used so far by each part: (Temporal server, worker, API, database).
    /// The database is `None` on SQLite (it runs inside the worker and the API) and when
    /// PostgreSQL runs on another machine.
    pub fn cpu(&self) -> Cpu {
        Cpu {
            temporal: cpu_secs(self.server.pid(), false),
            worker: cpu_secs(self.worker.id(), false),
            api: cpu_secs(self.api.id(), false),
            database: self.postmaster.map(|pid| cpu_secs(pid, true)),
        }
    }

    /// The worker's resident memory, in MB.
    pub fn worker_rss_mb(&self) -> f64 {
        orderflow::run::rss_mb(&self.worker.id().to_string()).unwrap_or(0.0)
    }

    /// Whether the worker and the API are still alive (a crash ends the run with its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in [("worker", &mut self.worker), ("api", &mut self.api)] {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "`orderflow {name}` exited with {status}; see {}",
                    self.dir.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }
}

/// CPU seconds per part, as [`Stack::cpu`] reads them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub temporal: f64,
    pub worker: f64,
    pub api: f64,
    pub database: Option<f64>,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, before: Cpu) -> Cpu {
        Cpu {
            temporal: self.temporal - before.temporal,
            worker: self.worker - before.worker,
            api: self.api - before.api,
            database: self.database.zip(before.database).map(|(a, b)| a - b),
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of `pid`, in seconds; with `tree`, plus its children's (live ones read
/// directly, exited ones through cutime + cstime), as PostgreSQL's backends are.
fn cpu_secs(pid: u32, tree: bool) -> f64 {
    let ticks =
        |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let Some(own) = stat_fields(pid) else {
        return 0.0;
    };
    let mut total = ticks(&own, 11) + ticks(&own, 12);
    if tree {
        total += ticks(&own, 13) + ticks(&own, 14);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(child) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(f) = stat_fields(child) {
                    if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
                        total += ticks(&f, 11) + ticks(&f, 12);
                    }
                }
            }
        }
    }
    total / clock_ticks()
}
