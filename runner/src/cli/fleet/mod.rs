//! `respawn fleet`: many recovery workflows run as one fleet run (DESIGN.md §11, docs/fleet.md).
//!
//! A fleet run has an id; member N's run is `FLEET_RUN.N` (`FLEET_RUN.N.K` for its K-th run when an earlier one
//! was interrupted and torn down). That id is all a restarted process needs to find its run in the shared state
//! store and resume it instead of starting a second one. The fleet file the run was started with is kept at
//! `fleets/FLEET_RUN/fleet.yaml`, so `fleet report` needs nothing but the id and the store.

mod k8s;
mod local;
mod member;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use respawn::data::object_store::{self, ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use respawn::workflow::fleet::{self as fleet_file, LoadedFleet, Member, WorkflowSource};
use respawn::workflow::{Diagnostic, Invalid, Pos};

use super::{Usage, exit};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Check a fleet file, every member's workflow and its respawn.lock; exit 0 when valid, 2 with every
    /// problem listed as file:line:col.
    Validate { fleet: PathBuf },
    /// Run one member: start its run, or find it and resume it after a restart (a Kubernetes Indexed Job's pod).
    Run(member::RunArgs),
    /// Run every member on this machine, K at a time, restarting them as a Kubernetes Indexed Job would.
    Local(local::LocalArgs),
    /// Write the Kubernetes Indexed Job manifest that runs the fleet (docs/fleet.md).
    K8s(k8s::K8sArgs),
    /// One report over every member of a fleet run: JSON, Markdown or JUnit, failures first.
    Report(report::ReportArgs),
}

pub fn run(command: FleetCommand) -> anyhow::Result<u8> {
    match command {
        FleetCommand::Validate { fleet } => validate(&fleet),
        FleetCommand::Run(args) => member::run(args),
        FleetCommand::Local(args) => local::run(args),
        FleetCommand::K8s(args) => k8s::run(args),
        FleetCommand::Report(args) => report::run(args),
    }
}

/// Options every fleet command that reaches the state store shares.
#[derive(Debug, Args, Clone)]
pub struct FleetRunId {
    /// The fleet run's id: the same for every member, so each finds its own run (from `fleet k8s` or `fleet
    /// local`, or any id of letters, digits, `-`, `_`, `.`).
    #[arg(long, env = "RESPAWN_FLEET_RUN", value_name = "ID")]
    pub fleet_run: String,
}

/// Longest fleet run id: member run ids add `.INDEX.RUN` and must stay within a run id's 128 characters.
const MAX_FLEET_RUN_ID: usize = 96;

pub fn check_fleet_run_id(id: &str) -> Result<(), Usage> {
    respawn::journal::check_run_id(id).map_err(|e| Usage(format!("--fleet-run: {e}")))?;
    if id.len() > MAX_FLEET_RUN_ID {
        return Err(Usage(format!(
            "--fleet-run `{id}` is {} characters; at most {MAX_FLEET_RUN_ID}",
            id.len()
        )));
    }
    Ok(())
}

/// Where a fleet run's fleet file is kept in the state store.
fn fleet_key(fleet_run: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("fleets/{fleet_run}/fleet.yaml"))
}

/// Loads a fleet file and checks it on its own (not its members' workflows).
pub fn load_checked(path: &Path) -> anyhow::Result<LoadedFleet> {
    let loaded = fleet_file::load_file(path)?;
    let diagnostics = fleet_file::validate(&loaded);
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    Ok(loaded)
}

/// Records the fleet file of `fleet_run` in the store, once: the first member to start writes it, and every
/// other member (and every restart) must bring the same bytes, or it is refused: a fleet run is one fleet.
pub async fn record_fleet(
    store: &Arc<dyn ObjectStore>,
    fleet_run: &str,
    loaded: &LoadedFleet,
) -> anyhow::Result<()> {
    let key = fleet_key(fleet_run);
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(&key, loaded.bytes.clone().into(), options)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let recorded = recorded_fleet(store, fleet_run).await?;
            if recorded.sha256 != loaded.sha256 {
                return Err(Usage(format!(
                    "fleet run `{fleet_run}` was started with another fleet file (sha256 {}); {} has sha256 {}. \
                     Start a new fleet run for a changed fleet",
                    recorded.sha256,
                    loaded.path.display(),
                    loaded.sha256
                ))
                .into());
            }
            Ok(())
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!(
            "recording the fleet file of fleet run `{fleet_run}`"
        ))),
    }
}

/// The fleet file a fleet run was started with, from the state store.
pub async fn recorded_fleet(
    store: &Arc<dyn ObjectStore>,
    fleet_run: &str,
) -> anyhow::Result<LoadedFleet> {
    let key = fleet_key(fleet_run);
    let bytes = match store.get(&key).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Usage(format!(
                "no fleet run `{fleet_run}` in the state store (nothing at {key}); `respawn runs` lists runs, \
                 member runs are named FLEET_RUN.INDEX"
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let name = format!("fleets/{fleet_run}/fleet.yaml");
    Ok(fleet_file::load_bytes(Path::new(&name), bytes.to_vec())?)
}

/// A member's workflow as a local file, with its `respawn.lock` beside it: the path itself, or a copy of the
/// store's objects under `into`. A pinned `sha256` is checked here, before anything runs.
pub fn member_workflow(
    runtime: &tokio::runtime::Runtime,
    loaded: &LoadedFleet,
    index: usize,
    into: &Path,
) -> Result<PathBuf, Invalid> {
    let m: &Member = &loaded.fleet.members[index];
    let at = |message: String| {
        Invalid::one(Diagnostic::new(
            &loaded.path,
            loaded.source.value(&format!("members[{index}].workflow")),
            format!("member `{}`: {message}", m.name),
        ))
    };
    let path = match m.source(loaded.base_dir()) {
        WorkflowSource::Path(path) if !path.is_file() => {
            return Err(at(format!("no workflow file at {}", path.display())));
        }
        WorkflowSource::Path(path) => path,
        WorkflowSource::Store { store_url, key } => {
            let store = respawn::data::open_store(&store_url, loaded.base_dir())
                .map_err(|e| at(format!("store `{store_url}`: {e}")))?;
            std::fs::create_dir_all(into)
                .map_err(|e| at(format!("creating {}: {e}", into.display())))?;
            for (object, required) in [(key.as_str(), true), ("respawn.lock", false)] {
                let got = runtime.block_on(async {
                    match store.get(&object.into()).await {
                        Ok(got) => got.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) if !required => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                match got {
                    Ok(Some(bytes)) => std::fs::write(into.join(object), &bytes)
                        .map_err(|e| at(format!("writing {}: {e}", into.display())))?,
                    Ok(None) => {}
                    Err(e) => return Err(at(format!("fetching `{store_url}/{object}`: {e}"))),
                }
            }
            into.join(key)
        }
    };
    if let Some(pinned) = &m.sha256 {
        let bytes = std::fs::read(&path).map_err(|e| at(format!("{}: {e}", path.display())))?;
        let found = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if &found != pinned {
            return Err(Invalid::one(Diagnostic::new(
                &loaded.path,
                loaded.source.value(&format!("members[{index}].sha256")),
                format!(
                    "member `{}`: {} has sha256 {found}, not the {pinned} this fleet pins",
                    m.name, m.workflow
                ),
            )));
        }
    }
    Ok(path)
}

/// `respawn fleet validate`: the fleet file, then each member's workflow, plugins, lock and params, every
/// problem at its file:line:col.
fn validate(path: &Path) -> anyhow::Result<u8> {
    let loaded = fleet_file::load_file(path)?;
    let mut diagnostics = fleet_file::validate(&loaded);
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    let runtime = super::setup::runtime()?;
    let scratch =
        std::env::temp_dir().join(format!("respawn-fleet-validate-{}", std::process::id()));
    let mut lines = Vec::new();
    for (index, m) in loaded.fleet.members.iter().enumerate() {
        match check_member(&runtime, &loaded, index, &scratch.join(index.to_string())) {
            Ok(line) => lines.push(format!("  {index} {}: {line}", m.name)),
            Err(e) => diagnostics.extend(e.diagnostics),
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !diagnostics.is_empty() {
        return Err(Invalid { diagnostics }.into());
    }
    let f = &loaded.fleet;
    out!(
        "{}: valid ({} {}, {} members, sha256 {})",
        path.display(),
        f.fleet,
        f.version,
        f.members.len(),
        loaded.sha256
    );
    for line in lines {
        out!("{line}");
    }
    Ok(exit::OK)
}

/// One member's workflow checked as `respawn validate` and `drill` would: valid, plugins matching its lock
/// (which must exist), params resolving. Problems in the member's params point into the fleet file.
fn check_member(
    runtime: &tokio::runtime::Runtime,
    loaded: &LoadedFleet,
    index: usize,
    scratch: &Path,
) -> Result<String, Invalid> {
    use respawn::host::workflow_plugins::LockPolicy;
    use respawn::workflow::lock::LockFile;
    let m = &loaded.fleet.members[index];
    let path = member_workflow(runtime, loaded, index, scratch)?;
    let workflow = respawn::workflow::load_file(&path)?;
    let lock = LockFile::read(&workflow.path).map_err(|e| {
        Invalid::one(Diagnostic::new(
            &loaded.path,
            loaded.source.value(&format!("members[{index}].workflow")),
            format!("member `{}`: {e}", m.name),
        ))
    })?;
    let host = respawn::host::Host::new(respawn::host::RunResources::new(
        workflow.base_dir().to_path_buf(),
    ))
    .map_err(|e| {
        Invalid::one(Diagnostic::new(
            &path,
            Pos::START,
            format!("starting the plugin host: {e}"),
        ))
    })?;
    super::setup::checked_plugins(runtime, &host, &workflow, LockPolicy::Enforce(&lock))?;
    member_params(loaded, index, &workflow)?;
    Ok(format!(
        "{} {} ({}, sha256 {}; plugins match respawn.lock)",
        workflow.workflow.name,
        workflow.workflow.version,
        m.mode.as_str(),
        workflow.sha256
    ))
}

/// A member's params resolved against its workflow; a problem points at the member's params in the fleet file.
pub fn member_params(
    loaded: &LoadedFleet,
    index: usize,
    workflow: &respawn::workflow::LoadedWorkflow,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Invalid> {
    let m = &loaded.fleet.members[index];
    respawn::workflow::params::resolve(workflow, &m.param_assignments()).map_err(|e| Invalid {
        diagnostics: e
            .diagnostics
            .into_iter()
            .map(|d| {
                let param = d
                    .message
                    .strip_prefix("--param ")
                    .and_then(|rest| rest.split(['=', ':']).next())
                    .map(str::to_string);
                let pos = match &param {
                    Some(p) if m.params.contains_key(p) => {
                        loaded.source.key(&format!("members[{index}].params.{p}"))
                    }
                    _ => loaded.source.value(&format!("members[{index}]")),
                };
                Diagnostic::new(
                    &loaded.path,
                    pos,
                    format!("member `{}` ({}): {}", m.name, d.file.display(), d.message),
                )
            })
            .collect(),
    })
}
