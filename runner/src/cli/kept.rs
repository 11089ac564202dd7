//! `respawn verify RUN_ID` and `respawn destroy RUN_ID`: looking after the environment a failover or a kept drill
//! left running, from the run's journal.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};

use respawn::engine::Mode;
use respawn::engine::after;
use respawn::engine::resume::{ResumeSeed, write_report};
use respawn::journal::replay::Replayed;
use respawn::journal::{EventBody, JournalError};
use respawn::report::record::{Outcome, StepRecord};

use super::durable::{Reopened, check_lease, read_run, reopen, spec_of};
use super::run::{self as runs};
use super::{DestroyArgs, Usage, VerifyArgs, exit, setup};

/// Why a run has no environment up, for messages.
fn not_up(r: &Replayed) -> String {
    if r.destroying && r.destroyed_at.is_none() {
        return format!(
            "a destroy of it {} (status {}); run `respawn destroy` to finish it",
            if r.destroy_failed {
                "failed"
            } else {
                "started"
            },
            r.status()
        );
    }
    match (&r.destroyed_at, &r.finished) {
        (Some(at), _) => format!("it was destroyed at {at}"),
        (None, None) => "it has not finished (resume it, or destroy it)".into(),
        (None, Some(f)) if f.teardown != "skipped" => {
            format!(
                "its drill tore it down when it finished (teardown {})",
                f.teardown
            )
        }
        (None, Some(_)) => {
            "it was interrupted before it finished (resume it, or destroy it)".into()
        }
    }
}

fn claim_error(run_id: &str, e: JournalError) -> anyhow::Error {
    match e {
        JournalError::Fenced { .. } => Usage(format!(
            "{e}: another runner wrote to run `{run_id}` first; look again with `respawn runs`"
        ))
        .into(),
        other => other.into(),
    }
}

fn print_steps(title: &str, steps: &[StepRecord]) {
    for s in steps {
        let detail = s
            .error
            .as_ref()
            .map(|e| format!(": {}", e.message))
            .unwrap_or_default();
        out!("{title:<9} {:<16} {:?}{detail}", s.id, s.status);
    }
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let (stored, replayed) = read_run(&runtime, &store, &args.run_id)?;
    let run_id = args.run_id.clone();
    if !replayed.up() {
        return Err(Usage(format!(
            "run `{run_id}` has no environment left to verify: {}",
            not_up(&replayed)
        ))
        .into());
    }
    let start = replayed.start.clone();
    let Reopened {
        loaded,
        journal,
        host,
        plugin_info,
        bars,
    } = reopen(
        &runtime,
        store.clone(),
        (&stored, &replayed),
        // Whatever a verify step starts is stopped when verify ends, and nothing it does is journaled but the
        // result: a verification must not change the environment or the record of how it was made.
        (Mode::Drill, false),
        (args.no_progress, false),
    )?;
    eprintln!(
        "respawn verify {} {} (run {run_id}, {} up since {})",
        start.workflow.name,
        start.workflow.version,
        start.mode,
        replayed.finished.as_ref().map_or("-", |f| f.at.as_str())
    );
    let seed = ResumeSeed::from_replay(&replayed);
    let spec = spec_of(&replayed, (&loaded, &plugin_info), None);
    let result = runtime.block_on(after::reverify(
        &spec,
        &seed,
        host.clone(),
        runs::observer(&bars),
        runs::cancel_on_signal(&runtime),
    ));
    if let Some(b) = &bars {
        b.finish();
    }
    runtime.block_on(respawn::engine::driver::RunHost::stop_services(
        host.as_ref(),
    ));
    // A re-verification is evidence too: journaled, and in the run's report.
    runtime
        .block_on(journal.append(EventBody::Reverified {
            outcome: result.outcome,
            started_at: result.started_at.clone(),
            finished_at: result.finished_at.clone(),
            verifications: result.verifications.clone(),
        }))
        .map_err(|e| claim_error(&run_id, e))?;
    let (stored, replayed) = read_run(&runtime, &store, &run_id)?;
    let dir = write_report(args.report_dir.as_deref(), &stored, &replayed)
        .map_err(|e| Usage(e.to_string()))?;
    print_steps("verify", &result.verifications);
    out!("outcome   {:?}", result.outcome);
    if let Some(dir) = dir {
        out!("report    {}", dir.join("report.md").display());
    }
    Ok(match result.outcome {
        Outcome::Passed => exit::OK,
        Outcome::Failed => exit::RUN_FAILED,
        Outcome::Interrupted => exit::INTERRUPTED,
    })
}

/// Asks on the terminal before a failover's live environment is destroyed, unless `--yes`.
fn confirm_destroy(run_id: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(Usage(format!(
            "run `{run_id}` is a failover: destroying it tears down a live region. There is no terminal to \
             confirm on; pass --yes to destroy it"
        ))
        .into());
    }
    eprint!("Run {run_id} is a failover: tear down the region it recreated? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Usage(format!(
            "destroy of run `{run_id}` declined on the terminal"
        ))
        .into()),
    }
}

pub fn destroy(args: DestroyArgs) -> anyhow::Result<u8> {
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let (stored, replayed) = read_run(&runtime, &store, &args.run_id)?;
    let run_id = args.run_id.clone();
    if let Some(at) = &replayed.destroyed_at {
        out!("run {run_id} was destroyed at {at}; nothing left to destroy");
        return Ok(exit::OK);
    }
    if let Some(f) = &replayed.finished
        && f.teardown == "succeeded"
    {
        out!(
            "run {run_id} tore down what it made when it finished ({}); nothing left to destroy",
            f.at
        );
        return Ok(exit::OK);
    }
    check_lease(&runtime, &store, &replayed, args.takeover)?;
    let start = replayed.start.clone();
    if start.mode == Mode::Failover {
        confirm_destroy(&run_id, args.yes)?;
    }
    // Nothing this command starts outlives it.
    let Reopened {
        loaded,
        journal,
        host,
        plugin_info,
        bars,
    } = reopen(
        &runtime,
        store.clone(),
        (&stored, &replayed),
        (Mode::Drill, false),
        (args.no_progress, true),
    )?;
    runtime
        .block_on(journal.append(EventBody::DestroyStarted {
            takeover: args.takeover,
        }))
        .map_err(|e| claim_error(&run_id, e))?;
    // Every service the journal names is adopted (if that very process still runs: a reused pid is not), so the
    // destroy phases can stop them; one the runner started but never journaled is found by its marker and
    // stopped.
    let started: BTreeSet<String> = replayed.services.iter().map(|s| s.step.clone()).collect();
    let recovered = runtime.block_on(host.services().recover(
        &run_id,
        &replayed.services,
        &started,
    ));
    for (step, pid) in &recovered.adopted {
        tracing::info!(%step, pid, "took over a running service to destroy it");
    }
    eprintln!(
        "respawn destroy {} {} (run {run_id}, {}, {} steps applied)",
        start.workflow.name,
        start.workflow.version,
        start.mode,
        replayed.applied_order.len()
    );
    let seed = ResumeSeed::from_replay(&replayed);
    let spec = spec_of(&replayed, (&loaded, &plugin_info), Some(journal.clone()));
    let teardown = runtime.block_on(after::destroy(
        &spec,
        &seed,
        host.clone(),
        runs::observer(&bars),
    ));
    if let Some(b) = &bars {
        b.finish();
    }
    // Whatever a destroy phase left running goes too.
    runtime.block_on(respawn::engine::driver::RunHost::stop_services(
        host.as_ref(),
    ));
    if let Some(why) = journal.lost() {
        return Err(Usage(format!("run `{run_id}`: {why}")).into());
    }
    runtime
        .block_on(journal.append(EventBody::Destroyed {
            teardown: teardown.status.clone(),
        }))
        .map_err(|e| claim_error(&run_id, e))?;
    let (stored, replayed) = read_run(&runtime, &store, &run_id)?;
    let dir = write_report(args.report_dir.as_deref(), &stored, &replayed)
        .map_err(|e| Usage(e.to_string()))?;
    print_steps("destroy", &teardown.steps);
    out!("teardown  {}", teardown.status);
    if let Some(dir) = dir {
        out!("report    {}", dir.join("report.md").display());
    }
    Ok(if teardown.status == "succeeded" {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}
