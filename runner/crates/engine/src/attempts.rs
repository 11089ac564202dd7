//! One step's attempts: the retry policy's backoff with jitter, each attempt journaled before the plugin runs,
//! and each attempt's state handed to the next.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use respawn_sandbox::limits::MAX_RETRY_DELAY;

use super::Observer;
use super::recovery;
use super::{StepCall, StepError, StepExecutor, StepResult};
use respawn_journal::{EventBody, Journal};
use respawn_report::record::ErrorRecord;
use respawn_workflow::Retry;

/// Calls a step until it succeeds, fails for good, or its retry policy is spent. The state of each attempt is
/// handed to the next.
///
/// `call.attempt` is the first attempt's number (above 1 when a resumed run continues a cut-off step, which
/// then gets at least one more attempt). With a journal, each attempt is recorded before the plugin is called.
pub async fn attempt_loop<E: StepExecutor>(
    exec: &E,
    observer: &dyn Observer,
    journal: Option<&Journal>,
    mut call: StepCall,
    retry: Option<&Retry>,
) -> (StepResult, u32) {
    let mut attempt = call.attempt.max(1);
    let attempts = retry.map_or(1, |r| r.attempts.max(1)).max(attempt);
    let mut backoff = retry.map_or(Duration::from_secs(1), |r| r.backoff);
    loop {
        call.attempt = attempt;
        observer.step_started(&call.step_id, call.phase, attempt);
        if let Some(journal) = journal {
            let started = EventBody::StepStarted {
                step: call.step_id.clone(),
                phase: call.phase,
                attempt,
                params: call.params.clone(),
            };
            if let Err(e) = journal.append(started).await {
                let outcome = Err(StepError::Host {
                    step: call.step_id.clone(),
                    message: e.to_string(),
                });
                return (
                    StepResult {
                        outcome,
                        state: call.state,
                    },
                    attempt,
                );
            }
        }
        let result = recovery::check_outputs(&call, exec.execute(call.clone()).await);
        let result = crate::evidence::check_declared(&call, result);
        let again = matches!(&result.outcome, Err(e) if e.retryable()) && attempt < attempts;
        if !again {
            return (result, attempt);
        }
        if let Err(e) = &result.outcome {
            tracing::warn!(step = %call.step_id, attempt, error = %e, "retrying in {backoff:?}");
            if let Some(journal) = journal {
                let failed = EventBody::AttemptFailed {
                    step: call.step_id.clone(),
                    phase: call.phase,
                    attempt,
                    error: ErrorRecord::from(e),
                    state: result.state.clone(),
                };
                let _ = journal.append(failed).await;
            }
        }
        call.state = result.state;
        tokio::time::sleep(with_jitter(backoff)).await;
        backoff = backoff.saturating_mul(2).min(MAX_RETRY_DELAY);
        attempt += 1;
    }
}

/// Adds up to 25% random jitter, so that retries of many steps do not hit a recovering service in lockstep.
fn with_jitter(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    d + d.mul_f64((random % 1000) as f64 / 4000.0)
}
