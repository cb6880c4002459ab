//! Previews in a real browser: headless Chromium, driven by `tests/browser/preview.mjs`
//! (playwright-core), on the demo directory. The Remove picker for Sales lists only the licenses
//! Sales members hold, with the emulator's counts; SPE_E5 for All Staff shows the shortage
//! prompt naming the shortfall; launched anyway, every member ends as predicted and as the
//! directory says. The usage location picker names its countries in the chosen language
//! ("Sverige" in Swedish, sorted as Swedish sorts). Screenshots at 1280×800 and 390×844 go to `<target dir>/preview-screenshots/`.
//! What it needs to run: see `tests/browser/run.rs`.

mod common;
#[path = "common/held.rs"]
mod held;
#[path = "browser/run.rs"]
mod run;

use common::Backend;
use graph_emulator::{SPE_E5_SKU_ID, Scenario};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_held_licenses_shortage_and_launch_in_chromium() {
    if !run::browser_available("preview") {
        return;
    }
    // Four lanes of 20-member chunks at once: the launch still gives the last free units to the
    // members the preview named (see README, "Preview, then launch").
    let (emulator, app, tenant) = run::with_directory(
        Backend::Embedded,
        Scenario::demo(),
        "[jobs]\nchunk_size = 20\nlanes_per_job = 4\n",
        "preview",
    )
    .await
    .expect("the embedded backend needs no services");
    let http = app.http.clone();

    // Sales members with licenses of their own; what they hold, by part number, as the
    // emulator says.
    let sales = app.group_id(&tenant.viewer, "Sales").await;
    let members = held::license_sales(&http, &emulator, &sales).await;
    let skus = app.get_json("/v1/directory/skus", &tenant.viewer).await;
    let name = |id: &str| {
        skus["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sku_id"] == id)
            .and_then(|s| s["sku_part_number"].as_str())
            .unwrap_or(id)
            .to_owned()
    };
    let expected: serde_json::Map<String, Value> = held::held_by(&http, &emulator, &members)
        .await
        .into_iter()
        .map(|(sku, (d, i))| (name(&sku), json!([d, i])))
        .collect();
    let stats = common::deployment::stats(&emulator).await;
    let e5 = stats["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuId"] == SPE_E5_SKU_ID || k["skuPartNumber"] == "SPE_E5")
        .unwrap_or_else(|| panic!("SPE_E5 in {stats}"))
        .clone();
    let e5_free = e5["enabled"].as_i64().unwrap() - e5["consumedUnits"].as_i64().unwrap();

    let shots = run::screenshot_dir("preview-screenshots");
    run::run_script_with(
        "preview.mjs",
        &app,
        &tenant,
        &shots,
        &[
            ("EXPECTED_HELD", Value::Object(expected).to_string()),
            ("SALES_MEMBERS", members.len().to_string()),
            ("E5_FREE", e5_free.to_string()),
            ("ALL_STAFF_MEMBERS", "5000".to_owned()),
        ],
    )
    .await;

    // The launched job: every member ended as predicted, which is what the directory holds.
    let jobs = app.list("/v1/jobs?kind=assign", &tenant.viewer).await;
    let launched = jobs
        .iter()
        .find(|j| j["preview"]["launched_at"].is_string())
        .unwrap_or_else(|| panic!("a launched preview among {jobs:?}"));
    let id = launched["id"].as_str().unwrap();
    let job = app.wait_for_job(&tenant.viewer, id, 600).await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    assert_eq!(job["progress"]["total"], 5000, "{job}");
    let items = app.all_items(&tenant.viewer, id).await;
    assert_eq!(items.len(), 5000);
    for item in &items {
        let p = &item["prediction"];
        let want = match p["outcome"].as_str() {
            Some("would_succeed") => "succeeded",
            Some("would_skip") => "skipped",
            Some("would_fail") => "failed",
            other => panic!("no prediction ({other:?}): {item}"),
        };
        assert_eq!(item["status"], want, "predicted {p}, got {item}");
        if want == "failed" {
            assert_eq!(
                item["error"]["code"], p["code"],
                "predicted {p}, got {item}"
            );
        }
    }
    app.assert_outcomes_true(&tenant.viewer, id, &emulator.base_url())
        .await;
    // The preview cancelled on the phone stays cancelled, and wrote nothing.
    assert!(
        jobs.iter()
            .any(|j| j["status"] == "cancelled" && j["preview"].is_object()),
        "a cancelled preview among {jobs:?}"
    );

    app.stop().await;
    emulator.shutdown().await;
}
