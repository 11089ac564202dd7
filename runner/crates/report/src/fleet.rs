//! The report of a fleet run (DESIGN.md §11): one line per member, failures first, each member's RTO and RPO
//! and their distribution, and the fleet's RTO: from the start of the first member to the last verification of
//! the last. JSON (docs/fleet-report.schema.json), Markdown and JUnit with one test case per member.

use std::fmt::Write;

use crate::junit::esc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Where a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberStatus {
    /// Its run finished and did not pass.
    Failed,
    /// It never ran because a member it needs failed.
    Blocked,
    /// Its last run was interrupted and torn down; its index is retried.
    Interrupted,
    /// Its run has started and not finished.
    Running,
    /// No run yet.
    NotStarted,
    Passed,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Failed => "failed",
            MemberStatus::Blocked => "blocked",
            MemberStatus::Interrupted => "interrupted",
            MemberStatus::Running => "running",
            MemberStatus::NotStarted => "not-started",
            MemberStatus::Passed => "passed",
        }
    }
}

/// One member of a fleet run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberResult {
    pub index: usize,
    pub name: String,
    /// `drill` or `failover`.
    pub mode: String,
    pub status: MemberStatus,
    /// The workflow's `name@version`, once a run recorded it.
    pub workflow: Option<String>,
    /// The member's latest run.
    pub run_id: Option<String>,
    /// How many runs the member started (a run resumed after a crash counts once).
    pub runs: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Run start to the last passed verification.
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// `succeeded`, `failed` or `skipped`.
    pub teardown: Option<String>,
    /// Why it failed or is blocked: the first failing step and its message, or the need that failed.
    pub error: Option<String>,
}

/// Spread of one measure over the members that have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Distribution {
    /// Nearest-rank percentiles; `None` when no member has the measure.
    pub fn of(values: impl Iterator<Item = f64>) -> Option<Distribution> {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Distribution {
            count: v.len(),
            min: v[0],
            median: rank(0.5),
            p90: rank(0.9),
            max: v[v.len() - 1],
        })
    }
}

/// `passed` when every member passed; `failed` when one failed or is blocked; `incomplete` while any has not
/// finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FleetOutcome {
    Passed,
    Failed,
    Incomplete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetReport {
    pub fleet_run: String,
    pub fleet: String,
    pub version: String,
    /// sha256 of the fleet file the run was started with.
    pub fleet_sha256: String,
    pub outcome: FleetOutcome,
    /// The first member's start.
    pub started_at: Option<String>,
    /// The last member's last passed verification; null until every member passed.
    pub recovered_at: Option<String>,
    /// `started_at` to `recovered_at`: the fleet's RTO.
    pub rto_seconds: Option<f64>,
    /// Members per status.
    pub counts: std::collections::BTreeMap<String, usize>,
    pub rto: Option<Distribution>,
    pub rpo: Option<Distribution>,
    /// Failures first, then by index.
    pub members: Vec<MemberResult>,
}

fn parse_time(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()
}

impl FleetReport {
    /// Joins the members' results; `members` in index order.
    pub fn new(
        (fleet_run, fleet, version, fleet_sha256): (&str, &str, &str, &str),
        mut members: Vec<MemberResult>,
    ) -> FleetReport {
        let all_passed = members.iter().all(|m| m.status == MemberStatus::Passed);
        let any_failed = members
            .iter()
            .any(|m| matches!(m.status, MemberStatus::Failed | MemberStatus::Blocked));
        let outcome = if all_passed {
            FleetOutcome::Passed
        } else if any_failed {
            FleetOutcome::Failed
        } else {
            FleetOutcome::Incomplete
        };
        let starts = members.iter().filter_map(|m| {
            m.started_at
                .as_deref()
                .and_then(parse_time)
                .zip(m.started_at.clone())
        });
        let first = starts.min_by_key(|(t, _)| *t);
        // A member's recovery moment is its start plus its RTO (start to its last passed verification).
        let recovered = members.iter().map(|m| {
            let start = m.started_at.as_deref().and_then(parse_time)?;
            Some(start + Duration::from_secs_f64(m.rto_seconds?.max(0.0)))
        });
        let last = if all_passed {
            recovered
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max())
        } else {
            None
        };
        let rto_seconds = match (&first, last) {
            (Some((start, _)), Some(end)) => {
                end.duration_since(*start).ok().map(|d| d.as_secs_f64())
            }
            _ => None,
        };
        let mut counts = std::collections::BTreeMap::new();
        for m in &members {
            *counts.entry(m.status.as_str().to_string()).or_insert(0) += 1;
        }
        let rto = Distribution::of(members.iter().filter_map(|m| m.rto_seconds));
        let rpo = Distribution::of(members.iter().filter_map(|m| m.rpo_seconds));
        members.sort_by_key(|m| (m.status, m.index));
        FleetReport {
            fleet_run: fleet_run.into(),
            fleet: fleet.into(),
            version: version.into(),
            fleet_sha256: fleet_sha256.into(),
            outcome,
            started_at: first.map(|(_, text)| text),
            recovered_at: last.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            rto_seconds,
            counts,
            rto,
            rpo,
            members,
        }
    }

    pub fn json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Fleet {} {}: {:?}\n",
            self.fleet, self.version, self.outcome
        );
        let _ = writeln!(out, "- fleet run: `{}`", self.fleet_run);
        let _ = writeln!(out, "- fleet file sha256: `{}`", self.fleet_sha256);
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let _ = writeln!(
            out,
            "- members: {} ({})",
            self.members.len(),
            counts.join(", ")
        );
        let _ = writeln!(
            out,
            "- started: {}",
            self.started_at.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "- recovered: {}",
            self.recovered_at.as_deref().unwrap_or("-")
        );
        let _ = writeln!(out, "- fleet RTO: {}", crate::seconds(self.rto_seconds));
        for (name, d) in [("RTO", &self.rto), ("RPO", &self.rpo)] {
            match d {
                Some(d) => {
                    let _ = writeln!(
                        out,
                        "- member {name}: min {:.1}s, median {:.1}s, p90 {:.1}s, max {:.1}s ({} members)",
                        d.min, d.median, d.p90, d.max, d.count
                    );
                }
                None => {
                    let _ = writeln!(out, "- member {name}: -");
                }
            }
        }
        out.push_str("\n| # | member | status | mode | run | RTO | RPO | teardown | error |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for m in &self.members {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m.index,
                m.name,
                m.status.as_str(),
                m.mode,
                m.run_id.as_deref().map_or("-".into(), |r| format!("`{r}`")),
                crate::seconds(m.rto_seconds),
                crate::seconds(m.rpo_seconds),
                m.teardown.as_deref().unwrap_or("-"),
                m.error
                    .as_deref()
                    .unwrap_or("")
                    .replace('|', "\\|")
                    .replace('\n', " "),
            );
        }
        out
    }

    /// One test case per member; a member that did not pass is a failure, with why.
    pub fn junit(&self) -> String {
        let failures = self
            .members
            .iter()
            .filter(|m| m.status != MemberStatus::Passed)
            .count();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"respawn fleet {}\">",
            esc(&self.fleet)
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{}\">",
            esc(&self.fleet_run),
            self.members.len(),
            self.rto_seconds.unwrap_or(0.0)
        );
        if let Some(rto) = self.rto_seconds {
            let _ = writeln!(
                out,
                "    <properties><property name=\"fleet_rto_seconds\" value=\"{rto}\"/></properties>"
            );
        }
        for m in &self.members {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{} {}\" time=\"{}\"",
                esc(&self.fleet),
                m.index,
                esc(&m.name),
                m.rto_seconds.unwrap_or(0.0)
            );
            if m.status == MemberStatus::Passed {
                out.push_str("/>\n");
                continue;
            }
            let why = m
                .error
                .clone()
                .unwrap_or_else(|| format!("member is {}", m.status.as_str()));
            let _ = writeln!(
                out,
                ">\n      <failure type=\"{}\" message=\"{}\"/>\n    </testcase>",
                m.status.as_str(),
                esc(&why)
            );
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(index: usize, status: MemberStatus, start: &str, rto: Option<f64>) -> MemberResult {
        MemberResult {
            index,
            name: format!("m{index}"),
            mode: "drill".into(),
            status,
            workflow: Some("w@1.0.0".into()),
            run_id: Some(format!("f.{index}")),
            runs: 1,
            started_at: Some(start.into()),
            finished_at: None,
            rto_seconds: rto,
            rpo_seconds: rto.map(|r| r / 2.0),
            teardown: Some("succeeded".into()),
            error: (status != MemberStatus::Passed).then(|| "step `x`: boom".into()),
        }
    }

    #[test]
    fn fleet_rto_runs_from_the_first_start_to_the_last_recovery() {
        let members = vec![
            member(
                0,
                MemberStatus::Passed,
                "2026-12-02T10:00:00.000Z",
                Some(10.0),
            ),
            member(
                1,
                MemberStatus::Passed,
                "2026-12-02T10:00:05.000Z",
                Some(20.0),
            ),
            member(
                2,
                MemberStatus::Passed,
                "2026-12-02T10:00:01.000Z",
                Some(3.0),
            ),
        ];
        let r = FleetReport::new(("f", "eu", "1.0.0", "ab"), members);
        assert_eq!(r.outcome, FleetOutcome::Passed);
        assert_eq!(r.rto_seconds, Some(25.0));
        assert_eq!(r.started_at.as_deref(), Some("2026-12-02T10:00:00.000Z"));
        assert_eq!(r.recovered_at.as_deref(), Some("2026-12-02T10:00:25.000Z"));
        let d = r.rto.unwrap();
        assert_eq!(
            (d.count, d.min, d.median, d.p90, d.max),
            (3, 3.0, 10.0, 20.0, 20.0)
        );
    }

    #[test]
    fn failures_come_first_and_a_failed_fleet_has_no_rto() {
        let members = vec![
            member(0, MemberStatus::Passed, "2026-12-02T10:00:00Z", Some(1.0)),
            member(1, MemberStatus::Failed, "2026-12-02T10:00:00Z", None),
            member(2, MemberStatus::Blocked, "2026-12-02T10:00:00Z", None),
        ];
        let r = FleetReport::new(("f", "eu", "1.0.0", "ab"), members);
        assert_eq!(r.outcome, FleetOutcome::Failed);
        assert_eq!(r.rto_seconds, None);
        let order: Vec<usize> = r.members.iter().map(|m| m.index).collect();
        assert_eq!(order, [1, 2, 0]);
        let junit = r.junit();
        assert_eq!(junit.matches("<testcase").count(), 3);
        assert_eq!(junit.matches("<failure").count(), 2);
        assert!(r.markdown().contains("| 1 | m1 | failed |"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Distribution::of((1..=10).map(f64::from)).unwrap();
        assert_eq!((d.median, d.p90, d.max), (5.0, 9.0, 10.0));
        assert!(Distribution::of(std::iter::empty()).is_none());
    }
}
