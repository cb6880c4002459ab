//! Group license jobs end to end, through HTTP against the directory emulator, on the embedded
//! default and on PostgreSQL + Redis: assign with a SKU that runs out, users without a usage
//! location and group-inherited licenses, then a rerun that redoes only what failed; remove and
//! replace; shared members; temporary assignments removed by the expiry sweep; validation and the
//! job-level failures. Exports are in tests/export.rs.

mod common;
#[path = "browser/run.rs"]
mod run;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::jobs::{
    Setup, assert_as_predicted, assign_calls, code, holds, item_rows, launch, list_jobs, make_due,
    predicted, removals_of, scenario, settled, setup, setup_with, sku_of, wait_paused,
    wait_previewed, wait_swept,
};
use common::{Backend, expect_problem, success_json};
use graph_emulator::{ENTERPRISEPACK_SKU_ID, EXCHANGESTANDARD_SKU_ID, GroupSpec, SPE_E5_SKU_ID};
use licensor_core::entities::job_item;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

async fn assign_runs_out_then_rerun_redoes_only_failures(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}]}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    assert_eq!(job["progress"]["total"], 1000);
    assert_eq!(job["progress"]["pending"], 0);
    assert_eq!(job["groups"][0]["display_name"], "Staff");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    // Every item's outcome matches the directory, member by member.
    let items = s.app.all_items(&s.viewer, &id).await;
    assert_eq!(items.len(), 1000);
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut writes_before: HashMap<String, u64> = HashMap::new();
    for item in &items {
        let user_id = item["user_id"].as_str().unwrap();
        let user = s.user(user_id).await;
        let (direct, _) = holds(&user, SPE_E5_SKU_ID);
        match item["status"].as_str().unwrap() {
            "succeeded" => {
                assert!(direct, "succeeded but not assigned: {item} {user}");
                writes_before.insert(user_id.into(), user["successfulWrites"].as_u64().unwrap());
            }
            "failed" => {
                assert!(!direct, "failed but assigned: {item}");
                match code(item) {
                    "usage_location_missing" => assert!(user["usageLocation"].is_null(), "{user}"),
                    "count_violation" => {}
                    other => panic!("unexpected code {other}: {item}"),
                }
                *by_code.entry(code(item).into()).or_default() += 1;
            }
            other => panic!("unexpected status {other}: {item}"),
        }
    }
    assert!(by_code["usage_location_missing"] > 0, "{by_code:?}");
    assert!(by_code["count_violation"] > 0, "{by_code:?}");
    // The SKU's units are used up exactly.
    let stats = s.stats().await;
    let e5 = stats["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuId"] == SPE_E5_SKU_ID)
        .unwrap()
        .clone();
    assert_eq!(e5["consumedUnits"], e5["enabled"], "{e5}");

    // The job page's error groups agree with the items.
    let errors: Value = s
        .app
        .get(&format!("/v1/jobs/{id}/errors"), &s.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for g in errors["data"].as_array().unwrap() {
        assert_eq!(
            g["count"].as_u64().unwrap() as usize,
            by_code[g["code"].as_str().unwrap()]
        );
        assert!(g["explanation"].as_str().unwrap().len() > 20);
    }
    // Filtering items by code.
    let filtered: Value = s
        .app
        .get(
            &format!("/v1/jobs/{id}/items?status=failed&code=usage_location_missing&limit=500"),
            &s.viewer,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        filtered["data"].as_array().unwrap().len(),
        by_code["usage_location_missing"]
    );

    // A viewer may not rerun; a finished job cannot be rerun.
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.viewer)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 403, "forbidden").await;

    // Fix the causes in the directory: more units, and a location on every user without one.
    s.emulator_patch(&format!("skus/{SPE_E5_SKU_ID}"), json!({"enabled": 2000}))
        .await;
    for item in items.iter().filter(|i| code(i) == "usage_location_missing") {
        s.emulator_patch(
            &format!("users/{}", item["user_id"].as_str().unwrap()),
            json!({"usageLocation": "NO"}),
        )
        .await;
    }
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let rerun: Value = resp.json().await.unwrap();
    assert_eq!(rerun["status"], "queued");
    assert_eq!(rerun["runs"], 2);
    let job = s.wait(&id).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["progress"]["succeeded"], 1000);
    assert_eq!(job["progress"]["failed"], 0);

    // Members that had succeeded were not written again.
    for (user_id, before) in &writes_before {
        let user = s.user(user_id).await;
        assert_eq!(
            user["successfulWrites"].as_u64().unwrap(),
            *before,
            "{user_id}"
        );
    }
    // The history of both runs stays readable.
    let runs: Value = s
        .app
        .get(&format!("/v1/jobs/{id}/runs"), &s.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let failed_first: u64 = by_code.values().sum::<usize>() as u64;
    assert_eq!(runs[0]["status"], "finished_with_exception");
    assert_eq!(runs[0]["failed"].as_u64().unwrap(), failed_first);
    assert_eq!(runs[1]["status"], "finished");
    assert_eq!(runs[1]["total"].as_u64().unwrap(), failed_first);
    assert_eq!(runs[1]["succeeded"].as_u64().unwrap(), failed_first);

    // Now it is finished: no second rerun.
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 409, "not_rerunnable").await;

    // The report lists every member with its outcome.
    let report = s
        .app
        .get(&format!("/v1/jobs/{id}/report?format=csv"), &s.viewer)
        .send()
        .await
        .unwrap();
    assert!(
        report.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = report.text().await.unwrap();
    assert_eq!(text.lines().count(), 1001);
    assert!(text.starts_with("user_id,user_principal_name,display_name,group_id,status"));
    // As JSON, counts are numbers and an empty cell is null.
    let rows = s
        .app
        .get_json(&format!("/v1/jobs/{id}/report?format=json"), &s.viewer)
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1000);
    for row in rows {
        assert!(row["attempts"].as_u64().is_some_and(|n| n >= 1), "{row}");
        assert!(row["run"].as_u64().is_some_and(|n| n >= 1), "{row}");
        assert!(row["status"].is_string(), "{row}");
        if row["status"] == "succeeded" {
            assert!(row["error_code"].is_null(), "{row}");
        }
    }

    // Monitoring: jobs by kind and status, items by outcome and code, queue depth.
    let metrics = s
        .http
        .get(format!("{}/metrics", s.app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "licensor_jobs{kind=\"assign\",status=\"finished\"} 1",
        "licensor_jobs{kind=\"assign\",status=\"running\"} 0",
        "code=\"count_violation\"",
        "code=\"usage_location_missing\"",
        "licensor_job_items_pending 0",
        "licensor_queue_depth{",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
    s.finish().await;
}
on_both_backends!(assign_runs_out_then_rerun_redoes_only_failures);

/// The change ledger keeps every usage location a job set, as the directory has it: an assign
/// to Staff with `usage_location` SE and a SKU that runs out gives each member without a
/// location SE before its license write — those written succeed, the rest fail for want of
/// units and keep SE (Graph has no transaction across the two calls). Each such member, and
/// only such a member, has `usage_location {before: null, after: "SE"}` in its ledger entry
/// (a failed one with its licenses unchanged), in the report's `usage_location_set` column and
/// in its member history. An undo of the job leaves the usage locations set. The directory
/// answers a tenth of its requests 503 meanwhile, so some members' license writes fail after
/// their location was set and are tried again: the location stays in the entry their later
/// write records.
async fn the_ledger_keeps_the_usage_locations_a_job_set(backend: Backend) {
    let config =
        "[directory]\nretry_max_attempts = 1\nretry_min_delay_ms = 50\nretry_max_delay_ms = 200\n";
    let Some(s) = setup(backend, config).await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    s.faults(json!({"error_rate": 0.1, "error_statuses": [503], "seed": 5}))
        .await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE"}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let job = s.app.wait_for_job(&s.admin, &id, 300).await;
    s.faults(json!({})).await;
    s.truth(&id).await;
    assert!(
        s.stats().await["injected_errors"].as_u64().unwrap() > 0,
        "no error was injected"
    );
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    let changes: HashMap<String, Value> = s
        .app
        .all_changes(&s.viewer, &id)
        .await
        .into_iter()
        .map(|c| (c["user_id"].as_str().unwrap().to_owned(), c))
        .collect();
    let items = s.app.all_items(&s.viewer, &id).await;
    let mut located = HashSet::new();
    let (mut done, mut failed) = (0, 0);
    for item in &items {
        let user_id = item["user_id"].as_str().unwrap();
        let user = s.user(user_id).await;
        let entry = changes.get(user_id);
        let location = entry.map_or(Value::Null, |c| c["usage_location"].clone());
        // The emulator counts profile writes: the job's PATCH of the usage location.
        if user["profileWrites"].as_u64().unwrap() == 0 {
            assert!(location.is_null(), "{item} {entry:?} {user}");
            continue;
        }
        located.insert(user_id.to_owned());
        assert_eq!(user["usageLocation"], "SE", "{user}");
        assert_eq!(
            location,
            json!({"before": null, "after": "SE"}),
            "{item} {user}"
        );
        match item["status"].as_str().unwrap() {
            "succeeded" => done += 1,
            "failed" => {
                failed += 1;
                let entry = entry.unwrap();
                assert_eq!(entry["before"], entry["after"], "{entry}");
                assert!(
                    item["error"]["detail"]
                        .as_str()
                        .unwrap()
                        .ends_with("(its usage location was set to SE before the license write)"),
                    "{item}"
                );
            }
            other => panic!("unexpected status {other}: {item}"),
        }
    }
    assert!(done > 0 && failed > 0, "{done} done, {failed} failed");
    // The report has it in its own column.
    let report = s
        .app
        .get(&format!("/v1/jobs/{id}/report?format=csv"), &s.viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = report.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with("verified,usage_location_set"),
        "{report}"
    );
    assert_eq!(
        lines.filter(|l| l.ends_with(",SE")).count(),
        located.len(),
        "{report}"
    );
    // So has the member's history.
    let member = located.iter().next().unwrap();
    let history = s
        .app
        .get_json(&format!("/v1/members/{member}/history"), &s.viewer)
        .await;
    assert_eq!(
        history["data"][0]["usage_location"],
        json!({"before": null, "after": "SE"}),
        "{history}"
    );
    // The job's page says so too.
    if backend == Backend::Embedded && run::browser_available("change ledger") {
        let tenant = s.tenant();
        let shots = run::screenshot_dir("browser-ledger");
        run::run_script_with(
            "ledger.mjs",
            &s.app,
            &tenant,
            &shots,
            &[("JOB_ID", id.clone())],
        )
        .await;
    }
    // An undo takes the licenses back and leaves the usage locations.
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/undo"), &s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let undo: Value = resp.json().await.unwrap();
    let undo = s.wait(undo["id"].as_str().unwrap()).await;
    assert_eq!(undo["status"], "finished", "{undo}");
    for user_id in &located {
        assert_eq!(s.user(user_id).await["usageLocation"], "SE", "{user_id}");
    }
    s.finish().await;
}
on_both_backends!(the_ledger_keeps_the_usage_locations_a_job_set);

async fn remove_and_replace_respect_group_licenses(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let pilot = s.app.group_id(&s.admin, "E5 Pilot").await;
    // Give Sales E5 directly (with a location for those without one), then remove it again
    // from Sales and the pilot group together.
    let job = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "FI"}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let items = s
        .app
        .all_items(&s.viewer, job["id"].as_str().unwrap())
        .await;
    for item in &items {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        assert!(holds(&user, SPE_E5_SKU_ID).0, "{user}");
        assert!(!user["usageLocation"].is_null());
    }

    let job = s
        .run(
            json!({"kind": "remove", "groups": [sales, pilot], "remove_licenses": [SPE_E5_SKU_ID]}),
        )
        .await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    let items = s
        .app
        .all_items(&s.viewer, job["id"].as_str().unwrap())
        .await;
    let sales_ids: HashSet<String> = items
        .iter()
        .filter(|i| i["group_id"] == sales.as_str())
        .map(|i| i["user_id"].as_str().unwrap().to_owned())
        .collect();
    let mut inherited = 0;
    for item in &items {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        let (direct, via_group) = holds(&user, SPE_E5_SKU_ID);
        assert!(!direct, "a direct E5 is left: {user}");
        match item["status"].as_str().unwrap() {
            "succeeded" => assert!(sales_ids.contains(item["user_id"].as_str().unwrap())),
            "failed" => {
                assert_eq!(code(item), "inherited_from_group", "{item}");
                assert!(via_group, "{user}");
                inherited += 1;
            }
            "skipped" => {}
            other => panic!("{other}"),
        }
    }
    assert!(inherited > 0);

    // Replace all: Sales members get E5 directly again, then each one's direct licenses become
    // exactly ENTERPRISEPACK in one call per member (one successful write each); licenses from
    // a group stay.
    let job = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}]}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let mut before: HashMap<String, u64> = HashMap::new();
    for id in &sales_ids {
        before.insert(
            id.clone(),
            s.user(id).await["successfulWrites"].as_u64().unwrap(),
        );
    }
    let job = s
        .run(json!({"kind": "replace", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "replace_all": true, "usage_location": "FI"}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    for id in &sales_ids {
        let user = s.user(id).await;
        let direct: Vec<&Value> = user["licenseAssignmentStates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["assignedByGroup"].is_null())
            .map(|l| &l["skuId"])
            .collect();
        assert_eq!(direct, vec![&json!(ENTERPRISEPACK_SKU_ID)], "{user}");
        assert_eq!(
            user["successfulWrites"].as_u64().unwrap(),
            before[id] + 1,
            "{user}"
        );
    }
    s.finish().await;
}
on_both_backends!(remove_and_replace_respect_group_licenses);

async fn shared_members_are_processed_once(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [staff, sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let items = s
        .app
        .all_items(&s.viewer, job["id"].as_str().unwrap())
        .await;
    let ids: HashSet<&str> = items
        .iter()
        .map(|i| i["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), items.len(), "one item per member");
    assert!(
        items.len() > 1000 && items.len() < 1250,
        "{} members",
        items.len()
    );
    let stats = s.stats().await;
    assert_eq!(stats["writes_per_user_max"], 1, "{stats}");
    assert_eq!(
        stats["successful_writes"].as_u64().unwrap() as usize,
        items.len(),
        "one assignLicense per member: {stats}"
    );
    s.finish().await;
}
on_both_backends!(shared_members_are_processed_once);

/// A submit sent again with the same `Idempotency-Key` (a client retrying after a lost answer)
/// gets the first answer again — 202, the same job, and the same `Location` — also with its keys
/// in another order, and no second job is created or written.
async fn an_idempotent_submit_replays_its_answer_and_location(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let body = json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"});
    let jobs_before = list_jobs(&s, "").await.len();
    let submit = || {
        s.app
            .post("/v1/jobs", &s.admin)
            .header("Idempotency-Key", "assign-sales-1")
            .json(&body)
            .send()
    };
    let first = submit().await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let replay = submit().await.unwrap();
    assert_eq!(replay.status().as_u16(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["location"].to_str().unwrap(), location);
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], first["id"]);
    // The same request with its keys in another order is the same request: replayed.
    let reordered = r#"{"usage_location": "SE", "add_licenses": [{"sku_id": "SKU"}], "groups": ["GROUP"], "kind": "assign"}"#
        .replace("SKU", ENTERPRISEPACK_SKU_ID)
        .replace("GROUP", &sales);
    let again = s
        .app
        .post("/v1/jobs", &s.admin)
        .header("Idempotency-Key", "assign-sales-1")
        .header("content-type", "application/json")
        .body(reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let done = s.wait(&id).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(list_jobs(&s, "").await.len(), jobs_before + 1);
    s.finish().await;
}
on_both_backends!(an_idempotent_submit_replays_its_answer_and_location);

/// A service plan named twice in a license's `disabled_plans` is switched off once: the job's
/// request keeps each plan once, in the order first given, and the same request without the
/// repeats is the same request for its `Idempotency-Key`.
async fn repeated_disabled_plans_are_kept_once(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let pilot = s.app.group_id(&s.admin, "E5 Pilot").await;
    let skus = s.app.get_json("/v1/directory/skus", &s.admin).await;
    let plan = |name: &str| -> String {
        skus["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["sku_id"] == ENTERPRISEPACK_SKU_ID)
            .unwrap()["service_plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["service_plan_name"] == name)
            .and_then(|p| p["service_plan_id"].as_str())
            .unwrap_or_else(|| panic!("ENTERPRISEPACK has {name}: {skus}"))
            .to_owned()
    };
    // Plans no other plan depends on, not in id order.
    let (teams, calling) = (plan("TEAMS1"), plan("MCOSTANDARD"));
    let (p, q) = (teams.as_str(), calling.as_str());
    let submit = |disabled: Vec<&str>| {
        s.app
            .post("/v1/jobs", &s.admin)
            .header("Idempotency-Key", "repeated-plans")
            .json(&json!({"kind": "assign", "groups": [pilot], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID, "disabled_plans": disabled}], "usage_location": "SE"}))
            .send()
    };
    let first = submit(vec![p, q, p, q, p]).await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let job: Value = first.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(
        job["request"]["add_licenses"][0]["disabled_plans"],
        json!([p, q]),
        "{job}"
    );
    assert_eq!(
        s.job(&id).await["request"]["add_licenses"][0]["disabled_plans"],
        json!([p, q]),
        "as stored"
    );
    // The same request written without the repeats: the same request, replayed.
    let again = submit(vec![p, q]).await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let done = s.wait(&id).await;
    assert_eq!(done["status"], "finished", "{done}");
    for change in s.app.all_changes(&s.admin, &id).await {
        let after = change["after"].as_array().unwrap();
        let ep = after
            .iter()
            .find(|l| l["sku_id"] == ENTERPRISEPACK_SKU_ID)
            .unwrap_or_else(|| panic!("{change}"));
        let mut disabled: Vec<&str> = ep["disabled_plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        disabled.sort_unstable();
        let mut want = vec![p, q];
        want.sort_unstable();
        assert_eq!(disabled, want, "{change}");
    }
    assert_eq!(list_jobs(&s, "").await.len(), 1);
    s.finish().await;
}
on_both_backends!(repeated_disabled_plans_are_kept_once);

async fn temporary_assignment_is_removed_when_due(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 2, "unit": "weeks"}}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let parent = job["id"].as_str().unwrap().to_owned();
    let parent_uuid: uuid::Uuid = parent.parse().unwrap();
    // Due in two weeks: nothing happens now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let removals = list_jobs(&s, "kind=remove").await;
    assert!(removals.is_empty(), "{removals:?}");
    // Two weeks pass.
    job_item::Entity::update_many()
        .col_expr(
            job_item::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(job_item::Column::JobId.eq(parent_uuid))
        .filter(job_item::Column::DueAt.is_not_null())
        .exec(&s.app.db)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let removal = loop {
        let removals = list_jobs(&s, "kind=remove").await;
        if let Some(r) = removals.first() {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no removal job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(removal["parent_job_id"], parent.as_str());
    assert!(removal["created_by"].is_null());
    let removal = s.wait(removal["id"].as_str().unwrap()).await;
    assert_eq!(removal["status"], "finished", "{removal}");
    assert_eq!(removal["progress"]["total"], 250);
    let items = s
        .app
        .all_items(&s.viewer, removal["id"].as_str().unwrap())
        .await;
    for item in &items {
        assert_eq!(item["status"], "succeeded", "{item}");
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        assert!(!holds(&user, ENTERPRISEPACK_SKU_ID).0, "{user}");
    }
    // Exactly one removal job, even though the sweep keeps running.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(list_jobs(&s, "kind=remove").await.len(), 1);
    s.finish().await;
}
on_both_backends!(temporary_assignment_is_removed_when_due);

/// A temporary assign followed by a permanent assign of the same license: when the temporary
/// one comes due, its members are kept (the later job still says they hold it, and they do),
/// the members that held it before either job too, and no removal job is created.
async fn later_permanent_assign_keeps_a_temporary_one(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    // Five members hold the license before either job (a remove first lists the members).
    let members = s
        .run(json!({"kind": "remove", "groups": [sales], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}))
        .await;
    let members = s
        .app
        .all_items(&s.viewer, members["id"].as_str().unwrap())
        .await;
    let held_before: Vec<String> = members
        .iter()
        .take(5)
        .map(|i| i["user_id"].as_str().unwrap().to_owned())
        .collect();
    for u in &held_before {
        s.change_licenses(u, &[ENTERPRISEPACK_SKU_ID], &[]).await;
    }
    let temporary = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 1, "unit": "days"}}))
        .await;
    assert_eq!(temporary["status"], "finished", "{temporary}");
    assert_eq!(temporary["progress"]["succeeded"], 245, "{temporary}");
    assert_eq!(temporary["progress"]["skipped"], 5, "{temporary}");
    let temporary = temporary["id"].as_str().unwrap().to_owned();
    let permanent = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_eq!(permanent["progress"]["skipped"], 250, "{permanent}");
    let permanent = permanent["id"].as_str().unwrap().to_owned();

    make_due(&s, &temporary).await;
    wait_swept(&s, &temporary).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(removals_of(&s, &temporary).await.is_empty());
    // Nothing comes due again.
    assert!(
        item_rows(&s, &temporary)
            .await
            .iter()
            .all(|i| i.due_at.is_none())
    );
    let kept = format!("kept {ENTERPRISEPACK_SKU_ID}: assigned without end by job {permanent}");
    for item in s.app.all_items(&s.viewer, &temporary).await {
        if item["status"] == "succeeded" {
            let note = item["note"].as_str().unwrap_or_default();
            assert!(note.contains(&kept), "{item}");
        } else {
            assert!(held_before.contains(&item["user_id"].as_str().unwrap().to_owned()));
        }
    }
    // Both jobs still tell the truth, member by member.
    assert_eq!(s.truth(&permanent).await, 250);
    assert_eq!(s.truth(&temporary).await, 250);
    // A kept member's history: the two assigns, newest first, and no removal.
    let kept_member = s
        .app
        .all_items(&s.viewer, &temporary)
        .await
        .into_iter()
        .find(|i| i["status"] == "succeeded")
        .unwrap();
    let history = s
        .app
        .get_json(
            &format!(
                "/v1/members/{}/history",
                kept_member["user_id"].as_str().unwrap()
            ),
            &s.viewer,
        )
        .await;
    let entries = history["data"].as_array().unwrap();
    let jobs: Vec<&str> = entries
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs[..2],
        [permanent.as_str(), temporary.as_str()],
        "{history}"
    );
    assert!(
        entries[1]["note"].as_str().unwrap().contains(&kept),
        "{history}"
    );
    assert!(
        entries[2..].iter().all(|e| e["kind"] == "remove"
            && e["job_created_at"].as_str() < entries[1]["job_created_at"].as_str()),
        "{history}"
    );
    s.finish().await;
}
on_both_backends!(later_permanent_assign_keeps_a_temporary_one);

/// A temporary assign followed by a temporary one that ends later: the first one's end removes
/// nothing and its members come due again when the later one ends; then the license is removed
/// once, by one removal job.
async fn later_temporary_assign_keeps_it_until_it_ends(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let first = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 1, "unit": "days"}}))
        .await;
    assert_eq!(first["progress"]["succeeded"], 250, "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    let second = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 2, "unit": "weeks"}}))
        .await;
    assert_eq!(second["progress"]["skipped"], 250, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    // The members found holding it record until when the second job wants it kept.
    let until: HashMap<String, chrono::DateTime<chrono::Utc>> = item_rows(&s, &second)
        .await
        .into_iter()
        .map(|i| (i.user_id.clone(), i.due_at.expect("a due time")))
        .collect();
    assert!(
        until
            .values()
            .all(|d| *d > chrono::Utc::now() + chrono::Duration::days(13))
    );

    // The first job's day is up: nothing is removed, its members are due when the second ends.
    make_due(&s, &first).await;
    wait_swept(&s, &first).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(removals_of(&s, &first).await.is_empty());
    assert!(removals_of(&s, &second).await.is_empty());
    for item in item_rows(&s, &first).await {
        assert_eq!(item.due_at, Some(until[&item.user_id]), "{item:?}");
        let note = item.error_detail.unwrap_or_default();
        assert!(note.contains(&format!("by job {second}")), "{note}");
    }
    assert_eq!(s.truth(&first).await, 250);

    // Two weeks pass: removed once. (The second job's time is up first, so a sweep in between
    // cannot find the first one due while the second still wants the license.)
    make_due(&s, &second).await;
    make_due(&s, &first).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let removal = loop {
        if let Some(r) = removals_of(&s, &first).await.first() {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no removal job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let removal = s.wait(removal["id"].as_str().unwrap()).await;
    assert_eq!(removal["status"], "finished", "{removal}");
    assert_eq!(removal["progress"]["succeeded"], 250, "{removal}");
    for item in s
        .app
        .all_items(&s.viewer, removal["id"].as_str().unwrap())
        .await
    {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        assert!(!holds(&user, ENTERPRISEPACK_SKU_ID).0, "{user}");
    }
    wait_swept(&s, &second).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(list_jobs(&s, "kind=remove").await.len(), 1);
    assert!(
        item_rows(&s, &first)
            .await
            .iter()
            .chain(item_rows(&s, &second).await.iter())
            .all(|i| i.due_at.is_none())
    );
    s.finish().await;
}
on_both_backends!(later_temporary_assign_keeps_it_until_it_ends);

/// A temporary assign of two licenses, then a permanent assign of one of them: when the first
/// comes due, only the other license is removed.
async fn later_assign_of_one_license_keeps_only_that_one(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let temporary = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}, {"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 1, "unit": "days"}}))
        .await;
    assert_eq!(temporary["status"], "finished", "{temporary}");
    let temporary = temporary["id"].as_str().unwrap().to_owned();
    let permanent = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .await;
    assert_eq!(permanent["progress"]["skipped"], 250, "{permanent}");
    let permanent = permanent["id"].as_str().unwrap().to_owned();

    make_due(&s, &temporary).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let removal = loop {
        if let Some(r) = removals_of(&s, &temporary).await.first() {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no removal job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let removal = s.wait(removal["id"].as_str().unwrap()).await;
    assert_eq!(removal["status"], "finished", "{removal}");
    assert_eq!(
        removal["request"]["remove_licenses"],
        json!([SPE_E5_SKU_ID]),
        "{removal}"
    );
    let items = s
        .app
        .all_items(&s.viewer, removal["id"].as_str().unwrap())
        .await;
    assert_eq!(items.len(), 250);
    for item in &items {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        assert!(holds(&user, ENTERPRISEPACK_SKU_ID).0, "{user}");
        assert!(!holds(&user, SPE_E5_SKU_ID).0, "{user}");
    }
    let kept = format!("kept {ENTERPRISEPACK_SKU_ID}: assigned without end by job {permanent}");
    for item in s.app.all_items(&s.viewer, &temporary).await {
        let note = item["note"].as_str().unwrap_or_default();
        assert!(note.contains(&kept), "{item}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(removals_of(&s, &temporary).await.len(), 1);
    assert_eq!(s.truth(&permanent).await, 250);
    s.finish().await;
}
on_both_backends!(later_assign_of_one_license_keeps_only_that_one);

/// A temporary assign of two licenses to members of whom five held one of them before: when it
/// comes due, those five keep that one and lose the other; the rest lose both — one removal job
/// per set of licenses to remove.
async fn expiry_keeps_a_license_held_before_the_job(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let members = s
        .run(json!({"kind": "remove", "groups": [sales], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}))
        .await;
    let held_before: HashSet<String> = s
        .app
        .all_items(&s.viewer, members["id"].as_str().unwrap())
        .await
        .iter()
        .take(5)
        .map(|i| i["user_id"].as_str().unwrap().to_owned())
        .collect();
    for u in &held_before {
        s.change_licenses(u, &[ENTERPRISEPACK_SKU_ID], &[]).await;
    }
    let temporary = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}, {"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 1, "unit": "days"}}))
        .await;
    assert_eq!(temporary["progress"]["succeeded"], 250, "{temporary}");
    let temporary = temporary["id"].as_str().unwrap().to_owned();
    make_due(&s, &temporary).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let removals = loop {
        let r = removals_of(&s, &temporary).await;
        if r.len() == 2 {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut removed = 0;
    for removal in &removals {
        let id = removal["id"].as_str().unwrap();
        let removal = s.wait(id).await;
        assert_eq!(removal["status"], "finished", "{removal}");
        let only_e5 = removal["request"]["remove_licenses"] == json!([SPE_E5_SKU_ID]);
        for item in s.app.all_items(&s.viewer, id).await {
            let user_id = item["user_id"].as_str().unwrap();
            assert_eq!(held_before.contains(user_id), only_e5, "{item}");
            let user = s.user(user_id).await;
            assert_eq!(holds(&user, ENTERPRISEPACK_SKU_ID).0, only_e5, "{user}");
            assert!(!holds(&user, SPE_E5_SKU_ID).0, "{user}");
            removed += 1;
        }
    }
    assert_eq!(removed, 250);
    for item in s.app.all_items(&s.viewer, &temporary).await {
        let note = item["note"].as_str().unwrap_or_default();
        let kept = note.contains(&format!(
            "kept {ENTERPRISEPACK_SKU_ID}: held before the job"
        ));
        assert_eq!(
            kept,
            held_before.contains(item["user_id"].as_str().unwrap()),
            "{item}"
        );
    }
    s.finish().await;
}
on_both_backends!(expiry_keeps_a_license_held_before_the_job);

async fn bad_requests_change_nothing(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let e5 = json!([{"sku_id": SPE_E5_SKU_ID}]);
    let cases = [
        (
            json!({"kind": "grant", "groups": [sales]}),
            422,
            "invalid_body",
        ),
        (
            json!({"kind": "assign", "groups": [], "add_licenses": e5}),
            422,
            "groups_required",
        ),
        (
            json!({"kind": "assign", "groups": ["Sales"], "add_licenses": e5}),
            422,
            "invalid_group_id",
        ),
        (
            json!({"kind": "assign", "groups": [sales]}),
            422,
            "licenses_required",
        ),
        (
            json!({"kind": "assign", "groups": [sales], "add_licenses": e5, "usage_location": "ZZ"}),
            422,
            "invalid_usage_location",
        ),
        (
            json!({"kind": "remove", "groups": [sales], "remove_licenses": [SPE_E5_SKU_ID], "expires_in": {"value": 1, "unit": "days"}}),
            422,
            "expiry_not_allowed",
        ),
        (
            json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": "11111111-2222-3333-4444-555555555555"}]}),
            422,
            "unknown_sku",
        ),
        (
            json!({"kind": "export", "groups": [sales]}),
            422,
            "export_format_required",
        ),
        (
            json!({"kind": "assign", "groups": [sales], "add_licenses": e5, "extra": 1}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let resp = s
            .app
            .post("/v1/jobs", &s.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(resp, status, code).await;
    }
    // Fault 3: a disabled plan that is not part of its SKU is refused as a whole, naming the
    // plan and the SKU; so is a SKU both added and removed.
    let summary: Value = s
        .http
        .get(format!("{}/_emulator/scenario", s.emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plans = |sku: &str| -> Vec<String> {
        summary["skus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["skuId"] == sku)
            .unwrap()["servicePlans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["servicePlanId"].as_str().unwrap().to_owned())
            .collect()
    };
    let ep_plans = plans(ENTERPRISEPACK_SKU_ID);
    let e5_only = plans(SPE_E5_SKU_ID)
        .into_iter()
        .find(|p| !ep_plans.contains(p))
        .expect("an SPE_E5-only plan");
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID, "disabled_plans": [e5_only]}]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(resp, 422, "plan_not_in_sku").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&e5_only) && detail.contains("ENTERPRISEPACK"),
        "{detail}"
    );
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "replace", "groups": [sales], "add_licenses": e5, "remove_licenses": [SPE_E5_SKU_ID]}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "duplicate_license").await;
    let many: Vec<String> = (0..101)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "assign", "groups": many, "add_licenses": e5}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "too_many_groups").await;
    // No free unit: 409 with the counts.
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": EXCHANGESTANDARD_SKU_ID}]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(resp, 409, "no_licenses_available").await;
    assert_eq!(problem["sku_part_number"], "EXCHANGESTANDARD");
    assert_eq!(problem["available"], 0);
    // Roles: operator and viewer cannot submit.
    for token in [&s.operator, &s.viewer] {
        let resp = s
            .app
            .post("/v1/jobs", token)
            .json(&json!({"kind": "assign", "groups": [sales], "add_licenses": e5}))
            .send()
            .await
            .unwrap();
        expect_problem(resp, 403, "forbidden").await;
    }
    assert!(list_jobs(&s, "").await.is_empty(), "nothing was created");

    // A group that does not exist: the job fails with a code, and a rerun is possible.
    let job = s
        .run(json!({"kind": "assign", "groups": ["0b7d6c4e-0000-4000-8000-000000000001"], "add_licenses": e5}))
        .await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "group_not_found");
    // Bulk rerun: the failed job is queued again, an unknown id is rejected with its reason.
    let unknown = uuid::Uuid::now_v7();
    let resp = s
        .app
        .post("/v1/jobs/rerun", &s.operator)
        .json(&json!({"job_ids": [job["id"], unknown]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let outcome: Value = resp.json().await.unwrap();
    assert_eq!(outcome["rerun"].as_array().unwrap().len(), 1);
    assert_eq!(outcome["rejected"][0]["job_id"], unknown.to_string());
    assert_eq!(outcome["rejected"][0]["code"], "not_found");
    let job = s.wait(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["runs"], 2);

    // Cancel: only queued or running jobs.
    let resp = s
        .app
        .post(
            &format!("/v1/jobs/{}/cancel", job["id"].as_str().unwrap()),
            &s.operator,
        )
        .send()
        .await
        .unwrap();
    expect_problem(resp, 409, "not_cancellable").await;
    s.finish().await;
}
on_both_backends!(bad_requests_change_nothing);

async fn cancel_skips_pending_members(backend: Backend) {
    // A slow directory, so the job is still running when it is cancelled.
    let Some(s) = setup(backend, "[jobs]\nchunk_size = 20\nlanes_per_job = 1\n").await else {
        return;
    };
    s.http
        .put(format!("{}/_emulator/faults", s.emulator.base_url()))
        .json(&json!({"latency_ms": 200}))
        .send()
        .await
        .unwrap();
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    let id = job["id"].as_str().unwrap();
    // Wait until some members are done.
    loop {
        let j: Value = s
            .app
            .get(&format!("/v1/jobs/{id}"), &s.viewer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = s.cancel(id).await;
    assert_eq!(cancelled["status"], "cancelled");
    // In-flight members finish; nothing else starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j: Value = s
        .app
        .get(&format!("/v1/jobs/{id}"), &s.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["status"], "cancelled");
    assert_eq!(j["progress"]["pending"], 0, "{j}");
    let done = j["progress"]["succeeded"].as_u64().unwrap();
    assert!(done < 1000, "{j}");
    assert_eq!(s.stats().await["successful_writes"].as_u64().unwrap(), done);
    let skipped: Value = s
        .app
        .get(
            &format!("/v1/jobs/{id}/items?status=skipped&code=cancelled&limit=1"),
            &s.viewer,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(skipped["data"][0]["error"]["code"], "cancelled");
    s.truth(id).await;

    // A cancelled job can be rerun: it resumes the members not done.
    s.faults(json!({})).await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let j = s.wait(id).await;
    assert_eq!(j["status"], "finished", "{j}");
    assert_eq!(j["progress"]["succeeded"], 1000, "{j}");
    assert_eq!(j["progress"]["pending"], 0, "{j}");
    s.finish().await;
}
on_both_backends!(cancel_skips_pending_members);

/// `All Staff` (2,500 members, all with a usage location) behind a directory answering in
/// 400 ms, and an assign of ENTERPRISEPACK to it just submitted: (the set-up, the job id).
async fn slow_assign_to_all_staff(backend: Backend) -> Option<(Setup, String)> {
    let mut sc = scenario();
    sc.users = 2_500;
    sc.users_without_usage_location = 0.0;
    sc.groups = vec![GroupSpec {
        leading_users: true,
        ..GroupSpec::new("All Staff", 2_500)
    }];
    sc.skus = vec![sku_of("ENTERPRISEPACK", 10_000)];
    let s = setup_with(backend, "", sc).await?;
    let all = s.app.group_id(&s.admin, "All Staff").await;
    s.faults(json!({"latency_ms": 400})).await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [all], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    Some((s, id))
}

/// An assign of Staff's 1,000 members on a slow directory (400 ms a request), 500 members to
/// a chunk, one lane and two requests in flight, once the directory has written its first
/// member: a chunk is being worked, with `$batch`es on their way.
async fn chunk_being_worked(backend: Backend) -> Option<(Setup, String)> {
    chunk_being_worked_with(backend, "").await
}

/// [`chunk_being_worked`] with `directory` added to the `[directory]` settings.
async fn chunk_being_worked_with(backend: Backend, directory: &str) -> Option<(Setup, String)> {
    chunk_being_worked_configured(backend, "", directory).await
}

/// [`chunk_being_worked`] with `jobs` added to the `[jobs]` settings and `directory` to the
/// `[directory]` settings.
async fn chunk_being_worked_configured(
    backend: Backend,
    jobs: &str,
    directory: &str,
) -> Option<(Setup, String)> {
    let config = format!(
        "[jobs]\nchunk_size = 500\nlanes_per_job = 1\n{jobs}[directory]\nmax_in_flight = 2\n{directory}"
    );
    let s = setup(backend, &config).await?;
    s.faults(json!({"latency_ms": 400})).await;
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.stats().await["successful_writes"].as_u64().unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no write began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((s, id))
}

/// A cancel stops the writes of a chunk already being worked, not only the next chunk: with
/// 500 members to a chunk, two requests in flight and a slow directory, only the `$batch`es
/// already sent when the cancel is seen are written; every other member of the chunk is
/// skipped as cancelled, and the directory agrees member by member.
async fn cancel_stops_the_writes_of_a_chunk_being_worked(backend: Backend) {
    let Some((s, id)) = chunk_being_worked(backend).await else {
        return;
    };
    s.cancel(&id).await;
    let at_cancel = s.stats().await["successful_writes"].as_u64().unwrap();
    let j = settled(&s, &id).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    let written = s.stats().await["successful_writes"].as_u64().unwrap();
    // At the cancel at most two `$batch`es of 20 were in flight, and at most two more could go
    // out before the lane saw the cancel (it reads the status every 250 ms; a request takes
    // 400 ms): a chunk written on would be 500.
    assert!(
        written - at_cancel <= 80,
        "{} members written after the cancel ({at_cancel} before it)",
        written - at_cancel
    );
    assert_eq!(j["progress"]["succeeded"].as_u64().unwrap(), written, "{j}");
    let cancelled: Value = s
        .app
        .get_json(
            &format!("/v1/jobs/{id}/items?status=skipped&code=cancelled&limit=1"),
            &s.viewer,
        )
        .await;
    assert_eq!(
        cancelled["data"][0]["error"]["code"], "cancelled",
        "{cancelled}"
    );
    s.truth(&id).await;
    rerun_on_a_fast_directory(&s, &id).await;
    s.finish().await;
}
on_both_backends!(cancel_stops_the_writes_of_a_chunk_being_worked);

/// Cancelled while the directory loses every answer (it carries the writes out, then closes
/// the connection, reads included): the chunk's members whose writes went out cannot be told
/// done or not, so the cancel leaves them pending — never "cancelled before this member was
/// worked on" — until a read can tell. Once the directory answers again, each is read: those
/// the directory shows written end `succeeded` with their change, the rest `cancelled`; every
/// member written is recorded as done, and each item agrees with the directory.
async fn cancel_reads_members_whose_writes_had_no_answer(backend: Backend) {
    let retries = "retry_max_attempts = 2\nretry_min_delay_ms = 50\nretry_max_delay_ms = 200\n";
    let Some((s, id)) = chunk_being_worked_with(backend, retries).await else {
        return;
    };
    let job_uuid: uuid::Uuid = id.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    s.faults(json!({"latency_ms": 400, "lost_answer_rate": 1.0}))
        .await;
    while s.stats().await["lost_answers"].as_u64().unwrap_or(0) < 2 {
        assert!(std::time::Instant::now() < deadline, "no answer was lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.cancel(&id).await;
    // The step gives up on the members it could not read and records them to be read first;
    // the cancel leaves them pending while the directory still loses every answer.
    let unanswered = || to_be_read(&s, job_uuid);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while unanswered().await.unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no member was left pending to be read: {}",
            s.job(&id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = s.job(&id).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    assert!(
        j["progress"]["pending"].as_u64().unwrap() > 0,
        "the unread members are not called anything yet: {j}"
    );
    // Nor is the job called ended: its counts will still move, and `licensor jobs watch`
    // waits for them.
    assert!(j["finished_at"].is_null(), "{j}");
    // Its run is open, with its counts as they stand, not zeros.
    let runs = s
        .app
        .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
        .await;
    let run = &runs["data"][0];
    assert!(run["finished_at"].is_null(), "{runs}");
    assert_eq!(run["total"], 1000, "{runs}");
    for count in ["succeeded", "failed", "skipped"] {
        assert_eq!(run[count], j["progress"][count], "{count}: {runs} {j}");
    }
    // Nor undone: members still being read may turn out written.
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/undo"), &s.admin)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 409, "not_undoable").await;
    let mut watch = watch_cli(&s, &id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "`jobs watch` returned while members were still being read"
    );
    // Two of them are deleted from the directory meanwhile: their read finds them gone, and
    // that settles them (before, they were read again for ever and the job never ended).
    let gone = delete_two_to_be_read(&s, job_uuid).await;
    if backend == Backend::Embedded && run::browser_available("cancel settling") {
        // The job's page says the same, and shows the end by itself once the directory answers
        // again (the script clears the directory's faults).
        let shots = run::screenshot_dir("browser-settling");
        let tenant = s.tenant();
        run::run_script_with(
            "settling.mjs",
            &s.app,
            &tenant,
            &shots,
            &[
                ("JOB_ID", id.clone()),
                ("EMULATOR_URL", s.emulator.base_url()),
            ],
        )
        .await;
    }
    s.faults(json!({})).await;
    let j = settled(&s, &id).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    let j = ended(&s, &id).await;
    assert_eq!(j["progress"]["pending"], 0, "{j}");
    let written_then_deleted = assert_deleted_failed(&s, &id, &gone).await;
    let out = tokio::time::timeout(Duration::from_secs(30), watch.wait_with_output())
        .await
        .expect("`jobs watch` ends once the job has")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.lines().any(|l| l.contains("still being settled")),
        "the watch said members were being read: {text}"
    );
    assert!(
        text.contains(&format!(
            "{} succeeded, {} failed, {} skipped of 1000",
            j["progress"]["succeeded"], j["progress"]["failed"], j["progress"]["skipped"]
        )),
        "the watch ends with the final counts: {text}"
    );
    // Every member the directory wrote is recorded as done, but those deleted since; none is
    // said to be cancelled.
    let written = s.stats().await["successful_writes"].as_u64().unwrap();
    assert_eq!(
        j["progress"]["succeeded"].as_u64().unwrap() + written_then_deleted,
        written,
        "{j}"
    );
    assert!(
        told_done_by_a_read(&s, &id).await > 0,
        "no member was told done by a read: {j}"
    );
    s.truth(&id).await;
    s.finish().await;
}
on_both_backends!(cancel_reads_members_whose_writes_had_no_answer);

/// `licensor jobs watch ID` as the viewer, started (its output piped).
fn watch_cli(s: &Setup, id: &str) -> tokio::process::Child {
    tokio::process::Command::from(s.app.cli(&s.viewer))
        .args(["jobs", "watch", id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run licensor jobs watch")
}

/// The job once its `finished_at` is set (a cancelled job's counts are final then); at most 60 s.
async fn ended(s: &Setup, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = s.job(id).await;
        if j["finished_at"].is_string() {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "not ended: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Members of the job left to be read before they are called anything: pending, marked to be
/// read first, held by nobody.
async fn to_be_read(s: &Setup, job: uuid::Uuid) -> Result<u64, sea_orm::DbErr> {
    use sea_orm::PaginatorTrait;
    job_item::Entity::find()
        .filter(job_item::Column::JobId.eq(job))
        .filter(job_item::Column::Status.eq(licensor_core::domain::ItemStatus::Pending))
        .filter(job_item::Column::TakenOver.eq(true))
        .filter(job_item::Column::LeaseOwner.is_null())
        .count(&s.app.db)
        .await
}

/// User ids of up to `n` members of the job marked to be read first, held or not (a step
/// may be trying to read them right now).
async fn to_be_read_users(s: &Setup, job: uuid::Uuid, n: u64) -> Vec<String> {
    use sea_orm::QuerySelect;
    job_item::Entity::find()
        .filter(job_item::Column::JobId.eq(job))
        .filter(job_item::Column::Status.eq(licensor_core::domain::ItemStatus::Pending))
        .filter(job_item::Column::TakenOver.eq(true))
        .limit(n)
        .all(&s.app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.user_id)
        .collect()
}

/// Delete, in the directory, up to two members of the job marked to be read first: licensor
/// may have written them, and once the directory answers again a read finds them gone. Call it
/// while the directory loses every answer, so that no read of them succeeds before. Returns
/// their user ids.
async fn delete_two_to_be_read(s: &Setup, job: uuid::Uuid) -> Vec<String> {
    let gone = to_be_read_users(s, job, 2).await;
    assert!(!gone.is_empty(), "no member is left to be read");
    for user in &gone {
        s.delete_user(user).await;
    }
    gone
}

/// The items of `gone` (deleted users) in job `id`: each `failed`, `user_not_found`, its detail
/// saying the user is no longer in the directory. Returns the writes the directory counts on
/// them (made before they were deleted; their answers were lost).
async fn assert_deleted_failed(s: &Setup, id: &str, gone: &[String]) -> u64 {
    let items = s
        .app
        .get_json(
            &format!("/v1/jobs/{id}/items?code=user_not_found&limit=500"),
            &s.viewer,
        )
        .await;
    let items = items["data"].as_array().unwrap();
    assert_eq!(items.len(), gone.len(), "only the deleted: {items:?}");
    let mut writes = 0;
    for user in gone {
        let item = items
            .iter()
            .find(|i| i["user_id"] == user.as_str())
            .unwrap_or_else(|| panic!("{user} is not user_not_found: {items:?}"));
        assert_eq!(item["status"], "failed", "{item}");
        assert!(
            item["error"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no longer in the directory"),
            "{item}"
        );
        writes += s.user(user).await["successfulWrites"].as_u64().unwrap();
    }
    writes
}

/// Members of the job (the first 500) that succeeded on a read's word: their write's answer was
/// lost, or not recorded, and a read showed the change made.
async fn told_done_by_a_read(s: &Setup, id: &str) -> usize {
    s.app
        .get_json(
            &format!("/v1/jobs/{id}/items?status=succeeded&limit=500"),
            &s.viewer,
        )
        .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["note"].as_str().is_some_and(|n| {
                n.contains("answer was not recorded") || n.contains("answer was lost")
            })
        })
        .count()
}

/// A member whose last try's write had its answer lost (the directory made it, then closed the
/// connection), and whose reads failed too, is not called failed: whether the write was made is
/// not known. With one try a member (`item_max_attempts = 1`) and the directory losing every
/// answer once writes began, such members stay pending, to be read, while the directory cannot
/// be read — no member is failed meanwhile (before, each ended `failed`, "gave up after 1
/// tries", though the directory held its license). Once the directory answers again, each is
/// read and ends as the read shows: every member succeeded, each written exactly once, some
/// told done by a read, and the directory agrees item by item.
async fn last_tries_of_unanswered_writes_are_read_not_failed(backend: Backend) {
    let retries = "retry_max_attempts = 2\nretry_min_delay_ms = 50\nretry_max_delay_ms = 200\n";
    let Some((s, id)) =
        chunk_being_worked_configured(backend, "item_max_attempts = 1\n", retries).await
    else {
        return;
    };
    let job_uuid: uuid::Uuid = id.parse().unwrap();
    s.faults(json!({"lost_answer_rate": 1.0})).await;
    // Members given up on for now: pending, held by nobody, to be read first.
    let unread = || to_be_read(&s, job_uuid);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while unread().await.unwrap() == 0 {
        let j = s.job(&id).await;
        assert_eq!(
            j["progress"]["failed"], 0,
            "a member whose write may have been made was called failed: {j}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no member was left pending to be read: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = s.job(&id).await;
    assert_eq!(j["status"], "running", "{j}");
    assert_eq!(j["progress"]["failed"], 0, "{j}");
    assert!(s.stats().await["lost_answers"].as_u64().unwrap() > 0);
    // Two of them are deleted from the directory meanwhile: once it answers again, their read
    // finds them gone, and that ends them (before, they were read again for ever and the job
    // never ended).
    let gone = delete_two_to_be_read(&s, job_uuid).await;
    s.faults(json!({})).await;
    let j = s.app.wait_for_job(&s.admin, &id, 120).await;
    assert_eq!(j["progress"]["pending"], 0, "{j}");
    let written_then_deleted = assert_deleted_failed(&s, &id, &gone).await;
    // A member whose usage location could not be set had no license write sent (it fails, and
    // says so); every other member succeeded.
    let failed = s
        .app
        .get_json(
            &format!("/v1/jobs/{id}/items?status=failed&limit=500"),
            &s.viewer,
        )
        .await;
    let failed = failed["data"].as_array().unwrap();
    for item in failed {
        if gone.iter().any(|u| item["user_id"] == u.as_str()) {
            continue;
        }
        let detail = item["error"]["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("setting its usage location to SE (the license write was not sent)"),
            "{item}"
        );
    }
    let succeeded = j["progress"]["succeeded"].as_u64().unwrap();
    assert_eq!(succeeded + failed.len() as u64, 1000, "{j}");
    let stats = s.stats().await;
    assert_eq!(
        stats["successful_writes"].as_u64().unwrap(),
        succeeded + written_then_deleted,
        "{stats}"
    );
    assert_eq!(
        stats["writes_per_user_max"], 1,
        "no member written twice: {stats}"
    );
    assert!(
        told_done_by_a_read(&s, &id).await > 0,
        "no member was told done by a read: {j}"
    );
    s.truth(&id).await;
    s.finish().await;
}
on_both_backends!(last_tries_of_unanswered_writes_are_read_not_failed);

/// Rerun the cancelled Staff assign of [`chunk_being_worked`] with the directory's faults
/// cleared: it finishes with all 1,000 members done; the job as it ends.
async fn rerun_on_a_fast_directory(s: &Setup, id: &str) -> Value {
    s.faults(json!({})).await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let j = s.wait(id).await;
    assert_eq!(j["status"], "finished", "{j}");
    assert_eq!(j["progress"]["succeeded"], 1000, "{j}");
    j
}

/// Cancelled while a chunk's `$batch`es are on their way, run again at once and cancelled
/// again before that chunk's step has recorded them: the members those requests wrote stay
/// with the step that wrote them and are recorded as done (the rerun does not take them away
/// for the second cancel to skip as not done), the members it did not send are skipped as
/// cancelled, and a last rerun writes exactly the rest — none found done already.
async fn rerun_while_a_cancelled_chunk_is_written_keeps_its_writes(backend: Backend) {
    let Some((s, id)) = chunk_being_worked(backend).await else {
        return;
    };
    for action in ["cancel", "rerun", "cancel"] {
        let resp = s
            .app
            .post(&format!("/v1/jobs/{id}/{action}"), &s.operator)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{action}: {resp:?}");
    }
    let j = settled(&s, &id).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    // Settled means the step has recorded too: nothing is pending, and the directory has
    // written exactly the members recorded as done.
    let written = s.stats().await["successful_writes"].as_u64().unwrap();
    assert!(written > 0);
    assert_eq!(j["progress"]["succeeded"].as_u64().unwrap(), written, "{j}");
    s.truth(&id).await;
    let j = rerun_on_a_fast_directory(&s, &id).await;
    assert_eq!(j["progress"]["skipped"], 0, "{j}");
    assert_eq!(s.stats().await["successful_writes"], 1000);
    s.truth(&id).await;
    s.finish().await;
}
on_both_backends!(rerun_while_a_cancelled_chunk_is_written_keeps_its_writes);

/// Cancelled while its groups were read, run again at once — while the first run's step is
/// still reading a page — and cancelled again mid-read: every member belongs to the run that
/// read it, each run's counts cover its members, and a last rerun finishes them all.
async fn rerun_during_expansion_keeps_members_in_their_run(backend: Backend) {
    let Some((s, id)) = slow_assign_to_all_staff(backend).await else {
        return;
    };
    let wait_total = |above: u64| {
        let s = &s;
        let id = id.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let j = s.job(&id).await;
                if j["progress"]["total"].as_u64().unwrap_or(0) > above {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "no members read: {j}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let post = |action: &'static str| {
        let s = &s;
        let id = id.clone();
        async move {
            s.app
                .post(&format!("/v1/jobs/{id}/{action}"), &s.operator)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    wait_total(0).await;
    assert_eq!(post("cancel").await, 200);
    assert_eq!(post("rerun").await, 202);
    let first = s.job(&id).await["progress"]["total"].as_u64().unwrap();
    wait_total(first).await;
    assert_eq!(post("cancel").await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let j = s.job(&id).await;
        let runs: Value = s
            .app
            .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
            .await;
        let open = runs["data"]
            .as_array()
            .or(runs.as_array())
            .is_some_and(|r| r.iter().any(|r| r["finished_at"].is_null()));
        if j["progress"]["pending"] == 0 && !open {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not settled: {j} {runs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let check_runs = |last_closed: bool| {
        let s = &s;
        let id = id.clone();
        async move {
            let items = s.app.all_items(&s.viewer, &id).await;
            let runs: Value = s
                .app
                .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
                .await;
            let runs = runs["data"].as_array().or(runs.as_array()).unwrap().clone();
            let last = runs.len();
            for r in &runs {
                let n = r["run_no"].as_u64().unwrap();
                let members = items.iter().filter(|i| i["run_no"] == n).count() as u64;
                let total = r["total"].as_u64().unwrap();
                // A member stays in the run that last worked it; a later rerun takes back only
                // those it does again, so an earlier run may count more than it keeps.
                assert!(
                    members <= total,
                    "run {n}: {members} members, counted {total}: {runs:?}"
                );
                if n as usize == last && last_closed {
                    assert_eq!(members, total, "run {n}: {runs:?}");
                }
            }
        }
    };
    check_runs(true).await;
    s.truth(&id).await;
    s.faults(json!({})).await;
    assert_eq!(post("rerun").await, 202);
    let j = s.wait(&id).await;
    assert_eq!(j["status"], "finished", "{j}");
    assert_eq!(j["progress"]["total"], 2_500, "{j}");
    assert_eq!(j["progress"]["succeeded"], 2_500, "{j}");
    check_runs(true).await;
    s.finish().await;
}
on_both_backends!(rerun_during_expansion_keeps_members_in_their_run);

/// Fault 1: a rerun of a replace decides from the members' licenses read afresh, not from a
/// blanket "remove everything named", which the directory refuses as a whole.
async fn rerun_of_a_replace_reads_members_afresh(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    // E5: the pilot group holds 40; 61 more free.
    s.emulator_patch(&format!("skus/{SPE_E5_SKU_ID}"), json!({"enabled": 101}))
        .await;
    let job = s
        .run(json!({"kind": "replace", "groups": [sales], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "remove_licenses": [ENTERPRISEPACK_SKU_ID, EXCHANGESTANDARD_SKU_ID]}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    let failed = job["progress"]["failed"].as_u64().unwrap();
    let succeeded = job["progress"]["succeeded"].as_u64().unwrap();
    assert!(failed > 100, "{job}");
    let items = s.app.all_items(&s.viewer, &id).await;
    assert!(
        items
            .iter()
            .filter(|i| i["status"] == "failed")
            .all(|i| code(i) == "count_violation"),
        "{items:?}"
    );
    // 40 more units, then a rerun: 40 members are swapped, the rest still have no unit.
    s.emulator_patch(&format!("skus/{SPE_E5_SKU_ID}"), json!({"enabled": 141}))
        .await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let job = s.wait(&id).await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    assert_eq!(
        job["progress"]["succeeded"].as_u64().unwrap(),
        succeeded + 40,
        "{job}"
    );
    assert_eq!(
        job["progress"]["failed"].as_u64().unwrap(),
        failed - 40,
        "{job}"
    );
    let stats = s.stats().await;
    let e5 = stats["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuId"] == SPE_E5_SKU_ID)
        .unwrap()
        .clone();
    assert_eq!(e5["consumedUnits"], 141, "{e5}");
    // The rerun verified what it wrote; the ledger says so.
    let changes = s.app.all_changes(&s.viewer, &id).await;
    let verified = changes
        .iter()
        .filter(|c| c["run_no"] == 2 && c["verified"] == true)
        .count();
    assert_eq!(verified, 40, "{changes:?}");
    s.finish().await;
}
on_both_backends!(rerun_of_a_replace_reads_members_afresh);

/// Fault 2: the removal of a temporary assignment, after part of it was removed by another job,
/// removes the rest and says what was already gone.
async fn expiry_removal_after_part_was_removed(backend: Backend) {
    let Some(s) = setup(backend, "[sweeps]\nexpiries = \"* * * * * *\"\n").await else {
        return;
    };
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let job = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}, {"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "expires_in": {"value": 1, "unit": "days"}}))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let parent: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let job = s
        .run(json!({"kind": "remove", "groups": [sales], "remove_licenses": [SPE_E5_SKU_ID]}))
        .await;
    assert!(
        job["progress"]["succeeded"].as_u64().unwrap() > 200,
        "{job}"
    );
    job_item::Entity::update_many()
        .col_expr(
            job_item::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(job_item::Column::JobId.eq(parent))
        .filter(job_item::Column::DueAt.is_not_null())
        .exec(&s.app.db)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let removal = loop {
        let removals = list_jobs(&s, "kind=remove").await;
        if let Some(r) = removals.iter().find(|r| !r["parent_job_id"].is_null()) {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no removal job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let removal = s.wait(removal["id"].as_str().unwrap()).await;
    assert_eq!(removal["status"], "finished", "{removal}");
    let items = s
        .app
        .all_items(&s.viewer, removal["id"].as_str().unwrap())
        .await;
    assert_eq!(items.len(), 250);
    for item in &items {
        // Pilot members still hold E5 through their group: it is neither removed nor "gone".
        assert_eq!(item["status"], "succeeded", "{item}");
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        assert!(!holds(&user, ENTERPRISEPACK_SKU_ID).0, "{user}");
        let note = item["note"].as_str().unwrap_or_default();
        assert!(note.contains(SPE_E5_SKU_ID), "{item}");
        assert!(
            note.contains("verified"),
            "an expiry removal verifies: {item}"
        );
    }
    s.finish().await;
}
on_both_backends!(expiry_removal_after_part_was_removed);

/// Acceptance 2: members changed behind the job's back, between expansion and their chunk, end
/// as the job asked or failed with the true reason — never skipped while the directory
/// disagrees.
async fn members_changed_during_a_slow_job(backend: Backend) {
    let Some(s) = setup(backend, "[jobs]\nchunk_size = 20\nlanes_per_job = 1\n").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let users = s.first_users(1000).await;
    let with_location: Vec<String> = users["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| !u["usageLocation"].is_null())
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    // The last members of Staff: some already hold the license (their snapshot says "skip").
    let tail: Vec<String> = with_location[with_location.len() - 30..].to_vec();
    for id in &tail[..10] {
        s.change_licenses(id, &[ENTERPRISEPACK_SKU_ID], &[]).await;
    }
    s.faults(json!({"latency_ms": 100})).await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Expanded, and the lane is still far from the last members.
    loop {
        let j = s.job(&id).await;
        if !j["expanded_at"].is_null() {
            assert!(j["progress"]["pending"].as_u64().unwrap() > 200, "{j}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another administrator: takes the license away from those that held it, gives it to ten
    // others, and clears the usage location of ten more.
    for id in &tail[..10] {
        s.change_licenses(id, &[], &[ENTERPRISEPACK_SKU_ID]).await;
    }
    for id in &tail[10..20] {
        s.change_licenses(id, &[ENTERPRISEPACK_SKU_ID], &[]).await;
    }
    for id in &tail[20..] {
        s.emulator_patch(&format!("users/{id}"), json!({"usageLocation": null}))
            .await;
    }
    let j = s.job(&id).await;
    assert!(
        j["progress"]["pending"].as_u64().unwrap() > 30,
        "too late: {j}"
    );
    s.faults(json!({})).await;
    let j = s.wait(&id).await;
    assert_eq!(j["status"], "finished_with_exception", "{j}");
    let items: HashMap<String, Value> = s
        .app
        .all_items(&s.viewer, &id)
        .await
        .into_iter()
        .map(|i| (i["user_id"].as_str().unwrap().to_owned(), i))
        .collect();
    for id in &tail[..20] {
        let item = &items[id];
        assert!(
            item["status"] == "succeeded" || item["status"] == "skipped",
            "{item}"
        );
        assert!(holds(&s.user(id).await, ENTERPRISEPACK_SKU_ID).0);
    }
    for id in &tail[..10] {
        assert_eq!(items[id]["status"], "succeeded", "{}", items[id]);
    }
    for id in &tail[20..] {
        assert_eq!(code(&items[id]), "usage_location_missing", "{}", items[id]);
    }
    s.finish().await;
}
on_both_backends!(members_changed_during_a_slow_job);

/// Fault 4 and acceptance 4: a cancel while the groups are still being read stops the reading
/// at the next page; nothing is left pending; a rerun resumes and finishes the members not done.
async fn cancel_during_expansion_stops_reading(backend: Backend) {
    let Some((s, id)) = slow_assign_to_all_staff(backend).await else {
        return;
    };
    loop {
        let j = s.job(&id).await;
        if j["progress"]["total"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/cancel"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Give expansion and the lanes time to notice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = s.job(&id).await;
    assert_eq!(j["status"], "cancelled", "{j}");
    assert_eq!(j["progress"]["pending"], 0, "{j}");
    assert!(j["expanded_at"].is_null(), "{j}");
    let total = j["progress"]["total"].as_u64().unwrap();
    assert!(total < 2_500, "expansion went on: {j}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.job(&id).await["progress"]["total"].as_u64().unwrap(),
        total,
        "members were added after the cancel"
    );
    s.truth(&id).await;
    // Rerun: the rest of the groups are read and every member is done.
    s.faults(json!({"throttling": false})).await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let j = s.wait(&id).await;
    assert_eq!(j["status"], "finished", "{j}");
    assert_eq!(j["progress"]["total"], 2_500, "{j}");
    assert_eq!(j["progress"]["succeeded"], 2_500, "{j}");
    s.finish().await;
}
on_both_backends!(cancel_during_expansion_stops_reading);

/// Acceptance 3: the undo of an assign on 1,000 members restores each member's licenses as they
/// were, leaves members changed since alone and reports them; the undo is a job of its own.
async fn undo_restores_members_as_they_were(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let users = s.first_users(1000).await;
    let ids: Vec<String> = users["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let mut before: HashMap<String, Value> = HashMap::new();
    for id in &ids {
        before.insert(
            id.clone(),
            s.user(id).await["licenseAssignmentStates"].clone(),
        );
    }
    let job = s
        .run(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}, {"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE"}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let changes = s.app.all_changes(&s.viewer, &id).await;
    assert!(changes.len() > 600, "{}", changes.len());
    // Filters: one member by principal name.
    let first = &changes[0];
    let one = s
        .app
        .get_json(
            &format!(
                "/v1/jobs/{id}/changes?user={}",
                first["user_principal_name"].as_str().unwrap()
            ),
            &s.viewer,
        )
        .await;
    assert_eq!(one["total"], 1, "{one}");
    assert_eq!(one["data"][0]["user_id"], first["user_id"]);
    // The report carries the ledger.
    let report = s
        .app
        .get(&format!("/v1/jobs/{id}/report?format=csv"), &s.viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        report
            .lines()
            .next()
            .unwrap()
            .ends_with("licenses_before,licenses_after,verified,usage_location_set")
    );
    // Five members are changed after the job.
    let changed: Vec<String> = changes[..5]
        .iter()
        .map(|c| c["user_id"].as_str().unwrap().to_owned())
        .collect();
    for u in &changed {
        s.change_licenses(u, &[], &[ENTERPRISEPACK_SKU_ID]).await;
    }
    // Only admins undo; a running job cannot be undone.
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/undo"), &s.operator)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 403, "forbidden").await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/undo"), &s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let undo: Value = resp.json().await.unwrap();
    assert_eq!(undo["parent_job_id"], id.as_str());
    assert_eq!(undo["request"]["undo_of"], id.as_str());
    // An undo takes back the entries of members that succeeded; a member that failed after
    // its usage location was set has an entry too, with its licenses unchanged.
    let succeeded = changes
        .iter()
        .filter(|c| c["status"] == "succeeded")
        .count();
    assert!(
        succeeded < changes.len(),
        "no failed member's usage location"
    );
    assert_eq!(
        undo["progress"]["total"].as_u64().unwrap() as usize,
        succeeded
    );
    let listed = s
        .app
        .get_json(&format!("/v1/jobs/{id}/changes?limit=1"), &s.viewer)
        .await;
    assert_eq!(listed["undoable"], succeeded, "{listed}");
    let undo_id = undo["id"].as_str().unwrap().to_owned();
    let undo = s.wait(&undo_id).await;
    assert_eq!(undo["status"], "finished", "{undo}");
    // A job is undone once: a second undo is refused, naming the first, and creates nothing.
    let jobs_before = list_jobs(&s, "").await.len();
    let again = s
        .app
        .post(&format!("/v1/jobs/{id}/undo"), &s.admin)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(again, 409, "already_undone").await;
    assert!(
        problem["detail"].as_str().unwrap().contains(&undo_id),
        "{problem}"
    );
    assert_eq!(list_jobs(&s, "").await.len(), jobs_before);
    // Nor is the undone job run again (its failed members would get the licenses the undo took
    // back): refused, naming the undo, nothing changed.
    let undone = s.job(&id).await;
    assert_eq!(undone["status"], "finished_with_exception", "{undone}");
    let resp = s
        .app
        .post_empty(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .await;
    let problem = expect_problem(resp, 409, "not_rerunnable").await;
    assert!(
        problem["detail"].as_str().unwrap().contains(&undo_id),
        "{problem}"
    );
    // A bulk rerun's dry run says the same, and so does the bulk rerun itself.
    for dry_run in [true, false] {
        let bulk = s
            .app
            .post_json(
                "/v1/jobs/rerun",
                &s.operator,
                &json!({"job_ids": [id], "dry_run": dry_run}),
            )
            .await;
        assert_eq!(bulk["acted_on"], 0, "{bulk}");
        assert_eq!(bulk["rejected"][0]["code"], "not_rerunnable", "{bulk}");
    }
    let after = s.job(&id).await;
    assert_eq!(after["runs"], undone["runs"]);
    assert_eq!(after["status"], undone["status"]);
    let items = s.app.all_items(&s.viewer, &undo_id).await;
    let mut left = 0;
    for item in &items {
        let user_id = item["user_id"].as_str().unwrap();
        let user = s.user(user_id).await;
        if changed.iter().any(|c| c == user_id) {
            assert_eq!(code(item), "changed_since", "{item}");
            assert!(holds(&user, SPE_E5_SKU_ID).0, "left alone: {user}");
            left += 1;
        } else {
            assert_eq!(item["status"], "succeeded", "{item}");
            assert_eq!(
                user["licenseAssignmentStates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| (
                        l["skuId"].clone(),
                        l["assignedByGroup"].clone(),
                        l["disabledPlans"].clone()
                    ))
                    .collect::<Vec<_>>(),
                before[user_id]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| (
                        l["skuId"].clone(),
                        l["assignedByGroup"].clone(),
                        l["disabledPlans"].clone()
                    ))
                    .collect::<Vec<_>>(),
                "{user_id}"
            );
        }
    }
    assert_eq!(left, 5);
    // The undo is a job of its own, listed with the others.
    let listed = list_jobs(&s, "").await;
    assert!(listed.iter().any(|j| j["id"] == undo_id.as_str()));
    // An export cannot be undone.
    let export = s
        .run(json!({"kind": "export", "groups": [staff], "export": {"format": "csv"}}))
        .await;
    let resp = s
        .app
        .post(
            &format!("/v1/jobs/{}/undo", export["id"].as_str().unwrap()),
            &s.admin,
        )
        .send()
        .await
        .unwrap();
    expect_problem(resp, 409, "not_undoable").await;
    s.finish().await;
}
on_both_backends!(undo_restores_members_as_they_were);

/// SPE_E5 to Staff as a preview: the seat math matches the emulator (free units, members that
/// lack the SKU, members without usage location) and nothing is written; the launch reads no
/// group member again and every member ends as predicted, which is also what the directory
/// holds — with four lanes of 20-member chunks writing at once, so which members get the last
/// free units does not follow the order of the writes. Launching it again, or launching as an
/// operator, is refused and changes nothing; an export cannot be previewed.
async fn preview_then_launch_gives_the_predicted_outcomes(backend: Backend) {
    let Some(s) = setup(backend, "[jobs]\nchunk_size = 20\nlanes_per_job = 4\n").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    // The seat math, counted from the emulator: Staff is the first 1,000 users.
    let stats = s.stats().await;
    let e5 = stats["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuPartNumber"] == "SPE_E5")
        .unwrap()
        .clone();
    let free = e5["enabled"].as_i64().unwrap() - e5["consumedUnits"].as_i64().unwrap();
    let users = s.first_users(1000).await;
    let users = users["value"].as_array().unwrap();
    let mut needed = 0i64;
    let mut no_location = 0i64;
    for u in users {
        let user = s.user(u["id"].as_str().unwrap()).await;
        if holds(&user, SPE_E5_SKU_ID) == (false, false) {
            needed += 1;
        }
        if u["usageLocation"].is_null() {
            no_location += 1;
        }
    }
    assert!(
        needed > free && no_location > 0,
        "{needed} {free} {no_location}"
    );
    let writes_before = stats["successful_writes"].clone();

    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "preview": true}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let job = wait_previewed(&s, &id).await;
    let p = &job["preview"];
    assert_eq!(p["members"], 1000, "{p}");
    assert_eq!(p["skus"][0]["sku_part_number"], "SPE_E5", "{p}");
    assert_eq!(p["skus"][0]["free"], free, "{p}");
    assert_eq!(p["skus"][0]["needed"], needed, "{p}");
    assert_eq!(p["skus"][0]["shortfall"], needed - free, "{p}");
    assert_eq!(p["usage_location"]["missing"], no_location, "{p}");
    assert_eq!(p["usage_location"]["fixed_by_request"], false, "{p}");
    assert!(p["launched_at"].is_null(), "{p}");
    // The preview's run is over, with its end: the launch opens it again.
    let runs = s
        .app
        .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
        .await;
    assert_eq!(runs["data"][0]["status"], "previewed", "{runs}");
    assert_eq!(runs["data"][0]["total"], 1000, "{runs}");
    assert!(runs["data"][0]["finished_at"].is_string(), "{runs}");
    let failures = p["failures"].as_array().unwrap();
    let failed_by = |c: &str| {
        failures
            .iter()
            .find(|f| f["code"] == c)
            .map_or(0, |f| f["count"].as_i64().unwrap())
    };
    assert!(failed_by("count_violation") > 0, "{p}");
    assert!(failed_by("usage_location_missing") > 0, "{p}");
    assert_eq!(
        p["would_succeed"].as_i64().unwrap()
            + p["would_skip"].as_i64().unwrap()
            + p["would_fail"].as_i64().unwrap(),
        1000
    );
    let held = p["held"].as_array().unwrap();
    assert!(
        held.iter()
            .any(|h| h["sku_part_number"] == "SPE_E5" && h["inherited"].as_i64().unwrap() > 0),
        "{p}"
    );
    // Nothing was written, and every member has its prediction.
    let stats = s.stats().await;
    assert_eq!(stats["successful_writes"], writes_before);
    let items = s.app.all_items(&s.viewer, &id).await;
    assert_eq!(items.len(), 1000);
    assert!(items.iter().all(|i| i["status"] == "pending"));
    let would_fail = items
        .iter()
        .filter(|i| i["prediction"]["outcome"] == "would_fail")
        .count() as i64;
    assert_eq!(would_fail, p["would_fail"].as_i64().unwrap());
    // Listed with its own status.
    let listed = list_jobs(&s, "status=previewed").await;
    assert!(listed.iter().any(|j| j["id"] == id.as_str()));

    // Only an admin launches.
    expect_problem(launch(&s, &id, &s.operator).await, 403, "forbidden").await;
    assert_eq!(s.job(&id).await["status"], "previewed");

    let pages = stats["member_pages_read"].clone();
    let resp = launch(&s, &id, &s.admin).await;
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let launched: Value = resp.json().await.unwrap();
    assert_eq!(launched["status"], "queued", "{launched}");
    assert_eq!(launched["request"].get("preview"), None, "{launched}");
    let done = s.wait(&id).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(done["runs"], 1, "{done}");
    assert!(done["preview"]["launched_at"].is_string(), "{done}");
    assert_eq!(done["preview"]["expanded_again"], false, "{done}");
    assert_eq!(done["progress"]["failed"], p["would_fail"], "{done} vs {p}");
    // No group member was read again.
    assert_eq!(s.stats().await["member_pages_read"], pages);
    assert_eq!(assert_as_predicted(&s, &id).await, 1000);

    // A finished job is no preview: refused, nothing changes.
    let before = s.job(&id).await;
    expect_problem(launch(&s, &id, &s.admin).await, 409, "not_a_preview").await;
    let after = s.job(&id).await;
    assert_eq!(before["status"], after["status"]);
    assert_eq!(before["progress"], after["progress"]);
    assert_eq!(before["runs"], after["runs"]);

    // An export writes nothing, so it is not previewed; no job is created.
    let jobs_before = list_jobs(&s, "").await.len();
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "export", "groups": [staff], "export": {"format": "csv"}, "preview": true}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "preview_not_supported").await;
    assert_eq!(list_jobs(&s, "").await.len(), jobs_before);
    s.finish().await;
}
on_both_backends!(preview_then_launch_gives_the_predicted_outcomes);

/// Ten Staff members hold Exchange Online (Plan 1), whose mailbox plan cannot be enabled next to
/// the Plan 2 mailbox of ENTERPRISEPACK: the preview predicts their failure with its code and
/// takes no unit for them, and the launch ends every member as predicted, as the directory holds.
async fn preview_predicts_mutually_exclusive_plans(backend: Backend) {
    let mut scenario = scenario();
    for k in &mut scenario.skus {
        if k.sku_part_number == "EXCHANGESTANDARD" {
            k.enabled = 20;
        }
    }
    let Some(s) = setup_with(
        backend,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 4\n",
        scenario,
    )
    .await
    else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let users = s.first_users(1000).await;
    let mut exo1 = Vec::new();
    for u in users["value"].as_array().unwrap() {
        let id = u["id"].as_str().unwrap();
        let user = s.user(id).await;
        if user["licenseAssignmentStates"]
            .as_array()
            .is_some_and(|l| l.is_empty())
            && !u["usageLocation"].is_null()
        {
            s.change_licenses(id, &[EXCHANGESTANDARD_SKU_ID], &[]).await;
            exo1.push(id.to_owned());
            if exo1.len() == 10 {
                break;
            }
        }
    }
    assert_eq!(exo1.len(), 10);
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "preview": true}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let job = wait_previewed(&s, &id).await;
    let p = &job["preview"];
    let failures = p["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["code"] == "mutually_exclusive_violation" && f["count"] == 10),
        "{p}"
    );
    let items = s.app.all_items(&s.viewer, &id).await;
    for item in &items {
        let member = item["user_id"].as_str().unwrap();
        let exclusive = item["prediction"]["code"] == "mutually_exclusive_violation";
        assert_eq!(exo1.iter().any(|m| m == member), exclusive, "{item}");
    }
    let resp = launch(&s, &id, &s.admin).await;
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let done = s.wait(&id).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(assert_as_predicted(&s, &id).await, 1000);
    for m in &exo1 {
        let user = s.user(m).await;
        assert_eq!(
            holds(&user, ENTERPRISEPACK_SKU_ID),
            (false, false),
            "{user}"
        );
        assert!(holds(&user, EXCHANGESTANDARD_SKU_ID).0, "{user}");
    }
    s.finish().await;
}
on_both_backends!(preview_predicts_mutually_exclusive_plans);

/// A preview older than `jobs.preview_max_age_secs` reads its groups again on launch: a remove
/// of SPE_E5 from the E5 Pilot members, who hold it only through the group, and a replace_all
/// on Sales; both end as predicted.
async fn stale_preview_reads_the_groups_again(backend: Backend) {
    let Some(s) = setup(
        backend,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 4\npreview_max_age_secs = 0\n",
    )
    .await
    else {
        return;
    };
    let pilot = s.app.group_id(&s.admin, "E5 Pilot").await;
    let sales = s.app.group_id(&s.admin, "Sales").await;
    for body in [
        json!({"kind": "remove", "groups": [pilot], "remove_licenses": [SPE_E5_SKU_ID], "preview": true}),
        json!({"kind": "replace", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "replace_all": true, "usage_location": "NO", "preview": true}),
    ] {
        let job = s.submit(body).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let job = wait_previewed(&s, &id).await;
        let p = job["preview"].clone();
        if job["kind"] == "remove" {
            assert_eq!(p["members"], 40, "{p}");
            assert_eq!(p["inherited_only"], 40, "{p}");
            assert_eq!(p["failures"][0]["code"], "inherited_from_group", "{p}");
        } else {
            assert_eq!(p["usage_location"]["fixed_by_request"], true, "{p}");
        }
        // What the preview predicted for each member. Three members the preview has no item
        // for stand for members who joined the groups since: read again, they have no
        // prediction.
        let previewed = s.app.all_items(&s.viewer, &id).await;
        let predictions: HashMap<String, Value> = previewed
            .iter()
            .map(|i| {
                (
                    i["user_id"].as_str().unwrap().to_owned(),
                    i["prediction"].clone(),
                )
            })
            .collect();
        assert!(predictions.values().all(|p| p.is_object()));
        let newcomers: Vec<i64> = previewed[..3]
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        let newcomer_ids: HashSet<String> = previewed[..3]
            .iter()
            .map(|i| i["user_id"].as_str().unwrap().to_owned())
            .collect();
        job_item::Entity::delete_many()
            .filter(job_item::Column::Id.is_in(newcomers))
            .exec(&s.app.db)
            .await
            .unwrap();
        let pages = s.stats().await["member_pages_read"].as_u64().unwrap();
        let resp = launch(&s, &id, &s.admin).await;
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let done = s.wait(&id).await;
        assert_eq!(done["preview"]["expanded_again"], true, "{done}");
        assert!(s.stats().await["member_pages_read"].as_u64().unwrap() > pages);
        // Read again, the members are new items; those still in the groups keep the
        // prediction the preview made for them, the newcomers have none; the outcomes are
        // those the preview predicted, member by member.
        let items = s.app.all_items(&s.viewer, &id).await;
        assert_eq!(items.len() as i64, p["members"].as_i64().unwrap());
        for item in &items {
            let user = item["user_id"].as_str().unwrap();
            if newcomer_ids.contains(user) {
                assert!(item["prediction"].is_null(), "a newcomer: {item}");
            } else {
                assert_eq!(item["prediction"], predictions[user], "kept: {item}");
                let (status, code) = predicted(item);
                assert_eq!(
                    (
                        item["status"].as_str().unwrap_or_default(),
                        self::code(item)
                    ),
                    (status, code),
                    "{item}"
                );
            }
        }
        let counts = |status: &str| items.iter().filter(|i| i["status"] == status).count() as i64;
        assert_eq!(
            counts("succeeded"),
            p["would_succeed"].as_i64().unwrap(),
            "{p}"
        );
        assert_eq!(counts("skipped"), p["would_skip"].as_i64().unwrap(), "{p}");
        assert_eq!(counts("failed"), p["would_fail"].as_i64().unwrap(), "{p}");
    }
    // A cancelled preview is not run again (its members would be decided from no state): 409
    // `not_rerunnable`, and it stays cancelled.
    let job = s
        .submit(json!({"kind": "remove", "groups": [pilot], "remove_licenses": [SPE_E5_SKU_ID], "preview": true}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_previewed(&s, &id).await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/cancel"), &s.operator)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 409, "not_rerunnable").await;
    let job = s.app.get_json(&format!("/v1/jobs/{id}"), &s.viewer).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["runs"], 1, "{job}");
    // Its run says so too, with every member skipped.
    let runs = s
        .app
        .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
        .await;
    let run = &runs["data"][0];
    assert_eq!(run["status"], "cancelled", "{runs}");
    assert!(run["finished_at"].is_string(), "{runs}");
    assert_eq!(run["skipped"], job["progress"]["total"], "{runs} {job}");
    s.finish().await;
}
on_both_backends!(stale_preview_reads_the_groups_again);

/// The default scenario with 60 SPE_E5 units: 20 free for Staff's 1,000 members.
fn short_of_spe_e5() -> graph_emulator::Scenario {
    let mut scenario = scenario();
    for sku in &mut scenario.skus {
        if sku.sku_part_number == "SPE_E5" {
            sku.enabled = 60;
        }
    }
    scenario
}

/// A canary of 50 on an assign whose SKU runs short (20 free SPE_E5 units for Staff's 1,000
/// members), with three lanes of 20: the job pauses once 50 members are worked — no more are
/// written before the decision, the emulator proves it — and nothing moves while it is paused;
/// its failures are readable. Resume (operator) finishes it, every item as the directory holds.
/// A second such job cancelled while paused leaves no member pending. A job whose canary passes
/// runs on by itself. Resume of a job that is not paused is 409 `not_paused`.
async fn canary_pauses_a_job_that_runs_short(backend: Backend) {
    let scenario = short_of_spe_e5();
    let Some(s) = setup_with(
        backend,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 3\n",
        scenario,
    )
    .await
    else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let sales = s.app.group_id(&s.admin, "Sales").await;
    let canary = json!({"members": 50, "max_failed_share": 0.1});
    let before = s.stats().await;

    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "canary": canary}))
        .await;
    assert_eq!(job["request"]["canary"], canary, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let paused = wait_paused(&s, &id).await;
    let p = &paused["progress"];
    // The canary counts the members written (skipped ones had nothing to write).
    let written = p["succeeded"].as_i64().unwrap() + p["failed"].as_i64().unwrap();
    assert_eq!(written, 50, "{paused}");
    assert!(p["failed"].as_i64().unwrap() > 5, "{paused}");
    assert!(paused["canary_passed_at"].is_null(), "{paused}");
    // No more than the canary's members were written, by the directory's own count.
    let stats = s.stats().await;
    let writes = assign_calls(&stats) - assign_calls(&before);
    assert!(writes > 0 && writes <= 50, "{writes} members written");
    let per_user: Value = s
        .http
        .get(format!(
            "{}/_emulator/stats?per_user=true",
            s.emulator.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let changed = per_user["writes_per_user"].as_object().unwrap().len();
    assert!(changed <= 50, "{changed} members changed");
    // Paused: nothing is leased or written, and the failures so far are there to read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = s.job(&id).await;
    assert_eq!(still["status"], "paused");
    assert_eq!(still["progress"], paused["progress"]);
    assert_eq!(
        s.stats().await["successful_writes"],
        stats["successful_writes"]
    );
    let errors = s
        .app
        .get_json(&format!("/v1/jobs/{id}/errors"), &s.viewer)
        .await;
    assert!(
        errors["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "count_violation"),
        "{errors}"
    );
    let on = &s;
    let failed_of = move |id: String| async move {
        let s = on;
        s.app
            .get_json(
                &format!("/v1/jobs/{id}/items?status=failed&limit=500"),
                &s.viewer,
            )
            .await["data"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(
        failed_of(id.clone()).await.len() as i64,
        p["failed"].as_i64().unwrap()
    );
    let listed = list_jobs(&s, "status=paused").await;
    assert!(listed.iter().any(|j| j["id"] == id.as_str()));
    // The run's history row says paused too, and is not over.
    let setup = &s;
    let run = |id: String| async move {
        let s = setup;
        s.app
            .get_json(&format!("/v1/jobs/{id}/runs"), &s.viewer)
            .await["data"][0]
            .clone()
    };
    let paused_run = run(id.clone()).await;
    assert_eq!(paused_run["status"], "paused", "{paused_run}");
    assert!(paused_run["finished_at"].is_null(), "{paused_run}");
    // With the outcomes so far.
    for k in ["succeeded", "failed", "skipped"] {
        assert_eq!(paused_run[k], p[k], "{k}: {paused_run} {paused}");
    }
    assert_eq!(paused_run["total"], 1000, "{paused_run}");

    // Only an operator (or admin) resumes; a viewer is refused and nothing changes.
    let resume = |token: &str| s.app.post(&format!("/v1/jobs/{id}/resume"), token).send();
    expect_problem(resume(&s.viewer).await.unwrap(), 403, "forbidden").await;
    assert_eq!(s.job(&id).await["status"], "paused");
    let resp = resume(&s.operator).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let resumed: Value = resp.json().await.unwrap();
    assert!(resumed["canary_passed_at"].is_string(), "{resumed}");
    let done = s.wait(&id).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(done["progress"]["pending"], 0, "{done}");
    assert_eq!(done["progress"]["total"], 1000, "{done}");
    let done_run = run(id.clone()).await;
    assert_eq!(done_run["status"], "finished_with_exception", "{done_run}");
    assert_eq!(done_run["total"], 1000, "{done_run}");
    // Resuming a job that is not paused is a state conflict.
    expect_problem(resume(&s.operator).await.unwrap(), 409, "not_paused").await;

    // A second job, with three more units bought, pauses and is cancelled while paused:
    // nothing pending.
    s.emulator_patch("skus/SPE_E5", json!({"enabled": 63}))
        .await;
    let job = s
        .submit(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "canary": canary}))
        .await;
    let second = job["id"].as_str().unwrap().to_owned();
    wait_paused(&s, &second).await;
    let writes = s.stats().await["successful_writes"].clone();
    // An operator's action on the second job: its answer, asserted 2xx.
    let act = |action: &str| {
        let path = format!("/v1/jobs/{second}/{action}");
        async move {
            let s = on;
            success_json(s.app.post_empty(&path, &s.operator).await).await
        }
    };
    act("cancel").await;
    let cancelled = s.wait(&second).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["progress"]["pending"], 0, "{cancelled}");
    let cancelled_run = run(second.clone()).await;
    assert_eq!(cancelled_run["status"], "cancelled", "{cancelled_run}");
    assert!(cancelled_run["finished_at"].is_string(), "{cancelled_run}");
    let pending = s
        .app
        .get_json(
            &format!("/v1/jobs/{second}/items?status=pending&limit=1"),
            &s.viewer,
        )
        .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 0, "{pending}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.stats().await["successful_writes"], writes);

    // Rerun of the cancelled job: its canary has not passed, so the canary is tried again on the
    // members not done — each really sent to the directory again, not judged from the first
    // run — and, with no unit left, they fail again and the job pauses once more.
    let calls = assign_calls(&s.stats().await);
    act("rerun").await;
    let again = wait_paused(&s, &second).await;
    assert_eq!(again["runs"], 2, "{again}");
    let failed_now = failed_of(second.clone()).await;
    assert!(!failed_now.is_empty(), "{again}");
    for item in &failed_now {
        assert_eq!(item["run_no"], 2, "worked in the rerun: {item}");
        assert_eq!(item["error"]["code"], "count_violation", "{item}");
    }
    let sent = assign_calls(&s.stats().await) - calls;
    assert!(
        sent as usize >= failed_now.len(),
        "{sent} assignLicense calls for {} members failed in the rerun",
        failed_now.len()
    );
    act("cancel").await;
    let cancelled = s.wait(&second).await;
    assert_eq!(cancelled["progress"]["pending"], 0, "{cancelled}");

    // A canary that passes: the job runs on by itself to its end.
    let job = s
        .submit(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE", "canary": canary}))
        .await;
    let third = job["id"].as_str().unwrap().to_owned();
    let done = s.wait(&third).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert!(done["canary_passed_at"].is_string(), "{done}");
    assert_eq!(done["progress"]["total"], 250, "{done}");

    // A canary as large as the group, with one SPE_E5 unit left: every member is worked by the
    // time the canary is decided, so the job ends as it stands instead of pausing with nothing
    // left to hold back.
    s.emulator_patch("skus/SPE_E5", json!({"enabled": 64}))
        .await;
    let whole = json!({"members": 250, "max_failed_share": 0.1});
    let job = s
        .submit(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "canary": whole}))
        .await;
    let fourth = job["id"].as_str().unwrap().to_owned();
    let done = s.wait(&fourth).await;
    assert!(
        matches!(
            done["status"].as_str(),
            Some("failed" | "finished_with_exception")
        ),
        "{done}"
    );
    assert_eq!(done["progress"]["pending"], 0, "{done}");
    assert!(done["progress"]["failed"].as_i64().unwrap() > 0, "{done}");

    // A bad canary is refused before anything is created.
    let jobs_before = list_jobs(&s, "").await.len();
    for bad in [
        json!({"members": 0, "max_failed_share": 0.1}),
        json!({"members": 50, "max_failed_share": 2}),
    ] {
        let resp = s
            .app
            .post("/v1/jobs", &s.admin)
            .json(&json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "canary": bad}))
            .send()
            .await
            .unwrap();
        expect_problem(resp, 422, "invalid_canary").await;
    }
    let resp = s
        .app
        .post("/v1/jobs", &s.admin)
        .json(&json!({"kind": "export", "groups": [sales], "export": {"format": "csv"}, "canary": canary}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "canary_not_supported").await;
    assert_eq!(list_jobs(&s, "").await.len(), jobs_before);
    s.finish().await;
}
on_both_backends!(canary_pauses_a_job_that_runs_short);

/// PostgreSQL + Redis: lanes whose claims find every free member's row locked by another
/// transaction (claims skip locked rows rather than wait) come back for them. A job paused by its
/// canary is resumed while a transaction holds its pending members' rows: nothing is written while
/// they are locked, and once the lock is gone the job finishes at once — not when the reconciler
/// (set to wait ten minutes here) would queue it again — every item as the directory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_come_back_for_members_whose_rows_were_locked_postgres() {
    use sea_orm::ConnectionTrait;
    let scenario = short_of_spe_e5();
    let Some(s) = setup_with(
        Backend::Production,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 3\nstall_secs = 600\n",
        scenario,
    )
    .await
    else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    let canary = json!({"members": 50, "max_failed_share": 0.1});
    let job = s
        .submit(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE", "canary": canary}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let paused = wait_paused(&s, &id).await;

    let lock = licensor_core::db::begin(&s.app.db).await.unwrap();
    let locked = lock
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT id FROM job_items WHERE job_id = $1 AND status = 'pending' FOR UPDATE",
            [uuid::Uuid::parse_str(&id).unwrap().into()],
        ))
        .await
        .unwrap()
        .len() as i64;
    assert_eq!(
        locked,
        paused["progress"]["pending"].as_i64().unwrap(),
        "{paused}"
    );
    assert!(locked > 900, "{paused}");
    let writes = s.stats().await["successful_writes"].clone();
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/resume"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    // The lanes find nothing they can take while the rows are locked.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = s.job(&id).await;
    assert_eq!(held["status"], "running", "{held}");
    assert_eq!(held["progress"], paused["progress"], "{held}");
    assert_eq!(s.stats().await["successful_writes"], writes);

    lock.commit().await.unwrap();
    // Within 40 s of the lock's end (the wait panics after that), not the reconciler's 600.
    let done = s.app.wait_for_job(&s.admin, &id, 40).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(done["progress"]["pending"], 0, "{done}");
    assert_eq!(done["progress"]["total"], 1000, "{done}");
    s.truth(&id).await;
    s.finish().await;
}

/// Graph has no transaction across setting a usage location and assigning a license: a member
/// whose location licensor set before its license write failed keeps the location, and its item
/// says so — and only such a member's item.
async fn a_usage_location_set_before_a_failed_write_is_reported(backend: Backend) {
    let Some(s) = setup(backend, "").await else {
        return;
    };
    let staff = s.app.group_id(&s.admin, "Staff").await;
    // SPE_E5 has 700 units for 1,000 members; 3 % of them have no usage location.
    let job = s
        .run(json!({"kind": "assign", "groups": [staff], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_eq!(job["status"], "finished_with_exception", "{job}");
    let id = job["id"].as_str().unwrap();
    let (mut noted, mut set_and_failed) = (0, 0);
    for item in s.app.all_items(&s.viewer, id).await {
        let user = s.user(item["user_id"].as_str().unwrap()).await;
        let location_written = user["profileWrites"].as_u64().unwrap_or(0) > 0;
        let says = item["error"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("usage location was set to SE"));
        if item["status"] == "failed" {
            assert_eq!(code(&item), "count_violation", "{item}");
            assert_eq!(says, location_written, "{item} {user}");
            if location_written {
                assert_eq!(user["usageLocation"], "SE", "{user}");
                set_and_failed += 1;
            }
        } else {
            assert!(!says, "{item}");
        }
        noted += usize::from(says);
    }
    assert!(
        set_and_failed > 0,
        "no member had its location set and then ran out of units"
    );
    assert_eq!(noted, set_and_failed);
    s.finish().await;
}
on_both_backends!(a_usage_location_set_before_a_failed_write_is_reported);

/// A job names its groups from the start: the API reads their display names as it checks the
/// request, so a job still waiting in the queue (no worker here takes it) lists them by name in
/// its answer, its view and the jobs list. A group the directory does not know is left unnamed,
/// and the job fails with `group_not_found` once it runs, as before.
async fn a_queued_job_names_its_groups(backend: Backend) {
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(graph_emulator::Scenario::simple(41, 10, 20)),
        ..graph_emulator::EmulatorConfig::default()
    })
    .await
    .unwrap();
    let Some(app) = common::TestApp::start_with(backend, licensor::Roles::API, "").await else {
        return;
    };
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let group = app.group_id(&t.admin, "All Users").await;
    let unknown = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let submitted = app
        .post_json(
            "/v1/jobs",
            &t.admin,
            &json!({"kind": "assign", "groups": [group, unknown], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}),
        )
        .await;
    let id = submitted["id"].as_str().unwrap();
    let listed = app.get_json("/v1/jobs", &t.viewer).await;
    let viewed = app.get_json(&format!("/v1/jobs/{id}"), &t.viewer).await;
    for job in [&submitted, &listed["data"][0], &viewed] {
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(
            job["groups"],
            json!([
                {"id": group, "display_name": "All Users"},
                {"id": unknown, "display_name": null},
            ]),
            "{job}"
        );
    }
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_queued_job_names_its_groups);
