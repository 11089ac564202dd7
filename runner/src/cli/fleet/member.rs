//! `respawn fleet run`: one member of a fleet run, as one pod of a Kubernetes Indexed Job runs it.
//!
//! Exit codes keep DESIGN.md §9's meaning, so that a Job's pod failure policy can act on them: 0 the member
//! passed (now or before), 1 its run failed or a member it needs failed (retrying cannot help: fail the
//! index), 2 the fleet or the member's workflow is invalid (fail the index), 3 try again later: another runner
//! holds the member's run, a need has not passed in time, or the state store failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use respawn::data::object_store::ObjectStore;
use respawn::engine::Mode;
use respawn::journal::fleet::{Found, MAX_RUNS, Standing, latest_run, member_run_id, standing};
use respawn::workflow::fleet::{LoadedFleet, MemberMode};

use super::super::run::{self as runs, RunIdTaken};
use super::super::{ResumeArgs, Usage, WorkflowParams, durable, exit, setup};
use super::FleetRunId;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The fleet file.
    pub fleet: PathBuf,
    /// The member to run, counted from 0 in the fleet's order. Kubernetes sets JOB_COMPLETION_INDEX.
    #[arg(long, env = "JOB_COMPLETION_INDEX", value_name = "N")]
    pub index: usize,
    #[command(flatten)]
    pub id: FleetRunId,
    /// State store URL shared by every member (default file://.respawn/state).
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// Refuse to run unless the fleet file has this sha256 (the manifest of `fleet k8s` pins it).
    #[arg(long, value_name = "HEX")]
    pub expect_sha256: Option<String>,
    /// Confirm the approval gates of failover members.
    #[arg(long)]
    pub yes: bool,
    /// Where each member run's report directory goes (REPORT_DIR/RUN_ID; default .respawn/runs/RUN_ID).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
    /// Sign each member's report (see `drill --sign-key`).
    #[arg(long, value_name = "FILE|env:NAME")]
    pub sign_key: Option<String>,
    /// How long to wait for another runner's lease on this member's run to lapse before exiting 3.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5m")]
    pub lease_wait: Duration,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let fleet_run = args.id.fleet_run.clone();
    super::check_fleet_run_id(&fleet_run)?;
    let loaded = super::load_checked(&args.fleet)?;
    if let Some(expected) = &args.expect_sha256
        && !expected.eq_ignore_ascii_case(&loaded.sha256)
    {
        return Err(Usage(format!(
            "{} has sha256 {}, not the {expected} of --expect-sha256: this is not the fleet file the fleet run was \
             made for",
            args.fleet.display(),
            loaded.sha256
        ))
        .into());
    }
    let count = loaded.fleet.members.len();
    if args.index >= count {
        return Err(Usage(format!(
            "--index / JOB_COMPLETION_INDEX {} is out of range: fleet `{}` has {count} members (0 to {})",
            args.index,
            loaded.fleet.fleet,
            count - 1
        ))
        .into());
    }
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let retry_later = |e: anyhow::Error| -> anyhow::Result<u8> {
        eprintln!(
            "error: {}; this member can be retried",
            super::super::error_chain(&e)
        );
        Ok(exit::INTERRUPTED)
    };
    if let Err(e) = runtime.block_on(super::record_fleet(&store, &fleet_run, &loaded)) {
        return if e.downcast_ref::<Usage>().is_some() {
            Err(e)
        } else {
            retry_later(e)
        };
    }
    let member = &loaded.fleet.members[args.index];
    eprintln!(
        "respawn fleet {} {} member {} `{}` (fleet run {fleet_run})",
        loaded.fleet.fleet, loaded.fleet.version, args.index, member.name
    );
    match wait_for_needs(&runtime, &store, &loaded, &fleet_run, args.index) {
        Ok(()) => {}
        Err(NeedsNotMet::Failed(why)) => {
            eprintln!("error: {why}");
            return Ok(exit::RUN_FAILED);
        }
        Err(NeedsNotMet::Later(why)) => {
            eprintln!("error: {why}; this member can be retried");
            return Ok(exit::INTERRUPTED);
        }
    }
    let outcome = run_or_resume(&runtime, &store, &loaded, &args);
    match outcome {
        Ok(code) => Ok(code),
        Err(e)
            if e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<respawn::workflow::Invalid>().is_some() =>
        {
            Err(e)
        }
        Err(e) => retry_later(e),
    }
}

enum NeedsNotMet {
    /// A needed member failed: this one cannot pass.
    Failed(String),
    /// Not yet (or the store failed): try again later.
    Later(String),
}

/// Waits, bounded by the fleet's `needs_timeout`, until every member this one needs has passed.
fn wait_for_needs(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    loaded: &LoadedFleet,
    fleet_run: &str,
    index: usize,
) -> Result<(), NeedsNotMet> {
    let member = &loaded.fleet.members[index];
    let timeout = loaded.needs_timeout();
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    let mut last_said = Instant::now();
    for need in &member.needs {
        let Some(j) = loaded.index_of(need) else {
            continue;
        };
        loop {
            let found = runtime
                .block_on(latest_run(store, fleet_run, j))
                .map_err(|e| NeedsNotMet::Later(format!("reading the run of `{need}`: {e}")))?;
            match standing(&found) {
                Standing::Passed => break,
                Standing::Failed => {
                    let run = match &found {
                        Found::Run { run_id, .. } => run_id.as_str(),
                        Found::None => "?",
                    };
                    return Err(NeedsNotMet::Failed(format!(
                        "member `{}` needs `{need}` (member {j}), whose run {run} failed; this member does not start",
                        member.name
                    )));
                }
                other => {
                    if started.elapsed() >= timeout {
                        return Err(NeedsNotMet::Later(format!(
                            "member `{}` waited {} for `{need}` (member {j}, {other:?}) to pass (needs_timeout)",
                            member.name,
                            humantime::format_duration(Duration::from_secs(timeout.as_secs()))
                        )));
                    }
                    if last_said.elapsed() >= Duration::from_secs(15) {
                        tracing::info!(need = %need, standing = ?other, "waiting for a needed member to pass");
                        last_said = Instant::now();
                    }
                    std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    Ok(())
}

/// Starts the member's run, resumes it, or reports how it already ended.
fn run_or_resume(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    loaded: &LoadedFleet,
    args: &RunArgs,
) -> anyhow::Result<u8> {
    let fleet_run = &args.id.fleet_run;
    let waited = Instant::now();
    loop {
        // A journal that does not read or verify is not retried into: the index fails with why (exit 2).
        let found = runtime
            .block_on(latest_run(store, fleet_run, args.index))
            .map_err(|e| -> anyhow::Error {
                if e.is_usage() {
                    Usage(e.to_string()).into()
                } else {
                    e.into()
                }
            })?;
        let standing = standing(&found);
        let (attempt, run_id) = match &found {
            Found::Run {
                attempt, run_id, ..
            } => (*attempt, run_id.clone()),
            Found::None => (0, String::new()),
        };
        let report_dir = |id: &str| args.report_dir.as_ref().map(|d| d.join(id));
        match standing {
            Standing::Passed => {
                out!("member {} already passed: run {run_id}", args.index);
                return Ok(exit::OK);
            }
            Standing::Failed => {
                out!("member {} already failed: run {run_id}", args.index);
                return Ok(exit::RUN_FAILED);
            }
            Standing::Destroying => {
                return Err(anyhow::anyhow!(
                    "run {run_id} of this member is being destroyed by another runner"
                ));
            }
            Standing::Resumable => {
                let resumed = durable::resume(ResumeArgs {
                    run_id: run_id.clone(),
                    state: args.state.clone(),
                    takeover: false,
                    yes: args.yes,
                    report_dir: report_dir(&run_id),
                    no_progress: args.no_progress,
                    sign_key: args.sign_key.clone(),
                });
                match resumed {
                    Err(e)
                        if e.downcast_ref::<durable::Contended>().is_some()
                            && waited.elapsed() < args.lease_wait =>
                    {
                        // Its runner may be alive (the lease says so): wait for the lease to lapse.
                        tracing::info!(run = %run_id, "another runner holds this member's run; waiting for its lease");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                    other => return other,
                }
            }
            Standing::NotStarted | Standing::TornDown => {
                let next = attempt + 1;
                if next > MAX_RUNS {
                    return Err(Usage(format!(
                        "member {} has been interrupted {MAX_RUNS} times; not starting another run",
                        args.index
                    ))
                    .into());
                }
                let new_id = member_run_id(fleet_run, args.index, next);
                match start(runtime, loaded, args, &new_id, report_dir(&new_id)) {
                    Err(e) if e.downcast_ref::<RunIdTaken>().is_some() => {
                        // Another process started this member at the same moment: find its run and wait on it.
                        tracing::info!(run = %new_id, "{e}");
                        continue;
                    }
                    other => return other,
                }
            }
        }
    }
}

/// Starts a new run of the member with the id `run_id`.
fn start(
    runtime: &tokio::runtime::Runtime,
    loaded: &LoadedFleet,
    args: &RunArgs,
    run_id: &str,
    report_dir: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let member = &loaded.fleet.members[args.index];
    let fetched = PathBuf::from(".respawn/fleets")
        .join(&args.id.fleet_run)
        .join("members")
        .join(args.index.to_string());
    let workflow = super::member_workflow(runtime, loaded, args.index, &fetched)?;
    // Param problems point into the fleet file, where the member's params are written.
    let parsed = respawn::workflow::load_file(&workflow)?;
    super::member_params(loaded, args.index, &parsed)?;
    let mode = match member.mode {
        MemberMode::Drill => Mode::Drill,
        MemberMode::Failover => Mode::Failover,
    };
    runs::execute(
        &WorkflowParams {
            workflow,
            params: member.param_assignments(),
        },
        mode,
        runs::Options {
            keep: false,
            yes: args.yes,
            report_dir,
            state: args.state.clone(),
            no_progress: args.no_progress,
            sign_key: args.sign_key.clone(),
            run_id: Some(run_id.to_string()),
        },
    )
}
