//! The control API refuses unknown fields — at the top of a body and nested — with a 400 naming
//! the field's path, and changes nothing.

mod common;

use common::*;
use graph_emulator::{ENTERPRISEPACK_SKU_ID, Faults, Scenario, TenantSet};
use reqwest::Method;
use serde_json::{Value, json};

/// Asserts a 400 naming `field` (in `error.field` and in the message) and `unknown field`.
fn assert_refused(r: &Res, field: &str, unknown: &str) {
    assert_eq!(r.status.as_u16(), 400, "{field}: {}", r.body);
    assert_eq!(r.code(), "BadRequest", "{}", r.body);
    assert_eq!(r.body["error"]["field"], field, "{}", r.body);
    let msg = r.message();
    assert!(msg.contains(&format!("{field}: ")), "{msg}");
    assert!(msg.contains(&format!("unknown field `{unknown}`")), "{msg}");
}

#[tokio::test]
async fn scenarios_with_unknown_fields_are_refused_and_change_nothing() {
    let env = start(Scenario::simple(3, 20, 20)).await;
    let before = env.summary().await;

    let mut sku_units = serde_json::to_value(Scenario::simple(4, 10, 0)).expect("json");
    sku_units["skus"][0]["units"] = json!(1000);
    let mut plan = serde_json::to_value(Scenario::demo()).expect("json");
    plan["skus"][1]["service_plans"][2]["excludes"] = json!(["X"]);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"users": 3, "user_count": 5}),
            "user_count",
            "user_count",
        ),
        (sku_units, "skus[0].units", "units"),
        (
            json!({"users": 5, "groups": [{"display_name": "A", "members": 2}, {"display_name": "B", "member": 2}]}),
            "groups[1].member",
            "member",
        ),
        (plan, "skus[1].service_plans[2].excludes", "excludes"),
        (
            json!({"tenants": [{"users": 1}, {"users": 1, "domain": "b.onmicrosoft.com", "skus": [{"sku_part_number": "X", "units": 5}]}]}),
            "tenants[1].skus[0].units",
            "units",
        ),
        (
            json!({"count": 2, "template": {"users": 1, "groups": [{"display_name": "G", "size": 1}]}}),
            "template.groups[0].size",
            "size",
        ),
        (
            json!({"count": 2, "templates": {}}),
            "templates",
            "templates",
        ),
    ];
    for (body, field, unknown) in cases {
        let r = env.control(Method::POST, "/scenario", Some(body)).await;
        assert_refused(&r, field, unknown);
    }
    // Values of the wrong type are named by their path too.
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(json!({"skus": [{"sku_part_number": "X", "enabled": "many"}]})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.body["error"]["field"], "skus[0].enabled", "{}", r.body);

    // Nothing changed: same tenant, same directory, old token still good.
    assert_eq!(env.summary().await, before);
    assert_eq!(env.get("/subscribedSkus").await.status.as_u16(), 200);

    // The known fields still load, and a scenario serialised by the crate round-trips.
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(serde_json::to_value(Scenario::demo()).expect("json")),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let set = TenantSet {
        count: Some(2),
        template: Some(Scenario::simple(5, 3, 3)),
        ..Default::default()
    };
    let r = env
        .control(
            Method::POST,
            "/scenario",
            Some(serde_json::to_value(&set).expect("json")),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn faults_users_skus_and_drives_refuse_unknown_fields() {
    let env = start(Scenario::simple(3, 20, 20)).await;
    let user = env.user_id(0).await;

    // Faults: top level and inside a budget. Nothing changes.
    let r = env
        .control(Method::PUT, "/faults", Some(json!({"latency": 200})))
        .await;
    assert_refused(&r, "latency", "latency");
    let r = env
        .control(
            Method::PUT,
            "/faults",
            Some(json!({"write_budget": {"limit": 10, "window": 1000}})),
        )
        .await;
    assert_refused(&r, "write_budget.window", "window");
    let r = env
        .control(
            Method::PUT,
            "/faults",
            Some(json!({"read_budget": {"limit": 10, "window_ms": 1000, "burst": 3}})),
        )
        .await;
    assert_refused(&r, "read_budget.burst", "burst");
    let f: Faults = serde_json::from_value(env.control(Method::GET, "/faults", None).await.body)
        .expect("faults");
    assert_eq!(f, Faults::default());

    // A user: top level, and nested in a license change.
    let r = env
        .control(
            Method::PATCH,
            &format!("/users/{user}"),
            Some(json!({"usageLocation": "SE", "location": "SE"})),
        )
        .await;
    assert_refused(&r, "location", "location");
    let r = env
        .control(
            Method::POST,
            &format!("/users/{user}/licenses"),
            Some(json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlan": []}], "removeLicenses": []})),
        )
        .await;
    assert_refused(&r, "addLicenses[0].disabledPlan", "disabledPlan");
    let u = env
        .control(Method::GET, &format!("/users/{user}"), None)
        .await;
    assert_eq!(u.body["usageLocation"], "US", "unchanged");
    assert_eq!(u.body["assignedLicenses"], json!([]), "unchanged");

    // A SKU.
    let r = env
        .control(
            Method::PATCH,
            "/skus/ENTERPRISEPACK",
            Some(json!({"enabled": 50, "units": 60})),
        )
        .await;
    assert_refused(&r, "units", "units");
    assert_eq!(
        env.sku("ENTERPRISEPACK").await["prepaidUnits"]["enabled"],
        20
    );

    // A drive.
    let r = env
        .control(
            Method::POST,
            "/drives",
            Some(json!({"id": "b!d", "readonly": true})),
        )
        .await;
    assert_refused(&r, "readonly", "readonly");
    let r = env
        .control(
            Method::PATCH,
            "/drives/b!d",
            Some(json!({"writable": true, "name": "x"})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);

    // Query parameters the routes do not take.
    for path in [
        "/stats?peruser=true",
        "/users?offset=0&lim=5",
        "/faults?tenants=x",
    ] {
        let r = env.control(Method::GET, path, None).await;
        assert_eq!(r.status.as_u16(), 400, "{path}: {}", r.body);
        assert!(r.message().contains("unknown field"), "{path}: {}", r.body);
    }
    env.emu.shutdown().await;
}

/// A body that is not JSON at all names no field: `error.field` is empty and the message says
/// the JSON is malformed and where it breaks. Nothing changes.
#[tokio::test]
async fn malformed_json_names_no_field_and_changes_nothing() {
    let env = start(Scenario::simple(3, 20, 20)).await;
    let user = env.user_id(0).await;
    let before = env.summary().await;
    let cases = [
        (Method::PUT, "/faults".to_string()),
        (Method::POST, "/scenario".to_string()),
        (Method::PATCH, "/skus/ENTERPRISEPACK".to_string()),
        (Method::PATCH, format!("/users/{user}")),
        (Method::POST, format!("/users/{user}/licenses")),
        (Method::POST, "/drives".to_string()),
    ];
    for (method, path) in cases {
        for body in ["{x", "[", "{,}", "nul", ""] {
            let res = env
                .http
                .request(
                    method.clone(),
                    format!("{}/_emulator{path}", env.emu.base_url()),
                )
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send");
            let r = into_res(res).await;
            assert_eq!(
                r.status.as_u16(),
                400,
                "{method} {path} {body:?}: {}",
                r.body
            );
            assert_eq!(
                r.body["error"]["field"], "",
                "{method} {path} {body:?}: {}",
                r.body
            );
            let msg = r.message();
            assert!(
                msg.contains("malformed JSON") && !msg.contains('?'),
                "{method} {path} {body:?}: {msg}"
            );
        }
    }
    assert_eq!(env.summary().await, before);
    let f: Faults = serde_json::from_value(env.control(Method::GET, "/faults", None).await.body)
        .expect("faults");
    assert_eq!(f, Faults::default());
    env.emu.shutdown().await;
}
