//! A change of language in a real browser: headless Chromium, driven by
//! `tests/browser/drafts.mjs` (playwright-core), fills every form of the web app (sign-in, New
//! job of each kind, new and edited license, checkout to an asset, a user and a reused started
//! seat, Used By's ticks and Checkin License, an asset's "check in everything", the Job Monitor's
//! search and selection), switches between English and Swedish and finds each entry still there
//! with the labels in the new language, and a request sent before the switch sent again with the
//! same Idempotency-Key. Then a member's history at 390 px, in both languages: the job status
//! badge clear of the Groups value and each status on one line. An error shown on a form stays
//! through the switch, in the new language where the web app knows it. Screenshots go to
//! `<target dir>/drafts-screenshots/`.
//!
//! And a member's history and a job's errors in both languages (`tests/browser/history.mjs`):
//! the usage location a job set, a verified write's note and the error codes' explanations in
//! the language of the screen; on a phone the heading breaks a user principal name only after
//! its @ and before its dots. Screenshots go to `<target dir>/history-screenshots/`. What they
//! need to run: see `tests/browser/run.rs`.

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

/// 12 members, half of them without a usage location, and 8 units of SPE_E5: an assign that
/// gives usage location NO ends Finished with Exception (4 members fail `count_violation`).
fn short_of_e5() -> Scenario {
    let base = Scenario::demo();
    let sku = |part: &str, units| {
        let mut s = base
            .skus
            .iter()
            .find(|s| s.sku_part_number == part)
            .cloned()
            .expect("demo SKU");
        s.enabled = units;
        s
    };
    Scenario {
        seed: 4242,
        users: 60,
        users_without_usage_location: 0.5,
        usage_location: "SE".into(),
        groups: vec![graph_emulator::GroupSpec::new("Team", 12)],
        skus: vec![sku("ENTERPRISEPACK", 1_000), sku("SPE_E5", 8)],
        ..Scenario::demo()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_history_and_error_codes_in_both_languages_in_chromium() {
    if !run::browser_available("member history") {
        return;
    }
    let (emulator, app, tenant) =
        run::with_directory(Backend::Embedded, short_of_e5(), "", "history")
            .await
            .expect("the embedded backend needs no services");
    let team = app.group_id(&tenant.admin, "Team").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &serde_json::json!({
                "kind": "assign",
                "groups": [team],
                "add_licenses": [{"sku_id": graph_emulator::SPE_E5_SKU_ID}],
                "usage_location": "NO",
                "verify": true,
            }),
        )
        .await;
    let id = job["id"].as_str().expect("job id").to_owned();
    let done = app.wait_for_job(&tenant.viewer, &id, 120).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    let changes = app.all_changes(&tenant.viewer, &id).await;
    let located = changes
        .iter()
        .find(|c| c["status"] == "succeeded" && c["usage_location"]["after"] == "NO")
        .and_then(|c| c["user_principal_name"].as_str())
        .unwrap_or_else(|| panic!("a member given usage location NO: {changes:?}"))
        .to_owned();
    let items = app.all_items(&tenant.viewer, &id).await;
    let failed = items
        .iter()
        .find(|i| i["error"]["code"] == "count_violation")
        .and_then(|i| i["user_principal_name"].as_str())
        .unwrap_or_else(|| panic!("a member that failed count_violation: {items:?}"))
        .to_owned();

    let shots = run::screenshot_dir("history-screenshots");
    run::run_script_with(
        "history.mjs",
        &app,
        &tenant,
        &shots,
        &[
            ("JOB_ID", id),
            ("MEMBER_LOCATED", located),
            ("MEMBER_FAILED", failed),
        ],
    )
    .await;

    app.stop().await;
    emulator.shutdown().await;
}
