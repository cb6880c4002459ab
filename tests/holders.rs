//! What the Licenses screens read and do beyond one license, through HTTP on the embedded default
//! and on PostgreSQL + Redis: everything one user or asset holds and checking it all in, license
//! search, assignee names, and the directory user search of the checkout picker.

mod common;

use std::collections::HashSet;

use common::{Backend, TestApp, expect_problem};
use graph_emulator::{EmulatorConfig, Scenario};
use serde_json::{Value, json};

async fn create(app: &TestApp, token: &str, body: Value) -> String {
    let l = app.post_json("/v1/licenses", token, &body).await;
    l["id"].as_str().expect("license id").to_owned()
}

async fn checkout(app: &TestApp, token: &str, id: &str, body: Value) -> Value {
    app.post_json(&format!("/v1/licenses/{id}/checkout"), token, &body)
        .await
}

async fn figures(app: &TestApp, token: &str, id: &str) -> (i64, i64) {
    let l = app.get_json(&format!("/v1/licenses/{id}"), token).await;
    (
        l["assigned"].as_i64().expect("assigned"),
        l["available"].as_i64().expect("available"),
    )
}

async fn everything_one_asset_holds(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("assets").await;
    let other = app.tenant("elsewhere").await;
    let laptop = json!({ "type": "asset", "id": "LT-7", "name": "Field laptop" });
    let cad = create(&app, &t.admin, json!({ "name": "CAD", "seats": 5 })).await;
    let pdf = create(&app, &t.admin, json!({ "name": "PDF Editor", "seats": 3 })).await;
    let oem = create(
        &app,
        &t.admin,
        json!({ "name": "OEM", "seats": 2, "reassignable": false }),
    )
    .await;
    let a = checkout(
        &app,
        &t.admin,
        &cad,
        json!({ "assignee": laptop, "quantity": 2 }),
    )
    .await;
    assert_eq!(a["assignee"], laptop, "the name is kept: {a}");
    checkout(&app, &t.admin, &pdf, json!({ "assignee": laptop })).await;
    checkout(
        &app,
        &t.admin,
        &cad,
        json!({ "assignee": { "type": "user", "id": "u-1" } }),
    )
    .await;
    // The same id in another tenant is another asset.
    let theirs = create(&app, &other.admin, json!({ "name": "CAD", "seats": 5 })).await;
    checkout(&app, &other.admin, &theirs, json!({ "assignee": laptop })).await;

    let held = app
        .get_json("/v1/assignees/asset/LT-7/assignments", &t.viewer)
        .await;
    let mut names: Vec<&str> = held["data"]
        .as_array()
        .expect("held")
        .iter()
        .map(|h| h["license_name"].as_str().expect("license name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["CAD", "PDF Editor"], "{held}");
    assert!(held["data"][0]["reassignable"].as_bool().expect("flag"));
    let paged = app
        .get_json("/v1/assignees/asset/LT-7/assignments?limit=1", &t.viewer)
        .await;
    let cursor = paged["next_cursor"].as_str().expect("a second page");
    let second = app
        .get_json(
            &format!("/v1/assignees/asset/LT-7/assignments?limit=1&cursor={cursor}"),
            &t.viewer,
        )
        .await;
    assert_ne!(paged["data"][0]["id"], second["data"][0]["id"]);
    assert!(second["next_cursor"].is_null(), "{second}");
    // Only users and assets hold licenses.
    let resp = app
        .get("/v1/assignees/robot/LT-7/assignments", &t.viewer)
        .send()
        .await
        .expect("GET");
    expect_problem(resp, 404, "not_found").await;

    // Roles: a viewer reads only; nothing held is said plainly.
    let resp = app
        .post("/v1/assignees/asset/LT-7/checkin", &t.viewer)
        .json(&json!({}))
        .send()
        .await
        .expect("POST");
    expect_problem(resp, 403, "forbidden").await;
    let resp = app
        .post("/v1/assignees/asset/NOPE/checkin", &t.operator)
        .json(&json!({}))
        .send()
        .await
        .expect("POST");
    expect_problem(resp, 409, "nothing_checked_out").await;

    // A license that is not reassignable among them: refused, nothing changed.
    checkout(&app, &t.admin, &oem, json!({ "assignee": laptop })).await;
    let resp = app
        .post("/v1/assignees/asset/LT-7/checkin", &t.operator)
        .json(&json!({ "notes": "retired" }))
        .send()
        .await
        .expect("POST");
    let body = expect_problem(resp, 409, "not_reassignable").await;
    assert_eq!(body["licenses"][0]["name"], "OEM", "{body}");
    assert_eq!(figures(&app, &t.viewer, &cad).await, (3, 2));
    assert_eq!(figures(&app, &t.viewer, &pdf).await, (1, 2));

    // Without it: everything comes back, one audit entry per license.
    let oem_assignment = app
        .get_json(&format!("/v1/licenses/{oem}/assignments"), &t.viewer)
        .await;
    let id = oem_assignment["data"][0]["id"].clone();
    let resp = app
        .post(&format!("/v1/licenses/{oem}/checkin"), &t.operator)
        .json(&json!({ "assignment_ids": [id] }))
        .send()
        .await
        .expect("POST");
    expect_problem(resp, 409, "not_reassignable").await;
    let resp = app
        .http
        .patch(format!("{}/v1/licenses/{oem}", app.url))
        .bearer_auth(&t.admin)
        .json(&json!({ "reassignable": true }))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 200);
    let out = app
        .post_json(
            "/v1/assignees/asset/LT-7/checkin",
            &t.operator,
            &json!({ "notes": "retired" }),
        )
        .await;
    assert_eq!(out["checked_in"].as_array().expect("checked in").len(), 3);
    assert_eq!(out["licenses"].as_array().expect("licenses").len(), 3);
    assert_eq!(figures(&app, &t.viewer, &cad).await, (1, 4));
    assert_eq!(figures(&app, &t.viewer, &pdf).await, (0, 3));
    assert_eq!(figures(&app, &t.viewer, &oem).await, (0, 2));
    assert_eq!(
        figures(&app, &other.viewer, &theirs).await,
        (1, 4),
        "another tenant's asset is untouched"
    );
    let audit = app
        .get_json("/v1/audit?action=license.checkin&limit=50", &t.viewer)
        .await;
    let entries: Vec<&Value> = audit["data"]
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["after"]["held_by"]["id"] == "LT-7")
        .collect();
    assert_eq!(entries.len(), 3, "{audit}");
    let targets: HashSet<&str> = entries
        .iter()
        .map(|e| e["target_id"].as_str().expect("target"))
        .collect();
    assert_eq!(
        targets,
        HashSet::from([cad.as_str(), pdf.as_str(), oem.as_str()])
    );
    assert!(entries.iter().all(|e| e["after"]["notes"] == "retired"));
    let held = app
        .get_json("/v1/assignees/asset/LT-7/assignments", &t.viewer)
        .await;
    assert_eq!(held["data"], json!([]));
    app.stop().await;
}
on_both_backends!(everything_one_asset_holds);

async fn license_search_and_names(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("search").await;
    for name in ["AutoCAD 2026", "Adobe Acrobat Pro", "100% Pure Fonts"] {
        create(&app, &t.admin, json!({ "name": name, "seats": 1 })).await;
    }
    let names = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|l| l["name"].as_str().expect("name").to_owned())
            .collect()
    };
    // The names of the licenses a search (escaped as in a URL) finds.
    let searched = async |search: &str| {
        names(
            app.get_json(&format!("/v1/licenses?search={search}"), &t.viewer)
                .await,
        )
    };
    assert_eq!(
        names(app.get_json("/v1/licenses?search=autocad", &t.viewer).await),
        ["AutoCAD 2026"]
    );
    assert_eq!(
        names(app.get_json("/v1/licenses?search=O", &t.viewer).await).len(),
        3,
        "any case"
    );
    assert_eq!(
        names(app.get_json("/v1/licenses?search=%25", &t.viewer).await),
        ["100% Pure Fonts"],
        "% is a character, not a wildcard"
    );
    // Any case is Unicode's: a Swedish school's license is found by its capital letters.
    for name in ["Östersund Skola", "Älvsbyn Gymnasium", "Åre Skola"] {
        create(&app, &t.admin, json!({ "name": name, "seats": 1 })).await;
    }
    for (search, found) in [
        ("%C3%96stersund", &["Östersund Skola"][..]),
        ("%C3%B6STERSUND", &["Östersund Skola"][..]),
        ("%C3%84LVSBYN", &["Älvsbyn Gymnasium"][..]),
        ("%C3%A5re", &["Åre Skola"][..]),
        ("skola", &["Åre Skola", "Östersund Skola"][..]),
    ] {
        assert_eq!(searched(search).await, found, "search={search}");
    }
    // A search reads on page by page, newest first.
    let mut seen = Vec::new();
    let mut path = "/v1/licenses?search=S&limit=2".to_owned();
    loop {
        let page = app.get_json(&path, &t.viewer).await;
        seen.extend(names(page.clone()));
        // The search reads on typed in another case: it matches names in any case.
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/licenses?search=s&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "Åre Skola",
            "Älvsbyn Gymnasium",
            "Östersund Skola",
            "100% Pure Fonts"
        ]
    );
    let long = "x".repeat(201);
    let resp = app
        .get(&format!("/v1/licenses?search={long}"), &t.viewer)
        .send()
        .await
        .expect("GET");
    expect_problem(resp, 400, "invalid_query").await;
    // Spaces around a search are not searched, nor counted: 201 of them filter nothing.
    let blank = "%20".repeat(201);
    let all = app.get_json("/v1/licenses?limit=500", &t.viewer).await;
    assert_eq!(
        names(
            app.get_json(&format!("/v1/licenses?limit=500&search={blank}"), &t.viewer)
                .await
        ),
        names(all)
    );
    // A letter in either form counts once: 101 "Å" typed as A and a combining ring are 101.
    let decomposed = "A%CC%8A".repeat(101);
    let found = app
        .get_json(&format!("/v1/licenses?search={decomposed}"), &t.viewer)
        .await;
    assert_eq!(found["data"], json!([]), "{found}");
    // Either Unicode form of a letter finds the other: "Å" typed as A and a combining ring (as
    // text pasted from some systems has it) is "Å"; and Greek's final sigma is a sigma.
    create(
        &app,
        &t.admin,
        json!({ "name": "Cafe\u{301} A\u{30A}rhus", "seats": 1 }),
    )
    .await;
    create(&app, &t.admin, json!({ "name": "ΟΔΟΣ", "seats": 1 })).await;
    for (search, found) in [
        ("%C3%A5rhus", &["Cafe\u{301} A\u{30A}rhus"][..]),
        ("caf%C3%A9", &["Cafe\u{301} A\u{30A}rhus"][..]),
        ("A%CC%8ARHUS", &["Cafe\u{301} A\u{30A}rhus"][..]),
        ("o%CC%88stersund", &["Östersund Skola"][..]),
        ("%CE%A3", &["ΟΔΟΣ"][..]),
        ("%CF%83", &["ΟΔΟΣ"][..]),
    ] {
        assert_eq!(searched(search).await, found, "search={search}");
    }
    // A cursor of a search reads on with the search sent in the other form.
    let first = app
        .get_json("/v1/licenses?search=%C3%A5&limit=1", &t.viewer)
        .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    app.get_json(
        &format!("/v1/licenses?search=a%CC%8A&limit=1&cursor={cursor}"),
        &t.viewer,
    )
    .await;

    let id = create(&app, &t.admin, json!({ "name": "Named", "seats": 2 })).await;
    let resp = app
        .post(&format!("/v1/licenses/{id}/checkout"), &t.admin)
        .json(&json!({ "assignee": { "type": "asset", "id": "A-1", "name": "n".repeat(201) } }))
        .send()
        .await
        .expect("POST");
    expect_problem(resp, 422, "invalid_assignee").await;
    assert_eq!(figures(&app, &t.viewer, &id).await, (0, 2));
    app.stop().await;
}
on_both_backends!(license_search_and_names);

/// The checkout picker's user search reads the directory by name or userPrincipalName, a page
/// at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_users_by_name_or_upn_paged() {
    let app = TestApp::start(Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("directory emulator starts");
    let t = app.tenant("people").await;
    let resp = app
        .get("/v1/directory/users?search=a", &t.viewer)
        .send()
        .await
        .expect("GET");
    expect_problem(resp, 409, "directory_not_configured").await;
    app.connect_directory(t.id, &emulator).await;

    let by_name = app
        .get_json("/v1/directory/users?search=adele&limit=5", &t.viewer)
        .await;
    let first = &by_name["data"][0];
    assert!(
        first["display_name"]
            .as_str()
            .expect("name")
            .to_lowercase()
            .starts_with("adele"),
        "{by_name}"
    );
    let upn = first["user_principal_name"]
        .as_str()
        .expect("upn")
        .to_owned();
    let by_upn = app
        .get_json(&format!("/v1/directory/users?search={upn}"), &t.viewer)
        .await;
    assert_eq!(by_upn["data"][0]["id"], first["id"], "{by_upn}");

    // Pages follow each other without repeats, as far as the search goes.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let path = match &cursor {
            Some(c) => format!("/v1/directory/users?search=a&limit=7&cursor={c}"),
            None => "/v1/directory/users?search=a&limit=7".to_owned(),
        };
        let page = app.get_json(&path, &t.viewer).await;
        let data = page["data"].as_array().expect("data");
        assert_eq!(data.len(), 7, "{page}");
        for u in data {
            let name = u["display_name"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            let upn = u["user_principal_name"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            assert!(name.starts_with('a') || upn.starts_with('a'), "{u}");
            assert!(
                seen.insert(u["id"].as_str().expect("id").to_owned()),
                "repeated {u}"
            );
        }
        cursor = Some(page["next_cursor"].as_str().expect("more pages").to_owned());
    }
    // Any text is a search, quotes and letters beyond ASCII too.
    for odd in [
        "%C3%A6Q%F1%BC%95%93%C3%84",
        "O%27Brien%20or%20x",
        "%27%27%27",
    ] {
        let page = app
            .get_json(&format!("/v1/directory/users?search={odd}"), &t.viewer)
            .await;
        assert_eq!(page["data"], json!([]), "{odd}: {page}");
    }
    for bad in ["limit=0", "limit=101", "cursor=%3Cscript%3E", "cursor=AAAA"] {
        let resp = app
            .get(&format!("/v1/directory/users?search=a&{bad}"), &t.viewer)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 400, "{bad}");
        // The same code as every other list's bad limit or cursor.
        let body: Value = resp.json().await.expect("problem");
        assert_eq!(body["code"], "invalid_query", "{bad}: {body}");
    }
    app.stop().await;
    emulator.shutdown().await;
}
