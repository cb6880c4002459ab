//! `licensor licenses …`: the seat inventory from scripts — an HTTP client of a running licensor
//! (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`). `--json` prints the API's answer;
//! otherwise a table or one line. A refusal is one line with the problem's code and detail.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Api, Client, path_segment, print_table, text};

#[derive(Debug, Subcommand)]
pub enum LicensesCommand {
    /// List licenses with their seats: assigned, available and reusable started seats.
    List {
        #[command(flatten)]
        client: Client,
        /// Only the licenses whose name contains this text, in any case (at most 200
        /// characters).
        #[arg(long)]
        search: Option<String>,
    },
    /// Create a license with a number of seats.
    Create {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        name: String,
        /// Seats bought (1 to 1,000,000; the server checks the range).
        #[arg(long, allow_negative_numbers = true)]
        seats: i64,
        /// Checked-out seats cannot be checked in (by default they can: reassignable).
        #[arg(long)]
        not_reassignable: bool,
        /// Length of a seat's term in days: a seat starts at its first checkout or
        /// automatically 4 months after delivery, whichever comes first.
        #[arg(long, allow_negative_numbers = true)]
        term_days: Option<i64>,
        /// Delivery date, YYYY-MM-DD.
        #[arg(long, value_parser = parse_date)]
        delivered_on: Option<chrono::NaiveDate>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Check a license out to a user or an asset.
    #[command(group(clap::ArgGroup::new("holder").required(true).args(["user", "asset"])))]
    Checkout {
        #[command(flatten)]
        client: Client,
        /// The license id.
        license: String,
        /// Checkout to user: the person's id.
        #[arg(long)]
        user: Option<String>,
        /// Checkout to asset: e.g. a laptop or other equipment.
        #[arg(long)]
        asset: Option<String>,
        /// Number of seats to check out.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        quantity: i64,
        /// e.g. reason for checkout.
        #[arg(long)]
        notes: Option<String>,
        /// Reuse a started license ("Återanvänd startad licens"): the end date (YYYY-MM-DD) of
        /// the reusable started seat to hand out.
        #[arg(long, value_name = "ENDS_ON", value_parser = parse_date)]
        reuse_started: Option<chrono::NaiveDate>,
    },
    /// "Used By": who the license is checked out to, with each assignment's id (what `checkin`
    /// takes), newest first.
    UsedBy {
        #[command(flatten)]
        client: Client,
        /// The license id.
        license: String,
        /// Which assignments: those checked out now (the "Used By" list), those checked in
        /// (the history), or all.
        #[arg(long, value_enum, default_value_t = UsedByState::CheckedOut)]
        state: UsedByState,
    },
    /// Check a license in from one or many assignments at once; the seats return to the stock.
    Checkin {
        #[command(flatten)]
        client: Client,
        /// The license id.
        license: String,
        /// Assignment ids from the license's "Used By" list.
        #[arg(required = true)]
        assignments: Vec<uuid::Uuid>,
        #[arg(long)]
        notes: Option<String>,
    },
}

/// A calendar date as the API takes it (`YYYY-MM-DD`), checked before it is sent: a day that
/// does not exist (`2026-13-01`) is refused here, naming the flag, not by the server's JSON
/// reader.
fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date of the form YYYY-MM-DD"))
}

/// Which assignments `licenses used-by` lists (the API's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsedByState {
    CheckedOut,
    CheckedIn,
    All,
}

impl UsedByState {
    fn as_query(self) -> &'static str {
        match self {
            UsedByState::CheckedOut => "checked_out",
            UsedByState::CheckedIn => "checked_in",
            UsedByState::All => "all",
        }
    }
}

pub async fn run(cmd: LicensesCommand) -> anyhow::Result<()> {
    match cmd {
        LicensesCommand::List { client, search } => {
            let api = Api::new(&client)?;
            let search = search
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            let query: Vec<(&str, String)> = search.iter().map(|s| ("search", s.clone())).collect();
            let all = api.list("/v1/licenses", &query, None).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                match search {
                    Some(s) => println!("no license's name contains `{s}`"),
                    None => println!("no licenses yet: add one with `licensor licenses create`"),
                }
            } else {
                print_licenses(&all);
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
                // The id alone on stdout, as `jobs submit` prints its job's: what a script
                // takes for `checkout`; what was made, on stderr.
                println!("{}", text(&l["id"]));
                eprintln!(
                    "license created: {}, {} seat(s), {} available",
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
                // The assignment's id alone on stdout (what `checkin` takes); the rest on stderr.
                println!("{}", text(&a["id"]));
                eprintln!(
                    "checked out {} seat(s) to {} {}{ends}",
                    text(&a["quantity"]),
                    text(&a["assignee"]["type"]),
                    text(&a["assignee"]["id"]),
                );
            }
        }
        LicensesCommand::UsedBy {
            client,
            license,
            state,
        } => {
            let api = Api::new(&client)?;
            let all = api
                .list(
                    &format!("/v1/licenses/{}/assignments", path_segment(&license)),
                    &[("state", state.as_query().to_owned())],
                    None,
                )
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_used_by(&all, state != UsedByState::CheckedOut);
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

/// The "Used By" table: one row per assignment; `checked_in` adds when each was checked in.
fn print_used_by(assignments: &[Value], checked_in: bool) {
    let day = |v: &Value| {
        v.as_str()
            .map_or("-".to_owned(), |s| s.chars().take(10).collect())
    };
    let rows: Vec<[String; 8]> = assignments
        .iter()
        .map(|a| {
            [
                text(&a["id"]),
                text(&a["assignee"]["type"]),
                text(&a["assignee"]["id"]),
                a["assignee"]["name"]
                    .as_str()
                    .map_or("-".to_owned(), str::to_owned),
                text(&a["quantity"]),
                day(&a["checked_out_at"]),
                day(&a["ends_on"]),
                day(&a["checked_in_at"]),
            ]
        })
        .collect();
    let header = [
        "ASSIGNMENT",
        "TYPE",
        "USED BY",
        "NAME",
        "SEATS",
        "CHECKED OUT",
        "ENDS ON",
        "CHECKED IN",
    ];
    if checked_in {
        print_table(header, &rows);
    } else {
        let [h @ .., _] = header;
        let rows: Vec<[String; 7]> = rows
            .into_iter()
            .map(|[a, b, c, d, e, f, g, _]| [a, b, c, d, e, f, g])
            .collect();
        print_table(h, &rows);
    }
}

fn print_licenses(licenses: &[Value]) {
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
    print_table(
        [
            "ID",
            "NAME",
            "SEATS",
            "ASSIGNED",
            "AVAILABLE",
            "STARTED",
            "TERM",
        ],
        &rows,
    );
}
