//! The web app (Job Monitor and Licenses): a single-page app served at `/`, its files compiled into the binary.
//!
//! Plain JavaScript modules and CSS, no build step and nothing loaded from elsewhere: every
//! answer carries `Content-Security-Policy: default-src 'self'`. The page talks to `/v1` with the
//! bearer token its user signs in with.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::problem::ApiError;

/// One file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($path:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("assets/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything under `/assets/`.
static ASSETS: &[Asset] = assets![
    "app.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/main.js" => JS,
    "js/i18n.js" => JS,
    "js/api.js" => JS,
    "js/dom.js" => JS,
    "js/format.js" => JS,
    "js/jobs.js" => JS,
    "js/job.js" => JS,
    "js/activity.js" => JS,
    "js/launch.js" => JS,
    "js/seats.js" => JS,
    "js/licenses.js" => JS,
    "js/license.js" => JS,
    "js/checkout.js" => JS,
    "js/checkin.js" => JS,
    "js/holder.js" => JS,
    "js/search.js" => JS,
    "js/history.js" => JS,
];

static INDEX_HTML: &str = include_str!("assets/index.html");

/// `/` and `/assets/...`, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => serve(a.content_type, a.body),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // The files change with the binary; have browsers check each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        // Each `from './x.js'` in a module and each asset the HTML names must be in ASSETS.
        let mut wanted: Vec<String> = Vec::new();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for part in a.body.split("from './").skip(1) {
                let name = part.split('\'').next().unwrap_or_default();
                wanted.push(format!("js/{name}"));
            }
        }
        for part in INDEX_HTML.split("/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            wanted.push(name.to_owned());
        }
        assert!(!wanted.is_empty());
        for name in wanted {
            assert!(
                ASSETS.iter().any(|a| a.path == name),
                "{name} is referenced but not served"
            );
        }
    }
}
