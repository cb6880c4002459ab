//! `jobs launch ID`: run a Previewed job with the members its preview found.

use super::post_job_action;
use crate::cli::client::Client;

pub(super) async fn run(client: &Client, id: &str) -> anyhow::Result<()> {
    post_job_action(client, id, "launch").await
}
