//! Running a workflow: steps concurrently as the graph allows, retries with backoff and jitter, `when`
//! conditions, approval gates, verification, and (in a drill) teardown in reverse order, which also runs after a
//! failure or an interrupt.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::attempts::attempt_loop;
use super::resume::ResumeSeed;
use super::section::SectionGraph;
use super::{Approver, Mode, Observer, Phase, StepCall, StepExecutor, StepResult};
use respawn_journal::{EventBody, Journal, StepFinished};
use respawn_report::now_rfc3339;
use respawn_report::record::{ErrorRecord, Outcome, RunRecord, StepRecord, StepStatus, Teardown};
use respawn_workflow::expr::{self, RunInfo, Scope, StepView};
use respawn_workflow::{DEFAULT_STEP_TIMEOUT, LoadedWorkflow, Step, work};

/// What to run.
pub struct RunSpec<'a> {
    pub loaded: &'a LoadedWorkflow,
    pub params: BTreeMap<String, serde_json::Value>,
    pub run_id: String,
    pub mode: Mode,
    /// Skip teardown of a drill.
    pub keep: bool,
    /// Plugin alias -> sha256, for the record.
    pub digests: BTreeMap<String, String>,
    /// Where every step start, state write and result is recorded before the run goes on.
    pub journal: Option<Arc<Journal>>,
    /// What an earlier runner of this run already did (`respawn resume`).
    pub resume: Option<ResumeSeed>,
}

impl<'a> RunSpec<'a> {
    /// The same run, journaled into `journal` and continuing from `resume`.
    pub fn with(&self, journal: Option<Arc<Journal>>, resume: Option<ResumeSeed>) -> RunSpec<'a> {
        RunSpec {
            loaded: self.loaded,
            params: self.params.clone(),
            run_id: self.run_id.clone(),
            mode: self.mode,
            keep: self.keep,
            digests: self.digests.clone(),
            journal,
            resume,
        }
    }
}

/// Runs a workflow to the end. `cancel` turning true stops scheduling, cancels running steps, and goes straight
/// to teardown (drill) with outcome `interrupted`.
pub async fn run<E: StepExecutor + 'static>(
    spec: &RunSpec<'_>,
    exec: Arc<E>,
    approver: &dyn Approver,
    observer: Arc<dyn Observer>,
    mut cancel: watch::Receiver<bool>,
) -> RunRecord {
    let (started, started_at) = match &spec.resume {
        Some(seed) => (seed.started, seed.started_at.clone()),
        None => (SystemTime::now(), now_rfc3339()),
    };
    let mut scope = Scope {
        params: spec.params.clone(),
        run: RunInfo {
            id: spec.run_id.clone(),
            mode: spec.mode.to_string(),
            started_at: started_at.clone(),
        },
        steps: Default::default(),
    };
    let mut ctx = Runner {
        spec,
        exec,
        approver,
        observer,
        scope: &mut scope,
        applied_order: spec
            .resume
            .as_ref()
            .map(|s| s.applied_order.clone())
            .unwrap_or_default(),
        started_params: HashMap::new(),
        tasks: HashMap::new(),
        cancel: cancel.clone(),
        applied: HashSet::new(),
    };
    ctx.applied = ctx.applied_order.iter().cloned().collect();
    let w = &spec.loaded.workflow;
    let main: Vec<&Step> = w.steps.iter().collect();
    let mut steps = ctx.run_section(&main, Phase::Apply, &mut cancel).await;
    let interrupted = *cancel.borrow() || ctx.journal_lost();
    let main_ok = steps
        .iter()
        .all(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped))
        && !steps
            .iter()
            .any(|s| s.note.as_deref().is_some_and(|n| n.starts_with("not run")));
    let verify: Vec<&Step> = w.verify.iter().collect();
    let mut verifications = if main_ok && !interrupted {
        ctx.run_section(&verify, Phase::Verify, &mut cancel).await
    } else {
        verify
            .iter()
            .map(|s| skipped(s, "not run: a step before verification did not succeed"))
            .collect()
    };
    let verified = main_ok
        && !*cancel.borrow()
        && !ctx.journal_lost()
        && verifications
            .iter()
            .all(|v| v.status != StepStatus::Failed && v.status != StepStatus::Cancelled);
    // The moment the last verification passed: its journaled finish when a resumed run had already verified.
    let verified_at = verifications
        .iter()
        .filter_map(|v| v.finished_at.as_deref())
        .filter_map(|t| humantime::parse_rfc3339_weak(t).ok())
        .max()
        .unwrap_or_else(SystemTime::now);
    let rto_seconds = verified.then(|| {
        verified_at
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64()
    });
    let interrupted = *cancel.borrow() || ctx.journal_lost();

    // Failover never tears down; a drill does unless --keep. A runner that lost its journal (taken over, or the
    // state store failed) must not touch what the run created any more.
    let teardown = if spec.mode != Mode::Drill || spec.keep || ctx.journal_lost() {
        Teardown {
            status: "skipped".into(),
            steps: Vec::new(),
        }
    } else {
        ctx.teardown(&mut steps).await
    };
    for v in &mut verifications {
        v.plugin_digest = digest_of(spec, v.uses.as_deref());
    }
    for s in &mut steps {
        s.plugin_digest = digest_of(spec, s.uses.as_deref());
    }
    let outcome = if interrupted {
        Outcome::Interrupted
    } else if verified && teardown.status != "failed" {
        Outcome::Passed
    } else {
        Outcome::Failed
    };
    RunRecord {
        run_id: spec.run_id.clone(),
        mode: spec.mode,
        outcome,
        started_at,
        finished_at: now_rfc3339(),
        rto_seconds,
        steps,
        verifications,
        teardown,
    }
}

pub(crate) fn digest_of(spec: &RunSpec<'_>, uses: Option<&str>) -> Option<String> {
    let plugin = uses?.split_once('/')?.0;
    spec.digests.get(plugin).cloned()
}

fn skipped(step: &Step, why: &str) -> StepRecord {
    let mut r = StepRecord::new(&step.id, step.uses.clone());
    r.note = Some(why.into());
    r
}

pub(crate) struct Runner<'a, 'b, E> {
    pub(crate) spec: &'a RunSpec<'b>,
    pub(crate) exec: Arc<E>,
    pub(crate) approver: &'a dyn Approver,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) scope: &'a mut Scope,
    /// Ids of steps whose apply started, in order; teardown walks it backwards.
    pub(crate) applied_order: Vec<String>,
    /// The same ids as a set, to add each once without a scan.
    pub(crate) applied: HashSet<String>,
    /// Rendered params of every started step, for destroy and for steps cut off by an interrupt.
    pub(crate) started_params: HashMap<String, serde_json::Value>,
    /// Which step each running task runs, to name the step whose task panicked.
    pub(crate) tasks: HashMap<tokio::task::Id, String>,
    /// The run's interrupt, for what waits outside `run_section`'s own select (an approval gate).
    pub(crate) cancel: watch::Receiver<bool>,
}

/// How long running steps may go on after an interrupt before they are cancelled.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// A finished step task: its id, the rendered params, the result and attempt count.
type Done = (String, serde_json::Value, StepResult, u32, String, String);

impl<E: StepExecutor + 'static> Runner<'_, '_, E> {
    /// Runs one section's steps as their `needs` allow. Steps whose needs failed are skipped.
    ///
    /// Event-driven, O(steps + edges + steps·log steps) for the whole section: each step counts the needs it still
    /// waits for, and a step that settles counts down its dependents (or skips them, when it did not succeed),
    /// so a wake-up touches only the steps it frees. Ready steps start in declaration order. The first version
    /// rescanned every pending step at every wake-up, which made a 10,000-step run quadratic.
    pub(crate) async fn run_section(
        &mut self,
        steps: &[&Step],
        phase: Phase,
        cancel: &mut watch::Receiver<bool>,
    ) -> Vec<StepRecord> {
        let graph = SectionGraph::new(steps);
        let mut waiting = graph.waiting.clone();
        let mut records: HashMap<String, StepRecord> = HashMap::new();
        // Steps that are ready to start, by declaration position.
        let mut ready: BTreeSet<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
        let mut running: JoinSet<Done> = JoinSet::new();
        // Settled steps (position, whether dependents may run) whose dependents are still to be told.
        let mut settled: Vec<(usize, bool)> = Vec::new();
        loop {
            if *cancel.borrow() {
                break;
            }
            work::wakeup();
            loop {
                // Tell dependents first: a failed step skips them before anything else starts.
                while let Some((at, ok)) = settled.pop() {
                    for &d in &graph.dependents[at] {
                        work::node();
                        if records.contains_key(&steps[d].id) {
                            continue;
                        }
                        if ok {
                            waiting[d] -= 1;
                            if waiting[d] == 0 {
                                ready.insert(d);
                            }
                        } else {
                            let mut r = skipped(
                                steps[d],
                                &format!(
                                    "not run: needs `{}`, which did not succeed",
                                    steps[at].id
                                ),
                            );
                            r.status = StepStatus::Skipped;
                            records.insert(steps[d].id.clone(), r);
                            ready.remove(&d);
                            settled.push((d, false));
                        }
                    }
                }
                let Some(at) = ready.pop_first() else { break };
                work::node();
                let step = steps[at];
                if let Some(record) = self.replayed(step, phase) {
                    let ok = matches!(record.status, StepStatus::Succeeded | StepStatus::Skipped);
                    records.insert(step.id.clone(), record);
                    settled.push((at, ok));
                    continue;
                }
                match self.start(step, phase, &mut running).await {
                    Started::Running => {}
                    Started::Settled(record, ok) => {
                        records.insert(step.id.clone(), *record);
                        settled.push((at, ok));
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                done = running.join_next_with_id() => {
                    // Every step that has ended by now: their step-finished events are stored together (one
                    // object when the journal is busy), and only then may their dependents start.
                    let mut ended: Vec<StepRecord> = done.and_then(|d| self.joined(&graph, phase, d)).into_iter().collect();
                    while let Some(more) = running.try_join_next_with_id() {
                        ended.extend(self.joined(&graph, phase, more));
                    }
                    self.journal_all_finished(phase, ended.iter()).await;
                    for record in ended {
                        if let Some(at) = graph.position(&record.id) {
                            settled.push((at, record.status == StepStatus::Succeeded));
                        }
                        records.insert(record.id.clone(), record);
                    }
                }
                _ = cancel.changed() => {}
            }
        }
        // Interrupted: give running steps a moment to finish (so their state reaches teardown), then cancel. A
        // runner that lost its journal stops at once: another runner owns the run now.
        let grace = tokio::time::sleep(if self.journal_lost() {
            Duration::ZERO
        } else {
            INTERRUPT_GRACE
        });
        tokio::pin!(grace);
        while !running.is_empty() {
            tokio::select! {
                done = running.join_next_with_id() => {
                    let Some(record) = done.and_then(|d| self.joined(&graph, phase, d)) else { continue };
                    self.journal_finished(phase, &record).await;
                    records.insert(record.id.clone(), record);
                }
                _ = &mut grace => {
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                }
            }
        }
        steps
            .iter()
            .map(|s| {
                records
                    .remove(&s.id)
                    .unwrap_or_else(|| match self.started_params.get(&s.id) {
                        // Started but cut off: it may have created something, so teardown must visit it.
                        Some(params) => {
                            let mut r = StepRecord::new(&s.id, s.uses.clone());
                            r.status = StepStatus::Cancelled;
                            r.note = Some("cancelled by an interrupt while running".into());
                            r.applied = phase == Phase::Apply;
                            r.outputs = serde_json::json!({ "params": params });
                            r
                        }
                        None => skipped(s, "not run: the run was interrupted"),
                    })
            })
            .collect()
    }

    async fn start(&mut self, step: &Step, phase: Phase, running: &mut JoinSet<Done>) -> Started {
        let mode = self.spec.mode;
        if let Some(when) = &step.when {
            match expr::condition(when, self.scope) {
                Ok(true) => {}
                Ok(false) => {
                    return Started::Settled(
                        Box::new(skipped(step, "skipped: `when` was false")),
                        true,
                    );
                }
                Err(e) => {
                    return Started::Settled(
                        Box::new(failed(step, "expression", &e.to_string())),
                        false,
                    );
                }
            }
        }
        let mut note = None;
        if let Some(question) = &step.approval {
            let question = match expr::render(
                &serde_yaml::Value::String(question.clone()),
                self.scope,
                false,
            ) {
                Ok(v) => v.as_str().unwrap_or_default().to_string(),
                Err(e) => {
                    return Started::Settled(
                        Box::new(failed(step, "expression", &e.to_string())),
                        false,
                    );
                }
            };
            if let Some(how) = self.resumed_approval(&step.id) {
                note = Some(format!("approved ({how}, before the resume): {question}"));
            } else if mode == Mode::Drill {
                return Started::Settled(
                    Box::new(skipped(
                        step,
                        &format!("approval skipped in a drill: {question}"),
                    )),
                    true,
                );
            } else {
                // An interrupt while the gate waits for a person ends the wait at once.
                let mut cancel = self.cancel.clone();
                let answer = tokio::select! {
                    answer = self.approver.approve(&step.id, &question) => answer,
                    // A closed channel is no interrupt: then only the answer ends the wait.
                    Ok(_) = cancel.wait_for(|stop| *stop) => Err(format!(
                        "interrupted while approval gate `{}` waited for an answer", step.id
                    )),
                };
                match answer {
                    Ok(how) => {
                        if let Some(journal) = &self.spec.journal {
                            let given = EventBody::ApprovalGiven {
                                step: step.id.clone(),
                                question: question.clone(),
                                how: how.clone(),
                            };
                            if let Err(e) = journal.append(given).await {
                                return Started::Settled(
                                    Box::new(failed(step, "host", &e.to_string())),
                                    false,
                                );
                            }
                        }
                        note = Some(format!("approved ({how}): {question}"))
                    }
                    Err(why) => {
                        return Started::Settled(Box::new(failed(step, "approval", &why)), false);
                    }
                }
            }
        }
        let Some((plugin, operation)) = step.uses.as_deref().and_then(|u| u.split_once('/')) else {
            let mut r = StepRecord::new(&step.id, None);
            r.status = StepStatus::Succeeded;
            r.note = note;
            r.started_at = Some(now_rfc3339());
            r.finished_at = r.started_at.clone();
            self.scope.steps.insert(
                step.id.clone(),
                StepView {
                    outputs: serde_json::json!({}),
                },
            );
            return Started::Settled(Box::new(r), true);
        };
        let params = match expr::render(
            &serde_yaml::Value::Mapping(step.with.clone()),
            self.scope,
            false,
        ) {
            Ok(p) => p,
            Err(e) => {
                return Started::Settled(
                    Box::new(failed(step, "expression", &e.to_string())),
                    false,
                );
            }
        };
        let call = StepCall {
            run_id: self.spec.run_id.clone(),
            step_id: step.id.clone(),
            plugin: plugin.into(),
            operation: operation.into(),
            phase,
            mode,
            attempt: 1,
            params: params.clone(),
            grants: step.grants.clone(),
            limits: step.limits.clone(),
            timeout: step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
            state: BTreeMap::new(),
        };
        let mut call = call;
        if let Some(cut_off) = self.in_flight(phase, &step.id) {
            // Cut off by a crash: the plugin sees the next attempt number and the state the cut-off attempt
            // journaled, so it can find what it created.
            call.attempt = cut_off.attempts + 1;
            call.state = cut_off.state;
        }
        if phase == Phase::Apply && self.applied.insert(step.id.clone()) {
            self.applied_order.push(step.id.clone());
        }
        self.started_params.insert(step.id.clone(), params.clone());
        let exec = self.exec.clone();
        let observer = self.observer.clone();
        let retry = step.retry.clone();
        let id = step.id.clone();
        let journal = self.spec.journal.clone();
        let task = running.spawn(async move {
            let started_at = now_rfc3339();
            let (result, attempts) = attempt_loop(
                exec.as_ref(),
                observer.as_ref(),
                journal.as_deref(),
                call,
                retry.as_ref(),
            )
            .await;
            (id, params, result, attempts, started_at, now_rfc3339())
        });
        self.tasks.insert(task.id(), step.id.clone());
        Started::Running
    }

    /// The record of a finished step task. A task that panicked is an internal failure of its step, not an
    /// interrupt (and teardown visits the step: it may have created something); a cancelled one is left to the
    /// caller.
    fn joined(
        &mut self,
        graph: &SectionGraph<'_>,
        phase: Phase,
        joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Option<StepRecord> {
        match joined {
            Ok((task, (id, params, result, attempts, started_at, finished_at))) => {
                self.tasks.remove(&task);
                let step = graph.step(&id);
                Some(self.finish(
                    step,
                    phase,
                    params,
                    result,
                    attempts,
                    started_at,
                    finished_at,
                ))
            }
            Err(e) if e.is_panic() => {
                let id = self.tasks.remove(&e.id())?;
                let step = graph.step(&id)?;
                let payload = e.into_panic();
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                tracing::error!(step = %id, "the runner's task for the step panicked: {why}");
                let mut r = failed(
                    step,
                    "internal",
                    &format!("step `{id}`: the runner failed while running it (a panic: {why})"),
                );
                r.attempts = 1;
                r.applied = phase == Phase::Apply;
                r.outputs = serde_json::json!({ "params": self.started_params.get(&id) });
                self.observer.step_finished(&id, phase, r.status);
                Some(r)
            }
            Err(_) => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        step: Option<&Step>,
        phase: Phase,
        params: serde_json::Value,
        result: StepResult,
        attempts: u32,
        started_at: String,
        finished_at: String,
    ) -> StepRecord {
        let Some(step) = step else {
            return StepRecord::new("?", None);
        };
        let mut r = StepRecord::new(&step.id, step.uses.clone());
        r.attempts = attempts;
        r.started_at = Some(started_at);
        r.finished_at = Some(finished_at);
        r.state = result.state;
        r.applied = phase == Phase::Apply;
        r.outputs = params; // rendered params, kept for destroy; replaced by outputs on success below
        match result.outcome {
            Ok(outputs) => {
                r.status = StepStatus::Succeeded;
                self.scope.steps.insert(
                    step.id.clone(),
                    StepView {
                        outputs: outputs.clone(),
                    },
                );
                r.outputs = serde_json::json!({ "params": r.outputs, "outputs": outputs });
            }
            Err(e) => {
                r.status = StepStatus::Failed;
                r.error = Some(ErrorRecord::from(&e));
                r.outputs = serde_json::json!({ "params": r.outputs });
            }
        }
        self.observer.step_finished(&step.id, phase, r.status);
        r
    }
}

impl<E: StepExecutor + 'static> Runner<'_, '_, E> {
    pub(crate) fn journal_lost(&self) -> bool {
        self.spec
            .journal
            .as_ref()
            .is_some_and(|j| j.lost().is_some())
    }

    /// A step the resumed run already finished in this phase, restoring its outputs for later steps.
    fn replayed(&mut self, step: &Step, phase: Phase) -> Option<StepRecord> {
        let mut record = self.done(phase, &step.id)?;
        record.uses = step.uses.clone();
        if record.status == StepStatus::Succeeded {
            let outputs = record.outputs.get("outputs").cloned().unwrap_or_default();
            self.scope
                .steps
                .insert(step.id.clone(), StepView { outputs });
        }
        self.observer.step_finished(&step.id, phase, record.status);
        Some(record)
    }

    pub(crate) fn done(&self, phase: Phase, id: &str) -> Option<StepRecord> {
        let seed = self.spec.resume.as_ref()?;
        seed.done.get(&(phase, id.to_string())).cloned()
    }

    pub(crate) fn in_flight(&self, phase: Phase, id: &str) -> Option<super::resume::InFlight> {
        let seed = self.spec.resume.as_ref()?;
        seed.in_flight.get(&(phase, id.to_string())).cloned()
    }

    fn resumed_approval(&self, id: &str) -> Option<String> {
        self.spec.resume.as_ref()?.approvals.get(id).cloned()
    }

    /// Records the final results of steps that ended together, appended at once so that the journal stores them
    /// in as few writes as it can; returns when all are stored (or the journal is lost).
    pub(crate) async fn journal_all_finished<'r>(
        &self,
        phase: Phase,
        records: impl Iterator<Item = &'r StepRecord>,
    ) {
        futures::future::join_all(records.map(|r| self.journal_finished(phase, r))).await;
    }

    /// Records a step's final result in this phase; a step that never reached a plugin is not journaled
    /// (resume decides it again the same way).
    pub(crate) async fn journal_finished(&self, phase: Phase, r: &StepRecord) {
        let Some(journal) = &self.spec.journal else {
            return;
        };
        if r.attempts == 0 && r.status != StepStatus::Cancelled {
            return;
        }
        let finished = StepFinished {
            step: r.id.clone(),
            phase,
            status: r.status,
            attempts: r.attempts,
            outputs: r.outputs.clone(),
            state: r.state.clone(),
            error: r.error.clone(),
            note: r.note.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            applied: r.applied,
        };
        if let Err(e) = journal
            .append(EventBody::StepFinished(Box::new(finished)))
            .await
        {
            tracing::error!(step = %r.id, "{e}");
        }
    }
}

enum Started {
    Running,
    /// Decided without running a plugin: the record, and whether dependents may run.
    Settled(Box<StepRecord>, bool),
}

fn failed(step: &Step, kind: &str, message: &str) -> StepRecord {
    let mut r = StepRecord::new(&step.id, step.uses.clone());
    r.status = StepStatus::Failed;
    r.error = Some(ErrorRecord {
        kind: kind.into(),
        message: message.into(),
    });
    r
}
