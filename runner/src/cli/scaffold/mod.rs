//! What `respawn plugin new` writes: a plugin project that builds and runs on a machine with only the `respawn`
//! binary and the language's toolchain, so nothing in it points into a respawn checkout.
//!
//! Everything a scaffold needs from this repository is compiled into the binary here with `include_str!`:
//!
//! - the WIT of the ABI, `plugins/wit` with its vendored WASI packages (`deps/`), for both languages;
//! - Rust: the SDK (`plugins/sdk`) and the grant checks its mock host shares with the runner
//!   (`runner/crates/sandbox`, which needs only serde), written to `vendor/` as path dependencies whose manifests
//!   are rewritten to stand alone (workspace-inherited keys replaced by their values, the sandbox's path
//!   pointed at its vendored copy);
//! - Python: the SDK (`plugins/python-sdk/respawn_plugin`) and the componentize-py version that builds it.
//!
//! The scaffolds themselves are the templates beside this file (`rust/`, `python/`), with `__NAME__`-style
//! placeholders. A test below fails when a file is added to an embedded directory but not to its table here.

use std::path::{Path, PathBuf};

/// Files of one directory of the repository, embedded: (path relative to that directory, contents).
type Embedded = &'static [(&'static str, &'static str)];

/// Embeds files under a directory given relative to this source file.
macro_rules! embed {
    ($base:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!($base, $path)))),*]
    };
}

/// `plugins/wit`: the ABI and the WASI packages it may import.
const WIT: Embedded = embed!("../../../../plugins/wit/":
    "plugin.wit",
    "provider-http.wit",
    "deps/cli.wit",
    "deps/clocks.wit",
    "deps/filesystem.wit",
    "deps/http.wit",
    "deps/io.wit",
    "deps/random.wit",
    "deps/sockets.wit",
);

/// `plugins/sdk`: the Rust SDK (its manifest is rewritten, see [`standalone_manifest`]).
const RUST_SDK: Embedded = embed!("../../../../plugins/sdk/":
    "Cargo.toml",
    "src/lib.rs",
    "src/host.rs",
    "src/testing/mod.rs",
    "src/testing/host_side.rs",
    "src/testing/native.rs",
    "src/http/mod.rs",
    "src/http/wasi.rs",
    "src/time.rs",
);

/// `runner/crates/sandbox`: the grant checks and limits the Rust SDK's mock host shares with the runner.
const SANDBOX: Embedded = embed!("../../../../runner/crates/sandbox/":
    "Cargo.toml",
    "src/lib.rs",
    "src/exec.rs",
    "src/files.rs",
    "src/http.rs",
    "src/limits.rs",
    "src/secrets.rs",
    "src/state.rs",
    "src/stores.rs",
);

/// `plugins/python-sdk/respawn_plugin`: the Python SDK.
const PYTHON_SDK: Embedded = embed!("../../../../plugins/python-sdk/respawn_plugin/":
    "__init__.py",
    "_backend.py",
    "_params.py",
    "_plugin.py",
    "_types.py",
    "_wasm.py",
    "exec.py",
    "http.py",
    "images.py",
    "log.py",
    "net.py",
    "progress.py",
    "secrets.py",
    "state.py",
    "stores.py",
    "testing.py",
);

/// The workspaces whose `[workspace.package]` and `[workspace.dependencies]` the vendored manifests inherit from.
const PLUGINS_WORKSPACE: &str = include_str!("../../../../plugins/Cargo.toml");
const RUNNER_WORKSPACE: &str = include_str!("../../../../Cargo.toml");

/// The pinned componentize-py, as `componentize-py==X.Y.Z` in this file (tests/setup installs the same).
const PYTHON_BUILD_REQUIREMENTS: &str =
    include_str!("../../../../plugins/python-sdk/build-requirements.txt");

/// The scaffold templates: (path in the scaffold, contents, executable).
const RUST_TEMPLATE: &[(&str, &str, bool)] = &[
    ("Cargo.toml", include_str!("rust/Cargo.toml"), false),
    ("src/lib.rs", include_str!("rust/lib.rs"), false),
    ("build.sh", include_str!("rust/build.sh"), true),
    ("recover.yaml", include_str!("rust/recover.yaml"), false),
    (".gitignore", include_str!("rust/gitignore"), false),
];
const PYTHON_TEMPLATE: &[(&str, &str, bool)] = &[
    ("app.py", include_str!("python/app.py"), false),
    ("test_app.py", include_str!("python/test_app.py"), false),
    ("build.sh", include_str!("python/build.sh"), true),
    ("recover.yaml", include_str!("python/recover.yaml"), false),
    (".gitignore", include_str!("python/gitignore"), false),
];

/// The language of a scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
}

/// The version of componentize-py that Python scaffolds build with.
pub(crate) fn componentize_py_version() -> &'static str {
    PYTHON_BUILD_REQUIREMENTS
        .lines()
        .find_map(|l| l.trim().strip_prefix("componentize-py=="))
        .expect("plugins/python-sdk/build-requirements.txt pins componentize-py")
}

/// Writes the scaffold of plugin `name` into `dir` (which must not exist). With `sdk`, a Rust scaffold depends on
/// that SDK directory instead of a vendored copy. Returns the files written, relative to `dir`.
pub(crate) fn write(
    lang: Lang,
    name: &str,
    dir: &Path,
    sdk: Option<&Path>,
) -> std::io::Result<Vec<PathBuf>> {
    let ident = name.replace('-', "_");
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let fill = |text: &str, sdk_path: &str, sdk_comment: &str| {
        text.replace("__NAME__", name)
            .replace("__IDENT__", &ident)
            .replace("__SDK_PATH__", sdk_path)
            .replace("__SDK_COMMENT__", sdk_comment)
            .replace("__COMPONENTIZE_PY_VERSION__", componentize_py_version())
    };
    match lang {
        Lang::Rust => {
            let (sdk_path, comment) = match sdk {
                Some(path) => (
                    path.display().to_string(),
                    "The SDK of a respawn checkout (`respawn plugin new --sdk`).".to_string(),
                ),
                None => (
                    "vendor/respawn-plugin-sdk".to_string(),
                    format!(
                        "The SDK of respawn {}, vendored: vendor/ holds it, the runner's grant checks its mock host \
                         uses, and the WIT.",
                        env!("CARGO_PKG_VERSION")
                    ),
                ),
            };
            for (path, text, exec) in RUST_TEMPLATE {
                files.push((path.into(), fill(text, &sdk_path, &comment), *exec));
            }
            if sdk.is_none() {
                vendor(&mut files, "vendor/respawn-plugin-sdk", RUST_SDK, |m| {
                    standalone_manifest(
                        m,
                        PLUGINS_WORKSPACE,
                        &[("../../runner/crates/sandbox", "../respawn-sandbox")],
                    )
                });
                vendor(&mut files, "vendor/respawn-sandbox", SANDBOX, |m| {
                    standalone_manifest(m, RUNNER_WORKSPACE, &[])
                });
                vendor(&mut files, "vendor/wit", WIT, str::to_string);
            }
        }
        Lang::Python => {
            for (path, text, exec) in PYTHON_TEMPLATE {
                files.push((path.into(), fill(text, "", ""), *exec));
            }
            vendor(&mut files, "respawn_plugin", PYTHON_SDK, str::to_string);
            vendor(&mut files, "wit", WIT, str::to_string);
        }
    }
    std::fs::create_dir(dir)?;
    let mut written = Vec::new();
    for (path, text, exec) in files {
        let full = dir.join(&path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, text)?;
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// Adds the embedded files under `into`, passing each `Cargo.toml` through `manifest`.
fn vendor(
    files: &mut Vec<(PathBuf, String, bool)>,
    into: &str,
    embedded: Embedded,
    manifest: impl Fn(&str) -> String,
) {
    for (path, text) in embedded {
        let text = if *path == "Cargo.toml" {
            manifest(text)
        } else {
            text.to_string()
        };
        files.push((Path::new(into).join(path), text, false));
    }
}

/// A crate manifest made to stand alone: every `KEY.workspace = true` replaced by `KEY = VALUE` from the
/// `[workspace.package]` or `[workspace.dependencies]` of `workspace`, each path dependency in `paths` renamed,
/// and dev-dependencies dropped (a vendored crate's tests are not run).
fn standalone_manifest(manifest: &str, workspace: &str, paths: &[(&str, &str)]) -> String {
    let inherited = |section: &str, key: &str| -> Option<String> {
        let mut current = "";
        for line in workspace.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                current = line;
            } else if current == section
                && let Some((k, v)) = line.split_once('=')
                && k.trim() == key
            {
                return Some(v.trim().to_string());
            }
        }
        None
    };
    let mut out = String::from(
        "# Vendored by `respawn plugin new`: keys this crate inherited from respawn's workspace are written out.\n",
    );
    let mut section = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        if section.ends_with("dev-dependencies]") {
            continue;
        }
        let mut line = line.to_string();
        if let Some(key) = trimmed.strip_suffix(".workspace = true") {
            let from = if section == "[package]" {
                "[workspace.package]"
            } else {
                "[workspace.dependencies]"
            };
            let value = inherited(from, key).unwrap_or_else(|| {
                panic!("the workspace has no {key} under {from} for a vendored manifest")
            });
            line = format!("{key} = {value}");
        }
        for (from, to) in paths {
            line = line.replace(&format!("path = \"{from}\""), &format!("path = \"{to}\""));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Every file under `dir` (relative paths), but for the subdirectories in `skip`.
    fn files_under(dir: &Path, skip: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                if skip.contains(&rel.as_str()) {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.push(rel);
                }
            }
        }
        found.sort();
        found
    }

    fn names(embedded: Embedded) -> Vec<String> {
        let mut names: Vec<String> = embedded.iter().map(|(p, _)| p.to_string()).collect();
        names.sort();
        names
    }

    /// A file added to an embedded directory must be added to its table, or scaffolds would miss it.
    #[test]
    fn every_file_of_the_embedded_directories_is_embedded() {
        let r = repo();
        assert_eq!(names(WIT), files_under(&r.join("plugins/wit"), &[]));
        assert_eq!(
            names(RUST_SDK),
            files_under(&r.join("plugins/sdk"), &["tests"]),
            "plugins/sdk (its tests/ aside)"
        );
        assert_eq!(
            names(SANDBOX),
            files_under(&r.join("runner/crates/sandbox"), &[]),
        );
        let python: Vec<String> = files_under(&r.join("plugins/python-sdk/respawn_plugin"), &[])
            .into_iter()
            .filter(|f| f.ends_with(".py"))
            .collect();
        assert_eq!(names(PYTHON_SDK), python);
    }

    #[test]
    fn vendored_manifests_stand_alone() {
        let sdk = standalone_manifest(
            RUST_SDK[0].1,
            PLUGINS_WORKSPACE,
            &[("../../runner/crates/sandbox", "../respawn-sandbox")],
        );
        let sandbox = standalone_manifest(SANDBOX[0].1, RUNNER_WORKSPACE, &[]);
        for manifest in [&sdk, &sandbox] {
            assert!(!manifest.contains(".workspace"), "{manifest}");
            assert!(!manifest.contains("../../"), "{manifest}");
            assert!(manifest.contains("edition = \"2024\""), "{manifest}");
            assert!(!manifest.contains("dev-dependencies"), "{manifest}");
        }
        assert!(
            sdk.contains("respawn-sandbox = { path = \"../respawn-sandbox\" }"),
            "{sdk}"
        );
        assert!(sdk.contains("serde = { version = \"1\""), "{sdk}");
        assert!(sandbox.contains("version = \"0.1.0\""), "{sandbox}");
    }

    #[test]
    fn the_componentize_py_version_is_pinned_exactly() {
        let v = componentize_py_version();
        assert!(
            v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{v}"
        );
    }
}
