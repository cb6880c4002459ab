//! JSON batching: limits, per-request status/headers/body, throttled items, dependencies.

mod common;

use common::*;
use graph_emulator::{Budget, ENTERPRISEPACK_SKU_ID, Faults, Scenario};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn assign_item(id: usize, user: &str) -> Value {
    json!({
        "id": id.to_string(),
        "method": "POST",
        "url": format!("/users/{user}/assignLicense"),
        "headers": {"Content-Type": "application/json"},
        "body": {"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": []}], "removeLicenses": []},
    })
}

#[tokio::test]
async fn batch_of_21_is_rejected() {
    let env = start(Scenario::simple(3, 50, 100)).await;
    let users = env.users(0, 21).await;
    let reqs: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| assign_item(i + 1, u["id"].as_str().unwrap_or("")))
        .collect();
    let r = env.post("/$batch", json!({"requests": reqs})).await;
    assert_graph_error(
        &r,
        400,
        "BadRequest",
        "The number of requests in the batch exceeds the limit of 20.",
    );
    // Nothing inside it ran.
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 0);

    let r = env.post("/$batch", json!({"requests": reqs[..20]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["responses"].as_array().map(Vec::len), Some(20));
    assert_eq!(env.sku("ENTERPRISEPACK").await["consumedUnits"], 20);

    let r = env.post("/$batch", json!({"nope": []})).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "BadRequest");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn batch_items_have_their_own_status_headers_and_body() {
    let env = start(Scenario::simple(3, 50, 100)).await;
    let user = env.user_id(0).await;
    let r = env
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "GET", "url": format!("/users/{user}?$select=id,assignedLicenses")},
                assign_item(2, &user),
                assign_item(3, "11111111-2222-3333-4444-555555555555"),
                {"id": "4", "method": "GET", "url": "/subscribedSkus"},
                {"id": "5", "method": "PATCH", "url": format!("/users/{user}"), "headers": {"Content-Type": "application/json"}, "body": {"usageLocation": "FR"}},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let rs = r.body["responses"].as_array().expect("responses");
    let by = |id: &str| rs.iter().find(|x| x["id"] == id).cloned().expect("item");
    assert_eq!(by("1")["status"], 200);
    assert_eq!(by("1")["body"]["id"], user.as_str());
    assert!(
        by("1")["headers"]["Content-Type"]
            .as_str()
            .unwrap_or("")
            .starts_with("application/json")
    );
    assert_eq!(by("2")["status"], 200);
    assert_eq!(by("3")["status"], 404);
    assert_eq!(by("3")["body"]["error"]["code"], "Request_ResourceNotFound");
    assert_eq!(by("4")["status"], 200);
    assert_eq!(by("4")["body"]["value"][0]["consumedUnits"], 1);
    assert_eq!(by("5")["status"], 204);
    assert!(by("5").get("body").is_none());

    let stats = env
        .control(reqwest::Method::GET, &format!("/users/{user}"), None)
        .await
        .body;
    assert_eq!(
        stats["successfulWrites"], 1,
        "writes inside $batch are counted"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn batch_validation_and_dependencies() {
    let env = start(Scenario::simple(3, 50, 100)).await;
    let user = env.user_id(0).await;
    let r = env
        .post(
            "/$batch",
            json!({"requests": [{"id": "1", "method": "POST", "url": format!("/users/{user}/assignLicense"), "body": {"addLicenses": [], "removeLicenses": []}}]}),
        )
        .await;
    assert_graph_error(
        &r,
        400,
        "BadRequest",
        "Write request id : 1 does not contain Content-Type header or body.",
    );

    let r = env
        .post(
            "/$batch",
            json!({"requests": [
                assign_item(1, "11111111-2222-3333-4444-555555555555"),
                {"id": "2", "method": "GET", "url": format!("/users/{user}"), "dependsOn": ["1"]},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["responses"][1]["status"], 424);

    let r = env
        .post(
            "/$batch",
            json!({"requests": [{"id": "1", "method": "POST", "url": "/$batch", "headers": {"Content-Type": "application/json"}, "body": {"requests": []}}]}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "BadRequest");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn throttled_batch_items_carry_retry_after() {
    let env = start_with(
        Scenario::simple(3, 50, 100),
        Faults {
            write_budget: Budget {
                limit: 5,
                window_ms: 60_000,
            },
            ..Default::default()
        },
    )
    .await;
    let users = env.users(0, 12).await;
    let reqs: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| assign_item(i + 1, u["id"].as_str().unwrap_or("")))
        .collect();
    let r = env.post("/$batch", json!({"requests": reqs})).await;
    assert_eq!(r.status, StatusCode::OK);
    let rs = r.body["responses"].as_array().expect("responses");
    let ok = rs.iter().filter(|x| x["status"] == 200).count();
    let throttled: Vec<&Value> = rs.iter().filter(|x| x["status"] == 429).collect();
    assert_eq!(ok, 5);
    assert_eq!(throttled.len(), 7);
    for t in throttled {
        let ra: u64 = t["headers"]["Retry-After"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&ra));
        assert_eq!(t["body"]["error"]["code"], "TooManyRequests");
        assert_eq!(
            t["headers"]["x-ms-throttle-information"],
            "WriteLimitExceeded"
        );
    }
    env.emu.shutdown().await;
}
