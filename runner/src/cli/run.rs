//! `respawn drill` and `respawn failover`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use respawn::engine::Mode;
use respawn::engine::driver::{self, Drive, Driven};
use respawn::engine::run::RunSpec;
use respawn::engine::{Approval, Approver, Observer, Quiet};
use respawn::host::Host;
use respawn::host::workflow_plugins::LockPolicy;
use respawn::journal::{EventBody, Journal, Redactor, RunStarted, WorkflowSnapshot};
use respawn::report::{self, record::Outcome};
use respawn::ui::progress::{self, Bars};
use respawn::workflow::lock::LockFile;
use respawn::workflow::{self, Invalid, LoadedWorkflow, params, validate};

use super::{FailoverArgs, RunArgs, Usage, WorkflowParams, exit, setup};

pub fn drill(args: RunArgs) -> anyhow::Result<u8> {
    let options = Options {
        keep: args.keep,
        yes: false,
        report_dir: args.report_dir,
        state: args.state,
        no_progress: args.no_progress,
        sign_key: args.sign_key,
        run_id: None,
    };
    execute(&args.target, Mode::Drill, options)
}

pub fn failover(args: FailoverArgs) -> anyhow::Result<u8> {
    let options = Options {
        keep: false,
        yes: args.yes,
        report_dir: args.report_dir,
        state: args.state,
        no_progress: args.no_progress,
        sign_key: args.sign_key,
        run_id: None,
    };
    execute(&args.target, Mode::Failover, options)
}

pub struct Options {
    pub keep: bool,
    pub yes: bool,
    pub report_dir: Option<PathBuf>,
    pub state: Option<String>,
    pub no_progress: bool,
    /// `--sign-key`: where the key that signs the report comes from.
    pub sign_key: Option<String>,
    /// The run's id, when the caller names it (a fleet member's); else a new one.
    pub run_id: Option<String>,
}

/// The run id was taken: another runner stored the first event of a run with this id first (two processes
/// started one fleet member at once). Nothing was done.
#[derive(Debug, thiserror::Error)]
#[error("run `{0}` was started by another runner at the same moment; this one did nothing")]
pub struct RunIdTaken(pub String);

/// Confirms approval gates with `--yes` or on the terminal; refuses without either.
pub struct TerminalApprover {
    pub yes: bool,
}

impl Approver for TerminalApprover {
    fn approve(&self, step: &str, question: &str) -> Approval {
        if self.yes {
            return Box::pin(std::future::ready(Ok("--yes".into())));
        }
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Box::pin(std::future::ready(Err(format!(
                "approval gate `{step}` needs confirmation: \"{question}\"; there is no terminal to ask on, so \
                 rerun on a terminal or pass --yes"
            ))));
        }
        // The answer is read on a thread of its own, not a runtime worker: heartbeats go on while a person thinks,
        // and an interrupt ends the wait at once (the thread, blocked in read(2), ends with the process).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (step, question) = (step.to_string(), question.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(ask_on_terminal(&step, &question));
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the terminal prompt ended without an answer".into()))
        })
    }
}

fn ask_on_terminal(step: &str, question: &str) -> Result<String, String> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok("confirmed on the terminal".into()),
        _ => Err(format!(
            "approval gate `{step}` was declined on the terminal"
        )),
    }
}

/// A run id: its UTC start to the second (so ids sort by start), then 24 random bits so that two runs started in
/// the same second on different machines do not collide.
pub fn new_run_id() -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    format!(
        "{}-{:06x}",
        stamp.trim_end_matches('Z'),
        fastrand::u32(..1 << 24)
    )
}

pub fn execute(target: &WorkflowParams, mode: Mode, options: Options) -> anyhow::Result<u8> {
    let Options {
        keep,
        yes,
        report_dir,
        state,
        no_progress,
        sign_key,
        run_id,
    } = options;
    // A key that cannot be read stops the run before anything is done, not after the drill.
    let sign_key = sign_key
        .as_deref()
        .map(super::evidence::load_sign_key)
        .transpose()?;
    let loaded = workflow::load_file(&target.workflow)?;
    let mut diagnostics = validate::validate(&loaded, None);
    let resolved = match params::resolve(&loaded, &target.params) {
        Ok(p) => p,
        Err(e) => {
            diagnostics.extend(e.diagnostics);
            BTreeMap::new()
        }
    };
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    let lock = LockFile::read(&loaded.path).map_err(|e| Usage(e.to_string()))?;
    // Refusals that need no state store come before it is opened (and, for `file://`, created).
    let secrets = setup::read_secrets(&loaded);
    setup::check_secrets(&loaded, &secrets)?;
    setup::check_params_hold_no_secret(&resolved, &secrets)?;
    let state_store = open_state(state.as_deref())?;
    let runtime = setup::runtime()?;
    let run_id = run_id.unwrap_or_else(new_run_id);
    let journal = Arc::new(Journal::open(
        state_store,
        &run_id,
        Redactor::new(&secrets),
        0,
        None,
    ));
    let bars = new_bars(&loaded, mode, keep, no_progress);
    let host = Arc::new(setup::host_for_run(
        &loaded,
        progress_sink(&bars),
        secrets,
        Some(journal.clone()),
        (mode, keep),
    )?);
    let plugins = setup::checked_plugins(&runtime, &host, &loaded, LockPolicy::Enforce(&lock))?;
    let plugin_info = plugins.info();
    let lease = lease()?;
    let started = RunStarted {
        run_id: run_id.clone(),
        mode,
        keep,
        workflow: WorkflowSnapshot::of(&loaded),
        params: resolved.clone(),
        plugins: plugin_info.clone(),
        lease_seconds: lease.as_secs_f64(),
        started_at: report::now_rfc3339(),
    };
    // The run exists once its first event is stored; nothing has been done before that.
    runtime
        .block_on(journal.append(EventBody::RunStarted(Box::new(started))))
        .map_err(|e| match e {
            respawn::journal::JournalError::Fenced { .. } => RunIdTaken(run_id.clone()).into(),
            other => anyhow::anyhow!("cannot start the journal: {other}"),
        })?;
    let spec = RunSpec {
        loaded: &loaded,
        params: resolved.clone(),
        run_id: run_id.clone(),
        mode,
        keep,
        digests: driver::digests(&plugin_info),
        journal: Some(journal.clone()),
        resume: None,
    };
    eprintln!(
        "respawn {mode} {} {} (run {run_id})",
        loaded.workflow.name, loaded.workflow.version
    );
    drive(
        &runtime,
        Drive {
            spec,
            host,
            journal,
            lease,
            observer: observer(&bars),
            approver: &TerminalApprover { yes },
            report_dir: report_dir.unwrap_or_else(|| report::default_dir(&run_id)),
            images_before: Vec::new(),
            cancel: cancel_on_signal(&runtime),
        },
        bars,
        sign_key.as_ref(),
    )
}

/// Opens the state store of `--state`, `RESPAWN_STATE`, or the default, relative to the working directory.
pub fn open_state(
    state: Option<&str>,
) -> anyhow::Result<Arc<dyn respawn::data::object_store::ObjectStore>> {
    let url = state.unwrap_or(respawn::journal::DEFAULT_STATE_URL);
    let cwd = std::env::current_dir()?;
    respawn::data::open_store(url, &cwd)
        .map_err(|e| Usage(format!("state store (--state / RESPAWN_STATE): {e}")).into())
}

/// The lease of new runs: [`respawn::journal::DEFAULT_LEASE`], or `RESPAWN_LEASE` (e.g. `10s`).
fn lease() -> anyhow::Result<Duration> {
    match std::env::var("RESPAWN_LEASE") {
        Ok(v) => {
            let d = humantime::parse_duration(&v).map_err(|e| {
                Usage(format!(
                    "RESPAWN_LEASE=`{v}`: {e}; expected a duration such as 30s"
                ))
            })?;
            if d < Duration::from_secs(1) {
                return Err(Usage(format!("RESPAWN_LEASE=`{v}`: must be at least 1s")).into());
            }
            Ok(d)
        }
        Err(_) => Ok(respawn::journal::DEFAULT_LEASE),
    }
}

pub fn new_bars(
    loaded: &LoadedWorkflow,
    mode: Mode,
    keep: bool,
    no_progress: bool,
) -> Option<Arc<Bars>> {
    let w = &loaded.workflow;
    let calls = w.steps.len() * if mode == Mode::Drill && !keep { 2 } else { 1 } + w.verify.len();
    progress::wanted(no_progress).then(|| Bars::new(calls as u64))
}

pub fn progress_sink(bars: &Option<Arc<Bars>>) -> Option<respawn::host::ProgressSink> {
    bars.clone().map(|b| {
        Arc::new(
            move |step: &str, done: u64, total: Option<u64>, message: &str| {
                b.data(step, done, total, message)
            },
        ) as respawn::host::ProgressSink
    })
}

/// The progress bars as the engine's observer, or nothing.
pub fn observer(bars: &Option<Arc<Bars>>) -> Arc<dyn Observer> {
    match bars {
        Some(b) => b.clone(),
        None => Arc::new(Quiet),
    }
}

/// A cancel signal that turns true on SIGINT or SIGTERM: the run stops scheduling and tears down what it made.
pub fn cancel_on_signal(runtime: &tokio::runtime::Runtime) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        wait_for_signal().await;
        tracing::warn!("interrupted: stopping steps and tearing down what was created");
        let _ = tx.send(true);
    });
    rx
}

/// Drives the run to its end in the library, then prints the summary and maps how it ended to an exit code.
pub fn drive(
    runtime: &tokio::runtime::Runtime,
    run: Drive<'_, Host>,
    bars: Option<Arc<Bars>>,
    sign_key: Option<&ed25519_dalek::SigningKey>,
) -> anyhow::Result<u8> {
    let run_id = run.spec.run_id.clone();
    let state_store = run.journal.store().clone();
    let driven = runtime.block_on(driver::drive(run));
    if let Some(b) = &bars {
        b.finish();
    }
    let (report, dir) = match driven? {
        Driven::Finished { report, dir } => (report, dir),
        Driven::TakenOver { why } => {
            eprintln!("error: {why}");
            return Ok(exit::INVALID);
        }
        Driven::JournalLost { why } => {
            eprintln!("error: {why}");
            eprintln!(
                "the run stopped because its journal could not be written; when the state store is back, continue \
                 it with `respawn resume {run_id}`"
            );
            return Ok(exit::INTERRUPTED);
        }
    };
    out!("outcome   {:?}", report.outcome);
    out!("RTO       {}", report::seconds(report.rto_seconds));
    out!("RPO       {}", report.rpo_text());
    for judged in &report.objectives {
        out!("objective {}", judged.describe());
    }
    out!("teardown  {}", report.teardown.status);
    out!("report    {}", dir.join("report.md").display());
    if let Some(key) = sign_key {
        let path = super::evidence::sign_report(runtime, &state_store, &report, &dir, key)?;
        out!("signed    {}", path.display());
    }
    for s in report
        .steps
        .iter()
        .chain(&report.verifications)
        .chain(&report.teardown.steps)
    {
        if let Some(e) = &s.error {
            eprintln!("error: {}: {}", s.id, e.message);
        }
    }
    Ok(match report.outcome {
        Outcome::Passed => exit::OK,
        Outcome::Failed => exit::RUN_FAILED,
        Outcome::Interrupted => exit::INTERRUPTED,
    })
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
