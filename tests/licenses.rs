//! Seat inventory and started licenses through HTTP and the CLI, on the embedded default and on
//! PostgreSQL + Redis: checkout that never oversells, bulk checkin, the "Used By" list, term
//! seats that start by themselves and become reusable, and the audit log.

mod common;

use std::time::{Duration, Instant};

use chrono::{Days, Months, NaiveDate, Utc};
use common::{Backend, TestApp, TestTenant, expect_problem, success_json};
use licensor::Roles;
use licensor_core::entities::{license, license_seat};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

/// Sweep every second, so a test sees the started-seats sweep without waiting for 03:00.
const SWEEP_EVERY_SECOND: &str = "[sweeps]\nstarted_seats = \"* * * * * *\"\n";

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Create a license: 201 with `Location` naming the new license's URL, which answers it.
async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let resp = app.post_response("/v1/licenses", token, &body).await;
    assert_eq!(resp.status(), 201);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a created license's answer names its URL");
    let created: Value = resp.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/licenses/{}", created["id"].as_str().unwrap())
    );
    assert_eq!(app.get_json(&location, token).await, created);
    created
}

async fn get_license(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_json(&format!("/v1/licenses/{id}"), token).await
}

fn checkout_request(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::RequestBuilder {
    app.post(&format!("/v1/licenses/{id}/checkout"), token)
        .json(&body)
        .timeout(Duration::from_secs(60))
}

/// Check out `body` from license `id`: the answer, whatever its status.
async fn checkout(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    checkout_request(app, token, id, body)
        .send()
        .await
        .expect("checkout")
}

fn to_user(user: &str) -> Value {
    json!({ "assignee": { "type": "user", "id": user } })
}

async fn used_by(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/licenses/{id}/assignments?limit=30&cursor={c}"),
            None => format!("/v1/licenses/{id}/assignments?limit=30"),
        };
        let page = app.get_json(&path, token).await;
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

async fn audit(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let page = app
        .get_json(&format!("/v1/audit?limit=500&{query}"), token)
        .await;
    page["data"].as_array().unwrap().clone()
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Acceptance 1: 50 concurrent checkouts for the last free seat → one 201, 49 × 409.
async fn concurrent_checkouts_never_oversell(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let l = create(&app, &t.admin, json!({ "name": "Office 2024", "seats": 5 })).await;
    let id = l["id"].as_str().unwrap().to_owned();
    assert_eq!(l["available"], 5);
    let mut first = to_user("alice");
    first["quantity"] = json!(4);
    let resp = checkout(&app, &t.admin, &id, first).await;
    assert_eq!(resp.status(), 201);

    let attempts = (0..50).map(|i| checkout(&app, &t.admin, &id, to_user(&format!("user-{i}"))));
    let answers = futures::future::join_all(attempts).await;
    let mut created = 0;
    let mut refused = 0;
    for resp in answers {
        match resp.status().as_u16() {
            201 => created += 1,
            409 => {
                let body = expect_problem(resp, 409, "out_of_stock").await;
                assert_eq!(body["available"], 0, "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", resp.text().await.unwrap()),
        }
    }
    assert_eq!((created, refused), (1, 49));
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (l["assigned"].as_i64(), l["available"].as_i64()),
        (Some(5), Some(0))
    );
    let holders = used_by(&app, &t.viewer, &id).await;
    assert_eq!(holders.len(), 2);
    let held: i64 = holders
        .iter()
        .map(|a| a["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(held, 5);
    // Out of stock: refused with nothing changed, also for a larger quantity.
    let mut two = to_user("bob");
    two["quantity"] = json!(2);
    let resp = checkout(&app, &t.admin, &id, two).await;
    expect_problem(resp, 409, "out_of_stock").await;
    let checkouts = audit(&app, &t.viewer, "action=license.checkout").await;
    assert_eq!(
        checkouts.len(),
        2,
        "only the two checkouts that happened are logged"
    );
    let last = &checkouts[0];
    assert_eq!(last["after"]["counts"]["available"], 0);
    assert_eq!(last["before"]["counts"]["available"], 1);
    assert_eq!(last["target_id"], id);
    assert!(last["actor_token_id"].is_string());
    app.stop().await;
}
on_both_backends!(concurrent_checkouts_never_oversell);

/// Acceptance 2: bulk checkin of 100 assignments; one unknown id changes nothing.
async fn bulk_checkin(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let l = create(&app, &t.admin, json!({ "name": "Adobe CC", "seats": 150 })).await;
    let id = l["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..100 {
        let mut body = json!({ "assignee": { "type": if i % 2 == 0 { "user" } else { "asset" }, "id": format!("a-{i}") }, "notes": "onboarding" });
        if i == 0 {
            body["quantity"] = json!(1);
        }
        let resp = checkout(&app, &t.admin, &id, body).await;
        let location = resp.headers().get("location").cloned();
        let a = success_json(resp).await;
        ids.push(a["id"].as_str().unwrap().to_owned());
        // A checkout's answer names the assignment's URL, which answers it.
        let location = location.expect("a checkout's answer names its URL");
        let location = location.to_str().unwrap();
        assert_eq!(
            location,
            format!("/v1/licenses/{id}/assignments/{}", ids[i])
        );
        if i < 2 {
            assert_eq!(app.get_json(location, &t.viewer).await, a);
        }
    }
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (l["assigned"].as_i64(), l["available"].as_i64()),
        (Some(100), Some(50))
    );

    // "Used By": every assignee with quantity, checkout time and notes, page by page.
    let holders = used_by(&app, &t.viewer, &id).await;
    assert_eq!(holders.len(), 100);
    let first = holders.iter().find(|a| a["id"] == ids[1].as_str()).unwrap();
    assert_eq!(first["assignee"], json!({ "type": "asset", "id": "a-1" }));
    assert_eq!(first["quantity"], 1);
    assert_eq!(first["notes"], "onboarding");
    assert!(first["checked_out_at"].is_string());
    assert!(first["ends_on"].is_null());

    // One unknown id: 404 and nothing checked in.
    let mut with_unknown: Vec<String> = ids[..99].to_vec();
    let stranger = Uuid::now_v7().to_string();
    with_unknown.push(stranger.clone());
    let resp = app
        .post_response(
            &format!("/v1/licenses/{id}/checkin"),
            &t.operator,
            &json!({ "assignment_ids": with_unknown, "notes": "leavers" }),
        )
        .await;
    let body = expect_problem(resp, 404, "not_found").await;
    assert_eq!(body["unknown_ids"], json!([stranger]));
    assert_eq!(
        body["detail"],
        format!(
            "1 of the assignments is not an assignment of this license ({stranger}); nothing was checked in"
        )
    );
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(l["available"], 50);
    assert_eq!(used_by(&app, &t.viewer, &id).await.len(), 100);

    // All 100 at once, by an operator.
    let out = app
        .post_json(
            &format!("/v1/licenses/{id}/checkin"),
            &t.operator,
            &json!({ "assignment_ids": ids, "notes": "leavers" }),
        )
        .await;
    assert_eq!(out["checked_in"].as_array().unwrap().len(), 100);
    assert_eq!(out["license"]["available"], 150);
    assert_eq!(out["license"]["assigned"], 0);
    assert_eq!(out["checked_in"][0]["checkin_notes"], "leavers");
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (l["assigned"].as_i64(), l["available"].as_i64()),
        (Some(0), Some(150))
    );
    assert!(used_by(&app, &t.viewer, &id).await.is_empty());
    // One assignment, checked in: it says when and why.
    let one = app
        .get_json(
            &format!("/v1/licenses/{id}/assignments/{}", ids[0]),
            &t.viewer,
        )
        .await;
    assert_eq!(one["checkin_notes"], "leavers", "{one}");
    assert!(one["checked_in_at"].is_string(), "{one}");
    // Not an assignment of that license (another license's, another tenant's, none): 404.
    let other = create(&app, &t.admin, json!({ "name": "Other", "seats": 1 })).await;
    let other_id = other["id"].as_str().unwrap();
    let stranger_tenant = app.tenant("globex").await;
    for (license, token) in [
        (other_id, &t.viewer),
        (id.as_str(), &stranger_tenant.viewer),
    ] {
        let resp = app
            .get(
                &format!("/v1/licenses/{license}/assignments/{}", ids[0]),
                token,
            )
            .send()
            .await
            .unwrap();
        expect_problem(resp, 404, "not_found").await;
    }
    let resp = app
        .get(
            &format!("/v1/licenses/{id}/assignments/{stranger}"),
            &t.viewer,
        )
        .send()
        .await
        .unwrap();
    expect_problem(resp, 404, "not_found").await;
    let history = app
        .get_json(
            &format!("/v1/licenses/{id}/assignments?state=checked_in&limit=500"),
            &t.viewer,
        )
        .await;
    assert_eq!(history["data"].as_array().unwrap().len(), 100);

    // Again: already checked in, nothing changes.
    let resp = app
        .post_response(
            &format!("/v1/licenses/{id}/checkin"),
            &t.operator,
            &json!({ "assignment_ids": [ids[0]] }),
        )
        .await;
    let problem = expect_problem(resp, 409, "already_checked_in").await;
    let first = ids[0].as_str();
    assert_eq!(
        problem["detail"],
        format!("1 of the assignments is checked in already ({first}); nothing was checked in"),
        "{problem}"
    );
    assert_eq!(problem["assignment_ids"], json!([first]), "{problem}");

    // A license that is not reassignable cannot be checked in.
    let fixed = create(
        &app,
        &t.admin,
        json!({ "name": "OEM Windows", "seats": 2, "reassignable": false }),
    )
    .await;
    let fixed_id = fixed["id"].as_str().unwrap();
    let a = success_json(checkout(&app, &t.admin, fixed_id, to_user("carol")).await).await;
    let resp = app
        .post_response(
            &format!("/v1/licenses/{fixed_id}/checkin"),
            &t.admin,
            &json!({ "assignment_ids": [a["id"]] }),
        )
        .await;
    expect_problem(resp, 409, "not_reassignable").await;
    assert_eq!(get_license(&app, &t.viewer, fixed_id).await["assigned"], 1);

    let checkins = audit(&app, &t.viewer, "action=license.checkin").await;
    assert_eq!(checkins.len(), 1);
    assert_eq!(checkins[0]["before"]["counts"]["available"], 50);
    assert_eq!(checkins[0]["after"]["counts"]["available"], 150);
    assert_eq!(
        checkins[0]["after"]["assignment_ids"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    app.stop().await;
}
on_both_backends!(bulk_checkin);

/// Move a license's delivery date back, as if time had passed since it was created.
async fn delivered_long_ago(app: &TestApp, id: &str, delivered_on: NaiveDate) {
    license::Entity::update_many()
        .col_expr(license::Column::DeliveredOn, Expr::value(delivered_on))
        .filter(license::Column::Id.eq(Uuid::parse_str(id).unwrap()))
        .exec(&app.db)
        .await
        .unwrap();
}

async fn wait_until(
    app: &TestApp,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = get_license(app, token, id).await;
        if done(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "{what}: {l}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn started(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_json(&format!("/v1/licenses/{id}/started"), token)
        .await
}

/// Acceptance 3: seats start 4 months after delivery (the sweep), end `term_days` later, become
/// reusable when checked in with time left, and are handed out again by end date.
async fn started_licenses(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, Roles::ALL, SWEEP_EVERY_SECOND).await else {
        return;
    };
    let t = app.tenant("school").await;
    let today = today();

    // Delivered a month ago: nothing starts yet.
    let recent = today.checked_sub_months(Months::new(1)).unwrap();
    let l = create(
        &app,
        &t.admin,
        json!({ "name": "Matematik 1c", "seats": 3, "term_days": 365, "delivered_on": recent }),
    )
    .await;
    let id = l["id"].as_str().unwrap().to_owned();
    assert_eq!(l["started_reusable"], 0);
    assert_eq!(
        l["auto_starts_on"],
        json!(recent.checked_add_months(Months::new(4)).unwrap())
    );

    // A first checkout starts one seat today; it ends 365 days later.
    let a = success_json(checkout(&app, &t.admin, &id, to_user("elev-1")).await).await;
    let own_end = today.checked_add_days(Days::new(365)).unwrap();
    assert_eq!(a["started_on"], json!(today));
    assert_eq!(a["ends_on"], json!(own_end));

    // Five months pass without the other two being assigned: the sweep starts them on the day
    // they were due, and they end 365 days after that.
    let delivered = today.checked_sub_months(Months::new(5)).unwrap();
    let due = delivered.checked_add_months(Months::new(4)).unwrap();
    let due_end = due.checked_add_days(Days::new(365)).unwrap();
    delivered_long_ago(&app, &id, delivered).await;
    let l = wait_until(&app, &t.viewer, &id, "the sweep starts due seats", |l| {
        l["started_reusable"] == 2
    })
    .await;
    assert_eq!(
        (l["assigned"].as_i64(), l["available"].as_i64()),
        (Some(1), Some(2))
    );
    let s = started(&app, &t.viewer, &id).await;
    assert_eq!(
        s["data"],
        json!([{ "ends_on": due_end, "count": 2, "days_left": (due_end - today).num_days() }])
    );
    let swept = audit(&app, &t.viewer, "action=license.seats_started").await;
    assert_eq!(swept.len(), 1, "the sweep is idempotent");
    assert!(swept[0]["actor_token_id"].is_null());
    assert_eq!(swept[0]["after"]["started"], 2);

    // Withdrawn with time left: the started seat becomes reusable.
    app.post_json(
        &format!("/v1/licenses/{id}/checkin"),
        &t.operator,
        &json!({ "assignment_ids": [a["id"]] }),
    )
    .await;
    let s = started(&app, &t.viewer, &id).await;
    assert_eq!(s["total"], 3);
    let groups: Vec<(Value, Value)> = s["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["ends_on"].clone(), g["count"].clone()))
        .collect();
    assert_eq!(
        groups,
        vec![(json!(due_end), json!(2)), (json!(own_end), json!(1))]
    );

    // "Återanvänd startad licens" by end date hands out exactly that seat.
    let mut reuse = to_user("elev-2");
    reuse["reuse_started"] = json!({ "ends_on": own_end });
    let b = success_json(checkout(&app, &t.admin, &id, reuse).await).await;
    assert_eq!(b["started_on"], json!(today));
    assert_eq!(b["ends_on"], json!(own_end));
    let s = started(&app, &t.viewer, &id).await;
    assert_eq!(
        s["data"],
        json!([{ "ends_on": due_end, "count": 2, "days_left": (due_end - today).num_days() }])
    );
    // None left with that date.
    let mut again = to_user("elev-3");
    again["reuse_started"] = json!({ "ends_on": own_end });
    let resp = checkout(&app, &t.admin, &id, again).await;
    let body = expect_problem(resp, 409, "no_started_seat").await;
    assert_eq!(body["available_ends_on"], json!([due_end]));
    let mut two = to_user("elev-4");
    two["reuse_started"] = json!({ "ends_on": due_end });
    two["quantity"] = json!(2);
    let c = success_json(checkout(&app, &t.admin, &id, two).await).await;
    assert_eq!(
        (c["started_on"].clone(), c["ends_on"].clone()),
        (json!(due), json!(due_end))
    );
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (
            l["assigned"].as_i64(),
            l["available"].as_i64(),
            l["started_reusable"].as_i64()
        ),
        (Some(3), Some(0), Some(0))
    );

    // A license without a term has no started seats to reuse.
    let plain = create(&app, &t.admin, json!({ "name": "Ordbok", "seats": 2 })).await;
    let plain_id = plain["id"].as_str().unwrap();
    let mut reuse = to_user("elev-5");
    reuse["reuse_started"] = json!({ "ends_on": today });
    let resp = checkout(&app, &t.admin, plain_id, reuse).await;
    expect_problem(resp, 409, "no_started_seat").await;
    assert_eq!(started(&app, &t.viewer, plain_id).await["data"], json!([]));

    // Seats past their end date end: they leave their holder and the reusable pool.
    license_seat::Entity::update_many()
        .col_expr(
            license_seat::Column::EndsOn,
            Expr::value(today.checked_sub_days(Days::new(1)).unwrap()),
        )
        .filter(license_seat::Column::LicenseId.eq(Uuid::parse_str(&id).unwrap()))
        .filter(license_seat::Column::EndsOn.eq(due_end))
        .exec(&app.db)
        .await
        .unwrap();
    let l = wait_until(&app, &t.viewer, &id, "the sweep ends seats", |l| {
        l["ended"] == 2
    })
    .await;
    assert_eq!(
        (
            l["assigned"].as_i64(),
            l["available"].as_i64(),
            l["seats"].as_i64()
        ),
        (Some(1), Some(0), Some(3))
    );
    let holders = used_by(&app, &t.viewer, &id).await;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0]["id"], b["id"]);
    let ended = app
        .get_json(
            &format!("/v1/licenses/{id}/assignments?state=checked_in"),
            &t.viewer,
        )
        .await;
    let c_now = ended["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == c["id"])
        .unwrap()
        .clone();
    assert_eq!(c_now["checkin_notes"], "term ended");
    assert_eq!(
        actions(&audit(&app, &t.viewer, "action=license.seats_ended").await).len(),
        1
    );

    // Delivered two years ago with a 30-day term: started and ended on creation.
    let old = create(
        &app,
        &t.admin,
        json!({ "name": "Gammal", "seats": 2, "term_days": 30, "delivered_on": today.checked_sub_months(Months::new(24)).unwrap() }),
    )
    .await;
    assert_eq!(
        (old["ended"].as_i64(), old["available"].as_i64()),
        (Some(2), Some(0))
    );
    let resp = checkout(
        &app,
        &t.admin,
        old["id"].as_str().unwrap(),
        to_user("elev-6"),
    )
    .await;
    expect_problem(resp, 409, "out_of_stock").await;
    app.stop().await;
}
on_both_backends!(started_licenses);

/// Start-up catch-up: a worker that was down when seats became due starts them when it starts.
async fn sweep_catches_up_at_start(backend: Backend) {
    // The API alone: no worker runs while the seats come due (one started with the API would
    // sweep at its own start, racing the set-up below).
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("school").await;
    let today = today();
    let l = create(
        &app,
        &t.admin,
        json!({ "name": "Svenska 1", "seats": 4, "term_days": 200, "delivered_on": today }),
    )
    .await;
    let id = l["id"].as_str().unwrap().to_owned();
    let delivered = today.checked_sub_months(Months::new(6)).unwrap();
    delivered_long_ago(&app, &id, delivered).await;
    // No worker is running: nothing started yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_license(&app, &t.viewer, &id).await["started_reusable"],
        0
    );

    // A worker starting on the same data catches up at once.
    let settings = app.data.settings("");
    let worker = licensor::Application::build(settings, Roles::WORKER)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let l = wait_until(&app, &t.viewer, &id, "the start-up sweep", |l| {
        l["started_reusable"] == 4
    })
    .await;
    assert_eq!(l["available"], 4);
    let due_end = delivered
        .checked_add_months(Months::new(4))
        .unwrap()
        .checked_add_days(Days::new(200))
        .unwrap();
    assert_eq!(
        started(&app, &t.viewer, &id).await["data"][0]["ends_on"],
        json!(due_end)
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    app.stop().await;
}
on_both_backends!(sweep_catches_up_at_start);

/// Acceptance 4 and roles: every change is in the tenant's own audit log; another tenant sees
/// nothing and gets 404s.
async fn audit_roles_and_isolation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let l = create(
        &app,
        &a.admin,
        json!({ "name": "Visio", "seats": 3, "notes": "PO 4711" }),
    )
    .await;
    let id = l["id"].as_str().unwrap().to_owned();
    assert_eq!(l["notes"], "PO 4711");
    assert_eq!(l["reassignable"], true);

    // Roles: viewer reads only; operator reads and checks in; admin everything.
    for token in [&a.viewer, &a.operator] {
        let resp = app
            .post_response("/v1/licenses", token, &json!({ "name": "x", "seats": 1 }))
            .await;
        expect_problem(resp, 403, "forbidden").await;
        let resp = checkout(&app, token, &id, to_user("u")).await;
        expect_problem(resp, 403, "forbidden").await;
        let resp = app
            .patch_response(&format!("/v1/licenses/{id}"), token, &json!({ "seats": 9 }))
            .await;
        expect_problem(resp, 403, "forbidden").await;
        assert_eq!(get_license(&app, token, &id).await["seats"], 3);
    }
    let x = success_json(checkout(&app, &a.admin, &id, to_user("u1")).await).await;
    let resp = app
        .post_response(
            &format!("/v1/licenses/{id}/checkin"),
            &a.viewer,
            &json!({ "assignment_ids": [x["id"]] }),
        )
        .await;
    expect_problem(resp, 403, "forbidden").await;

    // Update: name, seats, notes; never below what is checked out.
    let license_path = format!("/v1/licenses/{id}");
    let patch =
        async |token: &str, body: Value| app.patch_response(&license_path, token, &body).await;
    let mut more = to_user("u2");
    more["quantity"] = json!(2);
    success_json(checkout(&app, &a.admin, &id, more).await).await;
    let resp = patch(&a.admin, json!({ "seats": 2 })).await;
    let body = expect_problem(resp, 409, "seats_below_assigned").await;
    assert_eq!(body["assigned"], 3);
    let resp = patch(&a.admin, json!({ "term_days": 365 })).await;
    expect_problem(resp, 409, "term_in_use").await;
    let u = success_json(
        patch(
            &a.admin,
            json!({ "seats": 10, "name": "Visio Pro", "notes": null }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (u["seats"].as_i64(), u["available"].as_i64()),
        (Some(10), Some(7))
    );
    assert_eq!(u["name"], "Visio Pro");
    assert!(u["notes"].is_null());
    app.post_json(
        &format!("/v1/licenses/{id}/checkin"),
        &a.operator,
        &json!({ "assignment_ids": [x["id"]], "notes": "returned" }),
    )
    .await;

    // Every change is logged, newest first, with the actor and before/after counts.
    let log = audit(&app, &a.viewer, "target_type=license").await;
    assert_eq!(
        actions(&log),
        [
            "license.checkin",
            "license.update",
            "license.checkout",
            "license.checkout",
            "license.create"
        ]
    );
    assert_eq!(log[1]["before"]["counts"]["seats"], 3);
    assert_eq!(log[1]["after"]["counts"]["seats"], 10);
    assert_eq!(log[1]["after"]["name"], "Visio Pro");
    assert!(log.iter().all(|e| e["target_id"] == id.as_str()));
    let operator_id = log[0]["actor_token_id"].as_str().unwrap();
    assert_eq!(
        audit(&app, &a.viewer, &format!("actor_token_id={operator_id}"))
            .await
            .len(),
        1
    );

    // Tenant B: 404 everywhere, nothing listed, nothing in its audit log.
    for token in [&b.admin, &b.operator, &b.viewer] {
        expect_problem(
            app.get_response(&format!("/v1/licenses/{id}"), token).await,
            404,
            "not_found",
        )
        .await;
        expect_problem(
            app.get_response(&format!("/v1/licenses/{id}/assignments"), token)
                .await,
            404,
            "not_found",
        )
        .await;
        expect_problem(
            app.get_response(&format!("/v1/licenses/{id}/started"), token)
                .await,
            404,
            "not_found",
        )
        .await;
        let list = app.get_json("/v1/licenses", token).await;
        assert_eq!(list["data"], json!([]));
    }
    expect_problem(
        checkout(&app, &b.admin, &id, to_user("spy")).await,
        404,
        "not_found",
    )
    .await;
    let resp = app
        .post_response(
            &format!("/v1/licenses/{id}/checkin"),
            &b.admin,
            &json!({ "assignment_ids": [x["id"]] }),
        )
        .await;
    expect_problem(resp, 404, "not_found").await;
    let resp = app
        .patch_response(
            &format!("/v1/licenses/{id}"),
            &b.admin,
            &json!({ "seats": 1 }),
        )
        .await;
    expect_problem(resp, 404, "not_found").await;
    let b_log = audit(&app, &b.admin, "").await;
    assert!(
        b_log.iter().all(|e| e["target_type"] != "license"),
        "{b_log:?}"
    );
    assert_eq!(get_license(&app, &a.viewer, &id).await["seats"], 10);
    app.stop().await;
}
on_both_backends!(audit_roles_and_isolation);

async fn bad_input_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let l = create(&app, &t.admin, json!({ "name": "Slack", "seats": 2 })).await;
    let id = l["id"].as_str().unwrap().to_owned();
    let post = async |path: String, body: &'static str| app.post_raw(&path, &t.admin, body).await;
    let create_cases = [
        (r#"{"name": "x", "seats": 0}"#, 422, "invalid_seats"),
        (r#"{"name": "x", "seats": 2000000}"#, 422, "invalid_seats"),
        (
            r#"{"name": "x", "seats": 200000, "term_days": 30}"#,
            422,
            "invalid_seats",
        ),
        (r#"{"name": "  ", "seats": 1}"#, 422, "invalid_name"),
        (
            r#"{"name": "x", "seats": 1, "term_days": 0}"#,
            422,
            "invalid_term_days",
        ),
        (
            r#"{"name": "x", "seats": 1, "delivered_on": "2026-13-01"}"#,
            422,
            "invalid_body",
        ),
        (
            r#"{"name": "x", "seats": 1, "delivered_on": "1066-10-14"}"#,
            422,
            "invalid_delivered_on",
        ),
        (
            r#"{"name": "x", "seats": 1, "colour": "blue"}"#,
            422,
            "invalid_body",
        ),
        (r#"{"name": "x", "seats": "many"}"#, 422, "invalid_body"),
        (r#"{"name": "x""#, 400, "malformed_json"),
    ];
    for (body, status, code) in create_cases {
        expect_problem(post("/v1/licenses".into(), body).await, status, code).await;
    }
    let checkout_path = format!("/v1/licenses/{id}/checkout");
    let checkout_cases = [
        (
            r#"{"assignee": {"type": "user", "id": "u"}, "quantity": 0}"#,
            422,
            "invalid_quantity",
        ),
        (
            r#"{"assignee": {"type": "user", "id": "u"}, "quantity": -3}"#,
            422,
            "invalid_quantity",
        ),
        (
            r#"{"assignee": {"type": "robot", "id": "u"}}"#,
            422,
            "invalid_body",
        ),
        (
            r#"{"assignee": {"type": "user", "id": " "}}"#,
            422,
            "invalid_assignee",
        ),
        (r#"{"assignee": {"type": "user"}}"#, 422, "invalid_body"),
        (
            r#"{"assignee": {"type": "user", "id": "u"}, "reuse_started": {"ends_on": "soon"}}"#,
            422,
            "invalid_body",
        ),
        (
            r#"{"assignee": {"type": "user", "id": "u"}, "quantity": 3}"#,
            409,
            "out_of_stock",
        ),
    ];
    for (body, status, code) in checkout_cases {
        expect_problem(post(checkout_path.clone(), body).await, status, code).await;
    }
    let checkin_path = format!("/v1/licenses/{id}/checkin");
    let checkin_cases = [
        (r#"{"assignment_ids": []}"#, 422, "invalid_assignment_ids"),
        (r#"{"assignment_ids": ["nope"]}"#, 422, "invalid_body"),
        (
            r#"{"assignment_ids": ["0190a0a0-0000-7000-8000-000000000001", "0190a0a0-0000-7000-8000-000000000001"]}"#,
            422,
            "invalid_assignment_ids",
        ),
        (
            r#"{"assignment_ids": ["0190a0a0-0000-7000-8000-000000000001"]}"#,
            404,
            "not_found",
        ),
    ];
    for (body, status, code) in checkin_cases {
        expect_problem(post(checkin_path.clone(), body).await, status, code).await;
    }
    for (path, status, code) in [
        ("/v1/licenses/not-a-uuid".to_owned(), 404, "not_found"),
        (format!("/v1/licenses/{}", Uuid::now_v7()), 404, "not_found"),
        ("/v1/licenses?limit=0".to_owned(), 400, "invalid_query"),
        (
            format!("/v1/licenses/{id}/assignments?state=lost"),
            400,
            "invalid_query",
        ),
    ] {
        expect_problem(app.get_response(&path, &t.admin).await, status, code).await;
    }
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (l["assigned"].as_i64(), l["available"].as_i64()),
        (Some(0), Some(2))
    );
    let log = audit(&app, &t.viewer, "target_type=license").await;
    assert_eq!(actions(&log), ["license.create"]);

    // Every route is documented.
    let doc = app.get_anonymous_json("/openapi.json").await;
    for (path, method) in [
        ("/v1/licenses", "get"),
        ("/v1/licenses", "post"),
        ("/v1/licenses/{id}", "get"),
        ("/v1/licenses/{id}", "patch"),
        ("/v1/licenses/{id}/checkout", "post"),
        ("/v1/licenses/{id}/checkin", "post"),
        ("/v1/licenses/{id}/assignments", "get"),
        ("/v1/licenses/{id}/assignments/{assignment_id}", "get"),
        ("/v1/licenses/{id}/started", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
    app.stop().await;
}
on_both_backends!(bad_input_changes_nothing);

fn licensor_cli(app: &TestApp, t: &TestTenant) -> std::process::Command {
    app.cli(&t.admin)
}

async fn run_cli(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run licensor"))
        .await
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn licenses_from_the_command_line() {
    let Some(app) = TestApp::start(Backend::Embedded).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let mut create = licensor_cli(&app, &t);
    create.args([
        "licenses",
        "create",
        "--name",
        "Office 2024",
        "--seats",
        "2",
        "--json",
    ]);
    let created: Value = serde_json::from_str(&stdout(&run_cli(create).await)).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["available"], 2);
    // Without --json: the id alone on stdout, for scripts; what was made on stderr. So for a
    // checkout: the assignment's id, which `checkin` takes. (Another tenant's, so this
    // tenant's lists below hold one license.)
    let other_tenant = app.tenant("plain").await;
    let mut plain = licensor_cli(&app, &other_tenant);
    plain.args(["licenses", "create", "--name", "Visio", "--seats", "3"]);
    let out = run_cli(plain).await;
    let other = stdout(&out).trim().to_owned();
    uuid::Uuid::try_parse(&other).unwrap_or_else(|_| panic!("only the id on stdout: {other:?}"));
    let told = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        told.contains("license created: Visio, 3 seat(s), 3 available"),
        "{told}"
    );
    let mut plain = licensor_cli(&app, &other_tenant);
    plain.args(["licenses", "checkout", &other, "--asset", "laptop-1"]);
    let out = run_cli(plain).await;
    let assignment = stdout(&out).trim().to_owned();
    uuid::Uuid::try_parse(&assignment)
        .unwrap_or_else(|_| panic!("only the assignment's id on stdout: {assignment:?}"));
    let told = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        told.contains("checked out 1 seat(s) to asset laptop-1"),
        "{told}"
    );
    let mut checkin = licensor_cli(&app, &other_tenant);
    checkin.args(["licenses", "checkin", &other, &assignment]);
    assert!(
        stdout(&run_cli(checkin).await).contains("3 of 3 seats available"),
        "the printed id is the one checkin takes"
    );

    let mut checkout = licensor_cli(&app, &t);
    checkout.args([
        "licenses",
        "checkout",
        &id,
        "--user",
        "alice",
        "--quantity",
        "2",
        "--notes",
        "new hire",
        "--json",
    ]);
    let a: Value = serde_json::from_str(&stdout(&run_cli(checkout).await)).unwrap();
    assert_eq!(a["quantity"], 2);
    assert_eq!(a["notes"], "new hire");

    // No holder given: the usage error names both ways to give one, and nothing is checked out.
    let mut no_holder = licensor_cli(&app, &t);
    no_holder.args(["licenses", "checkout", &id]);
    let out = run_cli(no_holder).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--user") && err.contains("--asset"), "{err}");

    // Out of stock: one line with the problem's code, non-zero exit.
    let mut refused = licensor_cli(&app, &t);
    refused.args(["licenses", "checkout", &id, "--asset", "laptop-7"]);
    let out = run_cli(refused).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: out_of_stock:"), "{err}");

    // Values typed wrong: one line naming what is wrong as typed — a negative number is a
    // value, not a flag; a day that does not exist and an id that is not one are refused before
    // anything is sent (not by the server's JSON reader, at a position the user never typed) —
    // and nothing is made (the list below holds one license).
    for (args, says) in [
        (
            vec!["licenses", "create", "--name", "x", "--seats", "-3"],
            "seats must be between 1 and",
        ),
        (
            vec![
                "licenses",
                "checkout",
                &id,
                "--asset",
                "a",
                "--quantity",
                "-1",
            ],
            "quantity must be between 1 and",
        ),
        (
            vec![
                "licenses",
                "create",
                "--name",
                "x",
                "--seats",
                "2",
                "--delivered-on",
                "2026-13-01",
            ],
            "--delivered-on",
        ),
        (
            vec![
                "licenses",
                "checkout",
                &id,
                "--asset",
                "a",
                "--reuse-started",
                "tomorrow",
            ],
            "--reuse-started",
        ),
        (vec!["licenses", "checkin", &id, "nope"], "'nope'"),
    ] {
        let mut cmd = licensor_cli(&app, &t);
        cmd.args(&args);
        let out = run_cli(cmd).await;
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("column"), "{args:?}: {err}");
    }

    let mut list = licensor_cli(&app, &t);
    list.args(["licenses", "list"]);
    let table = stdout(&run_cli(list).await);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    let row = lines.next().unwrap();
    assert!(row.contains(&id) && row.contains("Office 2024"), "{table}");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[3..7], ["2", "2", "0", "0"], "{table}");

    // "Used By" names the assignment `checkin` takes.
    let used_by = |state: Option<&'static str>| {
        let mut cmd = licensor_cli(&app, &t);
        cmd.args(["licenses", "used-by", &id]);
        if let Some(state) = state {
            cmd.args(["--state", state]);
        }
        cmd
    };
    let table = stdout(&run_cli(used_by(None)).await);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ASSIGNMENT") && !lines[0].contains("CHECKED IN"),
        "{table}"
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..3],
        [a["id"].as_str().unwrap(), "user", "alice"],
        "{table}"
    );
    assert_eq!(cells[4], "2", "{table}");
    let assignment = cells[0].to_owned();

    let mut checkin = licensor_cli(&app, &t);
    checkin.args(["licenses", "checkin", &id, &assignment, "--notes", "left"]);
    let line = stdout(&run_cli(checkin).await);
    assert!(
        line.contains("checked in 1 assignment(s); 2 of 2 seats available"),
        "{line}"
    );

    let mut list = licensor_cli(&app, &t);
    list.args(["licenses", "list", "--json"]);
    let all: Value = serde_json::from_str(&stdout(&run_cli(list).await)).unwrap();
    assert_eq!(all[0]["available"], 2);
    // Checked in: gone from "Used By", in the history with the day it came back.
    let table = stdout(&run_cli(used_by(None)).await);
    assert_eq!(table.lines().count(), 1, "only the header: {table}");
    let table = stdout(&run_cli(used_by(Some("checked-in"))).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("CHECKED IN"), "{table}");
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        lines[1].starts_with(&assignment) && lines[1].ends_with(&today),
        "{table}"
    );
    let mut history = used_by(Some("all"));
    history.arg("--json");
    let listed: Value = serde_json::from_str(&stdout(&run_cli(history).await)).unwrap();
    assert_eq!(listed[0]["checkin_notes"], "left", "{listed}");

    // No token anywhere: one line naming what is missing.
    let mut anonymous = licensor_cli(&app, &t);
    anonymous
        .env_remove("LICENSOR_TOKEN")
        .args(["licenses", "list"]);
    let out = run_cli(anonymous).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LICENSOR_TOKEN"));
    // A viewer's token: forbidden, as one line.
    let mut viewer = licensor_cli(&app, &t);
    viewer.args([
        "licenses", "create", "--name", "x", "--seats", "1", "--token", &t.viewer,
    ]);
    let out = run_cli(viewer).await;
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: forbidden:"));
    app.stop().await;
}

/// Seat changes on term licenses: new seats first, reusable started seats when none is left,
/// fewer seats removes free ones, and the term can only be added or removed while unused.
async fn term_seat_changes(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("school").await;
    let today = today();
    let ends = json!(today.checked_add_days(Days::new(100)).unwrap());
    let l = create(
        &app,
        &t.admin,
        json!({ "name": "Engelska 5", "seats": 3, "term_days": 100, "delivered_on": today }),
    )
    .await;
    let id = l["id"].as_str().unwrap().to_owned();
    let mut three = to_user("klass-7a");
    three["quantity"] = json!(3);
    let a = success_json(checkout(&app, &t.admin, &id, three).await).await;
    assert_eq!(a["ends_on"], ends);
    let license_path = format!("/v1/licenses/{id}");
    let patch = async |body: Value| app.patch_response(&license_path, &t.admin, &body).await;
    // Checked in with time left: all three started seats become reusable.
    app.post_json(
        &format!("/v1/licenses/{id}/checkin"),
        &t.operator,
        &json!({ "assignment_ids": [a["id"]] }),
    )
    .await;
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (l["available"].as_i64(), l["started_reusable"].as_i64()),
        (Some(3), Some(3))
    );
    let mut two = to_user("klass-7b");
    two["quantity"] = json!(2);
    // No new seats left: a plain checkout hands out reusable started seats.
    let b = success_json(checkout(&app, &t.admin, &id, two).await).await;
    assert_eq!(
        (b["started_on"].clone(), b["ends_on"].clone()),
        (json!(today), ends.clone())
    );
    let l = get_license(&app, &t.viewer, &id).await;
    assert_eq!(
        (
            l["assigned"].as_i64(),
            l["available"].as_i64(),
            l["started_reusable"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );

    // More seats: new, unstarted ones.
    let l = success_json(patch(json!({ "seats": 5 })).await).await;
    assert_eq!(
        (l["available"].as_i64(), l["started_reusable"].as_i64()),
        (Some(3), Some(1))
    );
    // Fewer seats: never below what is checked out; free seats go, new ones first.
    expect_problem(
        patch(json!({ "seats": 1 })).await,
        409,
        "seats_below_assigned",
    )
    .await;
    let l = success_json(patch(json!({ "seats": 3 })).await).await;
    assert_eq!(
        (l["available"].as_i64(), l["started_reusable"].as_i64()),
        (Some(1), Some(1))
    );
    let l = success_json(patch(json!({ "seats": 2 })).await).await;
    assert_eq!(
        (l["available"].as_i64(), l["started_reusable"].as_i64()),
        (Some(0), Some(0))
    );
    expect_problem(
        patch(json!({ "term_days": null })).await,
        409,
        "term_in_use",
    )
    .await;

    // The term added to an unused license, and removed again while nothing started.
    let plain = create(&app, &t.admin, json!({ "name": "Tyska 1", "seats": 2 })).await;
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    let plain_path = format!("/v1/licenses/{plain_id}");
    let patch_plain = async |body: Value| app.patch_response(&plain_path, &t.admin, &body).await;
    let l = success_json(patch_plain(json!({ "term_days": 30 })).await).await;
    assert_eq!(
        (l["term_days"].as_i64(), l["available"].as_i64()),
        (Some(30), Some(2))
    );
    let l = success_json(patch_plain(json!({ "term_days": null })).await).await;
    assert!(l["term_days"].is_null());
    success_json(patch_plain(json!({ "term_days": 30 })).await).await;
    let c = success_json(checkout(&app, &t.admin, &plain_id, to_user("elev")).await).await;
    assert_eq!(
        c["ends_on"],
        json!(today.checked_add_days(Days::new(30)).unwrap())
    );
    app.post_json(
        &format!("/v1/licenses/{plain_id}/checkin"),
        &t.operator,
        &json!({ "assignment_ids": [c["id"]] }),
    )
    .await;
    // A seat has started: the term stays.
    expect_problem(
        patch_plain(json!({ "term_days": null })).await,
        409,
        "term_in_use",
    )
    .await;
    // An empty change changes nothing and logs nothing.
    success_json(patch_plain(json!({})).await).await;
    let log = audit(&app, &t.viewer, &format!("target_id={plain_id}")).await;
    assert_eq!(
        actions(&log),
        [
            "license.checkin",
            "license.checkout",
            "license.update",
            "license.update",
            "license.update",
            "license.create"
        ]
    );
    app.stop().await;
}
on_both_backends!(term_seat_changes);

/// `Idempotency-Key`: a repeated checkout returns the first answer and takes no second seat.
async fn idempotent_checkout(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let l = create(&app, &t.admin, json!({ "name": "Zoom", "seats": 2 })).await;
    let id = l["id"].as_str().unwrap().to_owned();
    let send = |token: &str, key: &str, body: Value| {
        checkout_request(&app, token, &id, body)
            .header("idempotency-key", key)
            .send()
    };
    let first = send(&t.admin, "order-1", to_user("alice")).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(&t.admin, "order-1", to_user("alice")).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(get_license(&app, &t.viewer, &id).await["assigned"], 1);
    // Same key, another request.
    let reused = send(&t.admin, "order-1", to_user("bob")).await.unwrap();
    expect_problem(reused, 422, "idempotency_key_reused").await;
    // A refusal is an answer too: replayed, not re-run.
    let mut many = to_user("carol");
    many["quantity"] = json!(5);
    expect_problem(
        send(&t.admin, "order-2", many.clone()).await.unwrap(),
        409,
        "out_of_stock",
    )
    .await;
    let replayed = send(&t.admin, "order-2", many).await.unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    expect_problem(replayed, 409, "out_of_stock").await;
    // Keys are the tenant's own: another tenant's identical key is a new request (here a 404).
    expect_problem(
        send(&other.admin, "order-1", to_user("alice"))
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    // A malformed key is refused before anything happens.
    expect_problem(
        send(&t.admin, "", to_user("dave")).await.unwrap(),
        400,
        "invalid_idempotency_key",
    )
    .await;
    assert_eq!(used_by(&app, &t.viewer, &id).await.len(), 1);
    assert_eq!(
        audit(&app, &t.viewer, "action=license.checkout")
            .await
            .len(),
        1
    );
    app.stop().await;
}
on_both_backends!(idempotent_checkout);

/// A cursor belongs to the list it was issued for: the licenses list's next page reads on with
/// it, and another list — the audit log, one license's "Used By", another license's — refuses it
/// with 400 `invalid_query` rather than read it as a position of its own.
async fn a_cursor_is_refused_by_another_list(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("cursors").await;
    let first = create(&app, &t.admin, json!({ "name": "First", "seats": 3 })).await;
    let second = create(&app, &t.admin, json!({ "name": "Second", "seats": 3 })).await;
    for license in [&first, &second] {
        let id = license["id"].as_str().unwrap();
        for user in ["ann", "bo"] {
            success_json(checkout(&app, &t.admin, id, to_user(user)).await).await;
        }
    }
    let page = app.get_json("/v1/licenses?limit=1", &t.viewer).await;
    assert_eq!(page["data"][0]["name"], "Second", "newest first: {page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get_json(&format!("/v1/licenses?limit=1&cursor={cursor}"), &t.viewer)
        .await;
    assert_eq!(next["data"][0]["name"], "First", "{next}");

    let (a, b) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let used_by = app
        .get_json(&format!("/v1/licenses/{a}/assignments?limit=1"), &t.viewer)
        .await;
    let used_by_cursor = used_by["next_cursor"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/audit?cursor={cursor}"),
        format!("/v1/licenses/{a}/assignments?cursor={cursor}"),
        format!("/v1/jobs?cursor={cursor}"),
        format!("/v1/licenses/{b}/assignments?cursor={used_by_cursor}"),
        format!("/v1/licenses?cursor={used_by_cursor}"),
    ] {
        let resp = app.get(&path, &t.viewer).send().await.unwrap();
        expect_problem(resp, 400, "invalid_query").await;
    }
    let rest = app
        .get_json(
            &format!("/v1/licenses/{a}/assignments?cursor={used_by_cursor}"),
            &t.viewer,
        )
        .await;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1), "{rest}");
    // "Used By" with its `state` filter: the cursor reads on with the same state only.
    let used = format!("/v1/licenses/{a}/assignments");
    let all = app
        .get_json(&format!("{used}?state=all&limit=1"), &t.viewer)
        .await;
    let cursor = all["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!("{used}?state=all&cursor={cursor}"), &t.viewer)
        .await;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1), "{rest}");
    for other in ["state=checked_in&", ""] {
        let path = format!("{used}?{other}cursor={cursor}");
        let refusal = common::other_filters("state");
        app.expect_cursor_refused(&path, &t.viewer, &refusal).await;
    }
    app.stop().await;
}
on_both_backends!(a_cursor_is_refused_by_another_list);
