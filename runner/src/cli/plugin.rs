use std::path::{Path, PathBuf};

use respawn::host::sources::{self, BUILTIN_PLUGINS, PluginBytes};
use respawn::host::{Host, LoadedPlugin, RunResources};

use super::scaffold::{self, Lang};
use super::{PluginCommand, Usage, exit, setup};

pub fn run(command: PluginCommand) -> anyhow::Result<u8> {
    match command {
        PluginCommand::List => list(),
        PluginCommand::Inspect { plugin } => inspect(&plugin),
        PluginCommand::New { name, lang, sdk } => new(&name, lang, sdk),
    }
}

fn describe(source: &str) -> anyhow::Result<std::sync::Arc<LoadedPlugin>> {
    let cwd = std::env::current_dir()?;
    let bytes = if source.starts_with("builtin:") || source.starts_with("file://") {
        sources::load_local(source, &cwd)?
    } else {
        // A bare path is taken as a file.
        let path = Path::new(source);
        PluginBytes::new(
            &format!("file://{}", path.display()),
            std::fs::read(path).map_err(|e| Usage(format!("{source}: {e}")))?,
        )?
    };
    let host = Host::new(RunResources::new(cwd))?;
    Ok(setup::runtime()?.block_on(host.load("plugin", &bytes))?)
}

fn list() -> anyhow::Result<u8> {
    out!(
        "{:<10} {:<10} {:<66} operations",
        "builtin",
        "version",
        "sha256"
    );
    for (name, version, _) in BUILTIN_PLUGINS {
        let p = describe(&format!("builtin:{name}@{version}"))?;
        let ops: Vec<&str> = p
            .description
            .operations
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        out!(
            "{name:<10} {version:<10} {:<66} {}",
            p.sha256,
            ops.join(", ")
        );
    }
    Ok(exit::OK)
}

fn inspect(source: &str) -> anyhow::Result<u8> {
    let p = describe(source)?;
    let d = &p.description;
    out!("name          {}", d.name);
    out!("version       {}", d.version);
    out!("source        {}", p.source);
    out!("sha256        {}", p.sha256);
    out!(
        "capabilities  {}",
        if d.capabilities.is_empty() {
            "none".into()
        } else {
            d.capabilities.join(", ")
        }
    );
    out!("operations");
    for op in &d.operations {
        out!("  {}/{}  {}", d.name, op.name, op.description);
        let schema = serde_json::to_string_pretty(&op.params_schema)?;
        for line in schema.lines() {
            out!("      {line}");
        }
    }
    Ok(exit::OK)
}

fn new(name: &str, lang: Lang, sdk: Option<PathBuf>) -> anyhow::Result<u8> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(Usage(format!(
            "plugin name `{name}` must be lowercase letters, digits and `-`, starting with a letter"
        ))
        .into());
    }
    let sdk = match (lang, sdk) {
        (_, None) => None,
        (Lang::Rust, Some(sdk)) => Some(std::fs::canonicalize(&sdk).map_err(|e| {
            Usage(format!(
                "--sdk {}: {e}; give the plugins/sdk directory of a respawn checkout, or leave --sdk out to \
                 vendor the SDK",
                sdk.display()
            ))
        })?),
        (Lang::Python, Some(_)) => {
            return Err(Usage(
                "--sdk is for Rust plugins; a Python scaffold always carries its SDK (respawn_plugin/)".into(),
            )
            .into());
        }
    };
    let dir = PathBuf::from(name);
    if dir.exists() {
        return Err(Usage(format!(
            "{} already exists; refusing to overwrite it",
            dir.display()
        ))
        .into());
    }
    scaffold::write(lang, name, &dir, sdk.as_deref())
        .map_err(|e| anyhow::anyhow!("writing the scaffold into {}: {e}", dir.display()))?;
    let ident = name.replace('-', "_");
    match lang {
        Lang::Rust => {
            let vendored = if sdk.is_some() {
                "depends on the SDK at --sdk"
            } else {
                "SDK vendored in vendor/"
            };
            out!("created Rust plugin {name}/ ({vendored})");
            out!("test it:    cd {name} && cargo test");
            out!(
                "build it:   ./build.sh     (cargo build --release --target wasm32-wasip2 -> {name}.wasm)"
            );
        }
        Lang::Python => {
            out!("created Python plugin {name}/ (SDK in respawn_plugin/, WIT in wit/)");
            out!("test it:    cd {name} && python3 -m unittest");
            out!(
                "build it:   ./build.sh     (componentize-py {} -> {name}.wasm)",
                scaffold::componentize_py_version()
            );
        }
    }
    out!("run it:     respawn lock recover.yaml && respawn drill recover.yaml");
    out!(
        "use it:     plugins: {{ {ident}: file://{name}/{name}.wasm }}   (relative to the workflow)"
    );
    Ok(exit::OK)
}
