use clap::Args;
use respawn::plan;
use respawn::workflow::expr::{RunInfo, Scope};
use respawn::workflow::{self, Invalid, params, validate};

use super::{WorkflowParams, exit};

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
    let scope = Scope {
        params: resolved,
        run: RunInfo {
            id: "(plan)".into(),
            mode: "plan".into(),
            started_at: String::new(),
        },
        steps: Default::default(),
    };
    let plan = plan::build(&loaded, &scope).map_err(|e| super::Usage(e.to_string()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else if args.dot {
        print!("{}", plan::render_dot(&plan));
    } else {
        print!("{}", plan::render_text(&plan));
    }
    Ok(exit::OK)
}
