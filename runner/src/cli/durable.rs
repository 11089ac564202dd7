//! `respawn resume` and `respawn runs`: the commands that continue and list runs from the journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use respawn::engine::driver::{self, Drive};
use respawn::engine::resume::{ResumeSeed, journaled_workflow, write_missing_report};
use respawn::engine::run::RunSpec;
use respawn::host::workflow_plugins::LockPolicy;
use respawn::journal::chain;
use respawn::journal::replay::Replayed;
use respawn::journal::{self as journal, EventBody, Journal, JournalError, Redactor};
use respawn::report::PluginInfo;
use respawn::workflow::lock::{LockFile, LockedPlugin};

use super::run::{self as runs, TerminalApprover};
use super::{ResumeArgs, RunsArgs, Usage, exit, setup};

/// Reads and chain-checks a run's journal; an unknown, malformed or untrustworthy run is a usage error.
pub(super) fn read_run(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn respawn::data::object_store::ObjectStore>,
    run_id: &str,
) -> anyhow::Result<(Vec<chain::StoredEvent>, Replayed)> {
    runtime
        .block_on(journal::read_run(store, run_id))
        .map_err(usage_if_input)
}

/// A journal error caused by what the user asked for exits 2; a failing state store exits 1.
fn usage_if_input(e: JournalError) -> anyhow::Error {
    if e.is_usage() {
        Usage(e.to_string()).into()
    } else {
        e.into()
    }
}

pub fn resume(args: ResumeArgs) -> anyhow::Result<u8> {
    let sign_key = args
        .sign_key
        .as_deref()
        .map(super::evidence::load_sign_key)
        .transpose()?;
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let (stored, replayed) = read_run(&runtime, &store, &args.run_id)?;
    let run_id = args.run_id.clone();
    if !replayed.resumable() {
        let f = replayed.finished.as_ref();
        out!(
            "run {run_id} already finished: outcome {}, teardown {}, at {}; nothing to resume",
            replayed.status(),
            f.map_or("-", |f| f.teardown.as_str()),
            f.map_or("-", |f| f.at.as_str()),
        );
        if let Some(dir) = write_missing_report(args.report_dir.as_deref(), &stored, &replayed)
            .map_err(|e| Usage(e.to_string()))?
        {
            out!(
                "its report was missing (the runner died before writing it): wrote {} from the journal",
                dir.join("report.md").display()
            );
        }
        return Ok(exit::OK);
    }
    check_lease(&runtime, &store, &replayed, args.takeover)?;
    let start = replayed.start.clone();
    let Reopened {
        loaded,
        journal,
        host,
        plugin_info,
        bars,
    } = reopen(
        &runtime,
        store,
        (&stored, &replayed),
        (start.mode, start.keep),
        (args.no_progress, true),
    )?;
    // Claim the run: of two runners resuming at once, exactly one stores this event.
    runtime
        .block_on(journal.append(EventBody::Resumed {
            takeover: args.takeover,
        }))
        .map_err(|e| match e {
            JournalError::Fenced { .. } => anyhow::Error::from(Contended(format!(
                "{e}: another runner resumed run `{run_id}` first"
            ))),
            other => other.into(),
        })?;
    let seed = ResumeSeed::from_replay(&replayed);
    // Services of applied steps are taken over; any other the dead runner left (an unfinished step's, or one it
    // started but never journaled) is stopped before that step runs again and starts its own.
    let recovered = runtime.block_on(host.services().recover(
        &run_id,
        &replayed.services,
        &seed.applied_steps(),
    ));
    for (step, pid) in &recovered.adopted {
        tracing::info!(%step, pid, "took over a running service");
    }
    for (step, pid) in &recovered.stopped {
        tracing::warn!(%step, pid, "stopped a service left by the dead runner; its step runs again");
    }
    eprintln!(
        "respawn resume {} {} {} (run {run_id}, {} events, {} steps already done)",
        start.mode,
        start.workflow.name,
        start.workflow.version,
        replayed.events,
        seed.done.len()
    );
    let mut spec = spec_of(&replayed, (&loaded, &plugin_info), Some(journal.clone()));
    spec.resume = Some(seed);
    runs::drive(
        &runtime,
        Drive {
            spec,
            host,
            journal,
            lease: replayed.lease(),
            observer: runs::observer(&bars),
            approver: &TerminalApprover { yes: args.yes },
            report_dir: args
                .report_dir
                .unwrap_or_else(|| respawn::report::default_dir(&run_id)),
            images_before: replayed.images_created.clone(),
            cancel: runs::cancel_on_signal(&runtime),
        },
        bars,
        sign_key.as_ref(),
    )
}

/// A journaled run opened again on this machine: its workflow and plugins as recorded at start (whatever the
/// files say now; a plugin whose bytes changed is refused), a journal that continues its chain, and a host.
pub(super) struct Reopened {
    pub loaded: respawn::workflow::LoadedWorkflow,
    pub journal: Arc<Journal>,
    pub host: Arc<respawn::host::Host>,
    pub plugin_info: BTreeMap<String, PluginInfo>,
    pub bars: Option<Arc<respawn::ui::progress::Bars>>,
}

/// Opens `replayed` again; its services outlive this runner per `(mode, keep)`. With `journal_host` false the
/// host journals nothing (what plugins do is not part of the run's record).
pub(super) fn reopen(
    runtime: &tokio::runtime::Runtime,
    store: Arc<dyn respawn::data::object_store::ObjectStore>,
    (stored, replayed): (&[chain::StoredEvent], &Replayed),
    (mode, keep): (respawn::engine::Mode, bool),
    (no_progress, journal_host): (bool, bool),
) -> anyhow::Result<Reopened> {
    let start = &replayed.start;
    let loaded = journaled_workflow(replayed).map_err(|e| Usage(e.to_string()))?;
    let lock = LockFile::new(
        start
            .plugins
            .iter()
            .map(|(alias, p)| {
                (
                    alias.clone(),
                    LockedPlugin {
                        source: p.source.clone(),
                        sha256: p.sha256.clone(),
                    },
                )
            })
            .collect(),
    );
    let secrets = setup::read_secrets(&loaded);
    setup::check_secrets(&loaded, &secrets)?;
    let journal = Arc::new(
        Journal::open(
            store,
            &start.run_id,
            Redactor::new(&secrets),
            stored.len() as u64,
            stored.last().map(|e| e.sha256.clone()),
        )
        .with_epoch(replayed.epoch + 1),
    );
    let bars = runs::new_bars(&loaded, mode, keep, no_progress);
    let host = Arc::new(setup::host_for_run(
        &loaded,
        runs::progress_sink(&bars),
        secrets,
        journal_host.then(|| journal.clone()),
        (mode, keep),
    )?);
    let plugins = setup::checked_plugins(runtime, &host, &loaded, LockPolicy::Enforce(&lock))?;
    Ok(Reopened {
        plugin_info: plugins.info(),
        loaded,
        journal,
        host,
        bars,
    })
}

/// The run `replayed` describes, as recorded at start, journaled into `journal`.
pub(super) fn spec_of<'a>(
    replayed: &Replayed,
    (loaded, plugins): (
        &'a respawn::workflow::LoadedWorkflow,
        &BTreeMap<String, PluginInfo>,
    ),
    journal: Option<Arc<Journal>>,
) -> RunSpec<'a> {
    let start = &replayed.start;
    RunSpec {
        loaded,
        params: start.params.clone(),
        run_id: start.run_id.clone(),
        mode: start.mode,
        keep: start.keep,
        digests: driver::digests(plugins),
        journal,
        resume: None,
    }
}

/// Refuses a run whose runner still holds its lease, unless `takeover`. The silence since the newest event is
/// measured on the state store's clock alone (its time now against its time of that write), so a runner with
/// a skewed clock can neither make a live run look stale nor keep a dead one looking alive.
pub(super) fn check_lease(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn respawn::data::object_store::ObjectStore>,
    replayed: &Replayed,
    takeover: bool,
) -> anyhow::Result<()> {
    let live = replayed.finished.is_none() || (replayed.destroying && !replayed.destroy_failed);
    if !live || takeover {
        return Ok(());
    }
    let now = runtime.block_on(journal::store_now(store, &replayed.start.run_id))?;
    let silence = replayed.silence_at(now);
    if silence < replayed.lease() {
        return Err(Contended(format!(
            "run `{}` is held by runner {}: its last event was {:.1}s ago, within its lease of {:.0}s. \
             If that runner is gone, pass --takeover (it will be stopped at its next write)",
            replayed.start.run_id,
            replayed.last_runner,
            silence.as_secs_f64(),
            replayed.lease().as_secs_f64()
        ))
        .into());
    }
    Ok(())
}

/// Another runner holds the run or got to it first: exit 2 for `resume` (the user asked for a run that is
/// not theirs to take), retried later by `fleet run`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Contended(pub String);

/// A run's status for `respawn runs`: `up` with its age while what a failover or kept drill made still runs.
fn status_of(r: &Replayed) -> String {
    match &r.finished {
        Some(f) if r.up() => {
            let age = humantime::parse_rfc3339_weak(&f.at)
                .ok()
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            format!(
                "up {}",
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
            )
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
        }
        _ => r.status().to_string(),
    }
}

/// `respawn runs`: one line per run in the state store.
pub fn list(args: RunsArgs) -> anyhow::Result<u8> {
    if let Some(workflow) = &args.workflow {
        let format = if args.json { "json" } else { "md" };
        return super::evidence::history(workflow, args.state.as_deref(), format);
    }
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let ids = runtime.block_on(journal::list_runs(&store))?;
    out!(
        "{:<26} {:<28} {:<8} {:<13} {:<24} RTO",
        "RUN",
        "WORKFLOW",
        "MODE",
        "STATUS",
        "STARTED"
    );
    for id in ids {
        let line = match read_run(&runtime, &store, &id) {
            Ok((_, r)) => format!(
                "{:<26} {:<28} {:<8} {:<13} {:<24} {}",
                id,
                format!("{}@{}", r.start.workflow.name, r.start.workflow.version),
                r.start.mode.to_string(),
                status_of(&r),
                r.start.started_at,
                respawn::report::seconds(r.finished.as_ref().and_then(|f| f.rto_seconds)),
            ),
            Err(e) => format!("{id:<26} {:<28} {:<8} {:<13} ({e:#})", "?", "?", "corrupt"),
        };
        out!("{line}");
    }
    Ok(exit::OK)
}
