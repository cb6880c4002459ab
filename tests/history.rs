//! One member's history (`GET /v1/members/{member}/history`) end to end, on the embedded
//! default and on PostgreSQL + Redis: assign → replace → remove on a group through the directory
//! emulator, then the history of one member lists the three jobs newest first with their
//! outcomes and the licenses before and after each write — by user principal name in any case
//! and by user id; paging; another tenant sees nothing; malformed members are refused. And the
//! usage location a job set for a member, in the API's history and `licensor members history`.

mod common;

use std::collections::HashSet;

use common::{Backend, TestApp, TestTenant, expect_problem};
use graph_emulator::{
    ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, GroupSpec, SPE_E5_SKU_ID, Scenario,
};
use licensor::Roles;
use licensor_workers::sweeps::{self, StoredItems};
use serde_json::{Value, json};
use std::time::Instant;

/// 80 users, all with a usage location; `Team` has 12 of them; plenty of both SKUs.
fn scenario() -> Scenario {
    let base = Scenario::demo();
    let sku = |part: &str| common::jobs::sku_of(part, 1_000);
    Scenario {
        seed: 2121,
        users: 80,
        users_without_usage_location: 0.0,
        usage_location: "SE".into(),
        groups: vec![GroupSpec::new("Team", 12)],
        skus: vec![sku("ENTERPRISEPACK"), sku("SPE_E5")],
        ..base
    }
}

async fn run_job(
    app: &TestApp,
    token: &str,
    viewer: &str,
    emu: &EmulatorHandle,
    body: Value,
) -> Value {
    let job = app.post_json("/v1/jobs", token, &body).await;
    let id = job["id"].as_str().expect("job id").to_owned();
    let job = app.wait_for_job(viewer, &id, 120).await;
    app.assert_outcomes_true(viewer, &id, &emu.base_url()).await;
    job
}

/// The SKU ids of a `before` / `after` license list, each license answered in snake_case
/// (`sku_id`, `disabled_plans`) though the ledger stores Graph's `skuId`, `disabledPlans`.
fn skus(list: &Value) -> HashSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a license list: {list}"))
        .iter()
        .map(|l| {
            assert_eq!(
                common::field_names(l),
                ["disabled_plans", "sku_id"],
                "{list}"
            );
            l["sku_id"].as_str().expect("sku id").to_owned()
        })
        .collect()
}

async fn history(app: &TestApp, token: &str, member: &str, query: &str) -> Value {
    app.get_json(&format!("/v1/members/{member}/history{query}"), token)
        .await
}

/// The member's history two entries at a time: the first page and the one its cursor names.
async fn two_pages(app: &TestApp, token: &str, member: &str) -> (Value, Value) {
    let first = history(app, token, member, "?limit=2").await;
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a next page: {first}"))
        .to_owned();
    let second = history(app, token, member, &format!("?limit=2&cursor={cursor}")).await;
    (first, second)
}

/// The member-keys sweep on a schedule that never comes within a test: the test keys members
/// itself, so the history is read both before and after they are keyed.
const NO_KEYING_SWEEP: &str = "[sweeps]\nmember_keys = \"0 0 0 1 1 *\"\n";

/// The member-keys sweep as a worker runs it, with what it noted of the items stored.
async fn sweep(app: &TestApp, stored: &StoredItems) -> u64 {
    sweeps::key_members(&app.db, stored)
        .await
        .expect("the sweep keys")
}

/// Key every item stored so far.
async fn key_members(app: &TestApp) -> u64 {
    let newest = licensor_core::jobs::history::newest_item(&app.db)
        .await
        .expect("newest item")
        .unwrap_or(0);
    licensor_core::jobs::history::key_members(&app.db, newest)
        .await
        .expect("members keyed")
}

/// The emulator, licensor with members keyed only when a test says so (see
/// [`NO_KEYING_SWEEP`]), tenant `contoso` pointed at the emulator, and the id of its group
/// `Team`; `None` when the backend is not available here.
async fn start(backend: Backend) -> Option<(EmulatorHandle, TestApp, TestTenant, String)> {
    start_with(backend, scenario()).await
}

/// [`start`] with the directory holding `scenario`.
async fn start_with(
    backend: Backend,
    scenario: Scenario,
) -> Option<(EmulatorHandle, TestApp, TestTenant, String)> {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let Some(app) = TestApp::start_with(backend, Roles::ALL, NO_KEYING_SWEEP).await else {
        emulator.shutdown().await;
        return None;
    };
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let team = app.group_id(&tenant.admin, "Team").await;
    Some((emulator, app, tenant, team))
}

async fn member_history_after_assign_replace_remove(backend: Backend) {
    let Some((emulator, app, tenant, team)) = start(backend).await else {
        return;
    };

    let assign = run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        json!({
            "kind": "assign", "groups": [team], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}],
        }),
    )
    .await;
    assert_eq!(assign["status"], "finished", "{assign}");
    let replace = run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        json!({
            "kind": "replace", "groups": [team],
            "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "remove_licenses": [SPE_E5_SKU_ID],
        }),
    )
    .await;
    assert_eq!(replace["status"], "finished", "{replace}");
    let remove = run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        json!({
            "kind": "remove", "groups": [team], "remove_licenses": [ENTERPRISEPACK_SKU_ID],
        }),
    )
    .await;
    assert_eq!(remove["status"], "finished", "{remove}");

    // A member all three jobs wrote for.
    let items = app
        .all_items(&tenant.viewer, assign["id"].as_str().unwrap())
        .await;
    let item = items
        .iter()
        .find(|i| i["status"] == "succeeded")
        .unwrap_or_else(|| panic!("a member the assign wrote for: {items:?}"));
    let user_id = item["user_id"].as_str().unwrap().to_owned();
    let upn = item["user_principal_name"].as_str().unwrap().to_owned();

    // By user principal name, in another case: the three jobs, newest first.
    let by_upn = history(&app, &tenant.viewer, &upn.to_uppercase(), "").await;
    let data = by_upn["data"].as_array().expect("entries");
    assert_eq!(data.len(), 3, "{by_upn}");
    assert!(by_upn["next_cursor"].is_null(), "{by_upn}");
    let expected = [
        (&remove, "remove"),
        (&replace, "replace"),
        (&assign, "assign"),
    ];
    for (entry, (job, kind)) in data.iter().zip(expected) {
        assert_eq!(entry["job_id"], job["id"], "{entry}");
        assert_eq!(entry["kind"], kind, "{entry}");
        assert_eq!(entry["job_status"], "finished", "{entry}");
        assert_eq!(entry["status"], "succeeded", "{entry}");
        assert!(entry["error"].is_null(), "{entry}");
        assert_eq!(entry["run_no"], 1, "{entry}");
        assert_eq!(entry["user_id"], user_id.as_str(), "{entry}");
        assert_eq!(entry["user_principal_name"], upn.as_str(), "{entry}");
        assert_eq!(entry["group"]["id"], team.as_str(), "{entry}");
        assert_eq!(entry["group"]["display_name"], "Team", "{entry}");
    }
    // Before and after each write, from the change ledger.
    let (rm, rp, asg) = (&data[0], &data[1], &data[2]);
    assert!(!skus(&asg["before"]).contains(SPE_E5_SKU_ID), "{asg}");
    assert!(skus(&asg["after"]).contains(SPE_E5_SKU_ID), "{asg}");
    assert!(skus(&rp["before"]).contains(SPE_E5_SKU_ID), "{rp}");
    assert!(!skus(&rp["after"]).contains(SPE_E5_SKU_ID), "{rp}");
    assert!(skus(&rp["after"]).contains(ENTERPRISEPACK_SKU_ID), "{rp}");
    assert!(skus(&rm["before"]).contains(ENTERPRISEPACK_SKU_ID), "{rm}");
    assert!(!skus(&rm["after"]).contains(ENTERPRISEPACK_SKU_ID), "{rm}");
    assert_eq!(skus(&asg["after"]), skus(&rp["before"]));
    assert_eq!(skus(&rp["after"]), skus(&rm["before"]));
    // The job's change ledger answers the same entry in the same shape.
    for (entry, job) in [(rm, &remove), (rp, &replace), (asg, &assign)] {
        let ledger = app
            .get_json(
                &format!(
                    "/v1/jobs/{}/changes?user={user_id}",
                    job["id"].as_str().unwrap()
                ),
                &tenant.viewer,
            )
            .await;
        let change = &ledger["data"][0];
        assert_eq!(ledger["total"], 1, "{ledger}");
        assert_eq!(skus(&change["before"]), skus(&entry["before"]), "{change}");
        assert_eq!(change["before"], entry["before"], "{change}");
        assert_eq!(change["after"], entry["after"], "{change}");
    }
    // The ledger's `user` filter matches a member as its history does: the user principal name
    // and the user id in any case.
    let mixed: String = upn
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let guid = uuid::Uuid::parse_str(&user_id).unwrap();
    for user in [
        upn.to_uppercase(),
        mixed,
        upn.clone(),
        user_id.to_uppercase(),
        // A GUID's other forms: braced, without hyphens, as a URN.
        format!("%7B{}%7D", guid.hyphenated()),
        guid.simple().to_string().to_uppercase(),
        guid.urn().to_string(),
        format!("%20{user_id}%20"),
    ] {
        for (entry, job) in [(rm, &remove), (rp, &replace), (asg, &assign)] {
            let ledger = app
                .get_json(
                    &format!(
                        "/v1/jobs/{}/changes?user={user}",
                        job["id"].as_str().unwrap()
                    ),
                    &tenant.viewer,
                )
                .await;
            assert_eq!(ledger["total"], 1, "{user}: {ledger}");
            assert_eq!(
                ledger["data"][0]["user_id"],
                user_id.as_str(),
                "{user}: {ledger}"
            );
            assert_eq!(
                ledger["data"][0]["after"], entry["after"],
                "{user}: {ledger}"
            );
        }
    }
    // A malformed member is refused as member history refuses it, with its code, also for a
    // job that does not exist (the filter is read first); an empty one is every member.
    let assign_id = assign["id"].as_str().unwrap();
    let all = app
        .get_json(
            &format!("/v1/jobs/{assign_id}/changes?limit=1"),
            &tenant.viewer,
        )
        .await;
    let every = app
        .get_json(
            &format!("/v1/jobs/{assign_id}/changes?limit=1&user=%20"),
            &tenant.viewer,
        )
        .await;
    assert_eq!(every["total"], all["total"], "{every}");
    let nobody_job = uuid::Uuid::now_v7();
    let long = format!("{}@contoso.com", "a".repeat(300));
    for bad in [
        "not-a-member",
        "anna%20berg@contoso.com",
        "%C3%A5sa@contoso.com",
        "1234-5678",
        "@contoso.com",
        "a@b@contoso.com",
        long.as_str(),
    ] {
        for job in [assign_id.to_owned(), nobody_job.to_string()] {
            let resp = app
                .get(
                    &format!("/v1/jobs/{job}/changes?user={bad}"),
                    &tenant.viewer,
                )
                .send()
                .await
                .unwrap();
            let problem = expect_problem(resp, 400, "invalid_member").await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("user: ")),
                "{bad}: {problem}"
            );
        }
    }
    let doc = app.get_json("/openapi.json", &tenant.viewer).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ChangeView"]["properties"]["before"]["items"]["$ref"],
        "#/components/schemas/LedgerLicense",
        "{}",
        schemas["ChangeView"]
    );
    let license = &schemas["LedgerLicense"]["properties"];
    assert!(
        license["sku_id"].is_object() && license["disabled_plans"].is_object(),
        "{license}"
    );
    // The directory agrees with the last "after".
    let user: Value = app
        .http
        .get(format!("{}/_emulator/users/{user_id}", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let direct: HashSet<String> = user["licenseAssignmentStates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["assignedByGroup"].is_null())
        .map(|l| l["skuId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(direct, skus(&rm["after"]), "{user}");

    // By user id: the same entries.
    let by_id = history(&app, &tenant.operator, &user_id, "").await;
    assert_eq!(by_id["data"], by_upn["data"]);

    // Read so far from the members not keyed yet. The sweep keys none younger than 30 s; noted
    // 30 s ago (12 members in each of the three jobs), they are keyed, once, and the history is
    // the same by either name.
    assert_eq!(
        sweep(&app, &StoredItems::default()).await,
        0,
        "none 30 s old"
    );
    let newest = licensor_core::jobs::history::newest_item(&app.db)
        .await
        .expect("newest item");
    let stored = StoredItems::default();
    stored.note(Instant::now() - sweeps::KEY_AFTER, newest);
    assert_eq!(sweep(&app, &stored).await, 36);
    assert_eq!(sweep(&app, &stored).await, 0, "all keyed");
    for member in [upn.to_uppercase(), user_id.clone()] {
        let keyed = history(&app, &tenant.viewer, &member, "").await;
        assert_eq!(keyed["data"], by_upn["data"], "{member}");
    }

    // Paging: two, then the oldest.
    let (first, second) = two_pages(&app, &tenant.viewer, &upn).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(second["data"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["data"][0]["job_id"], assign["id"]);
    assert!(second["next_cursor"].is_null());

    // A preview writes nothing: its member stays pending, with the preview's prediction.
    let preview = app
        .post_json(
            "/v1/jobs",
            &tenant.admin,
            &json!({"kind": "assign", "groups": [team], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}], "preview": true}),
        )
        .await;
    let preview_id = preview["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let job = app
            .get_json(&format!("/v1/jobs/{preview_id}"), &tenant.viewer)
            .await;
        if job["status"] == "previewed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not previewed: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let latest = history(&app, &tenant.viewer, &user_id, "?limit=1").await;
    let entry = &latest["data"][0];
    assert_eq!(entry["job_id"], preview_id.as_str(), "{entry}");
    assert_eq!(entry["job_status"], "previewed", "{entry}");
    assert_eq!(entry["status"], "pending", "{entry}");
    assert_eq!(entry["prediction"]["outcome"], "would_succeed", "{entry}");
    assert!(entry["before"].is_null(), "nothing written: {entry}");
    // The finished jobs' entries carry no prediction.
    assert!(by_upn["data"][0]["prediction"].is_null(), "{by_upn}");
    // The preview's member is not keyed yet, the three jobs' are: pages run across both, newest
    // first, each entry once — and the same once the preview's members are keyed too.
    let mut pages = Vec::new();
    for keyed in [false, true] {
        if keyed {
            assert_eq!(key_members(&app).await, 12);
        }
        let (first, second) = two_pages(&app, &tenant.viewer, &upn).await;
        assert!(second["next_cursor"].is_null(), "{second}");
        let jobs: Vec<&Value> = first["data"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["data"].as_array().unwrap())
            .map(|e| &e["job_id"])
            .collect();
        let expected = [
            &json!(preview_id),
            &remove["id"],
            &replace["id"],
            &assign["id"],
        ];
        assert_eq!(jobs, expected, "keyed: {keyed}");
        pages.push((first["data"].clone(), second["data"].clone()));
    }
    assert_eq!(pages[0], pages[1]);
    app.post_json(
        &format!("/v1/jobs/{preview_id}/cancel"),
        &tenant.operator,
        &json!({}),
    )
    .await;

    // A member no job touched, and another tenant asking about this one: empty.
    let nobody = history(&app, &tenant.viewer, "nobody@contoso.onmicrosoft.com", "").await;
    assert_eq!(nobody["data"], json!([]), "{nobody}");
    let other = app.tenant("fabrikam").await;
    for member in [upn.as_str(), user_id.as_str()] {
        let theirs = history(&app, &other.viewer, member, "").await;
        assert_eq!(theirs["data"], json!([]), "{theirs}");
    }
    // Nor can the other tenant read the jobs the history links to.
    let resp = app
        .get(
            &format!("/v1/jobs/{}", assign["id"].as_str().unwrap()),
            &other.viewer,
        )
        .send()
        .await
        .unwrap();
    expect_problem(resp, 404, "not_found").await;

    // Malformed members and paging are refused; no token is refused.
    for bad in [
        "not-a-member",
        "anna%20berg@contoso.com",
        "%C3%A5sa@contoso.com",
        "1234-5678",
    ] {
        let resp = app
            .get(&format!("/v1/members/{bad}/history"), &tenant.viewer)
            .send()
            .await
            .unwrap();
        expect_problem(resp, 400, "invalid_member").await;
    }
    let long = format!("{}@contoso.com", "a".repeat(300));
    let resp = app
        .get(&format!("/v1/members/{long}/history"), &tenant.viewer)
        .send()
        .await
        .unwrap();
    expect_problem(resp, 400, "invalid_member").await;
    let resp = app
        .get(
            &format!("/v1/members/{upn}/history?limit=0"),
            &tenant.viewer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = app
        .http
        .get(format!("{}/v1/members/{upn}/history", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(member_history_after_assign_replace_remove);

/// `licensor members history …` with `token`: its standard output (it must succeed).
async fn history_cli(app: &TestApp, token: &str, member: &str) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("LICENSOR_URL", &app.url)
        .env("LICENSOR_TOKEN", token)
        .args(["members", "history", member])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("licensor members history ends within 60 s")
        .expect("run licensor members history");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A usage location the job set for a member is in the member's history: the API's
/// `usage_location` (from the change ledger) and a column of `licensor members history`, as
/// `none → NO`; a member the job set none for shows `-`. A verified write's note comes with its
/// code (`note_codes: ["verified"]`), in the history and the job's items alike, for clients that
/// show it in another language.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_location_and_note_codes_in_member_history() {
    let Some((emulator, app, tenant, team)) = start_with(
        Backend::Embedded,
        Scenario {
            users_without_usage_location: 0.5,
            ..scenario()
        },
    )
    .await
    else {
        return;
    };
    let job = run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        json!({
            "kind": "assign", "groups": [team], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}],
            "usage_location": "NO", "verify": true,
        }),
    )
    .await;
    assert_eq!(job["status"], "finished", "{job}");
    let id = job["id"].as_str().unwrap();
    let changes = app.all_changes(&tenant.viewer, id).await;
    let located = changes
        .iter()
        .find(|c| !c["usage_location"].is_null())
        .unwrap_or_else(|| panic!("a member given a usage location: {changes:?}"));
    let unlocated = changes
        .iter()
        .find(|c| c["usage_location"].is_null())
        .unwrap_or_else(|| panic!("a member that had one: {changes:?}"));

    for (change, location) in [
        (located, json!({"before": null, "after": "NO"})),
        (unlocated, Value::Null),
    ] {
        let upn = change["user_principal_name"].as_str().unwrap();
        let page = history(&app, &tenant.viewer, upn, "").await;
        let entry = &page["data"][0];
        assert_eq!(entry["job_id"], id, "{entry}");
        assert_eq!(entry["usage_location"], location, "{entry}");
        assert_eq!(entry["note"], "verified", "{entry}");
        assert_eq!(entry["note_codes"], json!(["verified"]), "{entry}");

        let text = history_cli(&app, &tenant.viewer, upn).await;
        assert!(
            text.lines()
                .next()
                .unwrap_or_default()
                .ends_with("USAGE LOCATION"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("the job in {text}"));
        let want = if location.is_null() {
            "  -"
        } else {
            "  none → NO"
        };
        assert!(line.ends_with(want), "{want:?} ends {line:?}");
    }
    let items = app.all_items(&tenant.viewer, id).await;
    assert!(
        items
            .iter()
            .all(|i| i["note"] == "verified" && i["note_codes"] == json!(["verified"])),
        "{items:?}"
    );

    app.stop().await;
    emulator.shutdown().await;
}

/// One process keys members at a time. While another holds the turn (the mark's row locked, as
/// a sweep's transaction holds it), a sweep leaves the turn to it at once, keying nothing and
/// waiting for nothing; two sweeps at once key every item once between them. Before, every
/// worker process keyed the same items side by side, one waiting on each key the other had
/// inserted: at `licensor-bench --scenario msp` scale on PostgreSQL (2 workers) the sweep's
/// statements took 61 s of the database's time for 500,000 items.
async fn a_sweep_leaves_the_turn_to_the_process_keying(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let Some((emulator, app, tenant, team)) = start(backend).await else {
        return;
    };
    let assign =
        |sku: &str| json!({"kind": "assign", "groups": [team], "add_licenses": [{"sku_id": sku}]});
    run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        assign(SPE_E5_SKU_ID),
    )
    .await;

    if backend == Backend::Production {
        // Another process's turn: its transaction holds the mark.
        let other = licensor_core::db::begin(&app.db)
            .await
            .expect("a transaction");
        other
            .execute_unprepared("SELECT through FROM member_keys_mark WHERE id = 1 FOR UPDATE")
            .await
            .expect("the mark locked");
        let left = tokio::time::timeout(std::time::Duration::from_secs(5), key_members(&app))
            .await
            .expect("a sweep that finds another keying does not wait for it");
        assert_eq!(left, 0, "nothing keyed while another process keys");
        other.rollback().await.expect("the turn ends");
    }
    assert_eq!(key_members(&app).await, 12, "the job's members keyed");
    assert_eq!(key_members(&app).await, 0, "all keyed");

    // Two sweeps at once key the next job's members once between them.
    run_job(
        &app,
        &tenant.admin,
        &tenant.viewer,
        &emulator,
        assign(ENTERPRISEPACK_SKU_ID),
    )
    .await;
    let (a, b) = tokio::join!(key_members(&app), key_members(&app));
    assert_eq!(a + b, 12, "each member keyed once: {a} + {b}");
    assert_eq!(key_members(&app).await, 0, "all keyed");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_sweep_leaves_the_turn_to_the_process_keying);
