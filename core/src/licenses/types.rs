//! Validated inputs of the seat inventory: a handler that holds one of these never re-checks it.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{StoreError, StoreResult};

/// Most seats a license may have.
pub const MAX_SEATS: i64 = 1_000_000;
/// Most seats a license with a term may have (each seat is tracked on its own).
pub const MAX_TERM_SEATS: i64 = 100_000;
/// Most seats one checkout may take.
pub const MAX_QUANTITY: i64 = 10_000;
/// Most assignments one (bulk) checkin may name.
pub const MAX_CHECKIN: usize = 1_000;
/// Longest term, in days (100 years).
pub const MAX_TERM_DAYS: i32 = 36_500;
/// Longest notes, in characters.
pub const MAX_NOTES: usize = 2_000;

/// A license name: trimmed, 1–200 characters, no control or bidirectional formatting character
/// ([`crate::domain::name`]). Refused: `invalid_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseName(String);

impl LicenseName {
    pub fn parse(s: &str) -> StoreResult<Self> {
        crate::domain::name(s)
            .map(|s| LicenseName(s.to_owned()))
            .map_err(|why| StoreError::unacceptable("invalid_name", format!("name {why}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many seats a license has: 1 to [`MAX_SEATS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatCount(i64);

impl SeatCount {
    pub fn parse(n: i64) -> StoreResult<Self> {
        if !(1..=MAX_SEATS).contains(&n) {
            return Err(StoreError::unacceptable(
                "invalid_seats",
                format!("seats must be between 1 and {MAX_SEATS}"),
            ));
        }
        Ok(SeatCount(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The length of a seat's term in days: 1 to [`MAX_TERM_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermDays(i32);

impl TermDays {
    pub fn parse(n: i64) -> StoreResult<Self> {
        if !(1..=i64::from(MAX_TERM_DAYS)).contains(&n) {
            return Err(StoreError::unacceptable(
                "invalid_term_days",
                format!("term_days must be between 1 and {MAX_TERM_DAYS}"),
            ));
        }
        Ok(TermDays(n as i32))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A delivery date between the years 1900 and 2200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredOn(NaiveDate);

impl DeliveredOn {
    pub fn parse(d: NaiveDate) -> StoreResult<Self> {
        if !(1900..=2200).contains(&d.year()) {
            return Err(StoreError::unacceptable(
                "invalid_delivered_on",
                "delivered_on must be a date between the years 1900 and 2200",
            ));
        }
        Ok(DeliveredOn(d))
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

/// Free-text notes over many lines, at most [`MAX_NOTES`] characters and free of what
/// [`crate::domain::free_text_refusal`] refuses (422 `invalid_notes`); blank notes are no notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notes(String);

impl Notes {
    pub fn parse(s: Option<&str>) -> StoreResult<Option<Self>> {
        let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if s.chars().count() > MAX_NOTES {
            return Err(StoreError::unacceptable(
                "invalid_notes",
                format!("notes must be at most {MAX_NOTES} characters"),
            ));
        }
        if let Some(c) = crate::domain::free_text_refusal(s) {
            return Err(StoreError::unacceptable(
                "invalid_notes",
                format!("notes {}", crate::domain::free_text_refused(c)),
            ));
        }
        Ok(Some(Notes(s.to_owned())))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// How many seats one checkout takes: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(n: i64) -> StoreResult<Self> {
        if !(1..=MAX_QUANTITY).contains(&n) {
            return Err(StoreError::unacceptable(
                "invalid_quantity",
                format!("quantity must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        Ok(Quantity(n))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Whom a license is checked out to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeType {
    /// A person.
    User,
    /// Another asset, e.g. a laptop or other equipment.
    Asset,
}

impl AssigneeType {
    pub fn as_str(self) -> &'static str {
        match self {
            AssigneeType::User => "user",
            AssigneeType::Asset => "asset",
        }
    }
}

impl std::str::FromStr for AssigneeType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(AssigneeType::User),
            "asset" => Ok(AssigneeType::Asset),
            other => Err(format!("unknown assignee type `{other}` (user or asset)")),
        }
    }
}

/// The user or asset a license is checked out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignee {
    #[serde(rename = "type")]
    pub kind: AssigneeType,
    /// The user's or asset's id in the caller's own records (1–200 characters, trimmed; no
    /// control or bidirectional formatting character).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub id: String,
    /// The user's display name or the asset's name (at most 200 characters, trimmed; no control
    /// or bidirectional formatting character), shown in "Used By"; absent when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

impl Assignee {
    /// `id` 1–200 characters, none of them a control character (an assignee is addressed by
    /// its id in paths, `/v1/assignees/{type}/{id}/…`, which refuse control characters: one
    /// checked out under such an id could never be reached there again) or a bidirectional
    /// formatting character (see [`crate::domain::is_hidden_format`]); `name` blank (none) or a
    /// name by [`crate::domain::name`]'s rule. Both trimmed. Else 422 `invalid_assignee`.
    pub fn parse(kind: AssigneeType, id: &str, name: Option<&str>) -> StoreResult<Self> {
        let refused = |detail: String| StoreError::unacceptable("invalid_assignee", detail);
        let id =
            crate::domain::identifier(id).map_err(|why| refused(format!("assignee id {why}")))?;
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => Some(
                crate::domain::name(n).map_err(|why| refused(format!("assignee name {why}")))?,
            ),
            None => None,
        };
        Ok(Assignee {
            kind,
            id: id.to_owned(),
            name: name.map(str::to_owned),
        })
    }
}

/// The assignments one checkin names: 1 to [`MAX_CHECKIN`] distinct ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentIds(Vec<uuid::Uuid>);

impl AssignmentIds {
    pub fn parse(ids: Vec<uuid::Uuid>) -> StoreResult<Self> {
        if ids.is_empty() || ids.len() > MAX_CHECKIN {
            return Err(StoreError::unacceptable(
                "invalid_assignment_ids",
                format!("assignment_ids must name 1 to {MAX_CHECKIN} assignments"),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(StoreError::unacceptable(
                "invalid_assignment_ids",
                format!("assignment {dup} is named twice"),
            ));
        }
        Ok(AssignmentIds(ids))
    }

    pub fn as_slice(&self) -> &[uuid::Uuid] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked() {
        assert!(LicenseName::parse("  ").is_err());
        assert_eq!(LicenseName::parse(" Office ").unwrap().as_str(), "Office");
        assert!(SeatCount::parse(0).is_err());
        assert!(SeatCount::parse(MAX_SEATS + 1).is_err());
        assert!(TermDays::parse(0).is_err());
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
        assert_eq!(Notes::parse(Some("   ")).unwrap(), None);
        assert!(Notes::parse(Some(&"x".repeat(MAX_NOTES + 1))).is_err());
        // Lines, tabs and right-to-left text with its marks are notes; escapes, NUL, line
        // separators and bidirectional overrides are not.
        for kept in [
            "Rad ett\r\nRad två\n\tindrag",
            "מחשב \u{200F}3\u{200F}",
            "👩\u{200D}💻",
        ] {
            assert_eq!(
                Notes::parse(Some(kept)).unwrap().unwrap().into_inner(),
                kept
            );
        }
        for refused in [
            "a\u{1b}[31mred",
            "a\0b",
            "a\u{2028}b",
            "a\u{202E}gpj.exe",
            "a\u{2066}b",
            "a\u{85}b",
        ] {
            let e = Notes::parse(Some(refused)).unwrap_err();
            assert!(e.to_string().contains("found U+"), "{refused:?}: {e}");
        }
        assert!(Assignee::parse(AssigneeType::User, "", None).is_err());
        assert!(Assignee::parse(AssigneeType::Asset, "a", Some(&"n".repeat(201))).is_err());
        for bad in ["LT\n1", "LT\t1", "LT\u{85}1", "LT\u{7f}1", "LT\u{0}1"] {
            assert!(
                Assignee::parse(AssigneeType::Asset, bad, None).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            Assignee::parse(AssigneeType::Asset, "\tLT-1\n", None)
                .unwrap()
                .id,
            "LT-1"
        );
        assert_eq!(
            Assignee::parse(AssigneeType::Asset, " LT-1 ", Some("  "))
                .unwrap()
                .name,
            None
        );
        let id = uuid::Uuid::now_v7();
        assert!(AssignmentIds::parse(vec![id, id]).is_err());
        assert!(AssignmentIds::parse(vec![]).is_err());
        assert!(DeliveredOn::parse(NaiveDate::from_ymd_opt(1800, 1, 1).unwrap()).is_err());
    }
}
