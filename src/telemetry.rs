//! Logging and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Install the log subscriber once: `RUST_LOG` if set, else the configured filter.
pub fn init_tracing(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only on a terminal: files and log collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus handle (one recorder per process, shared by every app instance).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing
            // but the process keeps running.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_metrics();
            // Histogram samples wait in the recorder until folded into their buckets; fold them
            // every few seconds, so memory stays flat when nothing scrapes /metrics.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// Describe every metric licensor exports (the `# HELP` lines), and register at zero those that
/// only move on a rare event, so their names exist from the start: dashboards and alert rules
/// (`deploy/`) then see 0 rather than no data. Per-tenant directory series are registered when
/// the tenant's directory client is made; `licensor_jobs_stuck` per tenant on each scrape.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "licensor_http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        "licensor_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route"
    );
    describe_counter!(
        "licensor_http_rate_limited_total",
        "API requests refused with 429 rate_limited (a token over its request budget)"
    );
    describe_gauge!(
        "licensor_jobs",
        "Jobs by kind and status, across tenants (read from the database at each scrape)"
    );
    describe_gauge!(
        "licensor_jobs_stuck",
        "Running jobs with no progress for jobs.stuck_after_secs, by tenant id"
    );
    describe_gauge!(
        "licensor_job_items_pending",
        "Members waiting in queued and running jobs"
    );
    describe_gauge!(
        "licensor_queue_depth",
        "Messages waiting on the queue, by backend"
    );
    describe_counter!(
        "licensor_jobs_submitted_total",
        "Jobs submitted through the API, by kind"
    );
    describe_counter!(
        "licensor_jobs_completed_total",
        "Jobs that ended, by kind and final status (from this process's workers)"
    );
    describe_counter!(
        "licensor_jobs_requeued_total",
        "Jobs the reconciler queued again after no progress for jobs.stall_secs"
    );
    describe_counter!(
        "licensor_members_keyed_total",
        "Members given their member-history keys by the member-keys sweep"
    );
    describe_counter!(
        "licensor_job_items_total",
        "Members worked, by kind, outcome (succeeded, failed, skipped, retried, not_sent) and error code"
    );
    describe_histogram!(
        "licensor_job_chunk_seconds",
        Unit::Seconds,
        "Time to work one chunk of a job's members"
    );
    describe_counter!(
        "licensor_lease_takeovers_total",
        "Leases taken over from a holder that stopped (its lease ran out, or its process's heartbeat stopped for worker.missed_heartbeats × worker.heartbeat_secs): lease=members (a chunk's members) or expansion (reading a job's groups)"
    );
    describe_counter!(
        "licensor_lanes_deferred_total",
        "Times a job's lane left because its tenant's write budget was spent for longer than a chunk may wait (2 s), and was queued again by the tenant's writer for when the budget frees, so it held no worker place meanwhile"
    );
    describe_counter!(
        "licensor_lanes_joined_total",
        "Times a job's lane would have waited for its tenant's write budget while another lane of the same job already waited for it in this process: it joined that wait, and comes back as a spare lane once a step finds the budget free beyond its own chunk"
    );
    describe_counter!(
        "licensor_lanes_waited_for_budget_learning_total",
        "Times a job's lane waited for another lane of the same job learning its tenant's write budget (not learned yet) in this process — it found that lane learning, or was brought by it, the job's first lane: it took no members, and goes back to work once the budget has writes for it or that step ends, or waits with it for the budget"
    );
    describe_counter!(
        "licensor_lanes_left_to_writer_total",
        "Times a job's lane found another worker process writing to its tenant (that process's turn, see tenant_writers) and was queued again for it, so one write scheduler fills each tenant's budget"
    );
    describe_counter!(
        "licensor_first_lanes_queued_total",
        "Jobs' first lanes queued by their Run, by queue: own (this process's own queue, on Redis: it took the tenant's turn to write), writer (the own queue of the process holding that turn) or shared (the embedded queue, or a process that could not take the turn); a Run taken again (a redelivered message, a job queued again after a takeover) queues its first lane again"
    );
    describe_counter!(
        "licensor_chunks_left_to_writer_total",
        "Chunks whose writes stopped part-way because another worker process took their tenant's turn to write (see tenant_writers) while they were written: their members not written yet went back to the job for the writer"
    );
    describe_counter!(
        "licensor_worker_processes_taken_over_total",
        "Worker processes whose heartbeat stopped (or, on the embedded database, that were gone when the next process started) and whose leases this process took over"
    );
    describe_counter!(
        "licensor_directory_requests_total",
        "Directory (Microsoft Graph) requests, by route, HTTP status and tenant id"
    );
    describe_histogram!(
        "licensor_directory_request_duration_seconds",
        Unit::Seconds,
        "Directory request latency, by route"
    );
    describe_counter!(
        "licensor_directory_throttled_total",
        "Directory answers 429 (whole requests and requests inside a $batch), by tenant id"
    );
    describe_counter!(
        "licensor_directory_retries_total",
        "Directory requests retried after a transient failure, by route"
    );
    describe_counter!(
        "licensor_directory_writes_withdrawn_total",
        "Directory writes granted by the write pacing and withdrawn before they were sent (the window had no room for them any more), by tenant id"
    );
    describe_gauge!(
        "licensor_directory_write_budget_used_ratio",
        "Share of the tenant's write budget the directory last reported (x-ms-throttle-limit-percentage, 0.8 and up; 0 below 80 %), by tenant id"
    );
    describe_counter!(
        "licensor_directory_credentials_rejected_total",
        "Times the directory refused licensor's credentials, by tenant id and code (OAuth error such as invalid_client, or graph_401 / graph_403)"
    );
    describe_counter!(
        "licensor_worker_restarts_total",
        "Queue workers started again after they stopped unexpectedly"
    );
    for lease in ["members", "expansion"] {
        metrics::counter!("licensor_lease_takeovers_total", "lease" => lease).increment(0);
    }
    for queue in ["own", "writer", "shared"] {
        metrics::counter!("licensor_first_lanes_queued_total", "queue" => queue).increment(0);
    }
    metrics::counter!("licensor_jobs_requeued_total").increment(0);
    metrics::counter!("licensor_members_keyed_total").increment(0);
    metrics::counter!("licensor_lanes_deferred_total").increment(0);
    metrics::counter!("licensor_lanes_joined_total").increment(0);
    metrics::counter!("licensor_lanes_waited_for_budget_learning_total").increment(0);
    metrics::counter!("licensor_lanes_left_to_writer_total").increment(0);
    metrics::counter!("licensor_chunks_left_to_writer_total").increment(0);
    metrics::counter!("licensor_worker_processes_taken_over_total").increment(0);
    metrics::counter!("licensor_http_rate_limited_total").increment(0);
    metrics::counter!("licensor_worker_restarts_total").increment(0);
}
