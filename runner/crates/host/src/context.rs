//! What every capability sees of a step attempt ([`StepContext`]: who is calling, in which phase, under which
//! limits, and the record of what it was denied), and what the runner opened for the run ([`RunResources`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use respawn_data::StoreSet;
use respawn_engine::{Mode, Phase};

use super::bindings::abi::types::{Failure, FailureKind};
use super::limits::StepLimits;

/// Receives progress reports of running steps: (step id, done, total, message).
pub type ProgressSink = Arc<dyn Fn(&str, u64, Option<u64>, &str) + Send + Sync>;

/// What the runner opened for a run, from which each capability configures its per-run state.
#[derive(Clone)]
pub struct RunResources {
    /// The workflow's directory: relative `files` grants resolve against it.
    pub base_dir: PathBuf,
    /// The workflow's stores, opened.
    pub stores: StoreSet,
    /// Secret name -> value, read from the environment at run start. Never logged.
    pub secrets: Arc<BTreeMap<String, String>>,
    /// Where plugins' progress reports go (the progress bars), if anywhere.
    pub progress: Option<ProgressSink>,
    /// The run's journal: state writes, services and restored images are recorded in it as they happen.
    pub journal: Option<Arc<respawn_journal::Journal>>,
    /// Whether the services the run starts outlive the runner (a failover, a kept drill).
    pub services_outlive: bool,
}

impl RunResources {
    pub fn new(base_dir: PathBuf) -> RunResources {
        RunResources {
            base_dir,
            stores: StoreSet::default(),
            secrets: Arc::default(),
            progress: None,
            journal: None,
            services_outlive: false,
        }
    }
}

/// The first capability a step was denied, for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub capability: String,
    pub asked: String,
}

/// The part of a step attempt every capability sees.
pub struct StepContext {
    /// The run this call belongs to; services it starts carry it (see `caps::services::RUN_ENV`).
    pub run_id: String,
    pub step_id: String,
    pub plugin: String,
    pub phase: Phase,
    pub mode: Mode,
    pub limits: StepLimits,
    pub run: RunResources,
    /// Deadline of the whole attempt; exec requests are capped by what is left of it.
    pub deadline: std::time::Instant,
    pub denial: Option<Denial>,
}

impl StepContext {
    /// Records a denial (the first one is reported with the step) and returns the failure the plugin sees.
    pub fn deny(&mut self, denial: respawn_sandbox::Denial) -> Failure {
        let (capability, asked) = (denial.capability, denial.asked.as_str());
        tracing::warn!(step = %self.step_id, plugin = %self.plugin, capability, %asked, "capability denied");
        let message = denial.to_string();
        if self.denial.is_none() {
            self.denial = Some(Denial {
                capability: capability.to_string(),
                asked: denial.asked,
            });
        }
        Failure {
            kind: FailureKind::Denied,
            message,
            retryable: false,
        }
    }

    /// Refuses an action with a side effect once this runner no longer holds the run (taken over, its lease
    /// lapsed, or its journal lost): another runner may own it now, so nothing more may be written or run.
    pub fn still_owner(&self) -> Result<(), Failure> {
        match self.run.journal.as_ref().and_then(|j| j.lost()) {
            None => Ok(()),
            Some(why) => Err(Failure {
                kind: FailureKind::Unavailable,
                message: format!("this runner no longer holds the run, so it acts no more: {why}"),
                retryable: false,
            }),
        }
    }

    /// True in the plan phase, which must have no side effects.
    pub fn read_only(&self) -> bool {
        self.phase == Phase::Plan
    }
}
