//! The files capability: granted directories are preopened in the plugin's WASI filesystem at their absolute
//! host path, read-only or read-write; nothing else of the host filesystem is visible. In the plan phase every
//! directory is read-only.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::workflow::{Access, Grants};

/// Absolute host paths of the granted directories with their access.
pub fn granted_dirs(grants: &Grants, base_dir: &Path) -> Vec<(PathBuf, Access)> {
    grants
        .files
        .iter()
        .map(|(dir, access)| {
            let p = Path::new(dir);
            (
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base_dir.join(p)
                },
                *access,
            )
        })
        .collect()
}

/// Preopens each granted directory, creating it if missing (a restore target usually does not exist yet).
pub fn preopen(
    builder: &mut WasiCtxBuilder,
    dirs: &[(PathBuf, Access)],
    read_only: bool,
) -> std::io::Result<()> {
    for (dir, access) in dirs {
        let writable = *access == Access::Rw && !read_only;
        if writable {
            std::fs::create_dir_all(dir)?;
        } else if !dir.exists() {
            continue;
        }
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        let guest = dir.to_string_lossy().into_owned();
        builder
            .preopened_dir(dir, guest, perms)
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Whether `path` lies inside a directory granted read-write.
pub fn inside_rw(dirs: &[(PathBuf, Access)], path: &Path) -> bool {
    let Ok(path) = normalize(path) else {
        return false;
    };
    dirs.iter().any(|(dir, access)| {
        *access == Access::Rw && normalize(dir).is_ok_and(|d| path.starts_with(d))
    })
}

/// Resolves `..` and symlinks of the existing part of a path.
fn normalize(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}
