//! Teardown: the destroy phase of every step whose apply ran, in the reverse of the order the applies started,
//! with the params and state each left. A drill runs it after success, failure or an interrupt; `respawn destroy`
//! runs it later from the journal.

use respawn_report::now_rfc3339;
use respawn_report::record::{ErrorRecord, StepRecord, StepStatus, Teardown};
use respawn_workflow::DEFAULT_STEP_TIMEOUT;

use super::attempts::attempt_loop;
use super::run::Runner;
use super::{Phase, StepCall, StepExecutor};

impl<E: StepExecutor + 'static> Runner<'_, '_, E> {
    /// Destroys what apply created, in the reverse of the order apply finished, whatever happened before.
    pub(crate) async fn teardown(&mut self, steps: &mut [StepRecord]) -> Teardown {
        let mut out = Vec::new();
        let order: Vec<String> = self.applied_order.iter().rev().cloned().collect();
        // Id -> the applied record: a lookup per step, not a scan (O(steps) for the whole teardown).
        let mut applied_records = std::collections::HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            if s.applied {
                applied_records.entry(s.id.clone()).or_insert(i);
            }
        }
        for id in order {
            let Some(applied) = applied_records.get(&id).map(|&i| &steps[i]) else {
                continue;
            };
            let Some(step) = self.spec.loaded.workflow.step(&id) else {
                continue;
            };
            let Some((plugin, operation)) = step.uses.as_deref().and_then(|u| u.split_once('/'))
            else {
                continue;
            };
            if let Some(done) = self.done(Phase::Destroy, &id) {
                out.push(done);
                continue;
            }
            let mut call = StepCall {
                run_id: self.spec.run_id.clone(),
                step_id: id.clone(),
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
            if let Some(cut_off) = self.in_flight(Phase::Destroy, &id) {
                call.attempt = cut_off.attempts + 1;
                call.state.extend(cut_off.state);
            }
            let started_at = now_rfc3339();
            let (result, attempts) = attempt_loop(
                self.exec.as_ref(),
                self.observer.as_ref(),
                self.spec.journal.as_deref(),
                call,
                step.retry.as_ref(),
            )
            .await;
            let mut r = StepRecord::new(&id, step.uses.clone());
            r.attempts = attempts;
            r.started_at = Some(started_at);
            r.finished_at = Some(now_rfc3339());
            r.state = result.state;
            match result.outcome {
                Ok(_) => r.status = StepStatus::Succeeded,
                Err(e) => {
                    r.status = StepStatus::Failed;
                    r.error = Some(ErrorRecord::from(&e));
                }
            }
            self.observer.step_finished(&id, Phase::Destroy, r.status);
            self.journal_finished(Phase::Destroy, &r).await;
            if self.journal_lost() {
                break;
            }
            out.push(r);
        }
        let failed = out.iter().any(|r| r.status == StepStatus::Failed) || self.journal_lost();
        Teardown {
            status: if failed { "failed" } else { "succeeded" }.into(),
            steps: out,
        }
    }
}
