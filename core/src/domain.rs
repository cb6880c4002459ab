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

/// The most characters a refusal repeats of one name or value a request sent.
pub const QUOTED_AT_MOST: usize = 80;

/// `text` as a refusal repeats it: its first [`QUOTED_AT_MOST`] characters (hidden ones as
/// escapes, see [`push_shown`]), then `…` when there were more. A request's value is repeated to say what was wrong with it, not whole: a
/// 50,000-character status filter was once echoed in its 400.
pub fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let mut out = String::new();
    for c in chars.by_ref().take(QUOTED_AT_MOST) {
        push_shown(&mut out, c);
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Push `c` to `out` as a message shows what a request sent: a character
/// [`is_hidden_format`] or [`is_invisible`] as an escape (`\n`, `\u{1b}`, `\u{202e}`, `\u{200b}`),
/// so a refusal never carries a terminal's escape sequence or reordered text back to whoever
/// reads it.
pub fn push_shown(out: &mut String, c: char) {
    if is_shown_escaped(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Whether [`push_shown`] writes `c` as an escape: [`is_hidden_format`] or [`is_invisible`].
pub fn is_shown_escaped(c: char) -> bool {
    is_hidden_format(c) || is_invisible(c)
}

/// The first character free text over many lines (a license's notes, a webhook's description)
/// may not hold, if any: a control character other than a tab, a line feed or a carriage return
/// (ESC starts a terminal's escape sequences, NUL ends C strings), a line or paragraph separator
/// (U+2028/U+2029: write a line feed), or a bidirectional embedding, override or isolate
/// (U+202A–U+202E, U+2066–U+2069), which reorders how the text after it is drawn ("Trojan
/// Source", CVE-2021-42574; Unicode UAX #9). Marks that only set a direction (U+200E, U+200F,
/// U+061C), joiners and other invisible characters are left to the writer here: unlike a name,
/// notes are never matched against each other.
pub fn free_text_refusal(text: &str) -> Option<char> {
    text.chars().find(|c| {
        (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

/// How a refusal of free text ([`free_text_refusal`]) ends, after what the text is ("notes").
pub fn free_text_refused(c: char) -> String {
    format!(
        "may not contain control characters (tabs and line breaks are fine), line or paragraph separators (U+2028, U+2029), or bidirectional overrides, embeddings or isolates (U+202A–U+202E, U+2066–U+2069); found U+{:04X}",
        u32::from(c)
    )
}

/// Longest name a person gives (a license, a tenant, an API token, an assignee), in characters.
pub const MAX_NAME: usize = 200;

/// Whether `c` is a character a terminal or a line-based reader must not get raw: a control
/// character (C0, DEL and C1 — a newline, a tab, the ESC that starts a terminal's escape
/// sequences), a line or paragraph separator (U+2028, U+2029: a line break to many readers), or
/// one of Unicode's bidirectional formatting characters (U+061C, U+200E–U+200F, U+202A–U+202E,
/// U+2066–U+2069; UAX #9, <https://www.unicode.org/reports/tr9/>), which reorder the text shown
/// after them. The CLI shows these as escapes; a name may hold none of them ([`name`]).
pub fn is_hidden_format(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Whether `c` is drawn as nothing on its own and has no place in a name: a zero-width space
/// (U+200B), a word joiner, invisible operator or deprecated format character (U+2060–U+206F),
/// a zero-width no-break space or byte order mark (U+FEFF), a soft hyphen (U+00AD), the
/// combining grapheme joiner (U+034F), a Hangul filler (U+3164, U+FFA0), the Khmer inherent
/// vowels (U+17B4–U+17B5), the Mongolian vowel separator (U+180E), a musical format character
/// (U+1D173–U+1D17A), an interlinear annotation mark (U+FFF9–U+FFFB) or the language tag
/// (U+E0001). Such a character makes two names that read
/// alike differ (`eve@contoso.com` and `eve@contoso.com` with a U+200B after it).
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}' | '\u{200B}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}')
}

/// Whether `c` only joins or varies the characters around it: a zero-width joiner or non-joiner
/// (U+200D, U+200C: Persian and Indic words need them), a variation selector (U+FE00–U+FE0F, U+E0100–U+E01EF) or a tag character (U+E0020–U+E007F).
/// Emoji sequences are built with them (👩‍💻, ❤️, a subdivision's flag): a name may hold them, but
/// not be made of them alone, and an id ([`identifier`]) may not hold them.
pub fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0020}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Why a name was refused ([`name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRefusal {
    /// Empty once trimmed, or longer than [`MAX_NAME`] characters.
    Length,
    /// It holds this character ([`is_hidden_format`], [`is_invisible`]; in an id, [`is_joiner`]).
    Hidden(char),
    /// It is made of joiners alone ([`is_joiner`]): nothing of it is seen.
    Unseen,
}

impl std::fmt::Display for NameRefusal {
    /// The end of a sentence that starts with what the name is ("name", "tenant name"): "must be
    /// 1 to 200 characters", or "may not contain control, invisible or bidirectional formatting
    /// characters (… found U+001B)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameRefusal::Length => write!(f, "must be 1 to {MAX_NAME} characters"),
            NameRefusal::Hidden(c) => write!(
                f,
                "may not contain control, invisible or bidirectional formatting characters (such as a newline, a tab, ESC or a zero-width space; found U+{:04X})",
                u32::from(*c)
            ),
            NameRefusal::Unseen => write!(
                f,
                "must hold a character that is seen, not only joiners or variation selectors"
            ),
        }
    }
}

/// `text` as a name: trimmed, 1 to [`MAX_NAME`] characters (Unicode scalar values, not bytes),
/// none of them [`is_hidden_format`] or [`is_invisible`], and not [`is_joiner`]s alone. The one
/// rule for licenses, tenants, API tokens and assignees' names; each caller answers a refusal
/// with its own field's code.
pub fn name(text: &str) -> Result<&str, NameRefusal> {
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    if text.is_empty() || text.chars().count() > MAX_NAME {
        return Err(NameRefusal::Length);
    }
    if let Some(c) = text.chars().find(|c| is_shown_escaped(*c)) {
        return Err(NameRefusal::Hidden(c));
    }
    if text.chars().all(is_joiner) {
        return Err(NameRefusal::Unseen);
    }
    Ok(text)
}

/// `text` as an id a person gives (an assignee's, matched exactly in `/v1/assignees/{type}/{id}`
/// paths): a [`name`] with no [`is_joiner`] either — an id is typed and compared, never an emoji
/// sequence.
pub fn identifier(text: &str) -> Result<&str, NameRefusal> {
    let text = name(text)?;
    match text.chars().find(|c| is_joiner(*c)) {
        Some(c) => Err(NameRefusal::Hidden(c)),
        None => Ok(text),
    }
}

#[cfg(test)]
mod name_tests {
    use super::{MAX_NAME, NameRefusal, identifier, name};

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
            ("eve@contoso.com\u{200b}", '\u{200b}'),
            ("Lic\u{2028}X", '\u{2028}'),
            ("Lic\u{2029}X", '\u{2029}'),
            ("Vi\u{ad}sio", '\u{ad}'),
            ("Vi\u{2060}sio", '\u{2060}'),
            ("Vi\u{feff}sio", '\u{feff}'),
            ("Vi\u{fff9}sio", '\u{fff9}'),
            ("Vi\u{e0001}sio", '\u{e0001}'),
            ("a\u{3164}b", '\u{3164}'),
            ("a\u{ffa0}b", '\u{ffa0}'),
            ("a\u{180e}b", '\u{180e}'),
            ("a\u{206a}b", '\u{206a}'),
            ("a\u{34f}b", '\u{34f}'),
            ("a\u{17b4}b", '\u{17b4}'),
            ("a\u{1d173}b", '\u{1d173}'),
        ] {
            assert_eq!(name(bad), Err(NameRefusal::Hidden(c)), "{bad:?}");
        }
        // A byte order mark at either end is trimmed as whitespace is.
        assert_eq!(name("\u{feff}Visio\u{feff}"), Ok("Visio"));
        // Joiners and selectors alone are nothing seen; in an emoji sequence they are a name.
        for unseen in ["\u{200d}", "\u{fe0f}\u{200d}", "\u{e0067}\u{e007f}"] {
            assert_eq!(name(unseen), Err(NameRefusal::Unseen), "{unseen:?}");
        }
        for emoji in [
            "❤\u{fe0f} seats",
            "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f} team",
        ] {
            assert_eq!(name(emoji), Ok(emoji), "{emoji:?}");
        }
        // A zero-width non-joiner is part of Persian words; alone it is nothing seen.
        assert_eq!(name("می\u{200c}خواهم"), Ok("می\u{200c}خواهم"));
        assert_eq!(name("\u{200c}"), Err(NameRefusal::Unseen));
        assert_eq!(
            identifier("u\u{200c}1"),
            Err(NameRefusal::Hidden('\u{200c}'))
        );
        // What a refusal repeats shows hidden characters as escapes.
        assert_eq!(
            super::clip("a\u{1b}[31m\u{202e}b\u{200b}"),
            "a\\u{1b}[31m\\u{202e}b\\u{200b}"
        );
        // An id holds no joiner: it is typed and compared.
        assert_eq!(identifier("eve@contoso.com"), Ok("eve@contoso.com"));
        assert_eq!(
            identifier("eve\u{200d}@contoso.com"),
            Err(NameRefusal::Hidden('\u{200d}'))
        );
        assert_eq!(
            identifier("LT\u{fe0f}1"),
            Err(NameRefusal::Hidden('\u{fe0f}'))
        );
        assert!(
            NameRefusal::Hidden('\u{1b}')
                .to_string()
                .ends_with("U+001B)")
        );
    }
}
