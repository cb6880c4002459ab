//! `jobs report ID -o FILE`: download a job's report, every member with its outcome.

use std::path::Path;

use licensor_core::jobs::FileFormat;
use reqwest::Method;

use super::{check_output, job_id, write_file};
use crate::cli::client::{Api, Client};

pub(super) async fn run(
    client: &Client,
    id: &str,
    format: FileFormat,
    output: &Path,
) -> anyhow::Result<()> {
    check_output(output, client.json)?;
    let api = Api::new(client)?;
    let id = job_id(id)?;
    let req = api
        .request(Method::GET, &format!("/v1/jobs/{id}/report"))
        .query(&[("format", format.extension())]);
    let bytes = api.bytes(req).await?;
    write_file(output, &bytes, client.json)
}
