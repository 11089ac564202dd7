//! What a run did, step by step: the engine's result and the report's source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use respawn_workflow::Mode;

/// Outcome of one step or verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    /// Not run: its `when` was false, an approval was skipped in a drill, or a need failed.
    Skipped,
    /// Stopped by an interrupt before it finished.
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_digest: Option<String>,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Why a step was skipped, or how an approval was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub outputs: serde_json::Value,
    #[serde(skip)]
    pub state: BTreeMap<String, String>,
    /// Whether apply ran at least once (so destroy has something to undo).
    #[serde(skip)]
    pub applied: bool,
}

impl StepRecord {
    pub fn new(id: &str, uses: Option<String>) -> StepRecord {
        StepRecord {
            id: id.into(),
            uses,
            plugin_digest: None,
            status: StepStatus::Skipped,
            attempts: 0,
            started_at: None,
            finished_at: None,
            error: None,
            note: None,
            outputs: serde_json::Value::Null,
            state: BTreeMap::new(),
            applied: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Teardown {
    /// `succeeded`, `failed`, or `skipped` (failover, or `--keep`).
    pub status: String,
    pub steps: Vec<StepRecord>,
}

/// Where a data source's recovery point came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryFrom {
    /// The step's own `recovery_point` output.
    Output,
    /// The newest `created` time of the images the step restored through the host (`images.unpack`).
    Image,
}

/// One data source of a run: a step that restored data, the moment its data is from, and how old that was when
/// the run started (DESIGN.md §6). The run's RPO is the worst (largest) of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// The step that restored the data.
    pub step: String,
    /// RFC 3339, as the step output it, or the image's `created` in UTC.
    pub recovery_point: String,
    /// The run's start minus `recovery_point`; 0 when the data is newer than the start.
    pub rpo_seconds: f64,
    pub from: RecoveryFrom,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub mode: Mode,
    pub outcome: Outcome,
    pub started_at: String,
    pub finished_at: String,
    /// Run start to the moment the last verification passed; absent when verification did not pass.
    pub rto_seconds: Option<f64>,
    pub steps: Vec<StepRecord>,
    pub verifications: Vec<StepRecord>,
    pub teardown: Teardown,
}
