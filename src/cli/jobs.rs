//! `licensor jobs …`: group license jobs from a terminal or a script — submit, list, watch,
//! rerun, cancel, and download reports and exports. An HTTP client of a running licensor
//! (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`); `--json` prints the API's answer.
//!
//! Exit codes: 0 success; 1 an error (licensor unreachable or refusing, bad input), or for
//! `jobs rerun` some of the jobs were not rerun; 2 a usage error. `jobs watch` ends with the
//! job's final status: 0 Finished, 3 Finished with Exception, 4 Failed, 5 Cancelled, 6
//! Previewed, 7 Paused (its canary failed too often: `jobs resume ID` or `jobs cancel ID`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::request::{ExportLocation, ExportOptions};
use licensor_core::jobs::{Canary, ExpiresIn, ExpiryUnit, FileFormat, JobRequest, LicenseToAdd};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Exit;
use super::client::{Api, Client, print_table, text};

/// How often `jobs watch` reads the job.
const POLL: Duration = Duration::from_millis(500);

/// `jobs watch`'s exit code for each final status.
fn exit_code(status: JobStatus) -> u8 {
    match status {
        JobStatus::Finished => 0,
        JobStatus::FinishedWithException => 3,
        JobStatus::Failed => 4,
        JobStatus::Cancelled => 5,
        JobStatus::Previewed => 6,
        JobStatus::Paused => 7,
        // Not final; watch never ends on these.
        JobStatus::Queued | JobStatus::Running => 1,
    }
}

/// A status in the Job Monitor's words.
fn label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "Waiting",
        JobStatus::Running => "In Progress",
        JobStatus::Finished => "Finished",
        JobStatus::FinishedWithException => "Finished with Exception",
        JobStatus::Failed => "Failed",
        JobStatus::Cancelled => "Cancelled",
        JobStatus::Previewed => "Previewed",
        JobStatus::Paused => "Paused",
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Start a job for the members of the selected groups: Assign Licenses, Remove Licenses,
    /// Replace Licenses or Export Results. Prints the job's id.
    Submit(Box<Submit>),
    /// List jobs, newest first: kind, groups, status and progress.
    List {
        #[command(flatten)]
        client: Client,
        /// Only jobs in these statuses (comma-separated or repeated): queued (Waiting), running
        /// (In Progress), finished, finished_with_exception, failed, cancelled, previewed,
        /// paused.
        #[arg(long, value_delimiter = ',', value_parser = status_parser())]
        status: Vec<JobStatus>,
        /// Only jobs of these kinds (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', value_parser = kind_parser())]
        kind: Vec<JobKind>,
        /// Show at most this many jobs.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Follow a job until it ends: a progress bar (plain lines when the output is not a
    /// terminal), then the final counts and the failed members by error code. Exits 0 when the
    /// job is Finished, 3 Finished with Exception, 4 Failed, 5 Cancelled, 6 Previewed; it also
    /// stops, with 7, when the job is Paused by its canary.
    Watch {
        #[command(flatten)]
        client: Client,
        /// The job's id.
        id: String,
    },
    /// Rerun Failed, Finished with Exception or Cancelled jobs: only what failed (or was not
    /// done before the cancel) is done again, from the members' licenses read afresh. Several
    /// ids rerun together, as the Job Monitor's Start button does; or every job a filter
    /// matches (`--status failed [--kind …]`, as "Select all N matching"). Exits 1 if any was
    /// refused.
    Rerun {
        #[command(flatten)]
        client: Client,
        /// Job ids (or give a filter instead).
        #[arg(required_unless_present = "filter", conflicts_with = "filter")]
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Only say how many jobs would be acted on and which refused; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cancel Waiting, In Progress, Previewed or Paused jobs: members not yet worked on are
    /// skipped. One or more
    /// ids, or every job a filter matches (`--status queued …`). Exits 1 if any was refused.
    Cancel {
        #[command(flatten)]
        client: Client,
        /// Job ids (or give a filter instead).
        #[arg(required_unless_present = "filter", conflicts_with = "filter")]
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Only say how many jobs would be acted on and which refused; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo a finished, failed or cancelled job (admin): a new job gives each member the job
    /// wrote for its licenses from before the job, where they still are what the job left;
    /// members changed since are left alone and reported. Prints the undo job's id.
    Undo {
        #[command(flatten)]
        client: Client,
        /// The id of the job to undo.
        id: String,
    },
    /// Launch a Previewed job (admin): it runs as previewed, with the members the preview
    /// found (read again when the preview is older than `jobs.preview_max_age_secs`). Prints the
    /// job's id.
    Launch {
        #[command(flatten)]
        client: Client,
        /// The preview's id.
        id: String,
    },
    /// Resume a Paused job (operator): its canary's members failed more often than the bound
    /// allowed; it goes on with the rest of its members. Prints the job's id.
    Resume {
        #[command(flatten)]
        client: Client,
        /// The paused job's id.
        id: String,
    },
    /// Download a job's report: every member with its outcome.
    Report {
        #[command(flatten)]
        client: Client,
        /// The job's id.
        id: String,
        /// csv, json or xlsx.
        #[arg(long, default_value = "csv", value_parser = format_parser())]
        format: FileFormat,
        /// Where to write it (`-` for standard output).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Download the file an export job produced (one row per member × license).
    Export {
        #[command(flatten)]
        client: Client,
        /// The export job's id.
        id: String,
        /// Where to write it (`-` for standard output).
        #[arg(long, short)]
        output: PathBuf,
    },
}

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
    /// optionally followed by `:` and the service plans to leave switched off, by name or id
    /// (e.g. SPE_E5:TEAMS1,MCOEV). Repeat for several licenses.
    #[arg(long = "add", value_name = "SKU[:PLAN,…]")]
    add: Vec<String>,
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
    #[arg(long, value_name = "N{d|w|m}", value_parser = parse_expires_in)]
    expires_in: Option<ExpiresIn>,
    /// Export Results: the file format (export; csv when not given).
    #[arg(long, value_parser = format_parser())]
    format: Option<FileFormat>,
    /// Export Results: the export location (export; download when not given):
    /// `download`, `sharepoint:DRIVE_ID:/Folder/` (a SharePoint document library or OneDrive
    /// folder) or `s3://bucket/prefix/` (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY in the worker's environment).
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

/// `download`, `sharepoint:DRIVE_ID:/Folder/` or `s3://bucket/prefix/`.
fn parse_location(s: &str) -> Result<ExportLocation, String> {
    let s = s.trim();
    let location = if s == "download" {
        ExportLocation::Download
    } else if let Some(rest) = s.strip_prefix("sharepoint:") {
        let (drive_id, folder_path) = rest.split_once(':').unwrap_or((rest, "/"));
        ExportLocation::Sharepoint {
            drive_id: drive_id.to_owned(),
            folder_path: folder_path.to_owned(),
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
            "`{s}` is not an export location: download, sharepoint:DRIVE_ID:/Folder/ or s3://bucket/prefix/"
        ));
    };
    location.validate().map_err(|e| e.to_string())
}

/// Which jobs a bulk rerun or cancel acts on, instead of ids: every job that matches all the
/// options given (at most the server's `jobs.bulk_max_jobs`).
#[derive(Debug, Args)]
#[group(id = "filter", multiple = true, required = false)]
pub struct FilterArgs {
    /// Jobs in these statuses (comma-separated or repeated), e.g. `failed`.
    #[arg(long, value_delimiter = ',', value_parser = status_parser())]
    status: Vec<JobStatus>,
    /// Jobs of these kinds (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_parser = kind_parser())]
    kind: Vec<JobKind>,
    /// Jobs that selected this group (its name or id).
    #[arg(long)]
    group: Option<String>,
    /// Jobs created before this instant (RFC 3339, e.g. 2026-11-30T12:00:00Z).
    #[arg(long)]
    created_before: Option<DateTime<Utc>>,
    /// Jobs created at or after this instant (RFC 3339).
    #[arg(long)]
    created_after: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn given(&self) -> bool {
        !self.status.is_empty()
            || !self.kind.is_empty()
            || self.group.is_some()
            || self.created_before.is_some()
            || self.created_after.is_some()
    }

    /// The API's `filter` object.
    async fn body(&self, api: &Api) -> anyhow::Result<Value> {
        let mut filter = serde_json::Map::new();
        if !self.status.is_empty() {
            filter.insert("status".into(), json!(self.status));
        }
        if !self.kind.is_empty() {
            filter.insert("kind".into(), json!(self.kind));
        }
        if let Some(group) = &self.group {
            filter.insert("group".into(), json!(group_id(api, group).await?));
        }
        if let Some(t) = self.created_before {
            filter.insert("created_before".into(), json!(t));
        }
        if let Some(t) = self.created_after {
            filter.insert("created_after".into(), json!(t));
        }
        Ok(Value::Object(filter))
    }
}

fn kind_parser() -> impl TypedValueParser<Value = JobKind> {
    PossibleValuesParser::new(["assign", "remove", "replace", "export"])
        .try_map(|s| s.parse::<JobKind>())
}

fn format_parser() -> impl TypedValueParser<Value = FileFormat> {
    PossibleValuesParser::new(["csv", "json", "xlsx"]).try_map(|s| s.parse::<FileFormat>())
}

fn status_parser() -> impl TypedValueParser<Value = JobStatus> {
    PossibleValuesParser::new([
        PossibleValue::new("queued").alias("waiting"),
        PossibleValue::new("running").aliases(["in_progress", "in-progress"]),
        PossibleValue::new("finished"),
        PossibleValue::new("finished_with_exception"),
        PossibleValue::new("failed"),
        PossibleValue::new("cancelled"),
        PossibleValue::new("previewed"),
        PossibleValue::new("paused"),
    ])
    .try_map(|s| match s.as_str() {
        "waiting" => Ok(JobStatus::Queued),
        "in_progress" | "in-progress" => Ok(JobStatus::Running),
        other => other.parse::<JobStatus>(),
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
    match value.parse::<u32>() {
        Ok(value) if (1..=most).contains(&value) => Ok(ExpiresIn { value, unit }),
        _ => Err(format!(
            "give a number from 1 to {most} with {}, e.g. 30d, 4w or 3m (at most ten years)",
            match unit {
                ExpiryUnit::Days => "d",
                ExpiryUnit::Weeks => "w",
                ExpiryUnit::Months => "m",
            }
        )),
    }
}

/// A job id from the command line.
fn job_id(s: &str) -> anyhow::Result<Uuid> {
    Uuid::try_parse(s.trim()).map_err(|_| anyhow::anyhow!("`{s}` is not a job id"))
}

/// What the commands read of a job; `--json` prints the API's answer as it came.
#[derive(Debug, Deserialize)]
struct Job {
    id: Uuid,
    kind: JobKind,
    status: JobStatus,
    /// The groups' members are still being read: `progress.total` is what was read so far.
    #[serde(default)]
    expanding: bool,
    progress: Progress,
    runs: i32,
    groups: Vec<GroupRef>,
    created_at: DateTime<Utc>,
    error: Option<JobError>,
    #[serde(default)]
    request: Option<JobRequestView>,
}

/// What the commands read of a job's request.
#[derive(Debug, Default, Deserialize)]
struct JobRequestView {
    /// The job this one undoes.
    #[serde(default)]
    undo_of: Option<Uuid>,
}

#[derive(Debug, Deserialize)]
struct Progress {
    total: i64,
    succeeded: i64,
    failed: i64,
    skipped: i64,
}

#[derive(Debug, Deserialize)]
struct GroupRef {
    id: String,
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobError {
    code: String,
    detail: Option<String>,
}

impl Job {
    fn from(value: &Value) -> anyhow::Result<Job> {
        serde_json::from_value(value.clone()).context("licensor answered with an unexpected job")
    }

    fn done(&self) -> i64 {
        self.progress.succeeded + self.progress.failed + self.progress.skipped
    }

    /// "remove", or "remove (undo of 0192c3d4)" for a job that undoes another.
    fn kind_label(&self) -> String {
        match self.request.as_ref().and_then(|r| r.undo_of) {
            Some(of) => format!("{} (undo of {})", self.kind.as_str(), &of.to_string()[..8]),
            None => self.kind.as_str().to_owned(),
        }
    }

    /// "Sales, Engineering" (ids until the job has read the names).
    fn groups(&self) -> String {
        let names: Vec<&str> = self
            .groups
            .iter()
            .map(|g| g.display_name.as_deref().unwrap_or(&g.id))
            .collect();
        match names.len() {
            0..=3 => names.join(", "),
            n => format!("{} +{}", names[..2].join(", "), n - 2),
        }
    }

    /// "In Progress: 120 of 250 done (110 succeeded, 10 failed, 0 skipped)".
    fn line(&self) -> String {
        let p = &self.progress;
        if p.total == 0 && !self.status.is_terminal() {
            return label(self.status).to_owned();
        }
        if self.expanding {
            // Never "N of N done" while members are still being read.
            return format!(
                "{}: reading members: {} so far ({} done)",
                label(self.status),
                group_digits(p.total),
                group_digits(self.done())
            );
        }
        format!(
            "{}: {} of {} done ({} succeeded, {} failed, {} skipped)",
            label(self.status),
            self.done(),
            p.total,
            p.succeeded,
            p.failed,
            p.skipped
        )
    }
}

/// 34965 → "34,965".
fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub async fn run(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Submit(submit) => self::submit(*submit).await,
        JobsCommand::List {
            client,
            status,
            kind,
            limit,
        } => {
            let api = Api::new(&client)?;
            let mut query = Vec::new();
            if !status.is_empty() {
                let status: Vec<&str> = status.iter().map(|s| s.as_str()).collect();
                query.push(("status", status.join(",")));
            }
            if !kind.is_empty() {
                let kind: Vec<&str> = kind.iter().map(|k| k.as_str()).collect();
                query.push(("kind", kind.join(",")));
            }
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let jobs = api.list("/v1/jobs", &query, Some(limit)).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                let jobs = jobs
                    .iter()
                    .map(Job::from)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                print_jobs(&jobs);
            }
            Ok(())
        }
        JobsCommand::Watch { client, id } => {
            let api = Api::new(&client)?;
            watch(&api, job_id(&id)?, client.json).await
        }
        JobsCommand::Rerun {
            client,
            ids,
            filter,
            dry_run,
        } => {
            let api = Api::new(&client)?;
            let ids = ids
                .iter()
                .map(|id| job_id(id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if filter.given() || dry_run {
                bulk(&api, Bulk::Rerun, &ids, &filter, dry_run, client.json).await
            } else {
                rerun(&api, &ids, client.json).await
            }
        }
        JobsCommand::Cancel {
            client,
            ids,
            filter,
            dry_run,
        } => {
            let api = Api::new(&client)?;
            let ids = ids
                .iter()
                .map(|id| job_id(id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let ([id], false, false) = (ids.as_slice(), filter.given(), dry_run) {
                let job = api
                    .send(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
                    .await?;
                if client.json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                } else {
                    let job = Job::from(&job)?;
                    println!("job {}: {}", job.id, job.line());
                }
                return Ok(());
            }
            bulk(&api, Bulk::Cancel, &ids, &filter, dry_run, client.json).await
        }
        JobsCommand::Undo { client, id } => post_job_action(&client, &id, "undo").await,
        JobsCommand::Launch { client, id } => post_job_action(&client, &id, "launch").await,
        JobsCommand::Resume { client, id } => post_job_action(&client, &id, "resume").await,
        JobsCommand::Report {
            client,
            id,
            format,
            output,
        } => {
            let api = Api::new(&client)?;
            let id = job_id(&id)?;
            let req = api
                .request(Method::GET, &format!("/v1/jobs/{id}/report"))
                .query(&[("format", format.extension())]);
            let bytes = api.bytes(req).await?;
            write_file(&output, &bytes)
        }
        JobsCommand::Export { client, id, output } => {
            let api = Api::new(&client)?;
            let id = job_id(&id)?;
            let req = api.request(Method::GET, &format!("/v1/jobs/{id}/export"));
            let bytes = api.bytes(req).await?;
            write_file(&output, &bytes)
        }
    }
}

/// Write a downloaded file, or print it when `path` is `-`.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}

async fn submit(args: Submit) -> anyhow::Result<()> {
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
        .chain(&args.remove)
        .any(|s| s.contains(':') || Uuid::try_parse(s.trim()).is_err());
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
    let job = api.json(req).await?;
    if args.preview {
        let id = Job::from(&job)?.id;
        let job = wait_preview(&api, &id.to_string()).await?;
        if args.client.json {
            println!("{}", serde_json::to_string_pretty(&job)?);
        } else {
            print_preview(&job);
            println!("{id}");
        }
        return Ok(());
    }
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        println!("{}", Job::from(&job)?.id);
    }
    Ok(())
}

/// Read a preview until it has left Waiting and In Progress; an error when it ended otherwise
/// than previewed (e.g. failed: a group not found).
async fn wait_preview(api: &Api, id: &str) -> anyhow::Result<Value> {
    loop {
        let job = api
            .send(Method::GET, &format!("/v1/jobs/{id}"), None)
            .await?;
        match job["status"].as_str() {
            Some("queued" | "running") => tokio::time::sleep(POLL).await,
            Some("previewed") => return Ok(job),
            other => anyhow::bail!(
                "the preview {id} ended {}: {}",
                other.unwrap_or("?"),
                job["error"]["detail"].as_str().unwrap_or_default()
            ),
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

/// A group's id: as given when it is one, else the one group whose display name is exactly `given`.
async fn group_id(api: &Api, given: &str) -> anyhow::Result<String> {
    let name = given.trim();
    if let Ok(id) = Uuid::try_parse(name) {
        return Ok(id.hyphenated().to_string());
    }
    let req = api
        .request(Method::GET, "/v1/directory/groups")
        .query(&[("search", name), ("limit", "500")]);
    let found = api.json(req).await?;
    let found = found["data"].as_array().cloned().unwrap_or_default();
    let exact: Vec<&Value> = found
        .iter()
        .filter(|g| g["displayName"].as_str() == Some(name))
        .collect();
    match exact.as_slice() {
        [one] => Ok(text(&one["id"])),
        [] => {
            let similar: Vec<String> = found
                .iter()
                .take(5)
                .map(|g| format!("`{}`", text(&g["displayName"])))
                .collect();
            let hint = if similar.is_empty() {
                String::new()
            } else {
                format!(" (groups starting with it: {})", similar.join(", "))
            };
            anyhow::bail!("no directory group is named `{name}`{hint}")
        }
        many => {
            let ids: Vec<String> = many.iter().map(|g| text(&g["id"])).collect();
            anyhow::bail!(
                "{} directory groups are named `{name}` ({}); give the group's id instead",
                many.len(),
                ids.join(", ")
            )
        }
    }
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
fn license_to_add(skus: &[Value], given: &str) -> anyhow::Result<LicenseToAdd> {
    let (sku, plans) = given.split_once(':').unwrap_or((given, ""));
    let (sku_id, found) = self::sku_id(skus, sku)?;
    let no_plans = Vec::new();
    let known = found
        .and_then(|s| s["service_plans"].as_array())
        .unwrap_or(&no_plans);
    let disabled_plans = plans
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|plan| {
            if let Ok(id) = Uuid::try_parse(plan) {
                return Ok(id);
            }
            known
                .iter()
                .find(|p| {
                    p["servicePlanName"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(plan))
                })
                .and_then(|p| p["servicePlanId"].as_str())
                .and_then(|id| Uuid::try_parse(id).ok())
                .ok_or_else(|| {
                    let names: Vec<String> =
                        known.iter().map(|p| text(&p["servicePlanName"])).collect();
                    anyhow::anyhow!(
                        "SKU `{}` has no service plan `{plan}`; its plans are {}",
                        sku.trim(),
                        names.join(", ")
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(LicenseToAdd {
        sku_id,
        disabled_plans,
    })
}

fn print_jobs(jobs: &[Job]) {
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|j| {
            [
                j.id.to_string(),
                j.kind_label(),
                j.groups(),
                label(j.status).to_owned(),
                j.progress.succeeded.to_string(),
                j.progress.failed.to_string(),
                j.progress.skipped.to_string(),
                j.progress.total.to_string(),
                j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        [
            "ID",
            "KIND",
            "GROUPS",
            "STATUS",
            "SUCCEEDED",
            "FAILED",
            "SKIPPED",
            "TOTAL",
            "CREATED (UTC)",
        ],
        &rows,
    );
}

/// How `jobs watch` shows progress: a bar on a terminal, a line per change otherwise, nothing
/// with `--json`.
enum ProgressView {
    Bar(ProgressBar),
    Lines { last: String },
    Quiet,
}

impl ProgressView {
    fn new(json: bool) -> ProgressView {
        if json {
            return ProgressView::Quiet;
        }
        if !std::io::stdout().is_terminal() {
            return ProgressView::Lines {
                last: String::new(),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        ProgressView::Bar(bar)
    }

    fn show(&mut self, job: &Job) {
        match self {
            ProgressView::Bar(bar) => {
                bar.set_length(job.progress.total.max(0).unsigned_abs());
                bar.set_position(job.done().max(0).unsigned_abs());
                bar.set_message(format!(
                    "{} · {} succeeded, {} failed, {} skipped",
                    label(job.status),
                    job.progress.succeeded,
                    job.progress.failed,
                    job.progress.skipped
                ));
            }
            ProgressView::Lines { last } => {
                let line = job.line();
                if line != *last {
                    println!("{line}");
                    *last = line;
                }
            }
            ProgressView::Quiet => {}
        }
    }

    fn finish(self) {
        if let ProgressView::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

async fn watch(api: &Api, id: Uuid, json: bool) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{id}");
    let mut display = ProgressView::new(json);
    let answer = loop {
        let answer = match api.send(Method::GET, &path, None).await {
            Ok(a) => a,
            Err(e) => {
                display.finish();
                return Err(e);
            }
        };
        let job = Job::from(&answer)?;
        display.show(&job);
        if job.status.is_terminal() || job.status == JobStatus::Paused {
            break answer;
        }
        tokio::time::sleep(POLL).await;
    };
    display.finish();
    let job = Job::from(&answer)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "job {} ({} {}), run {}: {}",
            job.id,
            job.kind_label(),
            job.groups(),
            job.runs,
            label(job.status)
        );
        println!(
            "{} succeeded, {} failed, {} skipped of {}",
            job.progress.succeeded, job.progress.failed, job.progress.skipped, job.progress.total
        );
        if let Some(e) = &job.error {
            println!("error: {}: {}", e.code, e.detail.as_deref().unwrap_or("-"));
        }
        if job.status == JobStatus::Paused {
            println!(
                "paused: its first members failed more often than the canary allows; `licensor jobs resume {id}` goes on, `licensor jobs cancel {id}` stops it"
            );
        }
        let export = &answer["export"];
        if export.is_object() {
            println!(
                "export: {} rows, {} bytes, {}",
                text(&export["rows"]),
                text(&export["size"]),
                text(&export["url"])
            );
        }
        if job.progress.failed > 0 {
            let errors = api
                .send(Method::GET, &format!("{path}/errors"), None)
                .await?;
            let rows: Vec<[String; 3]> = errors["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| [text(&e["code"]), text(&e["count"]), text(&e["explanation"])])
                .collect();
            println!();
            println!("failed members by error code:");
            print_table(["CODE", "MEMBERS", "WHAT TO DO"], &rows);
        }
    }
    match exit_code(job.status) {
        0 => Ok(()),
        code => Err(Exit {
            code,
            message: if job.status == JobStatus::Paused {
                format!("job {id} is paused by its canary: licensor jobs resume {id} (or cancel)")
            } else {
                format!("job {id} ended {}", label(job.status))
            },
        }
        .into()),
    }
}

fn print_rerun(job: &Job) {
    println!(
        "rerun     {} run {}: {}",
        job.id,
        job.runs,
        label(job.status)
    );
}

async fn rerun(api: &Api, ids: &[Uuid], json: bool) -> anyhow::Result<()> {
    if let [id] = ids {
        let job = api
            .send(Method::POST, &format!("/v1/jobs/{id}/rerun"), None)
            .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&job)?);
        } else {
            print_rerun(&Job::from(&job)?);
        }
        return Ok(());
    }
    let outcome = api
        .send(
            Method::POST,
            "/v1/jobs/rerun",
            Some(json!({ "job_ids": ids })),
        )
        .await?;
    let rerun = outcome["rerun"].as_array().cloned().unwrap_or_default();
    let rejected = outcome["rejected"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for job in &rerun {
            print_rerun(&Job::from(job)?);
        }
        for r in &rejected {
            println!(
                "rejected  {} {}: {}",
                text(&r["job_id"]),
                text(&r["code"]),
                text(&r["detail"])
            );
        }
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: 1,
            message: format!(
                "{} of {} jobs were not rerun",
                rejected.len(),
                rerun.len() + rejected.len()
            ),
        }
        .into())
    }
}

#[derive(Debug, Clone, Copy)]
enum Bulk {
    Rerun,
    Cancel,
}

/// A bulk rerun or cancel by ids or filter: a line per refused job, a summary line, exit 1 if
/// any was refused.
async fn bulk(
    api: &Api,
    action: Bulk,
    ids: &[Uuid],
    filter: &FilterArgs,
    dry_run: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let (path, verb) = match action {
        Bulk::Rerun => ("/v1/jobs/rerun", "rerun"),
        Bulk::Cancel => ("/v1/jobs/cancel", "cancelled"),
    };
    let mut body = if filter.given() {
        json!({ "filter": filter.body(api).await? })
    } else {
        json!({ "job_ids": ids })
    };
    if dry_run {
        body["dry_run"] = json!(true);
    }
    let outcome = api.send(Method::POST, path, Some(body)).await?;
    let acted = outcome["acted_on"].as_u64().unwrap_or_default();
    let matched = outcome["matched"].as_u64().unwrap_or_default();
    let rejected = outcome["rejected"].as_array().cloned().unwrap_or_default();
    if json_out {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for r in &rejected {
            println!(
                "rejected  {} {}: {}",
                text(&r["job_id"]),
                text(&r["code"]),
                text(&r["detail"])
            );
        }
        let would = if dry_run { "would be " } else { "" };
        println!("{acted} of {matched} jobs {would}{verb}");
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            code: 1,
            message: format!("{} of {matched} jobs were refused", rejected.len()),
        }
        .into())
    }
}

/// `POST /v1/jobs/{id}/{action}` (undo, launch, resume): prints the job that answers — its id, or the
/// whole job with `--json`.
async fn post_job_action(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    let id = job_id(id)?;
    let job = api
        .send(Method::POST, &format!("/v1/jobs/{id}/{action}"), None)
        .await?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        println!("{}", job["id"].as_str().unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reading_members_never_looks_complete() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "01a22a68-dd89-74b0-8546-e07d77b2721e",
            "kind": "assign",
            "status": "running",
            "expanding": true,
            "progress": {"total": 34965, "succeeded": 34965, "failed": 0, "skipped": 0},
            "runs": 1,
            "groups": [],
            "created_at": "2026-11-30T03:04:05Z",
            "error": null
        }))
        .unwrap();
        let line = job.line();
        assert!(line.contains("reading members: 34,965 so far"), "{line}");
        assert!(!line.contains("of 34965 done"), "{line}");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000_000), "1,000,000");
    }

    #[test]
    fn an_undo_says_which_job_it_undoes() {
        let job = |request: Value| -> Job {
            serde_json::from_value(serde_json::json!({
                "id": "01a22a68-dd89-74b0-8546-e07d77b2721e",
                "kind": "remove",
                "status": "finished",
                "progress": {"total": 3, "succeeded": 3, "failed": 0, "skipped": 0},
                "runs": 1,
                "groups": [],
                "created_at": "2026-11-30T03:04:05Z",
                "error": null,
                "request": request,
            }))
            .unwrap()
        };
        let undo = job(
            serde_json::json!({"kind": "remove", "undo_of": "0192c3d4-1111-7222-8333-444455556666"}),
        );
        assert_eq!(undo.kind_label(), "remove (undo of 0192c3d4)");
        assert_eq!(
            job(serde_json::json!({"kind": "remove"})).kind_label(),
            "remove"
        );
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
                {"servicePlanId": "57ff2da0-773e-42df-b2af-ffb7a2317929", "servicePlanName": "TEAMS1"},
                {"servicePlanId": "4828c8ec-dc2e-4779-b502-87ac9ce28ab7", "servicePlanName": "MCOEV"},
            ],
        })]
    }

    #[test]
    fn licenses_by_part_number_or_id_with_plans_by_name_or_id() {
        let skus = skus();
        let e5 = Uuid::parse_str("06ebc4ee-1bb5-47dd-8120-11324bc54e06").unwrap();
        let teams = Uuid::parse_str("57ff2da0-773e-42df-b2af-ffb7a2317929").unwrap();
        let other = Uuid::parse_str("4828c8ec-dc2e-4779-b502-87ac9ce28ab7").unwrap();
        assert_eq!(
            license_to_add(&skus, "spe_e5").unwrap(),
            LicenseToAdd {
                sku_id: e5,
                disabled_plans: vec![]
            }
        );
        assert_eq!(
            license_to_add(&skus, &format!("{e5}:teams1, {other}")).unwrap(),
            LicenseToAdd {
                sku_id: e5,
                disabled_plans: vec![teams, other]
            }
        );
        // A SKU id the tenant does not list is the API's to refuse.
        let unknown = Uuid::new_v4();
        assert_eq!(sku_id(&skus, &unknown.to_string()).unwrap().0, unknown);
        let e = license_to_add(&skus, "SPE_E3").unwrap_err().to_string();
        assert!(e.contains("SPE_E3") && e.contains("SPE_E5"), "{e}");
        let e = license_to_add(&skus, "SPE_E5:TEAMS9")
            .unwrap_err()
            .to_string();
        assert!(e.contains("TEAMS9") && e.contains("MCOEV"), "{e}");
    }

    #[test]
    fn statuses_in_the_monitors_words() {
        assert_eq!(label(JobStatus::Queued), "Waiting");
        assert_eq!(
            label(JobStatus::FinishedWithException),
            "Finished with Exception"
        );
        assert_eq!(exit_code(JobStatus::Finished), 0);
        let codes: Vec<u8> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(exit_code)
            .collect();
        assert_eq!(codes, [0, 3, 4, 5, 6]);
        assert_eq!(exit_code(JobStatus::Paused), 7);
        assert_eq!(label(JobStatus::Paused), "Paused");
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
