//! `graph-emulator --listen ADDR [--scenario FILE] [--faults FILE]`: a local Microsoft Graph v1.0.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use graph_emulator::{EmulatorConfig, Faults, Scenario, from_json, parse_scenarios};

#[derive(Parser, Debug)]
#[command(
    name = "graph-emulator",
    version,
    about = "A local Microsoft Graph v1.0 stand-in"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GRAPH_EMULATOR_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Scenario JSON: one tenant (the serde form of `Scenario`) or many (`TenantSet`: a list of
    /// tenants, or a count and a template); the demo tenant when absent.
    #[arg(long, env = "GRAPH_EMULATOR_SCENARIO")]
    scenario: Option<PathBuf>,
    /// Faults JSON (the body of `PUT /_emulator/faults`).
    #[arg(long, env = "GRAPH_EMULATOR_FAULTS")]
    faults: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("graph-emulator: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut scenarios = match &args.scenario {
        Some(p) => parse_scenarios(&read(p, "--scenario")?)
            .map_err(|e| anyhow::anyhow!("--scenario: {} is not valid: {e}", p.display()))?,
        None => vec![Scenario::demo()],
    };
    let faults: Faults = match &args.faults {
        Some(p) => from_json(&read(p, "--faults")?)
            .map_err(|e| anyhow::anyhow!("--faults: {} is not valid: {e}", p.display()))?,
        None => Faults::default(),
    };
    let more_tenants = scenarios.split_off(1);
    let emu = graph_emulator::spawn(EmulatorConfig {
        listen: args.listen,
        scenario: scenarios.pop(),
        more_tenants,
        faults,
    })
    .await?;
    println!("GRAPH_URL={}", emu.graph_url());
    println!("GRAPH_TOKEN_URL={}", emu.token_url());
    println!("GRAPH_TENANT_ID={}", emu.directory_tenant_id());
    println!("GRAPH_CLIENT_ID={}", emu.client_id());
    println!("GRAPH_CLIENT_SECRET={}", emu.client_secret());
    let tenants = emu.tenants().len();
    if tenants > 1 {
        // The others' credentials: GET /_emulator/tenants.
        println!("GRAPH_TENANTS={tenants}");
    }
    tracing::info!(url = %emu.base_url(), "graph emulator listening");
    wait_for_stop().await?;
    emu.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_stop() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
