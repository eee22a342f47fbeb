//! The run's figures: one serializable record (written as `results/<date>-<db>.json`) and the
//! table printed at the end, with the ratios the issue asks for.

use crate::load::{Level, Storm, sustained, sustained_level};
use crate::probe::Cost;
use crate::stack::Cpu;
use crate::stats::{Percentiles, ms};
use serde::Serialize;
use std::fmt::Write;

/// CPU seconds per 1,000 lifecycles, per part.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuPer1000 {
    pub temporal: f64,
    pub worker: f64,
    pub api: f64,
    /// PostgreSQL's backends; `None` on SQLite (inside the worker and the API) or a remote server.
    pub database: Option<f64>,
}

impl CpuPer1000 {
    pub fn of(used: Cpu, lifecycles: u64) -> CpuPer1000 {
        let per = |s: f64| s * 1000.0 / lifecycles.max(1) as f64;
        CpuPer1000 {
            temporal: per(used.temporal),
            worker: per(used.worker),
            api: per(used.api),
            database: used.database.map(per),
        }
    }

    fn total(&self) -> f64 {
        self.temporal + self.worker + self.api + self.database.unwrap_or(0.0)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct System {
    pub levels: Vec<Level>,
    pub sustained_per_sec: f64,
    pub cpu_per_1000: CpuPer1000,
    pub latency_over_time: Vec<(f64, f64)>,
    pub webhook_to_paid_unloaded: Percentiles,
    pub webhook_to_paid_loaded: Percentiles,
    pub webhook_loaded_at_per_sec: f64,
    pub cost_paid: Cost,
    pub cost_expired: Cost,
    pub storm: Storm,
    /// orderflow only: deadline to the workflow's cancel decision, from the rows.
    pub storm_decided: Percentiles,
    pub worker_rss_mb_with_storm_open: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub database: String,
    pub smoke: bool,
    pub machine: String,
    /// The worker's `ORDERFLOW_WORKFLOW_CACHE`, as the run had it (it moves the worker's RSS).
    pub workflow_cache: String,
    /// The dev server's SQLite `synchronous` pragma (normal unless `--temporal-sync full`).
    pub temporal_sync: String,
    /// The dev server's dynamic config: `devserver::LOW_LATENCY` as `key=value, ...` (unless
    /// `--temporal-config stock`), or `stock`. Runs committed before 2026-11-23 had `stock`.
    pub temporal_config: String,
    pub storm_n: u64,
    pub sweep_scale: f64,
    pub orderflow: System,
    pub bare: System,
    pub sweep: System,
    pub coupons_made_inline: u64,
    pub ratios: Ratios,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    /// orderflow's sustained lifecycles/s ÷ the bare workflow's (goal ≥ 0.8).
    pub throughput_orderflow_over_bare: f64,
    /// orderflow's storm drain ÷ the bare workflow's (goal ≤ 1.25).
    pub storm_drain_orderflow_over_bare: f64,
    /// The sweep's storm drain ÷ orderflow's (goal ≥ 100).
    pub storm_drain_sweep_over_orderflow: f64,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {model}")
}

impl Results {
    pub fn new(
        smoke: bool,
        database: &str,
        storm_n: u64,
        sweep_scale: f64,
        temporal_sync: orderflow::devserver::Synchronous,
        low_latency: bool,
    ) -> Results {
        let today = time::OffsetDateTime::now_utc().date();
        Results {
            date: format!("{today}"),
            database: database.to_owned(),
            smoke,
            machine: machine(),
            workflow_cache: std::env::var("ORDERFLOW_WORKFLOW_CACHE")
                .unwrap_or_else(|_| "default".into()),
            temporal_sync: temporal_sync.pragma().to_owned(),
            temporal_config: if low_latency {
                orderflow::devserver::LOW_LATENCY
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                "stock".to_owned()
            },
            storm_n,
            sweep_scale,
            orderflow: System::default(),
            bare: System::default(),
            sweep: System::default(),
            coupons_made_inline: 0,
            ratios: Ratios::default(),
        }
    }

    /// Fills in what is derived from the measurements.
    pub fn finish(&mut self) {
        self.orderflow.sustained_per_sec = sustained(&self.orderflow.levels);
        self.bare.sustained_per_sec = sustained(&self.bare.levels);
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.ratios = Ratios {
            throughput_orderflow_over_bare: div(
                self.orderflow.sustained_per_sec,
                self.bare.sustained_per_sec,
            ),
            storm_drain_orderflow_over_bare: div(
                self.orderflow.storm.drain_secs,
                self.bare.storm.drain_secs,
            ),
            storm_drain_sweep_over_orderflow: div(
                self.sweep.storm.drain_secs,
                self.orderflow.storm.drain_secs,
            ),
        };
    }

    pub fn table(&self) -> String {
        let (o, b, s) = (&self.orderflow, &self.bare, &self.sweep);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\norderflow-bench {} · {} · {} · workflow cache {} · Temporal synchronous={} · dynamic config: {}{}",
            self.date,
            self.database,
            self.machine,
            self.workflow_cache,
            self.temporal_sync,
            self.temporal_config,
            if self.smoke {
                " · SMOKE (figures mean nothing)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            t,
            "{:<44} {:>22} {:>22} {:>22}",
            "", "orderflow", "bare workflow", "sweep (unscaled)"
        );
        let row = |t: &mut String, name: &str, a: String, b: String, c: String| {
            let _ = writeln!(t, "{name:<44} {a:>22} {b:>22} {c:>22}");
        };
        row(
            &mut t,
            "lifecycles/s, sustained",
            format!("{:.1}", o.sustained_per_sec),
            format!("{:.1}", b.sustained_per_sec),
            "-".into(),
        );
        let best_create = |sys: &System| {
            sustained_level(&sys.levels)
                .map(|l| format!("{:.0}/{:.0} ms", l.create.p50_ms, l.create.p99_ms))
                .unwrap_or_default()
        };
        row(
            &mut t,
            "create p50/p99 at the sustained level",
            best_create(o),
            best_create(b),
            "-".into(),
        );
        row(
            &mut t,
            "webhook -> paid, unloaded (p50/p99/max)",
            o.webhook_to_paid_unloaded.show(),
            "-".into(),
            "-".into(),
        );
        row(
            &mut t,
            &format!(
                "webhook -> paid at {:.1}/s (p50/p99/max)",
                o.webhook_loaded_at_per_sec
            ),
            o.webhook_to_paid_loaded.show(),
            "-".into(),
            "-".into(),
        );
        let storm = |x: &Storm| x.settled.show();
        row(
            &mut t,
            &format!("storm of {}: deadline -> settled", self.storm_n),
            storm(&o.storm),
            storm(&b.storm),
            storm(&s.storm),
        );
        row(
            &mut t,
            "  (orderflow: deadline -> cancel decided)",
            o.storm_decided.show(),
            "-".into(),
            "-".into(),
        );
        row(
            &mut t,
            "  deadlines spread over",
            ms(o.storm.deadline_spread_ms),
            ms(b.storm.deadline_spread_ms),
            ms(s.storm.deadline_spread_ms),
        );
        row(
            &mut t,
            "  drain after the last deadline",
            ms(o.storm.drain_secs * 1000.0),
            ms(b.storm.drain_secs * 1000.0),
            ms(s.storm.drain_secs * 1000.0),
        );
        row(
            &mut t,
            "CPU s per 1,000 lifecycles: Temporal",
            format!("{:.1}", o.cpu_per_1000.temporal),
            format!("{:.1}", b.cpu_per_1000.temporal),
            "-".into(),
        );
        row(
            &mut t,
            "  worker",
            format!("{:.1}", o.cpu_per_1000.worker),
            format!("{:.1}", b.cpu_per_1000.worker),
            "-".into(),
        );
        row(
            &mut t,
            "  API",
            format!("{:.1}", o.cpu_per_1000.api),
            "-".into(),
            "-".into(),
        );
        let dbcpu = |c: &CpuPer1000| {
            c.database
                .map_or("in-process".into(), |d| format!("{d:.1}"))
        };
        row(
            &mut t,
            "  database",
            dbcpu(&o.cpu_per_1000),
            dbcpu(&b.cpu_per_1000),
            "-".into(),
        );
        row(
            &mut t,
            "  total",
            format!("{:.1}", o.cpu_per_1000.total()),
            format!("{:.1}", b.cpu_per_1000.total()),
            "-".into(),
        );
        let database: [(&str, fn(&Cost) -> Option<f64>); 2] = [
            ("DB transactions per paid / expired order", |c| {
                c.db_transactions
            }),
            ("  of which wrote", |c| c.db_writes),
        ];
        for (what, count) in database {
            let per_order =
                |c: &Cost| count(c).map_or("n/a (SQLite)".into(), |x| format!("{x:.1}"));
            row(
                &mut t,
                what,
                format!(
                    "{} / {}",
                    per_order(&o.cost_paid),
                    per_order(&o.cost_expired)
                ),
                "0".into(),
                "-".into(),
            );
        }
        let counts: [(&str, fn(&Cost) -> f64); 3] = [
            ("history events", |c| c.history_events),
            ("activity tasks", |c| c.activity_tasks),
            ("workflow tasks", |c| c.workflow_tasks),
        ];
        for (what, count) in counts {
            row(
                &mut t,
                &format!("{what} per paid / expired"),
                format!("{:.0} / {:.0}", count(&o.cost_paid), count(&o.cost_expired)),
                format!("{:.0}", count(&b.cost_paid)),
                "-".into(),
            );
        }
        row(
            &mut t,
            &format!("worker RSS with the storm's {} open", self.storm_n),
            format!("{:.0} MB", o.worker_rss_mb_with_storm_open),
            "-".into(),
            "-".into(),
        );
        let r = &self.ratios;
        let _ = writeln!(
            t,
            "\nratios: throughput orderflow/bare {:.2} (goal >= 0.80) · storm drain orderflow/bare {:.2} (goal <= 1.25) · sweep/orderflow {:.0}x (goal >= 100x)",
            r.throughput_orderflow_over_bare,
            r.storm_drain_orderflow_over_bare,
            r.storm_drain_sweep_over_orderflow
        );
        if self.coupons_made_inline > 0 {
            let _ = writeln!(
                t,
                "note: {} coupons were made during measured phases (the pool ran dry)",
                self.coupons_made_inline
            );
        }
        t
    }
}
