//! `jobs watch ID`: follow a job until it ends (or its canary pauses it), then its counts and
//! its failed members by error code; the exit code tells the final status.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use licensor_core::domain::{JobKind, JobStatus};
use licensor_core::jobs::JobView;
use reqwest::Method;
use uuid::Uuid;

use super::{
    POLL, done, group_digits, group_names, job_id, job_view, kind_label, label, progress_line,
};
use crate::cli::Exit;
use crate::cli::client::{Api, Client, print_table, text};

pub(super) async fn run(client: &Client, id: &str) -> anyhow::Result<()> {
    let api = Api::new(client)?;
    watch(&api, job_id(id)?, client.json).await
}

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

    fn show(&mut self, job: &JobView) {
        match self {
            ProgressView::Bar(bar) => {
                bar.set_length(job.progress.total.max(0).unsigned_abs());
                bar.set_position(done(job).max(0).unsigned_abs());
                bar.set_message(bar_message(job));
            }
            ProgressView::Lines { last } => {
                let line = progress_line(job);
                if line != *last {
                    println!("{line}");
                    *last = line;
                }
            }
            ProgressView::Quiet => {}
        }
    }

    /// End the view; the last line it printed, if it printed lines.
    fn finish(self) -> Option<String> {
        match self {
            ProgressView::Bar(bar) => {
                bar.finish_and_clear();
                None
            }
            ProgressView::Lines { last } => Some(last),
            ProgressView::Quiet => None,
        }
    }
}

/// The progress bar's words beside its count: the status and the members' outcomes — for an
/// export, members read (its members are read, not written: "succeeded" would tell a failed
/// delivery as a success).
fn bar_message(job: &JobView) -> String {
    if job.kind == JobKind::Export {
        return format!(
            "{} · {} members read",
            label(job.status),
            group_digits(job.progress.total)
        );
    }
    format!(
        "{} · {} succeeded, {} failed, {} skipped",
        label(job.status),
        job.progress.succeeded,
        job.progress.failed,
        job.progress.skipped
    )
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
        let job = job_view(&answer)?;
        display.show(&job);
        if job.settled() || job.status == JobStatus::Paused {
            break answer;
        }
        tokio::time::sleep(POLL).await;
    };
    let shown = display.finish();
    let job = job_view(&answer)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "job {} ({} {}), run {}: {}",
            job.id,
            kind_label(&job),
            group_names(&job),
            job.runs,
            label(job.status)
        );
        if job.status == JobStatus::Previewed || job.kind == JobKind::Export {
            // A preview's members are predicted and an export's read, not written: its own
            // line says so, once (the plain progress lines may have ended with it already).
            let line = progress_line(&job);
            if shown.as_deref() != Some(line.as_str()) {
                println!("{line}");
            }
        } else {
            println!(
                "{} succeeded, {} failed, {} skipped of {}",
                job.progress.succeeded,
                job.progress.failed,
                job.progress.skipped,
                job.progress.total
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_exports_bar_tells_members_read() {
        let job = |kind: &str| {
            job_view(&super::super::tests::answer(json!({
                "kind": kind,
                "request": {"kind": kind},
                "status": "failed",
                "progress": {"total": 1200, "succeeded": 1200, "failed": 0, "skipped": 0, "pending": 0},
            })))
            .unwrap()
        };
        assert_eq!(bar_message(&job("export")), "Failed · 1,200 members read");
        assert_eq!(
            bar_message(&job("assign")),
            "Failed · 1200 succeeded, 0 failed, 0 skipped"
        );
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
}
