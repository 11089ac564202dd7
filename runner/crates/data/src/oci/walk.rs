//! The one walk over a layer's tar entries that unpack and compare share, so that both refuse the same entries
//! for the same reasons: absolute paths and `..` components, symlinks whose target is absolute or leaves the
//! destination when read lexically, hard links whose target is not a clean relative path or is the entry
//! itself, and whiteouts without a name. What needs the tree built so far (writing through a symlink, a symlink
//! that escapes through other symlinks, a hard link to something that is not a file) is the caller's to check,
//! each against its own tree: the disk for unpack, the expected tree for compare.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::OciError;

/// What one entry does to the tree, already checked as far as the entry alone allows.
pub(crate) enum Kind {
    /// `.wh..wh..opq`: hide what lower layers put in this directory.
    Opaque(PathBuf),
    /// `.wh.NAME`: remove this path of a lower layer.
    Whiteout(PathBuf),
    Dir,
    /// A regular file; its content is the entry's to read.
    File,
    /// A symlink with a relative target that stays inside the destination when read lexically.
    Symlink(PathBuf),
    /// A hard link to this clean relative path (not the entry itself).
    HardLink(PathBuf),
    /// A device or FIFO: never created.
    Special(tar::EntryType),
}

/// Why one entry failed: refused as unsafe, or an I/O error on a path.
pub(crate) enum Fail {
    Refuse(String),
    Io(String, io::Error),
}

pub(crate) fn io_at(path: &Path) -> impl Fn(io::Error) -> Fail + '_ {
    move |e| Fail::Io(path.display().to_string(), e)
}

/// Walks every entry of `archive`, calling `visit` with the entry's clean relative path, what it does, the
/// entry's mode bits and the entry itself (to read a file's content). Any refusal or error stops the walk,
/// named after the layer and the entry as written in the archive.
pub(crate) fn walk<R: Read>(
    archive: &mut tar::Archive<R>,
    layer: &str,
    mut visit: impl FnMut(&Path, Kind, u32, &mut tar::Entry<'_, R>) -> Result<(), Fail>,
) -> Result<(), OciError> {
    let layer_err = |why: String| OciError::Layer {
        layer: layer.to_string(),
        why,
    };
    let entries = archive
        .entries()
        .map_err(|e| layer_err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| layer_err(format!("bad tar entry: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| layer_err(format!("bad entry path: {e}")))?
            .into_owned();
        let classified = classify(&mut entry, &raw);
        let result = match classified {
            Ok(None) => Ok(()),
            Ok(Some((rel, kind))) => {
                let mode = entry.header().mode().unwrap_or(0o644);
                visit(&rel, kind, mode, &mut entry)
            }
            Err(fail) => Err(fail),
        };
        result.map_err(|fail| match fail {
            Fail::Refuse(why) => OciError::Unsafe {
                layer: layer.to_string(),
                entry: raw.display().to_string(),
                why,
            },
            Fail::Io(what, e) => layer_err(format!("entry `{}`: {what}: {e}", raw.display())),
        })?;
    }
    Ok(())
}

/// The clean path and kind of one entry; `None` for the root itself and for metadata-only headers.
fn classify<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &Path,
) -> Result<Option<(PathBuf, Kind)>, Fail> {
    let rel = clean_path(raw).map_err(|why| Fail::Refuse(why.into()))?;
    let Some(name) = rel.file_name() else {
        return Ok(None); // the root itself, "./"
    };
    let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
    if name.as_bytes() == b".wh..wh..opq" {
        return Ok(Some((rel.clone(), Kind::Opaque(parent))));
    }
    if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
        if hidden.is_empty() {
            return Err(Fail::Refuse("whiteout without a name".into()));
        }
        let victim = parent.join(OsStr::from_bytes(hidden));
        return Ok(Some((rel.clone(), Kind::Whiteout(victim))));
    }
    let kind = match entry.header().entry_type() {
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(io_at(&rel))?
                .ok_or_else(|| Fail::Refuse("symlink without a target".into()))?
                .into_owned();
            if target.is_absolute() {
                return Err(Fail::Refuse(format!(
                    "symlink to absolute path `{}`",
                    target.display()
                )));
            }
            if link_escapes(&parent, &target) {
                return Err(Fail::Refuse(format!(
                    "symlink target `{}` leaves the destination",
                    target.display()
                )));
            }
            Kind::Symlink(target)
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(io_at(&rel))?
                .ok_or_else(|| Fail::Refuse("hard link without a target".into()))?
                .into_owned();
            let source = clean_path(&target)
                .map_err(|why| Fail::Refuse(format!("hard link target: {why}")))?;
            if source == rel || source.as_os_str().is_empty() {
                return Err(Fail::Refuse("hard link to itself".into()));
            }
            Kind::HardLink(source)
        }
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => return Ok(None),
        other => Kind::Special(other),
    };
    Ok(Some((rel, kind)))
}

/// An entry path as a clean relative path: `.` parts dropped, absolute paths and `..` refused.
pub(crate) fn clean_path(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("path has a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// True when a symlink in directory `parent` (relative to the destination) with `target` is absolute or, read
/// lexically, leaves the destination.
pub(crate) fn link_escapes(parent: &Path, target: &Path) -> bool {
    let mut depth = 0usize;
    for part in parent.components().chain(target.components()) {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Resolves `target` from directory `start` (both relative to the destination) the way the kernel would,
/// following the symlinks already in the tree, and says whether it stays inside the destination. Missing parts
/// are taken as plain names. `link_at(rel)` answers what the tree holds at `rel`: `None` for no symlink,
/// `Some(target)` for a symlink (`Some(None)` when its target cannot be read) — the disk for unpack, the
/// expected tree for compare.
pub(crate) fn resolves_inside(
    start: &Path,
    target: &Path,
    link_at: impl Fn(&Path) -> Option<Option<PathBuf>>,
) -> bool {
    enum Part {
        Up,
        Name(OsString),
    }
    fn parts(path: &Path) -> Option<Vec<Part>> {
        let mut out = Vec::new();
        for part in path.components() {
            match part {
                Component::Normal(name) => out.push(Part::Name(name.to_os_string())),
                Component::ParentDir => out.push(Part::Up),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        Some(out)
    }
    let mut stack: Vec<OsString> = start
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let Some(first) = parts(target) else {
        return false;
    };
    let mut queue: VecDeque<Part> = first.into();
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        match part {
            Part::Up => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            Part::Name(name) => {
                stack.push(name);
                let rel: PathBuf = stack.iter().collect();
                if let Some(link) = link_at(&rel) {
                    hops += 1;
                    let Some(next) = link else {
                        return false;
                    };
                    let Some(next) = parts(&next) else {
                        return false;
                    };
                    if hops > 40 {
                        return false;
                    }
                    stack.pop();
                    for part in next.into_iter().rev() {
                        queue.push_front(part);
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_escapes() {
        assert!(!link_escapes(Path::new("a/b"), Path::new("../c")));
        assert!(!link_escapes(Path::new("a"), Path::new("..")));
        assert!(link_escapes(Path::new("a"), Path::new("../..")));
        assert!(link_escapes(Path::new(""), Path::new("../../outside")));
        assert!(link_escapes(Path::new(""), Path::new("/etc")));
        assert!(!link_escapes(Path::new(""), Path::new("./x/../y")));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(Path::new("./a/./b")).unwrap(), Path::new("a/b"));
        assert!(clean_path(Path::new("a/../b")).is_err());
        assert!(clean_path(Path::new("/abs")).is_err());
        assert_eq!(clean_path(Path::new("./")).unwrap(), Path::new(""));
    }
}
