//! `licensor licenses …`: the seat inventory from scripts — an HTTP client of a running licensor
//! (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`). `--json` prints the API's answer;
//! otherwise a table or one line. A refusal is one line with the problem's code and detail.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct Client {
    /// licensor's URL, e.g. http://127.0.0.1:8080 (as `licensor demo` prints it).
    #[arg(long, env = "LICENSOR_URL")]
    url: Option<String>,
    /// An API token of the tenant.
    #[arg(long, env = "LICENSOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LicensesCommand {
    /// List licenses with their seats: assigned, available and reusable started seats.
    List {
        #[command(flatten)]
        client: Client,
    },
    /// Create a license with a number of seats.
    Create {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        name: String,
        /// Seats bought.
        #[arg(long)]
        seats: i64,
        /// Checked-out seats cannot be checked in (by default they can: reassignable).
        #[arg(long)]
        not_reassignable: bool,
        /// Length of a seat's term in days: a seat starts at its first checkout or
        /// automatically 4 months after delivery, whichever comes first.
        #[arg(long)]
        term_days: Option<i64>,
        /// Delivery date, YYYY-MM-DD.
        #[arg(long)]
        delivered_on: Option<String>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Check a license out to a user or an asset.
    Checkout {
        #[command(flatten)]
        client: Client,
        /// The license id.
        license: String,
        /// Checkout to user: the person's id.
        #[arg(long, conflicts_with = "asset", required_unless_present = "asset")]
        user: Option<String>,
        /// Checkout to asset: e.g. a laptop or other equipment.
        #[arg(long)]
        asset: Option<String>,
        /// Number of seats to check out.
        #[arg(long, default_value_t = 1)]
        quantity: i64,
        /// e.g. reason for checkout.
        #[arg(long)]
        notes: Option<String>,
        /// Reuse a started license ("Återanvänd startad licens"): the end date (YYYY-MM-DD) of
        /// the reusable started seat to hand out.
        #[arg(long, value_name = "ENDS_ON")]
        reuse_started: Option<String>,
    },
    /// Check a license in from one or many assignments at once; the seats return to the stock.
    Checkin {
        #[command(flatten)]
        client: Client,
        /// The license id.
        license: String,
        /// Assignment ids from the license's "Used By" list.
        #[arg(required = true)]
        assignments: Vec<String>,
        #[arg(long)]
        notes: Option<String>,
    },
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    fn new(client: &Client) -> anyhow::Result<Api> {
        let url = client
            .url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no licensor URL: pass --url or set LICENSOR_URL"))?;
        let token = client
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no token: pass --token or set LICENSOR_TOKEN"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Api {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        match (value["code"].as_str(), value["detail"].as_str()) {
            (Some(code), Some(detail)) => Err(anyhow::anyhow!("{code}: {detail}")),
            _ => Err(anyhow::anyhow!("HTTP {status} from {}", self.url)),
        }
    }
}

pub async fn run(cmd: LicensesCommand) -> anyhow::Result<()> {
    match cmd {
        LicensesCommand::List { client } => {
            let api = Api::new(&client)?;
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/licenses?limit=500&cursor={c}"),
                    None => "/v1/licenses?limit=500".to_owned(),
                };
                let page = api.send(reqwest::Method::GET, &path, None).await?;
                all.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            if client.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&all);
            }
        }
        LicensesCommand::Create {
            client,
            name,
            seats,
            not_reassignable,
            term_days,
            delivered_on,
            notes,
        } => {
            let api = Api::new(&client)?;
            let mut body =
                json!({ "name": name, "seats": seats, "reassignable": !not_reassignable });
            if let Some(t) = term_days {
                body["term_days"] = json!(t);
            }
            if let Some(d) = delivered_on {
                body["delivered_on"] = json!(d);
            }
            if let Some(n) = notes {
                body["notes"] = json!(n);
            }
            let l = api
                .send(reqwest::Method::POST, "/v1/licenses", Some(body))
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                println!(
                    "license {} created: {}, {} seats, {} available",
                    text(&l["id"]),
                    text(&l["name"]),
                    text(&l["seats"]),
                    text(&l["available"])
                );
            }
        }
        LicensesCommand::Checkout {
            client,
            license,
            user,
            asset,
            quantity,
            notes,
            reuse_started,
        } => {
            let api = Api::new(&client)?;
            let assignee = match (user, asset) {
                (Some(id), _) => json!({ "type": "user", "id": id }),
                (None, Some(id)) => json!({ "type": "asset", "id": id }),
                (None, None) => anyhow::bail!("pass --user or --asset"),
            };
            let mut body = json!({ "assignee": assignee, "quantity": quantity });
            if let Some(n) = notes {
                body["notes"] = json!(n);
            }
            if let Some(d) = reuse_started {
                body["reuse_started"] = json!({ "ends_on": d });
            }
            let a = api
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/licenses/{}/checkout", path_segment(&license)),
                    Some(body),
                )
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                let ends = match a["ends_on"].as_str() {
                    Some(d) => format!(", ends on {d}"),
                    None => String::new(),
                };
                println!(
                    "checked out {} seat(s) to {} {}{ends}: assignment {}",
                    text(&a["quantity"]),
                    text(&a["assignee"]["type"]),
                    text(&a["assignee"]["id"]),
                    text(&a["id"])
                );
            }
        }
        LicensesCommand::Checkin {
            client,
            license,
            assignments,
            notes,
        } => {
            let api = Api::new(&client)?;
            let mut body = json!({ "assignment_ids": assignments });
            if let Some(n) = notes {
                body["notes"] = json!(n);
            }
            let out = api
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/licenses/{}/checkin", path_segment(&license)),
                    Some(body),
                )
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "checked in {} assignment(s); {} of {} seats available",
                    out["checked_in"].as_array().map_or(0, Vec::len),
                    text(&out["license"]["available"]),
                    text(&out["license"]["seats"])
                );
            }
        }
    }
    Ok(())
}

/// A license id as it may appear in a URL path (anything else is simply "not found").
fn path_segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_table(licenses: &[Value]) {
    let rows: Vec<[String; 7]> = licenses
        .iter()
        .map(|l| {
            [
                text(&l["id"]),
                text(&l["name"]),
                text(&l["seats"]),
                text(&l["assigned"]),
                text(&l["available"]),
                text(&l["started_reusable"]),
                match l["term_days"].as_i64() {
                    Some(d) => format!("{d} days"),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "SEATS",
        "ASSIGNED",
        "AVAILABLE",
        "STARTED",
        "TERM",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
