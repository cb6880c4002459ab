//! `licensor demo`: the whole product on one machine. Starts the bundled directory emulator with
//! the demo scenario, points a `demo` tenant at it, runs API and worker in one process, and prints
//! `LICENSOR_URL=` / `LICENSOR_TOKEN=` for the CLI and scripts. A second run reuses the data.

use std::io::Write;
use std::path::PathBuf;

use graph_emulator::{EmulatorConfig, Scenario};
use licensor_core::domain::Role;
use licensor_core::tenants::{self, DirectorySettings};
use licensor_core::{Settings, tokens};

use crate::app::{Application, Roles, shutdown_signal};

const DEMO_TENANT: &str = "demo";
const DEMO_TOKEN_NAME: &str = "demo session";

pub async fn run(listen: &str, data_dir: PathBuf) -> anyhow::Result<()> {
    let overrides = format!(
        "listen = {}\ndata_dir = {}\n",
        toml_string(listen),
        toml_string(&data_dir.to_string_lossy())
    );
    let settings = Settings::load_with(&overrides)?;
    crate::telemetry::init_tracing(&settings.log);

    // Throttled like Graph, with a budget of 200 writes a second (Graph's default for one app
    // is far lower), so a demo job of thousands of members finishes while you watch.
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(Scenario::demo()),
        faults: graph_emulator::Faults {
            write_budget: graph_emulator::Budget {
                limit: 30_000,
                window_ms: 150_000,
            },
            ..graph_emulator::Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the directory emulator: {e}"))?;

    let app = Application::build(settings.clone(), Roles::ALL)
        .await
        .map_err(crate::cli::start_error)?;
    let directory = DirectorySettings {
        directory_url: Some(emulator.base_url()),
        directory_tenant_id: Some(emulator.directory_tenant_id()),
        client_id: Some(emulator.client_id()),
        client_secret: Some(emulator.client_secret()),
    };
    // The emulator listens on a new port each run: keep the tenant, refresh its directory.
    let tenant = match tenants::find_by_name(app.db(), DEMO_TENANT).await? {
        Some(t) => tenants::update_directory(app.db(), app.secrets(), t.id, &directory).await?,
        None => tenants::create(app.db(), app.secrets(), DEMO_TENANT, &directory).await?,
    };
    // Tokens are shown once and stored as hashes, so each session gets a fresh one and the
    // previous session's stops working.
    for old in tokens::list(app.db(), tenant.id).await? {
        if old.name == DEMO_TOKEN_NAME && old.revoked_at.is_none() {
            tokens::revoke(app.db(), tenant.id, old.id, None).await?;
        }
    }
    let token = tokens::create(app.db(), tenant.id, Role::Admin, DEMO_TOKEN_NAME, None).await?;
    let addr = app
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("the API is not listening"))?;
    let url = format!("http://{addr}");

    let greeting = format!(
        "licensor demo is running (data in {data}).

  Job Monitor     {url}/
  API             {url}/v1   (OpenAPI: {url}/openapi.json)
  Directory       {directory} (bundled Microsoft Graph emulator)

The demo tenant's directory holds the groups All Staff (5,000 members), Sales (250)
and Engineering (1,200, with a nested group), and the SKUs ENTERPRISEPACK (plenty of
units) and SPE_E5 (100 units, so a large job runs out); 2% of users have no usage
location, so a first job ends Finished with Exception and can be rerun.

Use the CLI and scripts with:

LICENSOR_URL={url}
LICENSOR_TOKEN={token}

e.g. licensor jobs submit --kind assign --group Sales --add SPE_E5, then licensor jobs watch ID.

Press Ctrl-C to stop.
",
        data = settings.data_dir.display(),
        directory = emulator.base_url(),
        token = token.secret,
    );
    // Whoever reads the greeting may stop reading (a script that took the token): the demo
    // keeps serving.
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(greeting.as_bytes())
        .and_then(|()| out.flush());
    drop(out);

    let outcome = app.run_until(shutdown_signal()).await;
    emulator.shutdown().await;
    outcome
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}
