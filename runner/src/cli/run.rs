//! `respawn drill` and `respawn failover`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use respawn::engine::Mode;
use respawn::engine::run::{self, Approver, Observer, Quiet, RunSpec};
use respawn::host::workflow_plugins::{LockPolicy, PluginSet};
use respawn::journal::{EventBody, Journal, Redactor, RunStarted, WorkflowSnapshot};
use respawn::report::record::Outcome;
use respawn::report::{self, PluginInfo, Report};
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
    };
    execute(&args.target, Mode::Failover, options)
}

struct Options {
    keep: bool,
    yes: bool,
    report_dir: Option<PathBuf>,
    state: Option<String>,
    no_progress: bool,
}

/// Confirms approval gates with `--yes` or on the terminal; refuses without either.
pub struct TerminalApprover {
    pub yes: bool,
}

impl Approver for TerminalApprover {
    fn approve(&self, step: &str, question: &str) -> Result<String, String> {
        if self.yes {
            return Ok("--yes".into());
        }
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(format!(
                "approval gate `{step}` needs confirmation: \"{question}\"; there is no terminal to ask on, so \
                 rerun on a terminal or pass --yes"
            ));
        }
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
}

fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{:06x}", stamp.trim_end_matches('Z'), random & 0xff_ffff)
}

fn execute(target: &WorkflowParams, mode: Mode, options: Options) -> anyhow::Result<u8> {
    let Options {
        keep,
        yes,
        report_dir,
        state,
        no_progress,
    } = options;
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
    let state_store = open_state(state.as_deref())?;
    let runtime = setup::runtime()?;
    let run_id = new_run_id();
    let secrets = setup::read_secrets(&loaded);
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
        journal.clone(),
    )?);
    let plugins = setup::checked_plugins(&runtime, &host, &loaded, LockPolicy::Enforce(&lock))?;
    let plugin_info = plugin_info(&plugins);
    let lease = lease()?;
    let started = RunStarted {
        run_id: run_id.clone(),
        mode,
        keep,
        workflow: WorkflowSnapshot {
            name: loaded.workflow.name.clone(),
            version: loaded.workflow.version.clone(),
            sha256: loaded.sha256.clone(),
            path: std::path::absolute(&loaded.path)
                .unwrap_or_else(|_| loaded.path.clone())
                .display()
                .to_string(),
            text: String::from_utf8_lossy(&loaded.bytes).into_owned(),
        },
        params: resolved.clone(),
        plugins: plugin_info.clone(),
        lease_seconds: lease.as_secs_f64(),
        started_at: respawn::report::now_rfc3339(),
    };
    // The run exists once its first event is stored; nothing has been done before that.
    runtime
        .block_on(journal.append(EventBody::RunStarted(Box::new(started))))
        .map_err(|e| anyhow::anyhow!("cannot start the journal: {e}"))?;
    let spec = RunSpec {
        loaded: &loaded,
        params: resolved.clone(),
        run_id: run_id.clone(),
        mode,
        keep,
        digests: digests(&plugin_info),
        journal: Some(journal.clone()),
        resume: None,
    };
    eprintln!(
        "respawn {mode} {} {} (run {run_id})",
        loaded.workflow.name, loaded.workflow.version
    );
    drive(Drive {
        runtime: &runtime,
        spec,
        host,
        journal,
        lease,
        bars,
        approver: TerminalApprover { yes },
        plugin_info,
        report_dir,
        images_before: Vec::new(),
    })
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

pub fn plugin_info(plugins: &PluginSet) -> BTreeMap<String, PluginInfo> {
    plugins
        .plugins
        .iter()
        .map(|(alias, p)| {
            (
                alias.clone(),
                PluginInfo {
                    source: p.source.clone(),
                    sha256: p.sha256.clone(),
                },
            )
        })
        .collect()
}

pub fn digests(info: &BTreeMap<String, PluginInfo>) -> BTreeMap<String, String> {
    info.iter()
        .map(|(alias, p)| (alias.clone(), p.sha256.clone()))
        .collect()
}

/// Everything [`drive`] needs: a run ready to go, its journal already started (or resumed).
pub struct Drive<'a> {
    pub runtime: &'a tokio::runtime::Runtime,
    pub spec: RunSpec<'a>,
    pub host: Arc<respawn::host::Host>,
    pub journal: Arc<Journal>,
    pub lease: Duration,
    pub bars: Option<Arc<Bars>>,
    pub approver: TerminalApprover,
    pub plugin_info: BTreeMap<String, PluginInfo>,
    pub report_dir: Option<PathBuf>,
    /// Creation times of images restored before a resume (RFC 3339), for RPO.
    pub images_before: Vec<String>,
}

/// Runs to the end with heartbeats, signals and fencing; writes run-finished, the report and the summary.
pub fn drive(d: Drive<'_>) -> anyhow::Result<u8> {
    let Drive {
        runtime,
        spec,
        host,
        journal,
        lease,
        bars,
        approver,
        plugin_info,
        report_dir,
        images_before,
    } = d;
    let run_id = spec.run_id.clone();
    let record = runtime.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        let cancel_tx = Arc::new(cancel_tx);
        let on_signal = cancel_tx.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("interrupted: stopping steps and tearing down what was created");
            let _ = on_signal.send(true);
        });
        // A lost journal (taken over, or the state store failed) stops the run at once.
        let mut lost = journal.watch_lost();
        let on_lost = cancel_tx.clone();
        tokio::spawn(async move {
            if lost.wait_for(Option::is_some).await.is_ok() {
                let _ = on_lost.send(true);
            }
        });
        let (stop_beats, beats) = heartbeats(journal.clone(), lease);
        let observer: Arc<dyn Observer> = match &bars {
            Some(b) => b.clone(),
            None => Arc::new(Quiet),
        };
        let record = run::run(&spec, host.clone(), &approver, observer, cancel_rx).await;
        let _ = stop_beats.send(true);
        let _ = beats.await;
        record
    });
    if let Some(b) = &bars {
        b.finish();
    }
    let services = &host.run_resources().services;
    if let Some(why) = journal.lost() {
        if journal.is_fenced() {
            // The new owner adopts the services; this runner must not stop them.
            services.release_all();
            eprintln!("error: {why}");
            return Ok(exit::INVALID);
        }
        runtime.block_on(services.stop_all());
        eprintln!("error: {why}");
        eprintln!(
            "the run stopped because its journal could not be written; when the state store is back, continue \
             it with `respawn resume {run_id}`"
        );
        return Ok(exit::INTERRUPTED);
    }
    runtime.block_on(services.stop_all());
    let outcome = record.outcome;
    let mut restored: Vec<std::time::SystemTime> = host
        .run_resources()
        .restored_images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    restored.extend(
        images_before
            .iter()
            .filter_map(|t| humantime::parse_rfc3339_weak(t).ok()),
    );
    let rpo_seconds = rpo(&record.started_at, &restored);
    let dir = report_dir.unwrap_or_else(|| PathBuf::from(".respawn/runs").join(&run_id));
    let finished = EventBody::RunFinished {
        outcome,
        rto_seconds: record.rto_seconds,
        rpo_seconds,
        teardown: record.teardown.status.clone(),
        report_dir: std::path::absolute(&dir)
            .ok()
            .map(|p| p.display().to_string()),
        started_at: Some(record.started_at.clone()),
        finished_at: Some(record.finished_at.clone()),
    };
    if let Err(e) = runtime.block_on(journal.append(finished)) {
        eprintln!("error: {e}");
        return Ok(if journal.is_fenced() {
            exit::INVALID
        } else {
            exit::INTERRUPTED
        });
    }
    let mut report = Report::new(spec.loaded, spec.params.clone(), plugin_info, record);
    report.rpo_seconds = rpo_seconds;
    report.journal_head = runtime.block_on(journal.head());
    // A plugin that echoes a secret in an output or error must not get it into the report either.
    let mut value = serde_json::to_value(&report)?;
    journal.redactor().redact(&mut value);
    let report: Report = serde_json::from_value(value)?;
    report.write(&dir)?;
    println!("outcome   {:?}", report.outcome);
    println!("RTO       {}", report::seconds(report.rto_seconds));
    println!("RPO       {}", report::seconds(report.rpo_seconds));
    println!("teardown  {}", report.teardown.status);
    println!("report    {}", dir.join("report.md").display());
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
    Ok(match outcome {
        Outcome::Passed => exit::OK,
        Outcome::Failed => exit::RUN_FAILED,
        Outcome::Interrupted => exit::INTERRUPTED,
    })
}

/// Writes a heartbeat every third of the lease until told to stop; the stop waits for a write in progress.
fn heartbeats(
    journal: Arc<Journal>,
    lease: Duration,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    // Between heartbeats, look once a second for a takeover, so a runner that lost the run stops promptly.
    let probe_every = (lease / 3).min(Duration::from_secs(1));
    let task = tokio::spawn(async move {
        let mut last_beat = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(probe_every) => {
                    if last_beat.elapsed() >= lease / 3 {
                        last_beat = tokio::time::Instant::now();
                        if journal.append(EventBody::Heartbeat).await.is_err() {
                            return;
                        }
                    } else if journal.probe().await {
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    });
    (stop_tx, task)
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

/// RPO: the run's start minus the creation time of the newest image it restored (none restored: unknown).
fn rpo(started_at: &str, restored: &[std::time::SystemTime]) -> Option<f64> {
    let started = humantime::parse_rfc3339_weak(started_at).ok()?;
    let newest = restored.iter().max().copied()?;
    Some(
        started
            .duration_since(newest)
            .map_or(0.0, |d| d.as_secs_f64()),
    )
}
