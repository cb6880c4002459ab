//! Directory reads: subscribedSkus, groups, members paging, users.

mod common;

use std::collections::HashSet;

use common::*;
use graph_emulator::{GroupSpec, Scenario};
use reqwest::StatusCode;
use serde_json::Value;

fn paging_scenario() -> Scenario {
    let mut s = Scenario::demo();
    s.users = 3_000;
    s.groups = vec![
        GroupSpec::new("Big", 2_500),
        GroupSpec {
            nested_groups: vec!["Inner".into()],
            devices: 2,
            contacts: 3,
            ..GroupSpec::new("Outer", 30)
        },
        GroupSpec::new("Inner", 20),
        GroupSpec::new("Sales", 250),
        GroupSpec::new("Sales Ops", 10),
    ];
    s
}

#[tokio::test]
async fn subscribed_skus_have_graph_shape() {
    let env = start(Scenario::demo()).await;
    let r = env.get("/subscribedSkus").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap_or("")
            .ends_with("$metadata#subscribedSkus")
    );
    let e3 = env.sku("ENTERPRISEPACK").await;
    assert_eq!(e3["skuId"], "6fd2c87f-b296-42f0-b197-1e91e994b900");
    assert_eq!(e3["appliesTo"], "User");
    assert_eq!(e3["capabilityStatus"], "Enabled");
    for k in ["enabled", "suspended", "warning", "lockedOut"] {
        assert!(e3["prepaidUnits"][k].is_u64(), "prepaidUnits.{k}");
    }
    assert!(
        e3["consumedUnits"].as_u64().unwrap_or(0) >= 5,
        "group-inherited seats count"
    );
    let plan = &e3["servicePlans"][0];
    for k in [
        "servicePlanId",
        "servicePlanName",
        "provisioningStatus",
        "appliesTo",
    ] {
        assert!(plan[k].is_string(), "servicePlans[].{k}");
    }
    let e5 = env.sku("SPE_E5").await;
    assert_eq!(e5["prepaidUnits"]["enabled"], 100);
    assert_eq!(e5["consumedUnits"], 0);
    assert!(r.header("request-id").is_some());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json")
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn demo_scenario_matches_the_contract() {
    let env = start(Scenario::demo()).await;
    let s = env.summary().await;
    let g = |name: &str| {
        s["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["displayName"] == name))
            .cloned()
            .expect("group")
    };
    assert_eq!(g("All Staff")["userMembers"], 5_000);
    assert_eq!(g("Sales")["userMembers"], 250);
    assert_eq!(g("Engineering")["userMembers"], 1_200);
    assert_eq!(
        g("Engineering")["nestedGroups"].as_array().map(Vec::len),
        Some(1)
    );
    let users = env.users(0, 5_000).await;
    let without = users
        .iter()
        .filter(|u| u["usageLocation"].is_null())
        .count();
    assert_eq!(without, 100, "2% of 5,000 users have no usage location");
    // Deterministic: a second emulator has the same ids.
    let env2 = start(Scenario::demo()).await;
    assert_eq!(env2.summary().await["groups"], s["groups"]);
    assert_eq!(
        env.emu.directory_tenant_id(),
        env2.emu.directory_tenant_id()
    );
    env.emu.shutdown().await;
    env2.emu.shutdown().await;
}

#[tokio::test]
async fn groups_filter_search_and_get() {
    let env = start(paging_scenario()).await;
    let r = env.get("/groups").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(5));

    let r = env.get("/groups?$filter=displayName%20eq%20'Sales'").await;
    let v = r.body["value"].as_array().expect("value");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["displayName"], "Sales");
    assert_eq!(v[0]["securityEnabled"], true);

    let r = env
        .get("/groups?$filter=startswith(displayName,'Sales')")
        .await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(2));

    let r = env.get("/groups?$search=\"displayName:Ops\"").await;
    assert_graph_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
    );
    let res = env
        .http
        .get(format!(
            "{}/groups?$search=\"displayName:Ops\"&$count=true",
            env.emu.graph_url()
        ))
        .bearer_auth(&env.token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("send");
    let r = into_res(res).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["@odata.count"], 1);
    assert_eq!(r.body["value"][0]["displayName"], "Sales Ops");

    let r = env.get("/groups?$top=2&$select=id,displayName").await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(2));
    assert!(r.body["value"][0].get("securityEnabled").is_none());
    let next = r.body["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    assert!(next.contains("$skiptoken="), "{next}");
    let r2 = env.get(&next).await;
    assert_eq!(r2.body["value"].as_array().map(Vec::len), Some(2));

    let id = env.group_id("Sales").await;
    let r = env.get(&format!("/groups/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["displayName"], "Sales");

    let r = env
        .get("/groups/11111111-2222-3333-4444-555555555555")
        .await;
    assert_graph_error(
        &r,
        404,
        "Request_ResourceNotFound",
        "Resource '11111111-2222-3333-4444-555555555555' does not exist or one of its queried reference-property objects are not present.",
    );
    let r = env.get("/groups/not-a-guid").await;
    assert_graph_error(
        &r,
        400,
        "Request_BadRequest",
        "Invalid object identifier 'not-a-guid'.",
    );

    let r = env.get("/groups?$filter=foo%20eq%20'x'").await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "Request_UnsupportedQuery");
    env.emu.shutdown().await;
}

async fn collect_pages(env: &Env, first: &str) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        let r = env.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        pages += 1;
        all.extend(r.body["value"].as_array().cloned().unwrap_or_default());
        next = r.body["@odata.nextLink"].as_str().map(str::to_string);
        assert!(pages < 1_000, "paging does not end");
    }
    (all, pages)
}

#[tokio::test]
async fn members_paging_returns_each_member_exactly_once() {
    let env = start(paging_scenario()).await;
    let id = env.group_id("Big").await;

    // Default page size is 100.
    let r = env.get(&format!("/groups/{id}/members")).await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(100));
    assert!(
        r.body["@odata.context"]
            .as_str()
            .unwrap_or("")
            .ends_with("$metadata#directoryObjects")
    );

    for top in [999usize, 333, 100] {
        let (all, pages) = collect_pages(
            &env,
            &format!(
                "/groups/{id}/members/microsoft.graph.user?$top={top}&$select=id,userPrincipalName"
            ),
        )
        .await;
        assert_eq!(all.len(), 2_500);
        assert_eq!(pages, 2_500usize.div_ceil(top));
        let ids: HashSet<&str> = all.iter().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids.len(), 2_500, "each member exactly once");
        for m in &all {
            assert_eq!(m["@odata.type"], "#microsoft.graph.user");
            assert!(m["userPrincipalName"].is_string());
            assert!(m.get("displayName").is_none(), "$select applied");
        }
    }

    let r = env.get(&format!("/groups/{id}/members?$top=1000")).await;
    assert_graph_error(
        &r,
        400,
        "Request_UnsupportedQuery",
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive.",
    );
    let r = env
        .get(&format!("/groups/{id}/members?$skiptoken=bogus"))
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "Directory_ExpiredPageToken");
    let r = env
        .get(&format!(
            "/groups/{id}/members/microsoft.graph.user?$select=nope"
        ))
        .await;
    assert_graph_error(
        &r,
        400,
        "BadRequest",
        "Could not find a property named 'nope' on type 'microsoft.graph.user'.",
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn members_carry_odata_type_and_transitive_members_expand_nested_groups() {
    let env = start(paging_scenario()).await;
    let outer = env.group_id("Outer").await;
    let inner = env.group_id("Inner").await;

    let (all, _) = collect_pages(&env, &format!("/groups/{outer}/members")).await;
    let count = |t: &str| all.iter().filter(|m| m["@odata.type"] == t).count();
    assert_eq!(count("#microsoft.graph.user"), 30);
    assert_eq!(count("#microsoft.graph.group"), 1);
    assert_eq!(count("#microsoft.graph.device"), 2);
    assert_eq!(count("#microsoft.graph.orgContact"), 3);
    let nested = all
        .iter()
        .find(|m| m["@odata.type"] == "#microsoft.graph.group")
        .expect("nested group");
    assert_eq!(nested["id"], inner.as_str());

    let (direct_users, _) = collect_pages(
        &env,
        &format!("/groups/{outer}/members/microsoft.graph.user"),
    )
    .await;
    assert_eq!(direct_users.len(), 30);

    let (inner_users, _) = collect_pages(
        &env,
        &format!("/groups/{inner}/members/microsoft.graph.user"),
    )
    .await;
    let (trans, _) = collect_pages(
        &env,
        &format!("/groups/{outer}/transitiveMembers/microsoft.graph.user?$top=7"),
    )
    .await;
    let mut expected: HashSet<String> = direct_users
        .iter()
        .chain(inner_users.iter())
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    let got: HashSet<String> = trans
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(got.len(), trans.len(), "no duplicates across pages");
    assert_eq!(got, std::mem::take(&mut expected));

    let r = env
        .get(&format!("/groups/{outer}/members/microsoft.graph.nothing"))
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "BadRequest");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn get_user_default_and_selected_properties() {
    let env = start(Scenario::demo()).await;
    let users = env.users(0, 10).await;
    let id = users[0]["id"].as_str().expect("id");
    let r = env.get(&format!("/users/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    for k in [
        "id",
        "displayName",
        "userPrincipalName",
        "givenName",
        "surname",
        "mail",
        "businessPhones",
    ] {
        assert!(r.body.get(k).is_some(), "default property {k}");
    }
    assert!(
        r.body.get("assignedLicenses").is_none(),
        "not a default property"
    );
    let upn = r.body["userPrincipalName"]
        .as_str()
        .expect("upn")
        .to_string();

    let r = env
        .get(&format!("/users/{id}?$select=id,displayName,userPrincipalName,usageLocation,assignedLicenses,licenseAssignmentStates"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["assignedLicenses"].is_array());
    assert!(r.body.get("usageLocation").is_some());
    assert!(r.body.get("givenName").is_none());

    let r = env.get(&format!("/users/{upn}?$select=id")).await;
    assert_eq!(r.body["id"], id);

    let r = env.get("/users/11111111-2222-3333-4444-555555555555").await;
    assert_graph_error(
        &r,
        404,
        "Request_ResourceNotFound",
        "Resource '11111111-2222-3333-4444-555555555555' does not exist or one of its queried reference-property objects are not present.",
    );
    let r = env.get(&format!("/users/{id}?$select=shoeSize")).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.code(), "BadRequest");

    let r = env.get("/nothingHere").await;
    assert_graph_error(
        &r,
        400,
        "BadRequest",
        "Resource not found for the segment 'nothingHere'.",
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn list_users_with_filter_and_paging() {
    let mut s = Scenario::simple(8, 250, 10);
    s.users_without_usage_location = 0.1;
    let env = start(s).await;
    let (all, pages) = collect_pages(&env, "/users?$top=100&$select=id,userPrincipalName").await;
    assert_eq!(all.len(), 250);
    assert_eq!(pages, 3);
    let ids: HashSet<&str> = all.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids.len(), 250);

    let upn = all[7]["userPrincipalName"].as_str().expect("upn");
    let r = env
        .get(&format!(
            "/users?$filter=userPrincipalName%20eq%20'{upn}'&$select=id"
        ))
        .await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["value"][0]["id"], all[7]["id"]);

    let (unlocated, _) =
        collect_pages(&env, "/users?$filter=usageLocation%20eq%20'US'&$top=50").await;
    assert_eq!(unlocated.len(), 225);
    env.emu.shutdown().await;
}
