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
    "js/preview.js" => JS,
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

    /// The keys of one catalogue (`const <name> = { ... };`) of i18n.js.
    fn catalogue_keys(name: &str) -> std::collections::BTreeSet<String> {
        let i18n = ASSETS.iter().find(|a| a.path == "js/i18n.js").unwrap().body;
        let start = i18n
            .find(&format!("const {name} = {{"))
            .unwrap_or_else(|| panic!("catalogue {name}"));
        let block = &i18n[start..];
        let block = &block[..block.find("\n};").expect("catalogue ends")];
        block
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('\''))
            .filter_map(|l| l.split_once("':").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// The English texts of one catalogue's keys starting with `prefix`, by the rest of the key
    /// (single-quoted JavaScript strings, `\'` unescaped).
    fn english_texts(prefix: &str) -> std::collections::BTreeMap<String, String> {
        let i18n = ASSETS.iter().find(|a| a.path == "js/i18n.js").unwrap().body;
        let block = &i18n[i18n.find("const en = {").expect("English")..];
        let block = &block[..block.find("\n};").expect("catalogue ends")];
        block
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix(&format!("'{prefix}")))
            .filter_map(|l| {
                let (key, text) = l.split_once("': '")?;
                let text = text.strip_suffix("',")?;
                Some((key.to_owned(), text.replace("\\'", "'")))
            })
            .collect()
    }

    /// The web app explains error codes in its own languages (format.js `codeExplanation`): its
    /// English words are those of `licensor_core::jobs::codes::explanation`, for every item code
    /// and every job code explained there, and it knows no code licensor does not explain.
    #[test]
    fn error_code_texts_are_the_servers_explanations() {
        let texts = english_texts("code.");
        let job_codes = [
            "group_not_found",
            "directory_credentials_rejected",
            "directory_not_configured",
            "export_location_unreachable",
            "export_location_denied",
            "all_items_failed",
        ];
        for code in licensor_core::jobs::codes::item_codes().chain(job_codes) {
            assert_eq!(
                texts.get(code).map(String::as_str),
                Some(licensor_core::jobs::codes::explanation(code)),
                "code.{code}"
            );
        }
        for (code, text) in &texts {
            assert_eq!(
                text,
                licensor_core::jobs::codes::explanation(code),
                "code.{code}"
            );
        }
    }

    /// The web app shows licensor's fixed notes by their codes (format.js `noteText`), in the
    /// English words of `licensor_core::jobs::notes`, every one of them.
    #[test]
    fn note_texts_are_the_servers_fixed_notes() {
        let texts = english_texts("note.");
        let fixed = licensor_core::jobs::notes::FIXED;
        assert_eq!(texts.len(), fixed.len(), "{texts:?}");
        for (code, text) in fixed {
            assert_eq!(
                texts.get(code).map(String::as_str),
                Some(text),
                "note.{code}"
            );
        }
    }

    #[test]
    fn english_and_swedish_have_the_same_texts_and_every_text_used_exists() {
        let en = catalogue_keys("en");
        let sv = catalogue_keys("sv");
        assert!(en.len() > 100, "{} English texts", en.len());
        let only_en: Vec<_> = en.difference(&sv).collect();
        let only_sv: Vec<_> = sv.difference(&en).collect();
        assert!(only_en.is_empty(), "not in Swedish: {only_en:?}");
        assert!(only_sv.is_empty(), "not in English: {only_sv:?}");
        for a in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") && a.path != "js/i18n.js")
        {
            for (at, _) in a.body.match_indices("t('") {
                // `t(` itself, not `split(` or `.t(`.
                let before = a.body[..at].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let key = a.body[at + 3..].split('\'').next().unwrap_or_default();
                assert!(
                    en.contains(key),
                    "{} uses t('{key}'), which has no text",
                    a.path
                );
            }
        }
    }
}
