//! `licensor jobs …`: group license jobs from a terminal or a script — submit, list, watch,
//! rerun, cancel, and download reports and exports. An HTTP client of a running licensor
//! (`--url`/`--token`, or `LICENSOR_URL`/`LICENSOR_TOKEN`); `--json` prints the API's answer.
//!
//! Exit codes: 0 success; 1 an error (licensor unreachable or refusing, bad input), or for
//! `jobs rerun` some of the jobs were not rerun; 2 a usage error. `jobs watch` ends with the
//! job's final status: 0 Finished, 3 Finished with Exception, 4 Failed, 5 Cancelled, 6
//! Previewed, 7 Paused (its canary failed too often: `jobs resume ID` or `jobs cancel ID`).
//!
//! One file per subcommand; this module holds the subcommands' definitions, the dispatch and
//! what several of them share: the job as the API answers it ([`JobView`], the API's own type),
//! its lines in the Job Monitor's words, ids and groups from the command line, and downloads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::{FileFormat, JobView};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::client::{Api, Client, text};

mod bulk;
mod cancel;
mod export;
mod launch;
mod list;
mod report;
mod rerun;
mod resume;
mod submit;
mod undo;
mod watch;

use bulk::Targets;
use submit::Submit;

/// How often `jobs watch` reads the job (and `jobs submit --preview` the preview).
const POLL: Duration = Duration::from_millis(500);

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
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = clap::builder::RangedI64ValueParser::<u64>::new().range(1..=10_000))]
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
        #[command(flatten)]
        targets: Targets,
    },
    /// Cancel Waiting, In Progress, Previewed or Paused jobs: members not yet worked on are
    /// skipped. One or more
    /// ids, or every job a filter matches (`--status queued …`). Exits 1 if any was refused.
    Cancel {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        targets: Targets,
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

pub async fn run(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Submit(args) => submit::run(*args).await,
        JobsCommand::List {
            client,
            status,
            kind,
            limit,
        } => list::run(&client, &status, &kind, limit).await,
        JobsCommand::Watch { client, id } => watch::run(&client, &id).await,
        JobsCommand::Rerun { client, targets } => rerun::run(&client, &targets).await,
        JobsCommand::Cancel { client, targets } => cancel::run(&client, &targets).await,
        JobsCommand::Undo { client, id } => undo::run(&client, &id).await,
        JobsCommand::Launch { client, id } => launch::run(&client, &id).await,
        JobsCommand::Resume { client, id } => resume::run(&client, &id).await,
        JobsCommand::Report {
            client,
            id,
            format,
            output,
        } => report::run(&client, &id, format, &output).await,
        JobsCommand::Export { client, id, output } => export::run(&client, &id, &output).await,
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

/// A job id from the command line.
fn job_id(s: &str) -> anyhow::Result<Uuid> {
    Uuid::try_parse(s.trim()).map_err(|_| anyhow::anyhow!("`{s}` is not a job id"))
}

/// Job ids from the command line, the first bad one an error.
fn job_ids(ids: &[String]) -> anyhow::Result<Vec<Uuid>> {
    ids.iter().map(|id| job_id(id)).collect()
}

/// A job as the API answered it; `--json` prints the answer as it came.
fn job_view(value: &Value) -> anyhow::Result<JobView> {
    serde_json::from_value(value.clone()).context("licensor answered with an unexpected job")
}

/// Members worked on so far: succeeded, failed or skipped.
fn done(job: &JobView) -> i64 {
    job.progress.succeeded + job.progress.failed + job.progress.skipped
}

/// "remove", or "remove (undo of 0192c3d4)" for a job that undoes another.
fn kind_label(job: &JobView) -> String {
    let undo_of = job
        .request
        .get("undo_of")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::try_parse(id).ok());
    match undo_of {
        Some(of) => format!("{} (undo of {})", job.kind.as_str(), &of.to_string()[..13]),
        None => job.kind.as_str().to_owned(),
    }
}

/// "Sales, Engineering" (ids until the job has read the names).
fn group_names(job: &JobView) -> String {
    let names: Vec<&str> = job
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
fn progress_line(job: &JobView) -> String {
    let p = &job.progress;
    if p.total == 0 && !job.status.is_terminal() {
        return label(job.status).to_owned();
    }
    if job.status == JobStatus::Previewed {
        // A preview writes nothing: its members are predicted, not done.
        return format!(
            "{}: {} members predicted, nothing written (launch it with `licensor jobs launch {}`)",
            label(job.status),
            group_digits(p.total),
            job.id
        );
    }
    if job.expanding {
        // Never "N of N done" while members are still being read.
        return format!(
            "{}: reading members: {} so far ({} done)",
            label(job.status),
            group_digits(p.total),
            group_digits(done(job))
        );
    }
    if job.kind == JobKind::Export {
        // An export's members are read, not written: "done" and "succeeded" would tell a
        // failed delivery as a success.
        let read = group_digits(p.total);
        return match job.status {
            JobStatus::Finished | JobStatus::FinishedWithException => {
                format!("{}: {read} members exported", label(job.status))
            }
            JobStatus::Failed | JobStatus::Cancelled => format!(
                "{}: {read} members read; no file delivered",
                label(job.status)
            ),
            _ => format!(
                "{}: {read} members read; writing the file",
                label(job.status)
            ),
        };
    }
    let line = format!(
        "{}: {} of {} done ({} succeeded, {} failed, {} skipped)",
        label(job.status),
        done(job),
        p.total,
        p.succeeded,
        p.failed,
        p.skipped
    );
    if job.status == JobStatus::Cancelled && !job.settled() {
        // Members licensor may have written are read before they are called anything.
        return format!(
            "{line}; {} still being settled (read before they are called done or cancelled)",
            members(p.pending)
        );
    }
    line
}

/// "1 member", "1,200 members".
fn members(n: i64) -> String {
    match n {
        1 => "1 member".to_owned(),
        n => format!("{} members", group_digits(n)),
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

/// A group's id: as given when it is one, else the one group whose display name is exactly
/// `given`, or — when none is — the one whose name is `given` in another case (Entra ID's
/// group search, like the pickers, does not tell case apart). Several of either → an error
/// naming their ids.
async fn group_id(api: &Api, given: &str) -> anyhow::Result<String> {
    let name = given.trim();
    if let Ok(id) = licensor_core::jobs::GroupId::parse(name) {
        return Ok(id.to_string());
    }
    let req = api
        .request(Method::GET, "/v1/directory/groups")
        .query(&[("search", name), ("limit", "500")]);
    let found = api.json(req).await?;
    let found = found["data"].as_array().cloned().unwrap_or_default();
    let mut exact: Vec<&Value> = found
        .iter()
        .filter(|g| g["display_name"].as_str() == Some(name))
        .collect();
    if exact.is_empty() {
        let folded = name.to_lowercase();
        exact = found
            .iter()
            .filter(|g| {
                g["display_name"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase() == folded)
            })
            .collect();
    }
    match exact.as_slice() {
        [one] => Ok(text(&one["id"])),
        [] => {
            let similar: Vec<String> = found
                .iter()
                .take(5)
                .map(|g| format!("`{}`", text(&g["display_name"])))
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

/// Write a downloaded file, or print it when `path` is `-`.
/// Refuse `--json` with `-o -` before anything is downloaded: `--json` prints where the file
/// went, and with `-` the file itself is standard output.
fn check_output(path: &Path, json: bool) -> anyhow::Result<()> {
    if json && path.as_os_str() == "-" {
        anyhow::bail!(
            "--json prints where the file was written; with -o - the file itself goes to standard output (leave out --json)"
        );
    }
    Ok(())
}

/// Write a downloaded file to `path` (`-`: standard output), then say where: one line on
/// standard error, or with `json` `{"path": …, "bytes": …}` on standard output.
fn write_file(path: &Path, bytes: &[u8], json: bool) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "path": path.display().to_string(), "bytes": bytes.len() })
        );
    } else {
        eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::json;

    use super::*;

    /// `GET /v1/jobs/{id}` as the API answers it, with `changes` on top.
    pub(super) fn answer(changes: Value) -> Value {
        let mut job = json!({
            "id": "01a22a68-dd89-74b0-8546-e07d77b2721e",
            "kind": "assign",
            "status": "finished",
            "expanding": false,
            "request": {"kind": "assign"},
            "progress": {"total": 3, "succeeded": 3, "failed": 0, "skipped": 0, "pending": 0},
            "runs": 1,
            "created_by": null,
            "created_by_name": null,
            "parent_job_id": null,
            "groups": [],
            "created_at": "2026-11-30T03:04:05Z",
            "started_at": null,
            "expanded_at": null,
            "finished_at": null,
            "error": null,
            "export": null,
            "last_progress_at": null,
            "stuck": false,
            "stuck_since": null,
            "requeues": 0,
            "preview": null,
            "canary_passed_at": null,
        });
        if let (Some(job), Value::Object(changes)) = (job.as_object_mut(), changes) {
            job.extend(changes);
        }
        job
    }

    #[test]
    fn the_apis_answer_is_read_as_the_apis_own_view() {
        let view = job_view(&answer(json!({}))).unwrap();
        // What the API would send again is what it sent.
        assert_eq!(serde_json::to_value(&view).unwrap(), answer(json!({})));
        let e = job_view(&json!({"id": "x"})).unwrap_err().to_string();
        assert_eq!(e, "licensor answered with an unexpected job");
    }

    #[test]
    fn a_job_reading_members_never_looks_complete() {
        let job = job_view(&answer(json!({
            "status": "running",
            "expanding": true,
            "progress": {"total": 34965, "succeeded": 34965, "failed": 0, "skipped": 0, "pending": 0},
        })))
        .unwrap();
        let line = progress_line(&job);
        assert!(line.contains("reading members: 34,965 so far"), "{line}");
        assert!(!line.contains("of 34965 done"), "{line}");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000_000), "1,000,000");
    }

    #[test]
    fn an_export_tells_members_read_not_done() {
        let export = |status: &str| {
            let job = job_view(&answer(json!({
                "kind": "export",
                "request": {"kind": "export"},
                "status": status,
                "progress": {"total": 1200, "succeeded": 1200, "failed": 0, "skipped": 0, "pending": 0},
            })))
            .unwrap();
            progress_line(&job)
        };
        assert_eq!(
            export("failed"),
            "Failed: 1,200 members read; no file delivered"
        );
        assert_eq!(export("finished"), "Finished: 1,200 members exported");
        assert_eq!(
            export("running"),
            "In Progress: 1,200 members read; writing the file"
        );
        assert!(!export("failed").contains("succeeded"));
    }

    #[test]
    fn an_undo_says_which_job_it_undoes() {
        let job = |request: Value| -> JobView {
            job_view(&answer(json!({"kind": "remove", "request": request}))).unwrap()
        };
        let undo =
            job(json!({"kind": "remove", "undo_of": "0192c3d4-1111-7222-8333-444455556666"}));
        assert_eq!(kind_label(&undo), "remove (undo of 0192c3d4-1111)");
        assert_eq!(kind_label(&job(json!({"kind": "remove"}))), "remove");
    }
}
