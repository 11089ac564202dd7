//! Running steps. The engine calls plugins only through [`StepExecutor`], which `host/` implements, so the
//! engine can be tested with a fake executor and the host without the engine.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use respawn_report::record::StepStatus;
use respawn_workflow::{Grants, Limits};
pub use respawn_workflow::{Mode, Phase};

pub mod after;
mod attempts;
pub mod driver;
pub mod evidence;
pub mod fleet;
pub mod plan;
pub mod recovery;
pub mod resume;
pub mod run;
mod section;
mod teardown;

/// One call of one phase of one step.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub run_id: String,
    pub step_id: String,
    /// Alias of the plugin in the workflow's `plugins:`.
    pub plugin: String,
    pub operation: String,
    pub phase: Phase,
    pub mode: Mode,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The rendered `with` params.
    pub params: serde_json::Value,
    pub grants: Grants,
    pub limits: Limits,
    /// Deadline of this attempt.
    pub timeout: Duration,
    /// The step's state as left by earlier attempts and phases.
    pub state: BTreeMap<String, String>,
}

/// What a step call produced. `state` is returned even on failure, so that the next attempt or the destroy
/// phase can find what was created.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub outcome: Result<serde_json::Value, StepError>,
    pub state: BTreeMap<String, String>,
}

/// Why a step call failed. Each kind is distinct in reports, so an operator can tell a hostile or broken
/// plugin from a failing environment.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepError {
    /// The plugin trapped (a panic, `unreachable`, a stack overflow).
    #[error("plugin `{plugin}` trapped in step `{step}`: {message}")]
    Trap {
        plugin: String,
        step: String,
        message: String,
    },
    /// The attempt ran past its deadline.
    #[error("step `{step}` (plugin `{plugin}`) timed out after {seconds:.1}s")]
    Timeout {
        plugin: String,
        step: String,
        seconds: f64,
    },
    /// The plugin tried to grow its memory past the step's cap.
    #[error("plugin `{plugin}` in step `{step}` ran out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory {
        plugin: String,
        step: String,
        limit_bytes: u64,
    },
    /// The plugin asked for a capability the step was not granted.
    #[error("step `{step}` (plugin `{plugin}`) was denied {capability}: {asked}")]
    Denied {
        plugin: String,
        step: String,
        capability: String,
        asked: String,
    },
    /// The plugin returned a failure of its own.
    #[error("step `{step}` (plugin `{plugin}`) failed: {failure_kind}: {message}")]
    Plugin {
        plugin: String,
        step: String,
        failure_kind: String,
        message: String,
        retryable: bool,
    },
    /// The plugin broke a limit or the ABI (outputs too large, not JSON).
    #[error("plugin `{plugin}` in step `{step}` broke the plugin contract: {message}")]
    Contract {
        plugin: String,
        step: String,
        message: String,
    },
    /// The runner could not run the step (plugin not loadable, store unreachable).
    #[error("step `{step}`: {message}")]
    Host { step: String, message: String },
}

impl StepError {
    /// The report's `error.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            StepError::Trap { .. } => "trap",
            StepError::Timeout { .. } => "timeout",
            StepError::OutOfMemory { .. } => "out-of-memory",
            StepError::Denied { .. } => "denied",
            StepError::Plugin { .. } => "plugin",
            StepError::Contract { .. } => "contract",
            StepError::Host { .. } => "host",
        }
    }

    /// Whether the retry policy may try again.
    pub fn retryable(&self) -> bool {
        match self {
            StepError::Plugin { retryable, .. } => *retryable,
            StepError::Timeout { .. } => true,
            _ => false,
        }
    }
}

impl From<&StepError> for respawn_report::record::ErrorRecord {
    fn from(e: &StepError) -> Self {
        respawn_report::record::ErrorRecord {
            kind: e.kind().to_string(),
            message: e.to_string(),
        }
    }
}

/// An approval gate's answer: `Ok(how)` to pass the gate (e.g. "confirmed on the terminal"), `Err(why)` to stop
/// the run. A future, so that waiting for a person blocks neither the runtime (heartbeats go on) nor an interrupt.
pub type Approval =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Decides approval gates in a failover. The CLI asks on the terminal, or passes them with `--yes`.
pub trait Approver: Send + Sync {
    fn approve(&self, step: &str, question: &str) -> Approval;
}

/// Sees the run as it happens (the progress bars).
pub trait Observer: Send + Sync {
    fn step_started(&self, _id: &str, _phase: Phase, _attempt: u32) {}
    fn step_finished(&self, _id: &str, _phase: Phase, _status: StepStatus) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// Runs step calls. Implemented by the WebAssembly host; tests may use a fake.
pub trait StepExecutor: Send + Sync {
    fn execute(&self, call: StepCall) -> impl Future<Output = StepResult> + Send;
}

#[cfg(test)]
mod run_tests;

#[cfg(test)]
mod driver_tests;
