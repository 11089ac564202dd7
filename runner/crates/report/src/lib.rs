//! The run report: `report.json` (schema in docs/report.schema.json), `report.md` for an auditor, and
//! `junit.xml` for CI systems.

pub mod artifacts;
pub mod fleet;
pub mod history;
mod junit;
mod markdown;
pub mod objectives;
pub mod record;
pub mod signature;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{Outcome, RecoveryPoint, RunRecord, StepRecord, Teardown};
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
    /// The worst (largest) RPO of `recovery_points`; null when the run restored no data source.
    pub rpo_seconds: Option<f64>,
    /// Each data source: a step that output `recovery_point`, or restored images; in the workflow's order.
    /// Absent in reports written before sources were listed.
    #[serde(default)]
    pub recovery_points: Vec<RecoveryPoint>,
    /// Each objective the workflow declares, its measurement and whether the run met it.
    #[serde(default)]
    pub objectives: Vec<objectives::Judged>,
    /// Every artifact the run used, by digest: images the host restored, what plugins declared, the plugins.
    #[serde(default)]
    pub artifacts: Vec<artifacts::Artifact>,
    /// What an auditor should know that did not fail the run (a missed objective not enforced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
        workflow: WorkflowInfo,
        params: BTreeMap<String, serde_json::Value>,
        plugins: BTreeMap<String, PluginInfo>,
        record: RunRecord,
    ) -> Report {
        Report {
            run_id: record.run_id,
            mode: record.mode,
            outcome: record.outcome,
            workflow,
            params,
            plugins,
            started_at: record.started_at,
            finished_at: record.finished_at,
            rto_seconds: record.rto_seconds,
            rpo_seconds: None,
            recovery_points: Vec::new(),
            objectives: Vec::new(),
            artifacts: Vec::new(),
            warnings: Vec::new(),
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

    /// The source the run's RPO is measured from: the oldest recovery point (the first listed, on a tie).
    pub fn worst_recovery_point(&self) -> Option<&RecoveryPoint> {
        self.recovery_points.iter().reduce(|worst, p| {
            if p.rpo_seconds > worst.rpo_seconds {
                p
            } else {
                worst
            }
        })
    }

    /// The run's RPO as the summary line and report.md show it: `180.0s (catalog)`, naming the worst source;
    /// `-` when unknown.
    pub fn rpo_text(&self) -> String {
        match self.worst_recovery_point() {
            Some(p) => format!("{} ({})", seconds(self.rpo_seconds), p.step),
            None => seconds(self.rpo_seconds),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecoveryFrom;

    fn report() -> Report {
        serde_json::from_value(serde_json::json!({
            "run_id": "r", "mode": "drill", "outcome": "passed",
            "workflow": {"name": "w", "version": "1.0.0", "sha256": "00", "file": "w.yaml"},
            "params": {}, "plugins": {},
            "started_at": "2026-05-01T12:00:00.000Z", "finished_at": "2026-05-01T12:01:00.000Z",
            "rto_seconds": 60.0, "rpo_seconds": null,
            "steps": [], "verifications": [], "teardown": {"status": "succeeded", "steps": []},
            "journal_head": null
        }))
        .expect("a report written before recovery points were listed still reads")
    }

    #[test]
    fn recovery_points_are_listed_in_every_rendering() {
        let mut r = report();
        assert!(r.recovery_points.is_empty());
        assert_eq!(r.rpo_text(), "-");
        for (step, point, rpo, from) in [
            (
                "db",
                "2026-05-01T13:57:00+02:00",
                180.0,
                RecoveryFrom::Output,
            ),
            ("site", "2026-05-01T11:00:00Z", 3600.0, RecoveryFrom::Image),
            (
                "catalog",
                "2026-05-01T11:00:00Z",
                3600.0,
                RecoveryFrom::Output,
            ),
        ] {
            r.recovery_points.push(RecoveryPoint {
                step: step.into(),
                recovery_point: point.into(),
                rpo_seconds: rpo,
                from,
            });
        }
        r.rpo_seconds = Some(3600.0);
        assert_eq!(r.rpo_text(), "3600.0s (site)", "the first of the oldest");

        let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(
            json["recovery_points"][0],
            serde_json::json!({
                "step": "db", "recovery_point": "2026-05-01T13:57:00+02:00", "rpo_seconds": 180.0,
                "from": "output"
            })
        );
        assert_eq!(json["recovery_points"][1]["from"], "image");

        let md = r.render(Format::Markdown);
        assert!(md.contains("| RPO | 3600.0s (site) |"), "{md}");
        assert!(
            md.contains("| db | 2026-05-01T13:57:00+02:00 | 180.0s | output `recovery_point` |"),
            "{md}"
        );
        assert!(
            md.contains("| site | 2026-05-01T11:00:00Z | 3600.0s | image `created` |"),
            "{md}"
        );

        let junit = r.render(Format::Junit);
        for property in [
            r#"<property name="rto_seconds" value="60"/>"#,
            r#"<property name="rpo_seconds" value="3600"/>"#,
            r#"<property name="rpo_source" value="site"/>"#,
            r#"<property name="recovery_point.db" value="2026-05-01T13:57:00+02:00"/>"#,
            r#"<property name="rpo_seconds.db" value="180"/>"#,
        ] {
            assert!(junit.contains(property), "{property} in {junit}");
        }
        assert_eq!(
            junit.matches("<properties>").count(),
            1,
            "in the steps suite only"
        );
    }
}
