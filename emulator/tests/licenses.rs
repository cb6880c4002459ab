//! assignLicense, PATCH usageLocation and the license rules, with Graph's error codes and texts.

mod common;

use common::*;
use graph_emulator::{ENTERPRISEPACK_SKU_ID, EXCHANGESTANDARD_SKU_ID, SPE_E5_SKU_ID, Scenario};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const EXCHANGE_S_ENTERPRISE: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";
const TEAMS1: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";
const EXCHANGE_S_STANDARD: &str = "9aaf7827-d63c-4b61-89c3-182f06f82e5c";

async fn consumed(env: &Env, part: &str) -> u64 {
    env.sku(part).await["consumedUnits"]
        .as_u64()
        .expect("consumedUnits")
}

async fn located_user(env: &Env, from: usize) -> String {
    let users = env.users(from, 200).await;
    users
        .iter()
        .find(|u| u["usageLocation"].is_string() && u["licenses"] == 0)
        .and_then(|u| u["id"].as_str())
        .expect("a located user")
        .to_string()
}

async fn unlocated_user(env: &Env) -> String {
    let users = env.users(0, 5_000).await;
    users
        .iter()
        .find(|u| u["usageLocation"].is_null())
        .and_then(|u| u["id"].as_str())
        .expect("a user without usage location")
        .to_string()
}

async fn emu_user(env: &Env, id: &str) -> Value {
    env.control(Method::GET, &format!("/users/{id}"), None)
        .await
        .body
}

#[tokio::test]
async fn assign_and_remove_move_consumed_units() {
    let env = start(Scenario::demo()).await;
    let user = located_user(&env, 0).await;
    let before = consumed(&env, "SPE_E5").await;

    let r = env.assign(&user, SPE_E5_SKU_ID).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], user.as_str());
    assert!(r.body["userPrincipalName"].is_string());
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap_or("")
            .ends_with("$metadata#users/$entity")
    );
    assert_eq!(consumed(&env, "SPE_E5").await, before + 1);

    let r = env
        .get(&format!(
            "/users/{user}?$select=assignedLicenses,licenseAssignmentStates"
        ))
        .await;
    assert_eq!(r.body["assignedLicenses"][0]["skuId"], SPE_E5_SKU_ID);
    assert_eq!(
        r.body["licenseAssignmentStates"][0]["assignedByGroup"],
        Value::Null
    );
    assert_eq!(r.body["licenseAssignmentStates"][0]["state"], "Active");

    // Same assignment again: nothing changes, no new seat, no new successful write.
    let r = env.assign(&user, SPE_E5_SKU_ID).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(consumed(&env, "SPE_E5").await, before + 1);
    assert_eq!(emu_user(&env, &user).await["successfulWrites"], 1);

    // Changing disabled plans is a write but takes no new seat.
    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [{"skuId": SPE_E5_SKU_ID, "disabledPlans": ["f20fedf3-f3c3-43c3-8267-2bfdd51c0939"]}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(consumed(&env, "SPE_E5").await, before + 1);
    let r = env
        .get(&format!("/users/{user}?$select=assignedLicenses"))
        .await;
    assert_eq!(
        r.body["assignedLicenses"][0]["disabledPlans"],
        json!(["f20fedf3-f3c3-43c3-8267-2bfdd51c0939"])
    );

    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [], "removeLicenses": [SPE_E5_SKU_ID]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(consumed(&env, "SPE_E5").await, before);
    let u = emu_user(&env, &user).await;
    assert_eq!(u["successfulWrites"], 3);
    assert_eq!(u["assignedLicenses"], json!([]));
    let stats = env
        .control(Method::GET, "/stats?per_user=true", None)
        .await
        .body;
    assert_eq!(stats["successful_writes"], 3);
    assert_eq!(stats["writes_per_user_max"], 3);
    assert_eq!(stats["writes_per_user"][&user], 3);
    assert_eq!(
        stats["requests"]["POST /v1.0/users/{id}/assignLicense"]["200"],
        4
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn usage_location_is_required_and_can_be_patched() {
    let env = start(Scenario::demo()).await;
    let user = unlocated_user(&env).await;
    let r = env.assign(&user, ENTERPRISEPACK_SKU_ID).await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "License assignment cannot be done for user with invalid usage location.",
    );

    let r = env
        .patch(&format!("/users/{user}"), json!({"usageLocation": "USA"}))
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "Invalid value specified for property 'usageLocation' of resource 'User'.",
    );
    let r = env
        .patch(&format!("/users/{user}"), json!({"shoeSize": 9}))
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "Property 'shoeSize' does not exist as a declared property or extension property.",
    );
    let r = env
        .patch(&format!("/users/{user}"), json!({"usageLocation": "DE"}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = env
        .get(&format!("/users/{user}?$select=usageLocation"))
        .await;
    assert_eq!(r.body["usageLocation"], "DE");
    let r = env.assign(&user, ENTERPRISEPACK_SKU_ID).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = env
        .patch(
            "/users/11111111-2222-3333-4444-555555555555",
            json!({"usageLocation": "DE"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(r.code(), "Request_ResourceNotFound");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn no_available_licenses() {
    let mut s = Scenario::demo();
    s.skus[1].enabled = 2;
    let env = start(s).await;
    let users = env.users(0, 50).await;
    let located: Vec<String> = users
        .iter()
        .filter(|u| u["usageLocation"].is_string() && u["licenses"] == 0)
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .take(3)
        .collect();
    assert_eq!(
        env.assign(&located[0], SPE_E5_SKU_ID).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.assign(&located[1], SPE_E5_SKU_ID).await.status,
        StatusCode::OK
    );
    let r = env.assign(&located[2], SPE_E5_SKU_ID).await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        &format!("Subscription with SKU {SPE_E5_SKU_ID} does not have any available licenses."),
    );
    assert_eq!(consumed(&env, "SPE_E5").await, 2);
    assert_eq!(emu_user(&env, &located[2]).await["successfulWrites"], 0);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn mutually_exclusive_and_dependent_plans() {
    let env = start(Scenario::demo()).await;
    let user = located_user(&env, 0).await;
    assert_eq!(
        env.assign(&user, ENTERPRISEPACK_SKU_ID).await.status,
        StatusCode::OK
    );
    let e3_before = consumed(&env, "ENTERPRISEPACK").await;
    let r = env.assign(&user, EXCHANGESTANDARD_SKU_ID).await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        &format!(
            "License assignment failed because service plans {EXCHANGE_S_STANDARD},{EXCHANGE_S_ENTERPRISE} are mutually exclusive."
        ),
    );
    assert_eq!(consumed(&env, "EXCHANGESTANDARD").await, 0);

    let other = located_user(&env, 300).await;
    let r = env
        .post(
            &format!("/users/{other}/assignLicense"),
            json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": [EXCHANGE_S_ENTERPRISE]}], "removeLicenses": []}),
        )
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        &format!(
            "License assignment failed because service plan {TEAMS1} depends on the service plan(s) {EXCHANGE_S_ENTERPRISE}"
        ),
    );
    assert_eq!(consumed(&env, "ENTERPRISEPACK").await, e3_before);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn inherited_licenses_cannot_be_removed_directly() {
    let env = start(Scenario::demo()).await;
    let pilot = env.group_id("Licensed Pilot").await;
    let r = env
        .get(&format!(
            "/groups/{pilot}/members/microsoft.graph.user?$select=id"
        ))
        .await;
    let member = r.body["value"][0]["id"]
        .as_str()
        .expect("member")
        .to_string();
    let r = env
        .get(&format!(
            "/users/{member}?$select=licenseAssignmentStates,assignedLicenses"
        ))
        .await;
    assert_eq!(
        r.body["licenseAssignmentStates"][0]["assignedByGroup"],
        pilot.as_str()
    );
    assert_eq!(
        r.body["assignedLicenses"][0]["skuId"],
        ENTERPRISEPACK_SKU_ID
    );

    let r = env
        .post(
            &format!("/users/{member}/assignLicense"),
            json!({"addLicenses": [], "removeLicenses": [ENTERPRISEPACK_SKU_ID]}),
        )
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "User license is inherited from a group membership and it cannot be removed directly from the user.",
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn invalid_sku_unknown_user_and_license_not_held() {
    let env = start(Scenario::demo()).await;
    let user = located_user(&env, 0).await;
    let bogus = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let r = env.assign(&user, bogus).await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        &format!("License {bogus} does not correspond to a valid company License."),
    );

    let r = env
        .assign("11111111-2222-3333-4444-555555555555", SPE_E5_SKU_ID)
        .await;
    assert_graph_error(
        &r,
        404,
        "Request_ResourceNotFound",
        "Resource '11111111-2222-3333-4444-555555555555' does not exist or one of its queried reference-property objects are not present.",
    );

    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [], "removeLicenses": [SPE_E5_SKU_ID]}),
        )
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "User does not have a corresponding license.",
    );

    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": []}),
        )
        .await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "One or more parameters of the operation 'assignLicense' are missing from the request payload. The missing parameters are: removeLicenses.",
    );

    let res = env
        .http
        .post(format!(
            "{}/users/{user}/assignLicense",
            env.emu.graph_url()
        ))
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    let r = into_res(res).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "BadRequest");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn assign_license_is_all_or_nothing() {
    let env = start(Scenario::demo()).await;
    let user = located_user(&env, 0).await;
    let e5 = consumed(&env, "SPE_E5").await;
    let e3 = consumed(&env, "ENTERPRISEPACK").await;
    // A valid add with an invalid removal changes nothing.
    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [{"skuId": SPE_E5_SKU_ID, "disabledPlans": []}, {"skuId": ENTERPRISEPACK_SKU_ID}], "removeLicenses": [EXCHANGESTANDARD_SKU_ID]}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(consumed(&env, "SPE_E5").await, e5);
    assert_eq!(consumed(&env, "ENTERPRISEPACK").await, e3);
    let u = emu_user(&env, &user).await;
    assert_eq!(u["assignedLicenses"], json!([]));
    assert_eq!(u["successfulWrites"], 0);

    // Two SKUs in one call: both or neither. With one E5 seat left, E3+E5 for two users.
    let mut s = Scenario::demo();
    s.skus[1].enabled = 1;
    let env2 = start(s).await;
    let a = located_user(&env2, 0).await;
    let b = located_user(&env2, 400).await;
    let both = json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID}, {"skuId": SPE_E5_SKU_ID}], "removeLicenses": []});
    assert_eq!(
        env2.post(&format!("/users/{a}/assignLicense"), both.clone())
            .await
            .status,
        StatusCode::OK
    );
    let e3_before = consumed(&env2, "ENTERPRISEPACK").await;
    let r = env2.post(&format!("/users/{b}/assignLicense"), both).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(
        consumed(&env2, "ENTERPRISEPACK").await,
        e3_before,
        "the E3 seat reserved for the failed call is released"
    );
    env.emu.shutdown().await;
    env2.emu.shutdown().await;
}

/// `GET /users/{id}/licenseDetails`: each license held, with its part number and every service
/// plan's provisioning status (`Disabled` where the assignment disables it); also in `$batch`.
#[tokio::test]
async fn license_details_list_held_licenses_with_plan_status() {
    let env = start(Scenario::demo()).await;
    let user = located_user(&env, 0).await;
    let r = env.get(&format!("/users/{user}/licenseDetails")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["value"], json!([]), "{}", r.body);

    let r = env
        .post(
            &format!("/users/{user}/assignLicense"),
            json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": [TEAMS1]}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = env.get(&format!("/users/{user}/licenseDetails")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("$metadata#users('{user}')/licenseDetails")),
        "{}",
        r.body
    );
    let details = r.body["value"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{}", r.body);
    let d = &details[0];
    assert_eq!(d["skuId"], ENTERPRISEPACK_SKU_ID);
    assert_eq!(d["skuPartNumber"], "ENTERPRISEPACK");
    assert!(d["id"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
    let plans = d["servicePlans"].as_array().unwrap();
    let sku = env.sku("ENTERPRISEPACK").await;
    assert_eq!(plans.len(), sku["servicePlans"].as_array().unwrap().len());
    for p in plans {
        let want = if p["servicePlanId"] == TEAMS1 {
            "Disabled"
        } else {
            "Success"
        };
        assert_eq!(p["provisioningStatus"], want, "{p}");
        assert!(
            p["servicePlanName"].is_string() && p["appliesTo"].is_string(),
            "{p}"
        );
    }

    // The same through $batch; an unknown user is Graph's 404.
    let r = env
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "GET", "url": format!("/users/{user}/licenseDetails")},
                {"id": "2", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000001/licenseDetails"},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let answers = r.body["responses"].as_array().unwrap();
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(
        by_id("1")["body"]["value"][0]["skuPartNumber"],
        "ENTERPRISEPACK"
    );
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(
        by_id("2")["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
}
