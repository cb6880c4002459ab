//! schemathesis (from PyPI) against `/openapi.json` of a running licensor: every route and method,
//! a bounded number of generated requests each, with an admin token of a tenant whose directory is
//! the emulator. Any 5xx, any answer that breaks the document (status, content type, headers,
//! body schema) or any accepted invalid input fails the test.
//!
//! The `schemathesis` command must be on PATH (`.ci/run` installs it). Outside CI a missing
//! command skips the test with a notice; with CI=true it fails.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Backend, TestApp};
use graph_emulator::{EmulatorConfig, Scenario};
use licensor::Roles;
use serde_json::json;

/// Generated requests per operation (schemathesis `--max-examples`); a deeper run locally:
/// `LICENSOR_SCHEMATHESIS_EXAMPLES=500`.
const MAX_EXAMPLES: &str = "50";
/// The whole run's limit; a run that takes longer fails.
const TIME_LIMIT: Duration = Duration::from_secs(600);
const REVOKE: &str = "/v1/tokens/{id}/revoke";
/// Every check schemathesis has but one: `positive_data_acceptance` expects every request the
/// document allows to be accepted, but some are refused by design and say so with a documented
/// 4xx: an opaque `cursor` that no page handed out (400), an `Idempotency-Key` already used for
/// another request (422 `idempotency_key_reused`), and rules across fields (at most 100,000
/// seats with a term).
const EXCLUDED_CHECKS: &str = "positive_data_acceptance";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The schemathesis command, or `None` (outside CI) when it is not installed.
async fn schemathesis() -> Option<String> {
    let found = tokio::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(out) => Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        None if in_ci() => {
            panic!("schemathesis is not installed (pip install schemathesis); CI may not skip it")
        }
        None => {
            eprintln!("NOTICE: schemathesis is not installed (pip install schemathesis); skipped");
            None
        }
    }
}

async fn fuzz(backend: Backend) {
    let Some(version) = schemathesis().await else {
        return;
    };
    // No per-token limit: schemathesis sends as fast as it can, and 429 is tested elsewhere.
    let Some(app) =
        TestApp::start_with(backend, Roles::ALL, "[api]\nrate_limit_per_second = 0\n").await
    else {
        return;
    };
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let t = app.tenant("fuzzed").await;
    app.connect_directory(t.id, &emulator).await;
    // Something to find: a license with a checkout.
    let license = app
        .post_json(
            "/v1/licenses",
            &t.admin,
            &json!({"name": "Fuzzed", "seats": 5, "term_days": 365}),
        )
        .await;
    let license_id = license["id"].as_str().expect("license id");
    app.post_json(
        &format!("/v1/licenses/{license_id}/checkout"),
        &t.admin,
        &json!({"assignee": {"type": "user", "id": "ada@example.com"}}),
    )
    .await;

    let work = tempfile::tempdir().unwrap();
    eprintln!("{version}: {} on {backend:?}", app.url);
    // Every operation but token revocation, with one admin token: schemathesis reuses the ids it
    // has seen, so a run that may revoke tokens would soon revoke its own and see only 401s.
    let everything = run(&app.url, &t.admin, work.path(), &["--exclude-path", REVOKE]).await;
    // Then revocation (with the token routes, where it finds real ids), with a token of its own.
    let revoker = app.tenant("fuzzed-tokens").await;
    let revocation = run(
        &app.url,
        &revoker.admin,
        work.path(),
        &["--include-path-regex", "^/v1/tokens"],
    )
    .await;
    assert!(
        everything && revocation,
        "schemathesis found problems; see its report above"
    );
    emulator.shutdown().await;
    app.stop().await;
}
on_both_backends!(fuzz);

/// One schemathesis run against `url` with `token`; true when it found nothing. Its report goes
/// to the test's output.
async fn run(url: &str, token: &str, work: &std::path::Path, filter: &[&str]) -> bool {
    let max_examples =
        std::env::var("LICENSOR_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.current_dir(work)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--url", url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
        .arg("--continue-on-failure")
        .args(["--max-examples", &max_examples])
        .args(["--seed", "20240601"])
        // One worker: schemathesis 4.32's coverage phase can fail with an internal KeyError
        // when two workers share its caches.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .args(["--suppress-health-check", "all"])
        .args(["--no-color", "--output-truncate", "false"])
        .args(filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIME_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {TIME_LIMIT:?}"))
        .expect("run schemathesis");
    eprintln!(
        "== schemathesis {}\n{}\n{}",
        filter.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}
