//! Control API: scenario, faults, stats, reset, user inspection; and the 80% warning header.

mod common;

use std::time::{Duration, Instant};

use common::*;
use graph_emulator::{ENTERPRISEPACK_SKU_ID, Faults, GroupSpec, Scenario};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Fields a `PUT /_emulator/faults` leaves out take the emulator's starting faults, not Graph's
/// defaults: `{}` clears the faults added since without undoing the write budget the emulator
/// was started with (`licensor demo`'s large one); a field given replaces its starting value.
#[tokio::test]
async fn faults_left_out_keep_the_starting_ones() {
    let starting = Faults {
        write_budget: graph_emulator::Budget {
            limit: 30_000,
            window_ms: 150_000,
        },
        ..Faults::default()
    };
    let env = start_with(Scenario::simple(2, 20, 20), starting).await;
    let r = env
        .control(Method::PUT, "/faults", Some(json!({"error_rate": 1.0})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["error_rate"], 1.0, "{}", r.body);
    assert_eq!(r.body["write_budget"]["limit"], 30_000, "{}", r.body);
    let r = env.control(Method::PUT, "/faults", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let f = env.control(Method::GET, "/faults", None).await.body;
    assert_eq!(f["error_rate"], 0.0, "{f}");
    assert_eq!(
        f["write_budget"],
        json!({"limit": 30_000, "window_ms": 150_000}),
        "{f}"
    );
    assert_eq!(env.get("/subscribedSkus").await.status, StatusCode::OK);
    let r = env
        .control(
            Method::PUT,
            "/faults",
            Some(json!({"write_budget": {"limit": 3_000, "window_ms": 150_000}})),
        )
        .await;
    assert_eq!(r.body["write_budget"]["limit"], 3_000, "{}", r.body);
    // A refused body changes nothing.
    let r = env
        .control(Method::PUT, "/faults", Some(json!({"error_rate": 2.0})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let f = env.control(Method::GET, "/faults", None).await.body;
    assert_eq!(f["write_budget"]["limit"], 3_000, "{f}");
    assert_eq!(f["error_rate"], 0.0, "{f}");
    env.emu.shutdown().await;
}

/// A `PUT /_emulator/faults` is checked as it joins the starting faults: with an error rate to
/// start with, a body clearing the error statuses alone is refused (it would leave errors to
/// inject and none to draw from) and nothing changes.
#[tokio::test]
async fn a_put_is_checked_with_the_starting_faults() {
    let starting = Faults {
        error_rate: 0.2,
        ..Faults::default()
    };
    let env = start_with(Scenario::simple(2, 20, 20), starting).await;
    let r = env
        .control(Method::PUT, "/faults", Some(json!({"error_statuses": []})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let f = env.control(Method::GET, "/faults", None).await.body;
    assert_eq!(f["error_statuses"], json!([503]), "{f}");
    assert_eq!(f["error_rate"], 0.2, "{f}");
    for _ in 0..20 {
        let status = env.get("/subscribedSkus").await.status;
        assert!(
            status == StatusCode::OK || status.as_u16() == 503,
            "{status}"
        );
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn injected_errors_latency_and_dropped_connections() {
    let env = start(Scenario::simple(2, 20, 20)).await;
    let r = env
        .control(Method::PUT, "/faults", Some(json!({"error_rate": 1.0})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = env.get("/subscribedSkus").await;
    assert_graph_error(
        &r,
        503,
        "serviceNotAvailable",
        "The service is not available. Try the request again after a delay. There may be a Retry-After header.",
    );
    assert!(r.header("retry-after").is_some());

    let r = env
        .control(
            Method::PUT,
            "/faults",
            Some(json!({"latency_ms": 150, "jitter_ms": 20})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = Instant::now();
    assert_eq!(env.get("/subscribedSkus").await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));

    env.control(Method::PUT, "/faults", Some(json!({"drop_rate": 1.0})))
        .await;
    let res = env
        .http
        .get(format!("{}/subscribedSkus", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .send()
        .await;
    assert!(res.is_err(), "the connection is closed without an answer");

    // A lost answer: the write is made, and the connection closed instead of answering.
    env.control(Method::PUT, "/faults", Some(json!({}))).await;
    let user = env.user_id(0).await;
    env.control(
        Method::PUT,
        "/faults",
        Some(json!({"lost_answer_rate": 1.0})),
    )
    .await;
    let res = env
        .http
        .post(format!("{}/users/{user}/assignLicense", env.emu.graph_url()))
        .bearer_auth(&env.token)
        .json(&json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": []}], "removeLicenses": []}))
        .send()
        .await;
    assert!(res.is_err(), "the answer is lost");
    env.control(Method::PUT, "/faults", Some(json!({}))).await;
    assert_eq!(
        env.sku("ENTERPRISEPACK").await["consumedUnits"],
        1,
        "the write was made"
    );

    for bad in [
        json!({"error_rate": 2.0}),
        json!({"lost_answer_rate": -0.1}),
    ] {
        let r = env.control(Method::PUT, "/faults", Some(bad)).await;
        assert_eq!(r.status.as_u16(), 400);
    }
    env.control(Method::PUT, "/faults", Some(json!({}))).await;
    assert_eq!(env.get("/subscribedSkus").await.status, StatusCode::OK);

    let stats = env.control(Method::GET, "/stats", None).await.body;
    assert_eq!(stats["injected_errors"], 1);
    assert_eq!(stats["dropped_connections"], 1);
    assert_eq!(stats["lost_answers"], 1);
    assert_eq!(stats["requests"]["GET /v1.0/subscribedSkus"]["503"], 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn scenario_reset_and_stats() {
    let env = start(Scenario::simple(2, 20, 20)).await;
    let user = env.user_id(0).await;
    assert_eq!(
        env.assign(&user, ENTERPRISEPACK_SKU_ID).await.status,
        StatusCode::OK
    );
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 1);

    let r = env.control(Method::POST, "/reset", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 0);
    let stats = env.control(Method::GET, "/stats", None).await.body;
    assert_eq!(stats["successful_writes"], 0);
    assert_eq!(stats["requests"]["GET /v1.0/subscribedSkus"]["200"], 1);

    let mut s = Scenario::simple(99, 50, 5);
    s.groups.push(GroupSpec::new("Extra", 7));
    s.tenant_id = Some("0a0b0c0d-0000-4000-8000-000000000001".into());
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(serde_json::to_value(&s).expect("json")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["users"], 50);
    assert_eq!(
        env.emu.directory_tenant_id(),
        "0a0b0c0d-0000-4000-8000-000000000001"
    );
    // Old tokens belong to the old tenant.
    assert_eq!(env.get("/groups").await.status.as_u16(), 401);
    let tok = token(&env.emu, &env.http).await;
    let res = env
        .http
        .get(format!("{}/groups", env.emu.graph_url()))
        .bearer_auth(tok)
        .send()
        .await
        .expect("send");
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(2));

    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"users": 3, "groups": [{"display_name": "X", "members": 9}]})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = env.control(Method::GET, "/users/not-a-user", None).await;
    assert_eq!(r.status.as_u16(), 404);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn scenario_json_round_trips() {
    let s = Scenario::demo();
    let text = serde_json::to_string(&s).expect("serialize");
    let back: Scenario = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, s);
    let f: Faults = serde_json::from_str("{}").expect("defaults");
    assert_eq!(f, Faults::default());
    assert_eq!(f.write_budget.limit, 3_000);
    assert_eq!(f.write_budget.window_ms, 150_000);
}

#[tokio::test]
async fn handle_is_send_and_sync_and_spawnable() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let emu = tokio::spawn(graph_emulator::spawn(graph_emulator::EmulatorConfig {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..Default::default()
    }))
    .await
    .expect("join")
    .expect("spawn");
    assert_send_sync(&emu);
    assert!(emu.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(emu.graph_url(), format!("{}/v1.0", emu.base_url()));
    assert_eq!(
        emu.token_url(),
        format!(
            "{}/{}/oauth2/v2.0/token",
            emu.base_url(),
            emu.directory_tenant_id()
        )
    );
    let http = client();
    let tok = token(&emu, &http).await;
    assert!(!tok.is_empty());
    emu.shutdown().await;
}

/// `DELETE /_emulator/users/{id}` deletes a user as an administrator would: Graph answers 404
/// for it from then on (read, usage location, assignLicense, also inside `$batch`), leaves it
/// out of user and member lists and their counts, and releases its seat; the control API
/// still shows it, deleted, with its licenses. Deleting it again, or an unknown user, is 404.
#[tokio::test]
async fn a_deleted_user_is_gone_from_graph() {
    let env = start(Scenario::simple(3, 5, 5)).await;
    let group = env.group_id("All Users").await;
    let user = env.user_id(0).await;
    let r = env
        .patch(&format!("/users/{user}"), json!({"usageLocation": "SE"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = env.assign(&user, ENTERPRISEPACK_SKU_ID).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 1);

    let r = env
        .control(Method::DELETE, &format!("/users/{user}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    let missing = format!(
        "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
    );
    assert_graph_error(
        &env.get(&format!("/users/{user}")).await,
        404,
        "Request_ResourceNotFound",
        &missing,
    );
    assert_graph_error(
        &env.assign(&user, ENTERPRISEPACK_SKU_ID).await,
        404,
        "Request_ResourceNotFound",
        &missing,
    );
    assert_graph_error(
        &env.patch(&format!("/users/{user}"), json!({"usageLocation": "NO"}))
            .await,
        404,
        "Request_ResourceNotFound",
        &missing,
    );
    let r = env
        .post(
            "/$batch",
            json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{user}")}]}),
        )
        .await;
    assert_eq!(r.body["responses"][0]["status"], 404, "{}", r.body);
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 0);

    // Out of the lists and counts; a page of members may be short, not wrong.
    let listed = |v: &serde_json::Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let members = env
        .get(&format!("/groups/{group}/members?$count=true"))
        .await
        .body;
    assert_eq!(members["@odata.count"], 4, "{members}");
    assert_eq!(listed(&members).len(), 4, "{members}");
    assert!(!listed(&members).contains(&user), "{members}");
    let mut paged = Vec::new();
    let mut next = Some(format!("/groups/{group}/members?$top=2"));
    while let Some(path) = next {
        let page = env.get(&path).await.body;
        paged.extend(listed(&page));
        next = page["@odata.nextLink"]
            .as_str()
            .map(|l| l.split("/v1.0").nth(1).unwrap().to_owned());
    }
    assert_eq!(paged.len(), 4, "{paged:?}");
    assert!(!paged.contains(&user), "{paged:?}");
    let count = env
        .http
        .get(format!(
            "{}/v1.0/groups/{group}/members/graph.user/$count",
            env.emu.base_url()
        ))
        .bearer_auth(&env.token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count, "4");
    let users = env.get("/users").await.body;
    assert_eq!(listed(&users).len(), 4, "{users}");
    assert!(
        env.get(&format!("/users?$filter=id eq '{user}'"))
            .await
            .body["value"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let shown = env
        .control(Method::GET, &format!("/users/{user}"), None)
        .await
        .body;
    assert_eq!(shown["deleted"], true, "{shown}");
    assert_eq!(
        shown["assignedLicenses"][0]["skuId"], ENTERPRISEPACK_SKU_ID,
        "{shown}"
    );
    for (method, body) in [
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({"usageLocation": "NO"}))),
    ] {
        let r = env.control(method, &format!("/users/{user}"), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    }
    let r = env
        .control(
            Method::DELETE,
            "/users/00000000-0000-0000-0000-000000000001",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // The others are untouched.
    let other = env.user_id(1).await;
    assert_eq!(
        env.get(&format!("/users/{other}")).await.status,
        StatusCode::OK
    );
    env.emu.shutdown().await;
}
