//! The events of a run's journal (DESIGN.md §7). Each is one JSON object stored at
//! `runs/<run-id>/events/<seq>`; `prev` chains it to the one before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use respawn_report::PluginInfo;
use respawn_report::record::{ErrorRecord, Outcome, RecoveryPoint, StepRecord, StepStatus};
use respawn_workflow::{Mode, Phase};

/// One journal entry: the envelope every event shares, and what happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain, from 0. Equals the number in the object's key.
    pub seq: u64,
    /// When it was written (RFC 3339). The newest event of a live run is never older than its lease.
    pub at: String,
    /// Which runner process wrote it (`host:pid:random`).
    pub runner: String,
    /// sha256 (hex) of the previous event's stored bytes; absent for the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventBody {
    RunStarted(Box<RunStarted>),
    /// The runner is alive; written every third of the lease.
    Heartbeat,
    /// Another runner continues the run from here.
    Resumed {
        takeover: bool,
    },
    /// Written before the plugin is called, so a crash leaves the step visibly in flight.
    StepStarted {
        step: String,
        phase: Phase,
        attempt: u32,
        params: serde_json::Value,
    },
    /// A state key the plugin set (or deleted, `value` absent) during the call, durable before the call goes on:
    /// a resumed attempt sees what the crashed one created.
    StateWritten {
        step: String,
        phase: Phase,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// An attempt that failed and will be retried.
    AttemptFailed {
        step: String,
        phase: Phase,
        attempt: u32,
        error: ErrorRecord,
        state: BTreeMap<String, String>,
    },
    /// The final result of a step in one phase.
    StepFinished(Box<StepFinished>),
    ApprovalGiven {
        step: String,
        question: String,
        how: String,
    },
    /// A service process a step started; a resuming runner adopts it if it still runs.
    ServiceStarted {
        step: String,
        pid: u32,
        program: String,
        /// Start time of the process in clock ticks since boot (Linux), to tell it from a reused pid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_ticks: Option<u64>,
        /// It runs in a session and process group of its own (both numbered by its pid) and outlives the runner:
        /// a failover's service, or a kept drill's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detached: bool,
        /// Where a detached service's stdout and stderr go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logs: Option<ServiceLogs>,
    },
    /// An image was restored: an artifact of the run, by manifest digest. Its creation time is the recovery
    /// point of `step` when the step outputs none. Journals written before artifacts were listed hold only
    /// `step` and `created`.
    ImageRestored {
        step: String,
        /// The image config's `created` (RFC 3339, UTC, whole seconds), when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created: Option<String>,
        /// The workflow's name of the store it came from; the report shows that store's URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// `sha256:…` of the image manifest, as `respawn image verify` prints it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest_digest: Option<String>,
    },
    /// The run's result as its report states it, so a report lost with its runner can be written again.
    RunFinished {
        outcome: Outcome,
        rto_seconds: Option<f64>,
        rpo_seconds: Option<f64>,
        /// Each data source the RPO was measured from; absent in journals written before sources were listed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recovery_points: Vec<RecoveryPoint>,
        teardown: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_dir: Option<String>,
        /// The report's `started_at` and `finished_at` (the engine's, a few ms inside the first and this event).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finished_at: Option<String>,
        /// The steps and verifications decided without a plugin call, which have no `step-finished` of their
        /// own (skipped by `when`, a drill's skipped approval, a gate refused, a failed need, an interrupt), so
        /// that the report rendered from the journal says what the runner's did.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        settled: Vec<SettledStep>,
    },
    /// `respawn verify` ran the verify section again against the environment the run left: evidence too.
    Reverified {
        outcome: Outcome,
        started_at: String,
        finished_at: String,
        verifications: Vec<StepRecord>,
    },
    /// `respawn destroy` claims the run to tear down what it left (like a resume, it races for the key).
    DestroyStarted {
        takeover: bool,
    },
    /// `respawn destroy` finished tearing the run down; `teardown` is `succeeded` or `failed`.
    Destroyed {
        teardown: String,
    },
}

impl EventBody {
    /// The `type` tag, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::RunStarted(_) => "run-started",
            EventBody::Heartbeat => "heartbeat",
            EventBody::Resumed { .. } => "resumed",
            EventBody::StepStarted { .. } => "step-started",
            EventBody::StateWritten { .. } => "state-written",
            EventBody::AttemptFailed { .. } => "attempt-failed",
            EventBody::StepFinished(_) => "step-finished",
            EventBody::ApprovalGiven { .. } => "approval-given",
            EventBody::ServiceStarted { .. } => "service-started",
            EventBody::ImageRestored { .. } => "image-restored",
            EventBody::RunFinished { .. } => "run-finished",
            EventBody::Reverified { .. } => "reverified",
            EventBody::DestroyStarted { .. } => "destroy-started",
            EventBody::Destroyed { .. } => "destroyed",
        }
    }
}

/// The log files of a detached service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogs {
    pub stdout: String,
    pub stderr: String,
}

/// Everything needed to finish the run on another machine, whatever the files there say now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub run_id: String,
    pub mode: Mode,
    /// A drill started with `--keep` skips teardown on resume too.
    pub keep: bool,
    pub workflow: WorkflowSnapshot,
    /// Resolved params, byte-exact like the workflow text: this event is never redacted (it holds only what the
    /// user wrote, never what a plugin produced). Secrets are never params.
    pub params: BTreeMap<String, serde_json::Value>,
    pub plugins: BTreeMap<String, PluginInfo>,
    /// How long the runner may stay silent before the run counts as stale.
    pub lease_seconds: f64,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowSnapshot {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Absolute path of the workflow file when the run started.
    pub path: String,
    /// The workflow file's exact text; resume runs this, not what is on disk now.
    pub text: String,
}

impl WorkflowSnapshot {
    /// What the journal keeps of `loaded` so that any machine can resume the run from the same text.
    pub fn of(loaded: &respawn_workflow::LoadedWorkflow) -> WorkflowSnapshot {
        WorkflowSnapshot {
            name: loaded.workflow.name.clone(),
            version: loaded.workflow.version.clone(),
            sha256: loaded.sha256.clone(),
            path: std::path::absolute(&loaded.path)
                .unwrap_or_else(|_| loaded.path.clone())
                .display()
                .to_string(),
            text: String::from_utf8_lossy(&loaded.bytes).into_owned(),
        }
    }
}

/// A step's record in one phase, as the report shows it, for a step that has no `step-finished` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettledStep {
    pub phase: Phase,
    #[serde(flatten)]
    pub record: StepRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepFinished {
    pub step: String,
    pub phase: Phase,
    pub status: StepStatus,
    pub attempts: u32,
    /// `{ "params": …, "outputs": … }` as the engine keeps them for later phases.
    pub outputs: serde_json::Value,
    pub state: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub applied: bool,
}

#[cfg(test)]
mod tests {
    /// RTO and RPO are rebuilt from the journal when a report must be written again; they must come back to
    /// the bit, which serde_json's default (best-effort) float parsing does not promise.
    #[test]
    fn seconds_round_trip_exactly() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut failures = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let seconds = (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0;
            let text = serde_json::to_string(&seconds).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            if back.to_bits() != seconds.to_bits() {
                failures.push(text);
            }
        }
        assert!(
            failures.is_empty(),
            "{} did not round-trip: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
}
