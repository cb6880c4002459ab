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
    #[schema(value_type = Uuid)]
    pub sku_id: SkuId,
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
                        crate::domain::clip(&drive_id)
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
                            crate::domain::clip(segment)
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
                        crate::domain::clip(&bucket)
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
                    return Err(bad_location(format!(
                        "`{}` is not a region",
                        crate::domain::clip(r)
                    )));
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
                            crate::domain::clip(e)
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
                            crate::domain::clip(name)
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

/// Try the job on its first members before the rest: once `members` members are written (their
/// writes succeeded or failed; members found already in the desired state are skipped and do not
/// count), if the share of them that failed is above `max_failed_share` the job is `paused` —
/// nothing more is written until `POST /v1/jobs/{id}/resume` or cancel. No more than `members`
/// members are written before that decision; a job whose members are all worked before then
/// ends as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// How many members are written first (at least 1).
    #[schema(minimum = 1)]
    pub members: u32,
    /// The largest share of failed members among them (failed / written, 0.0 to 1.0) with which
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

/// The read side of a newtype over a checked `String` (`$name(String)`): `as_str`, `Deref` to
/// `str`, `AsRef<str>` and `Display`, all giving the checked text. Its only constructor stays its
/// own `parse`.
macro_rules! text_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn refuse(code: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::unacceptable(code, detail)
}

/// A directory group's id as a job holds it: a GUID (Graph's `group.id`) in lower-case
/// hyphenated form, e.g. `8d0c7a9a-7c5e-4b7e-9a47-3f3c1f0a0b01`. Only made by
/// [`GroupId::parse`], so a job's groups compare and search as plain text (the jobs list finds
/// a job by group id in its stored request).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupId(String);

impl GroupId {
    /// A GUID in any of its spellings (upper or lower case, braces, no hyphens), surrounding
    /// white space ignored; otherwise 422 `invalid_group_id`.
    pub fn parse(given: &str) -> Result<GroupId, StoreError> {
        let given = given.trim();
        match Uuid::try_parse(given) {
            Ok(id) => Ok(GroupId(id.hyphenated().to_string())),
            Err(_) => Err(refuse(
                "invalid_group_id",
                format!(
                    "`{}` is not a directory group id (a GUID)",
                    crate::domain::clip(given)
                ),
            )),
        }
    }
}

text_newtype!(GroupId);

/// A SKU's id: a GUID (Graph's `subscribedSku.skuId`, also `assignedLicense.skuId`). Any
/// UUID is one; the type keeps SKU ids apart from service plan and other ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SkuId(Uuid);

impl SkuId {
    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for SkuId {
    fn from(id: Uuid) -> SkuId {
        SkuId(id)
    }
}

impl std::fmt::Display for SkuId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A user's usage location as a job sets it: two upper-case ASCII letters naming a country,
/// e.g. `SE`. Graph's `user.usageLocation` is "a two-letter country code (ISO standard 3166)";
/// only codes ISO 3166-1 alpha-2 assigns are accepted. Only made by [`UsageLocation::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UsageLocation(String);

impl UsageLocation {
    /// A country's ISO 3166-1 alpha-2 code in either case, surrounding white space ignored;
    /// otherwise 422 `invalid_usage_location`.
    pub fn parse(given: &str) -> Result<UsageLocation, StoreError> {
        let code = given.trim().to_ascii_uppercase();
        if code.len() != 2
            || !code.bytes().all(|b| b.is_ascii_uppercase())
            || celes::Country::from_alpha2(&code).is_err()
        {
            return Err(refuse(
                "invalid_usage_location",
                format!(
                    "`{}` is not an ISO 3166-1 alpha-2 country code such as SE, US or GB",
                    crate::domain::clip(given)
                ),
            ));
        }
        Ok(UsageLocation(code))
    }
}

text_newtype!(UsageLocation);

/// A temporary assignment's lifetime as a parsed request holds it: an [`ExpiresIn`] whose
/// `value` is 1 to [`ExpiresIn::max_value`] for its unit (at most ten years). Only made by
/// [`Expiry::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(ExpiresIn);

impl Expiry {
    /// `expires_in` checked; otherwise 422 `invalid_expiry`.
    pub fn new(expires_in: ExpiresIn) -> Result<Expiry, StoreError> {
        if expires_in.value == 0 || expires_in.value > expires_in.max_value() {
            return Err(refuse(
                "invalid_expiry",
                format!(
                    "`expires_in.value` must be between 1 and {}",
                    expires_in.max_value()
                ),
            ));
        }
        Ok(Expiry(expires_in))
    }

    pub fn get(self) -> ExpiresIn {
        self.0
    }

    /// When an assignment made at `from` is due for removal.
    pub fn due_from(self, from: DateTime<Utc>) -> DateTime<Utc> {
        self.0.due_from(from)
    }
}

/// The selected groups checked (1..=[`MAX_GROUPS`] directory group ids, each a GUID) and
/// normalised: hyphenated lower case, duplicates dropped, order kept. A 422 refusal
/// (`groups_required`, `too_many_groups`, `invalid_group_id`) otherwise.
pub fn parse_groups(given: &[String]) -> Result<Vec<GroupId>, StoreError> {
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
    let mut groups: Vec<GroupId> = Vec::with_capacity(given.len());
    for g in given {
        let id = GroupId::parse(g)?;
        if !groups.contains(&id) {
            groups.push(id);
        }
    }
    Ok(groups)
}

/// What a job does, by kind, with only the fields its kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    /// Give members `add`; set `usage_location` on members without one first; with
    /// `expires_in`, remove what was given when due.
    Assign {
        add: Vec<LicenseToAdd>,
        usage_location: Option<UsageLocation>,
        expires_in: Option<Expiry>,
    },
    /// Take `remove` from members.
    Remove { remove: Vec<SkuId> },
    /// Take `remove` (with `replace_all`: every license held directly but those in `add`) and
    /// give `add`, in one call per member.
    Replace {
        add: Vec<LicenseToAdd>,
        remove: Vec<SkuId>,
        replace_all: bool,
        usage_location: Option<UsageLocation>,
    },
    /// One row per member × license into a file.
    Export { export: ExportOptions },
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Assign { .. } => JobKind::Assign,
            JobSpec::Remove { .. } => JobKind::Remove,
            JobSpec::Replace { .. } => JobKind::Replace,
            JobSpec::Export { .. } => JobKind::Export,
        }
    }
}

/// A job's request once parsed ([`JobRequest::parse`] for a submitted one, or read back from
/// storage): what holds one never checks it again. It is stored, and answered under a job's
/// `request`, as the [`JobRequest`] it came from, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "JobRequest", try_from = "JobRequest")]
pub struct ParsedRequest {
    /// Distinct, in the order given.
    pub groups: Vec<GroupId>,
    pub transitive: bool,
    pub spec: JobSpec,
    pub verify: Option<bool>,
    pub undo_of: Option<Uuid>,
    pub preview: bool,
    pub canary: Option<Canary>,
}

impl ParsedRequest {
    pub fn kind(&self) -> JobKind {
        self.spec.kind()
    }

    /// The licenses to add (assign, replace; none for the others).
    pub fn add_licenses(&self) -> &[LicenseToAdd] {
        match &self.spec {
            JobSpec::Assign { add, .. } | JobSpec::Replace { add, .. } => add,
            JobSpec::Remove { .. } | JobSpec::Export { .. } => &[],
        }
    }

    /// The SKUs to remove by name (remove, replace; none for the others).
    pub fn remove_licenses(&self) -> &[SkuId] {
        match &self.spec {
            JobSpec::Remove { remove } | JobSpec::Replace { remove, .. } => remove,
            JobSpec::Assign { .. } | JobSpec::Export { .. } => &[],
        }
    }

    /// The usage location set on members without one before they are given a license.
    pub fn usage_location(&self) -> Option<&UsageLocation> {
        match &self.spec {
            JobSpec::Assign { usage_location, .. } | JobSpec::Replace { usage_location, .. } => {
                usage_location.as_ref()
            }
            JobSpec::Remove { .. } | JobSpec::Export { .. } => None,
        }
    }

    /// A temporary assign's lifetime.
    pub fn expires_in(&self) -> Option<Expiry> {
        match &self.spec {
            JobSpec::Assign { expires_in, .. } => *expires_in,
            _ => None,
        }
    }

    /// Every SKU the request names (to add or to remove).
    pub fn sku_ids(&self) -> impl Iterator<Item = SkuId> + '_ {
        self.add_licenses()
            .iter()
            .map(|l| l.sku_id)
            .chain(self.remove_licenses().iter().copied())
    }

    /// The checks of the request as a whole against the tenant's subscribed SKUs, made before a
    /// job is created (the API, and through it the CLI and the Job Monitor): every SKU named
    /// exists, and every disabled plan is a service plan of its own SKU. (The same SKU in both
    /// `add_licenses` and `remove_licenses` is refused by [`JobRequest::parse`].) A 422
    /// refusal names the SKU and the plan.
    pub fn check_skus(&self, skus: &[crate::directory::Sku]) -> Result<(), StoreError> {
        for sku_id in self.sku_ids() {
            if !skus.iter().any(|s| s.sku_id == sku_id.uuid()) {
                return Err(refuse(
                    "unknown_sku",
                    format!("the tenant has no subscription with SKU id {sku_id}"),
                ));
            }
        }
        for add in self.add_licenses() {
            let Some(sku) = skus.iter().find(|s| s.sku_id == add.sku_id.uuid()) else {
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

impl From<ParsedRequest> for JobRequest {
    fn from(p: ParsedRequest) -> JobRequest {
        let mut req = JobRequest {
            kind: p.spec.kind(),
            groups: p.groups.into_iter().map(|g| g.0).collect(),
            transitive: p.transitive,
            add_licenses: Vec::new(),
            remove_licenses: Vec::new(),
            replace_all: false,
            usage_location: None,
            expires_in: None,
            export: None,
            verify: p.verify,
            undo_of: p.undo_of,
            preview: p.preview,
            canary: p.canary,
        };
        match p.spec {
            JobSpec::Assign {
                add,
                usage_location,
                expires_in,
            } => {
                req.add_licenses = add;
                req.usage_location = usage_location.map(|l| l.0);
                req.expires_in = expires_in.map(Expiry::get);
            }
            JobSpec::Remove { remove } => {
                req.remove_licenses = remove.into_iter().map(SkuId::uuid).collect();
            }
            JobSpec::Replace {
                add,
                remove,
                replace_all,
                usage_location,
            } => {
                req.add_licenses = add;
                req.remove_licenses = remove.into_iter().map(SkuId::uuid).collect();
                req.replace_all = replace_all;
                req.usage_location = usage_location.map(|l| l.0);
            }
            JobSpec::Export { export } => req.export = Some(export),
        }
        req
    }
}

/// A stored request read back: the shape of its kind (which fields it has, group ids, usage
/// location, expiry, export location). What only a submission must satisfy (no `undo_of`,
/// limits, licenses given, no duplicates) is not asked again: licensor's own jobs (undo,
/// expiry removals) are made without it.
impl TryFrom<JobRequest> for ParsedRequest {
    type Error = StoreError;

    fn try_from(req: JobRequest) -> Result<ParsedRequest, StoreError> {
        req.into_parsed(false)
    }
}

/// A submission's licenses: at most [`MAX_LICENSES`] to add and to remove, at most 200
/// disabled plans each, no SKU twice (nor both added and removed).
fn check_licenses(add: &[LicenseToAdd], remove: &[Uuid]) -> Result<(), StoreError> {
    if add.len() > MAX_LICENSES || remove.len() > MAX_LICENSES {
        return Err(refuse(
            "too_many_licenses",
            format!("a job adds or removes at most {MAX_LICENSES} licenses"),
        ));
    }
    let mut add_ids = std::collections::HashSet::new();
    for l in add {
        if !add_ids.insert(l.sku_id.uuid()) {
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
    for id in remove {
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
    Ok(())
}

/// Each license's disabled plans once, in the order first given: a plan named twice is switched
/// off once, so the stored request, its fingerprint and Graph's `assignLicense` list it once.
fn distinct_plans(mut add: Vec<LicenseToAdd>) -> Vec<LicenseToAdd> {
    for l in &mut add {
        let mut seen = std::collections::HashSet::with_capacity(l.disabled_plans.len());
        l.disabled_plans.retain(|p| seen.insert(*p));
    }
    add
}

impl JobRequest {
    /// Check a submitted request against the rules of its kind and parse it into its
    /// [`JobSpec`] (groups and each license's disabled plans de-duplicated, usage location
    /// upper-cased). Returns a 422 refusal
    /// naming the field on failure.
    pub fn parse(self) -> Result<ParsedRequest, StoreError> {
        self.into_parsed(true)
    }

    /// `submitted`: also the rules only a submission must satisfy.
    fn into_parsed(self, submitted: bool) -> Result<ParsedRequest, StoreError> {
        let JobRequest {
            kind,
            groups,
            transitive,
            add_licenses,
            remove_licenses,
            replace_all,
            usage_location,
            expires_in,
            export,
            verify,
            undo_of,
            preview,
            canary,
        } = self;
        let add_licenses = distinct_plans(add_licenses);
        if submitted {
            if undo_of.is_some() {
                return Err(refuse(
                    "field_not_allowed",
                    "`undo_of` is set by licensor; undo a job with POST /v1/jobs/{id}/undo",
                ));
            }
            if preview && kind == JobKind::Export {
                return Err(refuse(
                    "preview_not_supported",
                    "an export writes nothing to the directory, so there is nothing to preview; submit it without `preview`",
                ));
            }
            if let Some(canary) = &canary {
                if kind == JobKind::Export {
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
        }
        let groups = if submitted {
            parse_groups(&groups)?
        } else {
            groups
                .iter()
                .map(|g| GroupId::parse(g))
                .collect::<Result<_, _>>()?
        };

        let not_allowed_text =
            |field: &str| format!("`{field}` cannot be used with {} job", a_kind(kind));
        let not_allowed = |field: &str| refuse("field_not_allowed", not_allowed_text(field));
        let has_add = !add_licenses.is_empty();
        let has_remove = !remove_licenses.is_empty();
        let has_export = export.is_some();
        // The fields a kind has no use for, in the order they are checked.
        let given = [
            ("add_licenses", has_add),
            ("remove_licenses", has_remove),
            ("replace_all", replace_all),
            ("usage_location", usage_location.is_some()),
        ];
        let unused: &[&str] = match kind {
            JobKind::Assign => &["remove_licenses", "replace_all"],
            JobKind::Remove => &["add_licenses", "replace_all", "usage_location"],
            JobKind::Replace => &[],
            JobKind::Export => &[
                "add_licenses",
                "remove_licenses",
                "replace_all",
                "usage_location",
            ],
        };
        // A submitted job names the licenses its kind works on: checked first.
        let missing = match kind {
            JobKind::Assign if !has_add => {
                Some("an assign job needs at least one license in `add_licenses`")
            }
            JobKind::Remove if !has_remove => {
                Some("a remove job needs at least one SKU id in `remove_licenses`")
            }
            JobKind::Replace if !has_add => {
                Some("a replace job needs the licenses to add in `add_licenses`")
            }
            _ => None,
        };
        // The first field given that the kind has no use for.
        let unwanted = given
            .iter()
            .find(|(field, there)| *there && unused.contains(field))
            .map(|(field, _)| *field);
        if let Some(detail) = missing.filter(|_| submitted) {
            // Named too when given (a remove sent with `add_licenses`): the request mixed up the
            // kinds' fields, and fixing only the missing one would be refused next.
            let detail = match unwanted {
                Some(field) => format!("{detail}; {}", not_allowed_text(field)),
                None => detail.to_string(),
            };
            return Err(refuse("licenses_required", detail));
        }
        if let Some(field) = unwanted {
            return Err(not_allowed(field));
        }
        // The rules every kind shares, after its own: its expiry and usage location parsed.
        let shared = || -> Result<(Option<Expiry>, Option<UsageLocation>), StoreError> {
            if kind != JobKind::Export && has_export {
                return Err(not_allowed("export"));
            }
            let expiry = match expires_in {
                None => None,
                Some(_) if kind != JobKind::Assign => {
                    return Err(refuse(
                        "expiry_not_allowed",
                        format!(
                            "`expires_in` makes an assignment temporary; it cannot be used with {} job",
                            a_kind(kind)
                        ),
                    ));
                }
                Some(e) => Some(Expiry::new(e)?),
            };
            if submitted {
                check_licenses(&add_licenses, &remove_licenses)?;
            }
            let location = usage_location
                .as_deref()
                .map(UsageLocation::parse)
                .transpose()?;
            Ok((expiry, location))
        };
        let spec = match kind {
            JobKind::Assign => {
                let (expires_in, usage_location) = shared()?;
                JobSpec::Assign {
                    add: add_licenses,
                    usage_location,
                    expires_in,
                }
            }
            JobKind::Remove => {
                shared()?;
                JobSpec::Remove {
                    remove: remove_licenses.into_iter().map(SkuId).collect(),
                }
            }
            JobKind::Replace => {
                if replace_all && has_remove {
                    return Err(refuse(
                        "field_not_allowed",
                        "give either `remove_licenses` or `replace_all`, not both",
                    ));
                }
                if submitted && !replace_all && !has_remove {
                    return Err(refuse(
                        "licenses_required",
                        "a replace job needs `remove_licenses`, or `replace_all: true`",
                    ));
                }
                let (_, usage_location) = shared()?;
                JobSpec::Replace {
                    add: add_licenses,
                    remove: remove_licenses.into_iter().map(SkuId).collect(),
                    replace_all,
                    usage_location,
                }
            }
            JobKind::Export => {
                let Some(e) = export else {
                    return Err(refuse(
                        "export_format_required",
                        "an export job needs `export: {\"format\": \"csv\" | \"json\" | \"xlsx\"}`",
                    ));
                };
                let export = ExportOptions {
                    format: e.format,
                    location: e.location.validate()?,
                };
                shared()?;
                JobSpec::Export { export }
            }
        };
        Ok(ParsedRequest {
            groups,
            transitive,
            spec,
            verify,
            undo_of,
            preview,
            canary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The request parsed, in its stored form.
    fn req(v: serde_json::Value) -> Result<JobRequest, String> {
        let r: JobRequest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        r.parse().map(JobRequest::from).map_err(|e| match e {
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
        // A remove sent with an assign's field names both what is missing and what is not
        // allowed, so the next try is not refused again.
        let mixed: JobRequest = serde_json::from_value(
            json!({"kind":"remove","groups":[G],"add_licenses":[{"sku_id":S}]}),
        )
        .unwrap();
        match mixed.parse().map(|_| ()).unwrap_err() {
            StoreError::Refused { code, detail, .. } => {
                assert_eq!(code, "licenses_required");
                assert_eq!(
                    detail,
                    "a remove job needs at least one SKU id in `remove_licenses`; \
                     `add_licenses` cannot be used with a remove job"
                );
            }
            other => panic!("refused expected, got {other}"),
        }
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

    /// Requests as they are stored today (submitted ones normalised; licensor's own expiry
    /// removals and undo jobs) are read back into their spec, and written out again unchanged.
    #[test]
    fn stored_requests_read_back_into_their_spec_and_write_out_unchanged() {
        const J: &str = "0193a4c2-1b2c-7d3e-8f40-5a6b7c8d9e0f";
        const P: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";
        let stored = [
            json!({"kind":"assign","groups":[G],"transitive":false,
                "add_licenses":[{"sku_id":S,"disabled_plans":[P]}],"usage_location":"SE",
                "expires_in":{"value":30,"unit":"days"},"verify":false,
                "canary":{"members":50,"max_failed_share":0.1}}),
            json!({"kind":"assign","groups":[G],"transitive":true,
                "add_licenses":[{"sku_id":S,"disabled_plans":[]}],"usage_location":null,
                "preview":true}),
            // An expiry removal.
            json!({"kind":"remove","groups":[G],"transitive":true,"remove_licenses":[S],
                "usage_location":null}),
            // The undo of an assign.
            json!({"kind":"remove","groups":[G],"transitive":false,"remove_licenses":[S],
                "usage_location":null,"verify":true,"undo_of":J}),
            // The undo of a replace of everything: nothing to add by name.
            json!({"kind":"replace","groups":[G],"transitive":false,"remove_licenses":[S],
                "usage_location":null,"verify":true,"undo_of":J}),
            json!({"kind":"replace","groups":[G],"transitive":false,
                "add_licenses":[{"sku_id":S,"disabled_plans":[]}],"replace_all":true,
                "usage_location":"GB"}),
            json!({"kind":"export","groups":[G],"transitive":false,"usage_location":null,
                "export":{"format":"csv","location":{"type":"download"}}}),
            json!({"kind":"export","groups":[G],"transitive":false,"usage_location":null,
                "export":{"format":"xlsx","location":{"type":"sharepoint","drive_id":"b!abc",
                "folder_path":"/Reports/2026/"}}}),
            json!({"kind":"export","groups":[G],"transitive":true,"usage_location":null,
                "export":{"format":"json","location":{"type":"s3","bucket":"reports",
                "prefix":"licensor/","region":"eu-north-1","endpoint":"https://s3.example.com",
                "access_key_id_env":"AWS_ACCESS_KEY_ID",
                "secret_access_key_env":"S3_SECRET"}}}),
        ];
        let kinds = [
            JobKind::Assign,
            JobKind::Assign,
            JobKind::Remove,
            JobKind::Remove,
            JobKind::Replace,
            JobKind::Replace,
            JobKind::Export,
            JobKind::Export,
            JobKind::Export,
        ];
        for (v, kind) in stored.iter().zip(kinds) {
            let parsed: ParsedRequest = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(parsed.kind(), kind, "{v}");
            assert_eq!(&serde_json::to_value(&parsed).unwrap(), v);
        }
        let first: ParsedRequest = serde_json::from_value(stored[0].clone()).unwrap();
        let JobSpec::Assign {
            add,
            usage_location,
            expires_in,
        } = &first.spec
        else {
            panic!("an assign: {first:?}");
        };
        assert_eq!(add[0].sku_id.to_string(), S);
        assert_eq!(usage_location.as_deref(), Some("SE"));
        assert_eq!(expires_in.map(|e| e.get().value), Some(30));
        assert_eq!(first.groups[0].as_str(), G);
        assert_eq!(first.canary.map(|c| c.members), Some(50));
        let undo: ParsedRequest = serde_json::from_value(stored[3].clone()).unwrap();
        assert_eq!(undo.undo_of.map(|u| u.to_string()).as_deref(), Some(J));
        assert_eq!(undo.verify, Some(true));
        let s3: ParsedRequest = serde_json::from_value(stored[8].clone()).unwrap();
        assert!(matches!(
            s3.spec,
            JobSpec::Export {
                export: ExportOptions {
                    format: FileFormat::Json,
                    location: ExportLocation::S3 { .. }
                }
            }
        ));
        // `undo_of` is licensor's to set: read back from storage, refused in a submission.
        let submitted: JobRequest = serde_json::from_value(stored[3].clone()).unwrap();
        assert_eq!(
            submitted.parse().map(|_| ()).map_err(|e| e.to_string()),
            Err("`undo_of` is set by licensor; undo a job with POST /v1/jobs/{id}/undo".into())
        );
        // A stored request whose shape its kind does not have is not read as a job's.
        for bad in [
            json!({"kind":"remove","groups":[G],"remove_licenses":[S],"usage_location":"SE"}),
            json!({"kind":"export","groups":[G]}),
            json!({"kind":"assign","groups":["sales"],"add_licenses":[{"sku_id":S}]}),
        ] {
            assert!(serde_json::from_value::<ParsedRequest>(bad).is_err());
        }
    }

    /// A plan named twice in a license's `disabled_plans` is kept once, where first given: in a
    /// submission (replace too) and in a stored request read back.
    #[test]
    fn repeated_disabled_plans_are_kept_once() {
        const P: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";
        const Q: &str = "0feaeb32-d00e-4d66-bd5a-43b5b83db82c";
        const R: &str = "6fd2c87f-b296-42f0-b197-1e91e994b901";
        for given in [
            json!({"kind":"assign","groups":[G],
                "add_licenses":[{"sku_id":S,"disabled_plans":[Q,P,Q,Q,P]}]}),
            json!({"kind":"replace","groups":[G],"replace_all":true,
                "add_licenses":[{"sku_id":S,"disabled_plans":[Q,P,Q,Q,P]}]}),
        ] {
            let stored = req(given.clone()).unwrap();
            assert_eq!(
                serde_json::to_value(&stored.add_licenses).unwrap(),
                json!([{"sku_id":S,"disabled_plans":[Q,P]}]),
                "{given}"
            );
            let read_back: ParsedRequest = serde_json::from_value(given).unwrap();
            let plans: Vec<String> = read_back.add_licenses()[0]
                .disabled_plans
                .iter()
                .map(Uuid::to_string)
                .collect();
            assert_eq!(plans, [Q, P]);
        }
        // Each license's own plans: the same plan under two SKUs stays under both.
        let two = req(json!({"kind":"assign","groups":[G],"add_licenses":[
            {"sku_id":S,"disabled_plans":[P,P]},{"sku_id":R,"disabled_plans":[P]}]}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&two.add_licenses).unwrap(),
            json!([{"sku_id":S,"disabled_plans":[P]},{"sku_id":R,"disabled_plans":[P]}])
        );
    }

    #[test]
    fn ids_and_codes_have_one_shape() {
        let braced = format!("{{{}}}", G.to_uppercase());
        assert_eq!(GroupId::parse(&braced).unwrap().as_str(), G);
        assert_eq!(
            GroupId::parse(&G.replace('-', "")).unwrap(),
            GroupId::parse(G).unwrap()
        );
        assert!(GroupId::parse("All Staff").is_err());
        assert_eq!(UsageLocation::parse(" gb ").unwrap().as_str(), "GB");
        for bad in ["XX", "S1", "SWE", "", "é"] {
            assert!(UsageLocation::parse(bad).is_err(), "{bad}");
        }
        let e = |value, unit| Expiry::new(ExpiresIn { value, unit }).map(Expiry::get);
        assert!(e(0, ExpiryUnit::Days).is_err());
        assert!(e(3650, ExpiryUnit::Days).is_ok());
        assert!(e(3651, ExpiryUnit::Days).is_err());
        assert!(e(120, ExpiryUnit::Months).is_ok());
        assert!(e(121, ExpiryUnit::Months).is_err());
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
