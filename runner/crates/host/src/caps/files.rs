//! The files capability: granted directories are preopened in the plugin's WASI filesystem under the name the
//! workflow gave them (relative names resolve against the workflow's directory), read-only or read-write; nothing
//! else of the host filesystem is visible. In the plan phase every directory is read-only. Files are reached
//! through `wasi:filesystem` (linked with WASI), so this capability has no interface of its own; `exec` and
//! `images` check their directories against its grant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use respawn_engine::{Phase, StepCall};
use respawn_sandbox::files::Access;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::super::context::RunResources;
use super::Capability;

pub struct Files;

impl Capability for Files {
    type Run = ();

    fn configure(_: &RunResources) {}

    /// The step's granted directories, preopened in its WASI context.
    type Step = Vec<GrantedDir>;

    fn prepare(
        call: &StepCall,
        run: &RunResources,
        wasi: &mut WasiCtxBuilder,
    ) -> std::io::Result<Vec<GrantedDir>> {
        let dirs = granted_dirs(&call.grants.files, &run.base_dir);
        preopen(wasi, &dirs, call.phase == Phase::Plan)?;
        Ok(dirs)
    }
}

/// A granted directory: the name the plugin sees (as the workflow wrote it) and where it is on the host.
pub struct GrantedDir {
    pub guest: String,
    pub host: PathBuf,
    pub access: Access,
}

/// The host path a plugin means by `guest`: relative paths are relative to the workflow's directory, as in
/// the grants.
pub fn host_path(base_dir: &Path, guest: &str) -> PathBuf {
    let p = Path::new(guest);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// The granted directories of a step.
fn granted_dirs(grant: &BTreeMap<String, Access>, base_dir: &Path) -> Vec<GrantedDir> {
    grant
        .iter()
        .map(|(dir, access)| GrantedDir {
            guest: dir.clone(),
            host: host_path(base_dir, dir),
            access: *access,
        })
        .collect()
}

/// Preopens each granted directory, creating it if missing (a restore target usually does not exist yet).
fn preopen(
    builder: &mut WasiCtxBuilder,
    dirs: &[GrantedDir],
    read_only: bool,
) -> std::io::Result<()> {
    for dir in dirs {
        let writable = dir.access == Access::Rw && !read_only;
        if writable {
            std::fs::create_dir_all(&dir.host)?;
        } else if !dir.host.exists() {
            continue;
        }
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Whether `path` lies inside a directory granted read-write.
pub fn inside_rw(dirs: &[GrantedDir], path: &Path) -> bool {
    inside(dirs, path, true)
}

/// The directory granted read-write that holds `path`, on the host.
pub fn rw_dir_of<'a>(dirs: &'a [GrantedDir], path: &Path) -> Option<&'a Path> {
    let path = normalize(path)?;
    dirs.iter()
        .filter(|dir| dir.access == Access::Rw)
        .find(|dir| normalize(&dir.host).is_some_and(|d| path.starts_with(d)))
        .map(|dir| dir.host.as_path())
}

/// Whether `path` lies inside any granted directory.
pub fn inside_any(dirs: &[GrantedDir], path: &Path) -> bool {
    inside(dirs, path, false)
}

fn inside(dirs: &[GrantedDir], path: &Path, need_rw: bool) -> bool {
    let Some(path) = normalize(path) else {
        return false;
    };
    dirs.iter().any(|dir| {
        (!need_rw || dir.access == Access::Rw)
            && normalize(&dir.host).is_some_and(|d| path.starts_with(d))
    })
}

/// Resolves symlinks of the existing part of a path and appends the part that does not exist yet (a restore
/// target usually does not). A `..` in the missing part is refused, since it cannot be resolved safely.
fn normalize(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    Some(normalize(path.parent()?)?.join(name))
}
