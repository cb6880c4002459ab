//! `licensor tenant …` and `licensor token …`: administration straight on the database, for
//! the operator who runs the server.

use clap::Subcommand;
use licensor_core::domain::Role;
use licensor_core::tenants::{self, DirectorySettings};
use licensor_core::{Settings, tokens};
use uuid::Uuid;

use crate::app::{open_database, secret_box};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant, optionally with its directory (Microsoft Graph) connection.
    Create {
        #[arg(long)]
        name: String,
        /// Base URL serving the token endpoint and /v1.0 (default: Microsoft's public endpoints).
        #[arg(long)]
        directory_url: Option<String>,
        /// The directory (Entra ID) tenant id.
        #[arg(long)]
        directory_tenant_id: Option<String>,
        /// Application (client) id of the app registration.
        #[arg(long)]
        client_id: Option<String>,
        /// Name of the environment variable that holds the client secret (never pass it as an argument).
        #[arg(long)]
        client_secret_env: Option<String>,
    },
    /// List tenants.
    List,
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

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn tenant(settings: &Settings, cmd: TenantCommand) -> anyhow::Result<()> {
    let db = open_database(settings)
        .await
        .map_err(crate::cli::start_error)?;
    match cmd {
        TenantCommand::Create {
            name,
            directory_url,
            directory_tenant_id,
            client_id,
            client_secret_env,
        } => {
            let secrets = secret_box(settings)?;
            let client_secret = match client_secret_env {
                Some(var) => Some(std::env::var(&var).map_err(|_| {
                    anyhow::anyhow!("--client-secret-env: environment variable {var} is not set")
                })?),
                None => None,
            };
            let directory = DirectorySettings {
                directory_url,
                directory_tenant_id,
                client_id,
                client_secret,
            };
            let t = tenants::create(&db, &secrets, &name, &directory).await?;
            println!("tenant {} created: {}", t.name, t.id);
        }
        TenantCommand::List => {
            for t in tenants::list(&db).await? {
                println!(
                    "{}  {}  {}",
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
