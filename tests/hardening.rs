//! Input hardening and the per-token rate limit: malformed JSON, wrong types, unknown fields, huge
//! arrays and bodies, NUL characters, bad ids, bad query parameters and headers each answer a
//! 4xx problem+json — never a 500 — and change nothing; a token over its rate answers 429 with
//! `Retry-After` while other tokens and the unauthenticated routes go on (0 turns the limit off,
//! as the harness does for every other test); `/openapi.json` documents those answers on every
//! route.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, TestTenant, check_problem, expect_problem};
use licensor::Roles;
use reqwest::Method;
use serde_json::{Value, json};

/// One bad request: method, path, body (sent as JSON unless `content_type` says otherwise),
/// the expected status and problem code.
struct Case {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn get(path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        method: Method::GET,
        path: path.into(),
        body: None,
        content_type: None,
        headers: Vec::new(),
        status,
        code,
    }
}

fn send(
    method: Method,
    path: impl Into<String>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path: path.into(),
        body: Some(body.into()),
        content_type: Some("application/json"),
        headers: Vec::new(),
        status,
        code,
    }
}

fn post(
    path: impl Into<String>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    send(Method::POST, path, body, status, code)
}

/// Everything a tenant can see of itself, to compare before and after.
async fn snapshot(app: &TestApp, t: &TestTenant, license: &str) -> Value {
    let mut state = json!({});
    for path in [
        "/v1/licenses?limit=500".to_owned(),
        format!("/v1/licenses/{license}/assignments?state=all&limit=500"),
        "/v1/jobs?limit=500".to_owned(),
        "/v1/audit?limit=500".to_owned(),
        "/v1/tokens".to_owned(),
    ] {
        let mut body = app.get_json(&path, &t.admin).await;
        // Reading with a token marks it used; that is not a change made by a request.
        if let Some(tokens) = body["data"].as_array_mut() {
            for token in tokens {
                if let Some(t) = token.as_object_mut() {
                    t.remove("last_used_at");
                }
            }
        }
        state[path] = body;
    }
    state
}

/// A license "Visio" of 5 seats with one checked out to user `ada`: its id and the assignment's.
async fn visio_held_by_ada(app: &TestApp, t: &TestTenant) -> (String, String) {
    let license = app
        .post_json(
            "/v1/licenses",
            &t.admin,
            &json!({"name": "Visio", "seats": 5}),
        )
        .await;
    let l = license["id"].as_str().unwrap().to_owned();
    let assignment = app
        .post_json(
            &format!("/v1/licenses/{l}/checkout"),
            &t.admin,
            &json!({"assignee": {"type": "user", "id": "ada"}}),
        )
        .await;
    let a = assignment["id"].as_str().unwrap().to_owned();
    (l, a)
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let (l, a) = visio_held_by_ada(&app, &t).await;
    let before = snapshot(&app, &t, &l).await;

    let nobody = "00000000-0000-0000-0000-000000000000";
    let uuids = |n: usize| {
        serde_json::to_string(
            &(0..n)
                .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let mut cases = vec![
        // Malformed JSON → 400.
        post("/v1/licenses", "{", 400, "malformed_json"),
        post("/v1/licenses", "", 400, "malformed_json"),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1} trailing"#,
            400,
            "malformed_json",
        ),
        post("/v1/licenses", deep.as_str(), 422, "invalid_body"),
        post(
            "/v1/tokens",
            r#"{"name": "x", "role": "admin""#,
            400,
            "malformed_json",
        ),
        post("/v1/jobs", "{'kind': 'assign'}", 400, "malformed_json"),
        // JSON is UTF-8 (RFC 8259 §8.1): other bytes in a string make it malformed, whatever
        // the shape around them.
        post(
            "/v1/licenses",
            b"{\"name\": \"Vi\xffsio\", \"seats\": 1}".to_vec(),
            400,
            "malformed_json",
        ),
        post(
            "/v1/licenses",
            b"{\"name\": \"\xc3\"}".to_vec(),
            400,
            "malformed_json",
        ),
        // Valid JSON of the wrong shape or type → 422 invalid_body.
        post("/v1/licenses", "null", 422, "invalid_body"),
        post("/v1/licenses", "[]", 422, "invalid_body"),
        post("/v1/licenses", r#""Visio""#, 422, "invalid_body"),
        post("/v1/licenses", r#"{"name": "x"}"#, 422, "invalid_body"),
        post(
            "/v1/licenses",
            r#"{"name": 5, "seats": 1}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": "5"}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1.5}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 9223372036854775808}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1, "reassignable": "yes"}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1, "delivered_on": "2024-02-30"}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1, "colour": "blue"}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "Vi\u0000sio", "seats": 1}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/tokens",
            r#"{"name": "ops", "role": "admin", "scopes": ["all"]}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/tokens",
            r#"{"name": "ops", "role": "root"}"#,
            422,
            "invalid_body",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "robot", "id": "r2"}}"#,
            422,
            "invalid_body",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "ada", "email": "a@x"}}"#,
            422,
            "invalid_body",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            r#"{"assignment_ids": ["not-a-uuid"]}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs",
            r#"{"kind": "assign", "groups": "all"}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs",
            r#"{"kind": "grant", "groups": []}"#,
            422,
            "invalid_body",
        ),
        // Valid JSON of the wrong type where an enum's string belongs: the body's shape is
        // wrong, it is not malformed.
        post(
            "/v1/jobs",
            r#"{"kind": 1, "groups": []}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs",
            r#"{"kind": null, "groups": []}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs",
            r#"{"kind": [], "groups": []}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs/rerun",
            r#"{"filter": {"status": [1]}}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs/cancel",
            r#"{"filter": {"kind": [true]}}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/webhooks",
            r#"{"url": "https://example.com/h", "events": [1]}"#,
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs/rerun",
            r#"{"job_ids": "all"}"#,
            422,
            "invalid_body",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"seats": "many"}"#,
            422,
            "invalid_body",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"owner": "me"}"#,
            422,
            "invalid_body",
        ),
        // A JSON array is not an object read by position.
        post("/v1/licenses", r#"["Visio", 3]"#, 422, "invalid_body"),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#" ["Renamed", 7]"#,
            422,
            "invalid_body",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            "[]",
            422,
            "invalid_body",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"[{"type": "user", "id": "u9"}, 1]"#,
            422,
            "invalid_body",
        ),
        // A field a license always has is left out to keep it, never `null`.
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"seats": null}"#,
            422,
            "invalid_body",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"name": null, "notes": "renamed"}"#,
            422,
            "invalid_body",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"reassignable": null}"#,
            422,
            "invalid_body",
        ),
        // Values the types allow but the rules do not → 422 with the field's code.
        post(
            "/v1/licenses",
            r#"{"name": "  ", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            format!(r#"{{"name": "{}", "seats": 1}}"#, "x".repeat(201)),
            422,
            "invalid_name",
        ),
        // A control or bidirectional formatting character in a name: invisible where the name
        // is shown, it breaks a table's row, recolours a terminal, or makes two names that look
        // alike differ.
        post(
            "/v1/licenses",
            r#"{"name": "Visio\u001b[31m", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "Vi\nsio", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "Visio\u202egnp.exe", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"name": "Vi\tsio"}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/tokens",
            r#"{"name": "ci\u0085bot", "role": "viewer"}"#,
            422,
            "invalid_name",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "grace", "name": "Grace\u2066 Hopper"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "asset", "id": "LT-\u202e1"}}"#,
            422,
            "invalid_assignee",
        ),
        // Notes and descriptions run over many lines, but an escape sequence, a line
        // separator or a bidirectional override has no place in them either.
        post(
            "/v1/licenses",
            r#"{"name": "Visio", "seats": 1, "notes": "PO 17\u001b[2J"}"#,
            422,
            "invalid_notes",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"notes": "Renewal \u202e3202"}"#,
            422,
            "invalid_notes",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "grace"}, "notes": "a\u2028b"}"#,
            422,
            "invalid_notes",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            format!(r#"{{"assignment_ids": ["{a}"], "notes": "back\u0007"}}"#),
            422,
            "invalid_notes",
        ),
        post(
            "/v1/webhooks",
            r#"{"url": "https://example.com/h", "events": ["job.finished"], "description": "ops\u0007"}"#,
            422,
            "invalid_description",
        ),
        // Invisible characters: a name or an id that reads like another one is not it.
        post(
            "/v1/licenses",
            r#"{"name": "Visio\u200b", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "Lic\u2028X", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "\u200d", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "ada\ufeff@contoso.com"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "ada\u200d"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "u\u200c1"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "\u200c", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "a\u3164b", "seats": 1}"#,
            422,
            "invalid_name",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 0}"#,
            422,
            "invalid_seats",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1000001}"#,
            422,
            "invalid_seats",
        ),
        post(
            "/v1/licenses",
            r#"{"name": "x", "seats": 1, "delivered_on": "1800-01-01"}"#,
            422,
            "invalid_delivered_on",
        ),
        post(
            "/v1/licenses",
            format!(
                r#"{{"name": "x", "seats": 1, "notes": "{}"}}"#,
                "n".repeat(2_001)
            ),
            422,
            "invalid_notes",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}"),
            r#"{"seats": -3}"#,
            422,
            "invalid_seats",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": "ada"}, "quantity": 0}"#,
            422,
            "invalid_quantity",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "user", "id": " "}}"#,
            422,
            "invalid_assignee",
        ),
        // An id with a control character could never be reached in `/v1/assignees/…` paths.
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "asset", "id": "LT\n1"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            format!("/v1/licenses/{l}/checkout"),
            r#"{"assignee": {"type": "asset", "id": "LT\u00851"}}"#,
            422,
            "invalid_assignee",
        ),
        post(
            "/v1/tokens",
            format!(r#"{{"name": "{}", "role": "viewer"}}"#, "é".repeat(201)),
            422,
            "invalid_name",
        ),
        // Huge arrays → 422, before anything is looked up.
        post(
            format!("/v1/licenses/{l}/checkin"),
            r#"{"assignment_ids": []}"#,
            422,
            "invalid_assignment_ids",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            format!(r#"{{"assignment_ids": {}}}"#, uuids(1_001)),
            422,
            "invalid_assignment_ids",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            format!(r#"{{"assignment_ids": ["{a}", "{a}"]}}"#),
            422,
            "invalid_assignment_ids",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            format!(
                r#"{{"assignment_ids": {}}}"#,
                serde_json::to_string(&vec![7; 100_000]).unwrap()
            ),
            422,
            "invalid_body",
        ),
        post(
            "/v1/jobs/rerun",
            format!(r#"{{"job_ids": {}}}"#, uuids(501)),
            422,
            "invalid_job_ids",
        ),
        post(
            "/v1/jobs/rerun",
            r#"{"job_ids": []}"#,
            422,
            "invalid_job_ids",
        ),
        post(
            "/v1/jobs",
            format!(r#"{{"kind": "export", "groups": {}}}"#, uuids(101)),
            422,
            "too_many_groups",
        ),
        post(
            "/v1/jobs",
            format!(
                r#"{{"kind": "remove", "groups": ["{nobody}"], "remove_licenses": {}}}"#,
                uuids(51)
            ),
            422,
            "too_many_licenses",
        ),
        // A mutation of an object that is not there → 404, whatever the body.
        post(
            format!("/v1/licenses/{nobody}/checkout"),
            r#"{"assignee": {"type": "user", "id": "ada"}}"#,
            404,
            "not_found",
        ),
        post(
            format!("/v1/licenses/{l}/checkin"),
            format!(r#"{{"assignment_ids": ["{a}", "{nobody}"]}}"#),
            404,
            "not_found",
        ),
        post(format!("/v1/jobs/{nobody}/rerun"), "{}", 404, "not_found"),
        post(format!("/v1/jobs/{nobody}/cancel"), "{}", 404, "not_found"),
        post(
            format!("/v1/tokens/{nobody}/revoke"),
            "{}",
            404,
            "not_found",
        ),
        // Bad ids in the path → 404.
        get("/v1/licenses/not-a-uuid", 404, "not_found"),
        get("/v1/licenses/1", 404, "not_found"),
        get(format!("/v1/licenses/{l}x"), 404, "not_found"),
        // A control character is no id at all, whatever the route: 400 (see
        // `control_characters_in_paths_and_queries_are_refused`).
        get("/v1/licenses/%00", 400, "invalid_path"),
        get("/v1/licenses/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
        get(
            format!("/v1/licenses/{}", "9".repeat(10_000)),
            404,
            "not_found",
        ),
        get(format!("/v1/licenses/{nobody}"), 404, "not_found"),
        get(
            format!("/v1/licenses/{nobody}/assignments"),
            404,
            "not_found",
        ),
        get(format!("/v1/licenses/{nobody}/started"), 404, "not_found"),
        get("/v1/jobs/12345/items", 404, "not_found"),
        get(format!("/v1/jobs/{nobody}/report"), 404, "not_found"),
        get(format!("/v1/jobs/{nobody}/export"), 404, "not_found"),
        post("/v1/tokens/not-a-uuid/revoke", "{}", 404, "not_found"),
        // Bad query parameters → 400 invalid_query.
        get("/v1/licenses?limit=-1", 400, "invalid_query"),
        get("/v1/licenses?limit=0", 400, "invalid_query"),
        get("/v1/licenses?limit=501", 400, "invalid_query"),
        get("/v1/licenses?limit=1.5", 400, "invalid_query"),
        get("/v1/licenses?limit=", 400, "invalid_query"),
        get(
            "/v1/licenses?limit=18446744073709551616",
            400,
            "invalid_query",
        ),
        get("/v1/licenses?limit=1&limit=2", 400, "invalid_query"),
        get("/v1/licenses?cursor=not-a-cursor", 400, "invalid_query"),
        get("/v1/licenses?cursor=%00", 400, "invalid_query"),
        get("/v1/licenses?sort=name", 400, "invalid_query"),
        get(
            format!("/v1/licenses/{l}/assignments?state=lost"),
            400,
            "invalid_query",
        ),
        get("/v1/audit?actor_token_id=nope", 400, "invalid_query"),
        get("/v1/audit?action=license.create%00", 400, "invalid_query"),
        get("/v1/audit?target_id=%00", 400, "invalid_query"),
        get("/v1/jobs?status=done", 400, "invalid_query"),
        get("/v1/jobs?kind=assign,delete", 400, "invalid_query"),
        get(
            format!("/v1/jobs/{nobody}/items?code=Not-A-Code"),
            400,
            "invalid_query",
        ),
        // A well-formed code no item carries: a typo would read as "no such items".
        get(
            format!("/v1/jobs/{nobody}/items?code=weird"),
            400,
            "invalid_query",
        ),
        get(
            format!("/v1/jobs/{nobody}/items?code=count_violation,count_violaton"),
            400,
            "invalid_query",
        ),
        get(
            format!("/v1/jobs/{nobody}/changes?code=weird"),
            400,
            "invalid_query",
        ),
        // A ledger's member is refused as member history refuses it: a malformed one would
        // read as "no such changes".
        get(
            format!("/v1/jobs/{nobody}/changes?user=ada"),
            400,
            "invalid_member",
        ),
        get(
            format!("/v1/jobs/{nobody}/changes?user=ada%20lovelace@contoso.se"),
            400,
            "invalid_member",
        ),
        get(
            format!(
                "/v1/jobs/{nobody}/changes?user={}@contoso.se",
                "a".repeat(300)
            ),
            400,
            "invalid_member",
        ),
        get(
            format!("/v1/jobs/{nobody}/report?format=pdf"),
            400,
            "invalid_query",
        ),
        get("/v1/directory/groups?limit=0", 400, "invalid_query"),
        get(
            format!("/v1/directory/groups?search={}", "s".repeat(257)),
            400,
            "invalid_query",
        ),
        // Content type and size.
        Case {
            content_type: None,
            ..post(
                "/v1/licenses",
                r#"{"name": "x", "seats": 1}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..post(
                "/v1/licenses",
                r#"{"name": "x", "seats": 1}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..post(
                "/v1/tokens",
                "name=x&role=admin",
                415,
                "unsupported_media_type",
            )
        },
        post(
            "/v1/licenses",
            format!(
                r#"{{"name": "x", "seats": 1, "notes": "{}"}}"#,
                "n".repeat(1_100_000)
            ),
            413,
            "body_too_large",
        ),
        // Headers.
        Case {
            headers: vec![("idempotency-key", "k".repeat(201))],
            ..post(
                "/v1/licenses",
                r#"{"name": "x", "seats": 1}"#,
                400,
                "invalid_idempotency_key",
            )
        },
        Case {
            headers: vec![
                ("idempotency-key", "first".into()),
                ("idempotency-key", "second".into()),
            ],
            ..post(
                "/v1/licenses",
                r#"{"name": "x", "seats": 1}"#,
                400,
                "invalid_idempotency_key",
            )
        },
        Case {
            headers: vec![("idempotency-key", "two words".into())],
            ..post(
                "/v1/licenses",
                r#"{"name": "x", "seats": 1}"#,
                400,
                "invalid_idempotency_key",
            )
        },
        // Methods a route does not take → 405.
        send(
            Method::DELETE,
            format!("/v1/licenses/{l}"),
            "",
            405,
            "method_not_allowed",
        ),
        send(Method::PUT, "/v1/licenses", "{}", 405, "method_not_allowed"),
    ];
    // The same bad bodies through the idempotency layer: refused alike.
    cases.push(Case {
        headers: vec![("idempotency-key", "bad-body-1".into())],
        ..post("/v1/licenses", "{", 400, "malformed_json")
    });

    let mut wrong = Vec::new();
    for case in cases {
        let mut req = app
            .http
            .request(case.method.clone(), format!("{}{}", app.url, case.path))
            .bearer_auth(&t.admin);
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in &case.headers {
            req = req.header(*name, value);
        }
        if case.status == 413 {
            // The server may close the connection mid-body: the next case must not be sent
            // on it.
            req = req.header("connection", "close");
        }
        if let Some(body) = case.body.clone() {
            req = req.body(body);
        }
        let label = format!(
            "{} {} {}",
            case.method,
            clip(&case.path),
            clip(&String::from_utf8_lossy(
                case.body.as_deref().unwrap_or_default()
            ))
        );
        match req.send().await {
            Ok(resp) => {
                if let Err(e) = check_problem(resp, case.status, case.code).await {
                    wrong.push(format!("{label}: {e}"));
                }
            }
            // A too-large body may be cut off while it is still being sent.
            Err(e) if case.status == 413 => eprintln!("{label}: {e}"),
            Err(e) => wrong.push(format!("{label}: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        snapshot(&app, &t, &l).await,
        before,
        "no refused request changed anything"
    );
    // Printable names of any script are names: emoji sequences (their zero-width joiner is not
    // a formatting character of the refused kind), right-to-left letters, 200 two-byte letters.
    for name in ["👩‍💻 dev seats", "ترخيص", "Licens för Åsa"] {
        let created = app
            .post_json("/v1/licenses", &t.admin, &json!({"name": name, "seats": 1}))
            .await;
        assert_eq!(created["name"], name, "{created}");
    }
    let long = "é".repeat(200);
    let token = app
        .post_json(
            "/v1/tokens",
            &t.admin,
            &json!({"name": long, "role": "viewer"}),
        )
        .await;
    assert_eq!(token["name"], long.as_str(), "{token}");
    app.stop().await;
}
on_both_backends!(bad_input_is_refused_and_changes_nothing);

/// A job of tenant `tenant_id` stored with the status `status_sql` (an SQL literal), without a
/// directory: nothing runs it. Its canary (5 members, 10 %) lets it be paused and resumed.
async fn stored_job(app: &TestApp, tenant_id: uuid::Uuid, status_sql: &'static str) -> uuid::Uuid {
    stored_job_of(app, tenant_id, status_sql, false).await
}

/// [`stored_job`], a preview when `preview`.
async fn stored_job_of(
    app: &TestApp,
    tenant_id: uuid::Uuid,
    status_sql: &'static str,
    preview: bool,
) -> uuid::Uuid {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let request: licensor_core::jobs::ParsedRequest = serde_json::from_value(json!({
        "kind": "assign",
        "groups": ["8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01"],
        "add_licenses": [{"sku_id": "6fd2c87f-b296-42f0-b197-1e91e994b900"}],
        "canary": {"members": 5, "max_failed_share": 0.1},
        "preview": preview
    }))
    .unwrap();
    let job = licensor_core::jobs::create(
        &app.db,
        licensor_core::jobs::NewJob {
            tenant_id,
            request,
            created_by: None,
            parent_job_id: None,
            known: None,
        },
    )
    .await
    .unwrap();
    licensor_core::entities::job::Entity::update_many()
        .col_expr(
            licensor_core::entities::job::Column::Status,
            Expr::cust(status_sql),
        )
        .filter(licensor_core::entities::job::Column::Id.eq(job.id))
        .exec(&app.db)
        .await
        .unwrap();
    job.id
}

/// Send `body` (as `content_type`, or with none) to `method path` and check it is refused with
/// `status` and `code`: what was wrong, if anything.
async fn refused_body(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    (body, content_type, status, code): (&str, Option<&str>, u16, &str),
) -> Result<(), String> {
    let mut req = app
        .http
        .request(method.clone(), format!("{}{path}", app.url))
        .bearer_auth(token)
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    check_problem(resp, status, code)
        .await
        .map(|_| ())
        .map_err(|e| format!("{method} {path} {body}: {e}"))
}

/// The actions on a job take no body: `launch`, `rerun`, `cancel`, `undo` and `resume` refuse
/// any body but nothing or `{}` — malformed JSON 400 `malformed_json`, any other JSON 422
/// `invalid_body` — before they look at the job, so nothing changes; the same action with `{}`
/// or no body goes through.
async fn job_actions_take_no_body(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    // A paused job (no directory is needed: nothing runs it until it is resumed).
    let id = stored_job(&app, t.id, "'paused'").await;
    let read = || async {
        let job = app.get_json(&format!("/v1/jobs/{id}"), &t.admin).await;
        let audit = app.get_json("/v1/audit?limit=500", &t.admin).await;
        json!({"status": job["status"], "runs": job["runs"], "progress": job["progress"], "audit": audit["data"]})
    };
    let before = read().await;
    assert_eq!(before["status"], "paused");
    let mut wrong = Vec::new();
    for action in ["launch", "rerun", "cancel", "undo", "resume"] {
        for (body, content_type, status, code) in [
            ("{", Some("application/json"), 400, "malformed_json"),
            ("not json", Some("application/json"), 400, "malformed_json"),
            // A body sent as anything but JSON, as on every route that takes one.
            (
                "not json",
                Some("text/plain"),
                415,
                "unsupported_media_type",
            ),
            ("{}", Some("text/plain"), 415, "unsupported_media_type"),
            ("{}", None, 415, "unsupported_media_type"),
            (
                r#"{"force": true}"#,
                Some("application/json"),
                422,
                "invalid_body",
            ),
            ("[]", Some("application/json"), 422, "invalid_body"),
            ("null", Some("application/json"), 422, "invalid_body"),
            (r#""resume""#, Some("application/json"), 422, "invalid_body"),
            (
                r#"{"job_ids": []}"#,
                Some("application/json"),
                422,
                "invalid_body",
            ),
        ] {
            let path = format!("/v1/jobs/{id}/{action}");
            let sent = (body, content_type, status, code);
            if let Err(e) = refused_body(&app, &t.admin, reqwest::Method::POST, &path, sent).await {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(read().await, before, "no refused action changed anything");
    // `{}` sent as JSON is no body at all: resume goes through; then an empty body cancels.
    let resp = app
        .http
        .post(format!("{}/v1/jobs/{id}/resume", app.url))
        .bearer_auth(&t.operator)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let resp = app
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", app.url))
        .bearer_auth(&t.operator)
        // An empty body is no body, whatever it is sent as.
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    // Resumed, the job may have ended already (it has no directory): cancelled or refused as
    // no longer cancellable — never a body error.
    let status = resp.status().as_u16();
    assert!(status == 200 || status == 409, "{status}");
    app.stop().await;
}
on_both_backends!(job_actions_take_no_body);

/// The other actions that take no body — revoking a token, deleting a webhook endpoint,
/// rotating its secret, redelivering a delivery — refuse a body as the job actions do, before
/// they act: a malformed one 400 `malformed_json`, a body that is not JSON 415, any other JSON
/// 422. They revoked, deleted and rotated whatever body came with them before. Nothing
/// changes; the same actions with no body (or `{}`) go through.
async fn token_and_webhook_actions_take_no_body(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let token = app
        .post_json(
            "/v1/tokens",
            &t.admin,
            &json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    let token_id = token["id"].as_str().unwrap().to_owned();
    let hook = app
        .post_json(
            "/v1/webhooks",
            &t.admin,
            &json!({"url": "https://hooks.example.com/licensor", "events": ["job.finished"]}),
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let delivery = uuid::Uuid::now_v7();
    let read = || async {
        let tokens = app.get_json("/v1/tokens", &t.admin).await;
        let hooks = app.get_json("/v1/webhooks", &t.admin).await;
        let audit = app.get_json("/v1/audit?limit=500", &t.admin).await;
        json!({"tokens": tokens, "hooks": hooks, "audit": audit["data"]})
    };
    let before = read().await;
    let actions = [
        (
            reqwest::Method::POST,
            format!("/v1/tokens/{token_id}/revoke"),
        ),
        (reqwest::Method::DELETE, format!("/v1/webhooks/{hook_id}")),
        (
            reqwest::Method::POST,
            format!("/v1/webhooks/{hook_id}/rotate-secret"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/webhooks/{hook_id}/deliveries/{delivery}/redeliver"),
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path) in &actions {
        for (body, content_type, status, code) in [
            (
                r#"{"bogus":"#,
                Some("application/json"),
                400,
                "malformed_json",
            ),
            ("garbage", Some("text/plain"), 415, "unsupported_media_type"),
            (
                r#"{"force": true}"#,
                Some("application/json"),
                422,
                "invalid_body",
            ),
            ("[]", Some("application/json"), 422, "invalid_body"),
        ] {
            let sent = (body, content_type, status, code);
            if let Err(e) = refused_body(&app, &t.admin, method.clone(), path, sent).await {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(read().await, before, "no refused action changed anything");
    // With no body, or `{}`, they act.
    let revoked = app
        .post(&format!("/v1/tokens/{token_id}/revoke"), &t.admin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200, "{:?}", revoked.text().await);
    let rotated = app
        .post_empty(&format!("/v1/webhooks/{hook_id}/rotate-secret"), &t.admin)
        .await;
    assert_eq!(rotated.status().as_u16(), 200, "{:?}", rotated.text().await);
    let deleted = app
        .http
        .delete(format!("{}/v1/webhooks/{hook_id}", app.url))
        .bearer_auth(&t.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204, "{:?}", deleted.text().await);
    app.stop().await;
}
on_both_backends!(token_and_webhook_actions_take_no_body);

/// A job whose stored status is no status licensor knows (a damaged row) is licensor's own
/// failure, not the caller's: reading it, listing it or acting on it answers 500 `internal`
/// with nothing of the stored value, never a 422 that blames the request, and nothing changes.
async fn a_corrupt_stored_status_is_an_internal_failure(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    let id = stored_job(&app, t.id, "'half_done_by_hand'").await;
    use sea_orm::{EntityTrait, QuerySelect};
    let audit_before = app.get_json("/v1/audit?limit=500", &t.admin).await;
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::GET, "/v1/jobs".to_owned()),
        (Method::POST, format!("/v1/jobs/{id}/rerun")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.url))
            .bearer_auth(&t.admin)
            .send()
            .await
            .unwrap();
        let body = check_problem(resp, 500, "internal")
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            !body.to_string().contains("half_done_by_hand"),
            "{method} {path}: the stored value reached the answer: {body}"
        );
    }
    let stored = licensor_core::entities::job::Entity::find_by_id(id)
        .select_only()
        .column(licensor_core::entities::job::Column::Runs)
        .into_tuple::<i32>()
        .one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, Some(1), "no action ran");
    let audit_after = app.get_json("/v1/audit?limit=500", &t.admin).await;
    assert_eq!(
        audit_after["data"], audit_before["data"],
        "nothing was recorded"
    );
    app.stop().await;
}
on_both_backends!(a_corrupt_stored_status_is_an_internal_failure);

/// An action refuses from the job as it is, and a dry run refuses exactly what the action does:
/// a paused or previewed job is not undone (it has not ended), and a cancelled preview is not
/// rerun — alone, by ids or by filter, with `dry_run` or without.
async fn dry_runs_and_actions_refuse_alike(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("acme").await;
    for status in ["'paused'", "'previewed'", "'queued'"] {
        let id = stored_job_of(&app, t.id, status, status == "'previewed'").await;
        let resp = app
            .post_empty(&format!("/v1/jobs/{id}/undo"), &t.admin)
            .await;
        expect_problem(resp, 409, "not_undoable").await;
    }
    let preview = stored_job_of(&app, t.id, "'cancelled'", true).await;
    let resp = app
        .post_empty(&format!("/v1/jobs/{preview}/rerun"), &t.operator)
        .await;
    expect_problem(resp, 409, "not_rerunnable").await;
    for dry_run in [true, false] {
        for body in [
            json!({"job_ids": [preview], "dry_run": dry_run}),
            json!({"filter": {"status": ["cancelled"]}, "dry_run": dry_run}),
        ] {
            let answer = app.post_json("/v1/jobs/rerun", &t.operator, &body).await;
            assert_eq!(answer["acted_on"], 0, "{body}: {answer}");
            assert_eq!(answer["refused"], 1, "{body}: {answer}");
            assert_eq!(
                answer["rejected"][0]["code"], "not_rerunnable",
                "{body}: {answer}"
            );
        }
    }
    let job = app.get_json(&format!("/v1/jobs/{preview}"), &t.admin).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["runs"], 1);
    app.stop().await;
}
on_both_backends!(dry_runs_and_actions_refuse_alike);

fn clip(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[tokio::test]
async fn rate_limit_per_token() {
    let Some(app) = TestApp::start_with(
        Backend::Embedded,
        Roles::API,
        "[api]\nrate_limit_per_second = 1\nrate_limit_burst = 3\n",
    )
    .await
    else {
        return;
    };
    let t = app.tenant("acme").await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/v1/licenses", &t.admin)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let limited = app.get("/v1/licenses", &t.admin).send().await.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body = expect_problem(limited, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
    // A mutation over the limit is refused too, and an Idempotency-Key does not keep the 429:
    // the same request is answered once the wait is over.
    let create = || {
        app.post("/v1/licenses", &t.admin)
            .header("idempotency-key", "limited-create")
            .json(&json!({"name": "Visio", "seats": 1}))
    };
    expect_problem(create().send().await.unwrap(), 429, "rate_limited").await;

    // Another token of the same tenant has a budget of its own.
    assert_eq!(
        app.get("/v1/licenses", &t.viewer)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Requests without a token are not counted (and are not limited): they answer 401.
    for _ in 0..5 {
        let resp = app
            .http
            .get(format!("{}/v1/licenses", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    // Health, metrics, the document and the Job Monitor's files are never limited.
    for _ in 0..10 {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
            let resp = app
                .http
                .get(format!("{}{path}", app.url))
                .bearer_auth(&t.admin)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "GET {path}");
        }
    }

    tokio::time::sleep(Duration::from_secs(retry_after + 1)).await;
    let created = create().send().await.unwrap();
    assert_eq!(created.status(), 201);
    assert!(created.headers().get("idempotent-replayed").is_none());
    let replay = create().send().await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert!(
        app.text("/metrics")
            .await
            .contains("licensor_http_rate_limited_total")
    );
    app.stop().await;
}

/// `/openapi.json` names every answer a route can give besides its own: 401 and 429 (with
/// `Retry-After`) where a token is needed, 400/413/415/422 for a JSON body, 404 and 400 (a control
/// character) for a path id, 409 where the tenant's directory is read, and every `$ref` in it
/// resolves.
#[tokio::test]
async fn openapi_documents_the_common_answers() {
    let doc = serde_json::to_value(licensor::api::openapi()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "$ref {name} resolves");
    }
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            let label = format!("{method} {path}");
            if op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(|s| !s.is_empty()))
            {
                secured += 1;
                assert!(has("401") && has("429"), "{label}: {responses:?}");
                assert!(
                    responses["429"]["headers"]["Retry-After"].is_object(),
                    "{label}"
                );
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(has(s), "{label} documents {s}");
                }
            }
            if path.contains('{') {
                assert!(has("404") && has("400"), "{label} documents 404 and 400");
            }
            if path.starts_with("/v1/directory/") {
                assert!(has("409"), "{label} documents 409");
            }
            // Answers holding a secret shown once are never kept for a repeat.
            let shows_secret = [
                "/v1/tokens",
                "/v1/webhooks",
                "/v1/webhooks/{id}/rotate-secret",
            ]
            .contains(&path.as_str());
            if method == "post" && !shows_secret && op.get("security").is_some() {
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params.iter().any(|p| p["name"] == "Idempotency-Key"),
                    "{label} documents Idempotency-Key"
                );
            }
        }
    }
    assert!(secured >= 20, "{secured} routes need a token");
}

/// Requests that read and then write in one transaction, sent at the same time, each get their
/// answer — never a 500. (On SQLite a deferred transaction whose read snapshot went stale
/// because another connection wrote meanwhile cannot take the write lock; every transaction
/// begins `IMMEDIATE` there.)
async fn concurrent_writes_never_answer_500(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("concurrent").await;
    let created = app
        .post_json(
            "/v1/webhooks",
            &t.admin,
            &json!({"url": "https://hooks.example.com/licensor", "events": ["job.finished"]}),
        )
        .await;
    let hook = created["id"].as_str().unwrap().to_owned();
    const ROUNDS: usize = 6;
    const AT_ONCE: usize = 8;
    let mut wrong = Vec::new();
    let mut secrets = std::collections::HashSet::new();
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..AT_ONCE {
            let http = app.http.clone();
            let url = app.url.clone();
            let token = t.admin.clone();
            let hook = hook.clone();
            tasks.spawn(async move {
                let req = match i % 3 {
                    0 | 1 => http.post(format!("{url}/v1/webhooks/{hook}/rotate-secret")),
                    _ => http
                        .post(format!("{url}/v1/tokens"))
                        .json(&json!({"name": format!("r{round}-{i}"), "role": "viewer"})),
                };
                let resp = req.bearer_auth(token).send().await.unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (i % 3, status, body)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (what, status, body) = done.unwrap();
            match (what, status) {
                (0 | 1, 200) => {
                    secrets.insert(body["secret"].as_str().unwrap().to_owned());
                }
                (2, 201) => {}
                _ => wrong.push(format!("{what}: {status} {body}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let rotations = (0..AT_ONCE).filter(|i| i % 3 != 2).count() * ROUNDS;
    assert_eq!(secrets.len(), rotations, "every rotation gave a new secret");
    let tokens = app.list("/v1/tokens", &t.admin).await;
    assert_eq!(
        tokens.len(),
        3 + (AT_ONCE - rotations / ROUNDS) * ROUNDS,
        "every token created was kept"
    );
    app.stop().await;
}
on_both_backends!(concurrent_writes_never_answer_500);

/// A malformed id in the path is "not found", naming the value — not the framework's parser.
async fn bad_ids_in_the_path_are_named(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("bad-ids").await;
    for (path, detail) in [
        (
            "/v1/jobs/not-a-uuid",
            "no such resource: `not-a-uuid` is not a valid id",
        ),
        (
            "/v1/licenses/1/assignments",
            "no such resource: `1` is not a valid id",
        ),
    ] {
        let resp = app.get(path, &t.viewer).send().await.unwrap();
        let problem = expect_problem(resp, 404, "not_found").await;
        assert_eq!(problem["detail"], detail, "{path}: {problem}");
    }
    app.stop().await;
}
on_both_backends!(bad_ids_in_the_path_are_named);

/// A route that takes no query parameters refuses any (400 `invalid_query`) before it reads
/// anything, as routes with parameters refuse those they do not take: `/export?format=json`
/// asked for a format the export's file does not follow, and got CSV without a word. Without
/// the parameter each answers as it did (a job or license that does not exist: 404).
async fn routes_without_parameters_refuse_any(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("no-parameters").await;
    let id = uuid::Uuid::new_v4();
    for (path, without) in [
        (format!("/v1/jobs/{id}"), 404),
        (format!("/v1/jobs/{id}/runs"), 404),
        (format!("/v1/jobs/{id}/errors"), 404),
        (format!("/v1/jobs/{id}/export"), 404),
        (format!("/v1/licenses/{id}"), 404),
        (format!("/v1/licenses/{id}/assignments/{id}"), 404),
        (format!("/v1/licenses/{id}/started"), 404),
        (format!("/v1/webhooks/{id}"), 404),
        ("/v1/tenant".to_owned(), 200),
        ("/v1/tokens".to_owned(), 200),
    ] {
        for query in ["format=json", "foo=bar", "foo", "limit=10"] {
            let resp = app
                .get(&format!("{path}?{query}"), &t.admin)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(resp, 400, "invalid_query").await;
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("unknown field"),
                "{path}?{query}: {problem}"
            );
        }
        for plain in [path.clone(), format!("{path}?")] {
            let resp = app.get(&plain, &t.admin).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), without, "{plain}");
        }
    }
    app.stop().await;
}
on_both_backends!(routes_without_parameters_refuse_any);

/// A control character (NUL above all: PostgreSQL keeps none in text) in a path segment or a
/// query value is refused for every route before it reaches a handler or the database: 400
/// `invalid_path` / `invalid_query`, with or without a token or an `Idempotency-Key`, never a
/// 500, and nothing changes.
async fn control_characters_in_paths_and_queries_are_refused(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("control").await;
    let (l, _) = visio_held_by_ada(&app, &t).await;
    let before = snapshot(&app, &t, &l).await;
    let nobody = "00000000-0000-0000-0000-000000000000";
    let mut cases = vec![
        get("/v1/assignees/user/%00/assignments", 400, "invalid_path"),
        get(
            "/v1/assignees/asset/lap%00top/assignments",
            400,
            "invalid_path",
        ),
        get("/v1/assignees/user/ada%0A/assignments", 400, "invalid_path"),
        get("/v1/assignees/user/ada%7F/assignments", 400, "invalid_path"),
        get(
            "/v1/assignees/user/ada%C2%85/assignments",
            400,
            "invalid_path",
        ),
        post("/v1/assignees/user/%00/checkin", "{}", 400, "invalid_path"),
        post(
            "/v1/assignees/user/ada%00/checkin",
            "{}",
            400,
            "invalid_path",
        ),
        get("/v1/members/%00/history", 400, "invalid_path"),
        // Free text whose escapes are not UTF-8 is a malformed member or assignee, not a
        // missing object.
        get("/v1/members/%FF%FE/history", 400, "invalid_member"),
        // A query value whose escapes are not UTF-8 is refused, not searched for as U+FFFD.
        get("/v1/licenses?search=%FF", 400, "invalid_query"),
        // A route that reads no query refuses one that is not UTF-8 too, and creates nothing.
        post(
            "/v1/licenses?search=%FF",
            r#"{"name": "q", "seats": 1}"#,
            400,
            "invalid_query",
        ),
        get("/v1/audit?action=%C3", 400, "invalid_query"),
        get("/v1/jobs?kind=%FF", 400, "invalid_query"),
        get(
            "/v1/members/ada%E9%40contoso.se/history",
            400,
            "invalid_member",
        ),
        get(
            "/v1/assignees/user/%FF/assignments",
            422,
            "invalid_assignee",
        ),
        post(
            "/v1/assignees/asset/PC%E9/checkin",
            "{}",
            422,
            "invalid_assignee",
        ),
        get(
            "/v1/members/ada%1F%40contoso.se/history",
            400,
            "invalid_path",
        ),
        get("/v1/licenses/%00", 400, "invalid_path"),
        get(
            format!("/v1/licenses/{l}%00/assignments"),
            400,
            "invalid_path",
        ),
        send(
            Method::PATCH,
            format!("/v1/licenses/{l}%00"),
            r#"{"notes": "x"}"#,
            400,
            "invalid_path",
        ),
        get(
            format!("/v1/jobs/{nobody}/changes?user=%00"),
            400,
            "invalid_query",
        ),
        get(
            format!("/v1/jobs/{nobody}/changes?user=ada%09%40contoso.se"),
            400,
            "invalid_query",
        ),
        get(
            "/v1/assignees/user/ada/assignments?cursor=%00",
            400,
            "invalid_query",
        ),
        get("/v1/audit?target_id=%7F", 400, "invalid_query"),
        get("/v1/licenses?%00=1", 400, "invalid_query"),
        // A parameter name whose escapes are not UTF-8 is named as it was sent.
        get("/v1/licenses?%FF=1", 400, "invalid_query"),
        get("/v1/jobs?st%E9tus=failed", 400, "invalid_query"),
        get("/v1/directory/users?search=a%C2%85", 400, "invalid_query"),
    ];
    // Through the idempotency layer alike.
    cases.push(Case {
        headers: vec![("idempotency-key", "nul-path-1".into())],
        ..post(
            "/v1/assignees/user/ada%00/checkin",
            "{}",
            400,
            "invalid_path",
        )
    });
    let mut wrong = Vec::new();
    for case in cases {
        let mut req = app
            .http
            .request(case.method.clone(), format!("{}{}", app.url, case.path))
            .bearer_auth(&t.admin);
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in &case.headers {
            req = req.header(*name, value);
        }
        if let Some(body) = case.body.clone() {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap();
        match check_problem(resp, case.status, case.code).await {
            Ok(problem) => {
                let detail = problem["detail"].as_str().unwrap_or_default();
                if detail.chars().any(char::is_control) {
                    wrong.push(format!(
                        "{}: the detail repeats the value: {detail:?}",
                        case.path
                    ));
                }
                if detail.contains('\u{FFFD}') {
                    wrong.push(format!(
                        "{}: the detail shows bytes that are not UTF-8 as U+FFFD: {detail:?}",
                        case.path
                    ));
                }
            }
            Err(e) => wrong.push(format!("{} {}: {e}", case.method, case.path)),
        }
    }
    // A parameter given twice is named, with how to give a list of values.
    for path in [
        "/v1/jobs?status=failed&status=finished",
        "/v1/licenses?search=a&limit=2&search=b",
        "/v1/audit?limit=1&limit=2",
        "/v1/licenses?=&=",
    ] {
        let resp = app.get(path, &t.admin).send().await.unwrap();
        match check_problem(resp, 400, "invalid_query").await {
            Ok(problem) => {
                let detail = problem["detail"].as_str().unwrap_or_default();
                if !detail.contains("is given more than once")
                    || !detail.contains("comma-separated")
                    || detail.starts_with(' ')
                {
                    wrong.push(format!("{path}: {detail:?}"));
                }
            }
            Err(e) => wrong.push(format!("{path}: {e}")),
        }
    }
    // Without a token too: the request is malformed before it is anyone's.
    let resp = app
        .get_anonymous("/v1/assignees/user/%00/assignments")
        .await;
    if let Err(e) = check_problem(resp, 400, "invalid_path").await {
        wrong.push(format!("anonymous: {e}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        snapshot(&app, &t, &l).await,
        before,
        "no refused request changed anything"
    );
    // The same routes with printable values answer as before.
    let held = app
        .get_json("/v1/assignees/user/ada/assignments", &t.admin)
        .await;
    assert_eq!(held["data"].as_array().map(Vec::len), Some(1), "{held}");
    let history = app
        .get_json("/v1/members/ada%40contoso.se/history", &t.admin)
        .await;
    assert_eq!(history["data"], json!([]), "{history}");
    app.stop().await;
}
on_both_backends!(control_characters_in_paths_and_queries_are_refused);

/// A body that is not JSON is said to be malformed; a body that is JSON of the wrong shape is said
/// to be JSON, and where it is wrong — not "failed to parse as JSON".
async fn bodies_say_whether_they_are_not_json_or_the_wrong_shape(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let t = app.tenant("wording").await;
    for (body, status, code, says) in [
        (r#"{"kind": "#, 400, "malformed_json", None),
        // Cut short after a field the body may not have: still not JSON, whatever serde meets
        // first while it reads the body into the request.
        (r#"{"bogus":"#, 400, "malformed_json", None),
        (
            r#"{"kind": "assign", "bogus": [1, "#,
            400,
            "malformed_json",
            None,
        ),
        (
            r#"{"kind": "assign", "groups": "all""#,
            400,
            "malformed_json",
            None,
        ),
        (
            r#"{"kind": 1, "groups": []}"#,
            422,
            "invalid_body",
            Some("the request body is JSON but not of the expected shape: kind: "),
        ),
        (
            "[1, 2]",
            422,
            "invalid_body",
            Some("the request body is JSON but not of the expected shape: "),
        ),
        (
            r#"{"kind": "assign", "groups": "all"}"#,
            422,
            "invalid_body",
            Some("the request body is JSON but not of the expected shape: groups: "),
        ),
    ] {
        let resp = app.post_raw("/v1/jobs", &t.admin, body).await;
        let problem = expect_problem(resp, status, code).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        match says {
            Some(says) => {
                assert!(detail.starts_with(says), "{body}: {problem}");
                assert!(!detail.contains("Failed to"), "{body}: {problem}");
            }
            None => assert!(!detail.contains("shape"), "{body}: {problem}"),
        }
    }
    app.stop().await;
}
on_both_backends!(bodies_say_whether_they_are_not_json_or_the_wrong_shape);

/// A caller whose role does not allow a route is told 403 `forbidden` whatever body it sends:
/// the role is checked from the headers, before the body is read, so a viewer learns nothing of
/// what an admin's body would be refused for. Before, a viewer's malformed body was answered
/// 400 `malformed_json` and a body of the wrong shape 422 `invalid_body` by every route that
/// checked the role inside its handler. Nothing is made.
async fn a_role_is_checked_before_the_body(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("roles").await;
    let id = uuid::Uuid::now_v7();
    let admin_only = [
        ("POST", "/v1/jobs".to_owned()),
        ("POST", "/v1/licenses".to_owned()),
        ("PATCH", format!("/v1/licenses/{id}")),
        ("POST", format!("/v1/licenses/{id}/checkout")),
        ("POST", "/v1/tokens".to_owned()),
        ("POST", "/v1/webhooks".to_owned()),
        ("PATCH", format!("/v1/webhooks/{id}")),
    ];
    let operator = [
        ("POST", format!("/v1/licenses/{id}/checkin")),
        ("POST", format!("/v1/assignees/user/{id}/checkin")),
        ("POST", "/v1/jobs/rerun".to_owned()),
        ("POST", "/v1/jobs/cancel".to_owned()),
    ];
    let callers = admin_only
        .iter()
        .flat_map(|r| [(r, &t.viewer, "viewer"), (r, &t.operator, "operator")])
        .chain(operator.iter().map(|r| (r, &t.viewer, "viewer")));
    for ((method, path), token, who) in callers {
        for body in ["{", r#"{"not": "a field"}"#, "[1, 2]"] {
            let req = match *method {
                "PATCH" => app.patch(path, token),
                _ => app.post(path, token),
            };
            let resp = req
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let what = format!("{who}: {method} {path} {body}");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 403, "{what}: {answer}");
            assert_eq!(answer["code"], "forbidden", "{what}: {answer}");
        }
    }
    let nothing = json!([]);
    for list in ["/v1/jobs", "/v1/licenses", "/v1/webhooks"] {
        let listed = app.get_json(list, &t.admin).await;
        assert_eq!(listed["data"], nothing, "{list}: {listed}");
    }
    app.stop().await;
}
on_both_backends!(a_role_is_checked_before_the_body);

/// Every connection of `pool`, each held in a transaction until dropped. The transactions are
/// deferred: they hold connections, not SQLite's write lock.
async fn take_every_connection(
    pool: &sea_orm::DatabaseConnection,
) -> Vec<sea_orm::DatabaseTransaction> {
    use sea_orm::TransactionTrait;
    let size = match pool.get_database_backend() {
        sea_orm::DbBackend::Postgres => pool
            .get_postgres_connection_pool()
            .options()
            .get_max_connections(),
        _ => pool
            .get_sqlite_connection_pool()
            .options()
            .get_max_connections(),
    };
    let mut taken = Vec::new();
    for _ in 0..size {
        // Deferred on purpose (see above), so not `licensor_core::db::begin`.
        #[allow(clippy::disallowed_methods)]
        taken.push(pool.begin().await.expect("take a connection"));
    }
    taken
}

/// A request answered 503 because every connection of the API's pool was busy (a burst of
/// submits) releases its `Idempotency-Key` once a connection is free (only its own claim of
/// the key: a late retry of the release never frees a later request's), and a kept answer is
/// kept the same way: the key is never left "in progress" (409 `idempotency_key_in_use` to every
/// retry for a day). Before, the release ran once, on the same busy pool, and failed — 374 of
/// 500 submits sent at once by `licensor-bench --scenario msp` got 503, and their retries 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_released_when_the_pool_frees_up_postgres() {
    use licensor_core::config::DatabaseUrl;
    use licensor_core::db::{self, PoolRole};
    use licensor_core::idempotency::{self, Claim, Stored};
    let Some(app) = TestApp::start_with(Backend::Production, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("contoso").await;
    let url = app.data.pg.as_ref().unwrap().url.clone();
    let api = db::connect_as(&DatabaseUrl::Postgres(url), PoolRole::Api)
        .await
        .unwrap();
    // Every connection of the pool is held for 2.5 s: longer than a request waits for one (1 s)
    // after the check below (1 s) has waited for one.
    let hold = || take_every_connection(&api);
    let free_later = |held: Vec<_>| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            drop(held);
        })
    };
    let claim = |key: &'static str| {
        let api = &api;
        async move {
            match idempotency::claim(api, t.id, key, "fp").await.unwrap() {
                Claim::Fresh(claim) => Some(claim),
                _ => None,
            }
        }
    };
    let first = claim("released").await.expect("a new key");
    let holders = free_later(hold().await);
    assert!(
        !db::ping(&api).await,
        "no connection is free while they are held"
    );
    idempotency::release(&api, t.id, "released", first)
        .await
        .unwrap();
    holders.await.unwrap();
    let second = claim("released").await.expect("the key was released");
    // A late retry of the first release (its delete took effect, but the connection failed
    // before it was told so) leaves the second claim alone.
    idempotency::release(&api, t.id, "released", first)
        .await
        .unwrap();
    assert!(
        claim("released").await.is_none(),
        "the second claim still holds the key"
    );
    idempotency::release(&api, t.id, "released", second)
        .await
        .unwrap();

    let kept = claim("kept").await.expect("a new key");
    let holders = free_later(hold().await);
    assert!(
        !db::ping(&api).await,
        "no connection is free while they are held"
    );
    let answer = Stored {
        status: 201,
        content_type: Some("application/json".into()),
        body: b"{}".to_vec(),
        location: None,
    };
    idempotency::finish(&api, t.id, "kept", kept, &answer)
        .await
        .unwrap();
    holders.await.unwrap();
    match idempotency::claim(&api, t.id, "kept", "fp").await.unwrap() {
        Claim::Replay(stored) => assert_eq!(stored.status, 201),
        other => panic!("the answer was kept: {other:?}"),
    }
    app.stop().await;
}

/// A key's claim is held for its lease, renewed while its request runs; one whose lease ran out
/// unanswered (its process stopped) is told apart from one still being answered, and an answer
/// kept is replayed whatever its lease.
async fn a_claim_whose_lease_ran_out_is_interrupted(backend: Backend) {
    use licensor_core::entities::idempotency_key;
    use licensor_core::idempotency::{self, Claim, Stored};
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("leases").await;
    let lease_of = |claim: i64| {
        let db = &app.db;
        async move {
            idempotency_key::Entity::find_by_id(claim)
                .one(db)
                .await
                .unwrap()
                .unwrap()
                .lease_until
                .unwrap()
        }
    };
    // As a process that stopped leaves it: claimed, its lease over.
    let run_out = |claim: i64| {
        let db = &app.db;
        async move {
            idempotency_key::Entity::update_many()
                .col_expr(
                    idempotency_key::Column::LeaseUntil,
                    Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
                )
                .filter(idempotency_key::Column::Id.eq(claim))
                .exec(db)
                .await
                .unwrap();
        }
    };
    let claim = |key: &'static str| {
        let db = &app.db;
        async move { idempotency::claim(db, t.id, key, "fp").await.unwrap() }
    };
    let Claim::Fresh(first) = claim("k").await else {
        panic!("a new key")
    };
    let leased = lease_of(first).await;
    let left = leased - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(25) && left <= chrono::Duration::seconds(30),
        "{left}"
    );
    assert!(matches!(claim("k").await, Claim::InProgress));
    run_out(first).await;
    assert!(matches!(claim("k").await, Claim::Interrupted));
    // A renewal of a request still running holds the key again.
    idempotency::renew(&app.db, t.id, "k", first).await.unwrap();
    assert!(lease_of(first).await > chrono::Utc::now());
    assert!(matches!(claim("k").await, Claim::InProgress));
    // Kept: replayed, whatever the lease; a renewal of a kept key leaves it alone.
    let answer = Stored {
        status: 202,
        content_type: Some("application/json".into()),
        body: b"{}".to_vec(),
        location: None,
    };
    idempotency::finish(&app.db, t.id, "k", first, &answer)
        .await
        .unwrap();
    run_out(first).await;
    idempotency::renew(&app.db, t.id, "k", first).await.unwrap();
    assert!(lease_of(first).await < chrono::Utc::now());
    match claim("k").await {
        Claim::Replay(stored) => assert_eq!(stored.status, 202),
        other => panic!("the answer was kept: {other:?}"),
    }
    // Another request's key is its own.
    let Claim::Fresh(other) = claim("other").await else {
        panic!("another key is new")
    };
    // A day later (`RETENTION_HOURS`) the kept answer is forgotten, with every other expired
    // key of the tenant, at the tenant's next claim of any key: the key is new again.
    idempotency_key::Entity::update_many()
        .col_expr(
            idempotency_key::Column::CreatedAt,
            Expr::value(
                chrono::Utc::now() - chrono::Duration::hours(idempotency::RETENTION_HOURS + 1),
            ),
        )
        .filter(idempotency_key::Column::Id.is_in([first, other]))
        .exec(&app.db)
        .await
        .unwrap();
    assert!(matches!(claim("third").await, Claim::Fresh(_)));
    let left = idempotency_key::Entity::find()
        .filter(idempotency_key::Column::TenantId.eq(t.id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["third"],
        "the expired keys were deleted"
    );
    assert!(matches!(claim("k").await, Claim::Fresh(_)));
    app.stop().await;
}
on_both_backends!(a_claim_whose_lease_ran_out_is_interrupted);

/// A retry whose claim of a key finds the key's earlier claim, which is then released (its
/// request was answered 503) before the retry reads the key back, claims the key afresh: it is
/// never told the key does not exist. Two requests with one key claim and release it 300 times
/// each, side by side; each claim is answered (fresh, or in progress), never an error. Before,
/// a resubmission in `licensor-bench --scenario msp` (PostgreSQL) was answered 404 "idempotency
/// key not found" this way.
async fn a_key_released_while_claimed_again_is_claimed_afresh(backend: Backend) {
    use licensor_core::idempotency::{self, Claim};
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("churn").await;
    let churn = || {
        let db = app.db.clone();
        tokio::spawn(async move {
            let (mut fresh, mut in_progress) = (0, 0);
            for _ in 0..300 {
                match idempotency::claim(&db, t.id, "churned", "fp").await {
                    Ok(Claim::Fresh(claim)) => {
                        fresh += 1;
                        idempotency::release(&db, t.id, "churned", claim)
                            .await
                            .unwrap();
                    }
                    Ok(Claim::InProgress) => in_progress += 1,
                    other => panic!("a claim of a key claimed and released: {other:?}"),
                }
            }
            (fresh, in_progress)
        })
    };
    let (a, b) = (churn(), churn());
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        a.0 > 0 && b.0 > 0,
        "each request claimed the key: {a:?} {b:?}"
    );
    app.stop().await;
}
on_both_backends!(a_key_released_while_claimed_again_is_claimed_afresh);

/// A claim of an `Idempotency-Key` renewed while every connection of the API's pool is taken
/// for longer than a connection wait is renewed once one frees: the renewal is not lost, so a
/// live request's retry is never told its server stopped (409 `idempotency_key_interrupted`).
/// Before, a renewal that found no connection free within the wait failed, and the next came
/// 10 s later: in `licensor-bench --scenario msp` on PostgreSQL, 500 submits at once held the
/// API's connections long enough for a 503'd submit's key to outlive its lease while its
/// release waited, and its retry was answered 409 `idempotency_key_interrupted`.
async fn a_key_renewed_while_the_pool_is_taken_is_renewed_once_it_frees(backend: Backend) {
    use licensor_core::db::PoolRole;
    use licensor_core::entities::idempotency_key;
    use licensor_core::idempotency::{self, Claim};
    use sea_orm::EntityTrait;
    let Some(app) = TestApp::start_with(backend, Roles::API, "").await else {
        return;
    };
    let t = app.tenant("starved").await;
    let Claim::Fresh(claim) = idempotency::claim(&app.db, t.id, "held", "fp")
        .await
        .expect("claim")
    else {
        panic!("a new key is claimed fresh");
    };
    let leased = || async {
        idempotency_key::Entity::find_by_id(claim)
            .one(&app.db)
            .await
            .expect("read the key")
            .expect("the key is kept")
            .lease_until
            .expect("a claim has a lease")
    };
    let before = leased().await;
    // A pool as the API has it (on PostgreSQL: 8 connections, 1 s connection wait), every
    // connection taken, each in a transaction, for three connection waits.
    let api = licensor_core::db::connect_as(&app.data.settings("").database, PoolRole::Api)
        .await
        .expect("the API's pool");
    let taken = take_every_connection(&api).await;
    let renewal = tokio::spawn({
        let db = api.clone();
        async move { idempotency::renew(&db, t.id, "held", claim).await }
    });
    tokio::time::sleep(3 * licensor_core::db::API_ACQUIRE_TIMEOUT).await;
    assert!(!renewal.is_finished(), "the renewal waits for a connection");
    drop(taken);
    tokio::time::timeout(Duration::from_secs(10), renewal)
        .await
        .expect("the renewal ends once a connection frees")
        .expect("renewal task")
        .expect("the renewal is made, not lost");
    let after = leased().await;
    assert!(
        after > before + chrono::Duration::seconds(2),
        "the lease runs from the renewal: {before} → {after}"
    );
    app.stop().await;
}
on_both_backends!(a_key_renewed_while_the_pool_is_taken_is_renewed_once_it_frees);

/// A refusal quotes what the request sent clipped to 80 characters: an unknown query parameter
/// of 50,000 characters, a body's unknown field of as many, and a 100,000-character string where
/// a number goes were once echoed whole in their 400 / 422. Nothing is created.
#[tokio::test]
async fn refusals_quote_what_was_sent_clipped() {
    let Some(app) = TestApp::start(Backend::Embedded).await else {
        return;
    };
    let t = app.tenant("quotes").await;
    let long = "q".repeat(50_000);
    let clipped = |detail: &str| detail.chars().count() < 400 && detail.contains('…');
    let resp = app
        .get(&format!("/v1/licenses?{long}=1"), &t.admin)
        .send()
        .await
        .unwrap();
    let body = check_problem(resp, 400, "invalid_query").await.unwrap();
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(clipped(detail), "{detail}");
    assert!(
        detail.contains(&"q".repeat(80)),
        "the name's start is shown: {detail}"
    );
    for (sent, code) in [
        (
            format!(r#"{{"name": "x", "seats": 1, "{long}": 1}}"#),
            "invalid_body",
        ),
        (
            format!(r#"{{"name": "x", "seats": "{}"}}"#, "9".repeat(100_000)),
            "invalid_body",
        ),
    ] {
        let resp = app
            .post("/v1/licenses", &t.admin)
            .header("content-type", "application/json")
            .body(sent)
            .send()
            .await
            .unwrap();
        let body = check_problem(resp, 422, code).await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(clipped(detail), "{detail}");
    }
    // What a refusal repeats shows hidden characters as escapes, never raw.
    let resp = app
        .post("/v1/licenses", &t.admin)
        .header("content-type", "application/json")
        .body(r#"{"name": "x", "seats": 1, "a\u001b[31m\u202eb": 1}"#)
        .send()
        .await
        .unwrap();
    let body = check_problem(resp, 422, "invalid_body").await.unwrap();
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(r"a\u{1b}[31m\u{202e}b") && !detail.contains(['\u{1b}', '\u{202e}']),
        "{detail:?}"
    );
    // A filter's value, a path's id: each repeated clipped.
    let job = "00000000-0000-4000-8000-000000000000";
    for path in [
        format!("/v1/jobs?status={long}"),
        format!("/v1/jobs?status=running,{long}"),
        format!("/v1/jobs?kind={long}"),
        format!("/v1/jobs/{job}/items?status={long}"),
        format!("/v1/jobs/{job}/changes?status={long}"),
    ] {
        let resp = app.get(&path, &t.admin).send().await.unwrap();
        let body = check_problem(resp, 400, "invalid_query").await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(clipped(detail), "{}: {detail}", &path[..30]);
    }
    let resp = app
        .post("/v1/jobs", &t.admin)
        .json(&json!({"kind": "export", "groups": [long]}))
        .send()
        .await
        .unwrap();
    let body = check_problem(resp, 422, "invalid_group_id").await.unwrap();
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(clipped(detail), "{detail}");
    let listed = app.get_json("/v1/licenses", &t.admin).await;
    assert_eq!(listed["data"], json!([]), "nothing was created: {listed}");
    app.stop().await;
}
