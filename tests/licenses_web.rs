//! The Licenses half of the web app in a real browser: headless Chromium, driven by
//! `tests/browser/licenses.mjs` (playwright-core), walks the seeds' flows — checkout to a user
//! picked from the directory and to an asset, the out-of-stock refusal, Used By → bulk action bar
//! → Checkin License, reuse of a started license choosing its end date (also in Swedish), the
//! info button's counts, checking in everything one asset holds — asserting the API's figures
//! after each step, checks the viewer's and operator's views, and takes screenshots at 1280×800
//! and 390×844 into `<target dir>/licenses-screenshots/` (`…-postgres/` on PostgreSQL).
//!
//! Needs Chromium at /usr/bin/chromium and the script's packages. Without them the test says so
//! and passes, except in CI (`CI=true`), where it fails with the command that installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Backend, TestApp};
use graph_emulator::{EmulatorConfig, Scenario};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str =
    "apt-get update && apt-get install -y chromium && (cd tests/browser && npm ci)";

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
    let playwright = script_dir.join("node_modules/playwright-core/package.json");
    (!playwright.exists()).then(|| "tests/browser/node_modules is missing (npm ci)".to_owned())
}

fn screenshot_dir(backend: Backend) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let name = match backend {
        Backend::Embedded => "licenses-screenshots",
        Backend::Production => "licenses-screenshots-postgres",
    };
    tmp.parent().unwrap_or(tmp).join(name)
}

async fn licenses_in_chromium(backend: Backend) {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if let Some(missing) = missing_tools(&script_dir) {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !in_ci,
            "the Licenses browser test cannot run: {missing}. Install with: {INSTALL}"
        );
        eprintln!("skipping the Licenses browser test: {missing}. Install with: {INSTALL}");
        return;
    }
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts");
    let tenant = app.tenant("licenses-web").await;
    app.connect_directory(tenant.id, &emulator).await;

    let shots = screenshot_dir(backend);
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let run = tokio::process::Command::new("node")
        .arg("licenses.mjs")
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
        "the Licenses browser run failed ({}); screenshots in {}",
        output.status,
        shots.display()
    );

    // What the pages did is what the API and its audit log say.
    let list = app.get_json("/v1/licenses?limit=500", &tenant.viewer).await;
    let by_name = |name: &str| -> Value {
        list["data"]
            .as_array()
            .and_then(|all| all.iter().find(|l| l["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("license {name} in {list}"))
    };
    let cad = by_name("CAD Suite 2026");
    assert_eq!(
        (&cad["assigned"], &cad["available"]),
        (&0.into(), &10.into())
    );
    let visio = by_name("Visio Plan 2");
    assert_eq!(visio["available"], 0, "{visio}");
    let held = app
        .get_json("/v1/assignees/asset/LT-9001/assignments", &tenant.viewer)
        .await;
    assert_eq!(held["data"], serde_json::json!([]), "{held}");
    let checkins = app
        .get_json("/v1/audit?action=license.checkin&limit=500", &tenant.viewer)
        .await;
    let of_the_asset = checkins["data"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| e["after"]["held_by"]["id"] == "LT-9001")
        .count();
    assert_eq!(of_the_asset, 2, "one checkin entry per license: {checkins}");
    for name in [
        "licenses-1280",
        "checkout-1280",
        "used-by-bulk-1280",
        "started-info-1280",
        "started-info-sv-1280",
        "licenses-390",
        "checkout-390",
        "used-by-bulk-390",
        "started-info-390",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }

    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(licenses_in_chromium);
