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
                    key.strip_prefix(scope.as_str())
                        .and_then(|k| k.strip_prefix('|'))
                        .ok_or(PageError::Cursor)?
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
}
