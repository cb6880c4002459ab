//! Uploads to a SharePoint document library or OneDrive through Microsoft Graph, as the tenant's
//! application: a file up to `drive_simple_upload_max_bytes` in one
//! `PUT /drives/{drive-id}/root:/{path}:/content`; a larger one through
//! `POST /drives/{drive-id}/root:/{path}:/createUploadSession` and `PUT`s of
//! `drive_upload_chunk_bytes` each to the session's `uploadUrl` with `Content-Range` (Graph:
//! "Upload large files with an upload session"; chunks are multiples of 320 KiB, and the
//! `uploadUrl` is pre-authorised, so no bearer token is sent to it). An existing file of the
//! same name is replaced.

use std::time::Duration;

use backon::Retryable;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::token::without_url;
use super::{DirectoryClient, DirectoryError};

/// The file a drive holds after an upload (Graph's `driveItem`, the fields licensor keeps).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveItem {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub web_url: Option<String>,
}

/// How a file reached the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveUpload {
    pub item: DriveItem,
    /// `PUT`s made to an upload session; 0 for a one-request upload.
    pub chunks: u32,
}

/// Why an upload did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The drive or folder does not exist, or the directory did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// The directory refused: no permission on the drive, a conflict, or credentials refused.
    #[error("{0}")]
    Denied(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadSession {
    upload_url: String,
}

/// A Graph error body's code and message, for the job's detail.
fn graph_message(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("");
    let message = v["error"]["message"].as_str().unwrap_or("");
    format!("HTTP {status} {code}: {message}")
}

/// One failed attempt: whether to try again, and the error otherwise.
enum Attempt {
    Transient(String),
    Final(UploadError),
}

impl Attempt {
    fn of_status(status: u16, body: &[u8], doing: &str) -> Attempt {
        let what = format!("{doing}: {}", graph_message(status, body));
        match status {
            429 | 500..=599 => Attempt::Transient(what),
            401 | 403 | 409 | 423 => Attempt::Final(UploadError::Denied(what)),
            _ => Attempt::Final(UploadError::Unreachable(what)),
        }
    }

    fn of_directory(e: DirectoryError) -> Attempt {
        match e {
            DirectoryError::CredentialsRejected { detail } => Attempt::Final(UploadError::Denied(
                format!("the directory refused licensor's credentials: {detail}"),
            )),
            other if other.is_transient() => Attempt::Transient(other.to_string()),
            other => Attempt::Final(UploadError::Unreachable(other.to_string())),
        }
    }

    fn into_error(self) -> UploadError {
        match self {
            Attempt::Transient(d) => UploadError::Unreachable(d),
            Attempt::Final(e) => e,
        }
    }
}

/// `s` with every byte outside RFC 3986's unreserved set percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `/drives/{drive-id}/root:/{folder}/{name}:` with each segment encoded.
fn item_path(drive_id: &str, folder: &str, name: &str) -> String {
    let mut path = format!("/drives/{}/root:", encode(drive_id));
    for segment in folder.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(&encode(segment));
    }
    path.push('/');
    path.push_str(&encode(name));
    path.push(':');
    path
}

impl DirectoryClient {
    /// Upload the `size` bytes of `file` (read from its start) as `name` in `folder` of drive
    /// `drive_id`, replacing a file of that name. Transient failures (429, 5xx, dropped
    /// connections) are retried with the client's backoff; 404 → [`UploadError::Unreachable`],
    /// 401/403/409 → [`UploadError::Denied`].
    pub async fn upload_to_drive(
        &self,
        drive_id: &str,
        folder: &str,
        name: &str,
        file: &mut tokio::fs::File,
        size: u64,
    ) -> Result<DriveUpload, UploadError> {
        let tuning = &self.inner.tuning;
        let target = self.url(&item_path(drive_id, folder, name));
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| UploadError::Unreachable(format!("reading the export: {e}")))?;
        if size <= tuning.drive_simple_upload_max_bytes {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(|e| UploadError::Unreachable(format!("reading the export: {e}")))?;
            let url = format!("{target}/content?@microsoft.graph.conflictBehavior=replace");
            let body = self
                .retrying(|| self.drive_request(Method::PUT, &url, bytes.clone(), "upload"))
                .await?;
            let item = serde_json::from_slice(&body).map_err(|e| {
                UploadError::Unreachable(format!("unreadable answer to an upload: {e}"))
            })?;
            return Ok(DriveUpload { item, chunks: 0 });
        }
        let url = format!("{target}/createUploadSession");
        let body = serde_json::to_vec(
            &json!({"item": {"@microsoft.graph.conflictBehavior": "replace", "name": name}}),
        )
        .unwrap_or_default();
        let answer = self
            .retrying(|| {
                self.drive_request(
                    Method::POST,
                    &url,
                    body.clone(),
                    "creating an upload session",
                )
            })
            .await?;
        let session: UploadSession = serde_json::from_slice(&answer)
            .map_err(|e| UploadError::Unreachable(format!("unreadable upload session: {e}")))?;
        let chunk = tuning.drive_upload_chunk_bytes.max(1);
        let mut offset = 0u64;
        let mut chunks = 0u32;
        loop {
            let len = chunk.min(size - offset);
            let mut bytes = vec![0u8; len as usize];
            file.read_exact(&mut bytes)
                .await
                .map_err(|e| UploadError::Unreachable(format!("reading the export: {e}")))?;
            let range = format!("bytes {}-{}/{size}", offset, offset + len - 1);
            let outcome = self
                .retrying(|| self.chunk_request(&session.upload_url, &range, bytes.clone()))
                .await;
            chunks += 1;
            let (status, body) = match outcome {
                Ok(answer) => answer,
                Err(e) => {
                    // Let the session go rather than leave a partial file behind.
                    let _ = self
                        .inner
                        .http
                        .delete(&session.upload_url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    return Err(e);
                }
            };
            offset += len;
            if offset >= size {
                if status == 202 {
                    return Err(UploadError::Unreachable(
                        "the drive did not finish the upload after its last chunk".into(),
                    ));
                }
                let item = serde_json::from_slice(&body).map_err(|e| {
                    UploadError::Unreachable(format!("unreadable answer to an upload: {e}"))
                })?;
                return Ok(DriveUpload { item, chunks });
            }
        }
    }

    async fn retrying<T, F, Fut>(&self, f: F) -> Result<T, UploadError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        f.retry(self.backoff())
            .when(|a| matches!(a, Attempt::Transient(_)))
            .await
            .map_err(Attempt::into_error)
    }

    /// One authenticated request to the drive; the answer's body on 2xx.
    async fn drive_request(
        &self,
        method: Method,
        url: &str,
        body: Vec<u8>,
        doing: &'static str,
    ) -> Result<Vec<u8>, Attempt> {
        let inner = &self.inner;
        let _permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| Attempt::Final(UploadError::Unreachable("client closed".into())))?;
        let token = inner
            .tokens
            .get(&inner.http)
            .await
            .map_err(Attempt::of_directory)?;
        let content_type = if method == Method::POST {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let response = inner
            .http
            .request(method, url)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| Attempt::Transient(format!("{doing}: {}", without_url(&e))))?;
        let status = response.status().as_u16();
        metrics::counter!("licensor_directory_requests_total", "route" => "drive", "status" => status.to_string(), "tenant" => inner.tenant.clone()).increment(1);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Attempt::Transient(format!("{doing}: {}", without_url(&e))))?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        if status == 401 {
            inner.tokens.invalidate(&token).await;
        }
        Err(Attempt::of_status(status, &bytes, doing))
    }

    /// One chunk to an upload session (no bearer token: the URL carries its own authorisation).
    async fn chunk_request(
        &self,
        upload_url: &str,
        range: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), Attempt> {
        let response = self
            .inner
            .http
            .put(upload_url)
            .header(reqwest::header::CONTENT_RANGE, range)
            .body(body)
            .send()
            .await
            .map_err(|e| Attempt::Transient(format!("uploading a chunk: {}", without_url(&e))))?;
        let status = response.status().as_u16();
        metrics::counter!("licensor_directory_requests_total", "route" => "drive.chunk", "status" => status.to_string(), "tenant" => self.inner.tenant.clone()).increment(1);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Attempt::Transient(format!("uploading a chunk: {}", without_url(&e))))?;
        if (200..300).contains(&status) {
            return Ok((status, bytes.to_vec()));
        }
        Err(Attempt::of_status(status, &bytes, "uploading a chunk"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_are_encoded_per_segment() {
        assert_eq!(
            item_path("b!x-1", "/Reports/Q1 2026/", "job-1.csv"),
            "/drives/b%21x-1/root:/Reports/Q1%202026/job-1.csv:"
        );
        assert_eq!(item_path("d", "/", "a.csv"), "/drives/d/root:/a.csv:");
    }
}
