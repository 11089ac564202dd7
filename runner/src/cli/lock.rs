use std::collections::BTreeMap;

use respawn::host::workflow_plugins::read_plugin;
use respawn::workflow::lock::{LockFile, LockedPlugin};
use respawn::workflow::{self, Invalid, validate};

use super::{WorkflowArg, exit, setup};

/// Pins every plugin of a workflow by sha256 in respawn.lock. Each plugin is loaded and described first, so a
/// file that is not a working plugin is never pinned.
pub fn run(args: WorkflowArg) -> anyhow::Result<u8> {
    let loaded = workflow::load_file(&args.workflow)?;
    let diagnostics = validate::validate(&loaded, None);
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    let host = setup::host_for(&loaded, false)?;
    let runtime = setup::runtime()?;
    let mut pinned = BTreeMap::new();
    let mut problems = Vec::new();
    for (alias, source) in &loaded.workflow.plugins {
        let bytes = match runtime.block_on(read_plugin(source, &loaded)) {
            Ok(b) => b,
            Err(why) => {
                problems.push(loaded.diag(loaded.source.value(&format!("plugins.{alias}")), why));
                continue;
            }
        };
        if let Err(e) = runtime.block_on(host.load(alias, &bytes)) {
            problems.push(loaded.diag(
                loaded.source.value(&format!("plugins.{alias}")),
                e.to_string(),
            ));
            continue;
        }
        pinned.insert(
            alias.clone(),
            LockedPlugin {
                source: source.clone(),
                sha256: bytes.sha256.clone(),
            },
        );
    }
    if !problems.is_empty() {
        return Err(Invalid {
            diagnostics: problems,
        }
        .into());
    }
    // One lock file per directory: keep the pins of other workflows beside this one.
    let previous = LockFile::read(&loaded.path).ok();
    let mut merged = previous
        .as_ref()
        .map(|l| l.plugins.clone())
        .unwrap_or_default();
    merged.extend(pinned.clone());
    let lock = LockFile::new(merged);
    let path = lock.write(&loaded.path)?;
    for (alias, p) in &pinned {
        let change = match previous.as_ref().and_then(|l| l.plugins.get(alias)) {
            None => "added",
            Some(old) if old == p => "unchanged",
            Some(_) => "updated",
        };
        out!("{alias:<12} sha256:{}  {}  ({change})", p.sha256, p.source);
    }
    out!("wrote {}", path.display());
    Ok(exit::OK)
}
