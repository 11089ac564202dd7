//! The `respawn` command line: parse, call the library, print. No logic a test would want lives here.

/// Prints a line of the CLI's own output. A closed pipe (`respawn runs | head -1`) ends the program quietly, as a
/// Unix filter should, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = writeln!(std::io::stdout().lock(), $($arg)*);
        $crate::cli::closed_pipe_ends_quietly(written);
    }};
}

/// Like [`out!`], without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = write!(std::io::stdout().lock(), $($arg)*);
        $crate::cli::closed_pipe_ends_quietly(written);
    }};
}

mod cache;
mod durable;
mod evidence;
mod fleet;
mod image;
mod kept;
mod lock;
mod plan;
mod plugin;
mod run;
mod scaffold;
mod setup;
mod store;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use respawn::ui::LogFormat;
use respawn::workflow::Invalid;

/// Exit codes of DESIGN.md §9.
pub mod exit {
    pub const OK: u8 = 0;
    pub const RUN_FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const INTERRUPTED: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "respawn",
    version,
    about = "Disaster-recovery runner: recreate, verify and tear down environments from versioned workflows",
    long_about = "respawn runs versioned recovery workflows (YAML) whose steps are sandboxed WebAssembly plugins. \
                  It recreates an environment in another region from stored images, verifies it, measures RTO \
                  and RPO, and leaves a tamper-evident report.\n\n\
                  Exit codes: 0 success, 1 the run failed, 2 bad usage or invalid input, 3 interrupted (resumable)."
)]
pub struct Cli {
    /// More log detail on stderr (-v, -vv). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a workflow file; exit 0 when valid, 2 with every problem listed as file:line:col.
    Validate(validate::ValidateArgs),
    /// Show what a run would do, without side effects.
    Plan(plan::PlanArgs),
    /// Recreate, verify, then tear down the environment, and write a report.
    Drill(RunArgs),
    /// Recreate and verify the environment for real, passing approval gates on a TTY or with --yes.
    Failover(FailoverArgs),
    /// Continue an interrupted run from its journal.
    Resume(ResumeArgs),
    /// Run the verify section again against what a failover or kept drill left running; exit 0 when all pass.
    Verify(VerifyArgs),
    /// Tear down what a failover or kept drill left (or a dead runner's run), from its journal.
    Destroy(DestroyArgs),
    /// List runs recorded in the state store, or one workflow's runs over time (--workflow).
    Runs(RunsArgs),
    /// Render the report of a run.
    Report(ReportArgs),
    /// Audit trail commands.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write respawn.lock beside a workflow, pinning every plugin by sha256.
    Lock(WorkflowArg),
    /// Build and check stored OCI images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Inspect and scaffold plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Move single objects in and out of a store (e.g. WAL segments, as PostgreSQL's archive_command and
    /// restore_command).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// List and prune the compile cache of precompiled plugins.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Many recovery workflows at once: validate, run a member (a Kubernetes Indexed Job pod), run all locally,
    /// write the Job manifest, report.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
}

/// Options shared by commands that take a workflow and params.
#[derive(Debug, Args)]
pub struct WorkflowParams {
    /// Path of the workflow YAML.
    pub workflow: PathBuf,
    /// A workflow param, NAME=VALUE; repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = respawn::workflow::params::parse_assignment)]
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: WorkflowParams,
    /// Skip teardown, leaving the drilled environment up.
    #[arg(long)]
    pub keep: bool,
    /// Where report.json, report.md and junit.xml go (default .respawn/runs/RUN_ID/).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// State store URL for the journal (default file://.respawn/state).
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Sign the report and the journal head with this ed25519 key: a PKCS#8 PEM file, or `env:NAME` for an
    /// environment variable holding it. Writes report.sig.json; `audit verify --public-key` checks it.
    #[arg(long, value_name = "FILE|env:NAME")]
    pub sign_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub target: WorkflowParams,
    /// Confirm every approval gate without asking.
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    #[arg(long)]
    pub no_progress: bool,
    /// Sign the report and the journal head with this ed25519 key: a PKCS#8 PEM file, or `env:NAME` for an
    /// environment variable holding it. Writes report.sig.json; `audit verify --public-key` checks it.
    #[arg(long, value_name = "FILE|env:NAME")]
    pub sign_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub run_id: String,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Resume even though another runner's lease looks alive.
    #[arg(long)]
    pub takeover: bool,
    /// Confirm every approval gate of a resumed failover that was not confirmed before.
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
    /// Sign the report and the journal head with this ed25519 key: a PKCS#8 PEM file, or `env:NAME` for an
    /// environment variable holding it. Writes report.sig.json; `audit verify --public-key` checks it.
    #[arg(long, value_name = "FILE|env:NAME")]
    pub sign_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub run_id: String,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Where the run's report is rewritten with this verification (default: where the run wrote it).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    pub run_id: String,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Destroy a failover's environment without asking on the terminal.
    #[arg(long)]
    pub yes: bool,
    /// Destroy a run whose runner's lease looks alive (that runner is stopped at its next write).
    #[arg(long)]
    pub takeover: bool,
    /// Where the run's report is rewritten with the teardown (default: where the run wrote it).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Show the finished runs of this workflow over time instead: RTO and RPO against objectives, and the trend.
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    /// With --workflow: JSON instead of a Markdown table.
    #[arg(long, requires = "workflow")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(required_unless_present = "history", conflicts_with = "history")]
    pub run_id: Option<String>,
    #[arg(long, value_parser = ["json", "md", "junit"], default_value = "md")]
    pub format: String,
    /// Where the run's report was written, if not the default .respawn/runs/RUN_ID/.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Render the report from the run's journal in this state store (any machine; the same bytes as the
    /// original). Without it: the report directory, else the default state store.
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Show the finished runs of this workflow over time (md or json) instead of one run's report.
    #[arg(long, value_name = "WORKFLOW")]
    pub history: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Re-hash a run's journal chain and name the first altered, removed or reordered event.
    Verify {
        run_id: String,
        #[arg(long, env = "RESPAWN_STATE")]
        state: Option<String>,
        /// Where the run's report is, to check against the journal (default: where the run wrote it).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Check the report's signature with this ed25519 public key (SPKI PEM).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Make an ed25519 key pair for --sign-key: PREFIX.pem (private, mode 0600) and PREFIX.pub.pem.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct WorkflowArg {
    pub workflow: PathBuf,
}

/// `image pack --compression`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Gzip,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pack a directory into a reproducible OCI image layout in a store.
    Pack {
        dir: PathBuf,
        #[arg(long)]
        to: String,
        #[arg(long)]
        tag: String,
        /// Layer compression: zstd (on every core), or gzip for tools that cannot read zstd layers.
        #[arg(long, value_enum, default_value_t = Compression::Zstd)]
        compression: Compression,
    },
    /// Re-hash every blob of a stored OCI image layout.
    Verify { store_url: String },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List the builtin plugins with their digests and operations.
    List,
    /// Show a plugin's name, version, digest, operations with their param schemas, and wanted capabilities.
    Inspect {
        /// builtin:NAME@VERSION, file://PATH or a path to a .wasm component.
        plugin: String,
    },
    /// Scaffold a new plugin in ./NAME: a sample operation, a unit test, build.sh and a workflow using it.
    New {
        name: String,
        /// The plugin's language. The scaffold carries the SDK and the WIT it needs, so it builds with only the
        /// language's toolchain.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Rust only: depend on this SDK directory (plugins/sdk of a respawn checkout) instead of a vendored copy.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Runs a parsed command line and maps the outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Drill(args) => run::drill(args),
        Command::Failover(args) => run::failover(args),
        Command::Resume(args) => durable::resume(args),
        Command::Verify(args) => kept::verify(args),
        Command::Destroy(args) => kept::destroy(args),
        Command::Runs(args) => durable::list(args),
        Command::Report(args) => evidence::report(args),
        Command::Audit(AuditCommand::Verify {
            run_id,
            state,
            report_dir,
            public_key,
        }) => evidence::audit_verify(
            &run_id,
            state.as_deref(),
            report_dir.as_deref(),
            public_key.as_deref(),
        ),
        Command::Audit(AuditCommand::Keygen { out }) => evidence::keygen(&out),
        Command::Lock(args) => lock::run(args),
        Command::Image(command) => image::run(command),
        Command::Plugin(command) => plugin::run(command),
        Command::Store(command) => store::run(command),
        Command::Cache(command) => cache::run(command),
        Command::Fleet(command) => fleet::run(command),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(invalid) = err.downcast_ref::<Invalid>() {
                eprintln!("{invalid}");
                let n = invalid.diagnostics.len();
                eprintln!("error: {n} problem{} found", if n == 1 { "" } else { "s" });
                return ExitCode::from(exit::INVALID);
            }
            eprintln!("error: {}", error_chain(&err));
            let code = if err.downcast_ref::<Usage>().is_some()
                || err.downcast_ref::<durable::Contended>().is_some()
            {
                exit::INVALID
            } else {
                exit::RUN_FAILED
            };
            ExitCode::from(code)
        }
    }
}

/// Exits quietly (status 0) when the reader of stdout has gone; other write errors are reported once.
pub fn closed_pipe_ends_quietly(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(i32::from(exit::RUN_FAILED));
        }
    }
}

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `err` and its causes, joined with `: `, leaving out a cause whose text the message already holds (object_store
/// errors repeat their source in their own text, so `{:#}` printed the same failure three times).
pub(crate) fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("connection refused");
        let store = respawn::data::object_store::Error::Generic {
            store: "S3",
            source: Box::new(io),
        };
        let err = anyhow::Error::new(store).context("reading oci-layout");
        let text = error_chain(&err);
        assert_eq!(text.matches("connection refused").count(), 1, "{text}");
        assert!(text.starts_with("reading oci-layout: "), "{text}");
        let plain = anyhow::anyhow!("a").context("b");
        assert_eq!(error_chain(&plain), "b: a");
    }
}
