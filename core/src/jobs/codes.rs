//! What each item and job error code means, in the words the Job Monitor and the CLI show.

/// The item codes licensor gives itself, beside the directory's refusals
/// ([`crate::directory::ItemCode`]): `drifted` (a verify read showed other licenses),
/// `changed_since` (an undo left a member changed after the job) and `cancelled` (the job was
/// cancelled before the member was worked).
const OWN_ITEM_CODES: [&str; 3] = ["drifted", "changed_since", "cancelled"];

/// Every code a job's item can carry (`job_items.error_code`): the directory's refusals, then
/// licensor's own. The item and change lists refuse a `code` filter outside them.
pub fn item_codes() -> impl Iterator<Item = &'static str> {
    crate::directory::ItemCode::ALL
        .into_iter()
        .map(crate::directory::ItemCode::as_str)
        .chain(OWN_ITEM_CODES)
}

/// A human explanation of `code`, with what to do about it.
pub fn explanation(code: &str) -> &'static str {
    match code {
        "count_violation" => {
            "no free units of the license were left; buy more licenses or free some up, then rerun"
        }
        "usage_location_missing" => {
            "the user has no usage location; pick a location when assigning, or set it on the user, then rerun"
        }
        "mutually_exclusive_violation" => {
            "the license conflicts with one the user already has (mutually exclusive service plans); remove the other license first"
        }
        "dependency_violation" => {
            "a service plan depends on another plan that is disabled or missing; enable the required plan"
        }
        "inherited_from_group" => {
            "the user gets this license from a group; change the group's licenses or membership instead"
        }
        "user_not_found" => "the user no longer exists in the directory",
        "sku_not_found" => "the tenant has no subscription for this license",
        "throttled" => {
            "the directory kept throttling requests (429) after every retry; rerun when the load is lower"
        }
        "directory_unavailable" => {
            "the directory kept failing (5xx or timeouts) after every retry; rerun later"
        }
        "cancelled" => "the job was cancelled before this member was worked on",
        "drifted" => {
            "after the write, the directory showed other licenses for the member (another administrator or group-based licensing changed them); check the member, then rerun"
        }
        "changed_since" => {
            "the member's licenses changed after the job, so the undo left them as they are"
        }
        "group_not_found" => {
            "a selected group does not exist in the directory (deleted or mistyped)"
        }
        "directory_credentials_rejected" => {
            "the directory refused licensor's app credentials; fix the tenant's client id and secret, then rerun"
        }
        "directory_not_configured" => {
            "the tenant has no directory connection; set the directory tenant id, client id and secret"
        }
        "export_location_unreachable" => {
            "the export location could not be reached (no such drive, folder or bucket, or it did not answer); fix the location, then rerun"
        }
        "export_location_denied" => {
            "the export location refused the file (no permission, or credentials missing or refused); grant access, then rerun"
        }
        "all_items_failed" => "every member failed; see the items for the reasons",
        _ => "the directory refused the change; see the detail",
    }
}

#[cfg(test)]
mod tests {
    use crate::directory::ItemCode;

    #[test]
    fn licensors_own_item_codes_are_explained() {
        for code in super::OWN_ITEM_CODES {
            assert_ne!(
                super::explanation(code),
                super::explanation("no_such_code"),
                "{code} is explained"
            );
        }
        assert_eq!(super::item_codes().count(), ItemCode::ALL.len() + 3);
    }

    #[test]
    fn every_item_code_is_explained() {
        for code in ItemCode::ALL {
            if code != ItemCode::Other {
                assert_ne!(
                    super::explanation(code.as_str()),
                    super::explanation("other"),
                    "{code}"
                );
            }
        }
    }
}
