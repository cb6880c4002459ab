//! What `jobs rerun` and `jobs cancel` share: acting on many jobs at once, by ids or by a
//! filter, with `--dry-run`.

use chrono::{DateTime, Utc};
use clap::Args;
use licensor_core::domain::{JobKind, JobStatus};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{group_id, kind_parser, status_parser};
use crate::cli::Exit;
use crate::cli::client::{Api, text};

/// The jobs a rerun or cancel acts on: ids, or every job a filter matches; with `--dry-run`
/// only counted.
#[derive(Debug, Args)]
pub struct Targets {
    /// Job ids (or give a filter instead).
    #[arg(required_unless_present = "filter", conflicts_with = "filter")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only say how many jobs would be acted on and which refused; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which jobs a bulk rerun or cancel acts on, instead of ids: every job that matches all the
/// options given (at most the server's `jobs.bulk_max_jobs`).
#[derive(Debug, Args)]
#[group(id = "filter", multiple = true, required = false)]
pub struct FilterArgs {
    /// Jobs in these statuses (comma-separated or repeated), e.g. `failed`.
    #[arg(long, value_delimiter = ',', value_parser = status_parser())]
    status: Vec<JobStatus>,
    /// Jobs of these kinds (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_parser = kind_parser())]
    kind: Vec<JobKind>,
    /// Jobs that selected this group (its name or id).
    #[arg(long)]
    group: Option<String>,
    /// Jobs created before this instant (RFC 3339, e.g. 2026-11-30T12:00:00Z).
    #[arg(long)]
    created_before: Option<DateTime<Utc>>,
    /// Jobs created at or after this instant (RFC 3339).
    #[arg(long)]
    created_after: Option<DateTime<Utc>>,
}

impl FilterArgs {
    pub(super) fn given(&self) -> bool {
        !self.status.is_empty()
            || !self.kind.is_empty()
            || self.group.is_some()
            || self.created_before.is_some()
            || self.created_after.is_some()
    }

    /// The API's `filter` object.
    async fn body(&self, api: &Api) -> anyhow::Result<Value> {
        let mut filter = serde_json::Map::new();
        if !self.status.is_empty() {
            filter.insert("status".into(), json!(self.status));
        }
        if !self.kind.is_empty() {
            filter.insert("kind".into(), json!(self.kind));
        }
        if let Some(group) = &self.group {
            filter.insert("group".into(), json!(group_id(api, group).await?));
        }
        if let Some(t) = self.created_before {
            filter.insert("created_before".into(), json!(t));
        }
        if let Some(t) = self.created_after {
            filter.insert("created_after".into(), json!(t));
        }
        Ok(Value::Object(filter))
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Bulk {
    Rerun,
    Cancel,
}

/// A bulk rerun or cancel by ids or filter: a line per refused job and one summary line in one
/// tense (`rerun 3 of 4 jobs; 1 refused`, `would rerun 0 of 1 jobs; 1 refused`), exit 1 if any
/// was (or would be) refused.
pub(super) async fn bulk(
    api: &Api,
    action: Bulk,
    ids: &[Uuid],
    filter: &FilterArgs,
    dry_run: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let (path, done, would) = match action {
        Bulk::Rerun => ("/v1/jobs/rerun", "rerun", "would rerun"),
        Bulk::Cancel => ("/v1/jobs/cancel", "cancelled", "would cancel"),
    };
    let mut body = if filter.given() {
        json!({ "filter": filter.body(api).await? })
    } else {
        json!({ "job_ids": ids })
    };
    if dry_run {
        body["dry_run"] = json!(true);
    }
    let outcome = api.send(Method::POST, path, Some(body)).await?;
    let acted = outcome["acted_on"].as_u64().unwrap_or_default();
    let matched = outcome["matched"].as_u64().unwrap_or_default();
    let rejected = outcome["rejected"].as_array().cloned().unwrap_or_default();
    let verb = if dry_run { would } else { done };
    let mut summary = format!("{verb} {acted} of {matched} jobs");
    if !rejected.is_empty() {
        summary.push_str(&format!("; {} refused", rejected.len()));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for r in &rejected {
            println!(
                "rejected  {} {}: {}",
                text(&r["job_id"]),
                text(&r["code"]),
                text(&r["detail"])
            );
        }
        println!("{summary}");
    }
    match (rejected.is_empty(), json_out) {
        (true, _) => Ok(()),
        // The summary said it; only the exit code is left to tell.
        (false, false) => Err(Exit {
            code: 1,
            message: String::new(),
        }
        .into()),
        (false, true) => Err(Exit {
            code: 1,
            message: summary,
        }
        .into()),
    }
}
