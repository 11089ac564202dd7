//! Builds the plugins under `plugins/` for wasm32-wasip2 and embeds the builtin ones.
//!
//! Follows the recipe of wasmtime's test-programs artifacts: a nested `cargo build` with a target directory of
//! its own (so it never contends for the outer build's lock), a scrubbed environment (so the outer build's flags
//! and clippy's wrapper do not leak into the wasm build), and `rerun-if-changed` taken from the dep-info files.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins compiled into the binary as `builtin:NAME@VERSION`: (name, crate artifact).
const BUILTIN: &[(&str, &str)] = &[
    ("aws", "respawn_plugin_aws"),
    ("check", "respawn_plugin_check"),
    ("local", "respawn_plugin_local"),
    ("postgres", "respawn_plugin_postgres"),
    ("registry", "respawn_plugin_registry"),
];
/// Plugins used only by tests: built, never embedded; their directory is exported as RESPAWN_TEST_PLUGINS.
const TESTING: &[&str] = &[
    "respawn_testing_echo",
    "respawn_testing_hostile",
    "respawn_testing_liar",
    "respawn_testing_old_abi",
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // runner/crates/host -> the repository root, where plugins/ and target/ live.
    let root = manifest_dir
        .ancestors()
        .nth(3)
        .expect("runner/crates/host is three levels below the repository root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for watched in ["Cargo.toml", "Cargo.lock", "wit"] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--target", TARGET, "--workspace"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS"
            || key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC"
            || key == "RUSTDOC";
        if leaks {
            cmd.env_remove(&key);
        }
    }
    // Reproducible across checkouts: paths baked into panic messages must not depend on where the repository or
    // the cargo home lives, or a respawn.lock written on one machine would not match a build on another.
    let cargo_home = env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", env::var("HOME").unwrap_or_default()));
    let flags = [
        format!("--remap-path-prefix={}=/respawn/plugins", plugins.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
    ];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for the plugins: {e}"));
    if !status.success() {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == TARGET)
            })
            .unwrap_or(true);
        if !installed {
            panic!(
                "building plugins needs the {TARGET} target: run `rustup target add {TARGET}` (or `bash tests/setup`)"
            );
        }
        panic!(
            "building the plugins under {} failed (see the cargo output above)",
            plugins.display()
        );
    }

    let artifacts = target_dir.join(TARGET).join("release");
    let mut table = String::from(
        "/// Builtin plugins embedded at build time: (name, version, component bytes).\n",
    );
    table.push_str("pub static BUILTIN_PLUGINS: &[(&str, &str, &[u8])] = &[\n");
    for (name, artifact) in BUILTIN {
        let wasm = artifacts.join(format!("{artifact}.wasm"));
        let copy = out_dir.join(format!("{name}.wasm"));
        fs::copy(&wasm, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", wasm.display()));
        let version = crate_version(&plugins.join(name).join("Cargo.toml"));
        table.push_str(&format!(
            "    ({name:?}, {version:?}, include_bytes!({:?})),\n",
            copy.display().to_string()
        ));
        watch_dep_info(&artifacts.join(format!("{artifact}.d")));
    }
    table.push_str("];\n");
    fs::write(out_dir.join("builtin_plugins.rs"), table).expect("write builtin table");

    for artifact in TESTING {
        watch_dep_info(&artifacts.join(format!("{artifact}.d")));
    }
    println!(
        "cargo:rustc-env=RESPAWN_TEST_PLUGINS={}",
        artifacts.display()
    );
}

/// The `version = "…"` of a plugin crate's manifest.
fn crate_version(manifest: &Path) -> String {
    let text =
        fs::read_to_string(manifest).unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
        })
        .unwrap_or_else(|| panic!("{} has no version", manifest.display()))
        .to_string()
}

/// Emits rerun-if-changed for every source file listed in a cargo dep-info file.
fn watch_dep_info(dep_info: &Path) {
    let Ok(text) = fs::read_to_string(dep_info) else {
        return;
    };
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        // Paths are space-separated; spaces inside paths are escaped as "\ ".
        let deps = deps.replace("\\ ", "\u{0}");
        for dep in deps.split_whitespace() {
            println!("cargo:rerun-if-changed={}", dep.replace('\u{0}', " "));
        }
    }
}
