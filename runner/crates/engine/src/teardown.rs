//! Teardown: the destroy phase of every step whose apply ran, in reverse dependency order, with the params and
//! state each left. A drill runs it after success, failure or an interrupt; `respawn destroy` runs it later
//! from the journal.
//!
//! A step's destroy starts once every step that needs it, directly or through steps that were never applied,
//! has been destroyed; steps that do not depend on each other are destroyed at once, as their applies ran. So
//! teardown takes as long as the graph is deep, not as long as it is wide, and the journal events of destroys
//! that end together are stored together. The report lists the destroys in the reverse of the order the
//! applies started, whatever order they finished in.

use std::collections::{BTreeSet, HashMap};

use respawn_report::now_rfc3339;
use respawn_report::record::{ErrorRecord, StepRecord, StepStatus, Teardown};
use respawn_workflow::{DEFAULT_STEP_TIMEOUT, Step, work};
use tokio::task::JoinSet;

use super::attempts::attempt_loop;
use super::run::Runner;
use super::section::SectionGraph;
use super::{Phase, StepCall, StepExecutor, StepResult};

/// A finished destroy task: the step's position, when it started and ended, its result and attempts.
type Destroyed = (usize, String, String, StepResult, u32);

impl<E: StepExecutor + 'static> Runner<'_, '_, E> {
    /// Destroys what apply created, in reverse dependency order, whatever happened before.
    ///
    /// O(steps + edges): each step counts the dependents whose teardown is not over, and a step that is done
    /// (destroyed, or with nothing to destroy) counts down the steps it needs.
    pub(crate) async fn teardown(&mut self, steps: &mut [StepRecord]) -> Teardown {
        let w = &self.spec.loaded.workflow;
        let all: Vec<&Step> = w.steps.iter().collect();
        let graph = SectionGraph::new(&all);
        // Place in the report: the reverse of the order the applies started.
        let rank: HashMap<&str, usize> = self
            .applied_order
            .iter()
            .rev()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        // Id -> the applied record: a lookup per step, not a scan.
        let mut applied_records = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            if s.applied {
                applied_records.entry(s.id.as_str()).or_insert(i);
            }
        }
        let needs: Vec<Vec<usize>> = all
            .iter()
            .map(|s| s.needs.iter().filter_map(|n| graph.position(n)).collect())
            .collect();
        let mut left: Vec<usize> = graph.dependents.iter().map(Vec::len).collect();
        // Ready steps start in report order, so a graph without edges is destroyed as the sequential teardown was.
        let key = |i: usize| {
            (
                rank.get(all[i].id.as_str()).copied().unwrap_or(usize::MAX),
                i,
            )
        };
        let mut ready: BTreeSet<(usize, usize)> =
            (0..all.len()).filter(|&i| left[i] == 0).map(key).collect();
        let mut running: JoinSet<Destroyed> = JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut out: Vec<StepRecord> = Vec::new();
        let mut settle = |at: usize, ready: &mut BTreeSet<(usize, usize)>| {
            for &n in &needs[at] {
                work::node();
                left[n] -= 1;
                if left[n] == 0 {
                    ready.insert(key(n));
                }
            }
        };
        loop {
            work::wakeup();
            while !self.journal_lost() {
                let Some((_, at)) = ready.pop_first() else {
                    break;
                };
                work::node();
                let step = all[at];
                let id = step.id.as_str();
                let applied = applied_records.get(id).map(|&i| &steps[i]);
                let Some(applied) = applied.filter(|_| rank.contains_key(id)) else {
                    settle(at, &mut ready);
                    continue;
                };
                let Some((plugin, operation)) =
                    step.uses.as_deref().and_then(|u| u.split_once('/'))
                else {
                    settle(at, &mut ready);
                    continue;
                };
                if let Some(done) = self.done(Phase::Destroy, id) {
                    out.push(done);
                    settle(at, &mut ready);
                    continue;
                }
                let mut call = StepCall {
                    run_id: self.spec.run_id.clone(),
                    step_id: id.to_string(),
                    plugin: plugin.into(),
                    operation: operation.into(),
                    phase: Phase::Destroy,
                    mode: self.spec.mode,
                    attempt: 1,
                    params: applied.outputs.get("params").cloned().unwrap_or_default(),
                    grants: step.grants.clone(),
                    limits: step.limits.clone(),
                    timeout: step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
                    state: applied.state.clone(),
                };
                if let Some(cut_off) = self.in_flight(Phase::Destroy, id) {
                    call.attempt = cut_off.attempts + 1;
                    call.state.extend(cut_off.state);
                }
                let exec = self.exec.clone();
                let observer = self.observer.clone();
                let journal = self.spec.journal.clone();
                let retry = step.retry.clone();
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
                    (at, started_at, now_rfc3339(), result, attempts)
                });
                tasks.insert(task.id(), at);
            }
            let Some(first) = running.join_next_with_id().await else {
                break;
            };
            // Every destroy that has ended by now: their events go out together.
            let mut ended = vec![first];
            while let Some(more) = running.try_join_next_with_id() {
                ended.push(more);
            }
            let mut records = Vec::new();
            for joined in ended {
                let (at, record) = match joined {
                    Ok((task, (at, started_at, finished_at, result, attempts))) => {
                        tasks.remove(&task);
                        let times = (started_at, finished_at);
                        (at, destroyed(all[at], times, result, attempts))
                    }
                    Err(e) => {
                        let Some(at) = tasks.remove(&e.id()) else {
                            continue;
                        };
                        let mut r = StepRecord::new(&all[at].id, all[at].uses.clone());
                        r.status = StepStatus::Failed;
                        r.attempts = 1;
                        r.error = Some(ErrorRecord {
                            kind: "internal".into(),
                            message: format!(
                                "step `{}`: the runner failed while destroying it ({e})",
                                all[at].id
                            ),
                        });
                        (at, r)
                    }
                };
                self.observer
                    .step_finished(&record.id, Phase::Destroy, record.status);
                records.push((at, record));
            }
            self.journal_all_finished(Phase::Destroy, records.iter().map(|(_, r)| r))
                .await;
            if self.journal_lost() {
                // Another runner owns the run now (or the store failed): start nothing more, record nothing more.
                continue;
            }
            for (at, record) in records {
                settle(at, &mut ready);
                out.push(record);
            }
        }
        out.sort_by_key(|r| rank.get(r.id.as_str()).copied().unwrap_or(usize::MAX));
        let failed = out.iter().any(|r| r.status == StepStatus::Failed) || self.journal_lost();
        Teardown {
            status: if failed { "failed" } else { "succeeded" }.into(),
            steps: out,
        }
    }
}

/// The record of one destroy.
fn destroyed(
    step: &Step,
    (started_at, finished_at): (String, String),
    result: StepResult,
    attempts: u32,
) -> StepRecord {
    let mut r = StepRecord::new(&step.id, step.uses.clone());
    r.attempts = attempts;
    r.started_at = Some(started_at);
    r.finished_at = Some(finished_at);
    r.state = result.state;
    match result.outcome {
        Ok(_) => r.status = StepStatus::Succeeded,
        Err(e) => {
            r.status = StepStatus::Failed;
            r.error = Some(ErrorRecord::from(&e));
        }
    }
    r
}
