//! The fixed notes licensor writes on members that succeeded or were skipped, each with a
//! stable code, so that the Job Monitor and other clients can show them in their own language
//! (the API answers an item's `note` as written and its `note_codes`).
//!
//! A note is written from these parts, joined by `"; "` (e.g. `verified; restored the licenses
//! held before the job`), or holds free text (SKU ids, group ids, the directory's own words):
//! only a note made of fixed parts alone has codes; any other is shown as written.

/// A read after the write showed the licenses written.
pub const VERIFIED: &str = "verified";
/// An assign or replace found the member holding every license to add already.
pub const ALREADY_HELD: &str = "the member already holds the licenses";
/// An undo found the member holding what it held before the undone job.
pub const ALREADY_RESTORED: &str = "the member already holds what it held before the job";
/// An undo wrote the member's licenses back to what they were before the undone job.
pub const RESTORED: &str = "restored the licenses held before the job";
/// An export's member: an export writes nothing to the directory.
pub const EXPORT_WRITES_NOTHING: &str = "nothing to write for an export";
/// A write whose answer was lost and that a read then showed made.
pub const SEEN_AFTER_LOST_ANSWER: &str =
    "the directory's answer was lost; a read right after showed the change made";
/// A member found in the desired state on a fresh read, after a write licensor may have made
/// without recording the answer (its holder stopped, or the answer was lost), when its state
/// before that write called for exactly that write.
pub const MADE_UNANSWERED: &str = "made by an earlier attempt whose answer was not recorded: a fresh read shows the change its state before that attempt called for";

/// Every fixed note with its code.
pub const FIXED: [(&str, &str); 7] = [
    ("verified", VERIFIED),
    ("already_held", ALREADY_HELD),
    ("already_restored", ALREADY_RESTORED),
    ("restored", RESTORED),
    ("export_writes_nothing", EXPORT_WRITES_NOTHING),
    ("seen_after_lost_answer", SEEN_AFTER_LOST_ANSWER),
    ("made_unanswered", MADE_UNANSWERED),
];

/// The codes of `note`'s parts, in order, when it is made of fixed notes alone (joined by
/// `"; "`, as the writers join them); empty when it holds anything else. Fixed notes may
/// themselves hold `"; "`, so the parts are matched whole from the start, longest first.
pub fn codes_of(note: &str) -> Vec<String> {
    let mut codes = Vec::new();
    let mut rest = note;
    while !rest.is_empty() {
        let Some((code, after)) = FIXED
            .iter()
            .filter_map(|(code, text)| {
                let after = rest.strip_prefix(text)?;
                (after.is_empty() || after.len() > 2 && after.starts_with("; "))
                    .then_some((*code, after))
            })
            .max_by_key(|(_, after)| std::cmp::Reverse(after.len()))
        else {
            return Vec::new();
        };
        codes.push(code.to_owned());
        rest = after.strip_prefix("; ").unwrap_or(after);
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_fixed_parts_have_their_codes() {
        assert_eq!(codes_of(VERIFIED), ["verified"]);
        assert_eq!(
            codes_of(&format!("{VERIFIED}; {RESTORED}")),
            ["verified", "restored"]
        );
        assert_eq!(
            codes_of(&format!("{SEEN_AFTER_LOST_ANSWER}; {ALREADY_HELD}")),
            ["seen_after_lost_answer", "already_held"]
        );
        assert_eq!(codes_of(MADE_UNANSWERED), ["made_unanswered"]);
        for (code, text) in FIXED {
            assert_eq!(codes_of(text), [code], "{text}");
        }
    }

    #[test]
    fn notes_with_free_text_have_none() {
        for note in [
            "",
            "verified; left in place, inherited from a group: x (from group y)",
            "already in the desired state: License already removed",
            "verifiedx",
            "verified;",
            "verified; ",
            "kept 1234: held before the job",
        ] {
            assert!(codes_of(note).is_empty(), "{note}");
        }
    }
}
