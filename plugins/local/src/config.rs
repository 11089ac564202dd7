//! `local/config`: render every file of a template directory into `<root>/<region>/<env>/<name>`.

use std::collections::BTreeMap;

use respawn_plugin_sdk::{Context, Failure, Phase};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Place, io_failure};

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,
"required":["templates","root","region","env","name"],
"properties":{"templates":{"type":"string","description":"directory of templates (granted ro)"},
"values":{"type":"object","description":"values the templates see, besides region and env"},
"root":{"type":"string"},"region":{"type":"string"},"env":{"type":"string"},"name":{"type":"string"}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    templates: String,
    #[serde(default)]
    values: BTreeMap<String, Value>,
    #[serde(flatten)]
    place: Place,
}

fn template_names(dir: &str) -> Result<Vec<String>, Failure> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_failure(&format!("templates {dir}"), e))? {
        let entry = entry.map_err(|e| io_failure(dir, e))?;
        if entry.file_type().map_err(|e| io_failure(dir, e))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    p.place.check()?;
    let path = p.place.path();
    match ctx.phase {
        Phase::Plan => {
            let names = template_names(&p.templates)?;
            Ok(json!({ "would": format!("render {} into {path}", names.join(", ")) }))
        }
        Phase::Apply => {
            let mut env = minijinja::Environment::new();
            env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            let mut values = p.values.clone();
            values.insert("region".into(), json!(p.place.region));
            values.insert("env".into(), json!(p.place.env));
            std::fs::create_dir_all(&path).map_err(|e| io_failure(&path, e))?;
            let mut written = Vec::new();
            let mut artifacts = Vec::new();
            for name in template_names(&p.templates)? {
                let source = format!("{}/{name}", p.templates.trim_end_matches('/'));
                let text = std::fs::read_to_string(&source).map_err(|e| io_failure(&source, e))?;
                // Evidence of which template version was rendered (docs/plugin-abi.md, "Artifacts").
                artifacts.push(json!({
                    "kind": "config-template",
                    "digest": format!("sha256:{:x}", Sha256::digest(text.as_bytes())),
                    "source": { "prefix": source },
                }));
                let rendered = env
                    .render_str(&text, &values)
                    .map_err(|e| Failure::invalid_input(format!("template {source}: {e}")))?;
                let target = format!("{path}/{name}");
                std::fs::write(&target, rendered).map_err(|e| io_failure(&target, e))?;
                written.push(name);
            }
            Ok(json!({ "path": path, "files": written, "artifacts": artifacts }))
        }
        Phase::Verify => {
            for name in template_names(&p.templates)? {
                let target = format!("{path}/{name}");
                std::fs::metadata(&target)
                    .map_err(|_| Failure::verification_failed(format!("{target} is missing")))?;
            }
            Ok(json!({ "path": path }))
        }
        Phase::Destroy => {
            p.place.remove_and_prune()?;
            Ok(json!({ "removed": path }))
        }
    }
}
