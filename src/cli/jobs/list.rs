//! `jobs list`: jobs newest first, as a table.

use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::JobView;

use super::{group_names, job_view, kind_label, label};
use crate::cli::client::{Api, Client, print_table};

pub(super) async fn run(
    client: &Client,
    status: &[JobStatus],
    kind: &[JobKind],
    limit: u64,
) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let mut query = Vec::new();
    if !status.is_empty() {
        let status: Vec<&str> = status.iter().map(|s| s.as_str()).collect();
        query.push(("status", status.join(",")));
    }
    if !kind.is_empty() {
        let kind: Vec<&str> = kind.iter().map(|k| k.as_str()).collect();
        query.push(("kind", kind.join(",")));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let jobs = api.list("/v1/jobs", &query, Some(limit)).await?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else {
        let jobs = jobs
            .iter()
            .map(job_view)
            .collect::<anyhow::Result<Vec<_>>>()?;
        print_jobs(&jobs);
    }
    Ok(())
}

fn print_jobs(jobs: &[JobView]) {
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|j| {
            [
                j.id.to_string(),
                kind_label(j),
                group_names(j),
                label(j.status).to_owned(),
                j.progress.succeeded.to_string(),
                j.progress.failed.to_string(),
                j.progress.skipped.to_string(),
                j.progress.total.to_string(),
                j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        [
            "ID",
            "KIND",
            "GROUPS",
            "STATUS",
            "SUCCEEDED",
            "FAILED",
            "SKIPPED",
            "TOTAL",
            "CREATED (UTC)",
        ],
        &rows,
    );
}
