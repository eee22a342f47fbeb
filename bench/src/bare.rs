//! Baseline (a): the engine's ceiling. `BaselineWorkflow` runs in the same worker as orders,
//! on the same task queue: wait for a signal or a timer, then one activity that does nothing.
//! It is driven with the Temporal client as the API drives orders: start, then signal (the
//! payment) or let the timer fire (the expiry).

use anyhow::Context;
use orderflow_workflows::{BaselineWorkflow, baseline_workflow_id};
use std::time::{Duration, Instant};
use temporalio_client::{
    Client, WorkflowCountOptions, WorkflowGetResultOptions, WorkflowListOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};

pub struct Bare {
    pub client: Client,
    pub task_queue: String,
    pub run: String,
}

impl Bare {
    /// Starts bare workflow `n` with its timer ending at `deadline_ms` (epoch ms); returns the
    /// start latency.
    pub async fn start(&self, n: u64, deadline_ms: i64) -> anyhow::Result<Duration> {
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), baseline_workflow_id(&self.run, n))
                .build();
        let started = Instant::now();
        self.client
            .start_workflow(BaselineWorkflow::run, deadline_ms, options)
            .await
            .with_context(|| format!("starting bare workflow {n}"))?;
        Ok(started.elapsed())
    }

    /// Signals bare workflow `n` and waits for it to finish.
    pub async fn signal_and_wait(&self, n: u64) -> anyhow::Result<()> {
        let handle = self
            .client
            .get_workflow_handle::<BaselineWorkflow>(baseline_workflow_id(&self.run, n));
        handle
            .signal(
                BaselineWorkflow::signal,
                (),
                WorkflowSignalOptions::default(),
            )
            .await
            .with_context(|| format!("signalling bare workflow {n}"))?;
        let signalled = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .with_context(|| format!("bare workflow {n}"))?;
        anyhow::ensure!(
            signalled,
            "bare workflow {n} ended on its timer, not the signal"
        );
        Ok(())
    }

    /// The close time (epoch ms) of each completed workflow in `ids`, as the server recorded it.
    pub async fn close_times(
        &self,
        ids: &std::collections::HashSet<String>,
    ) -> anyhow::Result<Vec<i64>> {
        use futures::StreamExt;
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let mut list = self.client.list_workflows(
            format!(
                "WorkflowType = 'baseline' AND ExecutionStatus = 'Completed' AND TaskQueue = '{}'",
                self.task_queue
            ),
            WorkflowListOptions::default(),
        );
        let mut times = Vec::new();
        while let Some(item) = list.next().await {
            let item = item.context("listing bare workflows")?;
            if let (true, Some(close)) = (ids.contains(item.id()), item.close_time()) {
                times.push(ms(close));
            }
        }
        Ok(times)
    }

    /// Bare workflows still running.
    pub async fn open(&self) -> anyhow::Result<u64> {
        let count = self
            .client
            .count_workflows(
                format!("WorkflowType = 'baseline' AND ExecutionStatus = 'Running' AND TaskQueue = '{}'", self.task_queue),
                WorkflowCountOptions::default(),
            )
            .await
            .context("counting bare workflows")?;
        Ok(count.count() as u64)
    }
}
