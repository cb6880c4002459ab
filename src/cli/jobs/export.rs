//! `jobs export ID -o FILE`: download the file an export job produced.

use std::path::Path;

use reqwest::Method;

use super::{check_output, job_id, write_file};
use crate::cli::client::{Api, Client};

pub(super) async fn run(client: &Client, id: &str, output: &Path) -> anyhow::Result<()> {
    check_output(output, client.json)?;
    let api = Api::new(client)?;
    let id = job_id(id)?;
    let req = api.request(Method::GET, &format!("/v1/jobs/{id}/export"));
    let bytes = api.bytes(req).await?;
    write_file(output, &bytes, client.json)
}
