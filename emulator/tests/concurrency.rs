//! 1,000 concurrent assignLicense calls against 500 free seats.

mod common;

use common::*;
use futures::future::join_all;
use graph_emulator::{ENTERPRISEPACK_SKU_ID, Scenario};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_free_seats_are_assigned() {
    let env = start(Scenario::simple(11, 1_000, 500)).await;
    let users: Vec<String> = env
        .users(0, 1_000)
        .await
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(users.len(), 1_000);
    let calls = users.iter().map(|u| env.assign(u, ENTERPRISEPACK_SKU_ID));
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.status.as_u16() == 200).count();
    assert_eq!(ok, 500);
    let expected = format!(
        "Subscription with SKU {ENTERPRISEPACK_SKU_ID} does not have any available licenses."
    );
    for r in results.iter().filter(|r| r.status.as_u16() != 200) {
        assert_graph_error(r, 400, "Request_BadRequest", &expected);
    }
    let sku = env.sku("ENTERPRISEPACK").await;
    assert_eq!(sku["consumedUnits"], 500);
    assert_eq!(sku["consumedUnits"], sku["prepaidUnits"]["enabled"]);
    let stats = env.control(Method::GET, "/stats", None).await.body;
    assert_eq!(stats["successful_writes"], 500);
    assert_eq!(stats["writes_per_user_max"], 1);
    env.emu.shutdown().await;
}
