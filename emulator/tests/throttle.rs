//! Write and read budgets per app and tenant: 429 + Retry-After, warning headers from 80%.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use graph_emulator::{Budget, ENTERPRISEPACK_SKU_ID, Faults, Scenario};
use reqwest::Method;

fn budget_100_per_2s() -> Faults {
    Faults {
        write_budget: Budget {
            limit: 100,
            window_ms: 2_000,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_300_writes_is_throttled_to_the_budget() {
    let env = start_with(Scenario::simple(5, 600, 1_000), budget_100_per_2s()).await;
    let users: Vec<String> = env
        .users(0, 600)
        .await
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();

    for round in 0..2 {
        let batch = &users[round * 300..round * 300 + 300];
        let results = join_all(batch.iter().map(|u| env.assign(u, ENTERPRISEPACK_SKU_ID))).await;
        let accepted = results.iter().filter(|r| r.status.as_u16() != 429).count();
        let throttled: Vec<&Res> = results
            .iter()
            .filter(|r| r.status.as_u16() == 429)
            .collect();
        assert!(
            accepted <= 100,
            "round {round}: {accepted} writes accepted in one window"
        );
        assert!(accepted >= 1);
        assert_eq!(accepted + throttled.len(), 300);
        for r in &throttled {
            assert_graph_error(r, 429, "TooManyRequests", "Please retry again later.");
            let ra: u64 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=2).contains(&ra), "Retry-After {ra}");
            let scope = r.header("x-ms-throttle-scope").expect("scope");
            assert!(scope.starts_with("Tenant_Application/Write/"), "{scope}");
            assert!(scope.ends_with(&env.emu.directory_tenant_id()));
            assert_eq!(
                r.header("x-ms-throttle-information"),
                Some("WriteLimitExceeded")
            );
        }
        let warned = results
            .iter()
            .filter(|r| r.header("x-ms-throttle-limit-percentage").is_some())
            .count();
        assert!(warned >= 1, "from 80% of the budget responses warn");
        // Wait out the window before the next round.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
    }
    let stats = env.control(Method::GET, "/stats", None).await.body;
    let ok = stats["successful_writes"].as_u64().unwrap_or(0);
    assert!(ok <= 200, "at most the budget per window over two windows");
    assert_eq!(stats["throttled"].as_u64().unwrap_or(0), 600 - ok);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn accepted_writes_follow_the_sliding_window() {
    let env = start_with(
        Scenario::simple(5, 100, 1_000),
        Faults {
            write_budget: Budget {
                limit: 10,
                window_ms: 1_000,
            },
            ..Default::default()
        },
    )
    .await;
    let users: Vec<String> = env
        .users(0, 100)
        .await
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();
    let mut accepted_at = Vec::new();
    let start = std::time::Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2_500) && i < users.len() {
        let r = env.assign(&users[i], ENTERPRISEPACK_SKU_ID).await;
        if r.status.as_u16() == 429 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            accepted_at.push(std::time::Instant::now());
            i += 1;
        }
    }
    // Within any window of 1 s (seen from the client, minus a margin), at most 10 accepted.
    for (k, t) in accepted_at.iter().enumerate() {
        let in_window = accepted_at[k..]
            .iter()
            .take_while(|x| x.duration_since(*t) < Duration::from_millis(900))
            .count();
        assert!(in_window <= 10, "{in_window} writes within one window");
    }
    assert!(accepted_at.len() >= 20, "writes resume after the window");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn read_resource_units_are_budgeted() {
    let env = start_with(
        Scenario::simple(5, 50, 10),
        Faults {
            read_budget: Budget {
                limit: 10,
                window_ms: 60_000,
            },
            ..Default::default()
        },
    )
    .await;
    // subscribedSkus costs 3 resource units: 3 calls fit, the 4th does not.
    for _ in 0..3 {
        let r = env.get("/subscribedSkus").await;
        assert_eq!(r.status.as_u16(), 200);
        assert_eq!(r.header("x-ms-resource-unit"), Some("3"));
    }
    let r = env.get("/subscribedSkus").await;
    assert_graph_error(&r, 429, "TooManyRequests", "Please retry again later.");
    assert_eq!(
        r.header("x-ms-throttle-information"),
        Some("ResourceUnitLimitExceeded")
    );
    assert!(
        r.header("x-ms-throttle-scope")
            .unwrap_or("")
            .starts_with("Tenant_Application/ReadWrite/")
    );
    assert!(r.header("retry-after").is_some());
    env.emu.shutdown().await;
}
