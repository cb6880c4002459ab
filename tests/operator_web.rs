//! The Job Monitor's search box and bulk rerun in a real browser: headless Chromium, driven by
//! `tests/browser/operator.mjs` (playwright-core), finds a member by user principal name and
//! reads the history of assign → replace → remove, opens a job by id and a group's jobs by name,
//! then selects all 30 failed jobs with "Select all 30 matching" and reruns them after a
//! confirmation that states 30 (also in Swedish). Screenshots at 1280×800 and 390×844 go into
//! `<target dir>/operator-screenshots/`. What it needs to run: see `tests/browser/run.rs`.

mod common;
#[path = "browser/run.rs"]
mod run;

use common::Backend;
use graph_emulator::{ENTERPRISEPACK_SKU_ID, GroupSpec, SPE_E5_SKU_ID, Scenario};
use serde_json::json;

fn scenario() -> Scenario {
    let base = Scenario::demo();
    let sku = |part: &str| common::jobs::sku_of(part, 1_000);
    Scenario {
        seed: 5151,
        users: 60,
        users_without_usage_location: 0.0,
        usage_location: "SE".into(),
        groups: vec![GroupSpec::new("Team", 8)],
        skus: vec![sku("ENTERPRISEPACK"), sku("SPE_E5")],
        ..base
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_by_upn_and_select_all_matching_in_chromium() {
    if !run::browser_available("Job Monitor search and bulk") {
        return;
    }
    let (emulator, app, t) = run::with_directory(Backend::Embedded, scenario(), "", "ops")
        .await
        .expect("the embedded backend needs no services");
    let team = app.group_id(&t.admin, "Team").await;

    for body in [
        json!({"kind": "assign", "groups": [team], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}]}),
        json!({"kind": "replace", "groups": [team], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "remove_licenses": [SPE_E5_SKU_ID]}),
        json!({"kind": "remove", "groups": [team], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}),
    ] {
        let job = app.post_json("/v1/jobs", &t.admin, &body).await;
        let id = job["id"].as_str().expect("job id").to_owned();
        let job = app.wait_for_job(&t.viewer, &id, 120).await;
        assert_eq!(job["status"], "finished", "{job}");
        app.assert_outcomes_true(&t.viewer, &id, &emulator.base_url())
            .await;
    }
    // Thirty failed jobs: a group the directory does not have.
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut failed = Vec::new();
    for _ in 0..30 {
        let job = app
            .post_json(
                "/v1/jobs",
                &t.admin,
                &json!({"kind": "assign", "groups": [ghost], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}]}),
            )
            .await;
        failed.push(job["id"].as_str().expect("job id").to_owned());
    }
    for id in &failed {
        let job = app.wait_for_job(&t.viewer, id, 120).await;
        assert_eq!(job["status"], "failed", "{job}");
    }

    let shots = run::screenshot_dir("operator-screenshots");
    run::run_script("operator.mjs", &app, &t, &shots).await;

    // What the page did is what the API says: each of the 30 was rerun once, and one action-log
    // entry records it.
    for id in &failed {
        let job = app.wait_for_job(&t.viewer, id, 120).await;
        assert_eq!(job["runs"], 2, "{job}");
    }
    let audit = app
        .get_json("/v1/audit?action=job.bulk_rerun", &t.viewer)
        .await;
    let entries = audit["data"].as_array().expect("audit entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["after"]["acted_on"], 30, "{audit}");
    assert_eq!(
        entries[0]["before"]["filter"],
        json!({"status": ["failed"]}),
        "{audit}"
    );
    for name in [
        "history-1280",
        "rerun-confirm-1280",
        "rerun-confirm-sv-1280",
        "rerun-outcome-1280",
        "history-390",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
    app.stop().await;
    emulator.shutdown().await;
}
