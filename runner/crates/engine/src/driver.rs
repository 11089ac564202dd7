//! The run driver: everything around [`run`](crate::run::run) that makes a run durable and accountable.
//!
//! It heartbeats into the journal, probes it for a takeover, cancels the run when the journal is lost (taken over,
//! or the state store failed) or the caller cancels it (a signal), settles the services the host started,
//! measures RPO per data source ([`recovery`](crate::recovery)), journals `run-finished`, and writes the report
//! with secrets redacted. The CLI only parses, wires a host and a signal to [`Drive`], prints what [`drive`]
//! returns and maps it to an exit code.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use respawn_journal::replay::ImageCreated;
use respawn_journal::{EventBody, Journal, SettledStep};
use respawn_report::record::Outcome;
use respawn_report::{PluginInfo, Report, objectives};
use tokio::sync::watch;

use crate::recovery::{self, RestoredImage};
use crate::run::{self, RunSpec};
use crate::{Approver, Observer};
use crate::{Mode, Phase, StepExecutor};

/// What the driver needs of the host besides running steps: the services it started and the images it restored.
pub trait RunHost: StepExecutor {
    /// Stops every service this runner started and still tracks.
    fn stop_services(&self) -> impl Future<Output = ()> + Send;
    /// Forgets every service without stopping it: they outlive the runner (a failover's, a kept drill's), or
    /// another runner took the run over and adopts them.
    fn release_services(&self);
    /// The images this process restored, each with the step that restored it: a step's recovery point when it
    /// outputs none.
    fn restored_images(&self) -> Vec<RestoredImage>;
}

/// A run ready to go: its journal already started (or resumed).
pub struct Drive<'a, H> {
    pub spec: RunSpec<'a>,
    pub host: Arc<H>,
    pub journal: Arc<Journal>,
    /// The run's lease: heartbeats go out every third of it.
    pub lease: Duration,
    pub observer: Arc<dyn Observer>,
    pub approver: &'a dyn Approver,
    /// Where report.json, report.md and junit.xml go.
    pub report_dir: PathBuf,
    /// Images restored before a resume, as journaled: recovery points of the steps that restored them.
    pub images_before: Vec<ImageCreated>,
    /// Turning true (SIGINT, SIGTERM) stops scheduling and goes to teardown with outcome `interrupted`.
    pub cancel: watch::Receiver<bool>,
}

/// How a driven run ended.
#[derive(Debug)]
pub enum Driven {
    /// The run ran to its end (passed, failed or interrupted); `run-finished` is journaled and the report written.
    Finished { report: Box<Report>, dir: PathBuf },
    /// Another runner took the run over and owns its environment now; this one wrote no report.
    TakenOver { why: String },
    /// The journal could not be written; the run stopped and can be resumed when the state store is back.
    JournalLost { why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("cannot write the report into {dir}: {source}")]
    Report {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot redact the report: {0}")]
    Redact(#[from] serde_json::Error),
}

/// Runs to the end with heartbeats, cancellation and fencing; journals run-finished and writes the report.
pub async fn drive<H: RunHost + 'static>(d: Drive<'_, H>) -> Result<Driven, DriveError> {
    let Drive {
        spec,
        host,
        journal,
        lease,
        observer,
        approver,
        report_dir,
        images_before,
        cancel,
    } = d;
    let record = {
        // A lost journal (taken over, or the state store failed) stops the run at once, as a cancel does.
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let forward = |mut from: watch::Receiver<bool>, to: Arc<watch::Sender<bool>>| async move {
            if from.wait_for(|v| *v).await.is_ok() {
                let _ = to.send(true);
            }
        };
        let on_cancel = tokio::spawn(forward(cancel, stop_tx.clone()));
        let mut lost = journal.watch_lost();
        let on_lost_tx = stop_tx.clone();
        let on_lost = tokio::spawn(async move {
            if lost.wait_for(Option::is_some).await.is_ok() {
                let _ = on_lost_tx.send(true);
            }
        });
        let (stop_beats, beats) = heartbeats(journal.clone(), lease);
        let record = run::run(&spec, host.clone(), approver, observer, stop_rx).await;
        let _ = stop_beats.send(true);
        let _ = beats.await;
        on_cancel.abort();
        on_lost.abort();
        record
    };
    // A failover's services, and a kept drill's, are the recreated environment: they run on after this runner.
    let services_outlive = spec.mode == Mode::Failover || spec.keep;
    if let Some(why) = journal.lost() {
        let fenced = journal.is_fenced();
        if fenced || services_outlive {
            // The new owner adopts the services (or a resume will); this runner must not stop them.
            host.release_services();
        } else {
            host.stop_services().await;
        }
        return Ok(if fenced {
            Driven::TakenOver { why }
        } else {
            Driven::JournalLost { why }
        });
    }
    if services_outlive {
        host.release_services();
    } else {
        host.stop_services().await;
    }
    // Steps finished before a resume are in `record.steps` with their journaled outputs.
    let mut images = images_before;
    images.extend(host.restored_images().iter().map(RestoredImage::journaled));
    let recovery_points = recovery::points(&record.started_at, &record.steps, &images);
    let rpo_seconds = recovery::worst(&recovery_points);
    // A missed objective fails a run that passed, unless the workflow only asks to be warned.
    let workflow = &spec.loaded.workflow;
    let judged = respawn_report::objectives::judge(
        workflow.objectives.as_ref(),
        workflow.enforces_objectives(),
        record.rto_seconds,
        rpo_seconds,
    );
    let outcome = if record.outcome == Outcome::Passed && objectives::fails_run(&judged) {
        Outcome::Failed
    } else {
        record.outcome
    };
    let finished = EventBody::RunFinished {
        outcome,
        rto_seconds: record.rto_seconds,
        rpo_seconds,
        recovery_points,
        teardown: record.teardown.status.clone(),
        report_dir: std::path::absolute(&report_dir)
            .ok()
            .map(|p| p.display().to_string()),
        started_at: Some(record.started_at.clone()),
        finished_at: Some(record.finished_at.clone()),
        settled: settled(&record),
    };
    if let Err(e) = journal.append(finished).await {
        let why = e.to_string();
        return Ok(if journal.is_fenced() {
            Driven::TakenOver { why }
        } else {
            Driven::JournalLost { why }
        });
    }
    // The report is rendered from the journal as stored, as any later `respawn report --state` renders it.
    drop(record);
    let report = match read_back(&journal, spec.loaded).await {
        Ok(report) => report,
        Err(why) => return Ok(Driven::JournalLost { why }),
    };
    // A plugin that echoes a secret in an output or error must not get it into the report either.
    let mut value = serde_json::to_value(&report)?;
    journal.redactor().redact(&mut value);
    let report: Report = serde_json::from_value(value)?;
    report
        .write(&report_dir)
        .map_err(|source| DriveError::Report {
            dir: report_dir.clone(),
            source,
        })?;
    Ok(Driven::Finished {
        report: Box::new(report),
        dir: report_dir,
    })
}

/// The records no `step-finished` holds: steps and verifications that never made an attempt (decided without a
/// plugin call, or cut off before one). Teardown steps always make one.
fn settled(record: &respawn_report::record::RunRecord) -> Vec<SettledStep> {
    let apply = record.steps.iter().map(|r| (Phase::Apply, r));
    let verify = record.verifications.iter().map(|r| (Phase::Verify, r));
    apply
        .chain(verify)
        .filter(|(_, r)| r.attempts == 0)
        .map(|(phase, r)| SettledStep {
            phase,
            record: r.clone(),
        })
        .collect()
}

/// The finished run's report, from its journal read back from the state store and chain-checked.
async fn read_back(
    journal: &Journal,
    ran: &respawn_workflow::LoadedWorkflow,
) -> Result<Report, String> {
    let (stored, replayed) = respawn_journal::read_run(journal.store(), journal.run_id())
        .await
        .map_err(|e| format!("reading the journal back for the report: {e}"))?;
    match crate::resume::report_from_journal_of(&stored, &replayed, ran) {
        Ok(Some(report)) => Ok(report),
        Ok(None) => Err("the journal read back holds no run-finished".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl Driven {
    /// The outcome of a run that finished; `None` when it was taken over or lost its journal.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Driven::Finished { report, .. } => Some(report.outcome),
            _ => None,
        }
    }
}

/// Writes a heartbeat every third of the lease until told to stop; the stop waits for a write in progress. Each
/// tick also checks the lease: a runner whose journal writes have not succeeded for most of it stops acting
/// ([`Journal::lease_lapsed`]), so a write or probe that hangs on a slow store is awaited only for a bounded time.
fn heartbeats(
    journal: Arc<Journal>,
    lease: Duration,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_tx, mut stop) = watch::channel(false);
    // Between heartbeats, look once a second for a takeover, so a runner that lost the run stops promptly.
    let probe_every = (lease / 3).min(Duration::from_secs(1));
    let task = tokio::spawn(async move {
        let mut last_beat = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(probe_every) => {
                    if journal.lease_lapsed(lease) {
                        return;
                    }
                    if last_beat.elapsed() >= lease / 3 {
                        last_beat = tokio::time::Instant::now();
                        let beat = tokio::time::timeout(probe_every, journal.append(EventBody::Heartbeat));
                        if let Ok(Err(_)) = beat.await {
                            return;
                        }
                    } else if let Ok(true) = tokio::time::timeout(probe_every, journal.probe()).await {
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    });
    (stop_tx, task)
}

/// Plugin alias -> sha256, as the run record names each step's plugin.
pub fn digests(plugins: &BTreeMap<String, PluginInfo>) -> BTreeMap<String, String> {
    plugins
        .iter()
        .map(|(alias, p)| (alias.clone(), p.sha256.clone()))
        .collect()
}
