//! Checking each step's `with:` against the JSON Schema its plugin publishes for the operation (`describe`), so
//! that `validate` catches a missing or mistyped param at its file:line:col instead of `plan` or a run failing
//! later. Only literal values are judged: a value that holds a `${{ … }}` expression is known only once it is
//! rendered, so a problem at it, inside it, or in a combinator (`oneOf`, `anyOf`, …) above it is left to `plan`
//! and the plugin.

use std::collections::BTreeMap;

use respawn_workflow::model::Step;
use respawn_workflow::{Diagnostic, LoadedWorkflow};
use serde_json::Value;

use super::workflow_plugins::PluginSet;

/// Every problem of every step's literal params, at the offending field.
pub fn diagnostics(plugins: &PluginSet, loaded: &LoadedWorkflow) -> Vec<Diagnostic> {
    let w = &loaded.workflow;
    let mut out = Vec::new();
    // One compiled validator per (plugin, operation), however many steps use it.
    let mut validators: BTreeMap<(String, String), Option<jsonschema::Validator>> = BTreeMap::new();
    let sections = [("steps", &w.steps), ("verify", &w.verify)];
    for (section, steps) in sections {
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{section}[{i}]");
            let Some((alias, operation)) = step.uses.as_deref().and_then(|u| u.split_once('/'))
            else {
                continue;
            };
            let Some(plugin) = plugins.plugins.get(alias) else {
                continue; // reported at the plugin's declaration
            };
            let Some(op) = plugin
                .description
                .operations
                .iter()
                .find(|o| o.name == operation)
            else {
                continue; // reported at `uses`
            };
            let validator = validators
                .entry((alias.to_string(), operation.to_string()))
                .or_insert_with(|| jsonschema::validator_for(&op.params_schema).ok());
            let Some(validator) = validator else {
                continue; // `describe` checks the schema; one jsonschema cannot compile is not the user's fault
            };
            out.extend(check_step(
                loaded,
                step,
                &path,
                validator,
                step.uses.as_deref().unwrap_or_default(),
            ));
        }
    }
    out
}

fn check_step(
    loaded: &LoadedWorkflow,
    step: &Step,
    path: &str,
    validator: &jsonschema::Validator,
    uses: &str,
) -> Vec<Diagnostic> {
    // A `with:` whose keys are not all strings is reported by the loader; nothing to add here.
    let Ok(instance) = serde_json::to_value(&step.with) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for error in validator.iter_errors(&instance) {
        let pointer = error.instance_path().as_str().to_string();
        let segments: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let keyword = error
            .schema_path()
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if touches_expression(&instance, &segments, &keyword) {
            continue;
        }
        let field = yaml_path(&instance, &segments);
        let at = if field.is_empty() {
            format!("{path}.with")
        } else {
            format!("{path}.with.{field}")
        };
        let pos = if field.is_empty() {
            loaded.source.key(&format!("{path}.with"))
        } else {
            loaded.source.value(&at)
        };
        let name = if field.is_empty() {
            "with".to_string()
        } else {
            format!("with.{field}")
        };
        out.push(loaded.diag(
            pos,
            format!(
                "step `{}`: {name}: {error} (the params schema of `{uses}`)",
                step.id
            ),
        ));
    }
    out
}

/// Keywords that judge an object's or array's shape (which keys, how many), not the values in it: an expression
/// in a value cannot change their verdict.
const SHAPE_KEYWORDS: &[&str] = &[
    "required",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "minItems",
    "maxItems",
    "dependentRequired",
];

/// Whether an expression could change the verdict of `keyword` at `segments`: the value there, or one on the way
/// to it, is an expression; or one inside it is and the keyword judges more than the shape.
fn touches_expression(instance: &Value, segments: &[String], keyword: &str) -> bool {
    let mut node = instance;
    for segment in segments {
        if holds_expression_directly(node) {
            return true;
        }
        node = match node {
            Value::Object(map) => match map.get(segment) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    holds_expression_directly(node)
        || (!SHAPE_KEYWORDS.contains(&keyword) && holds_expression(node))
}

fn holds_expression_directly(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.contains("${{"))
}

fn holds_expression(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${{"),
        Value::Array(items) => items.iter().any(holds_expression),
        Value::Object(map) => map.values().any(holds_expression),
        _ => false,
    }
}

/// The source-map path below `with` of a JSON pointer's segments: `a.b[2].c`.
fn yaml_path(instance: &Value, segments: &[String]) -> String {
    let mut out = String::new();
    let mut node = Some(instance);
    for segment in segments {
        match node {
            Some(Value::Array(items)) => {
                out.push_str(&format!("[{segment}]"));
                node = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(segment);
                node = match other {
                    Some(Value::Object(map)) => map.get(segment),
                    _ => None,
                };
            }
        }
    }
    out
}
