//! Control characters in a request's path or query string: refused for every route before
//! anything else looks at the request.
//!
//! No id, name or filter value licensor keeps or is asked for holds one, and PostgreSQL does not
//! store NUL (U+0000) in text at all: a `%00` in a path segment or a query value that reached a
//! query's text parameter was a database error. Percent-decoded, a path with a control character
//! (C0, DEL or C1; NUL included) → 400 `invalid_path`, a query string with one → 400
//! `invalid_query`; nothing is read or changed. Neither answer repeats the value. A query whose
//! `%XX` escapes are not UTF-8 is refused here too (400 `invalid_query`, see
//! [`super::extract::not_utf8`]), on routes that read no query as on those that do.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;

pub async fn refuse_control_characters(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if has_control(uri.path()) {
        return ApiError::bad_request(
            "invalid_path",
            "the path may not contain control characters (such as NUL, %00): no id or name holds one",
        )
        .into_response();
    }
    if uri.query().is_some_and(has_control) {
        return ApiError::bad_request(
            "invalid_query",
            "query parameters may not contain control characters (such as NUL, %00)",
        )
        .into_response();
    }
    // Every route's query alike, those that read none too (a POST that creates something).
    if let Err(refused) = super::extract::not_utf8(uri.query()) {
        return refused.into_response();
    }
    next.run(req).await
}

/// Whether `text`, percent-decoded, holds a control character. Bytes that do not decode as
/// UTF-8 are left to the route for a path (a parameter that is not UTF-8 is refused there).
fn has_control(text: &str) -> bool {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .chars()
        .any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::has_control;

    #[test]
    fn control_characters_are_found_escaped_or_not() {
        for bad in [
            "/v1/assignees/user/%00/assignments",
            "/v1/members/a%01b@x.se/history",
            "user=%0a",
            "user=%0D",
            "search=%1F",
            "search=%7f",
            // U+0085 (NEL), a C1 control, in UTF-8.
            "search=a%C2%85",
            "x=\u{0}",
        ] {
            assert!(has_control(bad), "{bad}");
        }
        for good in [
            "/v1/assignees/user/ada/assignments",
            "/v1/members/ada%40contoso.se/history",
            "user=ada%40contoso.se&limit=5",
            "search=%C3%A5sa",
            "search=100%",
            "search=%zz%2",
            "search=%E2%80%8B",
            "",
        ] {
            assert!(!has_control(good), "{good}");
        }
    }
}
