//! Tenant isolation, table-driven: tenant A owns a job (run through the API against the directory
//! emulator), a license with a checkout, and tokens; tenant B's admin calls every tenant-scoped
//! route on A's objects and gets 404 each time (the bulk rerun reports A's job `not_found`), sees
//! none of them in its lists and audit log, and A's objects are exactly as they were.

mod common;

use common::{Backend, TestApp, TestTenant, expect_problem};
use graph_emulator::{ENTERPRISEPACK_SKU_ID, EmulatorConfig, Scenario};
use reqwest::Method;
use serde_json::{Value, json};

/// What tenant A can see of its objects.
async fn view_of_a(app: &TestApp, a: &TestTenant, job: &str, license: &str) -> Value {
    let mut view = json!({});
    for path in [
        format!("/v1/jobs/{job}"),
        format!("/v1/jobs/{job}/runs"),
        format!("/v1/jobs/{job}/errors"),
        format!("/v1/jobs/{job}/items?limit=500"),
        format!("/v1/jobs/{job}/report?format=json"),
        format!("/v1/licenses/{license}"),
        format!("/v1/licenses/{license}/assignments?state=all"),
        format!("/v1/licenses/{license}/started"),
        "/v1/jobs".to_owned(),
        "/v1/licenses".to_owned(),
        "/v1/audit?limit=500".to_owned(),
        "/v1/tokens".to_owned(),
    ] {
        let mut body = app.get_json(&path, &a.admin).await;
        if path == "/v1/tokens" {
            // A's own reads mark its admin token used; that is not a change made by B.
            for token in body["data"].as_array_mut().unwrap() {
                token.as_object_mut().unwrap().remove("last_used_at");
            }
        }
        view[path] = body;
    }
    view
}

async fn tenant_b_reaches_nothing_of_tenant_a(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    app.connect_directory(a.id, &emulator).await;
    app.connect_directory(b.id, &emulator).await;

    // A's job: ENTERPRISEPACK for Sales without a usage location, so members without one fail
    // and the job ends `finished_with_exception` — rerunnable by A.
    let sales = app.group_id(&a.admin, "Sales").await;
    let submitted = app
        .post("/v1/jobs", &a.admin)
        .json(&json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let job = job["id"].as_str().unwrap().to_owned();
    let done = app.wait_for_job(&a.admin, &job, 120).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    app.assert_outcomes_true(&a.viewer, &job, &emulator.base_url())
        .await;

    // A's license with a checkout of a started seat.
    let license = app
        .post_json(
            "/v1/licenses",
            &a.admin,
            &json!({"name": "A's CAD seats", "seats": 10, "term_days": 365}),
        )
        .await;
    let license = license["id"].as_str().unwrap().to_owned();
    let assignment = app
        .post_json(
            &format!("/v1/licenses/{license}/checkout"),
            &a.admin,
            &json!({"assignee": {"type": "user", "id": "ada@a.example"}, "quantity": 2}),
        )
        .await;
    let assignment = assignment["id"].as_str().unwrap().to_owned();
    // A's token (its viewer).
    let tokens = app.get_json("/v1/tokens", &a.admin).await;
    let a_viewer = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // B's own license, to try A's assignment through it.
    let b_license = app
        .post_json(
            "/v1/licenses",
            &b.admin,
            &json!({"name": "B's seats", "seats": 3}),
        )
        .await;
    let b_license = b_license["id"].as_str().unwrap().to_owned();

    let before = view_of_a(&app, &a, &job, &license).await;

    let checkout = json!({"assignee": {"type": "user", "id": "mallory"}});
    let checkin = json!({"assignment_ids": [assignment]});
    let table: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/jobs/{job}"), None),
        (Method::GET, format!("/v1/jobs/{job}/items"), None),
        (
            Method::GET,
            format!("/v1/jobs/{job}/items?status=failed"),
            None,
        ),
        (Method::GET, format!("/v1/jobs/{job}/runs"), None),
        (Method::GET, format!("/v1/jobs/{job}/errors"), None),
        (Method::GET, format!("/v1/jobs/{job}/report"), None),
        (
            Method::GET,
            format!("/v1/jobs/{job}/report?format=json"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/jobs/{job}/report?format=xlsx"),
            None,
        ),
        (Method::GET, format!("/v1/jobs/{job}/export"), None),
        (Method::POST, format!("/v1/jobs/{job}/rerun"), None),
        (Method::POST, format!("/v1/jobs/{job}/cancel"), None),
        (Method::GET, format!("/v1/licenses/{license}"), None),
        (
            Method::PATCH,
            format!("/v1/licenses/{license}"),
            Some(json!({"seats": 1, "notes": "mine now"})),
        ),
        (
            Method::POST,
            format!("/v1/licenses/{license}/checkout"),
            Some(checkout.clone()),
        ),
        (
            Method::POST,
            format!("/v1/licenses/{license}/checkin"),
            Some(checkin.clone()),
        ),
        // A's assignment through B's own license.
        (
            Method::POST,
            format!("/v1/licenses/{b_license}/checkin"),
            Some(checkin.clone()),
        ),
        (
            Method::GET,
            format!("/v1/licenses/{license}/assignments"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/licenses/{license}/assignments?state=all"),
            None,
        ),
        (Method::GET, format!("/v1/licenses/{license}/started"), None),
        (Method::POST, format!("/v1/tokens/{a_viewer}/revoke"), None),
    ];
    for (method, path, body) in &table {
        for token in [&b.admin, &b.operator, &b.viewer] {
            // Writes only with B's admin, who could make them on B's own objects.
            if *method != Method::GET && token != &b.admin {
                continue;
            }
            let mut req = app
                .http
                .request(method.clone(), format!("{}{path}", app.url))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req.json(body);
            }
            // The same with an Idempotency-Key: no replay of anything of A's either.
            if *method == Method::POST {
                req = req.header("idempotency-key", format!("b-{path}"));
            }
            let resp = req.send().await.unwrap();
            let problem = expect_problem(resp, 404, "not_found").await;
            let text = problem.to_string();
            assert!(
                !text.contains("tenant-a") && !text.contains("ada@a.example"),
                "{method} {path}: {text}"
            );
        }
    }

    // The monitor's bulk rerun with A's job: A's id reported as not found, nothing rerun.
    let bulk = app
        .post_json("/v1/jobs/rerun", &b.admin, &json!({"job_ids": [job]}))
        .await;
    assert_eq!(bulk["rerun"], json!([]), "{bulk}");
    assert_eq!(bulk["rejected"][0]["job_id"], job, "{bulk}");
    assert_eq!(bulk["rejected"][0]["code"], "not_found", "{bulk}");

    // B's lists and audit log hold nothing of A's.
    for token in [&b.admin, &b.viewer] {
        for path in ["/v1/jobs", "/v1/licenses", "/v1/audit?limit=500"] {
            let text = app.get_json(path, token).await.to_string();
            for id in [&job, &license, &assignment, &a_viewer] {
                assert!(!text.contains(id.as_str()), "B's {path} shows {id}: {text}");
            }
        }
        for filter in [
            format!("/v1/audit?target_id={license}"),
            format!("/v1/audit?target_id={job}"),
            format!("/v1/audit?target_id={a_viewer}"),
        ] {
            let list = app.get_json(&filter, token).await;
            assert_eq!(list["data"], json!([]), "{filter}");
        }
    }
    let b_tokens = app.get_json("/v1/tokens", &b.admin).await;
    assert_eq!(b_tokens["data"].as_array().unwrap().len(), 3);

    // A's objects are exactly as they were, and A's viewer still works.
    assert_eq!(view_of_a(&app, &a, &job, &license).await, before);
    assert_eq!(
        app.get("/v1/tenant", &a.viewer)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A itself can still do what B could not (the objects were live targets).
    let rerun = app
        .post(&format!("/v1/jobs/{job}/rerun"), &a.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(rerun.status(), 202);
    app.wait_for_job(&a.admin, &job, 120).await;
    app.assert_outcomes_true(&a.viewer, &job, &emulator.base_url())
        .await;
    let checked_in = app
        .post(&format!("/v1/licenses/{license}/checkin"), &a.operator)
        .json(&checkin)
        .send()
        .await
        .unwrap();
    assert_eq!(checked_in.status(), 200);

    emulator.shutdown().await;
    app.stop().await;
}
on_both_backends!(tenant_b_reaches_nothing_of_tenant_a);
