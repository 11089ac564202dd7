//! `respawn fleet report`: the members' runs joined into one report, from the state store alone.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use respawn::data::object_store::ObjectStore;
use respawn::engine::resume::report_from_journal;
use respawn::report::fleet::{FleetReport, MemberResult, MemberStatus};
use respawn::report::record::StepStatus;

use super::super::run as runs;
use super::super::{exit, setup};
use super::member::{Found, Standing, latest_run, standing};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The fleet run's id.
    pub fleet_run: String,
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: Option<String>,
    #[arg(long, value_parser = ["json", "md", "junit"], default_value = "md")]
    pub format: String,
    /// Also write fleet-report.json, fleet-report.md and fleet-junit.xml into this directory.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<u8> {
    super::check_fleet_run_id(&args.fleet_run)?;
    let store = runs::open_state(args.state.as_deref())?;
    let runtime = setup::runtime()?;
    let report = build(&runtime, &store, &args.fleet_run)?;
    if let Some(dir) = &args.out_dir {
        write_all(&report, dir)?;
    }
    out_raw!(
        "{}",
        match args.format.as_str() {
            "json" => report.json(),
            "junit" => report.junit(),
            _ => report.markdown(),
        }
    );
    Ok(exit::OK)
}

/// Writes the report in every format into `dir`.
pub fn write_all(report: &FleetReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("fleet-report.json"), report.json())?;
    std::fs::write(dir.join("fleet-report.md"), report.markdown())?;
    std::fs::write(dir.join("fleet-junit.xml"), report.junit())?;
    Ok(())
}

/// The report of fleet run `fleet_run` as its members' journals have it now.
pub fn build(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    fleet_run: &str,
) -> anyhow::Result<FleetReport> {
    let loaded = runtime.block_on(super::recorded_fleet(store, fleet_run))?;
    let mut members: Vec<MemberResult> = Vec::with_capacity(loaded.fleet.members.len());
    for (index, m) in loaded.fleet.members.iter().enumerate() {
        let found = runtime.block_on(latest_run(store, fleet_run, index));
        let mut result = MemberResult {
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
        };
        let found = match found {
            Ok(found) => found,
            // One member's untrustworthy journal is that member's failure, not the report's.
            Err(e) if e.is_usage() => {
                result.status = MemberStatus::Failed;
                result.error = Some(e.to_string());
                members.push(result);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let standing = standing(&found);
        if let Found::Run {
            attempt,
            run_id,
            stored,
            replayed,
        } = &found
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
                result.error = r
                    .steps
                    .iter()
                    .chain(&r.verifications)
                    .chain(&r.teardown.steps)
                    .find(|s| s.status == StepStatus::Failed)
                    .map(|s| {
                        let message = s.error.as_ref().map_or("failed", |e| e.message.as_str());
                        format!("step `{}`: {message}", s.id)
                    })
                    .or_else(|| {
                        // No step failed: a missed objective, or an interrupt, ended the run.
                        let missed: Vec<String> = r
                            .objectives
                            .iter()
                            .filter(|j| {
                                j.enforced && j.status != respawn::report::objectives::Status::Met
                            })
                            .map(|j| j.describe())
                            .collect();
                        (r.outcome != respawn::report::record::Outcome::Passed).then(|| {
                            if missed.is_empty() {
                                let outcome = format!("{:?}", r.outcome).to_lowercase();
                                format!(
                                    "run {run_id} {outcome}; `respawn report {run_id}` shows why"
                                )
                            } else {
                                missed.join("; ")
                            }
                        })
                    });
            }
        }
        result.status = match standing {
            Standing::Passed => MemberStatus::Passed,
            Standing::Failed => MemberStatus::Failed,
            Standing::TornDown => MemberStatus::Interrupted,
            Standing::Resumable | Standing::Destroying => MemberStatus::Running,
            Standing::NotStarted => {
                // Needs name earlier members, whose results are already known.
                let failed_need = m.needs.iter().find(|need| {
                    members.iter().any(|o| {
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
        members.push(result);
    }
    Ok(FleetReport::new(
        (
            fleet_run,
            &loaded.fleet.fleet,
            &loaded.fleet.version,
            &loaded.sha256,
        ),
        members,
    ))
}
