use std::path::{Path, PathBuf};

use respawn::host::sources::{self, BUILTIN_PLUGINS, PluginBytes};
use respawn::host::{Host, LoadedPlugin, RunResources};

use super::{PluginCommand, Usage, exit, setup};

pub fn run(command: PluginCommand) -> anyhow::Result<u8> {
    match command {
        PluginCommand::List => list(),
        PluginCommand::Inspect { plugin } => inspect(&plugin),
        PluginCommand::New { name, sdk } => new(&name, sdk),
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

/// Where the SDK lives in this source tree (used when the binary runs from a checkout).
fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk")
}

fn new(name: &str, sdk: Option<PathBuf>) -> anyhow::Result<u8> {
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
    let sdk = sdk.unwrap_or_else(default_sdk);
    let sdk = std::fs::canonicalize(&sdk).map_err(|e| {
        Usage(format!(
            "SDK not found at {} ({e}); pass --sdk PATH to plugins/sdk",
            sdk.display()
        ))
    })?;
    let dir = PathBuf::from(name);
    if dir.exists() {
        return Err(Usage(format!(
            "{} already exists; refusing to overwrite it",
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    let ident = name.replace('-', "_");
    std::fs::write(dir.join("Cargo.toml"), scaffold_manifest(name, &sdk))?;
    std::fs::write(dir.join("src/lib.rs"), scaffold_lib(name))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    out!("created plugin crate {}/", dir.display());
    out!("build it:   cd {name} && cargo build --release --target wasm32-wasip2");
    out!(
        "use it:     plugins: {{ {ident}: file://{name}/target/wasm32-wasip2/release/{ident}.wasm }}"
    );
    out!("then:       respawn lock WORKFLOW");
    Ok(exit::OK)
}

fn scaffold_manifest(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
respawn-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A standalone crate, not part of any enclosing workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
panic = "abort"
"#,
        sdk = sdk.display()
    )
}

fn scaffold_lib(name: &str) -> String {
    format!(
        r##"//! The `{name}` respawn plugin. Build with `cargo build --release --target wasm32-wasip2`.

use respawn_plugin_sdk::{{Context, Failure, Phase, Plugin, PluginInfo, export_plugin, operation}};
use serde::{{Deserialize, Serialize}};

struct Provider;

/// Params of `{name}/greet`, from the step's `with:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetParams {{
    who: String,
}}

#[derive(Serialize)]
struct GreetOutputs {{
    greeting: String,
}}

const GREET_SCHEMA: &str = r#"{{"type":"object","required":["who"],"properties":{{"who":{{"type":"string"}}}},"additionalProperties":false}}"#;

impl Plugin for Provider {{
    fn describe() -> PluginInfo {{
        PluginInfo::new("{name}", env!("CARGO_PKG_VERSION")).operation(operation("greet", "Say hello", GREET_SCHEMA))
    }}

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {{
        match ctx.operation.as_str() {{
            "greet" => {{
                let p: GreetParams = respawn_plugin_sdk::params(params)?;
                let greeting = match ctx.phase {{
                    // Plan must have no side effects: say what apply would do.
                    Phase::Plan => format!("would greet {{}}", p.who),
                    // Apply is idempotent; destroy must succeed when there is nothing to undo.
                    Phase::Apply | Phase::Verify | Phase::Destroy => format!("hello, {{}}", p.who),
                }};
                respawn_plugin_sdk::log::info(&greeting);
                respawn_plugin_sdk::outputs(&GreetOutputs {{ greeting }})
            }}
            _ => Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        }}
    }}
}}

export_plugin!(Provider);
"##
    )
}
