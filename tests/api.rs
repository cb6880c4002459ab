//! The HTTP API skeleton: health, auth and roles, problem+json, pagination, tenant isolation and
//! the OpenAPI document, on the embedded default and on PostgreSQL + Redis.

mod common;

use common::{Backend, TestApp, expect_problem};
use licensor_core::domain::JobKind;
use licensor_core::jobs::{self, NewJob};
use serde_json::{Value, json};

async fn health_and_auth(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;

    let health = app.get_anonymous("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready: Value = app.get_anonymous_json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    let (db, queue) = match backend {
        Backend::Embedded => ("sqlite", "sqlite"),
        Backend::Production => ("postgres", "redis"),
    };
    assert_eq!(ready["database"], db);
    assert_eq!(ready["queue"], queue);

    // The token authenticates; an empty job list.
    let jobs: Value = app.get_json("/v1/jobs", &t.admin).await;
    assert_eq!(jobs, json!({"data": [], "next_cursor": null}));

    // No token, a malformed header, an unknown token → 401 problem+json.
    let none = app.get_anonymous("/v1/jobs").await;
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    expect_problem(none, 401, "unauthorized").await;
    let basic = app
        .http
        .get(format!("{}/v1/jobs", app.url))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    expect_problem(basic, 401, "unauthorized").await;
    expect_problem(
        app.get_response("/v1/jobs", "lic_unknown").await,
        401,
        "unauthorized",
    )
    .await;

    // Roles: viewer and operator may read but not manage tokens; admin may.
    expect_problem(
        app.get_response("/v1/tokens", &t.viewer).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get_response("/v1/tokens", &t.operator).await,
        403,
        "forbidden",
    )
    .await;
    let create = app
        .post_response(
            "/v1/tokens",
            &t.viewer,
            &json!({"name": "x", "role": "admin"}),
        )
        .await;
    expect_problem(create, 403, "forbidden").await;
    assert_eq!(app.get_response("/v1/jobs", &t.viewer).await.status(), 200);
    let list: Value = app.get_json("/v1/tokens", &t.admin).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert!(
        !list.to_string().contains(&t.viewer),
        "token values are never listed"
    );

    // Admin creates a token, it works, is revoked, and stops working.
    let created: Value = app
        .post_json(
            "/v1/tokens",
            &t.admin,
            &json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(app.get_response("/v1/jobs", &secret).await.status(), 200);
    let id = created["id"].as_str().unwrap();
    let revoked = app
        .post_empty(&format!("/v1/tokens/{id}/revoke"), &t.admin)
        .await;
    assert_eq!(revoked.status(), 200);
    expect_problem(
        app.get_response("/v1/jobs", &secret).await,
        401,
        "unauthorized",
    )
    .await;

    // The audit log recorded both, and whoami names the tenant.
    let audit: Value = app.get_json("/v1/audit", &t.viewer).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(&actions[..2], ["token.revoke", "token.create"]);
    let me: Value = app.get_json("/v1/tenant", &t.operator).await;
    assert_eq!(me["tenant"]["name"], "acme");
    assert_eq!(me["role"], "operator");
    app.stop().await;
}
on_both_backends!(health_and_auth);

async fn bad_input_is_problem_json(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let cases = [
        ("/v1/jobs?limit=0", 400, "invalid_query"),
        ("/v1/jobs?limit=9999", 400, "invalid_query"),
        ("/v1/jobs?limit=abc", 400, "invalid_query"),
        ("/v1/jobs?cursor=%21%21", 400, "invalid_query"),
        ("/v1/jobs?status=sleeping", 400, "invalid_query"),
        ("/v1/jobs?kind=delete", 400, "invalid_query"),
        ("/v1/jobs?colour=blue", 400, "invalid_query"),
        ("/v1/jobs/not-a-uuid", 404, "not_found"),
        ("/v1/audit?actor_token_id=nope", 400, "invalid_query"),
        ("/v1/nowhere", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        expect_problem(app.get_response(path, &t.admin).await, status, code).await;
    }
    let post = async |body: &'static str| app.post_raw("/v1/tokens", &t.admin, body).await;
    expect_problem(post("{not json").await, 400, "malformed_json").await;
    expect_problem(
        post(r#"{"name": 5, "role": "admin"}"#).await,
        422,
        "invalid_body",
    )
    .await;
    expect_problem(
        post(r#"{"name": "x", "role": "root"}"#).await,
        422,
        "invalid_body",
    )
    .await;
    expect_problem(
        post(r#"{"name": "x", "role": "admin", "extra": 1}"#).await,
        422,
        "invalid_body",
    )
    .await;
    expect_problem(
        post(r#"{"name": "  ", "role": "admin"}"#).await,
        422,
        "invalid_name",
    )
    .await;
    let no_ct = app
        .post("/v1/tokens", &t.admin)
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_problem(no_ct, 415, "unsupported_media_type").await;
    let huge = format!(
        r#"{{"name": "{}", "role": "admin"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    // `Connection: close`: the server may close the connection mid-body, and the next request
    // must not be sent on it.
    let too_big = app
        .post("/v1/tokens", &t.admin)
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(huge)
        .send()
        .await;
    // The server answers 413 as soon as the limit is passed; the client may still be sending
    // and see the connection closed instead of reading the answer.
    if let Ok(resp) = too_big {
        assert_eq!(resp.status(), 413);
    }
    // Nothing of the above created a token.
    let list: Value = app.get_json("/v1/tokens", &t.admin).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    app.stop().await;
}
on_both_backends!(bad_input_is_problem_json);

async fn tenant_isolation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let job = jobs::insert(
        &app.db,
        NewJob {
            tenant_id: a.id,
            request: serde_json::from_value(
                json!({"kind": "assign", "groups": ["8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01"]}),
            )
            .unwrap(),
            created_by: None,
            parent_job_id: None,
            known: None,
        },
    )
    .await
    .unwrap();
    let path = format!("/v1/jobs/{}", job.id);

    let mine: Value = app.get_json(&path, &a.viewer).await;
    assert_eq!(mine["id"], job.id.to_string());
    assert_eq!(mine["status"], "queued");
    assert_eq!(mine["progress"]["pending"], 0);

    // Tenant B sees neither the job nor any trace of it, whatever its role.
    for token in [&b.admin, &b.operator, &b.viewer] {
        let body = expect_problem(app.get_response(&path, token).await, 404, "not_found").await;
        assert!(!body.to_string().contains("tenant-a"));
        let list: Value = app.get_json("/v1/jobs", token).await;
        assert_eq!(list["data"], json!([]));
    }
    // Another tenant's token cannot be revoked either.
    let a_tokens: Value = app.get_json("/v1/tokens", &a.admin).await;
    let a_token_id = a_tokens["data"][0]["id"].as_str().unwrap().to_owned();
    let cross = app
        .post_empty(&format!("/v1/tokens/{a_token_id}/revoke"), &b.admin)
        .await;
    expect_problem(cross, 404, "not_found").await;
    assert_eq!(app.get_response("/v1/jobs", &a.admin).await.status(), 200);
    // Tenant B's audit log holds its own three token creations and nothing of tenant A's.
    let audit: Value = app.get_json("/v1/audit", &b.admin).await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for a_token in a_tokens["data"].as_array().unwrap() {
        assert!(
            entries.iter().all(|e| e["target_id"] != a_token["id"]),
            "{audit}"
        );
    }
    app.stop().await;
}
on_both_backends!(tenant_isolation);

async fn cursor_pagination(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 {
            JobKind::Assign
        } else {
            JobKind::Export
        };
        let mut request =
            json!({"kind": kind.as_str(), "groups": [format!("8d0c7a9a-7c5e-4b7e-9a47-{i:012}")]});
        if kind == JobKind::Export {
            // An export's request has its file format.
            request["export"] = json!({"format": "csv"});
        }
        let job = jobs::insert(
            &app.db,
            NewJob {
                tenant_id: t.id,
                request: serde_json::from_value(request).unwrap(),
                created_by: None,
                parent_job_id: None,
                known: None,
            },
        )
        .await
        .unwrap();
        ids.push(job.id.to_string());
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=3&cursor={c}"),
            None => "/v1/jobs?limit=3".to_owned(),
        };
        let page: Value = app.get_json(&path, &t.viewer).await;
        for job in page["data"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every job once, newest first, across pages");
    let exports: Value = app
        .get_json("/v1/jobs?kind=export&status=queued,running", &t.viewer)
        .await;
    assert_eq!(exports["data"].as_array().unwrap().len(), 3);

    // A filtered list's cursor reads on in that list, whatever the order or escaping of its
    // filters, and however limit and count change; another filter (or none) refuses it rather
    // than skip its entries before the position.
    let assigns = app
        .get_json("/v1/jobs?kind=assign&limit=2", &t.viewer)
        .await;
    let cursor = assigns["next_cursor"].as_str().unwrap().to_owned();
    let mut rest = Vec::new();
    for path in [
        format!("/v1/jobs?kind=assign&limit=2&cursor={cursor}"),
        format!("/v1/jobs?cursor={cursor}&kind=%61ssign&status=&count=true"),
        format!("/v1/jobs?limit=5&kind=+assign+&cursor={cursor}"),
    ] {
        let page = app.get_json(&path, &t.viewer).await;
        rest.push(page["data"].as_array().unwrap().len());
    }
    assert_eq!(rest, [2, 2, 2], "the assign jobs after the first two");
    // The same filter written another way: values in another order, a time in another offset
    // or precision.
    let both = app
        .get_json("/v1/jobs?kind=assign,export&limit=3", &t.viewer)
        .await;
    let cursor = both["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get_json(
            &format!("/v1/jobs?kind=export,%20assign,assign&limit=3&cursor={cursor}"),
            &t.viewer,
        )
        .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 3, "{next}");
    let since = app
        .get_json(
            "/v1/jobs?created_after=2020-01-01T00:00:00Z&limit=3",
            &t.viewer,
        )
        .await;
    let cursor = since["next_cursor"].as_str().unwrap().to_owned();
    for after in [
        "2020-01-01T01:00:00%2B01:00",
        "2020-01-01T00:00:00.000Z",
        "2019-12-31T19:00:00-05:00",
    ] {
        let next = app
            .get_json(
                &format!("/v1/jobs?created_after={after}&limit=3&cursor={cursor}"),
                &t.viewer,
            )
            .await;
        assert_eq!(next["data"].as_array().unwrap().len(), 3, "{after}: {next}");
    }
    // A job id prefix in either case and with hyphens, and a list of no values, read on.
    let prefix = &ids[0][..4];
    let by_prefix = app
        .get_json(&format!("/v1/jobs?id_prefix={prefix}&limit=2"), &t.viewer)
        .await;
    let cursor_prefix = by_prefix["next_cursor"].as_str().unwrap().to_owned();
    let spelt = format!("{}-{}", &prefix[..2], prefix[2..].to_ascii_uppercase());
    let next = app
        .get_json(
            &format!("/v1/jobs?id_prefix={spelt}&limit=2&cursor={cursor_prefix}"),
            &t.viewer,
        )
        .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 2, "{next}");
    let all = app.get_json("/v1/jobs?limit=2", &t.viewer).await;
    let unfiltered = all["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get_json(
            &format!("/v1/jobs?status=,&limit=2&cursor={unfiltered}"),
            &t.viewer,
        )
        .await;
    assert_eq!(next["data"].as_array().unwrap().len(), 2, "{next}");
    // The refusal names the filters that differ: given with another value, or on one side
    // only. Another list's cursor is not of this list, whatever the filters.
    let since_other = "created_after=2021-01-01T00:00:00Z";
    let other_filters = common::other_filters;
    for (path, refusal) in [
        (
            format!("/v1/jobs?cursor={cursor}"),
            other_filters("created_after"),
        ),
        (
            format!("/v1/jobs?kind=export&cursor={cursor}"),
            other_filters("created_after, kind"),
        ),
        (
            format!("/v1/jobs?{since_other}&kind=assign&status=queued&cursor={cursor}"),
            other_filters("created_after, kind, status"),
        ),
        (
            format!(
                "/v1/jobs?created_after=2020-01-01T00:00:00Z&kind=assign,export&cursor={cursor}"
            ),
            other_filters("kind"),
        ),
        (
            format!("/v1/jobs?kind=assign&cursor={unfiltered}"),
            other_filters("kind"),
        ),
        (
            format!("/v1/audit?cursor={unfiltered}"),
            "cursor is not one of this list".to_owned(),
        ),
    ] {
        app.expect_cursor_refused(&path, &t.viewer, &refusal).await;
    }
    app.stop().await;
}
on_both_backends!(cursor_pagination);

#[tokio::test]
async fn openapi_describes_every_route_and_metrics_are_prometheus_text() {
    let Some(app) = TestApp::start(Backend::Embedded).await else {
        return;
    };
    let doc: Value = app.get_anonymous_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/tenant", "get"),
        ("/v1/tokens", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/{id}/revoke", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/launch", "post"),
        ("/v1/audit", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} documented"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // An action that takes no body says how it refuses one.
    for (path, method) in [
        ("/v1/tokens/{id}/revoke", "post"),
        ("/v1/jobs/{id}/rerun", "post"),
        ("/v1/webhooks/{id}", "delete"),
    ] {
        let answers = &paths[path][method]["responses"];
        for status in ["400", "415", "422"] {
            assert!(
                answers[status]["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}: {}",
                answers[status]
            );
        }
    }
    // Previews: their status, the summary on the job and each item's prediction.
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["JobStatus"]["enum"]
            .as_array()
            .is_some_and(|e| e.iter().any(|s| s == "previewed")),
        "{}",
        schemas["JobStatus"]
    );
    assert!(schemas["PreviewSummary"].is_object());
    assert!(schemas["JobView"]["properties"]["preview"].is_object());
    assert!(schemas["ItemView"]["properties"]["prediction"].is_object());
    // Every documented GET without parameters answers (none is a dead entry).
    let t = app.tenant("acme").await;
    for (path, item) in paths {
        if item.get("get").is_some() && !path.contains('{') {
            let resp = app.get_response(path, &t.admin).await;
            if path.starts_with("/v1/directory/") {
                // This tenant has no directory connection.
                expect_problem(resp, 409, "directory_not_configured").await;
            } else {
                assert_eq!(resp.status(), 200, "GET {path}");
            }
        }
    }
    let metrics = app.get_anonymous("/metrics").await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("licensor_http_requests_total"), "{text}");
    assert!(
        text.contains(r#"licensor_jobs{kind="assign",status="previewed"} 0"#),
        "{text}"
    );
    app.stop().await;
}
