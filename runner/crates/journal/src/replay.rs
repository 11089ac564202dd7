//! Folding a run's events back into what the run had done: the seed of `respawn resume`, and the status shown
//! by `respawn runs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::event::{Event, EventBody, RunStarted, ServiceLogs, StepFinished};
use respawn_report::Reverification;
use respawn_report::record::{Outcome, RecoveryPoint};
use respawn_workflow::Phase;

/// A step's progress in one phase.
#[derive(Debug, Clone, Default)]
pub struct StepProgress {
    /// Attempts that were started (the next one is `attempts_started + 1`).
    pub attempts_started: u32,
    /// Rendered params of the latest attempt.
    pub params: serde_json::Value,
    /// State as of the newest event that carried it.
    pub state: BTreeMap<String, String>,
    pub finished: Option<StepFinished>,
}

#[derive(Debug, Clone)]
pub struct ServiceRecord {
    pub step: String,
    pub pid: u32,
    pub program: String,
    pub start_ticks: Option<u64>,
    /// In its own session and process group, outliving the runner.
    pub detached: bool,
    pub logs: Option<ServiceLogs>,
}

/// An image a step restored (an `image-restored` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCreated {
    pub step: String,
    /// The image's `created` time (RFC 3339, UTC).
    pub created: String,
}

/// An image a step restored, as an artifact of the run (an `image-restored` event with its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRestored {
    pub step: String,
    pub created: Option<String>,
    /// The workflow's store name.
    pub store: Option<String>,
    pub prefix: Option<String>,
    pub tag: Option<String>,
    pub manifest_digest: String,
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub recovery_points: Vec<RecoveryPoint>,
    pub teardown: String,
    pub at: String,
    /// Where the runner wrote the report (absolute), as it recorded.
    pub report_dir: Option<String>,
    /// The report's times, when recorded.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Steps and verifications decided without a plugin call (no `step-finished` of their own).
    pub settled: Vec<super::event::SettledStep>,
}

/// What the journal says a run did.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub start: RunStarted,
    /// Keyed by (phase, step id).
    pub steps: BTreeMap<(Phase, String), StepProgress>,
    /// Steps in the order their apply first started: teardown walks it backwards.
    pub applied_order: Vec<String>,
    /// Steps in the order their destroy finished, as the teardown ran them.
    pub destroyed_order: Vec<String>,
    pub approvals: BTreeMap<String, String>,
    pub services: Vec<ServiceRecord>,
    /// The images restored, by step, in the order they were.
    pub images_created: Vec<ImageCreated>,
    /// Every image restored with its digest, in the order they were: artifacts of the run.
    pub images_restored: Vec<ImageRestored>,
    pub finished: Option<Finished>,
    /// When `respawn destroy` finished tearing the run down, successfully.
    pub destroyed_at: Option<String>,
    /// A `respawn destroy` started and has not succeeded (it runs, died, or its teardown failed).
    pub destroying: bool,
    /// The latest `respawn destroy` finished with a failed teardown: destroy again to retry it.
    pub destroy_failed: bool,
    /// Each `respawn verify` of the environment the run left, oldest first.
    pub reverifications: Vec<Reverification>,
    pub last_at: String,
    /// When the store wrote the newest event, by its own clock (set by [`crate::read_run`]).
    pub last_stored_at: Option<SystemTime>,
    pub last_runner: String,
    /// How many runners have held the run so far: 1, plus one each time the writer of an event differs from the
    /// writer of the one before (a resume or a takeover). The next runner holds epoch `epoch + 1`; plugins get
    /// it as a fencing token.
    pub epoch: u64,
    /// Apply phases that ran to success more than once: must stay empty (the crash test asserts it).
    pub applies_succeeded: BTreeMap<String, u32>,
    pub events: usize,
}

impl Replayed {
    /// Folds events (already chain-checked) into a run. The first must be `run-started`.
    pub fn from_events(events: &[Event]) -> Result<Replayed, String> {
        let mut events = events.iter().cloned();
        let first = events.next().ok_or("the journal is empty")?;
        let mut replayer = Replayer::new(first)?;
        for event in events {
            replayer.push(event)?;
        }
        Ok(replayer.finish())
    }

    /// How long ago the newest event was written, by this machine's clock.
    pub fn silence(&self) -> Duration {
        self.silence_at(SystemTime::now())
    }

    /// How long before `now` the newest event was written. Judged by the store's own time of the write when it
    /// is known, never by the clock of the runner that wrote it (which may be skewed); so `now` should be the
    /// store's time too ([`crate::store_now`]) when it matters, as when deciding whether a lease lapsed.
    pub fn silence_at(&self, now: SystemTime) -> Duration {
        self.last_stored_at
            .or_else(|| humantime::parse_rfc3339_weak(&self.last_at).ok())
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.start.lease_seconds.max(0.0))
    }

    /// `passed`, `failed`, `interrupted`, `running`, or `stale` (unfinished, and silent longer than its lease).
    pub fn status(&self) -> &'static str {
        if self.destroyed_at.is_some() {
            return "destroyed";
        }
        if self.destroy_failed {
            return "destroy-failed";
        }
        if self.destroying {
            return "destroying";
        }
        match &self.finished {
            Some(f) => match f.outcome {
                Outcome::Passed => "passed",
                Outcome::Failed => "failed",
                Outcome::Interrupted => "interrupted",
            },
            None if self.silence() > self.lease() => "stale",
            None => "running",
        }
    }

    /// Whether the environment the run made is still up: a finished failover, or drill kept with `--keep`, whose
    /// teardown was skipped and that `respawn destroy` has not torn down.
    pub fn up(&self) -> bool {
        self.destroyed_at.is_none()
            && !self.destroying
            && self
                .finished
                .as_ref()
                .is_some_and(|f| f.teardown == "skipped" && f.outcome != Outcome::Interrupted)
    }

    /// Whether resuming can still do something: unfinished, or an interrupted failover (which never tears down).
    pub fn resumable(&self) -> bool {
        if self.destroyed_at.is_some() || self.destroying {
            return false;
        }
        match &self.finished {
            None => true,
            Some(f) => f.outcome == Outcome::Interrupted && f.teardown == "skipped",
        }
    }
}

/// Folds a run's events into [`Replayed`] one at a time, taking each by value: a journal read back is replayed as
/// it is checked, so its events are never all held at once beside what they fold into (a 10,000-step run's
/// report is rendered this way at the end of every run).
pub struct Replayer {
    r: Replayed,
    /// Beside the orders, so each event is O(1) (a scan of the order made a 10,000-step run quadratic).
    applied: HashSet<String>,
    /// Step -> the position of its latest finished destroy; the order is rebuilt from it at the end.
    destroyed: HashMap<String, usize>,
}

impl Replayer {
    /// Starts from the run's first event, which must be `run-started`.
    pub fn new(first: Event) -> Result<Replayer, String> {
        let EventBody::RunStarted(start) = first.body else {
            return Err(format!(
                "the first event is {}, not run-started",
                first.body.kind()
            ));
        };
        let r = Replayed {
            start: *start,
            steps: BTreeMap::new(),
            applied_order: Vec::new(),
            destroyed_order: Vec::new(),
            approvals: BTreeMap::new(),
            services: Vec::new(),
            images_created: Vec::new(),
            images_restored: Vec::new(),
            finished: None,
            destroyed_at: None,
            destroying: false,
            destroy_failed: false,
            reverifications: Vec::new(),
            last_at: first.at,
            last_stored_at: None,
            last_runner: first.runner,
            epoch: 1,
            applies_succeeded: BTreeMap::new(),
            events: 1,
        };
        Ok(Replayer {
            r,
            applied: HashSet::new(),
            destroyed: HashMap::new(),
        })
    }

    /// Folds the next event in.
    pub fn push(&mut self, event: Event) -> Result<(), String> {
        let Replayer {
            r,
            applied,
            destroyed,
        } = self;
        let at = r.events;
        r.events += 1;
        if event.runner != r.last_runner {
            r.epoch += 1;
            r.last_runner = event.runner;
        }
        r.last_at = event.at;
        match event.body {
            EventBody::RunStarted(_) => {
                return Err(format!("event {} starts the run a second time", event.seq));
            }
            EventBody::Heartbeat => {}
            // A resumed interrupted run is unfinished again until its new run-finished.
            EventBody::Resumed { .. } => r.finished = None,
            EventBody::StepStarted {
                step,
                phase,
                attempt,
                params,
            } => {
                if phase == Phase::Apply && !applied.contains(&step) {
                    applied.insert(step.clone());
                    r.applied_order.push(step.clone());
                }
                let p = r.steps.entry((phase, step)).or_default();
                p.attempts_started = p.attempts_started.max(attempt);
                p.params = params;
                p.finished = None;
            }
            EventBody::StateWritten {
                step,
                phase,
                key,
                value,
            } => {
                let p = r.steps.entry((phase, step)).or_default();
                match value {
                    Some(v) => p.state.insert(key, v),
                    None => p.state.remove(&key),
                };
            }
            EventBody::AttemptFailed {
                step, phase, state, ..
            } => {
                r.steps.entry((phase, step)).or_default().state = state;
            }
            EventBody::StepFinished(f) => {
                let f = *f;
                if f.phase == Phase::Apply
                    && f.status == respawn_report::record::StepStatus::Succeeded
                    && f.attempts > 0
                {
                    *r.applies_succeeded.entry(f.step.clone()).or_default() += 1;
                }
                if f.phase == Phase::Apply && f.applied && !applied.contains(&f.step) {
                    applied.insert(f.step.clone());
                    r.applied_order.push(f.step.clone());
                }
                if f.phase == Phase::Destroy {
                    destroyed.insert(f.step.clone(), at);
                }
                let p = r.steps.entry((f.phase, f.step.clone())).or_default();
                p.state = f.state.clone();
                p.finished = Some(f);
            }
            EventBody::ApprovalGiven { step, how, .. } => {
                r.approvals.insert(step, how);
            }
            EventBody::ServiceStarted {
                step,
                pid,
                program,
                start_ticks,
                detached,
                logs,
            } => r.services.push(ServiceRecord {
                step,
                pid,
                program,
                start_ticks,
                detached,
                logs,
            }),
            EventBody::ImageRestored {
                step,
                created,
                store,
                prefix,
                tag,
                manifest_digest,
            } => {
                if let Some(created) = &created {
                    r.images_created.push(ImageCreated {
                        step: step.clone(),
                        created: created.clone(),
                    });
                }
                if let Some(digest) = manifest_digest {
                    r.images_restored.push(ImageRestored {
                        step,
                        created,
                        store,
                        prefix,
                        tag,
                        manifest_digest: digest,
                    });
                }
            }
            EventBody::RunFinished {
                outcome,
                rto_seconds,
                rpo_seconds,
                recovery_points,
                teardown,
                report_dir,
                started_at,
                finished_at,
                settled,
            } => {
                r.finished = Some(Finished {
                    settled,
                    outcome,
                    rto_seconds,
                    rpo_seconds,
                    recovery_points,
                    teardown,
                    at: r.last_at.clone(),
                    report_dir,
                    started_at,
                    finished_at,
                });
            }
            EventBody::Reverified {
                outcome,
                started_at,
                finished_at,
                verifications,
            } => r.reverifications.push(Reverification {
                outcome,
                started_at,
                finished_at,
                verifications,
            }),
            EventBody::DestroyStarted { .. } => r.destroying = true,
            EventBody::Destroyed { teardown } => {
                r.destroy_failed = teardown != "succeeded";
                r.destroying = r.destroy_failed;
                if !r.destroy_failed {
                    r.destroyed_at = Some(r.last_at.clone());
                }
                // A run whose runner died mid-apply ends here: interrupted, and torn down.
                let at = r.last_at.clone();
                let finished = r.finished.get_or_insert_with(|| Finished {
                    outcome: Outcome::Interrupted,
                    rto_seconds: None,
                    rpo_seconds: None,
                    recovery_points: Vec::new(),
                    teardown: String::new(),
                    at: at.clone(),
                    report_dir: None,
                    started_at: None,
                    finished_at: Some(at),
                    settled: Vec::new(),
                });
                finished.teardown = teardown;
            }
        }
        Ok(())
    }

    /// The run as its events so far say.
    pub fn finish(self) -> Replayed {
        let Replayer {
            mut r, destroyed, ..
        } = self;
        // In the order of each step's latest destroy.
        let mut destroyed: Vec<(usize, String)> =
            destroyed.into_iter().map(|(s, at)| (at, s)).collect();
        destroyed.sort_unstable();
        r.destroyed_order = destroyed.into_iter().map(|(_, s)| s).collect();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WorkflowSnapshot;

    fn events(bodies: Vec<EventBody>) -> Vec<Event> {
        bodies
            .into_iter()
            .enumerate()
            .map(|(seq, body)| Event {
                seq: seq as u64,
                at: format!("2026-12-02T06:00:{seq:02}Z"),
                runner: "test".into(),
                prev: None,
                body,
            })
            .collect()
    }

    fn failover_up() -> Vec<EventBody> {
        vec![
            EventBody::RunStarted(Box::new(RunStarted {
                run_id: "r".into(),
                mode: respawn_workflow::Mode::Failover,
                keep: false,
                workflow: WorkflowSnapshot {
                    name: "w".into(),
                    version: "1.0.0".into(),
                    sha256: "00".into(),
                    path: "/w.yaml".into(),
                    text: String::new(),
                },
                params: BTreeMap::new(),
                plugins: BTreeMap::new(),
                lease_seconds: 30.0,
                started_at: "2026-12-02T06:00:00Z".into(),
            })),
            EventBody::RunFinished {
                outcome: Outcome::Passed,
                rto_seconds: Some(1.0),
                rpo_seconds: None,
                recovery_points: Vec::new(),
                teardown: "skipped".into(),
                report_dir: None,
                started_at: None,
                finished_at: None,
                settled: Vec::new(),
            },
        ]
    }

    /// A destroy that failed leaves the run to be destroyed again, never "destroyed"; one under way makes the
    /// environment no longer "up" and the run not resumable.
    #[test]
    fn destroy_states_follow_the_latest_destroy() {
        let up = Replayed::from_events(&events(failover_up())).unwrap();
        assert!(up.up() && up.status() == "passed");

        let mut started = failover_up();
        started.push(EventBody::DestroyStarted { takeover: false });
        let r = Replayed::from_events(&events(started.clone())).unwrap();
        assert!(!r.up() && !r.resumable());
        assert_eq!(r.status(), "destroying");

        let mut failed = started.clone();
        failed.push(EventBody::Destroyed {
            teardown: "failed".into(),
        });
        let r = Replayed::from_events(&events(failed.clone())).unwrap();
        assert!(
            r.destroyed_at.is_none(),
            "a failed destroy can be run again"
        );
        assert_eq!(r.status(), "destroy-failed");
        assert!(!r.up());

        let mut again = failed;
        again.push(EventBody::DestroyStarted { takeover: false });
        again.push(EventBody::Destroyed {
            teardown: "succeeded".into(),
        });
        let r = Replayed::from_events(&events(again)).unwrap();
        assert!(r.destroyed_at.is_some());
        assert_eq!(r.status(), "destroyed");
        assert_eq!(r.finished.unwrap().teardown, "succeeded");
    }

    /// A writer whose clock runs an hour slow stamps its events an hour old; the store's time of the write is
    /// what counts, so the run is live, not stale.
    #[test]
    fn silence_is_judged_by_the_stores_time_of_the_write_not_the_writers_clock() {
        let mut bodies = failover_up();
        bodies.pop();
        bodies.push(EventBody::Heartbeat);
        let mut r = Replayed::from_events(&events(bodies)).unwrap();
        let now = humantime::parse_rfc3339("2026-12-02T07:00:10Z").unwrap();
        assert!(
            r.silence_at(now) > Duration::from_secs(3000),
            "by the writer's stamp"
        );
        r.last_stored_at = Some(humantime::parse_rfc3339("2026-12-02T07:00:05Z").unwrap());
        assert_eq!(r.silence_at(now), Duration::from_secs(5));
        assert!(r.silence_at(now) < r.lease());
    }

    /// Every change of writer is a new holder of the run: the epoch a fencing token is made of.
    #[test]
    fn the_epoch_counts_the_runners_that_held_the_run() {
        let mut evs = events(vec![
            failover_up().remove(0),
            EventBody::Heartbeat,
            EventBody::Heartbeat,
            EventBody::Heartbeat,
            EventBody::Heartbeat,
        ]);
        assert_eq!(Replayed::from_events(&evs).unwrap().epoch, 1);
        evs[2].runner = "second".into();
        evs[3].runner = "second".into();
        evs[4].runner = "third".into();
        assert_eq!(Replayed::from_events(&evs).unwrap().epoch, 3);
    }
}
