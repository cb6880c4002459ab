//! `licensor demo`: the whole product on one machine. Starts the bundled directory emulator with
//! the demo scenario, points a `demo` tenant at it, runs API and worker in one process, and prints
//! `LICENSOR_URL=` / `LICENSOR_TOKEN=` for the CLI and scripts. A second run reuses the data.
//!
//! A fresh data directory also gets a seat inventory, so the Licenses screen shows something on
//! first start: a reassignable CAD license held by users and assets, one that is not
//! reassignable, one out of stock, and a term license delivered more than four months ago whose
//! seats have started, some of them reusable with two different end dates.

use std::io::Write;
use std::path::PathBuf;

use chrono::{Months, Utc};
use graph_emulator::{EmulatorConfig, Scenario};
use licensor_core::config::DirectoryTuning;
use licensor_core::db::Db;
use licensor_core::directory::{DirectoryClient, DirectoryConfig, DirectoryUser};
use licensor_core::domain::Role;
use licensor_core::licenses::{
    self, Assignee, AssigneeType, AssignmentIds, Checkin, Checkout, DeliveredOn, LicenseName,
    LicenseUpdate, NewLicense, Notes, Quantity, SeatCount, TermDays,
};
use licensor_core::page::PageRequest;
use licensor_core::tenants::{self, DirectorySettings};
use licensor_core::{Settings, tokens};
use uuid::Uuid;

use crate::app::{Application, Roles, StartError, shutdown_signal};

const DEMO_TENANT: &str = "demo";
const DEMO_TOKEN_NAME: &str = "demo session";

pub async fn run(listen: &str, data_dir: PathBuf) -> anyhow::Result<()> {
    let overrides = format!(
        "listen = {}\ndata_dir = {}\n",
        toml_string(listen),
        toml_string(&data_dir.to_string_lossy())
    );
    let settings = Settings::load_with(&overrides)?;
    // Held until the process ends.
    let _running = hold_data_dir(&settings.data_dir)?;
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
        .map_err(|e| match e {
            // The address came from this command's `--listen` (or its default), not from a
            // configuration file: say which flag picks another.
            StartError::Config(c) if c.key == "listen" => anyhow::anyhow!(
                "{}; choose another address with --listen, e.g. --listen 127.0.0.1:8081",
                c.reason
            ),
            e => crate::cli::start_error(e),
        })?;
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
    seed_licenses(app.db(), tenant.id, &emulator).await?;
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

The Licenses screen ({url}/#/licenses) holds a seat inventory to try checkout, bulk checkin
and reusable started licenses on.

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
/// The lock file a running demo holds in its data directory.
const DEMO_LOCK: &str = "demo.lock";

/// Hold `data_dir` for this demo: an exclusive lock on `data_dir/demo.lock` (released by the
/// operating system when the process ends, however it ends), with this process's id written in
/// it. A second demo on the same data directory would point the demo tenant at its own
/// directory emulator and revoke the first one's token; it is refused instead, with one line
/// naming the demo that holds the directory.
fn hold_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let path = data_dir.join(DEMO_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let pid = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            anyhow::bail!(
                "a licensor demo{pid} is running on {} already: stop it, or give this one another --data-dir",
                data_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

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

/// Seed the demo tenant's seat inventory once (a tenant that has licenses keeps them). Users
/// come from the demo directory, read through the directory client like the checkout picker.
async fn seed_licenses(
    db: &Db,
    tenant_id: Uuid,
    emulator: &graph_emulator::EmulatorHandle,
) -> anyhow::Result<()> {
    let first = PageRequest::<Uuid>::parse(Some(1), None)?;
    if !licenses::list(db, tenant_id, None, &first)
        .await?
        .data
        .is_empty()
    {
        return Ok(());
    }
    let client = DirectoryClient::new(
        DirectoryConfig {
            token_url: emulator.token_url(),
            graph_url: emulator.graph_url(),
            client_id: emulator.client_id(),
            client_secret: emulator.client_secret(),
        },
        DirectoryTuning::default(),
    )?;
    let users = client.search_users(None, 12, None).await?.data;
    anyhow::ensure!(users.len() >= 10, "the demo directory has too few users");
    let user = |i: usize| -> anyhow::Result<Assignee> {
        let u: &DirectoryUser = &users[i];
        Ok(Assignee::parse(
            AssigneeType::User,
            &u.id,
            u.display_name.as_deref(),
        )?)
    };
    let asset = |tag: &str, name: &str| Assignee::parse(AssigneeType::Asset, tag, Some(name));
    let today = Utc::now().date_naive();

    let license = |name: &str, seats: i64, reassignable: bool, term: Option<i64>, notes: &str| {
        Ok::<_, anyhow::Error>(NewLicense {
            name: LicenseName::parse(name)?,
            seats: SeatCount::parse(seats)?,
            reassignable,
            term_days: term.map(TermDays::parse).transpose()?,
            delivered_on: None,
            notes: Notes::parse(Some(notes))?,
        })
    };
    let out = |who: Assignee, quantity: i64, notes: &str| {
        Ok::<_, anyhow::Error>(Checkout {
            assignee: who,
            quantity: Quantity::parse(quantity)?,
            notes: Notes::parse(Some(notes))?,
            reuse_started: None,
        })
    };

    // A reassignable CAD license, 10 seats, with users and assets on it.
    let cad = licenses::create(
        db,
        tenant_id,
        license(
            "AutoCAD 2026",
            10,
            true,
            None,
            "Network licenses for the design office",
        )?,
        None,
    )
    .await?;
    for (who, quantity, notes) in [
        (user(0)?, 2, "Drafting and plotting"),
        (user(1)?, 1, "Site surveys"),
        (user(2)?, 1, ""),
        (
            asset("LT-0142", "Design workstation 14")?,
            1,
            "Plotter room",
        ),
        (asset("LT-0157", "Laptop, field team")?, 1, ""),
    ] {
        licenses::checkout(db, tenant_id, cad.id, out(who, quantity, notes)?, None).await?;
    }

    // Not reassignable: OEM licenses stay with the machine they came with.
    let oem = licenses::create(
        db,
        tenant_id,
        license(
            "Windows 11 Pro OEM",
            5,
            false,
            None,
            "Bound to the hardware it shipped with",
        )?,
        None,
    )
    .await?;
    for who in [
        asset("LT-0142", "Design workstation 14")?,
        asset("PC-0311", "Reception PC")?,
    ] {
        licenses::checkout(db, tenant_id, oem.id, out(who, 1, "")?, None).await?;
    }

    // Out of stock: every seat is checked out.
    let pdf = licenses::create(
        db,
        tenant_id,
        license("Adobe Acrobat Pro", 3, true, None, "Renewal due in spring")?,
        None,
    )
    .await?;
    for (i, quantity) in [(3, 2), (4, 1)] {
        licenses::checkout(db, tenant_id, pdf.id, out(user(i)?, quantity, "")?, None).await?;
    }

    // A term license (a school's digital textbook): five pupils start a seat today, two of them
    // leave (their started seats become reusable, ending a year from today); then the delivery
    // date is set five months back, so the other seats started by themselves a month ago and
    // are reusable with a second end date.
    let book = licenses::create(
        db,
        tenant_id,
        license(
            "Matematik 5000 1c",
            30,
            true,
            Some(365),
            "Digital lärobok, läsåret 2026/27",
        )?,
        None,
    )
    .await?;
    let mut leavers = Vec::new();
    for i in 5..10 {
        let a = licenses::checkout(db, tenant_id, book.id, out(user(i)?, 1, "")?, None).await?;
        if i >= 8 {
            leavers.push(a.id);
        }
    }
    licenses::checkin(
        db,
        tenant_id,
        book.id,
        Checkin {
            assignment_ids: AssignmentIds::parse(leavers)?,
            notes: Notes::parse(Some("Bytt skola"))?,
        },
        None,
    )
    .await?;
    let delivered = today.checked_sub_months(Months::new(5)).unwrap_or(today);
    licenses::update(
        db,
        tenant_id,
        book.id,
        LicenseUpdate {
            delivered_on: Some(Some(DeliveredOn::parse(delivered)?)),
            ..LicenseUpdate::default()
        },
        None,
    )
    .await?;
    Ok(())
}
