//! Delivering an export's file where the request asked: kept for download, uploaded to a
//! SharePoint/OneDrive folder through the directory client (see
//! [`DirectoryClient::upload_to_drive`]), or put in an S3-compatible bucket with `object_store`
//! (credentials read from the environment variables the request names, at delivery time only).
//!
//! A delivery that cannot happen fails the job with `export_location_unreachable` (no such
//! drive, folder or bucket; the service did not answer) or `export_location_denied` (no
//! permission, credentials refused or missing); a rerun delivers again.

use std::time::Duration;

use chrono::Utc;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::JobFacts;
use super::expand::set_facts;
use super::export::{self, Delivery, Rendered};
use super::request::{ExportLocation, ExportOptions};
use crate::db::Db;
use crate::directory::{DirectoryClient, UploadError};
use crate::entities::job;
use crate::error::StoreResult;

/// Why an export's file did not reach its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Denied(String),
}

impl DeliveryError {
    /// The job's error code.
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::Unreachable(_) => "export_location_unreachable",
            DeliveryError::Denied(_) => "export_location_denied",
        }
    }

    /// The same error, its detail led by the location it is about (`place`), so the job's
    /// error names the drive or bucket to fix.
    fn at(self, place: &str) -> DeliveryError {
        match self {
            DeliveryError::Unreachable(d) => DeliveryError::Unreachable(format!("{place}: {d}")),
            DeliveryError::Denied(d) => DeliveryError::Denied(format!("{place}: {d}")),
        }
    }
}

/// A location in the words of a job's error: "SharePoint drive b!abc, folder /Reports/",
/// "S3 bucket licensor-exports (prefix monthly/)".
fn place(location: &ExportLocation) -> String {
    match location {
        ExportLocation::Download => "download".into(),
        ExportLocation::Sharepoint {
            drive_id,
            folder_path,
        } => format!("SharePoint drive {drive_id}, folder {folder_path}"),
        ExportLocation::S3 { bucket, prefix, .. } if prefix.is_empty() => {
            format!("S3 bucket {bucket}")
        }
        ExportLocation::S3 { bucket, prefix, .. } => {
            format!("S3 bucket {bucket} (prefix {prefix})")
        }
    }
}

impl From<UploadError> for DeliveryError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Unreachable(d) => DeliveryError::Unreachable(d),
            UploadError::Denied(d) => DeliveryError::Denied(d),
        }
    }
}

/// Whether an export goes to the tenant's drive (and so needs a directory client).
pub fn needs_directory(export: &ExportOptions) -> bool {
    matches!(export.location, ExportLocation::Sharepoint { .. })
}

/// Produce the export file of the tenant's job `job_id` (all its members read) as its request's
/// `export` says and deliver it; record where it went, its size and row count in the job's
/// facts. `client` is needed for SharePoint only.
pub async fn deliver(
    db: &Db,
    client: Option<&DirectoryClient>,
    tenant_id: Uuid,
    job_id: Uuid,
    export: &ExportOptions,
) -> StoreResult<Result<Delivery, DeliveryError>> {
    let job = &super::model(db, tenant_id, job_id).await?;
    let location = &export.location;
    let exported_at = Utc::now();
    // The time every row carries; the download renders with it too, so both are the same file.
    let mut facts = JobFacts::of(job);
    let mut export_facts = facts.export.take().unwrap_or_default();
    export_facts.exported_at = Some(exported_at);
    export_facts.delivery = None;
    facts.export = Some(export_facts.clone());
    set_facts(db, job.id, &facts).await?;
    let job = job::Model {
        result: serde_json::to_value(&facts).ok(),
        ..job.clone()
    };
    let rendered = export::render(db, &job, export.format, exported_at).await?;
    let outcome = match location {
        ExportLocation::Download => Ok(Delivery {
            location: "download".into(),
            url: format!("/v1/jobs/{}/export", job.id),
            key: None,
            bucket: None,
            drive_id: None,
            chunks: None,
            file_name: rendered.name.clone(),
            size: rendered.size,
            rows: rendered.rows,
            delivered_at: Utc::now(),
        }),
        ExportLocation::Sharepoint {
            drive_id,
            folder_path,
        } => match client {
            None => Err(DeliveryError::Unreachable(
                "the tenant's directory is not connected".into(),
            )),
            Some(client) => to_drive(client, drive_id, folder_path, rendered).await,
        },
        ExportLocation::S3 { .. } => to_s3(location, job.id, rendered).await,
    }
    .map_err(|e| e.at(&place(location)));
    if let Ok(delivery) = &outcome {
        export_facts.delivery = Some(delivery.clone());
        facts.export = Some(export_facts);
        set_facts(db, job.id, &facts).await?;
        tracing::info!(job = %job.id, location = %delivery.location, rows = delivery.rows, bytes = delivery.size, "export delivered");
    }
    Ok(outcome)
}

async fn to_drive(
    client: &DirectoryClient,
    drive_id: &str,
    folder: &str,
    rendered: Rendered,
) -> Result<Delivery, DeliveryError> {
    let mut file = tokio::fs::File::from_std(rendered.file);
    let upload = client
        .upload_to_drive(drive_id, folder, &rendered.name, &mut file, rendered.size)
        .await?;
    let path = format!("{folder}{}", rendered.name);
    Ok(Delivery {
        location: "sharepoint".into(),
        url: upload
            .item
            .web_url
            .clone()
            .unwrap_or_else(|| format!("sharepoint:{drive_id}:{path}")),
        key: Some(path),
        bucket: None,
        drive_id: Some(drive_id.to_owned()),
        chunks: Some(upload.chunks),
        file_name: rendered.name,
        size: rendered.size,
        rows: rendered.rows,
        delivered_at: Utc::now(),
    })
}

/// Files up to this size go in one `PUT`; larger ones in a multipart upload of parts this size.
const S3_PART: usize = 8 * 1024 * 1024;

fn s3_error(e: object_store::Error, doing: &str) -> DeliveryError {
    use object_store::Error as E;
    let detail = format!("{doing}: {e}");
    match e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::AlreadyExists { .. } => {
            DeliveryError::Denied(detail)
        }
        _ => DeliveryError::Unreachable(detail),
    }
}

async fn to_s3(
    location: &ExportLocation,
    job_id: Uuid,
    rendered: Rendered,
) -> Result<Delivery, DeliveryError> {
    let ExportLocation::S3 {
        bucket,
        prefix,
        region,
        endpoint,
        access_key_id_env,
        secret_access_key_env,
    } = location
    else {
        return Err(DeliveryError::Unreachable("not an S3 location".into()));
    };
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            DeliveryError::Denied(format!(
                "the environment variable {name} (named by the export's location) is not set in licensor's worker"
            ))
        })
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region.as_deref().unwrap_or("us-east-1"))
        .with_access_key_id(var(access_key_id_env)?)
        .with_secret_access_key(var(secret_access_key_env)?)
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    let store = builder
        .build()
        .map_err(|e| DeliveryError::Unreachable(format!("S3 location: {e}")))?;
    let key = format!("{prefix}{}", rendered.name);
    let path = object_store::path::Path::from(key.as_str());
    let mut file = tokio::fs::File::from_std(rendered.file);
    let read_error =
        |e: std::io::Error| DeliveryError::Unreachable(format!("reading the export: {e}"));
    if rendered.size as usize <= S3_PART {
        let mut bytes = Vec::with_capacity(rendered.size as usize);
        file.read_to_end(&mut bytes).await.map_err(read_error)?;
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| s3_error(e, "uploading the export"))?;
    } else {
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|e| s3_error(e, "starting a multipart upload"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, S3_PART);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(2)
                .await
                .map_err(|e| s3_error(e, "uploading a part"))?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| s3_error(e, "finishing the upload"))?;
    }
    tracing::debug!(job = %job_id, bucket = %bucket, key = %key, "export put in the bucket");
    Ok(Delivery {
        location: "s3".into(),
        url: format!("s3://{bucket}/{key}"),
        key: Some(key),
        bucket: Some(bucket.clone()),
        drive_id: None,
        chunks: None,
        file_name: rendered.name,
        size: rendered.size,
        rows: rendered.rows,
        delivered_at: Utc::now(),
    })
}
