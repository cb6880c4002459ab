//! `jobs resume ID`: go on with a job its canary paused.

use super::post_job_action;
use crate::cli::client::Client;

pub(super) async fn run(client: &Client, id: &str) -> anyhow::Result<()> {
    post_job_action(client, id, "resume").await
}
