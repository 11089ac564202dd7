use std::collections::BTreeMap;

use clap::Args;
use respawn::engine::{Mode, Phase, StepCall, StepExecutor};
use respawn::host::workflow_plugins::LockPolicy;
use respawn::plan::{self, Plan};
use respawn::workflow::expr::{RunInfo, Scope};
use respawn::workflow::lock::LockFile;
use respawn::workflow::{self, DEFAULT_STEP_TIMEOUT, Invalid, LoadedWorkflow, params, validate};

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
    let scope = Scope {
        params: resolved,
        run: RunInfo {
            id: "plan".into(),
            mode: "plan".into(),
            started_at: String::new(),
        },
        steps: Default::default(),
    };
    let mut plan = plan::build(&loaded, &scope).map_err(|e| super::Usage(e.to_string()))?;
    let failed = runtime.block_on(ask_plugins(&host, &loaded, &mut plan));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else if args.dot {
        print!("{}", plan::render_dot(&plan));
    } else {
        print!("{}", plan::render_text(&plan));
    }
    if failed > 0 {
        eprintln!("error: the plan phase of {failed} step(s) failed");
        return Ok(exit::RUN_FAILED);
    }
    Ok(exit::OK)
}

/// Calls the plan phase of every step with a plugin, in graph order, recording each answer in `would`.
async fn ask_plugins(
    host: &respawn::host::Host,
    loaded: &LoadedWorkflow,
    plan: &mut Plan,
) -> usize {
    let order: Vec<String> = plan
        .layers
        .iter()
        .chain(&plan.verify_layers)
        .flatten()
        .cloned()
        .collect();
    let mut failed = 0;
    for id in order {
        let Some(step) = loaded.workflow.step(&id) else {
            continue;
        };
        let Some((plugin, operation)) = step.uses.as_deref().and_then(|u| u.split_once('/')) else {
            continue;
        };
        let Some(planned) = plan.steps.iter_mut().find(|s| s.id == id) else {
            continue;
        };
        // Like "known after apply": params that read step outputs cannot be planned with real values.
        let pending = unresolved(&planned.with);
        if !pending.is_empty() {
            planned.would = Some(serde_json::json!({ "known_after_apply": pending }));
            continue;
        }
        let call = StepCall {
            run_id: "plan".into(),
            step_id: id.clone(),
            plugin: plugin.into(),
            operation: operation.into(),
            phase: Phase::Plan,
            mode: Mode::Plan,
            attempt: 1,
            params: planned.with.clone(),
            grants: step.grants.clone(),
            limits: step.limits.clone(),
            timeout: step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
            state: BTreeMap::new(),
        };
        let result = host.execute(call).await;
        planned.would = Some(match result.outcome {
            Ok(outputs) => outputs,
            Err(e) => {
                failed += 1;
                serde_json::json!({ "error": { "kind": e.kind(), "message": e.to_string() } })
            }
        });
    }
    failed
}

/// The strings of `with` that still hold expressions (they read outputs of earlier steps).
fn unresolved(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) if respawn::workflow::expr::has_expr(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(unresolved).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(unresolved).collect(),
        _ => Vec::new(),
    }
}
