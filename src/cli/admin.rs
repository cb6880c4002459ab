//! `licensor tenant …` and `licensor token …`: administration straight on the database, for
//! the operator who runs the server.

use clap::Subcommand;
use licensor_core::domain::Role;
use licensor_core::tenants::{self, DirectorySettings, DirectoryUpdate};
use licensor_core::{Settings, tokens};
use uuid::Uuid;

use crate::app::{open_database, secret_box};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant, optionally with its directory (Microsoft Graph) connection.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        directory: DirectoryArgs,
    },
    /// Set a tenant's directory (Microsoft Graph) connection again, keeping the settings not given.
    ///
    /// Only the settings given change, so `--client-secret-env NEW_SECRET` alone rotates an
    /// expiring client secret. The resulting connection must be whole (directory tenant id,
    /// client id and secret, or none of them), else nothing changes. Prints what changed, never
    /// the secret. A running licensor uses the new connection without a restart: the API from
    /// its next request, workers in every step they begin a second after it or later.
    SetDirectory {
        /// Tenant name or id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        directory: DirectoryArgs,
        /// Remove the connection entirely (back to none, on Microsoft's endpoints): the tenant's
        /// directory routes and jobs then answer directory_not_configured.
        #[arg(long, conflicts_with_all = ["directory_url", "directory_tenant_id", "client_id", "client_secret_env"])]
        clear: bool,
    },
    /// List tenants.
    List,
}

/// A tenant's directory (Microsoft Graph) connection as `tenant create` and `tenant
/// set-directory` take it. The directory tenant id, client id and secret go together, or none
/// of them.
#[derive(Debug, clap::Args)]
pub struct DirectoryArgs {
    /// Base URL serving the token endpoint and /v1.0 (default: Microsoft's public endpoints; an
    /// emulator, say).
    #[arg(long)]
    directory_url: Option<String>,
    /// The directory (Entra ID) tenant id: a GUID or a domain name such as
    /// contoso.onmicrosoft.com.
    #[arg(long)]
    directory_tenant_id: Option<String>,
    /// Application (client) id of the app registration (a GUID).
    #[arg(long)]
    client_id: Option<String>,
    /// Name of the environment variable that holds the client secret (never pass it as an
    /// argument).
    #[arg(long)]
    client_secret_env: Option<String>,
}

impl DirectoryArgs {
    /// The settings given, the secret read from its environment variable.
    fn settings(self) -> anyhow::Result<DirectorySettings> {
        Ok(DirectorySettings {
            directory_url: self.directory_url,
            directory_tenant_id: self.directory_tenant_id,
            client_id: self.client_id,
            client_secret: secret_from_env(self.client_secret_env.as_deref())?,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and only its hash is stored.
    Create {
        /// Tenant name or id.
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List a tenant's tokens.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token by id; it stops working at once.
    Revoke { id: Uuid },
}

/// The client secret held by the environment variable `--client-secret-env` names.
fn secret_from_env(var: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(var) = var else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(secret) => Ok(Some(secret)),
        Err(std::env::VarError::NotPresent) => Err(anyhow::anyhow!(
            "--client-secret-env: environment variable {var} is not set"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(anyhow::anyhow!(
            "--client-secret-env: environment variable {var} is not valid UTF-8"
        )),
    }
}

/// What `tenant set-directory` changed, for its one line: each setting that differs with what
/// it was, and "client secret replaced" (never the secret).
fn what_changed(done: &DirectoryUpdate) -> String {
    let (before, after) = (&done.before, &done.after);
    if !done.changed() {
        return "directory connection unchanged (it holds these settings already)".into();
    }
    if after.client_id.is_none() && before.client_id.is_some() {
        return "directory connection removed".into();
    }
    let shown = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
    let mut parts = Vec::new();
    let url = tenants::directory_url;
    if url(before) != url(after) {
        parts.push(format!(
            "directory URL {} (was {})",
            shown(url(after), "Microsoft's"),
            shown(url(before), "Microsoft's")
        ));
    }
    for (what, b, a) in [
        (
            "directory tenant id",
            &before.directory_tenant_id,
            &after.directory_tenant_id,
        ),
        ("client id", &before.client_id, &after.client_id),
    ] {
        if b != a {
            parts.push(format!(
                "{what} {} (was {})",
                shown(a.clone(), "none"),
                shown(b.clone(), "none")
            ));
        }
    }
    if done.secret_replaced {
        parts.push(if before.client_secret_enc.is_some() {
            "client secret replaced".into()
        } else {
            "client secret set".into()
        });
    }
    if parts.is_empty() {
        // Written with none of the settings above differing: its token and Graph URLs were made
        // again from them.
        return "token and Graph URLs made again from the same settings".into();
    }
    parts.join(", ")
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn tenant(settings: &Settings, cmd: TenantCommand) -> anyhow::Result<()> {
    let db = open_database(settings)
        .await
        .map_err(crate::cli::start_error)?;
    match cmd {
        TenantCommand::Create { name, directory } => {
            let secrets = secret_box(settings)?;
            let directory = directory.settings()?;
            let t = tenants::create(&db, &secrets, &name, &directory).await?;
            println!("tenant {} created: {}", t.name, t.id);
        }
        TenantCommand::SetDirectory {
            tenant,
            directory,
            clear,
        } => {
            let t = tenants::find_by_ref(&db, &tenant)
                .await
                .map_err(|_| anyhow::anyhow!("no tenant named or with id `{tenant}`"))?;
            let done = if clear {
                tenants::clear_directory(&db, t.id).await?
            } else {
                let change = directory.settings()?;
                if change.is_empty() {
                    anyhow::bail!(
                        "nothing to change: give --directory-url, --directory-tenant-id, --client-id, --client-secret-env or --clear"
                    );
                }
                let secrets = secret_box(settings)?;
                tenants::set_directory(&db, &secrets, t.id, &change).await?
            };
            println!("tenant {}: {}", t.name, what_changed(&done));
        }
        TenantCommand::List => {
            // Whether each tenant has a directory connection: its Graph URL alone is the same
            // for a tenant connected to Microsoft and one with no connection.
            for t in tenants::list(&db).await? {
                let connection = match (&t.directory_tenant_id, &t.client_id) {
                    (Some(directory), Some(client)) => format!(
                        "directory tenant {directory}, client {client}, secret {}",
                        if t.client_secret_enc.is_some() {
                            "set"
                        } else {
                            "not set"
                        }
                    ),
                    _ => "no directory connection".to_owned(),
                };
                println!(
                    "{}  {}  {}  {connection}",
                    t.id,
                    t.name,
                    t.graph_url.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

pub async fn token(settings: &Settings, cmd: TokenCommand) -> anyhow::Result<()> {
    let db = open_database(settings)
        .await
        .map_err(crate::cli::start_error)?;
    match cmd {
        TokenCommand::Create { tenant, role, name } => {
            let t = tenants::find_by_ref(&db, &tenant)
                .await
                .map_err(|_| anyhow::anyhow!("no tenant named or with id `{tenant}`"))?;
            let new = tokens::create(&db, t.id, role, &name, None).await?;
            eprintln!(
                "token {} ({role}) created for tenant {}; it is shown once:",
                new.view.id, t.name
            );
            println!("{}", new.secret);
        }
        TokenCommand::List { tenant } => {
            let t = tenants::find_by_ref(&db, &tenant)
                .await
                .map_err(|_| anyhow::anyhow!("no tenant named or with id `{tenant}`"))?;
            for tok in tokens::list(&db, t.id).await? {
                let state = if tok.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let used = tok
                    .last_used_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never used".into());
                println!(
                    "{}  {:8}  {:7}  {}  {}",
                    tok.id, tok.role, state, used, tok.name
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let tenant_id = tokens::tenant_of(&db, id)
                .await
                .map_err(|_| anyhow::anyhow!("no token with id {id}"))?;
            tokens::revoke(&db, tenant_id, id, None).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
