//! `licensor webhooks …`: a tenant's webhook endpoints and their delivery log from scripts — an
//! HTTP client of a running licensor (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`;
//! an admin token). `--json` prints the API's answer; otherwise a table or one line.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Api, Client, path_segment, print_table, text};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create an endpoint; prints its id and its signing secret (shown this once).
    Create {
        #[command(flatten)]
        client: Client,
        /// Where deliveries go: https://…, or http://… to a host in the
        /// webhooks.allow_http_hosts setting.
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Events to receive: job.finished, job.finished_with_exception, job.failed,
        /// job.cancelled (repeat, or separate with commas).
        #[arg(long = "event", required = true, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the tenant's endpoints.
    List {
        #[command(flatten)]
        client: Client,
    },
    /// An endpoint's deliveries, newest first: event, job, status, attempts, last answer, next try.
    Deliveries {
        #[command(flatten)]
        client: Client,
        /// The endpoint id.
        webhook: String,
        /// Only these statuses: pending, delivered, failed (comma-separated).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (newest first), 1 to 10,000.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<usize>::new().range(1..=10_000))]
        limit: usize,
    },
    /// Send a delivered or failed delivery again.
    Redeliver {
        #[command(flatten)]
        client: Client,
        /// The endpoint id.
        webhook: String,
        /// The delivery id (from `webhooks deliveries`).
        delivery: String,
    },
    /// Delete an endpoint and its delivery log.
    Delete {
        #[command(flatten)]
        client: Client,
        /// The endpoint id.
        webhook: String,
    },
}

pub async fn run(cmd: WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::Create {
            client,
            endpoint,
            events,
            description,
        } => {
            let api = Api::new(&client)?;
            let mut body = json!({"url": endpoint, "events": events});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let w = api
                .send(reqwest::Method::POST, "/v1/webhooks", Some(body))
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&w)?);
            } else {
                println!("webhook {} created for {}", text(&w["id"]), events_of(&w));
                println!("signing secret (shown once): {}", text(&w["secret"]));
            }
        }
        WebhooksCommand::List { client } => {
            let api = Api::new(&client)?;
            let all = api.list("/v1/webhooks", &[], None).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let rows: Vec<[String; 4]> = all
                    .iter()
                    .map(|w| {
                        [
                            text(&w["id"]),
                            if w["enabled"] == true { "yes" } else { "no" }.to_owned(),
                            events_of(w),
                            text(&w["url"]),
                        ]
                    })
                    .collect();
                print_table(["ID", "ENABLED", "EVENTS", "URL"], &rows);
            }
        }
        WebhooksCommand::Deliveries {
            client,
            webhook,
            status,
            limit,
        } => {
            let api = Api::new(&client)?;
            let query: Vec<(&str, String)> = status.map(|s| ("status", s)).into_iter().collect();
            let path = format!("/v1/webhooks/{}/deliveries", path_segment(&webhook));
            let all = api.list(&path, &query, Some(limit)).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let rows: Vec<[String; 8]> = all
                    .iter()
                    .map(|d| {
                        [
                            text(&d["id"]),
                            text(&d["event"]),
                            text(&d["job_id"]),
                            text(&d["status"]),
                            text(&d["attempts"]),
                            text(&d["last_status_code"]),
                            text(&d["next_attempt_at"]),
                            text(&d["last_error"]),
                        ]
                    })
                    .collect();
                print_table(
                    [
                        "ID", "EVENT", "JOB", "STATUS", "ATTEMPTS", "ANSWER", "NEXT TRY", "ERROR",
                    ],
                    &rows,
                );
            }
        }
        WebhooksCommand::Redeliver {
            client,
            webhook,
            delivery,
        } => {
            let api = Api::new(&client)?;
            let path = format!(
                "/v1/webhooks/{}/deliveries/{}/redeliver",
                path_segment(&webhook),
                path_segment(&delivery)
            );
            let d = api.send(reqwest::Method::POST, &path, None).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!("delivery {} queued again", text(&d["id"]));
            }
        }
        WebhooksCommand::Delete { client, webhook } => {
            let api = Api::new(&client)?;
            let path = format!("/v1/webhooks/{}", path_segment(&webhook));
            api.bytes(api.request(reqwest::Method::DELETE, &path))
                .await?;
            if client.json {
                println!("{}", json!({"deleted": webhook}));
            } else {
                println!("webhook {webhook} deleted");
            }
        }
    }
    Ok(())
}

fn events_of(w: &Value) -> String {
    w["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect::<Vec<_>>()
        .join(",")
}
