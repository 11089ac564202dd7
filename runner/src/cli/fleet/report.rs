//! `respawn fleet report`: the members' runs joined into one report, from the state store alone.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use respawn::data::object_store::ObjectStore;
use respawn::engine::fleet;
use respawn::report::fleet::{FleetReport, MemberResult};

use super::super::run as runs;
use super::super::{exit, setup};
use respawn::journal::fleet::latest_run;

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
        let result = match found {
            Ok(found) => fleet::member_result(index, m, &found, &members)?,
            // One member's untrustworthy journal is that member's failure, not the report's.
            Err(e) if e.is_usage() => fleet::unreadable(index, m, &e),
            Err(e) => return Err(e.into()),
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
