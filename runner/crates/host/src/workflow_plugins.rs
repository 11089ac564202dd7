//! Loading every plugin a workflow declares: read the bytes, check them against `respawn.lock`, compile and
//! describe them. The result doubles as the catalog validation uses to check `uses: plugin/operation`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sources::{self, PluginBytes};
use super::{Host, LoadedPlugin};
use respawn_workflow::lock::LockFile;
use respawn_workflow::validate::OperationCatalog;
use respawn_workflow::{Diagnostic, LoadedWorkflow};

/// How the lock file is used.
pub enum LockPolicy<'a> {
    /// Every plugin must match the lock (runs and plans).
    Enforce(&'a LockFile),
    /// Check against the lock when there is one (validation).
    IfPresent(Option<&'a LockFile>),
}

/// The plugins of a workflow, and why any could not be loaded.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    pub failures: BTreeMap<String, String>,
}

impl PluginSet {
    /// Each plugin's source and sha256, as the journal and the report record them.
    pub fn info(&self) -> BTreeMap<String, respawn_report::PluginInfo> {
        self.plugins
            .iter()
            .map(|(alias, p)| {
                (
                    alias.clone(),
                    respawn_report::PluginInfo {
                        source: p.source.clone(),
                        sha256: p.sha256.clone(),
                    },
                )
            })
            .collect()
    }

    /// Failures as diagnostics at each plugin's declaration.
    pub fn diagnostics(&self, loaded: &LoadedWorkflow) -> Vec<Diagnostic> {
        self.failures
            .iter()
            .map(|(alias, why)| {
                loaded.diag(
                    loaded.source.value(&format!("plugins.{alias}")),
                    why.clone(),
                )
            })
            .collect()
    }
}

impl OperationCatalog for PluginSet {
    fn operations(&self, alias: &str) -> Result<Vec<String>, String> {
        match self.plugins.get(alias) {
            Some(p) => Ok(p
                .description
                .operations
                .iter()
                .map(|o| o.name.clone())
                .collect()),
            // Already reported at the plugin's declaration; do not repeat it at every `uses`.
            None => Err("could not be loaded (see its declaration)".to_string()),
        }
    }
}

/// Reads a plugin's bytes from its declared source.
pub async fn read_plugin(source: &str, loaded: &LoadedWorkflow) -> Result<PluginBytes, String> {
    let result = if source.starts_with("builtin:") || source.starts_with("file://") {
        sources::load_local(source, loaded.base_dir())
    } else {
        sources::load_from_store(source, loaded.base_dir()).await
    };
    result.map_err(|e| e.to_string())
}

/// Loads every declared plugin into `host`. Loading continues past failures so that all are reported.
pub async fn load_all(host: &Host, loaded: &LoadedWorkflow, policy: LockPolicy<'_>) -> PluginSet {
    let mut set = PluginSet::default();
    for (alias, source) in &loaded.workflow.plugins {
        let bytes = match read_plugin(source, loaded).await {
            Ok(b) => b,
            Err(why) => {
                set.failures
                    .insert(alias.clone(), format!("plugin `{alias}`: {why}"));
                continue;
            }
        };
        let lock = match &policy {
            LockPolicy::Enforce(lock) => Some(*lock),
            LockPolicy::IfPresent(lock) => *lock,
        };
        if let Some(lock) = lock
            && let Err(e) = lock.check(&loaded.path, alias, source, &bytes.sha256)
        {
            set.failures.insert(alias.clone(), e.to_string());
            continue;
        }
        match host.load(alias, &bytes).await {
            Ok(plugin) => {
                set.plugins.insert(alias.clone(), plugin);
            }
            Err(e) => {
                set.failures.insert(alias.clone(), e.to_string());
            }
        }
    }
    set
}
