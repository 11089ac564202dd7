//! The run report: `report.json` (schema in docs/report.schema.json), `report.md` for an auditor, and
//! `junit.xml` for CI systems.

mod junit;
mod markdown;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{Outcome, RunRecord, StepRecord, Teardown};
use respawn_workflow::LoadedWorkflow;
use respawn_workflow::Mode;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    pub source: String,
    pub sha256: String,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub mode: Mode,
    pub outcome: Outcome,
    pub workflow: WorkflowInfo,
    /// Params as resolved. Secrets never appear: they are not params and reach plugins only through grants.
    pub params: BTreeMap<String, serde_json::Value>,
    pub plugins: BTreeMap<String, PluginInfo>,
    pub started_at: String,
    pub finished_at: String,
    pub rto_seconds: Option<f64>,
    /// Needs the creation time of the restored images; null until a step restores one.
    pub rpo_seconds: Option<f64>,
    pub steps: Vec<StepRecord>,
    pub verifications: Vec<StepRecord>,
    pub teardown: Teardown,
    /// Each `respawn verify` of the environment a failover or kept drill left, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverifications: Vec<Reverification>,
    /// Head of the run's journal chain; null until the journal exists.
    pub journal_head: Option<String>,
}

/// One `respawn verify` of a finished run's environment: evidence that it still works (or has drifted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reverification {
    pub outcome: Outcome,
    pub started_at: String,
    pub finished_at: String,
    pub verifications: Vec<StepRecord>,
}

impl Report {
    pub fn new(
        loaded: &LoadedWorkflow,
        params: BTreeMap<String, serde_json::Value>,
        plugins: BTreeMap<String, PluginInfo>,
        record: RunRecord,
    ) -> Report {
        let w = &loaded.workflow;
        Report {
            run_id: record.run_id,
            mode: record.mode,
            outcome: record.outcome,
            workflow: WorkflowInfo {
                name: w.name.clone(),
                version: w.version.clone(),
                sha256: loaded.sha256.clone(),
                file: loaded.path.display().to_string(),
            },
            params,
            plugins,
            started_at: record.started_at,
            finished_at: record.finished_at,
            rto_seconds: record.rto_seconds,
            rpo_seconds: None,
            steps: record.steps,
            verifications: record.verifications,
            teardown: record.teardown,
            reverifications: Vec::new(),
            journal_head: None,
        }
    }

    /// Writes report.json, report.md and junit.xml into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let files = [
            ("report.json", self.render(Format::Json)),
            ("report.md", self.render(Format::Markdown)),
            ("junit.xml", self.render(Format::Junit)),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The three renderings of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Markdown,
    Junit,
}

impl Report {
    /// Reads a report written by [`Report::write`].
    pub fn read(dir: &Path) -> std::io::Result<Report> {
        let text = std::fs::read_to_string(dir.join("report.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Markdown => markdown::render(self),
            Format::Junit => junit::render(self),
        }
    }
}

/// Seconds as `12.3s` or `-` when unknown.
pub fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{s:.1}s"))
}

/// Where a run's report goes when `--report-dir` is not given: `.respawn/runs/RUN_ID`, relative to the working
/// directory, beside the default state store.
pub fn default_dir(run_id: &str) -> PathBuf {
    PathBuf::from(".respawn/runs").join(run_id)
}

/// Now, as the record writes every moment: RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
