//! What the client commands (`licensor licenses …`, `licensor jobs …`) share: where licensor is
//! and which token to use (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`), one HTTP call
//! whose refusal becomes one line with the problem's code and detail, and plain-text tables.

use std::time::Duration;

use clap::Args;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct Client {
    /// licensor's URL, e.g. http://127.0.0.1:8080 (as `licensor demo` prints it).
    #[arg(long, env = "LICENSOR_URL")]
    url: Option<String>,
    /// An API token of the tenant.
    #[arg(long, env = "LICENSOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table: the items a list read as one JSON array, where a
    /// downloaded file was written as `{"path", "bytes"}`, anything else as the API answers it.
    #[arg(long)]
    pub json: bool,
}

/// Most times one call is tried while licensor answers 429 (rate limited).
const RATE_LIMITED_TRIES: u32 = 5;
/// Longest `Retry-After` the client is prepared to wait out.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// A running licensor, called with the caller's token.
pub struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    pub fn new(client: &Client) -> anyhow::Result<Api> {
        let url = client
            .url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no licensor URL: pass --url or set LICENSOR_URL"))?;
        let token = client
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no token: pass --token or set LICENSOR_TOKEN"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Api {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A request to `path` (e.g. `/v1/jobs`) with the token; add a query, headers or a body,
    /// then hand it to [`Api::json`] or [`Api::bytes`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Call `path` with an optional JSON body and return the JSON answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.json(req).await
    }

    /// Why a request got no answer, in one line: licensor could not be reached (nothing was
    /// sent), or the connection was lost after the request went out — then it may have been
    /// done, and the user is told to look before sending it again.
    fn unanswered(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow::anyhow!("cannot reach {}: {e}", self.url)
        } else if e.is_timeout() {
            anyhow::anyhow!(
                "{} did not answer in time; the request may have been done: look before sending it again",
                self.url
            )
        } else {
            anyhow::anyhow!(
                "the connection to {} was lost before an answer ({e}); the request may have been done: look before sending it again",
                self.url
            )
        }
    }

    /// Send `req` and return its JSON answer.
    pub async fn json(&self, req: RequestBuilder) -> anyhow::Result<Value> {
        Ok(self.json_answer(req).await?.0)
    }

    /// Send `req` and return its JSON answer with the answer's headers.
    pub async fn json_answer(
        &self,
        req: RequestBuilder,
    ) -> anyhow::Result<(Value, reqwest::header::HeaderMap)> {
        let (bytes, headers) = self.answer(req).await?;
        Ok((
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        ))
    }

    /// Send `req` and return the body of a successful answer as it came (e.g. a file). A
    /// refusal is an error reading `code: detail`; while licensor says 429, the call is tried
    /// again after its `Retry-After`.
    pub async fn bytes(&self, req: RequestBuilder) -> anyhow::Result<Vec<u8>> {
        Ok(self.answer(req).await?.0)
    }

    /// [`Api::bytes`], with the answer's headers.
    async fn answer(
        &self,
        req: RequestBuilder,
    ) -> anyhow::Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = req
                .try_clone()
                .ok_or_else(|| anyhow::anyhow!("a request to {} cannot be sent", self.url))?;
            let resp = attempt.send().await.map_err(|e| self.unanswered(&e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = resp
                .bytes()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", self.url))?;
            if status.is_success() {
                return Ok((body.to_vec(), headers));
            }
            if status == StatusCode::TOO_MANY_REQUESTS && tries < RATE_LIMITED_TRIES {
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                if wait <= LONGEST_WAIT {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(
                match (problem["code"].as_str(), problem["detail"].as_str()) {
                    (Some(code), Some(detail)) => anyhow::anyhow!("{code}: {detail}"),
                    _ => anyhow::anyhow!("HTTP {status} from {}", self.url),
                },
            );
        }
    }

    /// The `data` of a list route, following `next_cursor` until `at_most` entries (all of them
    /// when `None`) have been read.
    pub async fn list(
        &self,
        path: &str,
        query: &[(&str, String)],
        at_most: Option<usize>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let limit = at_most.map_or(500, |n| n.saturating_sub(all.len()).clamp(1, 500));
            let mut req = self
                .request(Method::GET, path)
                .query(query)
                .query(&[("limit", limit)]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c)]);
            }
            let page = self.json(req).await?;
            all.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) if at_most.is_none_or(|n| all.len() < n) => cursor = Some(c.to_owned()),
                _ => break,
            }
        }
        if let Some(n) = at_most {
            all.truncate(n);
        }
        Ok(all)
    }
}

/// An id as it may appear in a URL path (anything else is simply "not found").
pub fn path_segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// A JSON value as a table cell or in a sentence: strings bare (their control characters
/// escaped, see [`terminal_safe`]), `null` as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => terminal_safe(s).into_owned(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `s` as a terminal can show it safely: control characters (C0, DEL and C1 — a newline, a
/// tab, the ESC that starts a terminal's escape sequences), line and paragraph separators
/// (U+2028, U+2029) and Unicode's bidirectional formatting characters (U+061C, U+200E–U+200F,
/// U+202A–U+202E, U+2066–U+2069: they reorder what follows on the line) are written as escapes
/// (`\n`, `\t`, `\u{1b}`, `\u{202e}`; see `licensor_core::domain::is_hidden_format`), and so
/// are invisible characters (a zero-width space, a byte order mark, a soft hyphen:
/// `licensor_core::domain::is_invisible`), so that two names that differ by one read apart.
/// Names come from the API and from the tenant's directory: printed raw, such a name broke a
/// table's rows, or recoloured the terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    use licensor_core::domain::{is_shown_escaped, push_shown};
    if !s.chars().any(is_shown_escaped) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut safe = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_shown(&mut safe, c);
    }
    std::borrow::Cow::Owned(safe)
}

/// The columns `s` takes on a terminal: Unicode's East Asian Width (the `unicode-width` crate),
/// with a soft hyphen (U+00AD) as one column, as terminals draw it.
fn display_width(s: &str) -> usize {
    use unicode_width::UnicodeWidthStr;
    s.width() + s.matches('\u{AD}').count()
}

/// Print `rows` under `header`, each column as wide as its widest cell ([`table_lines`]).
pub fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    for line in table_lines(header, rows) {
        println!("{line}");
    }
}

/// The lines of a table of `rows` under `header`: each column as wide as its widest cell, two
/// spaces apart, no spaces at a line's end. Widths are the columns a cell takes on a terminal
/// (Unicode's East Asian Width, the `unicode-width` crate), not its characters: an emoji or a
/// CJK character takes two, a combining mark (an "Å" typed as "A" and a ring) none, so the
/// columns stay aligned whatever the names hold. Cells are shown [`terminal_safe`]: a newline
/// or an escape sequence in a name neither breaks its row nor reaches the terminal.
pub fn table_lines<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    // Each cell made safe and measured once: (text, columns).
    let measured = |cell: &str| {
        let cell = terminal_safe(cell).into_owned();
        let width = display_width(&cell);
        (cell, width)
    };
    let lines: Vec<[(String, usize); N]> = std::iter::once(header.map(measured))
        .chain(
            rows.iter()
                .map(|row| row.each_ref().map(|cell| measured(cell))),
        )
        .collect();
    let mut widths = [0; N];
    for line in &lines {
        for (w, (_, width)) in widths.iter_mut().zip(line) {
            *w = (*w).max(*width);
        }
    }
    lines
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (i, ((cell, width), w)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal column where each of `lines`' last column starts (after the last two
    /// spaces), checked to be the same on every line.
    fn last_column_starts(lines: &[String]) -> Vec<usize> {
        let starts: Vec<usize> = lines
            .iter()
            .map(|l| display_width(l.rsplit_once("  ").unwrap().0) + 2)
            .collect();
        assert!(starts.iter().all(|&s| s == starts[0]), "{lines:#?}");
        starts
    }

    /// Columns line up on a terminal whatever the cells hold: two columns for an emoji or a CJK
    /// character, none for a combining mark.
    #[test]
    fn table_columns_line_up_by_display_width() {
        use unicode_width::UnicodeWidthStr;
        let rows = [
            ["Visio".to_owned(), "3".to_owned()],
            ["Visio 📊".to_owned(), "4".to_owned()],
            ["A\u{30A}rsavtal".to_owned(), "5".to_owned()],
            ["製図ソフト".to_owned(), "6".to_owned()],
        ];
        let lines = table_lines(["NAME", "SEATS"], &rows);
        assert_eq!(lines.len(), 5);
        // The seats column starts at the same terminal column on every line.
        let starts = last_column_starts(&lines);
        assert_eq!(starts[0], "製図ソフト".width() + 2, "{lines:#?}");
        assert_eq!(lines[0], "NAME        SEATS");
        assert_eq!(lines[3], "A\u{30A}rsavtal    5");
    }

    /// A name's control and bidirectional formatting characters are shown as escapes: its row
    /// stays one line, and nothing reaches the terminal as a command. A soft hyphen takes a
    /// column, as terminals draw it.
    #[test]
    fn table_cells_are_terminal_safe() {
        let rows = [
            ["new\nline".to_owned(), "1".to_owned()],
            ["esc\u{1b}[31mRED\u{1b}[0m".to_owned(), "2".to_owned()],
            ["tab\there".to_owned(), "3".to_owned()],
            ["bidi\u{202e}evil".to_owned(), "4".to_owned()],
            ["soft\u{ad}hy".to_owned(), "5".to_owned()],
            ["plain".to_owned(), "6".to_owned()],
        ];
        let lines = table_lines(["NAME", "SEATS"], &rows);
        assert_eq!(lines.len(), rows.len() + 1, "{lines:#?}");
        for line in &lines {
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{line:?}"
            );
        }
        for (line, (start, seats)) in lines[1..].iter().zip([
            ("new\\nline ", "1"),
            ("esc\\u{1b}[31mRED\\u{1b}[0m  ", "2"),
            ("tab\\there ", "3"),
            ("bidi\\u{202e}evil ", "4"),
            ("soft\\u{ad}hy ", "5"),
        ]) {
            assert!(line.starts_with(start), "{line:?}");
            assert!(line.ends_with(&format!("  {seats}")), "{line:?}");
        }
        // The seats column starts at the same terminal column on every line.
        last_column_starts(&lines);
        assert_eq!(terminal_safe("Ångström 製図"), "Ångström 製図");
        assert_eq!(text(&serde_json::json!("a\u{1b}b")), "a\\u{1b}b");
        // A line separator is a line break to many readers (Python's `splitlines`).
        assert_eq!(
            terminal_safe("a\u{2028}b\u{2029}c"),
            "a\\u{2028}b\\u{2029}c"
        );
    }
}
