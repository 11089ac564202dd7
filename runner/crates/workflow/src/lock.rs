//! `respawn.lock`: every plugin of a workflow pinned by sha256, written beside the workflow by `respawn lock`
//! and checked by every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "respawn.lock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Lock format version.
    pub version: u32,
    /// Alias -> pinned plugin.
    pub plugins: BTreeMap<String, LockedPlugin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlugin {
    pub source: String,
    /// Lowercase hex sha256 of the component bytes.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: no lock file; run `respawn lock {workflow}` to pin the plugins")]
    Missing { path: PathBuf, workflow: PathBuf },
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("plugin `{alias}` ({source_url}) is not in {path}; run `respawn lock` again")]
    Unpinned {
        alias: String,
        source_url: String,
        path: PathBuf,
    },
    #[error(
        "plugin `{alias}` ({source_url}) does not match {path}: locked sha256:{locked}, found sha256:{found}; \
         refusing to run it"
    )]
    Mismatch {
        alias: String,
        source_url: String,
        path: PathBuf,
        locked: String,
        found: String,
    },
    #[error(
        "plugin `{alias}`: {path} pins source {locked}, but the workflow says {declared}; run `respawn lock` again"
    )]
    SourceChanged {
        alias: String,
        path: PathBuf,
        locked: String,
        declared: String,
    },
}

/// The lock file path of a workflow.
pub fn lock_path(workflow: &Path) -> PathBuf {
    workflow.parent().unwrap_or(Path::new(".")).join(LOCK_FILE)
}

impl LockFile {
    pub fn new(plugins: BTreeMap<String, LockedPlugin>) -> LockFile {
        LockFile {
            version: 1,
            plugins,
        }
    }

    pub fn read(workflow: &Path) -> Result<LockFile, LockError> {
        let path = lock_path(workflow);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LockError::Missing {
                    path,
                    workflow: workflow.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(LockError::Unreadable {
                    path,
                    message: e.to_string(),
                });
            }
        };
        serde_yaml::from_str(&text).map_err(|e| LockError::Unreadable {
            path,
            message: e.to_string(),
        })
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a lock file.
    pub fn write(&self, workflow: &Path) -> std::io::Result<PathBuf> {
        let path = lock_path(workflow);
        let mut text = String::from(
            "# Plugin digests pinned by `respawn lock`. Every run refuses a plugin that differs.\n",
        );
        text.push_str(&serde_yaml::to_string(self).map_err(std::io::Error::other)?);
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Checks one plugin's actual digest against the lock.
    pub fn check(
        &self,
        workflow: &Path,
        alias: &str,
        source: &str,
        found: &str,
    ) -> Result<(), LockError> {
        let path = lock_path(workflow);
        let Some(locked) = self.plugins.get(alias) else {
            return Err(LockError::Unpinned {
                alias: alias.into(),
                source_url: source.into(),
                path,
            });
        };
        if locked.source != source {
            return Err(LockError::SourceChanged {
                alias: alias.into(),
                path,
                locked: locked.source.clone(),
                declared: source.into(),
            });
        }
        if !locked.sha256.eq_ignore_ascii_case(found) {
            return Err(LockError::Mismatch {
                alias: alias.into(),
                source_url: source.into(),
                path,
                locked: locked.sha256.clone(),
                found: found.into(),
            });
        }
        Ok(())
    }
}
