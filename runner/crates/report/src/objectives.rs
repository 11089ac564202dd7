//! Recovery objectives judged: each objective a workflow declares (`objectives: { rto: 15m, rpo: 5m }`) against
//! what the run measured. A missed objective fails the run unless the workflow says `objectives_enforce: false`;
//! then it is a warning in the report.
//!
//! ```
//! use respawn_report::objectives::{Status, judge};
//! use respawn_workflow::Objectives;
//! use std::time::Duration;
//!
//! let objectives = Objectives { rto: Some(Duration::from_millis(1)), rpo: None };
//! let judged = judge(Some(&objectives), true, Some(2.5), None);
//! assert_eq!(judged[0].status, Status::Missed);
//! assert_eq!(judged[0].missed_by_seconds, Some(2.499));
//! assert_eq!(judged[0].describe(), "RTO 2.5s missed its objective of 1ms by 2s 499ms");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use respawn_workflow::Objectives;

/// Whether the run met an objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Met,
    Missed,
    /// The run measured nothing to judge (no verification passed, or no data source gave a recovery point):
    /// an objective nobody can show was met counts as missed.
    Unmeasured,
}

/// One objective, its measurement and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// `rto` or `rpo`.
    pub objective: String,
    /// The objective as the workflow declares it, in seconds.
    pub target_seconds: f64,
    pub measured_seconds: Option<f64>,
    pub status: Status,
    /// How far past the objective the measurement was (rounded to the millisecond); absent unless missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_by_seconds: Option<f64>,
    /// Whether missing it fails the run (`objectives_enforce`, true by default).
    pub enforced: bool,
}

/// Judges the declared objectives against the run's RTO and RPO, RTO first.
pub fn judge(
    objectives: Option<&Objectives>,
    enforced: bool,
    rto_seconds: Option<f64>,
    rpo_seconds: Option<f64>,
) -> Vec<Judged> {
    let Some(o) = objectives else {
        return Vec::new();
    };
    [("rto", o.rto, rto_seconds), ("rpo", o.rpo, rpo_seconds)]
        .into_iter()
        .filter_map(|(name, target, measured)| {
            let target = target?.as_secs_f64();
            let (status, missed_by) = match measured {
                None => (Status::Unmeasured, None),
                Some(m) if m <= target => (Status::Met, None),
                Some(m) => (
                    Status::Missed,
                    Some(((m - target) * 1000.0).round() / 1000.0),
                ),
            };
            Some(Judged {
                objective: name.to_string(),
                target_seconds: target,
                measured_seconds: measured,
                status,
                missed_by_seconds: missed_by,
                enforced,
            })
        })
        .collect()
}

/// Whether any enforced objective was not met: the run's outcome is `failed` then.
pub fn fails_run(judged: &[Judged]) -> bool {
    judged.iter().any(|j| j.enforced && j.status != Status::Met)
}

impl Judged {
    /// The verdict in one line: `RTO 2.5s met its objective of 15m`, `RTO 2.5s missed its objective of 1ms by
    /// 2s 499ms`, `RPO unmeasured: no data source ... (objective 5m)`.
    pub fn describe(&self) -> String {
        let name = self.objective.to_uppercase();
        let target = human(self.target_seconds);
        match (self.status, self.measured_seconds) {
            (Status::Met, Some(m)) => format!(
                "{name} {} met its objective of {target}",
                crate::seconds(Some(m))
            ),
            (Status::Missed, Some(m)) => format!(
                "{name} {} missed its objective of {target} by {}",
                crate::seconds(Some(m)),
                human(self.missed_by_seconds.unwrap_or(m - self.target_seconds))
            ),
            _ => format!(
                "{name} was not measured ({}), so its objective of {target} is not shown to be met",
                if self.objective == "rto" {
                    "no verification passed"
                } else {
                    "no step restored data with a recovery point"
                }
            ),
        }
    }
}

/// Seconds as a duration a person reads: `1ms`, `2s 499ms`, `15m`.
fn human(seconds: f64) -> String {
    let d = Duration::from_millis((seconds.max(0.0) * 1000.0).round() as u64);
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_objective_is_met_missed_or_unmeasured() {
        let o = Objectives {
            rto: Some(Duration::from_secs(900)),
            rpo: Some(Duration::from_secs(300)),
        };
        let judged = judge(Some(&o), true, Some(12.3), Some(301.0));
        assert_eq!(judged[0].status, Status::Met);
        assert_eq!(judged[0].describe(), "RTO 12.3s met its objective of 15m");
        assert_eq!(judged[1].status, Status::Missed);
        assert_eq!(judged[1].missed_by_seconds, Some(1.0));
        assert!(fails_run(&judged));
        assert!(!fails_run(&judge(Some(&o), false, Some(1.0), Some(301.0))));
        let unmeasured = judge(Some(&o), true, None, Some(1.0));
        assert_eq!(unmeasured[0].status, Status::Unmeasured);
        assert!(fails_run(&unmeasured));
        assert!(judge(None, true, Some(1.0), None).is_empty());
        let only_rpo = Objectives {
            rto: None,
            rpo: Some(Duration::from_secs(60)),
        };
        assert_eq!(judge(Some(&only_rpo), true, Some(1e6), Some(59.0)).len(), 1);
    }
}
