use std::path::PathBuf;

use clap::Args;
use respawn::workflow::{self, Invalid, validate};

use super::exit;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Path of the workflow YAML.
    pub workflow: PathBuf,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let loaded = workflow::load_file(&args.workflow)?;
    let diagnostics = validate::validate(&loaded, None);
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    println!(
        "{}: valid ({} {}, sha256 {})",
        args.workflow.display(),
        loaded.workflow.name,
        loaded.workflow.version,
        loaded.sha256
    );
    Ok(exit::OK)
}
