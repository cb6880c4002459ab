//! The licenses a group's members hold, as the directory emulator's state says (for the
//! held-licenses API test and the preview browser test, which include this file with `#[path]`).
#![allow(dead_code)]

use std::collections::BTreeMap;

use graph_emulator::EmulatorHandle;
use serde_json::{Value, json};

/// `(direct, inherited)` member counts per SKU id.
pub type Held = BTreeMap<String, (i64, i64)>;

/// A Graph token of the emulator's default tenant.
pub async fn graph_token(http: &reqwest::Client, emulator: &EmulatorHandle) -> String {
    let v: Value = http
        .post(emulator.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &emulator.client_id()),
            ("client_secret", &emulator.client_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// The ids of a group's user members (direct members), read from the emulator's Graph.
pub async fn member_ids(
    http: &reqwest::Client,
    emulator: &EmulatorHandle,
    group_id: &str,
) -> Vec<String> {
    let token = graph_token(http, emulator).await;
    let mut next = Some(format!(
        "{}/groups/{group_id}/members/microsoft.graph.user?$select=id&$top=999",
        emulator.graph_url()
    ));
    let mut ids = Vec::new();
    while let Some(url) = next.take() {
        let page: Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for u in page["value"].as_array().cloned().unwrap_or_default() {
            ids.push(u["id"].as_str().unwrap().to_owned());
        }
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    ids
}

/// Give `users` a license directly, behind licensor's back; returns how many got it (the
/// directory refuses members without a usage location).
pub async fn give(
    http: &reqwest::Client,
    emulator: &EmulatorHandle,
    users: &[String],
    sku: &str,
) -> usize {
    let mut given = 0;
    for id in users {
        let resp = http
            .post(format!("{}/_emulator/users/{id}/licenses", emulator.base_url()))
            .json(&json!({"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []}))
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            given += 1;
        }
    }
    given
}

/// Sales (250 members) of the demo with licenses of its own: ENTERPRISEPACK directly for its
/// first 40 members, SPE_E5 for the next 12 (12 of its 100 units; the two go together, so an
/// assign of SPE_E5 afterwards fails only for want of units or usage location). Returns the
/// members' ids.
pub async fn license_sales(
    http: &reqwest::Client,
    emulator: &EmulatorHandle,
    sales_id: &str,
) -> Vec<String> {
    let members = member_ids(http, emulator, sales_id).await;
    assert_eq!(members.len(), 250, "Sales has 250 members");
    let e3 = give(
        http,
        emulator,
        &members[..40],
        graph_emulator::ENTERPRISEPACK_SKU_ID,
    )
    .await;
    let e5 = give(
        http,
        emulator,
        &members[40..52],
        graph_emulator::SPE_E5_SKU_ID,
    )
    .await;
    assert!(e3 > 30 && e5 > 6, "{e3} {e5}");
    members
}

/// Per SKU, how many of `users` hold it directly and how many through a group, as the
/// emulator's state says.
pub async fn held_by(http: &reqwest::Client, emulator: &EmulatorHandle, users: &[String]) -> Held {
    let mut held = Held::new();
    for id in users {
        let user: Value = http
            .get(format!("{}/_emulator/users/{id}", emulator.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states = user["licenseAssignmentStates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut direct = std::collections::BTreeSet::new();
        let mut inherited = std::collections::BTreeSet::new();
        for s in &states {
            let sku = s["skuId"].as_str().unwrap().to_owned();
            if s["assignedByGroup"].is_null() {
                direct.insert(sku);
            } else {
                inherited.insert(sku);
            }
        }
        for sku in direct {
            held.entry(sku).or_default().0 += 1;
        }
        for sku in inherited {
            held.entry(sku).or_default().1 += 1;
        }
    }
    held
}

/// The `data` of a `POST /v1/directory/held-licenses` answer as counts per SKU id.
pub fn held_of(answer: &Value) -> Held {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku_id"].as_str().unwrap().to_owned(),
                (
                    l["direct"].as_i64().unwrap(),
                    l["inherited"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}
