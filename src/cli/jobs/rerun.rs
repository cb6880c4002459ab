//! `jobs rerun`: one job or several by their ids, together as the Job Monitor's Start button
//! does; or, with a filter or `--dry-run`, as a bulk rerun.

use licensor_core::jobs::JobView;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::bulk::{Bulk, Targets, bulk};
use super::{job_ids, job_view, label};
use crate::cli::Exit;
use crate::cli::client::{Api, Client, text};

pub(super) async fn run(client: &Client, targets: &Targets) -> anyhow::Result<()> {
    let (filter, dry_run) = (&targets.filter, targets.dry_run);
    let api = Api::new(client)?;
    let ids = job_ids(&targets.ids)?;
    if filter.given() || dry_run {
        bulk(&api, Bulk::Rerun, &ids, filter, dry_run, client.json).await
    } else {
        rerun(&api, &ids, client.json).await
    }
}

fn print_rerun(job: &JobView) {
    println!(
        "rerun     {} run {}: {}",
        job.id,
        job.runs,
        label(job.status)
    );
}

async fn rerun(api: &Api, ids: &[Uuid], json: bool) -> anyhow::Result<()> {
    if let [id] = ids {
        let answer = api
            .send(Method::POST, &format!("/v1/jobs/{id}/rerun"), None)
            .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print_rerun(&job_view(&answer)?);
        }
        return Ok(());
    }
    let outcome = api
        .send(
            Method::POST,
            "/v1/jobs/rerun",
            Some(json!({ "job_ids": ids })),
        )
        .await?;
    let rerun = outcome["rerun"].as_array().cloned().unwrap_or_default();
    let rejected = outcome["rejected"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for answer in &rerun {
            print_rerun(&job_view(answer)?);
        }
        for r in &rejected {
            println!(
                "rejected  {} {}: {}",
                text(&r["job_id"]),
                text(&r["code"]),
                text(&r["detail"])
            );
        }
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: 1,
            message: format!(
                "{} of {} jobs were not rerun",
                rejected.len(),
                rerun.len() + rejected.len()
            ),
        }
        .into())
    }
}
