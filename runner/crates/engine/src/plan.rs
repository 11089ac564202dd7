//! `respawn plan`'s questions to the plugins: each step's plan phase, read-only, in graph order.

use std::collections::BTreeMap;

use respawn_workflow::expr::{RunInfo, Scope};
use respawn_workflow::plan::{self, Plan, PlanError};
use respawn_workflow::{DEFAULT_STEP_TIMEOUT, LoadedWorkflow};

use crate::{Mode, Phase, StepCall, StepExecutor};

/// What a plan would do: the step graph with `params` rendered, and each step's plugin asked (the plan phase,
/// read-only grants). Changes nothing. Returns the plan and how many steps' plan phase failed.
pub async fn plan<E: StepExecutor>(
    exec: &E,
    loaded: &LoadedWorkflow,
    params: BTreeMap<String, serde_json::Value>,
) -> Result<(Plan, usize), PlanError> {
    let scope = Scope {
        params,
        run: RunInfo {
            id: "plan".into(),
            mode: Mode::Plan.to_string(),
            started_at: String::new(),
        },
        steps: Default::default(),
    };
    let mut plan = plan::build(loaded, &scope)?;
    let failed = ask_plugins(exec, loaded, &mut plan).await;
    Ok((plan, failed))
}

/// Calls the plan phase of every step with a plugin, in graph order, recording each answer in `would`.
async fn ask_plugins<E: StepExecutor>(host: &E, loaded: &LoadedWorkflow, plan: &mut Plan) -> usize {
    let order: Vec<String> = plan
        .layers
        .iter()
        .chain(&plan.verify_layers)
        .flatten()
        .cloned()
        .collect();
    let position: std::collections::HashMap<String, usize> = plan
        .steps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut failed = 0;
    for id in order {
        let Some(step) = loaded.workflow.step(&id) else {
            continue;
        };
        let Some((plugin, operation)) = step.uses.as_deref().and_then(|u| u.split_once('/')) else {
            continue;
        };
        let Some(planned) = position.get(&id).map(|&i| &mut plan.steps[i]) else {
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
        serde_json::Value::String(s) if respawn_workflow::expr::has_expr(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(unresolved).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(unresolved).collect(),
        _ => Vec::new(),
    }
}
