//! The step graph of a workflow: topological layers, resolved `with` values, and renderings as text, JSON and
//! Graphviz DOT. Knows nothing of plugins or I/O; `respawn plan` adds each step's plan-phase answer on top.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde::Serialize;

use crate::expr::{self, Scope};
use crate::{Grants, LoadedWorkflow, Section};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("step `{step}`: {source}")]
    Expression {
        step: String,
        source: expr::ExprError,
    },
    #[error("the step graph has a cycle through {0}")]
    Cycle(String),
}

/// A planned run: what will execute, in which order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub workflow: WorkflowRef,
    pub mode: String,
    pub params: BTreeMap<String, serde_json::Value>,
    /// Main steps in dependency layers; every step of a layer can run concurrently.
    pub layers: Vec<Vec<String>>,
    /// Verification steps in their own layers, after every main step.
    pub verify_layers: Vec<Vec<String>>,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkflowRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub section: Section,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    pub needs: Vec<String>,
    /// `with` after expressions; those that read step outputs stay as written until the run.
    pub with: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    pub grants: Grants,
    /// What the plugin's plan phase said it would do, when plugins were consulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<serde_json::Value>,
}

impl Plan {
    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Builds the plan of a validated workflow with resolved params.
pub fn build(loaded: &LoadedWorkflow, scope: &Scope) -> Result<Plan, PlanError> {
    let w = &loaded.workflow;
    let mut steps = Vec::new();
    for (section, _, step) in w.all_steps() {
        let with = expr::render(&serde_yaml::Value::Mapping(step.with.clone()), scope, true)
            .map_err(|source| PlanError::Expression {
                step: step.id.clone(),
                source,
            })?;
        let approval = match &step.approval {
            Some(text) => Some(
                expr::render(&serde_yaml::Value::String(text.clone()), scope, true)
                    .map_err(|source| PlanError::Expression {
                        step: step.id.clone(),
                        source,
                    })?
                    .as_str()
                    .map_or_else(|| text.clone(), str::to_string),
            ),
            None => None,
        };
        steps.push(PlannedStep {
            id: step.id.clone(),
            section,
            uses: step.uses.clone(),
            needs: step.needs.clone(),
            with,
            when: step.when.clone(),
            approval,
            grants: step.grants.clone(),
            would: None,
        });
    }
    let main: Vec<&PlannedStep> = steps
        .iter()
        .filter(|s| s.section == Section::Steps)
        .collect();
    let verify: Vec<&PlannedStep> = steps
        .iter()
        .filter(|s| s.section == Section::Verify)
        .collect();
    let layers = layers_of(&main)?;
    let verify_layers = layers_of(&verify)?;
    Ok(Plan {
        workflow: WorkflowRef {
            name: w.name.clone(),
            version: w.version.clone(),
            sha256: loaded.sha256.clone(),
            file: loaded.path.display().to_string(),
        },
        mode: scope.run.mode.clone(),
        params: scope.params.clone(),
        layers,
        verify_layers,
        steps,
    })
}

/// Kahn's algorithm, one layer at a time; needs on steps outside `steps` (main steps, for verification) are
/// already satisfied. Within a layer, steps keep their declaration order.
///
/// O(steps + edges + steps·log steps): every step enters one layer once, every need is followed once (when the
/// step it names is placed, it counts down its dependent), and each layer is sorted back into declaration order.
/// The first version rescanned every step for every layer, which made deep graphs quadratic.
fn layers_of(steps: &[&PlannedStep]) -> Result<Vec<Vec<String>>, PlanError> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .rev() // the first declaration wins, as in validation
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut waiting = vec![0usize; steps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        crate::work::edges(s.needs.len());
        for need in &s.needs {
            if let Some(&n) = index.get(need.as_str()) {
                waiting[i] += 1;
                dependents[n].push(i);
            }
        }
    }
    let mut layer: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut placed = 0;
    let mut out = Vec::new();
    while !layer.is_empty() {
        placed += layer.len();
        let mut next = Vec::new();
        for &i in &layer {
            crate::work::node();
            crate::work::edges(dependents[i].len());
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    next.push(d);
                }
            }
        }
        next.sort_unstable();
        out.push(layer.iter().map(|&i| steps[i].id.clone()).collect());
        layer = next;
    }
    if placed < steps.len() {
        let stuck: Vec<&str> = (0..steps.len())
            .filter(|&i| waiting[i] > 0)
            .map(|i| steps[i].id.as_str())
            .collect();
        return Err(PlanError::Cycle(stuck.join(", ")));
    }
    Ok(out)
}

/// Human-readable plan.
pub fn render_text(plan: &Plan) -> String {
    let by_id: HashMap<&str, &PlannedStep> = plan
        .steps
        .iter()
        .rev()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let mut out = String::new();
    let w = &plan.workflow;
    let _ = writeln!(out, "workflow  {} {}  ({})", w.name, w.version, w.file);
    let _ = writeln!(out, "sha256    {}", w.sha256);
    let _ = writeln!(out, "mode      {}", plan.mode);
    if !plan.params.is_empty() {
        let params: Vec<String> = plan
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        let _ = writeln!(out, "params    {}", params.join(" "));
    }
    for (title, layers) in [
        ("layer", &plan.layers),
        ("verify layer", &plan.verify_layers),
    ] {
        for (n, layer) in layers.iter().enumerate() {
            let _ = writeln!(out, "\n{title} {}", n + 1);
            for id in layer {
                let Some(step) = by_id.get(id.as_str()) else {
                    continue;
                };
                let what = step.uses.as_deref().unwrap_or("approval gate");
                let _ = write!(out, "  {id}  {what}");
                if !step.needs.is_empty() {
                    let _ = write!(out, "  needs {}", step.needs.join(", "));
                }
                let _ = writeln!(out);
                if let Some(when) = &step.when {
                    let _ = writeln!(out, "      when: {}", one_line(when));
                }
                if let Some(q) = &step.approval {
                    let _ = writeln!(out, "      approval: {}", one_line(q));
                }
                if let Some(obj) = step.with.as_object() {
                    for (k, v) in obj {
                        let _ = writeln!(out, "      with.{k}: {}", plain(v));
                    }
                }
                let grants = describe_grants(&step.grants);
                if !grants.is_empty() {
                    let _ = writeln!(out, "      grants: {grants}");
                }
                if let Some(would) = &step.would {
                    let _ = writeln!(out, "      would: {}", plain(would));
                }
            }
        }
    }
    out
}

/// A value on one line of the text plan: a string as it is, unless it holds a control character (a newline in a
/// param must not fake plan lines), then quoted and escaped like JSON; anything else as JSON.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        serde_json::Value::String(s.to_string()).to_string()
    } else {
        s.to_string()
    }
}

/// One-line summary of a step's grants, e.g. `stores backups:read regions:write; exec python3`.
pub fn describe_grants(g: &Grants) -> String {
    let mut parts = Vec::new();
    if !g.stores.is_empty() {
        let s: Vec<String> = g
            .stores
            .iter()
            .map(|(k, v)| {
                let access = format!("{:?}", v.access).to_lowercase();
                match &v.prefix {
                    Some(p) => format!("{k}:{access}:{p}"),
                    None => format!("{k}:{access}"),
                }
            })
            .collect();
        parts.push(format!("stores {}", s.join(" ")));
    }
    let exec: Vec<String> = g
        .exec
        .iter()
        .map(|e| match e.user() {
            Some(user) => format!("{}(as {user})", e.program()),
            None => e.program().to_string(),
        })
        .collect();
    for (label, list) in [("secrets", &g.secrets), ("exec", &exec), ("http", &g.http)] {
        if !list.is_empty() {
            parts.push(format!("{label} {}", list.join(" ")));
        }
    }
    if !g.files.is_empty() {
        let f: Vec<String> = g
            .files
            .iter()
            .map(|(k, v)| format!("{k}:{}", format!("{v:?}").to_lowercase()))
            .collect();
        parts.push(format!("files {}", f.join(" ")));
    }
    parts.join("; ")
}

/// Graphviz DOT: main steps as boxes, verification steps in their own cluster, gates as diamonds.
pub fn render_dot(plan: &Plan) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let q = |s: &str| format!("\"{}\"", esc(s));
    let label = |a: &str, b: &str| format!("\"{}\\n{}\"", esc(a), esc(b));
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", q(&plan.workflow.name));
    let _ = writeln!(
        out,
        "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];"
    );
    for step in plan.steps.iter().filter(|s| s.section == Section::Steps) {
        let shape = if step.uses.is_none() {
            ", shape=diamond"
        } else {
            ""
        };
        let what = step.uses.as_deref().unwrap_or("approval");
        let _ = writeln!(
            out,
            "  {} [label={}{shape}];",
            q(&step.id),
            label(&step.id, what)
        );
    }
    let _ = writeln!(
        out,
        "  subgraph cluster_verify {{\n    label=\"verify\";\n    style=dashed;"
    );
    for step in plan.steps.iter().filter(|s| s.section == Section::Verify) {
        let what = step.uses.as_deref().unwrap_or("");
        let _ = writeln!(
            out,
            "    {} [label={}];",
            q(&step.id),
            label(&step.id, what)
        );
    }
    let _ = writeln!(out, "  }}");
    for step in &plan.steps {
        for need in &step.needs {
            let _ = writeln!(out, "  {} -> {};", q(need), q(&step.id));
        }
    }
    // Verification waits for every main step: draw that from the last layer.
    if let Some(last) = plan.layers.last() {
        for root in plan.verify_layers.first().into_iter().flatten() {
            for leaf in last {
                let _ = writeln!(out, "  {} -> {} [style=dashed];", q(leaf), q(root));
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::expr::{RunInfo, Scope};

    /// A param is the operator's input: a newline in it must not print as plan lines of its own.
    #[test]
    fn a_param_cannot_fake_lines_of_the_text_plan() {
        let yaml = r#"respawn: 1
name: t
version: 1.0.0
params:
  region: { type: string }
plugins: { local: builtin:local@0.1 }
steps:
  - id: site
    uses: local/volume
    with: { region: "${{ params.region }}" }
    approval: "Go to ${{ params.region }}?"
"#;
        let loaded = crate::load_str(Path::new("t.yaml"), yaml).unwrap();
        let evil = "eu-west\n\nlayer 9\n  drop-db  local/volume";
        let scope = Scope {
            params: BTreeMap::from([("region".to_string(), serde_json::json!(evil))]),
            run: RunInfo {
                id: "plan".into(),
                mode: "plan".into(),
                started_at: String::new(),
            },
            steps: Default::default(),
        };
        let text = render_text(&build(&loaded, &scope).unwrap());
        assert!(!text.lines().any(|l| l.starts_with("layer 9")), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.contains("drop-db") && !l.contains('"')),
            "{text}"
        );
        assert!(
            text.contains(r#"with.region: "eu-west\n\nlayer 9"#),
            "{text}"
        );
    }
}
