//! `licensor directory …`: the tenant's directory as the Job Monitor's pickers show it, to
//! find the groups and SKUs a `licensor jobs submit` names (a client of a running licensor, as
//! `licensor jobs`).

use clap::Subcommand;
use reqwest::Method;

use super::client::{Api, Client, print_table, text};

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Directory groups whose display name starts with SEARCH (all groups without it), as the
    /// group picker lists them: id, display name and description.
    Groups {
        #[command(flatten)]
        client: Client,
        /// The start of the groups' display name (any case).
        search: Option<String>,
        /// Show at most this many groups.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=500))]
        limit: u64,
    },
    /// The tenant's subscribed SKUs with their seats: part number, id, enabled, consumed and
    /// available units, and (with --plans) the service plans a `--add SKU:PLAN,…` can leave off.
    Skus {
        #[command(flatten)]
        client: Client,
        /// Also list each SKU's service plans.
        #[arg(long)]
        plans: bool,
    },
}

pub async fn run(cmd: DirectoryCommand) -> anyhow::Result<()> {
    match cmd {
        DirectoryCommand::Groups {
            client,
            search,
            limit,
        } => {
            let api = Api::new(&client)?;
            let mut req = api
                .request(Method::GET, "/v1/directory/groups")
                .query(&[("limit", limit)]);
            if let Some(s) = search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                req = req.query(&[("search", s)]);
            }
            let answer = api.json(req).await?;
            let groups = answer["data"].as_array().cloned().unwrap_or_default();
            if client.json {
                println!("{}", serde_json::to_string_pretty(&groups)?);
                return Ok(());
            }
            if groups.is_empty() {
                match search {
                    Some(s) => println!("no directory group's name starts with `{s}`"),
                    None => println!("the directory has no groups"),
                }
                return Ok(());
            }
            let rows: Vec<[String; 3]> = groups
                .iter()
                .map(|g| {
                    [
                        text(&g["id"]),
                        text(&g["display_name"]),
                        text(&g["description"]),
                    ]
                })
                .collect();
            print_table(["ID", "NAME", "DESCRIPTION"], &rows);
            Ok(())
        }
        DirectoryCommand::Skus { client, plans } => {
            let api = Api::new(&client)?;
            let answer = api.send(Method::GET, "/v1/directory/skus", None).await?;
            let skus = answer["data"].as_array().cloned().unwrap_or_default();
            if client.json {
                println!("{}", serde_json::to_string_pretty(&skus)?);
                return Ok(());
            }
            if skus.is_empty() {
                println!("the tenant subscribes to no SKU");
                return Ok(());
            }
            let rows: Vec<[String; 6]> = skus
                .iter()
                .map(|s| {
                    let service_plans = if plans {
                        s["service_plans"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| match p["service_plan_name"].as_str() {
                                Some(name) => name.to_owned(),
                                None => text(&p["service_plan_id"]),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    } else {
                        s["service_plans"]
                            .as_array()
                            .map_or(0, Vec::len)
                            .to_string()
                    };
                    [
                        text(&s["sku_part_number"]),
                        text(&s["sku_id"]),
                        text(&s["enabled"]),
                        text(&s["consumed"]),
                        text(&s["available"]),
                        service_plans,
                    ]
                })
                .collect();
            let last = if plans { "SERVICE PLANS" } else { "PLANS" };
            print_table(
                ["SKU", "ID", "ENABLED", "CONSUMED", "AVAILABLE", last],
                &rows,
            );
            Ok(())
        }
    }
}
