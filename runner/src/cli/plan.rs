//! `respawn plan`: what a run would do, changing nothing.

use clap::Args;
use respawn::host::workflow_plugins::LockPolicy;
use respawn::plan;
use respawn::workflow::lock::LockFile;
use respawn::workflow::{self, Invalid, params, validate};

use super::{WorkflowParams, exit, setup};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: WorkflowParams,
    /// Print the plan as JSON.
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print the step graph as Graphviz DOT.
    #[arg(long)]
    pub dot: bool,
}

/// Validates, checks every plugin against respawn.lock, and asks each step's plugin what it would do (the plan
/// phase, read-only grants). Changes nothing. Exit 1 if a step's plan phase failed.
pub fn run(args: PlanArgs) -> anyhow::Result<u8> {
    let loaded = workflow::load_file(&args.target.workflow)?;
    let mut diagnostics = validate::validate(&loaded, None);
    let resolved = match params::resolve(&loaded, &args.target.params) {
        Ok(p) => p,
        Err(e) => {
            diagnostics.extend(e.diagnostics);
            Default::default()
        }
    };
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    let lock = LockFile::read(&loaded.path).map_err(|e| super::Usage(e.to_string()))?;
    let host = setup::host_for(&loaded, false)?;
    let runtime = setup::runtime()?;
    setup::checked_plugins(&runtime, &host, &loaded, LockPolicy::Enforce(&lock))?;
    let (plan, failed) = runtime
        .block_on(respawn::engine::plan::plan(&host, &loaded, resolved))
        .map_err(|e| super::Usage(e.to_string()))?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&plan)?);
    } else if args.dot {
        out_raw!("{}", plan::render_dot(&plan));
    } else {
        out_raw!("{}", plan::render_text(&plan));
    }
    if failed > 0 {
        eprintln!("error: the plan phase of {failed} step(s) failed");
        return Ok(exit::RUN_FAILED);
    }
    Ok(exit::OK)
}
