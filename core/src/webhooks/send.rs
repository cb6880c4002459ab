//! One delivery attempt: a signed `POST` of the message to the endpoint.
//!
//! Headers (Standard Webhooks): `webhook-id` (the delivery's id, the same on every attempt),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`). Any 2xx answer delivers; redirects
//! are not followed (a 3xx is a failed attempt); the attempt times out after
//! `webhooks.timeout_secs`. Only the first 256 characters of the answer are kept.

use std::time::Instant;

use chrono::Utc;
use uuid::Uuid;

use super::Webhooks;
use super::deliveries::Attempt;
use super::signing::sign;

/// Characters of an answer kept in the delivery log.
pub const RESPONSE_SNIPPET: usize = 256;

/// Send `body` (JSON) to `url`, signed with `secret`, as message `id`. Returns the attempt and
/// whether it delivered. The URL is not in any error text (it may carry a token in its query).
pub async fn attempt(
    hooks: &Webhooks,
    url: &str,
    secret: &str,
    id: Uuid,
    body: &[u8],
) -> (Attempt, bool) {
    let at = Utc::now();
    let started = Instant::now();
    let timestamp = at.timestamp();
    let id_text = id.to_string();
    let Some(signature) = sign(secret, &id_text, timestamp, body) else {
        return (
            Attempt {
                at,
                status_code: None,
                error: Some("the endpoint's signing secret is unusable; rotate it".into()),
                duration_ms: 0,
                response: None,
            },
            false,
        );
    };
    let sent = hooks
        .http()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id_text)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let (status_code, error, response) = match sent {
        Ok(mut resp) => {
            let status = resp.status();
            let snippet = snippet(&mut resp).await;
            let error = if status.is_success() {
                None
            } else if status.is_redirection() {
                Some(format!(
                    "answered {}; redirects are not followed",
                    status.as_u16()
                ))
            } else {
                Some(format!("answered {}", status.as_u16()))
            };
            (Some(status.as_u16()), error, snippet)
        }
        Err(e) => (None, Some(describe(e)), None),
    };
    let delivered = error.is_none();
    (
        Attempt {
            at,
            status_code,
            error,
            duration_ms: started.elapsed().as_millis() as u64,
            response,
        },
        delivered,
    )
}

/// The start of the answer's body, at most [`RESPONSE_SNIPPET`] characters; the rest is not
/// read (at most a few KiB are).
async fn snippet(resp: &mut reqwest::Response) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_SNIPPET * 4 {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .take(RESPONSE_SNIPPET)
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A transport failure in a few words, without the URL (at most 300 characters).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return "could not connect".into();
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text.chars().take(300).collect()
}
