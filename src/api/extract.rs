//! Extractors whose rejections are problem+json with a stable code, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use licensor_core::domain::{QUOTED_AT_MOST, clip};
use sha2::{Digest, Sha256};

use super::problem::ApiError;

/// JSON body; malformed JSON (or a body that is not UTF-8) → 400 `malformed_json`, wrong shape
/// → 422 `invalid_body`, a NUL character in any string → 422 `invalid_body` (no store keeps
/// one), wrong content type → 415 `unsupported_media_type`, too large → 413 `body_too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from(JsonRejection::from(r)))?;
        // JSON is UTF-8 (RFC 8259 §8.1). serde_json checks only the strings it keeps, so other
        // bytes in a string it skips would pass for a shape error, or for nothing at all.
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(ApiError::bad_request(
                "malformed_json",
                format!(
                    "the body is not JSON: it is not UTF-8 (byte {} is not)",
                    e.valid_up_to()
                ),
            ));
        }
        // Every body the API takes is a JSON object; serde would read an array into a struct's
        // fields by position (`["Visio", 3]` as a license), so one is refused here.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "the request body is JSON but not of the expected shape: an array where an object is expected",
            ));
        }
        // serde_json reads a body into `T` as it parses it, so which error comes first depends on
        // the body: it calls some shape errors syntax errors (a number where an enum's string
        // should be: "expected value"), and a body cut short after an unknown field
        // (`{"bogus":`) a shape error. Whichever it says, a body that is not JSON at all is
        // malformed, and one that is JSON is of the wrong shape.
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes).map_err(|r| match r {
            JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
                let json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes);
                match (json, r) {
                    (Ok(_), JsonRejection::JsonSyntaxError(e)) => wrong_shape(&e),
                    // JSON nested deeper than serde_json reads (128 levels) is JSON all the
                    // same: whatever the request was read as says why it is refused.
                    (Err(e), r) if e.to_string().starts_with("recursion limit exceeded") => {
                        ApiError::from(r)
                    }
                    (Err(e), _) => malformed(&e),
                    (Ok(_), r) => ApiError::from(r),
                }
            }
            r => ApiError::from(r),
        })?;
        if has_nul(&bytes) {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "text in the body may not contain NUL (U+0000) characters",
            ));
        }
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with `Content-Type: application/json`",
    )
}

/// `application/json` or `application/<something>+json`, parameters aside.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
    else {
        return false;
    };
    let value = value.trim().to_ascii_lowercase();
    match value.split_once('/') {
        Some((kind, subtype)) => {
            kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
        }
        None => false,
    }
}

/// Whether a string (or key) of this valid JSON holds U+0000: only the `\u0000` escape can
/// write one, so the document is walked only when that text appears.
fn has_nul(bytes: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    bytes.windows(6).any(|w| w == b"\\u0000")
        && serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| walk(&v))
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        use axum::http::StatusCode;
        match r {
            JsonRejection::JsonDataError(e) => wrong_shape(&e),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request("malformed_json", body_text(&e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(),
            other => ApiError::bad_request("malformed_body", body_text(&other.body_text())),
        }
    }
}

/// The body of an action that takes none (`POST /v1/jobs/{id}/launch`, `rerun`, `cancel`,
/// `undo`, `resume`; `POST /v1/tokens/{id}/revoke`; `DELETE /v1/webhooks/{id}`, its
/// `rotate-secret` and a delivery's `redeliver`): nothing (whatever its content type says), or `{}` sent as JSON. A body sent
/// as anything but JSON → 415 `unsupported_media_type`, as every route that takes JSON answers;
/// malformed JSON → 400 `malformed_json`; any other JSON → 422 `invalid_body` (a body that says
/// something the action would ignore is refused rather than silently dropped); too large → 413
/// `body_too_large`. Refused before anything changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBody;

impl<S> FromRequest<S> for NoBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = json_content_type(req.headers());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from(JsonRejection::from(r)))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        if !json {
            return Err(unsupported_media_type());
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => Err(malformed(&e)),
            Ok(serde_json::Value::Object(map)) if map.is_empty() => Ok(NoBody),
            Ok(_) => Err(ApiError::unprocessable(
                "invalid_body",
                "this action takes no body: send none, or `{}`",
            )),
        }
    }
}

/// Query string; anything unparsable → 400 `invalid_query` (as is a control character, `%00`
/// included, refused for every route before any extractor runs: see [`super::printable`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Escapes that are not UTF-8 were refused for every route before any extractor
        // (`printable`).
        given_twice(parts.uri.query())?;
        let axum::extract::Query(value) = axum::extract::Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Query(value))
    }
}

/// 400 `invalid_query` for a query string with a parameter whose `%XX` escapes are not UTF-8,
/// refused for every route by [`super::printable`] before any extractor runs:
/// decoded as a form is, such a value became U+FFFD (`?search=%FF` searched for the
/// replacement character and answered an empty list, where `?kind=%FF` was refused naming it).
pub(super) fn not_utf8(query: Option<&str>) -> Result<(), ApiError> {
    for part in query.unwrap_or_default().split('&') {
        // `+` is a space in a form: it is UTF-8 either way.
        if percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .is_err()
        {
            let name = part.split('=').next().unwrap_or_default();
            let detail = match percent_encoding::percent_decode_str(name).decode_utf8() {
                Ok(name) => format!("{}: its %XX escapes are not UTF-8 text", clip(&name)),
                // Shown decoded, such a name would read as U+FFFD.
                Err(_) => format!(
                    "a parameter's name ({}) has %XX escapes that are not UTF-8 text",
                    clip(name)
                ),
            };
            return Err(ApiError::bad_request("invalid_query", detail));
        }
    }
    Ok(())
}

/// 400 `invalid_query` for a parameter given more than once (`?status=failed&status=finished`):
/// no route takes one twice — a list of values is one parameter, comma-separated — and the
/// query's decoder answered only "duplicate field" for it.
fn given_twice(query: Option<&str>) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !seen.insert(name.clone()) {
            let name = if name.is_empty() {
                "a parameter with no name".to_owned()
            } else {
                clip(&name)
            };
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "{name} is given more than once: give it once (a list of values is one \
                     parameter, comma-separated, e.g. status=failed,finished)"
                ),
            ));
        }
    }
    Ok(())
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", body_text(&r.body_text()))
    }
}

/// A list's filters as the request gives them, to bind its cursors to ([`Filters::scope`]):
/// every query parameter except `limit`, `cursor` and `count` (which do not change what the
/// list holds), decoded as the query is, blank ones left out (a blank filter filters nothing),
/// in name order. A cursor issued for `?status=failed` and sent back with `?status=succeeded`
/// (or none) would otherwise be read as a position in that other list, and skip its entries
/// before the position; it is refused instead (400 `invalid_query`, as a cursor of another
/// list is), naming the filters that differ (see [`licensor_core::page::PageError::Filters`]).
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    /// The filters of `query` (the request's query string, without the `?`), each named and its
    /// value digested. A filter written another way that means the same keeps its cursors: a
    /// list of values in any order (`status`, `kind`, `code`), a time in any offset or precision
    /// (`created_before`, `created_after`), a search in any case or Unicode form (`search`).
    pub fn of(query: Option<&str>) -> Filters {
        let mut given: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .filter(|(name, value)| {
                    !matches!(name.as_ref(), "limit" | "cursor" | "count")
                        && !value.trim().is_empty()
                })
                .filter_map(|(name, value)| {
                    let value = canonical(&name, value.trim());
                    // A list of no values (`status=,`) filters nothing, as a blank one.
                    if value.is_empty() {
                        return None;
                    }
                    // 64 bits tell a filter's values apart; the cursor stays short.
                    let digest = Sha256::digest(value.as_bytes());
                    let digest = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                    // The name as a cursor's scope can hold it: its `%XX` form (a name is
                    // almost always plain letters and `_`).
                    let name = form_urlencoded::byte_serialize(name.as_bytes()).collect();
                    Some((name, digest))
                })
                .collect();
        given.sort();
        Filters(given)
    }

    /// The scope of `list` ([`licensor_core::page::PageRequest::parse_in`]) with these filters:
    /// `{list}~{name}:{digest},…` ([`licensor_core::page::FILTERS`]), or `list` itself when
    /// there are none, so cursors of an unfiltered list read as before.
    pub fn scope(&self, list: impl std::fmt::Display) -> String {
        if self.0.is_empty() {
            return list.to_string();
        }
        let filters: Vec<String> = self
            .0
            .iter()
            .map(|(name, digest)| format!("{name}:{digest}"))
            .collect();
        format!(
            "{list}{}{}",
            licensor_core::page::FILTERS,
            filters.join(",")
        )
    }
}

/// A filter's value in one spelling ([`Filters::of`]).
fn canonical(name: &str, value: &str) -> String {
    match name {
        "status" | "kind" | "code" => {
            let mut values: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            values.sort_unstable();
            values.dedup();
            values.join(",")
        }
        // A license search matches in any case and Unicode form
        // (`licensor_core::licenses::search_key`): typed another way it is the same filter. (The
        // directory pickers' cursors are the directory's own, tied to the search as sent.)
        "search" => licensor_core::licenses::search_key(value),
        // An id in any of the forms the list reads it in: upper case, without hyphens, braced,
        // as a URN.
        "group" | "actor_token_id" => uuid::Uuid::try_parse(value)
            .map(|id| id.to_string())
            .unwrap_or_else(|_| value.to_owned()),
        // A job id prefix: its hexadecimal digits, hyphens ignored, in any case
        // (`licensor_core::jobs::id_prefix_range`).
        "id_prefix" => value
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        "created_before" | "created_after" => chrono::DateTime::parse_from_rfc3339(value)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            })
            .unwrap_or_else(|_| value.to_owned()),
        _ => value.to_owned(),
    }
}

impl<S> FromRequestParts<S> for Filters
where
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Filters::of(parts.uri.query()))
    }
}

/// The query string of a route that takes no parameters: any parameter → 400 `invalid_query`,
/// so a misspelt or misplaced one (`GET /v1/jobs/{id}/export?format=json`, where the export's
/// format is the job's) is refused rather than silently ignored, as every route with parameters
/// refuses one it does not take. The health, readiness, metrics and OpenAPI routes take none
/// and do not look: monitoring probes may add their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuery;

/// No fields, none accepted ([`NoQuery`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParameters {}

impl<S> FromRequestParts<S> for NoQuery
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(NoParameters {}) = Query::from_request_parts(parts, state).await?;
        Ok(NoQuery)
    }
}

/// Path parameters; a malformed id is "not found" (404), as no such object can exist.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        // The value and what it should have been, never the framework's own wording.
        let detail = match &r {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::ParseErrorAtKey { key, value, .. }
                | ErrorKind::DeserializeError { key, value, .. } => {
                    format!("no such resource: `{}` is not a valid {key}", clip(value))
                }
                ErrorKind::ParseError { value, .. }
                | ErrorKind::ParseErrorAtIndex { value, .. } => {
                    format!("no such resource: `{}` is not a valid id", clip(value))
                }
                _ => "no such resource".to_owned(),
            },
            _ => "no such resource".to_owned(),
        };
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", detail)
    }
}

/// A path parameter that is free text (a member's user principal name, an assignee's id), not
/// an id licensor issued: a segment whose `%XX` escapes are not UTF-8 is refused by `refuse`,
/// given why (the route's own code for a malformed value: no text can be such a segment), where
/// [`Path`] would answer 404 as for a malformed id. Any other rejection is [`Path`]'s.
pub fn text_path<T>(
    given: Result<axum::extract::Path<T>, PathRejection>,
    refuse: impl FnOnce(String) -> ApiError,
) -> Result<T, ApiError> {
    use axum::extract::path::ErrorKind;
    match given {
        Ok(axum::extract::Path(value)) => Ok(value),
        Err(PathRejection::FailedToDeserializePathParams(e))
            if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
        {
            Err(refuse(
                "the path segment's %XX escapes are not UTF-8 text".to_owned(),
            ))
        }
        Err(other) => Err(other.into()),
    }
}

/// A body that is not JSON: 400 `malformed_json`, saying where serde_json stopped.
fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        body_text(&format!("the body is not JSON: {e}")),
    )
}

/// 422 `invalid_body` for a body that is JSON but not what the endpoint takes, saying so and
/// where (`kind: …`) — not the parser's "Failed to parse … as JSON", which would call valid JSON
/// malformed.
fn wrong_shape(e: &dyn std::error::Error) -> ApiError {
    let cause = e
        .source()
        .map_or_else(|| e.to_string(), ToString::to_string);
    ApiError::unprocessable(
        "invalid_body",
        body_text(&format!(
            "the request body is JSON but not of the expected shape: {cause}"
        )),
    )
}

/// axum's and serde's rejection texts, on one line, with what they quote of the request (a
/// field's or parameter's name, a value: a part between backticks or double quotes, or a word)
/// clipped to [`QUOTED_AT_MOST`] characters. A query with a 50,000-character unknown
/// parameter, or a body whose number field held a 1 MB string, was echoed whole in its 400.
fn body_text(s: &str) -> String {
    let mut out = String::new();
    for (i, word) in s.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // A word's closing punctuation (`name:` before a message) is kept when it is clipped.
        let core = word.trim_end_matches([':', ',', ';', '.']);
        // Characters since the quote opened (or the word began), and the quote mark.
        let (mut shown, mut quote) = (0usize, None::<char>);
        for c in core.chars() {
            if quote == Some(c) {
                quote = None;
                shown = 0;
                out.push(c);
                continue;
            }
            if quote.is_none() && (c == '`' || c == '"') {
                quote = Some(c);
                shown = 0;
                out.push(c);
                continue;
            }
            shown += 1;
            if shown <= QUOTED_AT_MOST {
                licensor_core::domain::push_shown(&mut out, c);
            } else if shown == QUOTED_AT_MOST + 1 {
                out.push('…');
            }
        }
        out.push_str(&word[core.len()..]);
    }
    out
}

/// A `201 Created` answer: `Location` names the new resource's URL (RFC 9110 §15.3.2), the
/// body is the resource.
pub type Created<T> = (
    axum::http::StatusCode,
    [(axum::http::HeaderName, String); 1],
    Json<T>,
);

/// [`Created`] for the resource at `location` (a path such as `/v1/licenses/{id}`).
pub fn created<T>(location: String, body: T) -> Created<T> {
    (
        axum::http::StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request sent is quoted clipped: a 50,000-character name once was echoed whole.
    #[test]
    fn rejection_texts_quote_what_was_sent_clipped() {
        let long = "x".repeat(50_000);
        let text = body_text(&format!(
            "Failed to deserialize query string: unknown field `{long}`, expected `limit` or\n  `cursor`"
        ));
        assert_eq!(
            text,
            format!(
                "Failed to deserialize query string: unknown field `{}…`, expected `limit` or `cursor`",
                "x".repeat(QUOTED_AT_MOST)
            )
        );
        let text = body_text(&format!(r#"invalid type: string "{long}", expected i64"#));
        assert!(text.ends_with(r#"…", expected i64"#), "{text}");
        assert!(text.chars().count() < 200, "{text}");
        // Short quotes, and an unclosed one, stay as they are (clipped).
        assert_eq!(body_text("unknown field `kind`"), "unknown field `kind`");
        assert_eq!(body_text("trailing `quote"), "trailing `quote");
        // A clipped field's name keeps the `: ` that ends it; one of exactly 80 is not clipped.
        let text = body_text(&format!("shape: {long}: unknown field"));
        assert_eq!(
            text,
            format!("shape: {}…: unknown field", "x".repeat(QUOTED_AT_MOST))
        );
        let eighty = "y".repeat(QUOTED_AT_MOST);
        assert_eq!(
            body_text(&format!("{eighty}: bad")),
            format!("{eighty}: bad")
        );
    }

    /// The same filters written another way scope a list alike (its cursors read on); other
    /// values do not.
    #[test]
    fn filters_written_another_way_are_the_same() {
        let scope = |query: &str| Filters::of(Some(query)).scope("jobs");
        let id = "8d0c7a9a-7c5e-4b7e-9a47-000000000001";
        for (a, b) in [
            (
                format!("group={id}"),
                format!("group={}", id.to_ascii_uppercase()),
            ),
            (
                format!("group={id}"),
                format!("group={}", id.replace('-', "")),
            ),
            (
                format!("actor_token_id={id}"),
                format!("actor_token_id=urn:uuid:{id}"),
            ),
            (
                format!("actor_token_id={id}"),
                format!("actor_token_id=%7B{id}%7D"),
            ),
            ("id_prefix=01a2".to_owned(), "id_prefix=01-A2".to_owned()),
            (
                "status=failed,finished".to_owned(),
                "status=finished,,failed".to_owned(),
            ),
            ("".to_owned(), "status=,&kind=".to_owned()),
            ("search=Åre".to_owned(), "search=a%CC%8ARE".to_owned()),
        ] {
            assert_eq!(scope(&a), scope(&b), "{a} / {b}");
        }
        assert_eq!(scope(""), "jobs");
        for (a, b) in [
            (format!("group={id}"), "group=8d0c7a9a".to_owned()),
            ("id_prefix=01a2".to_owned(), "id_prefix=01a3".to_owned()),
            (
                "status=failed".to_owned(),
                "status=failed,finished".to_owned(),
            ),
        ] {
            assert_ne!(scope(&a), scope(&b), "{a} / {b}");
        }
    }
}
