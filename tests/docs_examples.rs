//! Every YAML example in README.md and docs/ stays true: a whole workflow passes `respawn validate`, a fragment
//! is valid YAML, and a `grants:` line parses as a step's grants.

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

/// Whole workflows whose plugins are all builtin validate as they are written.
#[test]
fn workflow_examples_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut validated = 0;
    for (file, line, body) in yaml_blocks() {
        if !body.lines().any(|l| l.starts_with("respawn: 1")) {
            continue;
        }
        // A plugin built by the reader (docs/writing-plugins.md) is exercised by the scaffold test instead.
        if body.contains("file://") && body.contains(".wasm") {
            continue;
        }
        let path = dir.path().join(format!("example-{validated}.yaml"));
        std::fs::write(&path, &body).expect("write the example");
        let out = Command::new(bin())
            .arg("validate")
            .arg(&path)
            .output()
            .expect("run respawn validate");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}:{line}: the example does not validate:\n{}",
            text(&out)
        );
        validated += 1;
    }
    assert!(validated > 0, "no workflow example found in the docs");
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
