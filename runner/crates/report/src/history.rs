//! Drills over time: one row per finished run of a workflow (date, version, outcome, RTO and RPO against the
//! objectives) and the trend, as Markdown and JSON (`respawn report --history NAME`).
//!
//! The trend compares the newest measured run with the oldest: a change of less than [`STEADY`] of the oldest
//! value is `steady`; lower is `improving`, higher `worsening`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::objectives::Status;
use crate::record::Outcome;
use crate::{Report, seconds};

/// A change smaller than this share of the first measurement is noise between drills, not a trend.
pub const STEADY: f64 = 0.10;

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub run_id: String,
    pub started_at: String,
    pub version: String,
    pub mode: String,
    pub outcome: Outcome,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// The verdict on each declared objective (`rto`, `rpo`), absent when the run's workflow declared none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_objective: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_objective: Option<Status>,
}

/// Which way a measurement went over the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Improving,
    Steady,
    Worsening,
    /// Fewer than two runs measured it.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub runs: usize,
    pub passed: usize,
    pub rto: Direction,
    pub rpo: Direction,
    /// Runs that met every objective they declared, of those that declared any.
    pub objectives_met: usize,
    pub objectives_declared: usize,
}

/// The history of one workflow, oldest run first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub workflow: String,
    pub runs: Vec<Row>,
    pub trend: Trend,
}

impl History {
    /// The history of `workflow` from its runs' reports, in any order.
    pub fn of(workflow: &str, reports: &[Report]) -> History {
        let mut runs: Vec<Row> = reports
            .iter()
            .filter(|r| r.workflow.name == workflow)
            .map(|r| {
                let verdict = |name: &str| {
                    r.objectives
                        .iter()
                        .find(|j| j.objective == name)
                        .map(|j| j.status)
                };
                Row {
                    run_id: r.run_id.clone(),
                    started_at: r.started_at.clone(),
                    version: r.workflow.version.clone(),
                    mode: r.mode.to_string(),
                    outcome: r.outcome,
                    rto_seconds: r.rto_seconds,
                    rpo_seconds: r.rpo_seconds,
                    rto_objective: verdict("rto"),
                    rpo_objective: verdict("rpo"),
                }
            })
            .collect();
        runs.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
        let declared: Vec<&Report> = reports
            .iter()
            .filter(|r| r.workflow.name == workflow && !r.objectives.is_empty())
            .collect();
        let trend = Trend {
            runs: runs.len(),
            passed: runs.iter().filter(|r| r.outcome == Outcome::Passed).count(),
            rto: direction(runs.iter().filter_map(|r| r.rto_seconds)),
            rpo: direction(runs.iter().filter_map(|r| r.rpo_seconds)),
            objectives_met: declared
                .iter()
                .filter(|r| r.objectives.iter().all(|j| j.status == Status::Met))
                .count(),
            objectives_declared: declared.len(),
        };
        History {
            workflow: workflow.to_string(),
            runs,
            trend,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("# respawn history: {}\n\n", self.workflow);
        out.push_str("| started | run | version | mode | outcome | RTO | RTO objective | RPO | RPO objective |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        let verdict = |s: Option<Status>| match s {
            None => "-".to_string(),
            Some(s) => format!("{s:?}").to_lowercase(),
        };
        for r in &self.runs {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {:?} | {} | {} | {} | {} |",
                r.started_at,
                r.run_id,
                r.version,
                r.mode,
                r.outcome,
                seconds(r.rto_seconds),
                verdict(r.rto_objective),
                seconds(r.rpo_seconds),
                verdict(r.rpo_objective),
            );
        }
        let t = &self.trend;
        let _ = writeln!(
            out,
            "\n{} runs, {} passed; RTO {}, RPO {}; objectives met in {} of {} runs that declared them.",
            t.runs,
            t.passed,
            format!("{:?}", t.rto).to_lowercase(),
            format!("{:?}", t.rpo).to_lowercase(),
            t.objectives_met,
            t.objectives_declared
        );
        out
    }
}

/// The newest value against the oldest (lower is better for both RTO and RPO).
fn direction(values: impl Iterator<Item = f64>) -> Direction {
    let values: Vec<f64> = values.collect();
    let (Some(first), Some(last)) = (values.first(), values.last()) else {
        return Direction::Unknown;
    };
    if values.len() < 2 {
        return Direction::Unknown;
    }
    let change = last - first;
    if change.abs() <= first.abs() * STEADY {
        Direction::Steady
    } else if change < 0.0 {
        Direction::Improving
    } else {
        Direction::Worsening
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_compare_the_newest_with_the_oldest() {
        assert_eq!(
            direction([10.0, 20.0, 5.0].into_iter()),
            Direction::Improving
        );
        assert_eq!(direction([10.0, 10.5].into_iter()), Direction::Steady);
        assert_eq!(direction([10.0, 12.0].into_iter()), Direction::Worsening);
        assert_eq!(direction([10.0].into_iter()), Direction::Unknown);
        assert_eq!(direction(std::iter::empty()), Direction::Unknown);
    }
}
