//! `POST /v1/directory/held-licenses`: the licenses the members of the selected groups hold (the
//! New job form's Remove and Replace pickers), counted as the directory emulator's state says,
//! from at most the first 1,000 members; bad input is refused with problem+json.

mod common;
#[path = "common/held.rs"]
mod held;

use common::{Backend, TestApp, expect_problem, put_faults};
use graph_emulator::{EmulatorConfig, Scenario};
use serde_json::{Value, json};

async fn held_licenses_of_group_members(backend: Backend) {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let http = app.http.clone();
    let sales = app.group_id(&t.viewer, "Sales").await;
    let members = held::license_sales(&http, &emulator, &sales).await;
    let expected = held::held_by(&http, &emulator, &members).await;
    assert!(expected.len() >= 2, "{expected:?}");

    let ask = |body: Value, token: &str| app.post("/v1/directory/held-licenses", token).json(&body);

    // Sales: every member read, the counts are the emulator's.
    let resp = ask(json!({"groups": [{"id": sales}]}), &t.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(held::held_of(&answer), expected, "{answer}");
    assert_eq!(answer["members_read"], 250, "{answer}");
    assert_eq!(answer["sampled"], false, "{answer}");
    assert_eq!(answer["sample_limit"], 1000, "{answer}");
    let e3 = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["sku_id"] == graph_emulator::ENTERPRISEPACK_SKU_ID)
        .unwrap();
    assert_eq!(e3["sku_part_number"], "ENTERPRISEPACK", "{answer}");

    // Sales twice, and Sales with All Staff: a member counts once; All Staff is sampled.
    let twice: Value = ask(
        json!({"groups": [{"id": sales}, {"id": sales.to_uppercase()}]}),
        &t.viewer,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(held::held_of(&twice), expected, "{twice}");
    let staff = app.group_id(&t.viewer, "All Staff").await;
    let big: Value = ask(
        json!({"groups": [{"id": sales}, {"id": staff}], "transitive": true}),
        &t.viewer,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(big["members_read"], 1000, "{big}");
    assert_eq!(big["sampled"], true, "{big}");
    // The first 250 read are Sales': the sample holds at least what Sales holds.
    for (sku, (direct, inherited)) in &expected {
        let (d, i) = held::held_of(&big)[sku];
        assert!(d >= *direct && i >= *inherited, "{sku}: {big}");
    }

    // Bad input: 422 with a stable code (or 400 for JSON that is not the body), nothing read.
    for (body, status, code) in [
        (json!({"groups": []}), 422, "groups_required"),
        (
            json!({"groups": [{"id": "sales"}]}),
            422,
            "invalid_group_id",
        ),
        (
            json!({"groups": [{"id": "00000000-0000-4000-8000-000000000000"}]}),
            422,
            "group_not_found",
        ),
        (
            json!({"groups": (0..101).map(|i| json!({"id": format!("00000000-0000-4000-8000-{i:012}")})).collect::<Vec<_>>()}),
            422,
            "too_many_groups",
        ),
    ] {
        expect_problem(ask(body, &t.viewer).send().await.unwrap(), status, code).await;
    }
    let unknown = ask(
        json!({"groups": [{"id": sales}], "nested": true}),
        &t.viewer,
    )
    .send()
    .await
    .unwrap();
    assert!(
        matches!(unknown.status().as_u16(), 400 | 422),
        "{}",
        unknown.status()
    );
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    let anonymous = app
        .http
        .post(format!("{}/v1/directory/held-licenses", app.url))
        .json(&json!({"groups": [{"id": sales}]}))
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401, "unauthorized").await;

    // Another tenant reads its own directory (here: none); the answer says how to set one.
    let other = app.tenant("fabrikam").await;
    // The other tenant's ask, answered 409 `directory_not_configured`: the problem.
    let not_configured = || async {
        expect_problem(
            ask(json!({"groups": [{"id": sales}]}), &other.viewer)
                .send()
                .await
                .unwrap(),
            409,
            "directory_not_configured",
        )
        .await
    };
    let none = not_configured().await;
    assert!(
        none["detail"]
            .as_str()
            .is_some_and(|d| d.contains("licensor tenant set-directory")),
        "{none}"
    );
    // A client secret sealed with another key than the server's (set by a command run without
    // the server's `secret_key`): the answer says to set it again with the server's key.
    let elsewhere = licensor_core::crypto::SecretBox::from_base64(
        "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=",
    )
    .unwrap();
    licensor_core::tenants::update_directory(
        &app.db,
        &elsewhere,
        other.id,
        &licensor_core::tenants::DirectorySettings {
            directory_url: Some(emulator.base_url()),
            directory_tenant_id: Some(emulator.directory_tenant_id()),
            client_id: Some(emulator.client_id()),
            client_secret: Some(emulator.client_secret()),
        },
    )
    .await
    .unwrap();
    let sealed_elsewhere = not_configured().await;
    assert!(
        sealed_elsewhere["detail"]
            .as_str()
            .is_some_and(|d| d.contains("set-directory") && d.contains("this server's secret_key")),
        "{sealed_elsewhere}"
    );

    // Described in the OpenAPI document.
    let doc: Value = app
        .get("/openapi.json", &t.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/directory/held-licenses"]["post"].is_object());

    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(held_licenses_of_group_members);

/// An API (no workers) with `extra` configuration, and a tenant `contoso` connected to an
/// emulator of 10 users and 20 units a SKU (seeded with `seed`): the emulator, the app, the tenant and
/// the id of its group "All Users". `None` when the backend is not available.
async fn api_on_a_directory(
    backend: Backend,
    seed: u64,
    extra: &str,
) -> Option<(
    graph_emulator::EmulatorHandle,
    TestApp,
    common::TestTenant,
    String,
)> {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(seed, 10, 20)),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let app = TestApp::start_with(backend, licensor::Roles::API, extra).await?;
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let group = app.group_id(&t.admin, "All Users").await;
    Some((emulator, app, t, group))
}

/// `GET /v1/directory/skus` answers each SKU's service plans in snake_case like every other
/// answer (`service_plan_id`, `service_plan_name`), though Graph's `subscribedSkus` names them
/// in camelCase; the OpenAPI document says the same.
async fn skus_answer_their_service_plans_in_snake_case(backend: Backend) {
    let Some((emulator, app, t, _)) = api_on_a_directory(backend, 41, "").await else {
        return;
    };
    let skus = app.get_json("/v1/directory/skus", &t.viewer).await;
    let e3 = skus["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|s| s["sku_id"] == graph_emulator::ENTERPRISEPACK_SKU_ID)
        .unwrap_or_else(|| panic!("ENTERPRISEPACK in {skus}"));
    let plans = e3["service_plans"].as_array().expect("service_plans");
    assert!(!plans.is_empty(), "{e3}");
    for plan in plans {
        assert_eq!(
            common::field_names(plan),
            ["service_plan_id", "service_plan_name"],
            "{plan}"
        );
        assert!(
            uuid::Uuid::try_parse(plan["service_plan_id"].as_str().unwrap_or_default()).is_ok(),
            "{plan}"
        );
    }
    assert!(
        plans.iter().any(|p| p["service_plan_name"] == "TEAMS1"),
        "{e3}"
    );

    let doc = app.get_json("/openapi.json", &t.viewer).await;
    let schema = &doc["components"]["schemas"]["ServicePlan"]["properties"];
    assert!(schema["service_plan_id"].is_object(), "{schema}");
    assert!(schema["service_plan_name"].is_object(), "{schema}");
    assert!(schema["servicePlanId"].is_null(), "{schema}");
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(skus_answer_their_service_plans_in_snake_case);

/// A directory that does not answer (every request answered 503, then every request answered
/// after 30 s) is reported to an API caller within `api.directory_wait_secs` (2 s here) as 503
/// `directory_unavailable` with `Retry-After`, by the pickers and by `POST /v1/jobs` alike —
/// not after the workers' whole retry budget — and a submit refused that way creates no job and
/// leaves its `Idempotency-Key` free for the retry.
async fn an_unanswering_directory_is_reported_within_the_wait(backend: Backend) {
    let Some((emulator, app, t, group)) =
        api_on_a_directory(backend, 43, "[api]\ndirectory_wait_secs = 2\n").await
    else {
        return;
    };
    let submit = json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": graph_emulator::ENTERPRISEPACK_SKU_ID}]});
    for fault in [
        json!({"error_rate": 1.0, "error_statuses": [503], "throttling": false}),
        json!({"latency_ms": 30_000, "throttling": false}),
    ] {
        put_faults(&emulator, fault.clone()).await;
        let asks = [
            app.get("/v1/directory/skus", &t.viewer),
            app.get("/v1/directory/groups?search=All", &t.viewer),
            app.get("/v1/directory/users?search=a", &t.viewer),
            app.post("/v1/directory/held-licenses", &t.viewer)
                .json(&json!({"groups": [{"id": group}]})),
            app.post("/v1/jobs", &t.admin)
                .header("Idempotency-Key", "unanswered")
                .json(&submit),
        ];
        for ask in asks {
            let started = std::time::Instant::now();
            let resp = ask.send().await.unwrap();
            let took = started.elapsed();
            assert!(
                took < std::time::Duration::from_secs(6),
                "answered after {took:?} ({fault})"
            );
            assert_eq!(resp.headers()["retry-after"], "5", "{fault}");
            expect_problem(resp, 503, "directory_unavailable").await;
        }
    }
    let jobs = app.get_json("/v1/jobs", &t.viewer).await;
    assert_eq!(jobs["data"], json!([]), "no job was made");
    // Answering again: the same key runs the request.
    put_faults(&emulator, json!({"throttling": false})).await;
    let resp = app
        .post("/v1/jobs", &t.admin)
        .header("Idempotency-Key", "unanswered")
        .json(&submit)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(an_unanswering_directory_is_reported_within_the_wait);

/// The groups' names are a courtesy of `POST /v1/jobs`: a directory that answers slowly (5 s a
/// request here, under the default 15 s `api.directory_wait_secs`) holds the submit back for
/// about 2 s, and the job is made with its groups unnamed — the job reads them itself when it
/// runs. It waited the directory's 5 s before; an assign, whose SKUs are read first, twice that.
async fn a_slow_directory_holds_a_submit_back_a_moment_for_names(backend: Backend) {
    let Some((emulator, app, t, group)) = api_on_a_directory(backend, 47, "").await else {
        return;
    };
    put_faults(&emulator, json!({"latency_ms": 5_000, "throttling": false})).await;
    let started = std::time::Instant::now();
    let resp = app
        .post("/v1/jobs", &t.admin)
        .json(&json!({"kind": "export", "groups": [group], "export": {"format": "csv"}}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let job: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{job}");
    assert!(
        took < std::time::Duration::from_millis(4_000),
        "answered after {took:?}"
    );
    let jobs = app.get_json("/v1/jobs", &t.viewer).await;
    assert_eq!(jobs["data"].as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(jobs["data"][0]["id"], job["id"]);
    put_faults(&emulator, json!({"throttling": false})).await;
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_slow_directory_holds_a_submit_back_a_moment_for_names);

/// A client that goes away while its submit is being answered (a client timeout, here after
/// 0.5 s of a directory answering in 2 s) does not cut the submit off: the job is made and its
/// answer kept for the `Idempotency-Key`, so the client's retry with the key gets that answer
/// again (`Idempotent-Replayed: true`), and there is one job. Before, the submit stopped where
/// the client left, no job was made, and the key stayed claimed by nobody: the retry was told
/// 409 `idempotency_key_in_use` for 30 s, then `idempotency_key_interrupted`.
async fn a_submit_whose_client_went_away_is_answered_to_its_key(backend: Backend) {
    let Some((emulator, app, t, group)) = api_on_a_directory(backend, 53, "").await else {
        return;
    };
    let submit = json!({"kind": "assign", "groups": [group], "add_licenses": [{"sku_id": graph_emulator::ENTERPRISEPACK_SKU_ID}]});
    put_faults(&emulator, json!({"latency_ms": 2_000, "throttling": false})).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&t.admin)
        .header("Idempotency-Key", "left-early")
        .json(&submit)
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up before the answer");
    put_faults(&emulator, json!({"throttling": false})).await;
    // The retry, as a client does: again while the first is still being answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let replayed = loop {
        let resp = app
            .post("/v1/jobs", &t.admin)
            .header("Idempotency-Key", "left-early")
            .json(&submit)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let replayed = resp.headers().get("idempotent-replayed").cloned();
        let body: serde_json::Value = resp.json().await.unwrap();
        if status == 409
            && body["code"] == "idempotency_key_in_use"
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            continue;
        }
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            replayed.as_ref().and_then(|v| v.to_str().ok()),
            Some("true"),
            "the first answer, kept: {body}"
        );
        break body;
    };
    let jobs = app.get_json("/v1/jobs", &t.viewer).await;
    assert_eq!(jobs["data"].as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(jobs["data"][0]["id"], replayed["id"]);
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(a_submit_whose_client_went_away_is_answered_to_its_key);
