//! The cron scheduler of `config.schedule` (6-field cron with seconds, local time): one task per
//! job sleeping until its next fire time. A failing job is logged and simply runs again at its
//! next tick; a job never runs twice at once (the next fire time is computed after it ends).
//!
//! Jobs: `retention` (purge finished commands, return free pages), `metrics` (an extra metrics
//! record through the outbox), `reader_time_sync`, `reader_log_pull` (device and tag logs) and
//! `select_spec` windows (start or stop a rule), the reader jobs through [`ReaderService`].
//! Must not: hold protocol logic (the reader service does the work).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{JobKind, ScheduledJob};
use crate::metrics::Metrics;
use crate::ops::system::SystemProbe;
use crate::reader::ReaderService;
use crate::store::{Record, RecordClass, Store};
use crate::time::now_ms;

/// Finished commands older than this are purged by `retention`.
pub const RETENTION_KEEP: Duration = Duration::from_secs(7 * 86_400);
/// Longest a job may run before it is abandoned until its next tick.
const JOB_LIMIT: Duration = Duration::from_secs(1800);

/// What the jobs act on.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub edge_id: String,
    /// Absent when no `readers` section is configured (reader jobs then fail with a reason).
    pub readers: Option<Arc<ReaderService>>,
}

/// Runs every job until `shutdown`.
pub async fn run(jobs: Vec<ScheduledJob>, ctx: JobContext, shutdown: CancellationToken) {
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(run_one(job, ctx.clone(), shutdown.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// The time until `job` next fires, from now in local time.
pub fn until_next(job: &ScheduledJob) -> Option<Duration> {
    let next = job.cron.upcoming(chrono::Local).next()?;
    Some((next - chrono::Local::now()).to_std().unwrap_or(Duration::ZERO))
}

async fn run_one(job: ScheduledJob, ctx: JobContext, shutdown: CancellationToken) {
    loop {
        let Some(wait) = until_next(&job) else {
            tracing::warn!(job = %job.name, "the cron expression never fires again");
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(JOB_LIMIT, execute(&job, &ctx)) => r,
        };
        match outcome {
            Ok(Ok(summary)) => tracing::info!(job = %job.name, "{summary}"),
            Ok(Err(e)) => tracing::warn!(job = %job.name, "failed, runs again at its next tick: {e}"),
            Err(_) => {
                tracing::warn!(job = %job.name, "still running after {JOB_LIMIT:?}: abandoned until its next tick")
            }
        }
        // A fire time within the same second would run the job twice.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// Runs `job` once; `Ok` carries a summary for the log.
pub async fn execute(job: &ScheduledJob, ctx: &JobContext) -> Result<String, String> {
    match job.job {
        JobKind::Retention => ctx
            .store
            .retention(RETENTION_KEEP.as_millis() as i64)
            .await
            .map(|n| format!("retention purged {n} finished commands"))
            .map_err(|e| e.to_string()),
        JobKind::Metrics => {
            let mut probe = SystemProbe::new(ctx.store.path().to_path_buf());
            let body = ctx.metrics.snapshot(now_ms(), probe.snapshot());
            let record = Record::new(
                "edge",
                crate::topics::edge(&ctx.edge_id, crate::topics::EdgeTopic::Metrics),
                RecordClass::Telemetry,
                &body,
            );
            ctx.store
                .append(record)
                .await
                .map(|seq| format!("metrics record {seq} appended"))
                .map_err(|e| e.to_string())
        }
        JobKind::ReaderTimeSync => each_reader(job, ctx, true, json!({"action": "time_sync"})).await,
        JobKind::ReaderLogPull => {
            let device = each_reader(job, ctx, true, json!({"action": "log_pull", "log": "device"})).await;
            let tag = each_reader(job, ctx, true, json!({"action": "log_pull", "log": "tag"})).await;
            match (device, tag) {
                (Ok(a), Ok(b)) => Ok(format!("device logs: {a}; tag logs: {b}")),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        JobKind::SelectSpec => {
            let spec_id = job.spec_id.ok_or("no spec_id")?;
            let action = match job.action.as_deref() {
                Some("start") => "start_rule",
                Some("stop") => "stop_rule",
                other => return Err(format!("action {other:?} is not start or stop")),
            };
            each_reader(job, ctx, false, json!({"action": action, "spec_id": spec_id})).await
        }
    }
}

/// Runs `command` on the job's reader, or on every reader (only the connected ones when
/// `online_only`). Fails when any reader failed, naming them.
async fn each_reader(
    job: &ScheduledJob,
    ctx: &JobContext,
    online_only: bool,
    command: serde_json::Value,
) -> Result<String, String> {
    let service = ctx.readers.as_ref().ok_or("no `readers` section is configured")?;
    let targets: Vec<String> = match &job.reader {
        Some(r) => vec![r.to_string()],
        None => service
            .readers()
            .into_iter()
            .filter(|r| !online_only || r.link == "up")
            .map(|r| r.id)
            .collect(),
    };
    let mut failures = Vec::new();
    for reader in &targets {
        if let Err(e) = service.execute(reader, &command).await {
            failures.push(format!("{reader}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(format!("{} reader(s) done", targets.len()))
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cron: &str, kind: JobKind) -> ScheduledJob {
        ScheduledJob {
            name: "t".into(),
            cron: cron.parse().unwrap(),
            job: kind,
            reader: None,
            spec_id: Some(7),
            action: Some("start".into()),
        }
    }

    #[test]
    fn the_next_fire_time_is_within_the_cron_period() {
        let every_second = job("* * * * * *", JobKind::Retention);
        assert!(until_next(&every_second).unwrap() <= Duration::from_secs(1));
        let hourly = job("0 0 * * * *", JobKind::Retention);
        assert!(until_next(&hourly).unwrap() <= Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn reader_jobs_fail_with_a_reason_when_no_readers_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (store, _) = Store::open(
            crate::store::StoreOptions {
                path: dir.path().join("t.db"),
                max_bytes: 1 << 20,
                edge_id: "e".into(),
            },
            metrics.clone(),
        )
        .unwrap();
        let ctx = JobContext {
            store: store.clone(),
            metrics,
            edge_id: "e".into(),
            readers: None,
        };
        let err = execute(&job("* * * * * *", JobKind::SelectSpec), &ctx)
            .await
            .unwrap_err();
        assert!(err.contains("no `readers`"), "{err}");
        let ok = execute(&job("* * * * * *", JobKind::Metrics), &ctx).await.unwrap();
        assert!(ok.starts_with("metrics record"));
        assert!(execute(&job("* * * * * *", JobKind::Retention), &ctx).await.is_ok());
        store.close().await;
    }
}
