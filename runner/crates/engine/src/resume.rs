//! What a resumed run starts from: the steps its journal says are done or in flight.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use respawn_journal::StepFinished;
use respawn_journal::chain::StoredEvent;
use respawn_journal::replay::Replayed;
use respawn_report::record::{RunRecord, StepRecord, StepStatus, Teardown};
use respawn_report::{Report, WorkflowInfo, objectives};
use respawn_workflow::{Invalid, LoadedWorkflow, Workflow};

use super::Phase;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("run `{run_id}`: the journaled workflow does not load: {source}")]
    Workflow {
        run_id: String,
        #[source]
        source: Invalid,
    },
    #[error(
        "run `{run_id}`: the journaled workflow hashes to sha256:{actual}, not the recorded sha256:{recorded}"
    )]
    WorkflowAltered {
        run_id: String,
        actual: String,
        recorded: String,
    },
    #[error("cannot write the report into {dir}: {source}")]
    Report {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The workflow a run started with, from the exact text its journal recorded, whatever the files on disk say now.
pub fn journaled_workflow(r: &Replayed) -> Result<LoadedWorkflow, ResumeError> {
    let start = &r.start;
    let path = PathBuf::from(&start.workflow.path);
    let loaded =
        respawn_workflow::load::load_bytes(&path, start.workflow.text.clone().into_bytes())
            .map_err(|source| ResumeError::Workflow {
                run_id: start.run_id.clone(),
                source,
            })?;
    if loaded.sha256 != start.workflow.sha256 {
        return Err(ResumeError::WorkflowAltered {
            run_id: start.run_id.clone(),
            actual: loaded.sha256,
            recorded: start.workflow.sha256.clone(),
        });
    }
    Ok(loaded)
}

/// A runner that died between journaling the end of its run and writing the report left no report; the journal
/// holds everything the report says, so it is written from there (into `report_dir`, else where the runner
/// meant to). Returns the directory when it wrote one; `None` when the run has not finished or has its report.
pub fn write_missing_report(
    report_dir: Option<&Path>,
    stored: &[StoredEvent],
    replayed: &Replayed,
) -> Result<Option<PathBuf>, ResumeError> {
    let Some(dir) = report_dir_of(report_dir, replayed) else {
        return Ok(None);
    };
    if Report::read(&dir).is_ok_and(|r| r.run_id == replayed.start.run_id) {
        return Ok(None);
    }
    write_report(Some(&dir), stored, replayed)
}

/// Writes a finished run's report from its journal, whole: its steps, verifications, teardown (also one
/// `respawn destroy` did), re-verifications and the chain head. Returns the directory; `None` while the run has
/// not finished.
pub fn write_report(
    report_dir: Option<&Path>,
    stored: &[StoredEvent],
    replayed: &Replayed,
) -> Result<Option<PathBuf>, ResumeError> {
    let Some(dir) = report_dir_of(report_dir, replayed) else {
        return Ok(None);
    };
    let Some(report) = report_from_journal(stored, replayed)? else {
        return Ok(None);
    };
    report.write(&dir).map_err(|source| ResumeError::Report {
        dir: dir.clone(),
        source,
    })?;
    Ok(Some(dir))
}

/// A finished run's report, from its journal alone: the one function every report comes from, so the report
/// written at the end of the run, one rewritten by `verify` or `destroy`, and one rendered by `respawn report
/// RUN_ID --state URL` on another machine are the same bytes. `None` while the run has not finished.
pub fn report_from_journal(
    stored: &[StoredEvent],
    replayed: &Replayed,
) -> Result<Option<Report>, ResumeError> {
    if replayed.finished.is_none() {
        return Ok(None);
    }
    let loaded = journaled_workflow(replayed)?;
    Ok(render(stored, replayed, &loaded.workflow))
}

/// [`report_from_journal`] for the runner that ran the workflow `ran`: when it is the text the journal recorded
/// (the same sha256), parsing that text again would give the same `Workflow`, so `ran` is used instead of
/// holding a second copy of a 10,000-step workflow while the report is rendered.
pub fn report_from_journal_of(
    stored: &[StoredEvent],
    replayed: &Replayed,
    ran: &LoadedWorkflow,
) -> Result<Option<Report>, ResumeError> {
    if ran.sha256 != replayed.start.workflow.sha256 {
        return report_from_journal(stored, replayed);
    }
    Ok(render(stored, replayed, &ran.workflow))
}

/// The report of a finished run from its replayed journal and the workflow its journal recorded.
fn render(stored: &[StoredEvent], replayed: &Replayed, workflow: &Workflow) -> Option<Report> {
    let start = &replayed.start;
    let finished = replayed.finished.as_ref()?;
    let record = finished_record(replayed, workflow)?;
    let info = WorkflowInfo {
        name: workflow.name.clone(),
        version: workflow.version.clone(),
        sha256: start.workflow.sha256.clone(),
        file: start.workflow.path.clone(),
    };
    let mut report = Report::new(info, start.params.clone(), start.plugins.clone(), record);
    report.rpo_seconds = finished.rpo_seconds;
    report.recovery_points = finished.recovery_points.clone();
    report.objectives = objectives::judge(
        workflow.objectives.as_ref(),
        workflow.enforces_objectives(),
        finished.rto_seconds,
        finished.rpo_seconds,
    );
    report.warnings = report
        .objectives
        .iter()
        .filter(|j| !j.enforced && j.status != objectives::Status::Met)
        .map(|j| format!("{} (objectives_enforce: false)", j.describe()))
        .collect();
    let records: Vec<&StepRecord> = report.steps.iter().chain(&report.verifications).collect();
    report.artifacts = crate::evidence::artifacts(replayed, &records, workflow);
    report.reverifications = replayed.reverifications.clone();
    report.journal_head = stored.last().map(|e| e.sha256.clone());
    Some(report)
}

/// Where a run's report goes: `report_dir` if given, else where its runner wrote it, else the default.
fn report_dir_of(report_dir: Option<&Path>, replayed: &Replayed) -> Option<PathBuf> {
    let finished = replayed.finished.as_ref()?;
    Some(
        report_dir
            .map(Path::to_path_buf)
            .or_else(|| finished.report_dir.as_ref().map(PathBuf::from))
            .unwrap_or_else(|| respawn_report::default_dir(&replayed.start.run_id)),
    )
}

/// A step's record as its `step-finished` event holds it.
fn record_of(f: &StepFinished) -> StepRecord {
    let mut rec = StepRecord::new(&f.step, None);
    rec.status = f.status;
    rec.attempts = f.attempts;
    rec.outputs = f.outputs.clone();
    rec.state = f.state.clone();
    rec.error = f.error.clone();
    rec.note = f.note.clone();
    rec.started_at = f.started_at.clone();
    rec.finished_at = f.finished_at.clone();
    rec.applied = f.applied;
    rec
}

/// A step cut off by the crash: the attempts it had, and the state it had written.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    pub attempts: u32,
    pub state: BTreeMap<String, String>,
    /// The rendered params of its latest attempt.
    pub params: serde_json::Value,
}

/// The engine's view of a replayed journal.
#[derive(Debug, Clone)]
pub struct ResumeSeed {
    /// The original start: RTO is measured from it, not from the resume.
    pub started_at: String,
    pub started: SystemTime,
    /// Finished (succeeded, failed or skipped) steps per phase; they are not run again.
    pub done: HashMap<(Phase, String), StepRecord>,
    pub in_flight: HashMap<(Phase, String), InFlight>,
    pub applied_order: Vec<String>,
    /// Approvals already given: not asked again.
    pub approvals: BTreeMap<String, String>,
}

impl ResumeSeed {
    pub fn from_replay(r: &Replayed) -> ResumeSeed {
        let mut done = HashMap::new();
        let mut in_flight = HashMap::new();
        for ((phase, id), progress) in &r.steps {
            let key = (*phase, id.clone());
            match &progress.finished {
                Some(f) if f.status != StepStatus::Cancelled => {
                    done.insert(key, record_of(f));
                }
                _ => {
                    in_flight.insert(
                        key,
                        InFlight {
                            attempts: progress.attempts_started,
                            state: progress.state.clone(),
                            params: progress.params.clone(),
                        },
                    );
                }
            }
        }
        ResumeSeed {
            started_at: r.start.started_at.clone(),
            started: humantime::parse_rfc3339_weak(&r.start.started_at)
                .unwrap_or_else(|_| SystemTime::now()),
            done,
            in_flight,
            applied_order: r.applied_order.clone(),
            approvals: r.approvals.clone(),
        }
    }
}

impl ResumeSeed {
    /// Steps whose apply the journal shows succeeded: their services are taken over, not started again.
    pub fn applied_steps(&self) -> std::collections::BTreeSet<String> {
        self.done
            .iter()
            .filter(|((phase, _), r)| *phase == Phase::Apply && r.status == StepStatus::Succeeded)
            .map(|((_, id), _)| id.clone())
            .collect()
    }
}

/// The record of a finished run, rebuilt from its journal: what a report needs when the runner died after
/// journaling the end of the run but before writing the report. `None` while the run has not finished.
pub fn finished_record(r: &Replayed, workflow: &Workflow) -> Option<RunRecord> {
    let finished = r.finished.as_ref()?;
    let digest = |uses: Option<&str>| {
        let alias = uses?.split_once('/')?.0;
        r.start.plugins.get(alias).map(|p| p.sha256.clone())
    };
    // As the runner recorded it: its `step-finished` (whatever the status), else the record run-finished kept
    // of a step decided without a plugin call, else never reached.
    let record = |phase: Phase, id: &str, uses: Option<&String>| {
        let journaled = r
            .steps
            .get(&(phase, id.to_string()))
            .and_then(|p| p.finished.as_ref())
            .map(record_of);
        let settled = || {
            finished
                .settled
                .iter()
                .find(|s| s.phase == phase && s.record.id == id)
                .map(|s| s.record.clone())
        };
        let mut rec = journaled.or_else(settled).unwrap_or_else(|| {
            let mut never = StepRecord::new(id, None);
            never.note = Some("not run".into());
            never
        });
        rec.uses = uses.cloned();
        // As the engine records it: teardown steps carry no digest.
        if phase != Phase::Destroy {
            rec.plugin_digest = digest(uses.map(String::as_str));
        }
        rec
    };
    let steps = workflow
        .steps
        .iter()
        .map(|s| record(Phase::Apply, &s.id, s.uses.as_ref()))
        .collect();
    let verifications = workflow
        .verify
        .iter()
        .map(|s| record(Phase::Verify, &s.id, s.uses.as_ref()))
        .collect();
    // In the order the teardown ran them (the journal's order; concurrent applies may have journaled their
    // starts in another order than the engine began them); only the steps whose destroy finished.
    let teardown_steps = r
        .destroyed_order
        .iter()
        .filter(|id| {
            let progress = r.steps.get(&(Phase::Destroy, id.to_string()));
            progress
                .and_then(|p| p.finished.as_ref())
                .is_some_and(|f| f.status != StepStatus::Cancelled)
        })
        .map(|id| {
            let uses = workflow.step(id).and_then(|s| s.uses.as_ref());
            record(Phase::Destroy, id, uses)
        })
        .collect();
    Some(RunRecord {
        run_id: r.start.run_id.clone(),
        mode: r.start.mode,
        outcome: finished.outcome,
        started_at: (finished.started_at.clone()).unwrap_or_else(|| r.start.started_at.clone()),
        finished_at: (finished.finished_at.clone()).unwrap_or_else(|| finished.at.clone()),
        rto_seconds: finished.rto_seconds,
        steps,
        verifications,
        teardown: Teardown {
            status: finished.teardown.clone(),
            steps: teardown_steps,
        },
    })
}
