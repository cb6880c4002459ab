//! Benchmarks of the Graph emulator on loopback. Prints one JSON line per figure:
//! scenario load time and memory for a large tenant, assignLicense and members-paging throughput.
//!
//! `cargo run --release -p graph-emulator --bin emulator-bench -- [--users N] [--seconds S] [--concurrency C]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use graph_emulator::{
    ENTERPRISEPACK_SKU_ID, EmulatorConfig, Faults, GroupSpec, Scenario, ServicePlanSpec, SkuSpec,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// Users in the benchmark tenant.
    #[arg(long, default_value_t = 1_000_000)]
    users: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// A minimal HTTP/1.1 keep-alive client, so the figures measure the emulator, not a client stack.
struct Conn {
    io: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let w = self.io.get_mut();
        w.write_all(req.as_bytes()).await?;
        w.write_all(body).await?;
        let mut line = String::new();
        self.io.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut len = None;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let mut buf = vec![0; len.context("no content-length")?];
        self.io.read_exact(&mut buf).await?;
        Ok((status, buf))
    }
}

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn scenario(users: usize) -> Scenario {
    Scenario {
        seed: 42,
        users,
        users_without_usage_location: 0.02,
        groups: vec![
            GroupSpec {
                leading_users: true,
                ..GroupSpec::new("All Users", users)
            },
            GroupSpec::new("Sales", users / 10),
            GroupSpec {
                nested_groups: vec!["Platform".into()],
                ..GroupSpec::new("Engineering", users / 5)
            },
            GroupSpec {
                devices: 10,
                contacts: 10,
                ..GroupSpec::new("Platform", users / 100)
            },
            GroupSpec {
                licenses: vec!["ENTERPRISEPACK".into()],
                ..GroupSpec::new("Pilot", 1_000.min(users))
            },
        ],
        skus: vec![SkuSpec {
            sku_part_number: "ENTERPRISEPACK".into(),
            sku_id: Some(ENTERPRISEPACK_SKU_ID.into()),
            enabled: (users as u32).saturating_mul(2),
            service_plans: vec![
                ServicePlanSpec::new(
                    "EXCHANGE_S_ENTERPRISE",
                    "efb87545-963c-4e0d-99df-69c6916d9eb0",
                ),
                ServicePlanSpec::new(
                    "SHAREPOINTENTERPRISE",
                    "5dbe027f-2339-4123-9542-606e4d348a72",
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn run_for<F, Fut>(
    seconds: u64,
    concurrency: usize,
    work: F,
) -> anyhow::Result<(u64, u64, f64)>
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        tasks.push(tokio::spawn(work(
            w,
            stop.clone(),
            ok.clone(),
            failed.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        secs,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rss_before = rss_mib("VmRSS:");

    let t = Instant::now();
    let emu = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario(args.users)),
        faults: Faults::unthrottled(),
        ..Default::default()
    })
    .await?;
    let load = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "scenario_load",
            "users": args.users,
            "seconds": (load * 1000.0).round() / 1000.0,
            "rss_mib": (rss_mib("VmRSS:") * 10.0).round() / 10.0,
            "hwm_mib": (rss_mib("VmHWM:") * 10.0).round() / 10.0,
            "rss_before_mib": (rss_before * 10.0).round() / 10.0,
        })
    );

    let addr = emu.local_addr();
    let mut c = Conn::open(addr).await?;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
        emu.client_id(),
        emu.client_secret()
    );
    let path = format!("/{}/oauth2/v2.0/token", emu.directory_tenant_id());
    let (status, body) = c
        .send(
            "POST",
            &path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await?;
    if status != 200 {
        bail!("token: {status}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let bearer = format!("Bearer {}", v["access_token"].as_str().context("token")?);

    // User ids with a usage location, for assignLicense.
    let mut ids = Vec::new();
    let want = args.users.min(200_000);
    let mut off = 0;
    while off < want {
        let (_, b) = c
            .send(
                "GET",
                &format!("/_emulator/users?offset={off}&limit=10000"),
                &[],
                b"",
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        for u in v["value"].as_array().context("users")? {
            if u["usageLocation"].is_string()
                && let Some(id) = u["id"].as_str()
            {
                ids.push(id.to_string());
            }
        }
        off += 10_000;
    }
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));

    let body = Arc::new(
        json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": []}], "removeLicenses": []})
            .to_string(),
    );
    let (ok, failed, secs) = run_for(args.seconds, args.concurrency, |_, stop, ok, failed| {
        let ids = ids.clone();
        let next = next.clone();
        let bearer = bearer.clone();
        let body = body.clone();
        async move {
            let mut c = Conn::open(addr).await?;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) % ids.len();
                let (s, _) = c
                    .send(
                        "POST",
                        &format!("/v1.0/users/{}/assignLicense", ids[i]),
                        &[
                            ("Authorization", &bearer),
                            ("Content-Type", "application/json"),
                        ],
                        body.as_bytes(),
                    )
                    .await?;
                if s == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await?;
    println!(
        "{}",
        json!({
            "bench": "assignLicense",
            "concurrency": args.concurrency,
            "requests": ok + failed,
            "failed": failed,
            "seconds": (secs * 100.0).round() / 100.0,
            "req_per_sec": ((ok + failed) as f64 / secs).round(),
        })
    );

    let (_, b) = c.send("GET", "/_emulator/scenario", &[], b"").await?;
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    let group = v["groups"][0]["id"].as_str().context("group")?.to_string();
    for top in [999usize, 100] {
        let members = Arc::new(AtomicU64::new(0));
        let (ok, failed, secs) = run_for(args.seconds, args.concurrency, |w, stop, ok, failed| {
            let bearer = bearer.clone();
            let group = group.clone();
            let members = members.clone();
            async move {
                let mut c = Conn::open(addr).await?;
                let first = format!(
                    "/v1.0/groups/{group}/members/microsoft.graph.user?$top={top}&$select=id,userPrincipalName"
                );
                let mut path = first.clone();
                // Spread workers over the group.
                let _ = w;
                while !stop.load(Ordering::Relaxed) {
                    let (s, b) = c.send("GET", &path, &[("Authorization", &bearer)], b"").await?;
                    if s != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        path = first.clone();
                        continue;
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                    members.fetch_add(top as u64, Ordering::Relaxed);
                    let text = String::from_utf8_lossy(&b);
                    path = match text.find("\"@odata.nextLink\":\"") {
                        Some(p) => {
                            let rest = &text[p + 19..];
                            let url = &rest[..rest.find('"').unwrap_or(rest.len())];
                            url.split_once("/v1.0").map(|(_, p)| format!("/v1.0{p}")).unwrap_or(first.clone())
                        }
                        None => first.clone(),
                    };
                }
                Ok(())
            }
        })
        .await?;
        println!(
            "{}",
            json!({
                "bench": "members_paging",
                "top": top,
                "concurrency": args.concurrency,
                "requests": ok + failed,
                "failed": failed,
                "seconds": (secs * 100.0).round() / 100.0,
                "req_per_sec": ((ok + failed) as f64 / secs).round(),
                "members_per_sec": (members.load(Ordering::Relaxed) as f64 / secs).round(),
            })
        );
    }
    println!(
        "{}",
        json!({"bench": "final_memory", "rss_mib": (rss_mib("VmRSS:") * 10.0).round() / 10.0, "hwm_mib": (rss_mib("VmHWM:") * 10.0).round() / 10.0})
    );
    emu.shutdown().await;
    Ok(())
}
