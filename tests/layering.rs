//! The runner's layering (docs/architecture.md), checked against Cargo's own resolution: each crate depends only
//! on the crates below it, and the pure ones pull in no async runtime, WebAssembly engine or object store, not
//! even through a dependency of a dependency.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crates of the runner from the ground up. A crate may use (in code, tests or build scripts) only crates
/// that come before it here.
const LAYERS: &[&str] = &[
    "respawn-sandbox",
    "respawn-workflow",
    "respawn-data",
    "respawn-report",
    "respawn-journal",
    "respawn-engine",
    "respawn-host",
];

/// Heavy crates and the only respawn crates allowed to have them anywhere in their dependency tree.
const CONFINED: &[(&str, &[&str])] = &[
    ("wasmtime", &["respawn-host"]),
    // The engine reaches the state store only through the journal's handle; it never names object_store itself.
    (
        "object_store",
        &[
            "respawn-data",
            "respawn-journal",
            "respawn-engine",
            "respawn-host",
        ],
    ),
    (
        "tokio",
        &[
            "respawn-data",
            "respawn-journal",
            "respawn-engine",
            "respawn-host",
        ],
    ),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
}

/// Every package in `package`'s resolved tree (normal and build dependencies, as a user of the crate gets them).
fn tree(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args(["tree", "--offline", "--locked", "-e", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}", "-p", package])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The respawn crates `package` names directly in its manifest, of any dependency kind.
fn direct_respawn_deps(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args([
            "metadata",
            "--offline",
            "--format-version",
            "1",
            "--no-deps",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let pkg = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package} in the workspace"));
    pkg["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .filter(|n| n.starts_with("respawn-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn each_crate_uses_only_the_crates_below_it() {
    let mut problems = Vec::new();
    for (level, crate_name) in LAYERS.iter().enumerate() {
        let below = &LAYERS[..level];
        for dep in direct_respawn_deps(crate_name) {
            if !below.contains(&dep.as_str()) {
                problems.push(format!(
                    "{crate_name} depends on {dep}, which is not below it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn heavy_dependencies_stay_in_their_crates() {
    let mut problems = Vec::new();
    for crate_name in LAYERS {
        let deps = tree(crate_name);
        for (heavy, owners) in CONFINED {
            if deps.contains(*heavy) && !owners.contains(crate_name) {
                problems.push(format!("{crate_name} pulls in {heavy}"));
            }
            if *heavy == "object_store"
                && crate_name != &"respawn-data"
                && direct_external(crate_name, heavy)
            {
                problems.push(format!(
                    "{crate_name} names object_store itself; only respawn-data opens stores"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether `package`'s own manifest names `dep`.
fn direct_external(package: &str, dep: &str) -> bool {
    let manifest = repo()
        .join("runner/crates")
        .join(package.trim_start_matches("respawn-"))
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("read a crate manifest");
    text.lines()
        .any(|l| l.split(['.', ' ', '=']).next() == Some(dep))
}

#[test]
fn the_pure_crates_have_no_runtime_at_all() {
    for pure in ["respawn-sandbox", "respawn-workflow"] {
        let deps = tree(pure);
        for forbidden in ["tokio", "wasmtime", "object_store", "reqwest", "futures"] {
            assert!(
                !deps.contains(forbidden),
                "{pure} must stay usable by an editor plugin, a linter or the plugin SDK, yet it pulls in {forbidden}"
            );
        }
    }
}

#[test]
fn every_runner_crate_has_a_place_in_the_layers() {
    let dir = repo().join("runner/crates");
    let mut unplaced = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read runner/crates") {
        let name = format!(
            "respawn-{}",
            entry.expect("dir entry").file_name().to_string_lossy()
        );
        if !LAYERS.contains(&name.as_str()) {
            unplaced.push(name);
        }
    }
    assert!(
        unplaced.is_empty(),
        "add these crates to LAYERS (and docs/architecture.md): {unplaced:?}"
    );
}
