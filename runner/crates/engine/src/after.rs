//! After a run: the environment a failover or a kept drill left keeps running, and two commands look after it
//! from the run's journal, from any machine that reaches the state store.
//!
//! - [`reverify`] runs the workflow's `verify:` section again against it (drift shows up here), with the outputs
//!   the journal recorded for the applied steps. It never applies anything.
//! - [`destroy`] tears down, in reverse order, every step whose apply started (finished or cut off by a dead
//!   runner), each with the params and state its journal recorded.

use std::sync::Arc;

use respawn_report::now_rfc3339;
use respawn_report::record::{Outcome, StepRecord, StepStatus, Teardown};
use respawn_workflow::expr::{RunInfo, Scope, StepView};
use respawn_workflow::{Phase, Step};
use tokio::sync::watch;

use crate::resume::ResumeSeed;
use crate::run::{RunSpec, Runner, digest_of};
use crate::{Approver, Observer, StepExecutor};

/// What a re-verification found.
#[derive(Debug, Clone)]
pub struct Reverified {
    pub outcome: Outcome,
    pub started_at: String,
    pub finished_at: String,
    pub verifications: Vec<StepRecord>,
}

/// Verification has no approval gates; a verify step with one is refused, not asked.
struct NoGates;
impl Approver for NoGates {
    fn approve(&self, step: &str, _: &str) -> crate::Approval {
        let why = format!("`{step}` is an approval gate; `respawn verify` asks nobody");
        Box::pin(std::future::ready(Err(why)))
    }
}

fn scope_of(spec: &RunSpec<'_>) -> Scope {
    let mut scope = Scope {
        params: spec.params.clone(),
        run: RunInfo {
            id: spec.run_id.clone(),
            mode: spec.mode.to_string(),
            started_at: spec
                .resume
                .as_ref()
                .map(|s| s.started_at.clone())
                .unwrap_or_default(),
        },
        steps: Default::default(),
    };
    if let Some(seed) = &spec.resume {
        for ((phase, id), record) in &seed.done {
            if *phase == Phase::Apply && record.status == StepStatus::Succeeded {
                let outputs = record.outputs.get("outputs").cloned().unwrap_or_default();
                scope.steps.insert(id.clone(), StepView { outputs });
            }
        }
    }
    scope
}

/// Runs the verify section of a finished run again, with the outputs its journal (`seed`) recorded for the
/// applied steps; its earlier verify results are not reused, and nothing is journaled step by step (the caller
/// journals the result as one event).
pub async fn reverify<E: StepExecutor + 'static>(
    spec: &RunSpec<'_>,
    seed: &ResumeSeed,
    exec: Arc<E>,
    observer: Arc<dyn Observer>,
    mut cancel: watch::Receiver<bool>,
) -> Reverified {
    let started_at = now_rfc3339();
    let mut seed = seed.clone();
    seed.done.retain(|(phase, _), _| *phase != Phase::Verify);
    seed.in_flight
        .retain(|(phase, _), _| *phase != Phase::Verify);
    let fresh = spec.with(None, Some(seed));
    let mut scope = scope_of(&fresh);
    let mut runner = Runner {
        spec: &fresh,
        exec,
        approver: &NoGates,
        observer,
        scope: &mut scope,
        applied_order: Vec::new(),
        applied: Default::default(),
        started_params: Default::default(),
        tasks: Default::default(),
        cancel: cancel.clone(),
    };
    let verify: Vec<&Step> = fresh.loaded.workflow.verify.iter().collect();
    let mut verifications = runner
        .run_section(&verify, Phase::Verify, &mut cancel)
        .await;
    for v in &mut verifications {
        v.plugin_digest = digest_of(&fresh, v.uses.as_deref());
    }
    let passed = !*cancel.borrow()
        && verifications
            .iter()
            .all(|v| matches!(v.status, StepStatus::Succeeded | StepStatus::Skipped));
    Reverified {
        outcome: if *cancel.borrow() {
            Outcome::Interrupted
        } else if passed {
            Outcome::Passed
        } else {
            Outcome::Failed
        },
        started_at,
        finished_at: now_rfc3339(),
        verifications,
    }
}

/// Tears down what a run created, from its journal (`seed`): every step whose apply started, finished or cut
/// off, in reverse order, each with the params and state it left. Destroys the journal shows succeeded are not
/// run again; failed or cut-off ones are. Journaled like a drill's teardown.
pub async fn destroy<E: StepExecutor + 'static>(
    spec: &RunSpec<'_>,
    seed: &ResumeSeed,
    exec: Arc<E>,
    observer: Arc<dyn Observer>,
) -> Teardown {
    let mut seed = seed.clone();
    // A destroy that failed before runs again.
    seed.done
        .retain(|(phase, _), r| *phase != Phase::Destroy || r.status == StepStatus::Succeeded);
    let mut steps: Vec<StepRecord> = Vec::new();
    for id in &seed.applied_order {
        let uses = spec.loaded.workflow.step(id).and_then(|s| s.uses.clone());
        if let Some(done) = seed.done.get(&(Phase::Apply, id.clone())) {
            let mut r = done.clone();
            r.uses = uses;
            steps.push(r);
        } else if let Some(cut_off) = seed.in_flight.get(&(Phase::Apply, id.clone())) {
            // Its runner died mid-apply: it may have created something, recorded in its state.
            let mut r = StepRecord::new(id, uses);
            r.applied = true;
            r.state = cut_off.state.clone();
            r.outputs = serde_json::json!({ "params": cut_off.params });
            steps.push(r);
        }
    }
    let applied_order = seed.applied_order.clone();
    let with_seed = spec.with(spec.journal.clone(), Some(seed));
    let mut scope = scope_of(&with_seed);
    let mut runner = Runner {
        spec: &with_seed,
        exec,
        approver: &NoGates,
        observer,
        scope: &mut scope,
        applied: applied_order.iter().cloned().collect(),
        applied_order,
        started_params: Default::default(),
        tasks: Default::default(),
        // Teardown has no gates to interrupt: it runs to its end.
        cancel: watch::channel(false).1,
    };
    runner.teardown(&mut steps).await
}
