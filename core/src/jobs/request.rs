//! What a tenant admin asks for in `POST /v1/jobs`, and the rules it must satisfy before a job
//! is created.

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::JobKind;
use crate::error::StoreError;

/// Most groups one job may select.
pub const MAX_GROUPS: usize = 100;
/// Most licenses one job may add or remove.
pub const MAX_LICENSES: usize = 50;

/// A license to add, with the service plans to leave switched off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LicenseToAdd {
    pub sku_id: Uuid,
    #[serde(default)]
    pub disabled_plans: Vec<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryUnit {
    Days,
    Weeks,
    Months,
}

/// "License will expire in N days/weeks/months".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiresIn {
    pub value: u32,
    pub unit: ExpiryUnit,
}

impl ExpiresIn {
    /// When an assignment made at `from` is due for removal.
    pub fn due_from(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        let due = match self.unit {
            ExpiryUnit::Days => from.checked_add_signed(TimeDelta::days(self.value.into())),
            ExpiryUnit::Weeks => from.checked_add_signed(TimeDelta::weeks(self.value.into())),
            ExpiryUnit::Months => from.checked_add_months(Months::new(self.value)),
        };
        due.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The largest `value` for the unit: ten years (3,650 days, 520 weeks, 120 months).
    pub fn max_value(&self) -> u32 {
        match self.unit {
            ExpiryUnit::Days => 3650,
            ExpiryUnit::Weeks => 520,
            ExpiryUnit::Months => 120,
        }
    }
}

/// The kind with its article, for messages: "an assign", "a remove".
fn a_kind(kind: JobKind) -> String {
    let name = kind.as_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// A file format for exports and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Json,
    Xlsx,
}

impl FileFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv; charset=utf-8",
            FileFormat::Json => "application/json",
            FileFormat::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Xlsx => "xlsx",
        }
    }
}

impl std::str::FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(FileFormat::Csv),
            "json" => Ok(FileFormat::Json),
            "xlsx" => Ok(FileFormat::Xlsx),
            other => Err(format!("unknown format `{other}` (csv, json or xlsx)")),
        }
    }
}

/// Export Results: "a result format and an export location".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    pub format: FileFormat,
    /// Where the file goes; `download` (the default) keeps it for `GET /v1/jobs/{id}/export`.
    #[serde(default)]
    pub location: ExportLocation,
}

/// Where an export's file is delivered. The file is named `job-{id}-export.{csv|json|xlsx}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportLocation {
    /// Kept for download from licensor.
    #[default]
    Download,
    /// A folder of a SharePoint document library or OneDrive, uploaded through the directory
    /// with the tenant's own credentials.
    Sharepoint {
        /// The drive's id (`GET /sites/{site-id}/drive` or `/users/{id}/drive` in Graph).
        drive_id: String,
        /// The folder, from the drive's root: `/Reports/` (default `/`).
        #[serde(default = "root_folder")]
        folder_path: String,
    },
    /// An S3-compatible bucket. The credentials are read, when the file is delivered, from the
    /// environment variables named here (names only are stored; they must start with `AWS_` or
    /// `S3_`).
    S3 {
        bucket: String,
        /// Key prefix, e.g. `licensor/exports/` (default: none).
        #[serde(default)]
        prefix: String,
        /// Default `us-east-1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// An S3-compatible service's URL (`https://…`); default AWS.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        /// Default `AWS_ACCESS_KEY_ID`.
        #[serde(default = "access_key_env")]
        access_key_id_env: String,
        /// Default `AWS_SECRET_ACCESS_KEY`.
        #[serde(default = "secret_key_env")]
        secret_access_key_env: String,
    },
}

fn root_folder() -> String {
    "/".into()
}

fn access_key_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn secret_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

fn bad_location(detail: impl Into<String>) -> StoreError {
    StoreError::unacceptable("invalid_export_location", detail)
}

impl ExportLocation {
    /// Check and normalise: a drive id of URL-safe characters; a folder path of `/`-separated
    /// names without `..` or the characters SharePoint refuses (`" * : < > ? \ |`), always
    /// starting and ending with `/`; an S3 bucket name as AWS names them (3–63 of `a-z 0-9 . -`);
    /// a prefix without a leading `/`; an `http(s)` endpoint; environment variable names of
    /// `A-Z 0-9 _` starting with `AWS_` or `S3_` (so a request cannot make licensor send any
    /// other variable's value). Refusals are 422 `invalid_export_location`.
    pub fn validate(self) -> Result<ExportLocation, StoreError> {
        match self {
            ExportLocation::Download => Ok(ExportLocation::Download),
            ExportLocation::Sharepoint {
                drive_id,
                folder_path,
            } => {
                let drive_id = drive_id.trim().to_owned();
                if drive_id.is_empty()
                    || drive_id.len() > 200
                    || !drive_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "!-_.~".contains(c))
                {
                    return Err(bad_location(format!(
                        "`{}` is not a drive id",
                        clip(&drive_id)
                    )));
                }
                let mut folder = String::from("/");
                for segment in folder_path.split('/').map(str::trim) {
                    if segment.is_empty() {
                        continue;
                    }
                    if segment == "."
                        || segment == ".."
                        || segment
                            .chars()
                            .any(|c| c.is_control() || "\"*:<>?\\|#%".contains(c))
                    {
                        return Err(bad_location(format!(
                            "`{}` is not a folder name a drive accepts",
                            clip(segment)
                        )));
                    }
                    folder.push_str(segment);
                    folder.push('/');
                }
                if folder.len() > 400 {
                    return Err(bad_location(
                        "the folder path is longer than 400 characters",
                    ));
                }
                Ok(ExportLocation::Sharepoint {
                    drive_id,
                    folder_path: folder,
                })
            }
            ExportLocation::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                access_key_id_env,
                secret_access_key_env,
            } => {
                let bucket = bucket.trim().to_owned();
                let ok_bucket = (3..=63).contains(&bucket.len())
                    && bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
                    })
                    && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
                if !ok_bucket {
                    return Err(bad_location(format!(
                        "`{}` is not an S3 bucket name (3 to 63 of a-z, 0-9, `.` and `-`)",
                        clip(&bucket)
                    )));
                }
                let prefix = prefix.trim().trim_start_matches('/').to_owned();
                if prefix.len() > 512 || prefix.chars().any(char::is_control) {
                    return Err(bad_location(
                        "the key prefix must be at most 512 printable characters",
                    ));
                }
                let region = region
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty());
                if let Some(r) = &region
                    && (r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                {
                    return Err(bad_location(format!("`{}` is not a region", clip(r))));
                }
                let endpoint = endpoint
                    .map(|e| e.trim().trim_end_matches('/').to_owned())
                    .filter(|e| !e.is_empty());
                if let Some(e) = &endpoint {
                    let ok = reqwest::Url::parse(e).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https")
                            && u.host().is_some()
                            && u.username().is_empty()
                            && u.password().is_none()
                    });
                    if !ok {
                        return Err(bad_location(format!(
                            "`{}` is not an http(s) endpoint URL",
                            clip(e)
                        )));
                    }
                }
                for name in [&access_key_id_env, &secret_access_key_env] {
                    let ok = name.len() <= 128
                        && (name.starts_with("AWS_") || name.starts_with("S3_"))
                        && name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                    if !ok {
                        return Err(bad_location(format!(
                            "`{}` is not an environment variable name licensor reads credentials from (A-Z, 0-9 and _, starting with AWS_ or S3_)",
                            clip(name)
                        )));
                    }
                }
                Ok(ExportLocation::S3 {
                    bucket,
                    prefix,
                    region,
                    endpoint,
                    access_key_id_env,
                    secret_access_key_env,
                })
            }
        }
    }

    /// `download`, `sharepoint` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportLocation::Download => "download",
            ExportLocation::Sharepoint { .. } => "sharepoint",
            ExportLocation::S3 { .. } => "s3",
        }
    }
}

/// Try the job on its first members before the rest: once `members` members are worked (their
/// outcomes recorded), if the share of them that failed is above `max_failed_share` the job is
/// `paused` — nothing more is written until `POST /v1/jobs/{id}/resume` or cancel. No more than
/// `members` members are written before that decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// How many members are worked first (at least 1).
    #[schema(minimum = 1)]
    pub members: u32,
    /// The largest share of failed members among them (failed / worked, 0.0 to 1.0) with which
    /// the job goes on by itself.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub max_failed_share: f64,
}

// A validated canary's share is a finite number (JSON has no NaN).
impl Eq for Canary {}

impl Canary {
    /// The decision once `worked` members are worked, `failed` of them failed: `Some(true)` the
    /// job goes on, `Some(false)` it pauses, `None` the canary has not worked enough members
    /// yet.
    pub fn passes(&self, worked: i64, failed: i64) -> Option<bool> {
        if worked < i64::from(self.members) {
            return None;
        }
        let share = if worked == 0 {
            0.0
        } else {
            failed as f64 / worked as f64
        };
        Some(share <= self.max_failed_share)
    }
}

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `assign`, `remove`, `replace` or `export`.
    pub kind: JobKind,
    /// 1 to 100 directory group ids.
    #[schema(min_items = 1, max_items = 100)]
    pub groups: Vec<String>,
    /// Include members of nested groups.
    #[serde(default)]
    pub transitive: bool,
    /// Licenses to add (assign, replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 50)]
    pub add_licenses: Vec<LicenseToAdd>,
    /// SKU ids to remove (remove, replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 50)]
    pub remove_licenses: Vec<Uuid>,
    /// Replace: swap every license the member holds directly for `add_licenses`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_all: bool,
    /// ISO 3166-1 alpha-2 country set on members without a usage location before assigning;
    /// `null` = no change.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub usage_location: Option<String>,
    /// Temporary assignment: removed automatically when due (assign only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<ExpiresIn>,
    /// Export only: the file format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportOptions>,
    /// Re-read every written member after the job's writes and record `verified`, or fail it
    /// with `drifted` when the directory shows something else. Default: on for reruns, expiry
    /// removals and undo jobs, off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// Set by licensor on an undo job (`POST /v1/jobs/{id}/undo`): the job it undoes. Not
    /// accepted in a submitted request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub undo_of: Option<Uuid>,
    /// Preview: read the groups and decide every member from the directory's state, writing
    /// nothing; the job ends `previewed` with each member's predicted outcome and a summary,
    /// and `POST /v1/jobs/{id}/launch` runs it. Not for export jobs (422
    /// `preview_not_supported`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
    /// Try the job on its first `members` members: above `max_failed_share` failed among them,
    /// the job pauses (`paused`) until it is resumed or cancelled. Assign, remove and replace
    /// only (422 `canary_not_supported` for an export); `members` at least 1 and
    /// `max_failed_share` within 0.0..=1.0, else 422 `invalid_canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::unacceptable(code, detail)
}

/// The selected groups checked (1..=[`MAX_GROUPS`] directory group ids, each a GUID) and
/// normalised: hyphenated lower case, duplicates dropped, order kept. A 422 refusal
/// (`groups_required`, `too_many_groups`, `invalid_group_id`) otherwise.
pub fn validate_groups(given: &[String]) -> Result<Vec<String>, StoreError> {
    if given.is_empty() {
        return Err(refuse("groups_required", "select at least one group"));
    }
    if given.len() > MAX_GROUPS {
        return Err(refuse(
            "too_many_groups",
            format!(
                "a job selects at most {MAX_GROUPS} groups; {} were given",
                given.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut groups = Vec::with_capacity(given.len());
    for g in given {
        let g = g.trim();
        let Ok(id) = Uuid::try_parse(g) else {
            return Err(refuse(
                "invalid_group_id",
                format!("`{}` is not a directory group id (a GUID)", clip(g)),
            ));
        };
        if seen.insert(id) {
            groups.push(id.hyphenated().to_string());
        }
    }
    Ok(groups)
}

impl JobRequest {
    /// Check the request against the rules of its kind and normalise it (groups de-duplicated,
    /// usage location upper-cased). Returns a 422 refusal naming the field on failure.
    pub fn validate(mut self) -> Result<JobRequest, StoreError> {
        if self.undo_of.is_some() {
            return Err(refuse(
                "field_not_allowed",
                "`undo_of` is set by licensor; undo a job with POST /v1/jobs/{id}/undo",
            ));
        }
        if self.preview && self.kind == JobKind::Export {
            return Err(refuse(
                "preview_not_supported",
                "an export writes nothing to the directory, so there is nothing to preview; submit it without `preview`",
            ));
        }
        if let Some(canary) = &self.canary {
            if self.kind == JobKind::Export {
                return Err(refuse(
                    "canary_not_supported",
                    "an export writes nothing to the directory, so there is nothing to try first; submit it without `canary`",
                ));
            }
            if canary.members == 0 {
                return Err(refuse(
                    "invalid_canary",
                    "`canary.members` must be at least 1",
                ));
            }
            if !(0.0..=1.0).contains(&canary.max_failed_share) {
                return Err(refuse(
                    "invalid_canary",
                    "`canary.max_failed_share` must be between 0.0 and 1.0",
                ));
            }
        }
        self.groups = validate_groups(&self.groups)?;

        let kind = self.kind;
        let not_allowed = |field: &str| {
            refuse(
                "field_not_allowed",
                format!("`{field}` cannot be used with {} job", a_kind(kind)),
            )
        };
        let has_add = !self.add_licenses.is_empty();
        let has_remove = !self.remove_licenses.is_empty();
        match kind {
            JobKind::Assign => {
                if !has_add {
                    return Err(refuse(
                        "licenses_required",
                        "an assign job needs at least one license in `add_licenses`",
                    ));
                }
                if has_remove {
                    return Err(not_allowed("remove_licenses"));
                }
                if self.replace_all {
                    return Err(not_allowed("replace_all"));
                }
            }
            JobKind::Remove => {
                if !has_remove {
                    return Err(refuse(
                        "licenses_required",
                        "a remove job needs at least one SKU id in `remove_licenses`",
                    ));
                }
                if has_add {
                    return Err(not_allowed("add_licenses"));
                }
                if self.replace_all {
                    return Err(not_allowed("replace_all"));
                }
                if self.usage_location.is_some() {
                    return Err(not_allowed("usage_location"));
                }
            }
            JobKind::Replace => {
                if !has_add {
                    return Err(refuse(
                        "licenses_required",
                        "a replace job needs the licenses to add in `add_licenses`",
                    ));
                }
                if self.replace_all && has_remove {
                    return Err(refuse(
                        "field_not_allowed",
                        "give either `remove_licenses` or `replace_all`, not both",
                    ));
                }
                if !self.replace_all && !has_remove {
                    return Err(refuse(
                        "licenses_required",
                        "a replace job needs `remove_licenses`, or `replace_all: true`",
                    ));
                }
            }
            JobKind::Export => {
                if has_add {
                    return Err(not_allowed("add_licenses"));
                }
                if has_remove {
                    return Err(not_allowed("remove_licenses"));
                }
                if self.replace_all {
                    return Err(not_allowed("replace_all"));
                }
                if self.usage_location.is_some() {
                    return Err(not_allowed("usage_location"));
                }
                match self.export.take() {
                    None => {
                        return Err(refuse(
                            "export_format_required",
                            "an export job needs `export: {\"format\": \"csv\" | \"json\" | \"xlsx\"}`",
                        ));
                    }
                    Some(e) => {
                        self.export = Some(ExportOptions {
                            format: e.format,
                            location: e.location.validate()?,
                        })
                    }
                }
            }
        }
        if kind != JobKind::Export && self.export.is_some() {
            return Err(not_allowed("export"));
        }
        if let Some(expiry) = &self.expires_in {
            if kind != JobKind::Assign {
                return Err(refuse(
                    "expiry_not_allowed",
                    format!(
                        "`expires_in` makes an assignment temporary; it cannot be used with {} job",
                        a_kind(kind)
                    ),
                ));
            }
            if expiry.value == 0 || expiry.value > expiry.max_value() {
                return Err(refuse(
                    "invalid_expiry",
                    format!(
                        "`expires_in.value` must be between 1 and {}",
                        expiry.max_value()
                    ),
                ));
            }
        }
        if self.add_licenses.len() > MAX_LICENSES || self.remove_licenses.len() > MAX_LICENSES {
            return Err(refuse(
                "too_many_licenses",
                format!("a job adds or removes at most {MAX_LICENSES} licenses"),
            ));
        }
        let mut add_ids = std::collections::HashSet::new();
        for l in &self.add_licenses {
            if !add_ids.insert(l.sku_id) {
                return Err(refuse(
                    "duplicate_license",
                    format!("SKU {} is listed twice in `add_licenses`", l.sku_id),
                ));
            }
            if l.disabled_plans.len() > 200 {
                return Err(refuse(
                    "too_many_licenses",
                    "at most 200 disabled plans per license",
                ));
            }
        }
        let mut remove_ids = std::collections::HashSet::new();
        for id in &self.remove_licenses {
            if !remove_ids.insert(*id) {
                return Err(refuse(
                    "duplicate_license",
                    format!("SKU {id} is listed twice in `remove_licenses`"),
                ));
            }
            if add_ids.contains(id) {
                return Err(refuse(
                    "duplicate_license",
                    format!("SKU {id} cannot be both added and removed"),
                ));
            }
        }
        if let Some(loc) = &self.usage_location {
            let code = loc.trim().to_ascii_uppercase();
            if code.len() != 2 || celes::Country::from_alpha2(&code).is_err() {
                return Err(refuse(
                    "invalid_usage_location",
                    format!(
                        "`{}` is not an ISO 3166-1 alpha-2 country code such as SE, US or GB",
                        clip(loc)
                    ),
                ));
            }
            self.usage_location = Some(code);
        }
        Ok(self)
    }

    /// Every SKU the request names (to add or to remove).
    pub fn sku_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.add_licenses
            .iter()
            .map(|l| l.sku_id)
            .chain(self.remove_licenses.iter().copied())
    }

    /// The checks of the request as a whole against the tenant's subscribed SKUs, made before a
    /// job is created (the API, and through it the CLI and the Job Monitor): every SKU named
    /// exists, and every disabled plan is a service plan of its own SKU. (The same SKU in both
    /// `add_licenses` and `remove_licenses` is refused by [`JobRequest::validate`].) A 422
    /// refusal names the SKU and the plan.
    pub fn check_skus(&self, skus: &[crate::directory::Sku]) -> Result<(), StoreError> {
        for sku_id in self.sku_ids() {
            if !skus.iter().any(|s| s.sku_id == sku_id) {
                return Err(refuse(
                    "unknown_sku",
                    format!("the tenant has no subscription with SKU id {sku_id}"),
                ));
            }
        }
        for add in &self.add_licenses {
            let Some(sku) = skus.iter().find(|s| s.sku_id == add.sku_id) else {
                continue;
            };
            for plan in &add.disabled_plans {
                if !sku.service_plans.iter().any(|p| p.service_plan_id == *plan) {
                    let owner = skus
                        .iter()
                        .find(|s| s.service_plans.iter().any(|p| p.service_plan_id == *plan))
                        .map(|s| format!(" (it is a plan of {})", s.sku_part_number))
                        .unwrap_or_default();
                    return Err(refuse(
                        "plan_not_in_sku",
                        format!(
                            "service plan {plan} is not part of {} ({}){owner}; only a SKU's own plans can be disabled",
                            sku.sku_part_number, sku.sku_id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> Result<JobRequest, String> {
        let r: JobRequest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        r.validate().map_err(|e| match e {
            StoreError::Refused { code, .. } => code.to_owned(),
            other => other.to_string(),
        })
    }

    const G: &str = "8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01";
    const S: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";

    #[test]
    fn a_canary_is_checked_and_decides_on_its_members() {
        let ok = req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":S}],"canary":{"members":50,"max_failed_share":0.1}})).unwrap();
        let canary = ok.canary.unwrap();
        assert_eq!(canary.members, 50);
        for (bad, code) in [
            (
                json!({"members":0,"max_failed_share":0.1}),
                "invalid_canary",
            ),
            (
                json!({"members":5,"max_failed_share":2.0}),
                "invalid_canary",
            ),
            (
                json!({"members":5,"max_failed_share":-0.1}),
                "invalid_canary",
            ),
        ] {
            assert_eq!(
                req(json!({"kind":"remove","groups":[G],"remove_licenses":[S],"canary":bad}))
                    .unwrap_err(),
                code
            );
        }
        assert_eq!(
            req(json!({"kind":"export","groups":[G],"export":{"format":"csv"},"canary":{"members":5,"max_failed_share":0.5}}))
                .unwrap_err(),
            "canary_not_supported"
        );
        assert!(
            req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":S}],"canary":{"members":5}}))
                .is_err(),
            "both fields are required"
        );
        // Undecided until its members are worked; then above the bound pauses, at it goes on.
        assert_eq!(canary.passes(49, 40), None);
        assert_eq!(canary.passes(50, 5), Some(true), "10% is within the bound");
        assert_eq!(canary.passes(50, 6), Some(false), "12% is above it");
        assert_eq!(canary.passes(50, 0), Some(true));
        let strict = Canary {
            members: 1,
            max_failed_share: 0.0,
        };
        assert_eq!(strict.passes(1, 1), Some(false));
        assert_eq!(strict.passes(1, 0), Some(true));
        let lenient = Canary {
            members: 3,
            max_failed_share: 1.0,
        };
        assert_eq!(
            lenient.passes(3, 3),
            Some(true),
            "a share of 1.0 never pauses"
        );
    }

    #[test]
    fn each_kind_has_its_rules() {
        let ok = req(json!({"kind":"assign","groups":[G, G.to_uppercase()],"add_licenses":[{"sku_id":S}],"usage_location":"se"})).unwrap();
        assert_eq!(ok.groups.len(), 1, "duplicates collapse");
        assert_eq!(ok.usage_location.as_deref(), Some("SE"));
        assert_eq!(
            req(json!({"kind":"assign","groups":[],"add_licenses":[{"sku_id":S}]})).unwrap_err(),
            "groups_required"
        );
        let many: Vec<String> = (0..101)
            .map(|i| format!("8d0c7a9a-7c5e-4b7e-9a47-{i:012}"))
            .collect();
        assert_eq!(
            req(json!({"kind":"assign","groups":many,"add_licenses":[{"sku_id":S}]})).unwrap_err(),
            "too_many_groups"
        );
        assert_eq!(
            req(json!({"kind":"assign","groups":["sales"],"add_licenses":[{"sku_id":S}]}))
                .unwrap_err(),
            "invalid_group_id"
        );
        assert_eq!(
            req(json!({"kind":"assign","groups":[G]})).unwrap_err(),
            "licenses_required"
        );
        assert_eq!(
            req(json!({"kind":"remove","groups":[G],"remove_licenses":[S],"expires_in":{"value":3,"unit":"days"}})).unwrap_err(),
            "expiry_not_allowed"
        );
        assert_eq!(
            req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":S}],"usage_location":"XX"})).unwrap_err(),
            "invalid_usage_location"
        );
        assert_eq!(
            req(json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":S}]})).unwrap_err(),
            "licenses_required"
        );
        assert!(req(json!({"kind":"replace","groups":[G],"add_licenses":[{"sku_id":S}],"replace_all":true})).is_ok());
        assert_eq!(
            req(json!({"kind":"export","groups":[G]})).unwrap_err(),
            "export_format_required"
        );
        assert!(req(json!({"kind":"export","groups":[G],"export":{"format":"xlsx"}})).is_ok());
        let ok = req(json!({"kind":"export","groups":[G],"export":{"format":"csv","location":{"type":"sharepoint","drive_id":"b!abc","folder_path":"Reports//2026"}}})).unwrap();
        assert_eq!(
            ok.export.unwrap().location,
            ExportLocation::Sharepoint {
                drive_id: "b!abc".into(),
                folder_path: "/Reports/2026/".into()
            }
        );
        for bad in [
            json!({"type":"sharepoint","drive_id":"a/b"}),
            json!({"type":"sharepoint","drive_id":"d","folder_path":"/../x"}),
            json!({"type":"s3","bucket":"No_Such"}),
            json!({"type":"s3","bucket":"reports","access_key_id_env":"LICENSOR_SECRET_KEY"}),
            json!({"type":"s3","bucket":"reports","endpoint":"ftp://x"}),
        ] {
            assert_eq!(
                req(json!({"kind":"export","groups":[G],"export":{"format":"csv","location":bad}}))
                    .unwrap_err(),
                "invalid_export_location",
                "{bad}"
            );
        }
        assert!(
            req(json!({"kind":"export","groups":[G],"export":{"format":"csv","location":{"type":"s3","bucket":"b","secret":"x"}}}))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            req(json!({"kind":"grant","groups":[G]}))
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(
            req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":S}],"colour":1}))
                .unwrap_err()
                .contains("unknown field")
        );
        assert_eq!(
            req(json!({"kind":"assign","groups":[G],"add_licenses":[{"sku_id":S}],"expires_in":{"value":0,"unit":"days"}})).unwrap_err(),
            "invalid_expiry"
        );
    }

    #[test]
    fn expiry_adds_calendar_units() {
        let t: DateTime<Utc> = "2026-01-31T10:00:00Z".parse().unwrap();
        let m = ExpiresIn {
            value: 1,
            unit: ExpiryUnit::Months,
        };
        assert_eq!(m.due_from(t).to_rfc3339(), "2026-02-28T10:00:00+00:00");
        let w = ExpiresIn {
            value: 2,
            unit: ExpiryUnit::Weeks,
        };
        assert_eq!(w.due_from(t).to_rfc3339(), "2026-02-14T10:00:00+00:00");
    }
}
