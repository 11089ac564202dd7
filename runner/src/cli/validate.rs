use std::path::PathBuf;

use clap::Args;
use respawn::host::workflow_plugins::LockPolicy;
use respawn::workflow;
use respawn::workflow::lock::{LockError, LockFile};

use super::{exit, setup};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Path of the workflow YAML.
    pub workflow: PathBuf,
}

/// Checks the file, loads every plugin (checking `respawn.lock` when there is one) and checks each `uses`
/// against the operations the plugin exports.
pub fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    if let Ok(text) = std::fs::read_to_string(&args.workflow)
        && text.lines().any(|l| l.starts_with("fleet:"))
        && !text.lines().any(|l| l.starts_with("steps:"))
    {
        let path = args.workflow.display();
        return Err(super::Usage(format!(
            "{path} is a fleet file (it has `fleet:`); check it with `respawn fleet validate {path}`"
        ))
        .into());
    }
    let loaded = workflow::load_file(&args.workflow)?;
    let lock = match LockFile::read(&loaded.path) {
        Ok(lock) => Some(lock),
        Err(LockError::Missing { .. }) => None,
        Err(e) => return Err(super::Usage(e.to_string()).into()),
    };
    // Validation runs no step, so the host needs no stores or secrets.
    let host = respawn::host::Host::new(respawn::host::RunResources::new(
        loaded.base_dir().to_path_buf(),
    ))?;
    setup::checked_plugins(
        &setup::runtime()?,
        &host,
        &loaded,
        LockPolicy::IfPresent(lock.as_ref()),
    )?;
    let w = &loaded.workflow;
    let locked = if lock.is_some() {
        "plugins match respawn.lock"
    } else {
        "no respawn.lock yet"
    };
    out!(
        "{}: valid ({} {}, sha256 {}; {locked})",
        args.workflow.display(),
        w.name,
        w.version,
        loaded.sha256
    );
    Ok(exit::OK)
}
