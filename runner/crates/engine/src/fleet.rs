//! A fleet member's line in the fleet report (DESIGN.md §11), from its latest run's journal: the same report
//! function every run's report comes from, so a member's RTO and RPO here are its report's.

use respawn_journal::JournalError;
use respawn_journal::fleet::{Found, Standing, standing};
use respawn_report::fleet::{MemberResult, MemberStatus};
use respawn_report::objectives::Status;
use respawn_report::record::{Outcome, StepStatus};
use respawn_workflow::fleet::Member;

use crate::resume::{ResumeError, report_from_journal};

fn empty(index: usize, m: &Member) -> MemberResult {
    MemberResult {
        index,
        name: m.name.clone(),
        mode: m.mode.as_str().to_string(),
        status: MemberStatus::NotStarted,
        workflow: None,
        run_id: None,
        runs: 0,
        started_at: None,
        finished_at: None,
        rto_seconds: None,
        rpo_seconds: None,
        teardown: None,
        error: None,
    }
}

/// A member whose journal does not read or verify: failed, with why.
pub fn unreadable(index: usize, m: &Member, e: &JournalError) -> MemberResult {
    MemberResult {
        status: MemberStatus::Failed,
        error: Some(e.to_string()),
        ..empty(index, m)
    }
}

/// Member `index` as its latest run (`found`) has it; `earlier` holds the members before it, whose results
/// decide whether a member that never started is blocked (its needs name earlier members only).
pub fn member_result(
    index: usize,
    m: &Member,
    found: &Found,
    earlier: &[MemberResult],
) -> Result<MemberResult, ResumeError> {
    let mut result = empty(index, m);
    if let Found::Run {
        attempt,
        run_id,
        stored,
        replayed,
    } = found
    {
        let start = &replayed.start;
        result.workflow = Some(format!(
            "{}@{}",
            start.workflow.name, start.workflow.version
        ));
        result.run_id = Some(run_id.clone());
        result.runs = *attempt;
        result.started_at = Some(start.started_at.clone());
        if let Some(r) = report_from_journal(stored, replayed)? {
            result.finished_at = Some(r.finished_at.clone());
            result.rto_seconds = r.rto_seconds;
            result.rpo_seconds = r.rpo_seconds;
            result.teardown = Some(r.teardown.status.clone());
            result.error = first_failure(&r, run_id);
        }
    }
    result.status = match standing(found) {
        Standing::Passed => MemberStatus::Passed,
        Standing::Failed => MemberStatus::Failed,
        Standing::TornDown => MemberStatus::Interrupted,
        Standing::Resumable | Standing::Destroying => MemberStatus::Running,
        Standing::NotStarted => {
            let failed_need = m.needs.iter().find(|need| {
                earlier.iter().any(|o| {
                    &o.name == *need
                        && matches!(o.status, MemberStatus::Failed | MemberStatus::Blocked)
                })
            });
            match failed_need {
                Some(need) => {
                    result.error = Some(format!("needs `{need}`, which did not pass"));
                    MemberStatus::Blocked
                }
                None => MemberStatus::NotStarted,
            }
        }
    };
    Ok(result)
}

/// Why a finished run did not pass: its first failed step, else the objectives it missed, else its outcome.
fn first_failure(r: &respawn_report::Report, run_id: &str) -> Option<String> {
    if let Some(s) = r
        .steps
        .iter()
        .chain(&r.verifications)
        .chain(&r.teardown.steps)
        .find(|s| s.status == StepStatus::Failed)
    {
        let message = s.error.as_ref().map_or("failed", |e| e.message.as_str());
        return Some(format!("step `{}`: {message}", s.id));
    }
    if r.outcome == Outcome::Passed {
        return None;
    }
    let missed: Vec<String> = r
        .objectives
        .iter()
        .filter(|j| j.enforced && j.status != Status::Met)
        .map(|j| j.describe())
        .collect();
    Some(if missed.is_empty() {
        let outcome = format!("{:?}", r.outcome).to_lowercase();
        format!("run {run_id} {outcome}; `respawn report {run_id}` shows why")
    } else {
        missed.join("; ")
    })
}
