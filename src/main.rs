//! `orderflow`: dev | worker | api | migrate. Thin: parsing and wiring only.

use anyhow::{Context, bail};
use orderflow::config::Config;
use orderflow::{devserver, run};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: orderflow <command>

commands:
  dev                 everything on one machine: a Temporal dev server (started if none is
                      reachable), migrations, the worker and the API in one process
  worker [--schedules]
                      run the order workflows and activities (scale out: run several);
                      --schedules also creates the reconciliation Schedule (every minute)
  api                 serve the REST API
  migrate [up|down]   apply all migrations (default), or revert them all
  audit [--json]      the two-way money audit: every payment the provider captured is
                      applied to one order or refunded (or owned by a running workflow), and
                      every refund at the provider is one orderflow meant; exits 1 when
                      money is stranded or an invariant is broken
  token --sub <user> [--role user|admin] [--ttl <seconds>]
                      mint a client token (HS256 with ORDERFLOW_JWT_SECRET; default 1 day)
  provider-sandbox    a card payment provider on loopback (checkout, refunds, signed
                      webhooks, fault injection); `dev` runs one for you

configuration (environment variables, with defaults):
  DATABASE_URL              sqlite://data/orderflow.db  (or postgres://user:pass@host/db)
  TEMPORAL_ADDRESS          http://127.0.0.1:7233
  TEMPORAL_NAMESPACE        default
  ORDERFLOW_HTTP_ADDR       127.0.0.1:8080
  ORDER_PAYMENT_TIMEOUT     1800 (seconds, 1..86400)
  PAYMENT_WEBHOOK_SECRET    whsec_orderflow_dev (set a real one in production)
  PAYMENT_WEBHOOK_SECRET_PREVIOUS  the old secret, accepted during a rotation
  ORDERFLOW_CURRENCY        USD
  ORDERFLOW_TASK_QUEUE      orderflow-orders
  ORDERFLOW_DATA_DIR        data (the dev server's database file for `dev`)
  TEMPORAL_UI_PORT          8233 (the Web UI of the dev server `dev` starts; off: headless)
  ORDER_CHECKOUT_WINDOW     300 (seconds an open checkout holds off the deadline, 1..3600)
  ORDER_LATE_PAYMENT_GRACE  3600 (seconds a settled order stays open to refund late payments)
  PAYMENT_PROVIDER_URL      http://127.0.0.1:8081 (the sandbox)
  PAYMENT_PROVIDER_API_KEY  sk_sandbox_orderflow_dev (set a real one in production)
  PAYMENT_PROVIDER_TIMEOUT  10 (seconds per provider call)
  SANDBOX_ADDR              127.0.0.1:8081 (provider-sandbox and dev)
  SANDBOX_WEBHOOK_URL       http://<ORDERFLOW_HTTP_ADDR>/v1/payments/webhook
  ORDERFLOW_JWT_SECRET      orderflow-dev-jwt-secret (set a real one in production)
  ORDER_MAX_OPEN_PER_USER   10 (unpaid orders a user may have open at once)
  ORDERFLOW_WORKER_METRICS_ADDR  127.0.0.1:9464 (the worker's Temporal metrics; off disables)
  ORDERFLOW_RECONCILE_EVERY 60 (seconds between reconciliation runs)
  ORDER_RECONCILE_STALE_AFTER  300 (seconds past its deadline before a pending order is examined)
  WEBHOOK_INBOX_RETENTION   2592000 (seconds processed webhook events are kept: 30 days)
  ORDERFLOW_SHUTDOWN_GRACE  30 (seconds to finish requests and activities after SIGTERM)
  ORDERFLOW_METRICS_CACHE   10 (seconds /metrics reuses its database counts; 0: every scrape)
  ORDERFLOW_WORKFLOW_CACHE  1000 (workflows the worker keeps in memory; 0: none)
  ORDERFLOW_WORKER_MAX_RSS_MB  0 (off; MB of resident memory at which `worker` stops gracefully
                            and exits with an error, for its supervisor to restart it)
  PAYMENT_UNKNOWN_ORDER_HOLD  3600 (seconds a payment for an unknown order waits before its refund)
  WEBHOOK_INBOX_REDRIVE_AFTER 60 (seconds before reconciliation hands on an unprocessed event)
  ORDER_CAPTURE             immediate (or at_shipment: physical goods are authorized at
                            checkout and captured when they ship)
  ORDER_AUTHORIZATION_EXPIRY  capture (or void: cancel an order whose authorization nears
                            capture_before unshipped)
  ORDER_AUTHORIZATION_MARGIN  86400 (seconds before capture_before that the order acts)
  SANDBOX_AUTHORIZATION_TTL 604800 (seconds the sandbox lets an authorization be captured)
  RUST_LOG                  info
";

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,temporalio_sdk_core=warn"));
    let json = std::env::var("ORDERFLOW_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str);
    // `orderflow dev --help` is a request for help too, not an unknown command.
    let asks_help = args.iter().any(|a| a == "-h" || a == "--help");
    if asks_help || matches!(command, None | Some("help")) {
        print!("{USAGE}");
        return Ok(());
    }
    init_tracing();
    let config = Config::from_env()?;
    match (command.unwrap_or_default(), args.get(1).map(String::as_str)) {
        ("dev", None) => dev(config).await,
        ("worker", None) => worker(config, false).await,
        ("worker", Some("--schedules")) => worker(config, true).await,
        ("api", None) => api(config).await,
        ("migrate", None | Some("up")) => {
            run::open_db(&config.database_url, true).await?;
            println!(
                "migrations applied to {}",
                run::redact(&config.database_url)
            );
            Ok(())
        }
        ("audit", flag @ (None | Some("--json"))) => audit(config, flag.is_some()).await,
        ("token", _) => {
            println!("{}", mint_token(&config, &args[1..])?);
            Ok(())
        }
        ("provider-sandbox", None) => {
            let (sandbox, listener) = run::bind_sandbox(&config).await?;
            println!(
                "provider sandbox on http://{}, webhooks to {}",
                listener.local_addr()?,
                config.sandbox_webhook_url
            );
            tokio::select! {
                result = sandbox.serve(listener) => result.context("sandbox")?,
                _ = run::shutdown_signal() => {}
            }
            Ok(())
        }
        ("migrate", Some("down")) => {
            let db = run::open_db(&config.database_url, false).await?;
            orderflow_store::db::migrate_down(&db, 0)
                .await
                .context("reverting migrations")?;
            println!(
                "migrations reverted on {}",
                run::redact(&config.database_url)
            );
            Ok(())
        }
        _ => bail!("unknown command {:?}\n\n{USAGE}", args.join(" ")),
    }
}

/// `orderflow token --sub alice [--role admin] [--ttl 3600]`.
fn mint_token(config: &Config, args: &[String]) -> anyhow::Result<String> {
    let (mut sub, mut role, mut ttl) = (None, orderflow_api::auth::Role::User, 86_400u64);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        match flag.as_str() {
            "--sub" => sub = Some(value.clone()),
            "--role" => {
                role = match value.as_str() {
                    "user" => orderflow_api::auth::Role::User,
                    "admin" => orderflow_api::auth::Role::Admin,
                    other => bail!("--role must be user or admin, got {other:?}"),
                }
            }
            "--ttl" => {
                ttl = value
                    .parse()
                    .with_context(|| format!("--ttl {value:?} is not a number of seconds"))?
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    let sub = sub.with_context(|| format!("token needs --sub <user>\n\n{USAGE}"))?;
    Ok(orderflow_api::auth::mint(
        &config.jwt_secret,
        &sub,
        role,
        ttl,
    ))
}

/// `orderflow audit`: prints the report and exits 1 if anything is wrong.
async fn audit(config: Config, json: bool) -> anyhow::Result<()> {
    let db = run::open_db(&config.database_url, false).await?;
    let client =
        run::connect_temporal(&config.temporal_address, &config.temporal_namespace).await?;
    let provider = orderflow_provider::PaymentProvider::new(&config.provider)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "auditing {} against the provider at {} ...",
        run::redact(&config.database_url),
        config.provider.base_url
    );
    let report =
        orderflow_activities::audit::run(&db, &provider, &client, orderflow_store::now_ms())
            .await
            .context("the audit could not read everything it needs")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.is_clean() {
        std::process::exit(1);
    }
    Ok(())
}

/// The reconciliation Schedule's id.
const RECONCILE_SCHEDULE: &str = "orderflow-reconcile";

async fn reconcile_schedule(
    client: &temporalio_client::Client,
    config: &Config,
) -> anyhow::Result<()> {
    run::ensure_reconcile_schedule(
        client,
        RECONCILE_SCHEDULE,
        &config.task_queue,
        std::time::Duration::from_secs(config.reconcile_every_secs),
        config.reconcile_input(),
    )
    .await?;
    tracing::info!(
        schedule = RECONCILE_SCHEDULE,
        every_secs = config.reconcile_every_secs,
        "reconciliation scheduled"
    );
    Ok(())
}

async fn worker(config: Config, schedules: bool) -> anyhow::Result<()> {
    let db = run::open_db(&config.database_url, false).await?;
    let client =
        run::connect_temporal(&config.temporal_address, &config.temporal_namespace).await?;
    if schedules {
        reconcile_schedule(&client, &config).await?;
    }
    let (runtime, metrics) = run::sdk_runtime(config.worker_metrics_addr)?;
    run::deliver_events(db.clone(), config.events.clone())?;
    let mut worker = run::worker(
        &runtime,
        client,
        db,
        &config.provider,
        &config.worker_settings(),
    )?;
    tracing::info!(task_queue = %config.task_queue, metrics = ?metrics, "worker polling");
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    match run::run_worker_until_signal(&mut worker, grace, config.worker_max_rss_mb, || {}).await? {
        run::WorkerStopped::MemoryLimit { rss_mb, limit_mb } => bail!(
            "the worker stopped at {rss_mb} MB resident, over ORDERFLOW_WORKER_MAX_RSS_MB={limit_mb}; \
             start it again (its supervisor should: it exits with an error so that a restart policy fires)"
        ),
        run::WorkerStopped::Finished | run::WorkerStopped::Signal => Ok(()),
    }
}

async fn api(config: Config) -> anyhow::Result<()> {
    let db = run::open_db(&config.database_url, false).await?;
    let client =
        run::connect_temporal(&config.temporal_address, &config.temporal_namespace).await?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, "API listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let config = config.clone();
        async move {
            run::serve_api(listener, db, client, &config, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    run::shutdown_signal().await;
    tracing::info!(
        grace_secs = config.shutdown_grace_secs,
        "stopping the API: no new connections, requests in flight finish"
    );
    let _ = stop.send(());
    match tokio::time::timeout(
        std::time::Duration::from_secs(config.shutdown_grace_secs),
        server,
    )
    .await
    {
        Ok(joined) => joined.context("API task")?,
        Err(_) => {
            tracing::warn!("requests still in flight after the grace period are cut off");
            Ok(())
        }
    }
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    let mut _server = None;
    if !devserver::reachable(&config.temporal_address) {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir))?;
        let port = config
            .temporal_address
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(7233);
        println!(
            "starting a Temporal dev server on port {port} (data in {}/temporal.db) ...",
            config.data_dir
        );
        let server = devserver::start(&devserver::StartOptions {
            port,
            ui_port: config.temporal_ui_port,
            db_file: Some(format!("{}/temporal.db", config.data_dir)),
            synchronous: devserver::Synchronous::Normal,
            low_latency: true,
        })?;
        config.temporal_address = server.address.clone();
        _server = Some(server);
    }
    let client =
        run::connect_temporal(&config.temporal_address, &config.temporal_namespace).await?;
    devserver::register_search_attributes(&client, &config.temporal_namespace).await?;
    let db = run::open_db(&config.database_url, true).await?;
    reconcile_schedule(&client, &config).await?;
    let (runtime, worker_metrics) = run::sdk_runtime(config.worker_metrics_addr)?;
    // The provider sandbox, unless a real provider is configured.
    let mut sandbox_line = String::from("(PAYMENT_PROVIDER_URL)");
    if std::env::var("PAYMENT_PROVIDER_URL").is_err() {
        let (sandbox, listener) = run::bind_sandbox(&config).await?;
        let url = format!("http://{}", listener.local_addr()?);
        config.provider.base_url = url.clone();
        sandbox_line = format!("{url} (sandbox; pay a session with POST <pay_url>)");
        tokio::spawn(sandbox.serve(listener));
    }
    run::deliver_events(db.clone(), config.events.clone())?;
    let mut worker = run::worker(
        &runtime,
        client.clone(),
        db.clone(),
        &config.provider,
        &config.worker_settings(),
    )?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let worker_metrics = worker_metrics
        .map(|a| format!("http://{a}/metrics"))
        .unwrap_or_else(|| "off".into());
    let http = &config.http_addr;
    let user_token = orderflow_api::auth::mint(
        &config.jwt_secret,
        "alice",
        orderflow_api::auth::Role::User,
        86_400,
    );
    let admin_token = orderflow_api::auth::mint(
        &config.jwt_secret,
        "admin",
        orderflow_api::auth::Role::Admin,
        86_400,
    );
    let ui = _server
        .as_ref()
        .map(|s| s.ui_url.clone())
        .unwrap_or_else(|| "(the UI of your Temporal server)".into());
    println!(
        "\norderflow dev is running\n  API            http://{}\n  Temporal UI    {ui}\n  Temporal       {}\n  database       {}\n  provider       {sandbox_line}\n  webhook secret {}\n  payment timeout {} s\n  metrics        http://{http}/metrics (API), {worker_metrics} (worker)\n  user token     {user_token}   (alice, 1 day)\n  admin token    {admin_token}   (1 day)\nCtrl-C stops everything.\n",
        config.http_addr,
        config.temporal_address,
        run::redact(&config.database_url),
        config.webhook_secrets[0],
        config.payment_timeout_secs
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn({
        let (db, client, config) = (db.clone(), client.clone(), config.clone());
        async move {
            run::serve_api(listener, db, client, &config, async {
                let _ = rx.await;
            })
            .await
        }
    });
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    // `orderflow dev` has no supervisor to start a worker again: no memory limit here.
    let stopped = run::run_worker_until_signal(&mut worker, grace, None, || {
        println!("stopping ...");
        let _ = tx.send(());
    })
    .await;
    stopped?;
    api.await.context("API task")??;
    Ok(())
}
