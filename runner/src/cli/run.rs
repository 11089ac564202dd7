//! `respawn drill` and `respawn failover`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use respawn::engine::Mode;
use respawn::engine::record::Outcome;
use respawn::engine::run::{self, Approver, Observer, Quiet, RunSpec};
use respawn::host::workflow_plugins::LockPolicy;
use respawn::report::{self, PluginInfo, Report};
use respawn::ui::progress::{self, Bars};
use respawn::workflow::lock::LockFile;
use respawn::workflow::{self, Invalid, params, validate};

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
struct TerminalApprover {
    yes: bool,
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
    if state.is_some() {
        tracing::warn!(
            "the journal is not built yet in this version; --state is ignored and the run is not resumable"
        );
    }
    let lock = LockFile::read(&loaded.path).map_err(|e| Usage(e.to_string()))?;
    let runtime = setup::runtime()?;
    let w = &loaded.workflow;
    let calls = w.steps.len() * if mode == Mode::Drill && !keep { 2 } else { 1 } + w.verify.len();
    let bars = progress::wanted(no_progress).then(|| Bars::new(calls as u64));
    let sink: Option<respawn::host::ProgressSink> = bars.clone().map(|b| {
        Arc::new(
            move |step: &str, done: u64, total: Option<u64>, message: &str| {
                b.data(step, done, total, message)
            },
        ) as respawn::host::ProgressSink
    });
    let host = Arc::new(setup::host_with_progress(&loaded, true, sink)?);
    let plugins = setup::checked_plugins(&runtime, &host, &loaded, LockPolicy::Enforce(&lock))?;
    let digests: BTreeMap<String, String> = plugins
        .plugins
        .iter()
        .map(|(alias, p)| (alias.clone(), p.sha256.clone()))
        .collect();
    let plugin_info = plugins
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
        .collect();
    let run_id = new_run_id();
    let spec = RunSpec {
        loaded: &loaded,
        params: resolved.clone(),
        run_id: run_id.clone(),
        mode,
        keep,
        digests,
    };
    eprintln!(
        "respawn {mode} {} {} (run {run_id})",
        loaded.workflow.name, loaded.workflow.version
    );
    let approver = TerminalApprover { yes };
    let record = runtime.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("interrupted: stopping steps and tearing down what was created");
            let _ = cancel_tx.send(true);
        });
        let observer: Arc<dyn Observer> = match &bars {
            Some(b) => b.clone(),
            None => Arc::new(Quiet),
        };
        let record = run::run(&spec, host.clone(), &approver, observer, cancel_rx).await;
        host.run_resources().services.stop_all().await;
        record
    });
    if let Some(b) = &bars {
        b.finish();
    }
    let outcome = record.outcome;
    let rpo_seconds = rpo(&record.started_at, &host.run_resources().restored_images);
    let mut report = Report::new(&loaded, resolved, plugin_info, record);
    report.rpo_seconds = rpo_seconds;
    let dir = report_dir.unwrap_or_else(|| PathBuf::from(".respawn/runs").join(&run_id));
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
fn rpo(started_at: &str, restored: &std::sync::Mutex<Vec<std::time::SystemTime>>) -> Option<f64> {
    let started = humantime::parse_rfc3339(started_at).ok()?;
    let newest = restored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .max()
        .copied()?;
    Some(
        started
            .duration_since(newest)
            .map_or(0.0, |d| d.as_secs_f64()),
    )
}
