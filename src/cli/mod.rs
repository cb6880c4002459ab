//! The `licensor` command line: run modes (`demo`, `serve`, `worker`, `migrate`),
//! administration (`tenant`, `token`) and clients of a running licensor (`licenses`, `jobs`,
//! `webhooks`).
//! Errors are one line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use licensor_core::Settings;

use crate::app::{Application, Roles, StartError, shutdown_signal};

mod admin;
mod client;
mod demo;
mod directory;
mod jobs;
mod licenses;
mod members;
mod webhooks;

#[derive(Debug, Parser)]
#[command(
    name = "licensor",
    version,
    about = "Group license jobs, seat inventory and started licenses for organisations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine with a bundled directory emulator and a demo tenant.
    Demo {
        /// Address for the API and Job Monitor.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the embedded database and queue live.
        #[arg(long, default_value = "./licensor-data")]
        data_dir: PathBuf,
    },
    /// Serve the HTTP API and the Job Monitor. On the embedded default (SQLite queue) the same
    /// process also works the queue, so one command runs everything.
    Serve {
        /// Serve only; leave the queue to `licensor worker` processes.
        #[arg(long)]
        no_worker: bool,
    },
    /// Process jobs from the queue (run as many as you like).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Print the OpenAPI document.
    Openapi,
    /// Seat inventory: list, create, check out and check in licenses (a client of a running
    /// licensor: --url/--token or LICENSOR_URL/LICENSOR_TOKEN).
    #[command(subcommand)]
    Licenses(licenses::LicensesCommand),
    /// Group license jobs: submit (or preview), list, watch, rerun, cancel, launch, resume, undo,
    /// reports and exports (a client of a running licensor: --url/--token or
    /// LICENSOR_URL/LICENSOR_TOKEN). `jobs watch` exits 0 when the job is Finished, 3 Finished
    /// with Exception, 4 Failed, 5 Cancelled, 6 Previewed, 7 Paused.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Webhook endpoints: create, list, their deliveries, redeliver, delete (a client of a
    /// running licensor with an admin token: --url/--token or LICENSOR_URL/LICENSOR_TOKEN).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// The tenant's directory: `directory groups [SEARCH]` and `directory skus` list the groups
    /// and SKUs a job names (a client of a running licensor).
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// Directory members: `members history UPN` lists every job that touched one (a client of a
    /// running licensor).
    #[command(subcommand)]
    Members(members::MembersCommand),
}

/// A command that ran but did not succeed, with the exit code that tells a script how (e.g.
/// `jobs watch` ends with the job's final status). Its message is printed as it is.
#[derive(Debug)]
pub(crate) struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A command line clap refused. Help and version are printed as clap renders them (and so is
/// the help shown for a command given without its subcommand); a usage error is one line on
/// stderr with clap's tips and where the command's help is, exit 2. Example:
/// `error: unexpected argument '--grop' found; tip: a similar argument exists: '--group'; see
/// 'licensor jobs submit --help'`.
pub fn refuse(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(code);
    }
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "{}",
        usage_line(&e.render().to_string(), &command_of(&args))
    );
    ExitCode::from(code)
}

/// The (sub)command `args` name, as `licensor jobs list`: the longest run of leading words that
/// are subcommands of each other (or their aliases).
fn command_of(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut path = vec!["licensor".to_owned()];
    for arg in args.iter().skip(1) {
        let Some(sub) = command
            .get_subcommands()
            .find(|c| c.get_name() == arg || c.get_all_aliases().any(|a| a == arg))
            .cloned()
        else {
            break;
        };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}

/// clap's rendered usage error on one line: its `error:` and `tip:` lines, then the command
/// named by its `Usage:` line as the place to read more — or, for errors of a value (which have
/// no usage line), `command`, the one the arguments named (see [`command_of`]).
fn usage_line(rendered: &str, command_given: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut command = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(usage) = line.strip_prefix("Usage:") {
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']) && !w.contains('|'))
                .collect();
            command.get_or_insert_with(|| words.join(" "));
        } else if line.starts_with("For more information") {
            continue;
        } else {
            match parts.last_mut() {
                // A list under its heading ("…were not provided:") reads on after it.
                Some(last) if last.ends_with(':') => {
                    last.push(' ');
                    last.push_str(&line);
                }
                _ => parts.push(line),
            }
        }
    }
    let command = command
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| command_given.to_owned());
    parts.push(format!("see '{command} --help'"));
    parts.join("; ")
}

/// Run the command and turn any failure into one line and an exit code.
pub fn main(cli: Cli) -> ExitCode {
    crate::tune_allocator();
    if !cli.command.runs_a_server() {
        end_quietly_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(exit) => {
                if !exit.message.is_empty() {
                    eprintln!("{}", exit.message);
                }
                ExitCode::from(exit.code)
            }
            // The reader of the output went away (`licensor jobs report ID --output - | head`):
            // nothing more to say, as other command-line tools do.
            None if closed_pipe(&e) => ExitCode::SUCCESS,
            None => {
                eprintln!("error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}

impl Command {
    /// Whether the command runs a long-lived server or worker (`demo`, `serve`, `worker`), as
    /// opposed to a command that prints its answer and ends.
    fn runs_a_server(&self) -> bool {
        matches!(
            self,
            Command::Demo { .. } | Command::Serve { .. } | Command::Worker
        )
    }
}

/// Let a write to a closed standard output end the process quietly, as other command-line tools
/// do (`licensor jobs list | head -2`), instead of every `println!` panicking on the broken pipe.
/// Only for commands that print and end: a server keeps the inherited "ignore" so that no closed
/// pipe or socket can end it.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called at the start of `main`, before any other thread exists; SIG_DFL is a valid
    // action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether `e` is a local write (standard output) whose reader has closed the pipe — never a
/// connection to licensor that broke, which is an error to report.
fn closed_pipe(e: &anyhow::Error) -> bool {
    let broken = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    broken && !e.chain().any(|cause| cause.is::<reqwest::Error>())
}

fn one_line(e: &anyhow::Error) -> String {
    // The outermost context plus its causes, joined on one line.
    format!("{e:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::api::openapi())?);
            Ok(())
        }
        Command::Demo { listen, data_dir } => demo::run(&listen, data_dir).await,
        Command::Licenses(cmd) => licenses::run(cmd).await,
        Command::Jobs(cmd) => jobs::run(cmd).await,
        Command::Webhooks(cmd) => webhooks::run(cmd).await,
        Command::Members(cmd) => members::run(cmd).await,
        Command::Directory(cmd) => directory::run(cmd).await,
        command => {
            let settings = Settings::load()?;
            crate::telemetry::init_tracing(&settings.log);
            match command {
                Command::Serve { no_worker } => {
                    let embedded =
                        matches!(settings.queue, licensor_core::config::QueueUrl::Sqlite(_));
                    let roles = if embedded && !no_worker {
                        Roles::ALL
                    } else {
                        Roles::API
                    };
                    serve(settings, roles).await
                }
                Command::Worker => serve(settings, Roles::WORKER).await,
                Command::Migrate => {
                    crate::app::open_database(&settings).await?;
                    println!("migrations applied to {}", settings.database.redacted());
                    Ok(())
                }
                Command::Tenant(cmd) => admin::tenant(&settings, cmd).await,
                Command::Token(cmd) => admin::token(&settings, cmd).await,
                Command::Demo { .. }
                | Command::Openapi
                | Command::Licenses(_)
                | Command::Jobs(_)
                | Command::Webhooks(_)
                | Command::Members(_)
                | Command::Directory(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

async fn serve(settings: Settings, roles: Roles) -> anyhow::Result<()> {
    let app = Application::build(settings, roles)
        .await
        .map_err(start_error)?;
    if let Some(addr) = app.local_addr() {
        tracing::info!(%addr, "listening");
    }
    app.run_until(shutdown_signal()).await
}

pub(crate) fn start_error(e: StartError) -> anyhow::Error {
    anyhow::anyhow!(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_error_is_one_line_naming_the_command_to_ask_for_help() {
        for (args, says, command) in [
            (
                &["licensor", "jobs", "submit", "--grop", "x"][..],
                "error: unexpected argument '--grop' found",
                "see 'licensor jobs submit --help'",
            ),
            (
                &["licensor", "jobz"][..],
                "error: unrecognized subcommand 'jobz'",
                "see 'licensor --help'",
            ),
            (
                &["licensor", "jobs", "watch"][..],
                "error: the following required arguments were not provided: <ID>;",
                "see 'licensor jobs watch --help'",
            ),
            (
                &["licensor", "jobs", "list", "--limit", "0"][..],
                "error: invalid value '0' for '--limit <LIMIT>'",
                "see 'licensor jobs list --help'",
            ),
            (
                &[
                    "licensor",
                    "jobs",
                    "submit",
                    "--kind",
                    "assign",
                    "--group",
                    "Sales",
                    "--add",
                    "SPE_E5",
                    "--expires-in",
                    "-1d",
                ][..],
                "error: invalid value '-1d' for '--expires-in <N{d|w|m}>'",
                "see 'licensor jobs submit --help'",
            ),
            (
                &["licensor", "jobs", "report", "x", "--format", "pdf"][..],
                "error: invalid value 'pdf' for '--format <FORMAT>'",
                "see 'licensor jobs report --help'",
            ),
        ] {
            let e = Cli::try_parse_from(args).expect_err("a usage error");
            let rendered = e.render().to_string();
            assert!(rendered.lines().count() > 1, "clap renders {rendered:?}");
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let line = usage_line(&rendered, &command_of(&args));
            assert!(!line.contains('\n'), "{line:?}");
            assert!(
                line.starts_with(says) && line.ends_with(command),
                "{args:?}: {line:?}"
            );
        }
    }
}
