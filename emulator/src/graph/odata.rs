//! OData query options as Graph reads them (`$select`, `$filter`, `$top`, `$count`,
//! `$skiptoken`) and the paging links built from them.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::GraphError;

pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// A request's query options, as given (names compare case-insensitively).
pub(super) struct Q {
    pairs: Vec<(String, String)>,
}

impl Q {
    pub(super) fn new(q: Option<&str>) -> Self {
        Q {
            pairs: parse_query(q.unwrap_or("")),
        }
    }
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn select(&self) -> Option<Vec<String>> {
        self.get("$select").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
    }
    pub(super) fn top(&self) -> Result<usize, GraphError> {
        match self.get("$top") {
            None => Ok(100),
            Some(t) => match t.trim().parse::<i64>() {
                Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
                Ok(_) => Err(GraphError::unsupported_query(format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."
                ))),
                Err(_) => Err(GraphError::odata(format!(
                    "Invalid value '{t}' for $top query option found. The $top query option requires a non-negative integer value."
                ))),
            },
        }
    }
    pub(super) fn count(&self) -> bool {
        self.get("$count")
            .is_some_and(|c| c.eq_ignore_ascii_case("true"))
    }
    /// Where the requested page starts in the collection `scope` names: 0 without `$skiptoken`.
    pub(super) fn offset(&self, scope: u64) -> Result<usize, GraphError> {
        match self.get("$skiptoken") {
            Some(t) => read_skiptoken(t, scope),
            None => Ok(0),
        }
    }
}

pub(super) fn validate_select(
    select: &Option<Vec<String>>,
    allowed: &[&str],
    ty: &str,
) -> Result<(), GraphError> {
    if let Some(sel) = select {
        for p in sel {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(p)) {
                return Err(GraphError::odata(format!(
                    "Could not find a property named '{p}' on type 'microsoft.graph.{ty}'."
                )));
            }
        }
    }
    Ok(())
}

pub(super) fn project(mut m: Map<String, Value>, select: Option<&[String]>) -> Map<String, Value> {
    if let Some(sel) = select {
        m.retain(|k, _| sel.iter().any(|s| s.eq_ignore_ascii_case(k)));
    }
    m
}

/// Opaque paging token: where the next page starts, bound to the collection it pages.
pub(super) fn skiptoken(scope: u64, offset: usize) -> String {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(b"DSpt");
    b.extend_from_slice(&scope.to_le_bytes());
    b.extend_from_slice(&(offset as u64).to_le_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

fn read_skiptoken(tok: &str, scope: u64) -> Result<usize, GraphError> {
    let expired = || {
        GraphError::bad_request(
            "The specified page token value has expired and can no longer be included in your request.",
        )
        .with_code("Directory_ExpiredPageToken")
    };
    let b = URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .map_err(|_| expired())?;
    if b.len() != 20 || &b[..4] != b"DSpt" {
        return Err(expired());
    }
    let s = u64::from_le_bytes(b[4..12].try_into().map_err(|_| expired())?);
    let o = u64::from_le_bytes(b[12..20].try_into().map_err(|_| expired())?);
    if s != scope {
        return Err(expired());
    }
    Ok(o as usize)
}

impl GraphError {
    fn with_code(mut self, code: &str) -> Self {
        self.code = code.into();
        self
    }
}

pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `@odata.nextLink` for the page after `next`: the same request with a new `$skiptoken`.
pub(super) fn next_link(
    headers: &HeaderMap,
    path: &str,
    q: &Q,
    top: usize,
    token: String,
) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    let mut has_top = false;
    for (k, v) in &q.pairs {
        if k.eq_ignore_ascii_case("$skiptoken") {
            continue;
        }
        if k.eq_ignore_ascii_case("$top") {
            has_top = true;
        }
        ser.append_pair(k, v);
    }
    if !has_top {
        ser.append_pair("$top", &top.to_string());
    }
    ser.append_pair("$skiptoken", &token);
    let qs = ser
        .finish()
        .replace("%24", "$")
        .replace("%2C", ",")
        .replace('+', "%20");
    format!("{}{}?{}", base_url(headers), path, qs)
}

pub(super) fn scope_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One `$filter` clause: `prop eq 'value'` or `startswith(prop,'value')`.
pub(super) enum Filter {
    Eq(String, String),
    StartsWith(String, String),
}

impl Filter {
    /// The property the clause tests.
    pub(super) fn prop(&self) -> &str {
        match self {
            Filter::Eq(p, _) | Filter::StartsWith(p, _) => p,
        }
    }

    /// Whether a value of [`Filter::prop`] passes; both sides compare case-insensitively.
    pub(super) fn matches(&self, value: &str) -> bool {
        match self {
            Filter::Eq(_, v) => value.eq_ignore_ascii_case(v),
            Filter::StartsWith(_, v) => value.to_lowercase().starts_with(&v.to_lowercase()),
        }
    }
}

fn parse_literal(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

pub(super) fn parse_filter(f: &str) -> Result<Filter, GraphError> {
    let t = f.trim();
    let invalid = || GraphError::odata(format!("Invalid filter clause: syntax error in '{f}'."));
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("startswith(") {
        let inner = t["startswith(".len()..]
            .strip_suffix(')')
            .ok_or_else(invalid)?;
        let (prop, lit) = inner.split_once(',').ok_or_else(invalid)?;
        return Ok(Filter::StartsWith(
            prop.trim().to_string(),
            parse_literal(lit).ok_or_else(invalid)?,
        ));
    }
    let mut it = t.splitn(3, ' ');
    let prop = it.next().ok_or_else(invalid)?;
    let op = it.next().ok_or_else(invalid)?;
    let lit = it.next().ok_or_else(invalid)?;
    if !op.eq_ignore_ascii_case("eq") {
        return Err(GraphError::unsupported_query(format!(
            "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'Group'."
        )));
    }
    Ok(Filter::Eq(
        prop.to_string(),
        parse_literal(lit).ok_or_else(invalid)?,
    ))
}

/// The clauses of `a or b or …` (split outside quoted literals); `None` for a single clause.
pub(super) fn split_or(f: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let bytes = f.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && bytes.len() - i >= 4 && bytes[i..i + 4].eq_ignore_ascii_case(b" or ") {
            // `i` and `i + 4` border ASCII bytes, so the slices below are on char boundaries.
            parts.push(f[start..i].trim().to_string());
            i += 4;
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(f[start..].trim().to_string());
    (parts.len() > 1).then_some(parts)
}
