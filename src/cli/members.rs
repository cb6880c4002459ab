//! `licensor members …`: what licensor's jobs did to one directory member (a client of a
//! running licensor, as `licensor jobs`).

use std::collections::HashMap;

use clap::Subcommand;
use reqwest::Method;

use super::client::{Api, Client, print_table, text};

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Every job that touched a member, newest first: job, kind, run, the member's outcome with
    /// its error code, the licenses before → after where the job wrote, and the usage location
    /// before → after where the job set one.
    History {
        #[command(flatten)]
        client: Client,
        /// The member's user principal name (any case) or user id.
        member: String,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=10_000))]
        limit: u64,
    },
}

/// `s` as one URL path segment (user principal names may hold `#`, e.g. guests' `#EXT#`).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The SKUs of a ledger's license list by part number (the id where `names` has none), joined
/// (`-` when none).
fn skus(v: &serde_json::Value, names: &HashMap<String, String>) -> String {
    match v.as_array() {
        None => "-".to_owned(),
        Some(l) if l.is_empty() => "none".to_owned(),
        Some(l) => l
            .iter()
            .map(|x| {
                let id = text(&x["sku_id"]);
                names.get(&id).cloned().unwrap_or(id)
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The tenant's SKUs, id → part number (`GET /v1/directory/skus`); empty when the directory
/// cannot be read now (the history then shows ids).
async fn sku_names(api: &Api) -> HashMap<String, String> {
    let Ok(answer) = api.send(Method::GET, "/v1/directory/skus", None).await else {
        return HashMap::new();
    };
    answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["sku_id"].as_str()?.to_owned(),
                s["sku_part_number"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub async fn run(cmd: MembersCommand) -> anyhow::Result<()> {
    match cmd {
        MembersCommand::History {
            client,
            member,
            limit,
        } => {
            let api = Api::new(&client)?;
            let path = format!("/v1/members/{}/history", encode_segment(member.trim()));
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let entries = api.list(&path, &[], Some(limit)).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            if entries.is_empty() {
                println!("no job touched {member}");
                return Ok(());
            }
            let names = sku_names(&api).await;
            let rows: Vec<[String; 8]> = entries
                .iter()
                .map(|e| {
                    [
                        text(&e["updated_at"]),
                        text(&e["job_id"]),
                        text(&e["kind"]),
                        text(&e["run_no"]),
                        outcome(e),
                        e["error"]["code"].as_str().unwrap_or("-").to_owned(),
                        format!(
                            "{} → {}",
                            skus(&e["before"], &names),
                            skus(&e["after"], &names)
                        ),
                        usage_location(&e["usage_location"]),
                    ]
                })
                .collect();
            print_table(
                [
                    "WHEN",
                    "JOB",
                    "KIND",
                    "RUN",
                    "OUTCOME",
                    "CODE",
                    "LICENSES",
                    "USAGE LOCATION",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

/// The usage location a job set for the member (the entry's `usage_location`, from the change
/// ledger, see `licensor_core::jobs::plan::LocationChange`) as before → after, `none` for a
/// member that had none; `-` when the job set none.
fn usage_location(set: &serde_json::Value) -> String {
    match set["after"].as_str() {
        Some(after) => format!("{} → {after}", set["before"].as_str().unwrap_or("none")),
        None => "-".to_owned(),
    }
}

/// A history entry's outcome: the member's status; for a previewed job's member (pending until
/// the job is launched), the preview's prediction, e.g. `previewed: would_fail`.
fn outcome(e: &serde_json::Value) -> String {
    match (
        e["job_status"].as_str(),
        e["prediction"]["outcome"].as_str(),
    ) {
        (Some("previewed"), Some(predicted)) if e["status"] == "pending" => {
            format!("previewed: {predicted}")
        }
        _ => text(&e["status"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previewed_members_outcome_is_its_prediction() {
        let previewed = serde_json::json!({"job_status": "previewed", "status": "pending",
            "prediction": {"outcome": "would_fail", "code": "count_violation"}});
        assert_eq!(outcome(&previewed), "previewed: would_fail");
        let launched = serde_json::json!({"job_status": "running", "status": "pending",
            "prediction": {"outcome": "would_fail"}});
        assert_eq!(outcome(&launched), "pending");
        let done = serde_json::json!({"job_status": "finished", "status": "succeeded"});
        assert_eq!(outcome(&done), "succeeded");
    }

    #[test]
    fn a_usage_location_set_is_before_and_after() {
        let given = serde_json::json!({"before": null, "after": "SE"});
        assert_eq!(usage_location(&given), "none → SE");
        let changed = serde_json::json!({"before": "NO", "after": "SE"});
        assert_eq!(usage_location(&changed), "NO → SE");
        assert_eq!(usage_location(&serde_json::Value::Null), "-");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("Anna@contoso.com"), "Anna@contoso.com");
        assert_eq!(
            encode_segment("g_x.com#EXT#@c.onmicrosoft.com"),
            "g_x.com%23EXT%23@c.onmicrosoft.com"
        );
    }
}
