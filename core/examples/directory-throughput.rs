//! Benchmark: how close the directory client runs to a tenant's throttle budget.
//!
//! Starts the Graph emulator with a write budget (default 200 writes per 2 s), sends N
//! assignLicense writes through `$batch` from several concurrent callers (as a job's workers
//! would), and prints one JSON line: achieved writes per second, share of the budget's rate,
//! requests made, 429s received and duplicate writes.
//!
//!     cargo run --release -p licensor-core --example directory-throughput -- [WRITES] [LIMIT] [WINDOW_MS]

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use graph_emulator::{Budget, EmulatorConfig, Faults, Scenario};
use licensor_core::config::DirectoryTuning;
use licensor_core::directory::{AssignedLicense, DirectoryClient, DirectoryConfig, WriteOp};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let writes = *args.first().unwrap_or(&10_000) as usize;
    let limit = *args.get(1).unwrap_or(&200) as u32;
    let window_ms = *args.get(2).unwrap_or(&2_000);
    let callers = 8;

    let em = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::simple(42, writes + 100, (writes + 1_000) as u32)),
        faults: Faults {
            throttling: true,
            write_budget: Budget { limit, window_ms },
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await?;
    let client = DirectoryClient::new(
        DirectoryConfig {
            token_url: em.token_url(),
            graph_url: em.graph_url(),
            client_id: em.client_id(),
            client_secret: em.client_secret(),
        },
        DirectoryTuning::default(),
    )?;
    let group = client
        .list_groups(Some("All Users"), 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no group"))?;
    let users: Vec<String> = client
        .members(&group.id, false)
        .map_ok(|u| u.id)
        .take(writes)
        .try_collect()
        .await?;
    let sku = graph_emulator::ENTERPRISEPACK_SKU_ID.parse()?;
    let ops: Vec<WriteOp> = users
        .iter()
        .map(|u| WriteOp::AssignLicense {
            user_id: u.clone(),
            add: vec![AssignedLicense {
                sku_id: sku,
                disabled_plans: vec![],
            }],
            remove: vec![],
        })
        .collect();

    let started = Instant::now();
    let outcomes: Vec<_> = futures::stream::iter(ops.chunks(100))
        .map(|chunk| client.write_batch(chunk))
        .buffer_unordered(callers)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    let wall = started.elapsed().as_secs_f64();

    let stats: Value = reqwest::get(format!("{}/_emulator/stats", em.base_url()))
        .await?
        .json()
        .await?;
    let batch_requests: u64 = stats["requests"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter(|(r, _)| r.contains("batch"))
                .flat_map(|(_, by)| by.as_object().into_iter().flatten())
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let throttled = stats["throttled"].as_u64().unwrap_or(0);
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let rate = ok as f64 / wall;
    let budget_rate = f64::from(limit) / (window_ms as f64 / 1000.0);
    // Every write is one request of the directory's budget; a $batch carries up to 20.
    let requests = writes as u64 + batch_requests;
    println!(
        "{}",
        json!({
            "benchmark": "directory-throughput",
            "writes": writes,
            "succeeded": ok,
            "budget": format!("{limit} writes per {window_ms} ms"),
            "wall_seconds": (wall * 100.0).round() / 100.0,
            "writes_per_second": (rate * 10.0).round() / 10.0,
            "budget_writes_per_second": budget_rate,
            "share_of_budget": (rate / budget_rate * 1000.0).round() / 1000.0,
            "batch_requests": batch_requests,
            "throttled_429": throttled,
            "share_429": (throttled as f64 / requests.max(1) as f64 * 10000.0).round() / 10000.0,
            "writes_per_user_max": stats["writes_per_user_max"],
            "final_write_rate": (client.write_rate() * 10.0).round() / 10.0,
        })
    );
    em.shutdown().await;
    Ok(())
}
