//! `jobs submit`: a job from the command line's options, with SKUs and service plans by name
//! and groups by name; `--preview` waits for the preview and prints its summary.

use anyhow::Context;
use clap::Args;
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::request::{ExportLocation, ExportOptions};
use licensor_core::jobs::{
    Canary, ExpiresIn, Expiry, ExpiryUnit, FileFormat, JobRequest, LicenseToAdd,
};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::{POLL, format_parser, group_id, job_view, kind_parser};
use crate::cli::client::{Api, Client, print_table, text};

#[derive(Debug, Args)]
pub struct Submit {
    #[command(flatten)]
    client: Client,
    /// assign, remove, replace or export.
    #[arg(long, value_parser = kind_parser())]
    kind: JobKind,
    /// A directory group, by id or by its exact display name; repeat for several groups.
    #[arg(long = "group", value_name = "ID_OR_NAME", required = true)]
    groups: Vec<String>,
    /// Include the members of nested groups.
    #[arg(long)]
    transitive: bool,
    /// A license to add (assign, replace): a SKU part number such as SPE_E5, or a SKU id,
    /// optionally followed by `:` and the service plans to leave switched off, by name or id,
    /// separated by commas (e.g. SPE_E5:TEAMS1,MCOEV). Repeat for several licenses.
    #[arg(long = "add", value_name = "SKU[:PLAN,…]", value_parser = parse_add)]
    add: Vec<LicenseArg>,
    /// A license to remove (remove; replace): a SKU part number or id. Repeat for several.
    #[arg(long = "remove", value_name = "SKU")]
    remove: Vec<String>,
    /// Replace all of the licenses members hold directly with the `--add` licenses (replace).
    #[arg(long)]
    replace_all: bool,
    /// Location: set this country (ISO 3166-1 alpha-2, e.g. SE) on the members before assigning;
    /// without it, No Change.
    #[arg(long, value_name = "COUNTRY")]
    usage_location: Option<String>,
    /// License will expire in N days, weeks or months: 30d, 4w, 3m (assign).
    #[arg(long, value_name = "N{d|w|m}", value_parser = parse_expires_in, allow_hyphen_values = true)]
    expires_in: Option<ExpiresIn>,
    /// Export Results: the file format (export; csv when not given).
    #[arg(long, value_parser = format_parser())]
    format: Option<FileFormat>,
    /// Export Results: the export location (export; download when not given):
    /// `download`, `sharepoint:DRIVE_ID[:/Folder/]` (a SharePoint document library or OneDrive
    /// folder; without a folder, the drive's root `/`) or `s3://bucket/prefix/` (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the worker's environment).
    #[arg(long, value_name = "LOCATION", value_parser = parse_location)]
    to: Option<ExportLocation>,
    /// Export to S3: an S3-compatible service's URL instead of AWS (with --to s3://…).
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Export to S3: the bucket's region (default us-east-1).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// Sent as `Idempotency-Key`: a repeat with the same key and options starts no second job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Preview only: read the groups and predict every member's outcome without writing, wait
    /// for the preview, then print its summary and the job's id (`jobs launch ID` runs it).
    #[arg(long, conflicts_with = "format")]
    preview: bool,
    /// Try the job on its first N members first: if more than this share of them failed
    /// (0.0 to 1.0), the job pauses until `jobs resume ID` or `jobs cancel ID`. E.g. 50:0.1.
    #[arg(long, value_name = "N:SHARE")]
    canary: Option<String>,
}

/// `50:0.1`: the canary's members and the largest failed share with which the job goes on.
fn parse_canary(s: &str) -> Result<Canary, String> {
    let usage =
        "give the members and the largest failed share, e.g. 50:0.1 (N from 1, share from 0 to 1)";
    let Some((members, share)) = s.trim().split_once(':') else {
        return Err(usage.to_owned());
    };
    let members = match members.trim().parse::<u32>() {
        Ok(n) if n >= 1 => n,
        _ => return Err(usage.to_owned()),
    };
    let max_failed_share = match share.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => x,
        _ => return Err(usage.to_owned()),
    };
    Ok(Canary {
        members,
        max_failed_share,
    })
}

/// How `--to` names a SharePoint or OneDrive folder.
const SHAREPOINT_FORM: &str =
    "sharepoint:DRIVE_ID[:/Folder/] (without a folder, the drive's root /)";

/// `download`, `sharepoint:DRIVE_ID[:/Folder/]` or `s3://bucket/prefix/`. A SharePoint folder
/// left out is the drive's root `/`, as the API's `folder_path` defaults to; a `:` with no
/// folder after it, or no drive id, is refused naming the form.
fn parse_location(s: &str) -> Result<ExportLocation, String> {
    let s = s.trim();
    let location = if s == "download" {
        ExportLocation::Download
    } else if let Some(rest) = s.strip_prefix("sharepoint:") {
        let (drive_id, folder_path) = match rest.split_once(':') {
            Some((drive_id, folder)) => (drive_id.trim(), Some(folder.trim())),
            None => (rest.trim(), None),
        };
        if drive_id.is_empty() {
            return Err(format!("no drive id: give {SHAREPOINT_FORM}"));
        }
        if folder_path == Some("") {
            return Err(format!(
                "no folder after the second `:`: give {SHAREPOINT_FORM}"
            ));
        }
        ExportLocation::Sharepoint {
            drive_id: drive_id.to_owned(),
            folder_path: folder_path.unwrap_or("/").to_owned(),
        }
    } else if let Some(rest) = s.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        ExportLocation::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: None,
            endpoint: None,
            access_key_id_env: "AWS_ACCESS_KEY_ID".into(),
            secret_access_key_env: "AWS_SECRET_ACCESS_KEY".into(),
        }
    } else {
        return Err(format!(
            "`{s}` is not an export location: download, sharepoint:DRIVE_ID[:/Folder/] or s3://bucket/prefix/"
        ));
    };
    let sharepoint = matches!(location, ExportLocation::Sharepoint { .. });
    location.validate().map_err(|e| {
        if sharepoint {
            format!("{e}: give {SHAREPOINT_FORM}")
        } else {
            e.to_string()
        }
    })
}

/// `--add`: a SKU and the service plans to leave switched off, by name or id, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LicenseArg {
    sku: String,
    plans: Vec<String>,
}

/// `SKU[:PLAN,…]`, checked before anything is read or sent: a SKU, and after a `:` one or more
/// plans separated by single commas — no empty SKU or plan (`SPE_E5:`, `SPE_E5:A,,B`), which
/// would otherwise read as fewer plans than meant.
fn parse_add(s: &str) -> Result<LicenseArg, String> {
    const FORM: &str = "give SKU or SKU:PLAN,PLAN (e.g. SPE_E5:TEAMS1,MCOEV)";
    let (sku, plans) = match s.split_once(':') {
        Some((sku, plans)) => (sku.trim(), Some(plans)),
        None => (s.trim(), None),
    };
    if sku.is_empty() {
        return Err(format!("no SKU: {FORM}"));
    }
    let plans: Vec<String> = match plans {
        None => Vec::new(),
        Some(plans) if plans.trim().is_empty() => {
            return Err(format!(
                "no service plan after `:`: {FORM}, or leave out the `:` to switch off none"
            ));
        }
        Some(plans) => plans.split(',').map(|p| p.trim().to_owned()).collect(),
    };
    if plans.iter().any(String::is_empty) {
        return Err(format!("an empty service plan in the list: {FORM}"));
    }
    Ok(LicenseArg {
        sku: sku.to_owned(),
        plans,
    })
}

/// `30d`, `4w`, `3m` (also `30 days`, `4 weeks`, `3 months`).
fn parse_expires_in(s: &str) -> Result<ExpiresIn, String> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (value, unit) = s.split_at(digits);
    let unit = match unit.trim() {
        "d" | "day" | "days" => ExpiryUnit::Days,
        "w" | "week" | "weeks" => ExpiryUnit::Weeks,
        "m" | "month" | "months" => ExpiryUnit::Months,
        _ => return Err("give a number and d, w or m, e.g. 30d, 4w or 3m".to_owned()),
    };
    let most = ExpiresIn { value: 1, unit }.max_value();
    let expiry = value
        .parse::<u32>()
        .ok()
        .and_then(|value| Expiry::new(ExpiresIn { value, unit }).ok());
    match expiry {
        Some(expiry) => Ok(expiry.get()),
        None => Err(format!(
            "give a number from 1 to {most} with {}, e.g. 30d, 4w or 3m (at most ten years)",
            match unit {
                ExpiryUnit::Days => "d",
                ExpiryUnit::Weeks => "w",
                ExpiryUnit::Months => "m",
            }
        )),
    }
}

pub(super) async fn run(args: Submit) -> anyhow::Result<()> {
    // Checked before anything is read or sent: one line naming the option.
    let canary = args
        .canary
        .as_deref()
        .map(|c| parse_canary(c).map_err(|e| anyhow::anyhow!("--canary `{c}`: {e}")))
        .transpose()?;
    let api = Api::new(&args.client)?;
    let mut groups = Vec::with_capacity(args.groups.len());
    for g in &args.groups {
        groups.push(group_id(&api, g).await?);
    }
    let needs_skus = args
        .add
        .iter()
        .any(|a| !a.plans.is_empty() || Uuid::try_parse(&a.sku).is_err())
        || args
            .remove
            .iter()
            .any(|s| Uuid::try_parse(s.trim()).is_err());
    let skus = if needs_skus {
        api.send(Method::GET, "/v1/directory/skus", None).await?["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let add_licenses = args
        .add
        .iter()
        .map(|a| license_to_add(&skus, a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let remove_licenses = args
        .remove
        .iter()
        .map(|r| sku_id(&skus, r).map(|(id, _)| id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to_given = args.to.is_some();
    let mut location = args.to.unwrap_or_default();
    if let ExportLocation::S3 {
        region, endpoint, ..
    } = &mut location
    {
        *region = args.s3_region.clone();
        *endpoint = args.s3_endpoint.clone();
    } else if args.s3_region.is_some() || args.s3_endpoint.is_some() {
        anyhow::bail!("--s3-endpoint and --s3-region go with --to s3://bucket/prefix/");
    }
    let export = match (args.kind, args.format) {
        (JobKind::Export, format) => Some(ExportOptions {
            format: format.unwrap_or(FileFormat::Csv),
            location,
        }),
        (_, None) if !to_given => None,
        (_, None) => anyhow::bail!("--to is the export location of --kind export"),
        (_, Some(_)) => anyhow::bail!(
            "--format is the file format of --kind export; the outcomes of other jobs are downloaded with `licensor jobs report`"
        ),
    };
    let request = JobRequest {
        kind: args.kind,
        groups,
        transitive: args.transitive,
        add_licenses,
        remove_licenses,
        replace_all: args.replace_all,
        usage_location: args.usage_location,
        expires_in: args.expires_in,
        export,
        verify: None,
        undo_of: None,
        preview: args.preview,
        canary,
    };
    let mut req = api.request(Method::POST, "/v1/jobs").json(&request);
    if let Some(key) = &args.idempotency_key {
        req = req.header("Idempotency-Key", key);
    }
    let (answer, headers) = api.json_answer(req).await.map_err(in_options)?;
    // The same key and options sent again: licensor answers with the job the first request
    // started and starts none; said on stderr, so stdout stays the job as scripts read it.
    if headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true")
    {
        eprintln!(
            "this Idempotency-Key was used before with the same options: no second job started; the job below is the one it started"
        );
    }
    if args.preview {
        let id = job_view(&answer)?.id;
        let preview = wait_preview(&api, &id.to_string()).await?;
        if args.client.json {
            println!("{}", serde_json::to_string_pretty(&preview)?);
        } else {
            print_preview(&preview);
            println!("{id}");
        }
        return Ok(());
    }
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", job_view(&answer)?.id);
    }
    Ok(())
}

/// The refusals of `POST /v1/jobs` whose detail names the request's fields (and quotes no value
/// the user gave, which could read like a field).
const NAMING_FIELDS: [&str; 6] = [
    "field_not_allowed",
    "licenses_required",
    "duplicate_license",
    "expiry_not_allowed",
    "preview_not_supported",
    "canary_not_supported",
];

/// The request's fields as `licensor jobs submit` spells them: a refusal of the API names the
/// fields of `POST /v1/jobs` (`remove_licenses`), the command line the options that set them.
const OPTION_OF_FIELD: [(&str, &str); 11] = [
    ("`replace_all: true`", "`--replace-all`"),
    ("`groups`", "`--group`"),
    ("`transitive`", "`--transitive`"),
    ("`add_licenses`", "`--add`"),
    ("`remove_licenses`", "`--remove`"),
    ("`replace_all`", "`--replace-all`"),
    ("`usage_location`", "`--usage-location`"),
    ("`expires_in`", "`--expires-in`"),
    ("`export`", "`--to`/`--format`"),
    ("`preview`", "`--preview`"),
    ("`canary`", "`--canary`"),
];

/// A refusal of `POST /v1/jobs` (`code: detail`) in the words of the command line (see
/// [`OPTION_OF_FIELD`]), for the refusals that name fields ([`NAMING_FIELDS`]); any other as it
/// is, so a value the user gave (`--usage-location canary`) is never taken for a field.
fn in_options(refusal: anyhow::Error) -> anyhow::Error {
    let text = refusal.to_string();
    let names_fields = text
        .split_once(": ")
        .is_some_and(|(code, _)| NAMING_FIELDS.contains(&code));
    if !names_fields {
        return refusal;
    }
    let text = OPTION_OF_FIELD
        .iter()
        .fold(text, |text, (field, option)| text.replace(field, option));
    anyhow::anyhow!(text)
}

/// Read a preview until it has left Waiting and In Progress; an error when it ended otherwise
/// than previewed (e.g. failed: a group not found).
async fn wait_preview(api: &Api, id: &str) -> anyhow::Result<Value> {
    loop {
        let job = api
            .send(Method::GET, &format!("/v1/jobs/{id}"), None)
            .await?;
        let view = job_view(&job)?;
        match view.status {
            JobStatus::Queued | JobStatus::Running => tokio::time::sleep(POLL).await,
            JobStatus::Previewed => return Ok(job),
            other => match view.error {
                Some(e) => anyhow::bail!(
                    "the preview {id} ended {other}: {}: {}",
                    e.code,
                    e.detail.unwrap_or_default()
                ),
                None => anyhow::bail!("the preview {id} ended {other}"),
            },
        }
    }
}

/// A preview's summary as tables: members and predicted outcomes, seat math per SKU, the
/// licenses the members hold, and predicted failures by code.
fn print_preview(job: &Value) {
    let p = &job["preview"];
    let n = |v: &Value| v.as_i64().unwrap_or(0).to_string();
    let sku = |v: &Value| {
        v["sku_part_number"]
            .as_str()
            .or(v["sku_id"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let location = if p["usage_location"]["fixed_by_request"] == true {
        "set by the job"
    } else {
        "not set by the job"
    };
    print_table(
        ["MEMBERS", "WOULD SUCCEED", "WOULD SKIP", "WOULD FAIL"],
        &[[
            n(&p["members"]),
            n(&p["would_succeed"]),
            n(&p["would_skip"]),
            n(&p["would_fail"]),
        ]],
    );
    // A usage location matters only to a job that gives licenses.
    let gives = job["request"]["add_licenses"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let location = if gives {
        format!(
            "Without usage location: {} ({location}); ",
            n(&p["usage_location"]["missing"])
        )
    } else {
        String::new()
    };
    println!(
        "{location}Holding a license only through a group: {}; already done: {}",
        n(&p["inherited_only"]),
        n(&p["already_done"])
    );
    if p["not_affected"].as_i64().unwrap_or(0) > 0 {
        println!(
            "Not affected (hold none of the licenses to replace): {}",
            n(&p["not_affected"])
        );
    }
    let rows = |key: &str| p[key].as_array().cloned().unwrap_or_default();
    let needs: Vec<[String; 5]> = rows("skus")
        .iter()
        .map(|s| {
            [
                sku(s),
                n(&s["needed"]),
                n(&s["free"]),
                n(&s["shortfall"]),
                n(&s["short_members"]),
            ]
        })
        .collect();
    if !needs.is_empty() {
        println!();
        print_table(
            ["SKU", "NEEDED", "FREE", "SHORTFALL", "MEMBERS SHORT"],
            &needs,
        );
    }
    let held: Vec<[String; 3]> = rows("held")
        .iter()
        .map(|h| [sku(h), n(&h["direct"]), n(&h["inherited"])])
        .collect();
    if !held.is_empty() {
        println!();
        print_table(["HELD", "DIRECT", "INHERITED"], &held);
    }
    let failures: Vec<[String; 2]> = rows("failures")
        .iter()
        .map(|f| {
            [
                f["code"].as_str().unwrap_or_default().to_owned(),
                n(&f["count"]),
            ]
        })
        .collect();
    if !failures.is_empty() {
        println!();
        print_table(["WOULD FAIL WITH", "MEMBERS"], &failures);
    }
    println!();
}

/// A SKU's id from its part number (any case) or id, with the SKU when the tenant lists it.
fn sku_id<'a>(skus: &'a [Value], given: &str) -> anyhow::Result<(Uuid, Option<&'a Value>)> {
    let given = given.trim();
    let by_id = Uuid::try_parse(given).ok();
    let found = skus.iter().find(|s| match by_id {
        Some(id) => s["sku_id"].as_str().and_then(|s| Uuid::try_parse(s).ok()) == Some(id),
        None => s["sku_part_number"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(given)),
    });
    match (by_id, found) {
        (Some(id), found) => Ok((id, found)),
        (None, Some(sku)) => {
            let id = sku["sku_id"].as_str().and_then(|s| Uuid::try_parse(s).ok());
            let id = id.context("licensor answered with a SKU without an id")?;
            Ok((id, Some(sku)))
        }
        (None, None) => {
            let names: Vec<String> = skus.iter().map(|s| text(&s["sku_part_number"])).collect();
            anyhow::bail!(
                "the tenant has no SKU `{given}`; its SKUs are {}",
                names.join(", ")
            )
        }
    }
}

/// `SKU[:PLAN,…]`: the SKU and the service plans to leave switched off, by name or id.
fn license_to_add(skus: &[Value], given: &LicenseArg) -> anyhow::Result<LicenseToAdd> {
    let sku = given.sku.as_str();
    let (sku_id, found) = self::sku_id(skus, sku)?;
    let no_plans = Vec::new();
    let known = found
        .and_then(|s| s["service_plans"].as_array())
        .unwrap_or(&no_plans);
    let disabled_plans = given
        .plans
        .iter()
        .map(String::as_str)
        .map(|plan| {
            if let Ok(id) = Uuid::try_parse(plan) {
                return Ok(id);
            }
            known
                .iter()
                .find(|p| {
                    p["service_plan_name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(plan))
                })
                .and_then(|p| p["service_plan_id"].as_str())
                .and_then(|id| Uuid::try_parse(id).ok())
                .ok_or_else(|| {
                    let names: Vec<String> = known
                        .iter()
                        .map(|p| text(&p["service_plan_name"]))
                        .collect();
                    anyhow::anyhow!(
                        "SKU `{}` has no service plan `{plan}`; its plans are {}",
                        sku.trim(),
                        names.join(", ")
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(LicenseToAdd {
        sku_id: sku_id.into(),
        disabled_plans,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_refusal_names_the_options() {
        let said = in_options(anyhow::anyhow!(
            "field_not_allowed: `remove_licenses` cannot be used with an assign job"
        ));
        assert_eq!(
            said.to_string(),
            "field_not_allowed: `--remove` cannot be used with an assign job"
        );
        let said = in_options(anyhow::anyhow!(
            "licenses_required: a replace job needs the licenses to add in `add_licenses`"
        ));
        assert!(said.to_string().ends_with("in `--add`"), "{said}");
        let said = in_options(anyhow::anyhow!(
            "licenses_required: a replace job needs `remove_licenses`, or `replace_all: true`"
        ));
        assert!(
            said.to_string()
                .ends_with("needs `--remove`, or `--replace-all`"),
            "{said}"
        );
        // A value the user gave is quoted as it is.
        let refused = "invalid_usage_location: `canary` is not an ISO 3166-1 alpha-2 country code";
        assert_eq!(in_options(anyhow::anyhow!(refused)).to_string(), refused);
    }

    #[test]
    fn export_locations() {
        assert_eq!(parse_location("download"), Ok(ExportLocation::Download));
        assert_eq!(
            parse_location("sharepoint:b!x1:/Reports/2026"),
            Ok(ExportLocation::Sharepoint {
                drive_id: "b!x1".into(),
                folder_path: "/Reports/2026/".into()
            })
        );
        match parse_location("s3://reports/licensor/") {
            Ok(ExportLocation::S3 { bucket, prefix, .. }) => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("reports", "licensor/"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_location("s3://Bad_Bucket/").is_err());
        assert!(parse_location("ftp://x").is_err());
        // A SharePoint folder left out is the drive's root, as in the API.
        let root = Ok(ExportLocation::Sharepoint {
            drive_id: "b!x1".into(),
            folder_path: "/".into(),
        });
        assert_eq!(parse_location("sharepoint:b!x1"), root);
        assert_eq!(parse_location("sharepoint:b!x1:/"), root);
        let api: ExportLocation =
            serde_json::from_value(json!({"type": "sharepoint", "drive_id": "b!x1"})).unwrap();
        assert_eq!(api.validate().map_err(|e| e.to_string()), root);
        // Incomplete or malformed: refused naming the form.
        for (bad, says) in [
            ("sharepoint:", "no drive id"),
            ("sharepoint::/Reports/", "no drive id"),
            ("sharepoint:b!x1:", "no folder after the second `:`"),
            ("sharepoint:b!x1: ", "no folder after the second `:`"),
            ("sharepoint:b x1", "is not a drive id"),
            ("sharepoint:b!x1:/a/../b", "is not a folder name"),
        ] {
            let e = parse_location(bad).unwrap_err();
            assert!(
                e.contains(says) && e.contains("sharepoint:DRIVE_ID[:/Folder/]"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn expiry_in_days_weeks_or_months() {
        let e = |value, unit| Ok(ExpiresIn { value, unit });
        assert_eq!(parse_expires_in("30d"), e(30, ExpiryUnit::Days));
        assert_eq!(parse_expires_in("4w"), e(4, ExpiryUnit::Weeks));
        assert_eq!(parse_expires_in("3M"), e(3, ExpiryUnit::Months));
        assert_eq!(parse_expires_in("2 weeks"), e(2, ExpiryUnit::Weeks));
        assert_eq!(parse_expires_in("3650d"), e(3650, ExpiryUnit::Days));
        assert_eq!(parse_expires_in("120m"), e(120, ExpiryUnit::Months));
        for bad in [
            "0d",
            "d",
            "30",
            "30y",
            "-1d",
            "99999999999d",
            "",
            "3651d",
            "521w",
        ] {
            assert!(parse_expires_in(bad).is_err(), "{bad}");
        }
        // The error says how far a number may go.
        let err = parse_expires_in("0d").unwrap_err();
        assert!(err.contains("from 1 to 3650"), "{err}");
        let err = parse_expires_in("121m").unwrap_err();
        assert!(err.contains("from 1 to 120"), "{err}");
    }

    fn skus() -> Vec<Value> {
        vec![json!({
            "sku_id": "06ebc4ee-1bb5-47dd-8120-11324bc54e06",
            "sku_part_number": "SPE_E5",
            "service_plans": [
                {"service_plan_id": "57ff2da0-773e-42df-b2af-ffb7a2317929", "service_plan_name": "TEAMS1"},
                {"service_plan_id": "4828c8ec-dc2e-4779-b502-87ac9ce28ab7", "service_plan_name": "MCOEV"},
            ],
        })]
    }

    fn add(s: &str) -> LicenseArg {
        parse_add(s).unwrap()
    }

    /// `--add SKU[:PLAN,…]`: a SKU, and after a `:` plans separated by single commas; an empty
    /// SKU or plan is refused naming the form, before anything is read or sent.
    #[test]
    fn a_license_to_add_names_a_sku_and_no_empty_plan() {
        assert_eq!(
            parse_add(" SPE_E5 : TEAMS1 , MCOEV "),
            Ok(LicenseArg {
                sku: "SPE_E5".into(),
                plans: vec!["TEAMS1".into(), "MCOEV".into()]
            })
        );
        assert_eq!(add("SPE_E5").plans, Vec::<String>::new());
        for (bad, says) in [
            ("SPE_E5:", "no service plan after `:`"),
            ("SPE_E5: ", "no service plan after `:`"),
            ("SPE_E5:TEAMS1,,MCOEV", "an empty service plan"),
            ("SPE_E5:TEAMS1,", "an empty service plan"),
            ("SPE_E5:,TEAMS1", "an empty service plan"),
            ("SPE_E5:, ", "an empty service plan"),
            ("", "no SKU"),
            (":TEAMS1", "no SKU"),
        ] {
            let e = parse_add(bad).unwrap_err();
            assert!(
                e.starts_with(says) && e.contains("SKU:PLAN,PLAN") && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn licenses_by_part_number_or_id_with_plans_by_name_or_id() {
        let skus = skus();
        let e5 = Uuid::parse_str("06ebc4ee-1bb5-47dd-8120-11324bc54e06").unwrap();
        let teams = Uuid::parse_str("57ff2da0-773e-42df-b2af-ffb7a2317929").unwrap();
        let other = Uuid::parse_str("4828c8ec-dc2e-4779-b502-87ac9ce28ab7").unwrap();
        assert_eq!(
            license_to_add(&skus, &add("spe_e5")).unwrap(),
            LicenseToAdd {
                sku_id: e5.into(),
                disabled_plans: vec![]
            }
        );
        assert_eq!(
            license_to_add(&skus, &add(&format!("{e5}:teams1, {other}"))).unwrap(),
            LicenseToAdd {
                sku_id: e5.into(),
                disabled_plans: vec![teams, other]
            }
        );
        // A SKU id the tenant does not list is the API's to refuse.
        let unknown = Uuid::new_v4();
        assert_eq!(sku_id(&skus, &unknown.to_string()).unwrap().0, unknown);
        let e = license_to_add(&skus, &add("SPE_E3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPE_E3") && e.contains("SPE_E5"), "{e}");
        let e = license_to_add(&skus, &add("SPE_E5:TEAMS9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TEAMS9") && e.contains("MCOEV"), "{e}");
    }

    #[test]
    fn a_canary_is_members_and_a_share() {
        let c = parse_canary("50:0.1").unwrap();
        assert_eq!((c.members, c.max_failed_share), (50, 0.1));
        assert_eq!(parse_canary(" 1:1 ").unwrap().members, 1);
        for bad in ["50:2", "0:0.1", "50", "x:0.1", "50:-0.1", "50:abc", ""] {
            assert!(parse_canary(bad).is_err(), "{bad}");
        }
    }
}
