//! Running a `tests/browser` script (playwright-core, headless Chromium) against a started
//! licensor: shared by the browser tests, which include it with `#[path]`.
//!
//! Needs Chromium at /usr/bin/chromium and the scripts' packages. Without them a test says so
//! and passes, except in CI (`CI=true`), where it fails with the command that installs them.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use graph_emulator::{EmulatorConfig, EmulatorHandle, Scenario};
use licensor::Roles;

use crate::common::{Backend, TestApp, TestTenant};

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str =
    "apt-get update && apt-get install -y chromium && (cd tests/browser && npm ci)";

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser, if anything.
fn missing_tools() -> Option<String> {
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
    let playwright = script_dir().join("node_modules/playwright-core/package.json");
    (!playwright.exists()).then(|| "tests/browser/node_modules is missing (npm ci)".to_owned())
}

/// Whether the browser can run here; in CI a missing tool fails the test, elsewhere it is said
/// and the test passes.
pub fn browser_available(what: &str) -> bool {
    let Some(missing) = missing_tools() else {
        return true;
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !in_ci,
        "the {what} browser test cannot run: {missing}. Install with: {INSTALL}"
    );
    eprintln!("skipping the {what} browser test: {missing}. Install with: {INSTALL}");
    false
}

/// What a browser test drives: a directory emulator holding `scenario`, and licensor on
/// `backend` (all roles, `config` added to its settings) with tenant `name` connected to that
/// directory. `None` when the backend's services are not configured.
#[allow(dead_code)]
pub async fn with_directory(
    backend: Backend,
    scenario: Scenario,
    config: &str,
    name: &str,
) -> Option<(EmulatorHandle, TestApp, TestTenant)> {
    let app = TestApp::start_with(backend, Roles::ALL, config).await?;
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario),
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts");
    let tenant = app.tenant(name).await;
    app.connect_directory(tenant.id, &emulator).await;
    Some((emulator, app, tenant))
}

/// `<target dir>/<name>`, where the screenshots go.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join(name)
}

/// Run `script` against `app` as `tenant` (one token per role), saving screenshots in `shots`;
/// prints its output and panics when it fails.
#[allow(dead_code)]
pub async fn run_script(script: &str, app: &TestApp, tenant: &TestTenant, shots: &Path) -> Output {
    run_script_with(script, app, tenant, shots, &[]).await
}

/// [`run_script`] with further environment variables for the script (e.g. what it should find).
#[allow(dead_code)]
pub async fn run_script_with(
    script: &str,
    app: &TestApp,
    tenant: &TestTenant,
    shots: &Path,
    env: &[(&str, String)],
) -> Output {
    std::fs::create_dir_all(shots).expect("screenshot directory");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(script_dir())
        .env("LICENSOR_URL", &app.url)
        .env("LICENSOR_TOKEN", &tenant.admin)
        .env("LICENSOR_OPERATOR_TOKEN", &tenant.operator)
        .env("LICENSOR_VIEWER_TOKEN", &tenant.viewer)
        .env("SCREENSHOT_DIR", shots)
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
        "{script} failed ({}); screenshots in {}",
        output.status,
        shots.display()
    );
    output
}

/// Leave `free` units of the emulator's SKU `part_number` (e.g. `SPE_E5`) free: its enabled
/// units set to those consumed now plus `free` (`PATCH /_emulator/skus/{part}`), so a job
/// assigning it to more members ends Finished with Exception, or a canary pauses.
#[allow(dead_code)]
pub async fn leave_free_units(emulator: &EmulatorHandle, part_number: &str, free: u64) {
    let stats = crate::common::deployment::stats(emulator).await;
    let consumed = stats["skus"]
        .as_array()
        .and_then(|skus| skus.iter().find(|k| k["skuPartNumber"] == part_number))
        .and_then(|k| k["consumedUnits"].as_u64())
        .unwrap_or_else(|| panic!("{part_number} in the emulator: {stats}"));
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/_emulator/skus/{part_number}",
            emulator.base_url()
        ))
        .json(&serde_json::json!({"enabled": consumed + free}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("patch {part_number}: {e}"));
    assert_eq!(resp.status().as_u16(), 204, "patch {part_number}");
}
