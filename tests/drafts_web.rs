//! A change of language in a real browser: headless Chromium, driven by
//! `tests/browser/drafts.mjs` (playwright-core), fills every form of the web app (sign-in, New
//! job of each kind, new and edited license, checkout to an asset, a user and a reused started
//! seat, Used By's ticks and Checkin License, an asset's "check in everything", the Job Monitor's
//! search and selection), switches between English and Swedish and finds each entry still there
//! with the labels in the new language, and a request sent before the switch sent again with the
//! same Idempotency-Key. Then a member's history at 390 px, in both languages: the job status
//! badge clear of the Groups value and each status on one line. Screenshots go to
//! `<target dir>/drafts-screenshots/`. What it needs to run: see `tests/browser/run.rs`.

mod common;
#[path = "browser/run.rs"]
mod run;

use common::Backend;
use graph_emulator::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn language_switch_keeps_entries_and_phone_history_wraps_in_chromium() {
    if !run::browser_available("language switch") {
        return;
    }
    let (emulator, app, tenant) =
        run::with_directory(Backend::Embedded, Scenario::demo(), "", "drafts")
            .await
            .expect("the embedded backend needs no services");

    // A job that ends Finished with Exception: five free SPE_E5 units for Platform Team's 40.
    run::leave_free_units(&emulator, "SPE_E5", 5).await;
    let team = app.group_id(&tenant.admin, "Platform Team").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &serde_json::json!({
                "kind": "assign",
                "groups": [team],
                "add_licenses": [{"sku_id": graph_emulator::SPE_E5_SKU_ID}],
            }),
        )
        .await;
    let id = job["id"].as_str().expect("job id").to_owned();
    let done = app.wait_for_job(&tenant.viewer, &id, 120).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    let items = app
        .get_json(
            &format!("/v1/jobs/{id}/items?status=succeeded&limit=1"),
            &tenant.viewer,
        )
        .await;
    let member = items["data"][0]["user_principal_name"]
        .as_str()
        .unwrap_or_else(|| panic!("a member the job wrote for: {items}"))
        .to_owned();

    let shots = run::screenshot_dir("drafts-screenshots");
    run::run_script_with(
        "drafts.mjs",
        &app,
        &tenant,
        &shots,
        &[("HISTORY_MEMBER", member)],
    )
    .await;
    for name in ["history-390-en", "history-390-sv", "new-job-assign-sv-1280"] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }

    app.stop().await;
    emulator.shutdown().await;
}
