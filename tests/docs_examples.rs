//! Every YAML example in README.md and docs/ stays true: a whole workflow passes `respawn validate` (which checks
//! each step's literal params against its plugin's schema) and `respawn plan` (which renders every expression and
//! asks each plugin what it would do), a fragment is valid YAML, and a `grants:` line parses as a step's grants.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
        .to_path_buf()
}

/// (file, line, body) of every ```yaml block of the docs.
fn yaml_blocks() -> Vec<(String, usize, String)> {
    let mut files = vec![repo().join("README.md")];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a docs directory") {
            let path = entry.expect("docs entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a doc");
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let mut open: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut open {
                None if line.trim_start() == "```yaml" => open = Some((i + 2, String::new())),
                Some((start, body)) if line.trim_start() == "```" => {
                    blocks.push((name.clone(), *start, std::mem::take(body)));
                    open = None;
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    blocks
}

/// A value for each required param without a default, by its type, as a reader trying the example would give.
fn required_params(body: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(body).expect("a workflow example is YAML");
    let Some(params) = doc.get("params").and_then(|p| p.as_mapping()) else {
        return Vec::new();
    };
    params
        .iter()
        .filter(|(_, spec)| {
            spec.get("required").and_then(|r| r.as_bool()) == Some(true)
                && spec.get("default").is_none()
        })
        .map(|(name, spec)| {
            let value = match spec.get("type").and_then(|t| t.as_str()) {
                Some("integer") => "1",
                Some("boolean") => "true",
                _ => "example",
            };
            format!("{}={value}", name.as_str().unwrap_or_default())
        })
        .collect()
}

/// Whole workflows whose plugins are all builtin validate as they are written, and plan once locked.
#[test]
fn workflow_examples_validate_and_plan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut checked, mut planned) = (0, 0);
    for (file, line, body) in yaml_blocks() {
        if !body.lines().any(|l| l.starts_with("respawn: 1")) || is_fleet(&body) {
            continue;
        }
        // A plugin built by the reader (docs/writing-plugins.md) is exercised by the scaffold test instead.
        if body.contains("file://") && body.contains(".wasm") {
            continue;
        }
        // Each in a directory of its own: `lock` writes respawn.lock beside the workflow.
        let example_dir = dir.path().join(format!("example-{checked}"));
        std::fs::create_dir_all(&example_dir).expect("example dir");
        let path = example_dir.join("workflow.yaml");
        std::fs::write(&path, &body).expect("write the example");
        let respawn = |args: &[&str]| {
            Command::new(bin())
                .args(args)
                .current_dir(&example_dir)
                .env("RESPAWN_STATE", "file://state")
                .output()
                .expect("run respawn")
        };
        let out = respawn(&["validate", "workflow.yaml"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:{line}: the example does not validate:\n{}",
            text(&out)
        );
        checked += 1;
        // These providers' plans ask their servers (a registry, PostgreSQL, AWS) what is there; the provider's
        // end-to-end tests plan their workflows against the test servers. Here they are validated, which checks
        // every literal param against the provider's schema.
        let plans_offline = ["builtin:registry", "builtin:postgres", "builtin:aws"]
            .iter()
            .all(|p| !body.contains(p));
        if !plans_offline {
            continue;
        }
        planned += 1;
        let out = respawn(&["lock", "workflow.yaml"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:{line}: lock:\n{}",
            text(&out)
        );
        let mut plan = vec!["plan".to_string(), "workflow.yaml".to_string()];
        for param in required_params(&body) {
            plan.extend(["--param".to_string(), param]);
        }
        let plan: Vec<&str> = plan.iter().map(String::as_str).collect();
        let out = respawn(&plan);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:{line}: the example does not plan:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains("layer 1"),
            "{file}:{line}: {}",
            text(&out)
        );
    }
    assert!(checked > 0, "no workflow example found in the docs");
    assert!(planned > 0, "no workflow example was planned");
}

/// A fleet file (its `fleet:` key at the top level) rather than a workflow.
fn is_fleet(body: &str) -> bool {
    body.lines().any(|l| l.starts_with("fleet:"))
}

/// Every fleet example is a fleet file of the repository, word for word, and `respawn fleet validate` passes it:
/// its members' workflows, their locks and the members' params.
#[test]
fn fleet_examples_are_repository_fleets_that_validate() {
    let mut checked = 0;
    for (file, line, body) in yaml_blocks().into_iter().filter(|(_, _, b)| is_fleet(b)) {
        let fleets = std::fs::read_dir(repo().join("workflows"))
            .expect("workflows/")
            .map(|e| e.expect("entry").path().join("fleet.yaml"))
            .filter(|p| p.exists());
        let same: Vec<PathBuf> = fleets
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t == body))
            .collect();
        assert_eq!(
            same.len(),
            1,
            "{file}:{line}: a fleet example must be a workflows/*/fleet.yaml of the repository, word for word"
        );
        let out = Command::new(bin())
            .args(["fleet", "validate"])
            .arg(&same[0])
            .output()
            .expect("run respawn");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:{line}: the fleet does not validate:\n{}",
            text(&out)
        );
        checked += 1;
    }
    assert!(checked > 0, "no fleet example found in the docs");
}

/// Fragments are valid YAML, and every one-line `grants:` example is a step's grants.
#[test]
fn fragments_are_valid_yaml_and_grants_parse() {
    let mut grants_checked = 0;
    for (file, line, body) in yaml_blocks() {
        // A line `...` elides the rest of a workflow between two excerpts of it.
        for part in body.split("\n...\n") {
            let value: Result<serde_yaml::Value, _> = serde_yaml::from_str(part);
            if let Err(e) = value {
                // An indented excerpt is part of a step: check it inside one.
                let wrapped = format!("steps:\n  - id: x\n{part}");
                serde_yaml::from_str::<serde_yaml::Value>(&wrapped)
                    .unwrap_or_else(|_| panic!("{file}:{line}: not valid YAML: {e}"));
            }
        }
        for (offset, l) in body.lines().enumerate() {
            let Some(rest) = l.trim_start().strip_prefix("grants:") else {
                continue;
            };
            let rest = rest.split(" #").next().unwrap_or(rest);
            let parsed: Result<respawn::workflow::Grants, _> = serde_yaml::from_str(rest);
            assert!(
                parsed.is_ok(),
                "{file}:{}: `grants:{rest}` is not a step's grants: {}",
                line + offset,
                parsed.unwrap_err()
            );
            grants_checked += 1;
        }
    }
    assert!(grants_checked > 0, "no grants example found in the docs");
}
