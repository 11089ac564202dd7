//! Turning `--param k=v` strings into typed values checked against the workflow's `params:`.

use std::collections::BTreeMap;

use super::{Diagnostic, Invalid, LoadedWorkflow, ParamType};

/// Resolves the params a run will see: given values parsed to their declared type, then defaults.
/// Every problem is reported: unknown names, bad values, and missing required params.
pub fn resolve(
    loaded: &LoadedWorkflow,
    given: &[(String, String)],
) -> Result<BTreeMap<String, serde_json::Value>, Invalid> {
    let w = &loaded.workflow;
    let mut out = BTreeMap::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    for (name, raw) in given {
        let Some(spec) = w.params.get(name) else {
            let known: Vec<&str> = w.params.keys().map(String::as_str).collect();
            diags.push(loaded.diag(
                loaded.source.value("params"),
                format!(
                    "--param {name}: no such param; declared: {}",
                    list_or_none(&known)
                ),
            ));
            continue;
        };
        match parse_typed(spec.kind, raw) {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(expected) => diags.push(loaded.diag(
                loaded.source.key(&format!("params.{name}")),
                format!("--param {name}={raw}: expected {expected}"),
            )),
        }
    }
    for (name, spec) in &w.params {
        if out.contains_key(name) || given.iter().any(|(n, _)| n == name) {
            continue;
        }
        if let Some(default) = &spec.default {
            out.insert(
                name.clone(),
                serde_json::to_value(default).unwrap_or(serde_json::Value::Null),
            );
        } else if spec.required {
            diags.push(loaded.diag(
                loaded.source.key(&format!("params.{name}")),
                format!("required param `{name}` was not given; pass --param {name}=VALUE"),
            ));
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(Invalid { diagnostics: diags })
    }
}

fn parse_typed(kind: ParamType, raw: &str) -> Result<serde_json::Value, &'static str> {
    match kind {
        ParamType::String => Ok(serde_json::Value::String(raw.to_string())),
        ParamType::Integer => raw
            .trim()
            .parse::<i64>()
            .map(Into::into)
            .map_err(|_| "an integer"),
        ParamType::Boolean => match raw.trim() {
            "true" => Ok(true.into()),
            "false" => Ok(false.into()),
            _ => Err("a boolean (true or false)"),
        },
    }
}

/// Splits `k=v` from the command line.
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
