//! Fault points for the crash tests: places in the activities that move money or stock where a
//! test can stop the worker dead, just before a transaction commits or just after it committed
//! and before the activity reports back.
//!
//! Compiled in only with the `faults` feature (the test command enables it); without it
//! [`point`] is an empty inline function. A release build never carries them.
//!
//! A test arms a point for named orders through the `fail` crate's `FAILPOINTS` variable, with
//! the orders as the `return` argument:
//!
//! ```text
//! FAILPOINTS='capture.after_commit=return(ord_a,ord_b);reserve.before_commit=return(ord_c/wallet)'
//! ```
//!
//! `ord_c/wallet` names one resource's reservation; `ord_c` alone, any. When a point is reached
//! for an armed order, the worker kills itself with SIGKILL (no destructor, no flush, no reply
//! to the server).
//!
//! An `after_commit` point armed with `lost_ack:ord_a` instead fails the activity as if the
//! database's answer to the commit had been lost: the transaction committed, and the activity
//! reports a transient connection error, so Temporal retries it.
//!
//! Each point fires once per order and resource, across restarts: the first firing leaves a
//! marker file in `ORDERFLOW_FAULTS_DIR`, and a restarted worker with the same arming passes
//! that point. Points must never change what the activity does otherwise.

/// Every point, for tests and docs: `<step>.<when>`.
pub const POINTS: [&str; 18] = [
    "reserve.before_commit",
    "reserve.after_commit",
    "capture.before_commit",
    "capture.after_commit",
    "release.before_commit",
    "release.after_commit",
    "return.before_commit",
    "return.after_commit",
    "fulfil.before_commit",
    "fulfil.after_commit",
    "refund.before_provider",
    "refund.after_provider",
    "refund_result.before_commit",
    "refund_result.after_commit",
    "order_refund.before_commit",
    "order_refund.after_commit",
    "capture_authorization.before_commit",
    "capture_authorization.after_commit",
];

/// Points outside the money path: after an event's POST was answered and before the answer is
/// recorded (`events_out`). The crash tests of [`POINTS`] do not reach them.
pub const DELIVERY_POINTS: [&str; 1] = ["event_delivery.after_post"];

/// Reads `FAILPOINTS` once, at worker start. A no-op without the `faults` feature.
pub fn setup() {
    // `fail::FailScenario` would hold a process-wide lock for as long as the arming lasts,
    // and tests run several workers in one process: the points are configured one by one.
    #[cfg(feature = "faults")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let Ok(spec) = std::env::var("FAILPOINTS") else {
                return;
            };
            for entry in spec.split(';').filter(|e| !e.trim().is_empty()) {
                let (name, actions) = entry.split_once('=').unwrap_or_else(|| {
                    panic!("FAILPOINTS entry {entry:?} is not <point>=<actions>")
                });
                fail::cfg(name.trim(), actions.trim())
                    .unwrap_or_else(|e| panic!("FAILPOINTS entry {entry:?}: {e}"));
            }
            let points = spec.split(';').filter(|e| !e.trim().is_empty()).count();
            tracing::warn!(
                points,
                "fault points armed: this worker kills itself where a test asked"
            );
        });
    }
}

/// Stops the process here if a test armed `name` for this order (and resource).
#[inline(always)]
pub fn point(name: &str, order_id: &str, resource: Option<&str>) {
    #[cfg(feature = "faults")]
    if fire(name, order_id, resource) == Some(Fault::LostAck) {
        // Only an `after_commit` point has a commit whose answer could be lost.
        panic!("fault point {name} is armed with lost_ack, which only after_commit points take");
    }
    #[cfg(not(feature = "faults"))]
    let _ = (name, order_id, resource);
}

/// An `after_commit` point: stops the process if armed to, and answers whether the test asked
/// for the commit's acknowledgement to be lost (`lost_ack:<order>`).
#[inline(always)]
pub fn after_commit(name: &str, order_id: &str, resource: Option<&str>) -> bool {
    #[cfg(feature = "faults")]
    if fire(name, order_id, resource) == Some(Fault::LostAck) {
        return true;
    }
    let _ = (name, order_id, resource);
    false
}

/// What an armed point does when it is reached.
#[cfg(feature = "faults")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    LostAck,
}

/// Which fault, if any, `name` is armed with for this order (and resource), the first time it
/// is reached. A kill does not return.
#[cfg(feature = "faults")]
fn fire(name: &str, order_id: &str, resource: Option<&str>) -> Option<Fault> {
    // A name not in the lists could never be armed by a test that reads them.
    assert!(
        POINTS.contains(&name) || DELIVERY_POINTS.contains(&name),
        "fault point {name} is not in faults::POINTS or faults::DELIVERY_POINTS"
    );
    let Some(Some(armed)) = fail::eval(name, |arg| arg) else {
        return None;
    };
    let fault = armed.split(',').map(str::trim).find_map(|target| {
        let (fault, target) = match target.strip_prefix("lost_ack:") {
            Some(rest) => (Fault::LostAck, rest),
            None => (Fault::Kill, target),
        };
        let hit = match target.split_once('/') {
            Some((order, only)) => order == order_id && Some(only) == resource,
            None => target == order_id,
        };
        hit.then_some(fault)
    })?;
    // One death per marker: a kill holds this lock from its marker to the SIGKILL, so another
    // thread of the process reaching an armed point meanwhile waits here and dies with it,
    // before it leaves a marker of its own (its point fires again in the next worker).
    static DYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _dying = (fault == Fault::Kill).then(|| DYING.lock().unwrap_or_else(|e| e.into_inner()));
    let key = format!("{name}@{order_id}@{}", resource.unwrap_or("-"));
    if let Some(dir) = std::env::var_os("ORDERFLOW_FAULTS_DIR") {
        let marker = std::path::Path::new(&dir).join(&key);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        if !first {
            return None;
        }
    }
    eprintln!("orderflow fault point {key}: {fault:?}");
    if fault == Fault::Kill {
        kill();
    }
    Some(fault)
}

/// SIGKILL, as an OOM killer or a node loss would: no unwinding, no flush, no core file.
#[cfg(feature = "faults")]
fn kill() -> ! {
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL returned")
}
