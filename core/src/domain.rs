//! Domain vocabulary shared by the API, the workers and the CLI.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::jobs::state::{ItemStatus, JobKind, JobStatus};

/// What a token may do. `admin` everything; `operator` read, rerun, cancel, check in;
/// `viewer` read only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes everything `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (admin, operator or viewer)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}

/// Longest name a person gives (a license, a tenant, an API token, an assignee), in characters.
pub const MAX_NAME: usize = 200;

/// Whether `c` may not stand in a name: a control character (C0, DEL and C1 — a newline, a tab,
/// the ESC that starts a terminal's escape sequences) or one of Unicode's bidirectional
/// formatting characters (U+061C, U+200E–U+200F, U+202A–U+202E, U+2066–U+2069; UAX #9,
/// <https://www.unicode.org/reports/tr9/>), which reorder the text shown after them. Such a
/// character is invisible where the name is shown (the web app, the CLI's tables, an export),
/// yet it breaks a table's row, recolours a terminal, or makes two names that look alike
/// differ. A zero-width joiner (U+200D, inside emoji sequences) is none of these.
pub fn is_hidden_format(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why a name was refused ([`name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRefusal {
    /// Empty once trimmed, or longer than [`MAX_NAME`] characters.
    Length,
    /// It holds this character ([`is_hidden_format`]).
    Hidden(char),
}

impl std::fmt::Display for NameRefusal {
    /// The end of a sentence that starts with what the name is ("name", "tenant name"): "must be
    /// 1 to 200 characters" or "may not contain control or bidirectional formatting characters
    /// (U+001B)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameRefusal::Length => write!(f, "must be 1 to {MAX_NAME} characters"),
            NameRefusal::Hidden(c) => write!(
                f,
                "may not contain control or bidirectional formatting characters (such as a newline, a tab or ESC; found U+{:04X})",
                u32::from(*c)
            ),
        }
    }
}

/// `text` as a name: trimmed, 1 to [`MAX_NAME`] characters (Unicode scalar values, not bytes),
/// none of them [`is_hidden_format`]. The one rule for licenses, tenants, API tokens and
/// assignees; each caller answers a refusal with its own field's code.
pub fn name(text: &str) -> Result<&str, NameRefusal> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_NAME {
        return Err(NameRefusal::Length);
    }
    match text.chars().find(|c| is_hidden_format(*c)) {
        Some(c) => Err(NameRefusal::Hidden(c)),
        None => Ok(text),
    }
}

#[cfg(test)]
mod name_tests {
    use super::{MAX_NAME, NameRefusal, name};

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(name("  Visio Pro  "), Ok("Visio Pro"));
        // Characters, not bytes: 200 two-byte letters are a name.
        let long = "é".repeat(MAX_NAME);
        assert_eq!(name(&long), Ok(long.as_str()));
        assert_eq!(name(&"é".repeat(MAX_NAME + 1)), Err(NameRefusal::Length));
        assert_eq!(name(" \t "), Err(NameRefusal::Length));
        // Printable text of any script, emoji sequences (with their zero-width joiner) included.
        for ok in [
            "Adobe® Acrobat",
            "ライセンス",
            "Licens för Åsa",
            "👩‍💻 dev seats",
            "عربي",
        ] {
            assert_eq!(name(ok), Ok(ok), "{ok:?}");
        }
        for (bad, c) in [
            ("Visio\u{1b}[31m", '\u{1b}'),
            ("Vi\nsio", '\n'),
            ("Vi\tsio", '\t'),
            ("Visio\u{7f}", '\u{7f}'),
            ("Vi\u{85}sio", '\u{85}'),
            ("Visio\u{202e}gnp.exe", '\u{202e}'),
            ("Visio\u{2066}", '\u{2066}'),
            ("Visio\u{200f}", '\u{200f}'),
            ("Visio\u{61c}", '\u{61c}'),
            ("Vi\u{0}sio", '\u{0}'),
        ] {
            assert_eq!(name(bad), Err(NameRefusal::Hidden(c)), "{bad:?}");
        }
        assert!(
            NameRefusal::Hidden('\u{1b}')
                .to_string()
                .ends_with("U+001B)")
        );
    }
}
