//! `jobs cancel`: one job by its id, or many by ids or a filter.

use reqwest::Method;

use super::bulk::{Bulk, Targets, bulk};
use super::{job_ids, job_view, progress_line};
use crate::cli::client::{Api, Client};

pub(super) async fn run(client: &Client, targets: &Targets) -> anyhow::Result<()> {
    let (filter, dry_run) = (&targets.filter, targets.dry_run);
    let api = Api::new(client)?;
    let ids = job_ids(&targets.ids)?;
    if let ([id], false, false) = (ids.as_slice(), filter.given(), dry_run) {
        let answer = api
            .send(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
            .await?;
        if client.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            let job = job_view(&answer)?;
            println!("job {}: {}", job.id, progress_line(&job));
        }
        return Ok(());
    }
    bulk(&api, Bulk::Cancel, &ids, filter, dry_run, client.json).await
}
