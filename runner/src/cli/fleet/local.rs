//! `respawn fleet local`: a whole fleet on one machine with a Kubernetes Indexed Job's semantics. Each member
//! is a `respawn fleet run` process with its index in `JOB_COMPLETION_INDEX`; at most K run at once, lowest
//! index first; exit 1 or 2 fails the index (the pod failure policy of `fleet k8s`), any other ending (3, a
//! signal, a crash) restarts it, up to `--retries` times (`backoffLimitPerIndex`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use clap::Args;
use respawn::report::fleet::FleetOutcome;

use super::super::run as runs;
use super::super::{Usage, exit, setup};

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The fleet file.
    pub fleet: PathBuf,
    /// How many members run at once (a Job's `parallelism`).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub parallel: usize,
    /// Continue this fleet run (members that passed are not run again) instead of starting a new one.
    #[arg(long, env = "RESPAWN_FLEET_RUN", value_name = "ID")]
    pub fleet_run: Option<String>,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    /// How many times a member that ended with anything but 0, 1 or 2 is started again (a Job's
    /// `backoffLimitPerIndex`).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub retries: u32,
    /// Confirm the approval gates of failover members.
    #[arg(long)]
    pub yes: bool,
    /// Where the members' logs and the fleet report go (default .respawn/fleets/FLEET_RUN).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// How a member's last process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Passed,
    /// Exit 1 or 2, or out of retries: the index failed.
    Failed(Option<i32>),
    /// The fleet was interrupted while it ran.
    Cancelled,
}

pub fn run(args: LocalArgs) -> anyhow::Result<u8> {
    if args.parallel == 0 {
        return Err(Usage("--parallel must be at least 1".into()).into());
    }
    let loaded = super::load_checked(&args.fleet)?;
    let fleet_run = args.fleet_run.clone().unwrap_or_else(runs::new_run_id);
    super::check_fleet_run_id(&fleet_run)?;
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".respawn/fleets").join(&fleet_run));
    std::fs::create_dir_all(&out_dir)?;
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    // The fleet is recorded before any member starts, so a changed fleet file is refused up front.
    runtime.block_on(super::record_fleet(&store, &fleet_run, &loaded))?;
    let members = loaded.fleet.members.len();
    eprintln!(
        "respawn fleet local {} {}: {members} members, {} at a time (fleet run {fleet_run}); logs in {}",
        loaded.fleet.fleet,
        loaded.fleet.version,
        args.parallel,
        out_dir.display()
    );
    let exe = std::env::current_exe()?;
    let fleet_path = std::fs::canonicalize(&args.fleet)?;
    let cancel = runs::cancel_on_signal(&runtime);
    let ends = runtime.block_on(run_all(Plan {
        exe,
        fleet_path,
        args: &args,
        fleet_run: &fleet_run,
        out_dir: &out_dir,
        names: loaded
            .fleet
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        cancel,
    }))?;
    let report = super::report::build(&runtime, &store, &fleet_run)?;
    super::report::write_all(&report, &out_dir)?;
    out_raw!("{}", report.markdown());
    out!(
        "fleet report  {}",
        out_dir.join("fleet-report.md").display()
    );
    if ends.contains(&Ended::Cancelled) {
        return Ok(exit::INTERRUPTED);
    }
    Ok(match report.outcome {
        FleetOutcome::Passed => exit::OK,
        _ => exit::RUN_FAILED,
    })
}

struct Plan<'a> {
    exe: PathBuf,
    fleet_path: PathBuf,
    args: &'a LocalArgs,
    fleet_run: &'a str,
    out_dir: &'a std::path::Path,
    names: Vec<String>,
    cancel: tokio::sync::watch::Receiver<bool>,
}

async fn run_all(plan: Plan<'_>) -> anyhow::Result<Vec<Ended>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.args.parallel));
    let mut tasks = tokio::task::JoinSet::new();
    let mut cancel = plan.cancel.clone();
    let mut ends = vec![Ended::Cancelled; plan.names.len()];
    for (index, name) in plan.names.iter().enumerate() {
        // The semaphore is fair: slots go to members in index order, as a Job starts its lowest indexes first.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            _ = interrupted(&mut cancel) => break,
        };
        let mut command = tokio::process::Command::new(&plan.exe);
        command
            .arg("fleet")
            .arg("run")
            .arg(&plan.fleet_path)
            .args(["--fleet-run", plan.fleet_run, "--no-progress"])
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .stdin(Stdio::null());
        if let Some(state) = &plan.args.state {
            command.args(["--state", state]);
        }
        if plan.args.yes {
            command.arg("--yes");
        }
        let log = plan.out_dir.join(format!("member-{index}.log"));
        let retries = plan.args.retries;
        let (name, cancel) = (name.clone(), plan.cancel.clone());
        tasks.spawn(async move {
            let end = member(command, &log, retries, cancel).await;
            match end {
                Ok(Ended::Passed) => out!("member {index} {name}: passed"),
                Ok(Ended::Failed(code)) => out!(
                    "member {index} {name}: failed ({}); log {}",
                    code.map_or("killed".to_string(), |c| format!("exit {c}")),
                    log.display()
                ),
                Ok(Ended::Cancelled) => out!("member {index} {name}: interrupted"),
                Err(ref e) => out!("member {index} {name}: could not start: {e}"),
            }
            drop(slot);
            (index, end.unwrap_or(Ended::Failed(None)))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (index, end) = joined?;
        ends[index] = end;
    }
    Ok(ends)
}

/// Runs one member's process until it passes, fails its index, runs out of retries or the fleet is interrupted.
async fn member(
    mut command: tokio::process::Command,
    log: &std::path::Path,
    retries: u32,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let mut failures = 0;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        command
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        let mut child = command.spawn()?;
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = interrupted(&mut cancel) => {
                // SIGTERM, as Kubernetes stops a pod: the member tears down what its drill made, then exits.
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) with a pid this process spawned and has not reaped.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                child.wait().await?;
                return Ok(Ended::Cancelled);
            }
        };
        match status.code() {
            Some(0) => return Ok(Ended::Passed),
            Some(code @ (1 | 2)) => return Ok(Ended::Failed(Some(code))),
            code => {
                failures += 1;
                if failures > retries {
                    return Ok(Ended::Failed(code));
                }
                // As a Job controller backs off: a member that crashes at once does not spin.
                let delay = restart_delay(failures);
                tracing::warn!(
                    log = %log.display(),
                    "member ended with {}; starting it again in {delay:?} ({failures} of {retries})",
                    code.map_or("a signal".to_string(), |c| format!("exit {c}"))
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = interrupted(&mut cancel) => return Ok(Ended::Cancelled),
                }
            }
        }
    }
}

/// How long to wait before the `failures`-th restart of a member: 0.5 s, doubling, at most 8 s.
fn restart_delay(failures: u32) -> std::time::Duration {
    let first = std::time::Duration::from_millis(500);
    (first * 2u32.saturating_pow(failures.saturating_sub(1))).min(std::time::Duration::from_secs(8))
}

/// Resolves when the fleet is interrupted; never when the signal watcher is gone without one.
async fn interrupted(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn restarts_back_off_doubling_to_a_cap() {
        let secs: Vec<f64> = (1..=7)
            .map(|n| super::restart_delay(n).as_secs_f64())
            .collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        assert_eq!(super::restart_delay(u32::MAX).as_secs(), 8);
    }
}
