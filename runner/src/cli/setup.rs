//! Shared start-up of commands that run plugins: a tokio runtime, the run's resources and its plugins.

use std::collections::BTreeMap;
use std::sync::Arc;

use respawn::data::StoreSet;
use respawn::host::workflow_plugins::{self, LockPolicy, PluginSet};
use respawn::host::{Host, RunResources};
use respawn::workflow::LoadedWorkflow;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Secret values from the runner's environment; missing ones are simply absent (a step that asks gets
/// `not-found`, a step that is not granted gets `denied`).
/// Every value is kept out of the logs from here on.
pub fn read_secrets(loaded: &LoadedWorkflow) -> BTreeMap<String, String> {
    let secrets: BTreeMap<String, String> = loaded
        .workflow
        .secrets
        .iter()
        .filter_map(|(name, spec)| std::env::var(&spec.env).ok().map(|v| (name.clone(), v)))
        .collect();
    respawn::ui::redact_in_logs(secrets.values());
    secrets
}

/// A secret shorter than this is refused: replacing it everywhere it occurs would mangle unrelated text.
pub const MIN_SECRET_CHARS: usize = 4;

/// Refuses a secret value too short to redact safely, naming the secret and its variable (never the value).
pub fn check_secrets(
    loaded: &LoadedWorkflow,
    secrets: &BTreeMap<String, String>,
) -> Result<(), super::Usage> {
    for (name, value) in secrets {
        if value.chars().count() < MIN_SECRET_CHARS {
            let var = loaded
                .workflow
                .secrets
                .get(name)
                .map_or("?", |s| s.env.as_str());
            return Err(super::Usage(format!(
                "secret `{name}` (from ${var}) is shorter than {MIN_SECRET_CHARS} characters: too short to keep \
                 out of logs, the journal and reports without mangling other text"
            )));
        }
    }
    Ok(())
}

/// Refuses a param whose value holds a secret's value, naming both (never the value). Params are journaled
/// byte-exact in `run-started` (resume needs them as given) and printed in reports, so a secret passed as a param
/// would be kept in clear; secrets reach plugins only through `secrets:` and a step's grant.
pub fn check_params_hold_no_secret(
    params: &BTreeMap<String, serde_json::Value>,
    secrets: &BTreeMap<String, String>,
) -> Result<(), super::Usage> {
    for (param, value) in params {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some((secret, _)) = secrets.iter().find(|(_, v)| text.contains(v.as_str())) {
            return Err(super::Usage(format!(
                "param `{param}` holds the value of secret `{secret}`: params are journaled and reported as given, \
                 so a secret must reach a step through `secrets:` and its grant, never through a param"
            )));
        }
    }
    Ok(())
}

/// A host for `loaded`; with `create_stores` false, nothing is created on disk.
pub fn host_for(loaded: &LoadedWorkflow, create_stores: bool) -> anyhow::Result<Host> {
    host_with_progress(loaded, create_stores, None)
}

/// Like [`host_for`], reporting plugins' progress (data copies) to `progress`.
pub fn host_with_progress(
    loaded: &LoadedWorkflow,
    create_stores: bool,
    progress: Option<respawn::host::ProgressSink>,
) -> anyhow::Result<Host> {
    let mut run = RunResources::new(loaded.base_dir().to_path_buf());
    run.progress = progress;
    run.stores = StoreSet::open_with(&loaded.workflow.stores, loaded.base_dir(), create_stores)?;
    run.secrets = Arc::new(read_secrets(loaded));
    Ok(Host::new(run)?)
}

/// A host for a run that journals: stores created, `secrets` as read at the start, state writes, services
/// and restored images recorded in `journal`. The services of a failover, or a kept drill, outlive the runner.
pub fn host_for_run(
    loaded: &LoadedWorkflow,
    progress: Option<respawn::host::ProgressSink>,
    secrets: BTreeMap<String, String>,
    journal: Option<Arc<respawn::journal::Journal>>,
    (mode, keep): (respawn::engine::Mode, bool),
) -> anyhow::Result<Host> {
    let mut run = RunResources::new(loaded.base_dir().to_path_buf());
    run.progress = progress;
    run.stores = StoreSet::open_with(&loaded.workflow.stores, loaded.base_dir(), true)?;
    run.secrets = Arc::new(secrets);
    run.journal = journal;
    run.services_outlive = mode == respawn::engine::Mode::Failover || keep;
    Ok(Host::new(run)?)
}

/// Loads every plugin and validates the workflow against what they export; all problems, sorted by position.
pub fn checked_plugins(
    runtime: &tokio::runtime::Runtime,
    host: &Host,
    loaded: &LoadedWorkflow,
    policy: LockPolicy<'_>,
) -> Result<PluginSet, respawn::workflow::Invalid> {
    let plugins = runtime.block_on(load_plugins(host, loaded, policy));
    let mut diagnostics = respawn::workflow::validate::validate(loaded, Some(&plugins));
    diagnostics.extend(plugins.diagnostics(loaded));
    diagnostics.extend(respawn::host::params_check::diagnostics(&plugins, loaded));
    if diagnostics.is_empty() {
        return Ok(plugins);
    }
    diagnostics.sort_by_key(|d| (d.pos.line, d.pos.col));
    Err(respawn::workflow::Invalid { diagnostics })
}

async fn load_plugins(host: &Host, loaded: &LoadedWorkflow, policy: LockPolicy<'_>) -> PluginSet {
    workflow_plugins::load_all(host, loaded, policy).await
}
