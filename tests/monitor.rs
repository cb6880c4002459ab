//! The Job Monitor in a real browser: headless Chromium, driven by `tests/browser/monitor.mjs`
//! (playwright-core), signs in, launches an assign job of SPE_E5 for the demo group Sales, waits
//! for Finished with Exception, reruns it with the checkbox and Start, reads the job page and takes
//! screenshots at 1280×800 and 390×844 into `<target dir>/monitor-screenshots/`. What it needs to
//! run: see `tests/browser/run.rs`.

mod common;
#[path = "browser/run.rs"]
mod run;

use common::Backend;
use graph_emulator::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_monitor_launch_rerun_and_job_page_in_chromium() {
    if !run::browser_available("Job Monitor") {
        return;
    }

    let (emulator, app, tenant) =
        run::with_directory(Backend::Embedded, Scenario::demo(), "", "monitor")
            .await
            .expect("the embedded backend needs no services");

    let shots = run::screenshot_dir("monitor-screenshots");
    run::run_script("monitor.mjs", &app, &tenant, &shots).await;

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
    // The page then undid the job: the undo, a remove linked to it, has the last word on its
    // members, so it is the undo's outcomes that must match the directory now.
    let removes: serde_json::Value = app
        .get("/v1/jobs?kind=remove", &tenant.viewer)
        .send()
        .await
        .expect("list jobs")
        .json()
        .await
        .expect("job list");
    let undo_id = removes["data"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["parent_job_id"] == id))
        .and_then(|j| j["id"].as_str())
        .unwrap_or_else(|| panic!("the undo of {id}: {removes}"))
        .to_owned();
    let undo = app.wait_for_job(&tenant.viewer, &undo_id, 60).await;
    assert_eq!(undo["status"], "finished", "{undo}");
    app.assert_outcomes_true(&tenant.viewer, &undo_id, &emulator.base_url())
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

/// A job its canary paused: its page shows no running clock, in English and Swedish
/// (`tests/browser/paused.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_job_page_has_no_running_clock() {
    if !run::browser_available("Job Monitor") {
        return;
    }
    let (emulator, app, tenant) =
        run::with_directory(Backend::Embedded, Scenario::demo(), "", "paused")
            .await
            .expect("the embedded backend needs no services");
    // Five free SPE_E5 units: most of the canary's 50 members fail and the job pauses.
    run::leave_free_units(&emulator, "SPE_E5", 5).await;
    let sales = app.group_id(&tenant.admin, "Sales").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &serde_json::json!({
                "kind": "assign",
                "groups": [sales],
                "add_licenses": [{"sku_id": graph_emulator::SPE_E5_SKU_ID}],
                "canary": {"members": 50, "max_failed_share": 0.1},
            }),
        )
        .await;
    let id = job["id"].as_str().expect("job id").to_owned();
    let paused = app.wait_until_settled(&tenant.viewer, &id, 120).await;
    assert_eq!(paused["status"], "paused", "{paused}");

    let shots = run::screenshot_dir("paused-screenshots");
    run::run_script_with("paused.mjs", &app, &tenant, &shots, &[("PAUSED_JOB", id)]).await;
}
