//! The Licenses half of the web app in a real browser: headless Chromium, driven by
//! `tests/browser/licenses.mjs` (playwright-core), walks the seeds' flows — checkout to a user
//! picked from the directory and to an asset, the out-of-stock refusal, Used By → bulk action bar
//! → Checkin License, reuse of a started license choosing its end date (also in Swedish), the
//! info button's counts, checking in everything one asset holds — asserting the API's figures
//! after each step, checks the viewer's and operator's views, and takes screenshots at 1280×800
//! and 390×844 into `<target dir>/licenses-screenshots/` (`…-postgres/` on PostgreSQL). What it
//! needs to run: see `tests/browser/run.rs`.

mod common;
#[path = "browser/run.rs"]
mod run;

use common::Backend;
use graph_emulator::Scenario;
use serde_json::Value;

async fn licenses_in_chromium(backend: Backend) {
    if !run::browser_available("Licenses") {
        return;
    }
    let Some((emulator, app, tenant)) =
        run::with_directory(backend, Scenario::demo(), "", "licenses-web").await
    else {
        return;
    };

    let shots = run::screenshot_dir(match backend {
        Backend::Embedded => "licenses-screenshots",
        Backend::Production => "licenses-screenshots-postgres",
    });
    run::run_script("licenses.mjs", &app, &tenant, &shots).await;

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
