//! The Job Monitor in a real browser: headless Chromium, driven by `tests/browser/monitor.mjs`
//! (playwright-core), signs in, launches an assign job of SPE_E5 for the demo group Sales, waits
//! for Finished with Exception, reruns it with the checkbox and Start, reads the job page and takes
//! screenshots at 1280×800 and 390×844 into `<target dir>/monitor-screenshots/`.
//!
//! Needs Chromium at /usr/bin/chromium and the script's packages. Without them the test says so
//! and passes, except in CI (`CI=true`), where it fails with the command that installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Backend, TestApp};
use graph_emulator::{EmulatorConfig, Scenario};

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str =
    "apt-get update && apt-get install -y chromium && (cd tests/browser && npm ci)";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// What is missing to run the browser, if anything.
fn missing_tools(script_dir: &Path) -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is not installed"));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed".to_owned());
    }
    if !script_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("tests/browser/node_modules is missing (npm ci)".to_owned());
    }
    None
}

/// `<target dir>/monitor-screenshots`.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("monitor-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_monitor_launch_rerun_and_job_page_in_chromium() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if let Some(missing) = missing_tools(&script_dir) {
        if in_ci() {
            panic!("the Job Monitor browser test cannot run: {missing}. Install with: {INSTALL}");
        }
        eprintln!("skipping the Job Monitor browser test: {missing}. Install with: {INSTALL}");
        return;
    }

    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts");
    let app = TestApp::start(Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("monitor").await;
    app.connect_directory(tenant.id, &emulator).await;

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let run = tokio::process::Command::new("node")
        .arg("monitor.mjs")
        .current_dir(&script_dir)
        .env("LICENSOR_URL", &app.url)
        .env("LICENSOR_TOKEN", &tenant.admin)
        .env("LICENSOR_OPERATOR_TOKEN", &tenant.operator)
        .env("LICENSOR_VIEWER_TOKEN", &tenant.viewer)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the browser run ends within 10 minutes")
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the Job Monitor browser run failed ({}); screenshots in {}",
        output.status,
        shots.display()
    );

    // What the page showed is what the API says: the job ran twice, the second time only for
    // the members that had failed.
    let jobs: serde_json::Value = app
        .get("/v1/jobs?kind=assign", &tenant.viewer)
        .send()
        .await
        .expect("list jobs")
        .json()
        .await
        .expect("job list");
    let job = jobs["data"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["runs"] == 2))
        .unwrap_or_else(|| panic!("a job with two runs: {jobs}"));
    let id = job["id"].as_str().expect("job id");
    let job = app.wait_for_job(&tenant.viewer, id, 60).await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    app.assert_outcomes_true(&tenant.viewer, id, &emulator.base_url())
        .await;
    assert_eq!(job["progress"]["total"], 250, "{job}");
    let runs: serde_json::Value = app
        .get(&format!("/v1/jobs/{id}/runs"), &tenant.viewer)
        .send()
        .await
        .expect("runs")
        .json()
        .await
        .expect("runs body");
    let first_failed = &runs["data"][0]["failed"];
    assert_eq!(runs["data"][1]["total"], *first_failed, "{runs}");

    app.stop().await;
    emulator.shutdown().await;
}
