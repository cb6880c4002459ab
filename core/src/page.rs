//! Cursor pagination: `?limit=` (default 50, max 500) and an opaque `?cursor=` that encodes the
//! list it was issued for and the last key of the previous page. Lists are ordered newest first
//! by a time-ordered key. A cursor given to another list (the jobs list's to the licenses list,
//! one job's items' to another job's) is refused, not read as a position in it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 500;

/// A validated page request over keys of type `K`.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub limit: u64,
    /// Return rows strictly after (older than) this key.
    pub after: Option<K>,
    /// The list the cursors are for: a route and the parent's id where it has one
    /// (`jobs`, `items:{job}`); empty for an unscoped request.
    scope: String,
}

/// One page of results.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A key that can travel inside a cursor.
pub trait CursorKey: Sized {
    fn encode(&self) -> String;
    fn decode(s: &str) -> Option<Self>;
}

impl CursorKey for uuid::Uuid {
    fn encode(&self) -> String {
        self.simple().to_string()
    }
    fn decode(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s).ok()
    }
}

impl CursorKey for i64 {
    fn encode(&self) -> String {
        self.to_string()
    }
    fn decode(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    Limit,
    #[error(
        "cursor is not one of this list: a cursor reads on only in the list, and with the filters, that issued it"
    )]
    Cursor,
    /// A cursor of this list issued with other filters: the filters (query parameter names)
    /// given with another value, or given on one side only, in name order.
    #[error(
        "cursor was issued with other filters ({}): a cursor reads on only with the filters that issued it; send them as they were, or leave the cursor out to start from the first page",
        .0.join(", ")
    )]
    Filters(Vec<String>),
}

/// Where a scope's filters start: `{list}~{name}:{digest},…`, names in order, each a query
/// parameter's name (`%XX`-escaped where it holds anything but letters, digits and `_`) and a
/// digest of its value. Written by the API's filters (`src/api/extract.rs`); read here only to
/// name the filters a refused cursor differs in.
pub const FILTERS: char = '~';

/// The filters that differ between two scopes of the same list (see [`FILTERS`]), in name
/// order; `None` when the scopes are of different lists, or either one's filters cannot be
/// read.
fn differing_filters(issued: &str, given: &str) -> Option<Vec<String>> {
    use std::collections::BTreeMap;
    let split = |scope: &str| -> Option<(String, BTreeMap<String, String>)> {
        let (list, filters) = scope.split_once(FILTERS).unwrap_or((scope, ""));
        let mut named = BTreeMap::new();
        for filter in filters.split(',').filter(|f| !f.is_empty()) {
            let (name, digest) = filter.split_once(':')?;
            let name = percent_decoded(name)?;
            named.insert(name, digest.to_owned());
        }
        Some((list.to_owned(), named))
    };
    let (issued_list, issued) = split(issued)?;
    let (given_list, given) = split(given)?;
    if issued_list != given_list {
        return None;
    }
    let mut names: Vec<String> = issued
        .keys()
        .chain(given.keys())
        .filter(|name| issued.get(*name) != given.get(*name))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    // A name is shown as it is only when it can be a filter's: a few plain characters. A cursor
    // edited to hold anything else (control characters, markup, thousands of names) is refused
    // without repeating it.
    let plain = |name: &String| {
        (1..=MAX_NAME).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    (!names.is_empty() && names.len() <= MAX_NAMED && names.iter().all(plain)).then_some(names)
}

/// The most filters a refusal names ([`PageError::Filters`]); more differ only in a cursor that
/// was edited.
const MAX_NAMED: usize = 16;
/// The longest filter name a refusal repeats.
const MAX_NAME: usize = 64;

/// `text` with its `%XX` escapes and `+` decoded, as a query parameter's name is.
fn percent_decoded(text: &str) -> Option<String> {
    let query = format!("{text}=");
    let mut decoded = form_urlencoded::parse(query.as_bytes());
    decoded.next().map(|(name, _)| name.into_owned())
}

impl<K: CursorKey> PageRequest<K> {
    /// A request with no list of its own (a caller inside licensor).
    pub fn parse(limit: Option<u64>, cursor: Option<&str>) -> Result<Self, PageError> {
        Self::parse_in("", limit, cursor)
    }

    /// A request of the list `scope` (see [`PageRequest::scope`]): `cursor` must be one this
    /// server issued for that list, else [`PageError::Cursor`]; the next page's cursor is
    /// issued for it.
    pub fn parse_in(
        scope: impl Into<String>,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Self, PageError> {
        let scope = scope.into();
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(PageError::Limit);
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| PageError::Cursor)?;
                let text = String::from_utf8(raw).map_err(|_| PageError::Cursor)?;
                let key = text.strip_prefix("k:").ok_or(PageError::Cursor)?;
                let key = if scope.is_empty() {
                    key
                } else {
                    match key
                        .strip_prefix(scope.as_str())
                        .and_then(|k| k.strip_prefix('|'))
                    {
                        Some(key) => key,
                        // Of this list with other filters: say which.
                        None => {
                            return Err(key
                                .rsplit_once('|')
                                .and_then(|(issued, _)| differing_filters(issued, &scope))
                                .map_or(PageError::Cursor, PageError::Filters));
                        }
                    }
                };
                Some(K::decode(key).ok_or(PageError::Cursor)?)
            }
        };
        Ok(PageRequest {
            limit,
            after,
            scope,
        })
    }

    fn cursor(&self, key: K) -> String {
        let text = if self.scope.is_empty() {
            format!("k:{}", key.encode())
        } else {
            format!("k:{}|{}", self.scope, key.encode())
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    /// How many rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }

    /// Build the page from up to `limit + 1` rows, with `key` giving each row's cursor key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        let next_cursor = if rows.len() as u64 > self.limit {
            rows.truncate(self.limit as usize);
            rows.last().map(|last| self.cursor(key(last)))
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip() {
        let req = PageRequest::<i64>::parse(Some(2), None).unwrap();
        let page = req.finish(vec![9i64, 8, 7], |r| *r);
        assert_eq!(page.data, vec![9, 8]);
        let next = PageRequest::<i64>::parse(Some(2), page.next_cursor.as_deref()).unwrap();
        assert_eq!(next.after, Some(8));
        let last = next.finish(vec![7i64], |r| *r);
        assert!(last.next_cursor.is_none());
    }

    #[test]
    fn bad_input_is_rejected() {
        // A list's cursor is refused by another list, and by the same list of another parent.
        let jobs = PageRequest::<i64>::parse_in("jobs", Some(1), None).unwrap();
        let cursor = jobs.finish(vec![9, 8], |k| *k).next_cursor.unwrap();
        let next = PageRequest::<i64>::parse_in("jobs", None, Some(&cursor)).unwrap();
        assert_eq!(next.after, Some(9));
        for other in ["licenses", "job", "jobs2", "items:1", ""] {
            assert!(
                PageRequest::<i64>::parse_in(other, None, Some(&cursor)).is_err(),
                "{other}"
            );
        }
        let items = |job: &str| format!("items:{job}");
        let cursor = PageRequest::<i64>::parse_in(items("a"), Some(1), None)
            .unwrap()
            .finish(vec![3, 2], |k| *k)
            .next_cursor
            .unwrap();
        assert!(PageRequest::<i64>::parse_in(items("b"), None, Some(&cursor)).is_err());
        assert!(PageRequest::<i64>::parse_in(items("a"), None, Some(&cursor)).is_ok());
        assert!(PageRequest::<i64>::parse(Some(0), None).is_err());
        assert!(PageRequest::<i64>::parse(Some(501), None).is_err());
        assert!(PageRequest::<i64>::parse(None, Some("!!")).is_err());
        assert!(PageRequest::<uuid::Uuid>::parse(None, Some("a2V5")).is_err());
        assert_eq!(PageRequest::<i64>::parse(None, None).unwrap().limit, 50);
    }

    /// A cursor of the same list sent with other filters is refused naming the filters that
    /// differ — given with another value, or on one side only; one of another list, or whose
    /// filters cannot be read, is refused as not of this list.
    #[test]
    fn a_cursor_with_other_filters_names_them() {
        let issue = |scope: &str| {
            PageRequest::<i64>::parse_in(scope, Some(1), None)
                .unwrap()
                .finish(vec![9, 8], |k| *k)
                .next_cursor
                .unwrap()
        };
        let refused = |scope: &str, cursor: &str| {
            PageRequest::<i64>::parse_in(scope, None, Some(cursor)).unwrap_err()
        };
        let cursor = issue("jobs~kind:aa,status:bb");
        assert!(
            PageRequest::<i64>::parse_in("jobs~kind:aa,status:bb", None, Some(&cursor)).is_ok()
        );
        let named = |e: PageError| match e {
            PageError::Filters(names) => names,
            other => panic!("{other}"),
        };
        assert_eq!(
            named(refused("jobs~kind:aa,status:cc", &cursor)),
            ["status"]
        );
        assert_eq!(named(refused("jobs~kind:aa", &cursor)), ["status"]);
        assert_eq!(named(refused("jobs", &cursor)), ["kind", "status"]);
        assert_eq!(
            named(refused(
                "jobs~created%5Fafter:dd,kind:aa,status:bb",
                &cursor
            )),
            ["created_after"]
        );
        let unfiltered = issue("jobs");
        assert_eq!(named(refused("jobs~search:ee", &unfiltered)), ["search"]);
        let detail = refused("jobs~kind:aa", &cursor).to_string();
        assert!(detail.contains("other filters (status)"), "{detail}");
        // Another list, whatever its filters; filters written before they were named.
        assert!(matches!(
            refused("licenses~kind:aa,status:bb", &cursor),
            PageError::Cursor
        ));
        assert!(matches!(refused("items:1", &unfiltered), PageError::Cursor));
        let unnamed = issue("jobs~0123456789abcdef");
        assert!(matches!(
            refused("jobs~kind:aa", &unnamed),
            PageError::Cursor
        ));
        // An edited cursor's names are not repeated unless they can be a filter's.
        let many: Vec<String> = (0..17).map(|i| format!("f{i}:aa")).collect();
        for edited in [
            issue("jobs~%1B%5B31m:aa"),
            issue("jobs~%3Cscript%3E:aa"),
            issue(&format!("jobs~{}:aa", "n".repeat(65))),
            issue(&format!("jobs~{}", many.join(","))),
        ] {
            assert!(matches!(refused("jobs", &edited), PageError::Cursor));
        }
        let longest = issue(&format!("jobs~{}:aa", "n".repeat(64)));
        assert_eq!(named(refused("jobs", &longest)).len(), 1);
    }
}
