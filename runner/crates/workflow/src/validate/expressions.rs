//! Checks of the `${{ … }}` expressions in a workflow: syntax, the names they read (params, run fields, the
//! outputs of ancestor steps only) and what evaluating them against a probe scope finds undefined.

use std::collections::HashSet;
use std::sync::Arc;

use super::ancestry::{Ancestry, StepView};
use super::{Checker, RUN_FIELDS, step_path, suggest};
use crate::expr::{self, Piece};
use crate::{ParamType, work};

/// What an expression of one step may read: the probe scope (params with placeholder values, and the step's
/// view of the graph), built once per step.
type Visible = Arc<StepView>;

impl Checker<'_> {
    /// Checks every expression of every step. Each step's strings are walked once, each expression is parsed
    /// and probed once, and each `steps.X` it reads is one ancestry question (see `ancestry`): linear in the
    /// size of the workflow when expressions read their needs.
    pub(super) fn expressions(&mut self) {
        let w = &self.w.workflow;
        let graph = Arc::new(Ancestry::new(w));
        let params = self.probe_params();
        for (position, (section, index, step)) in w.all_steps().enumerate() {
            let path = step_path(section, index);
            let ancestors: Visible = Arc::new(StepView {
                graph: graph.clone(),
                step: position,
            });
            let mut strings: Vec<(String, String)> = Vec::new();
            collect_strings(
                &serde_yaml::Value::Mapping(step.with.clone()),
                &format!("{path}.with"),
                &mut strings,
            );
            if let Some(approval) = &step.approval {
                strings.push((format!("{path}.approval"), approval.clone()));
            }
            if let Some(when) = &step.when {
                let wpath = format!("{path}.when");
                if !matches!(expr::split(when).as_deref(), Ok([Piece::Expr(_)])) {
                    self.at(&wpath, "when must be a single `${{ … }}` expression");
                }
                strings.push((wpath, when.clone()));
            }
            if strings.iter().all(|(_, text)| !expr::has_expr(text)) {
                continue;
            }
            let scope = expr::ProbeScope {
                params: params.clone(),
                steps: ancestors.clone(),
            };
            for (spath, text) in strings {
                self.expression_string(&spath, &text, &step.id, &ancestors, &scope);
            }
        }
    }

    fn expression_string(
        &mut self,
        path: &str,
        text: &str,
        step_id: &str,
        ancestors: &Visible,
        scope: &expr::ProbeScope,
    ) {
        let pieces = match expr::split(text) {
            Ok(p) => p,
            Err(e) => return self.at(path, e.to_string()),
        };
        for piece in pieces {
            let Piece::Expr(source) = piece else { continue };
            work::expression();
            for why in self.expression_problems(source, step_id, ancestors, scope) {
                self.at(path, format!("in `${{{{ {source} }}}}`: {why}"));
            }
        }
    }

    /// Everything wrong with one expression: its syntax, its dotted references (`steps.a.outputs.x`), and what
    /// evaluating it against a probe scope finds undefined (`params['x']`, `steps['my-id'].outputs`).
    fn expression_problems(
        &self,
        source: &str,
        step_id: &str,
        ancestors: &Visible,
        scope: &expr::ProbeScope,
    ) -> Vec<String> {
        let refs = match expr::references(source) {
            Ok(r) => r,
            Err(e) => return vec![e.to_string()],
        };
        let mut problems = Vec::new();
        // `steps.restore-db.outputs` reads as `steps.restore - db.outputs`: with the hint about `steps['…']` given,
        // `db` is not worth a second error.
        let mut hinted: HashSet<String> = HashSet::new();
        for reference in &refs {
            let parts: Vec<&str> = reference.split('.').collect();
            if let ["steps", id, ..] = parts.as_slice() {
                hinted.extend(self.hyphen_tails(id));
            }
        }
        for reference in &refs {
            let parts: Vec<&str> = reference.split('.').collect();
            if parts.len() == 1 && hinted.contains(parts[0]) {
                continue;
            }
            if let [root, ..] = parts.as_slice()
                && !KNOWN_ROOTS.contains(root)
                && hinted.contains(*root)
            {
                continue;
            }
            if let Err(why) = self.check_reference(&parts, step_id, ancestors, true) {
                problems.push(why);
            }
        }
        let probed = expr::probe(source, scope);
        let Err(expr::ExprError::Eval {
            undefined: true,
            message,
            ..
        }) = probed.result
        else {
            // Other evaluation errors depend on values only a run knows (types of outputs, arithmetic, …).
            return problems;
        };
        let mut named = false;
        for miss in &probed.misses {
            let dotted = miss.join(".");
            let covered = refs
                .iter()
                .any(|r| *r == dotted || r.starts_with(&format!("{dotted}.")));
            // A key that is not written in the expression was computed (`params[params.which]`): whether it exists
            // depends on values only a run knows.
            let computed = miss.last().is_some_and(|key| !written(source, key));
            if covered || computed {
                named = true;
                continue;
            }
            let parts: Vec<&str> = miss.iter().map(String::as_str).collect();
            if let Err(why) = self.check_reference(&parts, step_id, ancestors, false) {
                named = true;
                if !problems.contains(&why) {
                    problems.push(why);
                }
            }
        }
        if !named && problems.is_empty() {
            problems.push(format!(
                "{message}: reads an attribute or item that does not exist"
            ));
        }
        problems
    }

    /// Declared params as expressions see them during validation: the default, or a placeholder of the type.
    fn probe_params(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.w
            .workflow
            .params
            .iter()
            .map(|(name, spec)| {
                let value = spec
                    .default
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or_else(|| match spec.kind {
                        ParamType::String => serde_json::Value::from(""),
                        ParamType::Integer => serde_json::Value::from(0),
                        ParamType::Boolean => serde_json::Value::from(false),
                    });
                (name.clone(), value)
            })
            .collect()
    }

    /// For a `steps.ID` that names no step but prefixes ids with `-` (`restore` of `restore-db`), the pieces after
    /// the prefix, which an expression then reads as names being subtracted (`db`).
    fn hyphen_tails(&self, id: &str) -> Vec<String> {
        let w = &self.w.workflow;
        if w.step(id).is_some() {
            return Vec::new();
        }
        let prefix = format!("{id}-");
        w.all_steps()
            .filter_map(|(_, _, s)| s.id.strip_prefix(&prefix))
            .flat_map(|tail| tail.split('-').map(str::to_string))
            .collect()
    }

    /// Checks one reference, given as its path (`["steps", "a", "outputs", "x"]`). `dotted` says it was written
    /// with `.`, where a hyphenated step id needs the `steps['…']` hint.
    fn check_reference(
        &self,
        parts: &[&str],
        step_id: &str,
        ancestors: &Visible,
        dotted: bool,
    ) -> Result<(), String> {
        let w = &self.w.workflow;
        let root = parts.first().copied().unwrap_or_default();
        let second = parts.get(1).copied();
        match (root, second) {
            ("params", Some(name)) if !w.params.contains_key(name) => Err(format!(
                "unknown param `{name}`{}",
                suggest(name, w.params.keys())
            )),
            ("run", Some(field)) if !RUN_FIELDS.contains(&field) => Err(format!(
                "`run` has no field `{field}`; it has {}",
                RUN_FIELDS.join(", ")
            )),
            ("steps", Some(id)) => {
                let exists = w.step(id).is_some();
                if !exists {
                    let hint = if dotted && !self.hyphen_tails(id).is_empty() {
                        "; ids with `-` are written steps['my-id']"
                    } else {
                        ""
                    };
                    return Err(format!("unknown step `{id}`{hint}"));
                }
                if !ancestors.graph.visible(ancestors.step, id) {
                    return Err(if id == step_id {
                        format!("step `{id}` cannot read its own outputs")
                    } else {
                        format!("step `{id}` is not an ancestor of `{step_id}`; add it to `needs`")
                    });
                }
                match parts.get(2) {
                    None | Some(&"outputs") => Ok(()),
                    Some(other) => Err(format!(
                        "step `{id}` has no `{other}`; only its `outputs` are visible"
                    )),
                }
            }
            ("params" | "run" | "steps", _) => Ok(()),
            ("secrets", _) => Err(
                "secrets are not visible to expressions; grant them with `grants.secrets`".into(),
            ),
            ("env", _) => Err("the environment is not visible to expressions".into()),
            (other, _) => Err(format!(
                "unknown name `{other}`; expressions see only params, run and steps"
            )),
        }
    }
}

/// True when `key` appears literally in the expression `source` (as `.key`, `['key']` or `["key"]`).
fn written(source: &str, key: &str) -> bool {
    if key.is_empty() {
        source.contains("''") || source.contains("\"\"")
    } else {
        source.contains(key)
    }
}

/// Root names with a meaning of their own in expressions (visible, or refused with an explanation).
const KNOWN_ROOTS: [&str; 5] = ["params", "run", "steps", "secrets", "env"];

fn collect_strings(value: &serde_yaml::Value, path: &str, out: &mut Vec<(String, String)>) {
    use serde_yaml::Value as Y;
    match value {
        Y::String(s) => out.push((path.to_string(), s.clone())),
        Y::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, &format!("{path}[{i}]"), out);
            }
        }
        Y::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().map_or_else(|| "?".to_string(), str::to_string);
                collect_strings(v, &format!("{path}.{key}"), out);
            }
        }
        Y::Tagged(t) => collect_strings(&t.value, path, out),
        _ => {}
    }
}
