//! What operators and dashboards watch: every metric the shipped Grafana dashboard and alert
//! rules (`deploy/`) name is exported by `/metrics`; `compose.yaml` runs Prometheus and Grafana
//! with those files; a job's per-minute activity adds up to its progress and to the 429s the
//! directory answered; the job page draws its charts in Chromium; and a job whose worker stops
//! is flagged stuck within `jobs.stuck_after_secs`, counted by `licensor_jobs_stuck`, and
//! cleared when another worker (after the reconciler queued it again) moves it.

mod common;
#[path = "browser/run.rs"]
mod run;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::deployment::{Deployment, Services, assert_all_assigned_once, stats};
use common::{Backend, PgDatabase, RedisNamespace, TestApp, TestTenant};
use graph_emulator::{
    Budget, ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, Faults, Scenario,
};
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every `licensor_…` metric name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("licensor_") {
        let start = i + at;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            into.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

/// The expressions of the dashboard: each panel target's `expr` and each template variable's
/// query.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The `expr` of every rule in a Prometheus rules file: inline (`expr: …`) or a block scalar
/// (`expr: |` and the more indented lines under it).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let indent = line.len() - trimmed.len();
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = String::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let body = l.trim_start();
                    if !body.is_empty() && l.len() - body.len() <= indent {
                        break;
                    }
                    block.push_str(body);
                    block.push('\n');
                    i += 1;
                }
                out.push(block);
                continue;
            }
            out.push(rest.to_owned());
        }
        i += 1;
    }
    out
}

/// The metric names in Prometheus text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The value of the sample `name{labels…}` whose labels include `label`, if exported.
fn sample(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn throttling_directory(users: usize, units: u32) -> EmulatorHandle {
    graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(61, users, units)),
        faults: Faults {
            write_budget: Budget {
                limit: 150,
                window_ms: 1_500,
            },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts")
}

/// Submit an assign of ENTERPRISEPACK to "All Users" and wait for its end.
async fn assign_all(app: &TestApp, tenant: &TestTenant) -> Value {
    let group = app.group_id(&tenant.admin, "All Users").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}),
        )
        .await;
    app.wait_for_job(&tenant.admin, job["id"].as_str().unwrap(), 180)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_and_alert_rules_name_only_exported_metrics() {
    // What the dashboard and the rules use.
    let dashboard: Value = serde_json::from_str(&repo_file("deploy/grafana/licensor.json"))
        .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Jobs by status",
        "Items per second by outcome",
        "Failed members by error code",
        "Directory requests by tenant",
        "429s by tenant",
        "Write-budget share",
        "Queue depth",
        "Lease takeovers and requeues",
        "Webhook deliveries",
        "Stuck jobs",
    ] {
        assert!(titles.contains(&wanted), "panel {wanted:?} in {titles:?}");
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} uses the dashboard's data source variable",
            p["title"]
        );
    }
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let rule_exprs = rule_exprs(&rules);
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        alerts,
        [
            "LicensorJobStuck",
            "LicensorFailedShareHigh",
            "LicensorDirectoryCredentialsRejected",
            "LicensorDirectory429RateHigh",
            "LicensorQueueGrowing",
            "LicensorWebhookDeliveriesFailing"
        ]
    );
    assert_eq!(rule_exprs.len(), alerts.len(), "one expr per rule");
    let mut used = BTreeSet::new();
    for e in exprs.iter().chain(&rule_exprs) {
        metric_names(e, &mut used);
    }
    assert!(used.len() >= 12, "names found: {used:?}");

    // A running server after a small job, with some throttling.
    let emulator = throttling_directory(400, 300).await;
    let app = TestApp::start(Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("observed").await;
    app.connect_directory(tenant.id, &emulator).await;
    let job = assign_all(&app, &tenant).await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    app.assert_outcomes_true(
        &tenant.viewer,
        job["id"].as_str().unwrap(),
        &emulator.base_url(),
    )
    .await;
    let text = app.text("/metrics").await;
    let have = exported(&text);
    let missing: Vec<&String> = used.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the dashboard or the rules but not exported: {missing:?}\n{text}"
    );
    // Per-tenant series carry the tenant id, never its name.
    let tenant_label = format!("tenant=\"{}\"", tenant.id);
    for name in [
        "licensor_directory_requests_total",
        "licensor_directory_throttled_total",
        "licensor_directory_write_budget_used_ratio",
        "licensor_jobs_stuck",
    ] {
        assert!(
            sample(&text, name, &tenant_label).is_some(),
            "{name}{{{tenant_label}}} in\n{text}"
        );
    }
    assert!(!text.contains("observed"), "no tenant name in the metrics");
    assert_eq!(
        sample(&text, "licensor_jobs_stuck", &tenant_label),
        Some(0.0)
    );
    let throttled = stats(&emulator).await["throttled"].as_u64().unwrap();
    assert!(throttled > 0, "the directory throttled");
    assert_eq!(
        sample(&text, "licensor_directory_throttled_total", &tenant_label),
        Some(throttled as f64),
        "every 429 the directory answered is counted"
    );
    app.stop().await;
    emulator.shutdown().await;
}

#[test]
fn compose_runs_prometheus_and_grafana_with_the_shipped_files() {
    // compose.yaml and every provisioning file are YAML (read by Python's yaml, as
    // `docker compose config` cannot run here).
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = {p: yaml.safe_load(open(p)) for p in sys.argv[1:]}\n\
             print(json.dumps(docs))",
            "compose.yaml",
            "deploy/prometheus/prometheus.yml",
            "deploy/prometheus/alerts.yml",
            "deploy/prometheus/alerts.test.yml",
            "deploy/grafana/provisioning/datasources/prometheus.yaml",
            "deploy/grafana/provisioning/dashboards/licensor.yaml",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "YAML files parse (needs python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = &docs["compose.yaml"]["services"];
    let volumes = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_array()
            .unwrap_or_else(|| panic!("{service} has volumes: {services}"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let prometheus = volumes("prometheus");
    for file in [
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml",
        "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml",
    ] {
        assert!(
            prometheus.iter().any(|v| v.starts_with(file)),
            "{file} in {prometheus:?}"
        );
    }
    let grafana = volumes("grafana");
    for file in [
        "./deploy/grafana/provisioning/datasources:/etc/grafana/provisioning/datasources",
        "./deploy/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards",
        "./deploy/grafana/licensor.json:/var/lib/grafana/dashboards/licensor.json",
    ] {
        assert!(
            grafana.iter().any(|v| v.starts_with(file)),
            "{file} in {grafana:?}"
        );
    }
    for v in prometheus.iter().chain(&grafana) {
        if let Some(src) = v.strip_prefix("./").and_then(|v| v.split(':').next()) {
            assert!(Path::new(root).join(src).exists(), "{src} exists");
        }
    }
    // Prometheus scrapes the API and the workers' metrics port, which compose opens.
    let scrape = &docs["deploy/prometheus/prometheus.yml"]["scrape_configs"];
    let text = scrape.to_string();
    assert!(
        text.contains("api:8080") && text.contains("9100"),
        "{scrape}"
    );
    assert_eq!(
        services["worker"]["environment"]["LICENSOR_WORKER__METRICS_LISTEN"],
        "0.0.0.0:9100"
    );
    // The dashboard provider reads the directory the dashboard is mounted in, and the data
    // source has the uid the dashboard selects by default.
    assert_eq!(
        docs["deploy/grafana/provisioning/dashboards/licensor.yaml"]["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let uid =
        &docs["deploy/grafana/provisioning/datasources/prometheus.yaml"]["datasources"][0]["uid"];
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/licensor.json")).unwrap();
    let var = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(var["current"]["value"], *uid);
}

/// Every minute of a job's activity, following the cursor.
async fn activity(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let mut minutes = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get_json(
                &format!("/v1/jobs/{id}/activity?limit=2&cursor={cursor}"),
                token,
            )
            .await;
        minutes.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return minutes,
        }
    }
}

async fn activity_adds_up_to_progress_and_429s(backend: Backend) {
    let emulator = throttling_directory(700, 500).await;
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let tenant = app.tenant("charts").await;
    app.connect_directory(tenant.id, &emulator).await;
    let job = assign_all(&app, &tenant).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    app.assert_outcomes_true(&tenant.viewer, id, &emulator.base_url())
        .await;
    assert_eq!(job["stuck"], false, "{job}");
    assert_eq!(job["requeues"], 0, "{job}");
    assert!(job["last_progress_at"].is_string(), "{job}");

    let minutes = activity(&app, &tenant.viewer, id).await;
    assert!(!minutes.is_empty());
    let sum = |key: &str| {
        minutes
            .iter()
            .map(|m| m[key].as_i64().unwrap())
            .sum::<i64>()
    };
    let progress = &job["progress"];
    assert_eq!(sum("succeeded"), progress["succeeded"].as_i64().unwrap());
    assert_eq!(sum("failed"), progress["failed"].as_i64().unwrap());
    assert_eq!(sum("skipped"), progress["skipped"].as_i64().unwrap());
    assert_eq!(sum("failed"), 200, "700 members, 500 licenses");
    // Every 429 the directory answered was met by one of the job's chunks.
    let throttled = stats(&emulator).await["throttled"].as_i64().unwrap();
    assert!(throttled > 0, "the directory throttled");
    assert_eq!(sum("throttled"), throttled, "{minutes:?}");
    // Oldest first, one row per distinct whole minute.
    let stamps: Vec<chrono::DateTime<chrono::Utc>> = minutes
        .iter()
        .map(|m| m["minute"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert!(stamps.iter().all(|t| t.timestamp() % 60 == 0), "{stamps:?}");

    // Documented: the route, and the job's stuck flag and requeues.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/jobs/{id}/activity"]["get"].is_object());
    let fields = &doc["components"]["schemas"]["JobView"]["properties"];
    for field in ["stuck", "stuck_since", "last_progress_at", "requeues"] {
        assert!(fields[field].is_object(), "JobView.{field} documented");
    }
    assert!(doc["components"]["schemas"]["ActivityMinute"]["properties"]["throttled"].is_object());

    // Tenant-scoped: another tenant's token finds no such job; bad input is refused plainly.
    let other = app.tenant("someone-else").await;
    let resp = app
        .get(&format!("/v1/jobs/{id}/activity"), &other.viewer)
        .send()
        .await
        .unwrap();
    common::expect_problem(resp, 404, "not_found").await;
    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("cursor=%21%21", "invalid_query"),
    ] {
        let resp = app
            .get(&format!("/v1/jobs/{id}/activity?{query}"), &tenant.viewer)
            .send()
            .await
            .unwrap();
        common::expect_problem(resp, 400, code).await;
    }
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(activity_adds_up_to_progress_and_429s);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_page_draws_activity_charts_in_chromium() {
    if !run::browser_available("activity charts") {
        return;
    }
    let emulator = throttling_directory(600, 500).await;
    let app = TestApp::start(Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("charts-web").await;
    app.connect_directory(tenant.id, &emulator).await;
    let job = assign_all(&app, &tenant).await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    app.assert_outcomes_true(
        &tenant.viewer,
        job["id"].as_str().unwrap(),
        &emulator.base_url(),
    )
    .await;
    let shots = run::screenshot_dir("activity-screenshots");
    // The script checks the bars against GET /v1/jobs/{id}/activity and the job's progress.
    run::run_script("activity.mjs", &app, &tenant, &shots).await;
    app.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_badge_in_the_job_monitor_in_chromium() {
    if !run::browser_available("stuck badge") {
        return;
    }
    // Every directory answer takes 4 s and chunks are of 5 members, one at a time: the job
    // sits between pages and chunks far longer than the 1 s stuck setting, again and again.
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(63, 30, 60)),
        faults: Faults {
            latency_ms: 4_000,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts");
    let app = TestApp::start_with(
        Backend::Embedded,
        licensor::Roles::ALL,
        "[jobs]\nstuck_after_secs = 1\nchunk_size = 5\nlanes_per_job = 1\n",
    )
    .await
    .expect("the embedded backend needs no services");
    let tenant = app.tenant("stuck-web").await;
    app.connect_directory(tenant.id, &emulator).await;
    let group = app.group_id(&tenant.admin, "All Users").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let shots = run::screenshot_dir("stuck-screenshots");
    run::run_script("stuck.mjs", &app, &tenant, &shots).await;
    // The job goes on and ends; the flag is gone with it.
    let job = app.wait_for_job(&tenant.admin, &id, 180).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["stuck"], false, "{job}");
    app.assert_outcomes_true(&tenant.viewer, &id, &emulator.base_url())
        .await;
    app.stop().await;
    emulator.shutdown().await;
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_stalls_flagged_stuck_then_resumes_postgres_redis() {
    const MEMBERS: u64 = 2_000;
    const STUCK_AFTER: i64 = 3;
    let Some(pg_url) = common::postgres_url() else {
        return;
    };
    let Some(redis_url) = common::redis_url() else {
        return;
    };
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(62, MEMBERS as usize, (MEMBERS * 2) as u32)),
        faults: Faults {
            latency_ms: 120,
            ..Faults::unthrottled()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let pg = PgDatabase::create(&pg_url).await;
    let first_metrics = free_port();
    let stuck_after = STUCK_AFTER.to_string();
    let metrics_listen = format!("127.0.0.1:{first_metrics}");
    let mut d = Deployment::start_on(
        &emulator,
        1,
        Services {
            database_url: pg.url.clone(),
            redis: RedisNamespace::new(&redis_url),
        },
        &[
            ("LICENSOR_JOBS__STUCK_AFTER_SECS", &stuck_after),
            // The reconciler off: it runs at a worker's start, then not before 2099, and only
            // for jobs idle an hour.
            ("LICENSOR_SWEEPS__RECONCILE", "0 0 0 1 1 * 2099"),
            ("LICENSOR_JOBS__STALL_SECS", "3600"),
            // One small chunk at a time, slowly: the job is mid-way for a while.
            ("LICENSOR_JOBS__LANES_PER_JOB", "1"),
            ("LICENSOR_JOBS__CHUNK_SIZE", "100"),
            ("LICENSOR_DIRECTORY__MAX_IN_FLIGHT", "2"),
            ("LICENSOR_WORKER__METRICS_LISTEN", &metrics_listen),
        ],
    )
    .await;
    let tenant: Value = d.get("/v1/tenant").await.json().await.unwrap();
    let tenant_label = format!(
        "tenant=\"{}\"",
        tenant["tenant"]["id"]
            .as_str()
            .or(tenant["id"].as_str())
            .or(tenant["tenant_id"].as_str())
            .unwrap_or_else(|| panic!("tenant id in {tenant}"))
    );

    let id = d.submit_assign().await;
    d.wait_progress(&id, 300).await;
    let moving = d.job(&id).await;
    assert_eq!(moving["stuck"], false, "{moving}");
    // The worker serves its own metrics: its directory calls, by tenant.
    let worker_metrics = get_text(&format!("http://{metrics_listen}/metrics")).await;
    assert!(
        sample(
            &worker_metrics,
            "licensor_directory_requests_total",
            &tenant_label
        )
        .is_some_and(|n| n > 0.0),
        "{worker_metrics}"
    );

    // Its only worker stops (SIGSTOP: alive, holding its members, doing nothing).
    let worker = d.procs.0[1].id();
    signal(worker, "-STOP");
    let stopped = Instant::now();
    let stuck = loop {
        let job = d.job(&id).await;
        if job["stuck"] == true {
            break job;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(STUCK_AFTER as u64 + 3),
            "not flagged stuck {} s after its worker stopped: {job}",
            stopped.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let flagged_after = stopped.elapsed();
    assert_eq!(stuck["status"], "running", "{stuck}");
    assert_eq!(stuck["requeues"], 0, "the reconciler is off: {stuck}");
    let last: chrono::DateTime<chrono::Utc> =
        stuck["last_progress_at"].as_str().unwrap().parse().unwrap();
    let since: chrono::DateTime<chrono::Utc> =
        stuck["stuck_since"].as_str().unwrap().parse().unwrap();
    assert_eq!((since - last).num_seconds(), STUCK_AFTER, "{stuck}");
    // The list says so too, and the metric counts it for the tenant.
    let list: Value = d.get("/v1/jobs?status=running").await.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["stuck"], true, "{list}");
    let metrics = get_text(&format!("{}/metrics", d.url)).await;
    assert!(
        sample(&metrics, "licensor_jobs_stuck", &tenant_label).is_some_and(|n| n >= 1.0),
        "licensor_jobs_stuck{{{tenant_label}}} ≥ 1 in\n{metrics}"
    );
    // Nothing moves it while the reconciler is off.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = d.job(&id).await;
    assert_eq!(still["stuck"], true, "{still}");
    assert_eq!(still["progress"], stuck["progress"], "{still}");
    println!(
        "flagged stuck {:.1} s after the worker stopped (setting {STUCK_AFTER} s)",
        flagged_after.as_secs_f64()
    );

    // Another worker with the reconciler on: it queues the job again (counted on the job) and
    // takes over the stopped worker's members once their lease has run out.
    let second_metrics = format!("127.0.0.1:{}", free_port());
    for (k, v) in [
        ("LICENSOR_SWEEPS__RECONCILE", "*/1 * * * * *"),
        ("LICENSOR_JOBS__STALL_SECS", "5"),
        ("LICENSOR_WORKER__METRICS_LISTEN", second_metrics.as_str()),
    ] {
        d.env.retain(|(key, _)| key != k);
        d.env.push((k.to_owned(), v.to_owned()));
    }
    d.spawn(&["worker"]);
    let resumed = Instant::now();
    loop {
        let job = d.job(&id).await;
        if job["stuck"] == false
            && job["progress"]["succeeded"].as_i64() > stuck["progress"]["succeeded"].as_i64()
        {
            assert!(job["requeues"].as_i64().unwrap() >= 1, "{job}");
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "the job did not move again: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = d.wait_end(&id, 180).await;
    assert_eq!(job["stuck"], false, "{job}");
    assert!(job["requeues"].as_i64().unwrap() >= 1, "{job}");
    let metrics = get_text(&format!("{}/metrics", d.url)).await;
    assert_eq!(
        sample(&metrics, "licensor_jobs_stuck", &tenant_label),
        Some(0.0),
        "{metrics}"
    );
    let second = get_text(&format!("http://{second_metrics}/metrics")).await;
    let takeovers = sample(
        &second,
        "licensor_lease_takeovers_total",
        "lease=\"members\"",
    )
    .expect("the takeover counter is exported from the start");
    println!("members taken over from the stopped worker: {takeovers}");
    // The stopped worker never wakes; every member was assigned once.
    signal(worker, "-KILL");
    assert_all_assigned_once(&emulator, &job, MEMBERS).await;
    drop(d);
    drop(pg);
    emulator.shutdown().await;
}
