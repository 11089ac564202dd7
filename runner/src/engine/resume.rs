//! What a resumed run starts from: the steps its journal says are done or in flight.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::Phase;
use super::record::{StepRecord, StepStatus};
use crate::journal::replay::Replayed;

/// A step cut off by the crash: the attempts it had, and the state it had written.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    pub attempts: u32,
    pub state: BTreeMap<String, String>,
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
                    done.insert(key, rec);
                }
                _ => {
                    in_flight.insert(
                        key,
                        InFlight {
                            attempts: progress.attempts_started,
                            state: progress.state.clone(),
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
