//! `jobs undo ID`: a new job that gives the members back their licenses from before the job.

use super::post_job_action;
use crate::cli::client::Client;

pub(super) async fn run(client: &Client, id: &str) -> anyhow::Result<()> {
    post_job_action(client, id, "undo").await
}
