//! Checking a restored directory against its image: every regular file the image would leave (after whiteouts)
//! must exist in the directory with the same sha256. Used by verification after a restore; reports progress as
//! a restore does.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use super::pipeline::{copy_through, decode_in_threads};
use super::walk::{Fail, Kind, io_at, resolves_inside, walk};
use super::{OciError, fetch_blob, resolve};
use crate::progress::{Counted, Meter, ProgressFn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareReport {
    /// Regular files of the image that were compared.
    pub checked: u64,
    /// Relative paths that are missing, not regular files, or whose content differs.
    pub mismatches: Vec<String>,
}

/// Compares `dir` with the image `tag` at `prefix` of `store`.
pub async fn compare(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
    dir: &Path,
) -> Result<CompareReport, OciError> {
    compare_with_progress(store, prefix, tag, dir, None).await
}

/// [`compare`], reporting bytes, totals and throughput to `progress` (and to the log every few seconds when
/// stderr is not a terminal), as a restore does: the layers fetched, then read (of their compressed size), then
/// the restored files hashed (of the image's file bytes).
pub async fn compare_with_progress(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
    dir: &Path,
    progress: Option<ProgressFn>,
) -> Result<CompareReport, OciError> {
    let image = resolve(store, prefix, tag).await?;
    let total: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    let name = if tag.is_empty() { prefix } else { tag };
    let fetching = Meter::new(format!("fetching {name}"), Some(total), progress.clone());
    let reading = Meter::new(format!("reading {name}"), Some(total), progress.clone());
    let mut expected = Expected::default();
    for layer in &image.manifest.layers {
        let mut file = tempfile::tempfile().map_err(|e| OciError::io("the layer spool file", e))?;
        fetch_blob(store, prefix, layer, |chunk| {
            fetching.add(chunk.len() as u64);
            file.write_all(chunk).map_err(|e| OciError::io("spool", e))
        })
        .await?;
        let digest = layer.digest.clone();
        let file = Counted {
            inner: file,
            meter: reading.clone(),
        };
        expected = tokio::task::spawn_blocking(move || {
            expected.apply_layer(file, &digest).map(|()| expected)
        })
        .await
        .map_err(|e| OciError::io("comparing", io::Error::other(e)))??;
    }
    let expected = expected.files()?;
    let bytes: u64 = expected.values().map(|(_, size)| size).sum();
    let comparing = Meter::new(format!("comparing {name}"), Some(bytes), progress);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let checked = expected.len() as u64;
        let expected: Vec<(PathBuf, String)> = expected
            .into_iter()
            .map(|(path, (digest, _))| (path, digest))
            .collect();
        // Files are hashed on every core, each thread taking every n-th file; the report keeps path order.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut bad: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (dir, expected, meter) = (&dir, &expected, &comparing);
                    s.spawn(move || {
                        let mut buf = vec![0u8; crate::body::CHUNK];
                        let mut bad = Vec::new();
                        for (i, (rel, want)) in expected.iter().enumerate().skip(t).step_by(threads)
                        {
                            // Never read through a symlink: a restored tree whose directory became a link to
                            // elsewhere does not match its image, whatever the file there holds.
                            let ok = real_parents(dir, rel)
                                && file_sha256(&dir.join(rel), &mut buf, meter)
                                    .is_ok_and(|got| &got == want);
                            if !ok {
                                bad.push(i);
                            }
                        }
                        bad
                    })
                })
                .collect();
            let mut bad = Vec::new();
            for worker in workers {
                let found = worker.join().map_err(|_| {
                    OciError::io("comparing", io::Error::other("a hashing thread failed"))
                })?;
                bad.extend(found);
            }
            Ok::<_, OciError>(bad)
        })?;
        bad.sort_unstable();
        Ok(CompareReport {
            checked,
            mismatches: bad
                .into_iter()
                .map(|i| expected[i].0.display().to_string())
                .collect(),
        })
    })
    .await
    .map_err(|e| OciError::io("comparing", io::Error::other(e)))?
}

/// What a path of the final tree holds, as far as the comparison cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A regular file with its sha256 and size.
    File(String, u64),
    Symlink(PathBuf),
    Dir,
}

/// The tree the image would leave, built from the layers with the shared walk and the same rules as unpack:
/// whiteouts and opaque directories remove only lower layers' content, and nothing is written through a
/// symlink.
#[derive(Default)]
struct Expected {
    tree: BTreeMap<PathBuf, Node>,
}

impl Expected {
    fn apply_layer(&mut self, file: Counted<File>, layer: &str) -> Result<(), OciError> {
        let reader = super::unpack::decompressed(file).map_err(|e| OciError::Layer {
            layer: layer.to_string(),
            why: e.to_string(),
        })?;
        // Paths this layer wrote, with their parents: its own whiteouts do not remove them.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let (walked, _) = decode_in_threads(reader, false, |stream| {
            let mut archive = tar::Archive::new(stream);
            walk(&mut archive, layer, |rel, kind, _mode, entry| {
                self.entry(rel, kind, entry, &mut written)
            })
        });
        walked
    }

    fn entry<R: Read>(
        &mut self,
        rel: &Path,
        kind: Kind,
        entry: &mut tar::Entry<R>,
        written: &mut HashSet<PathBuf>,
    ) -> Result<(), Fail> {
        let node = match kind {
            Kind::Opaque(dir) => {
                self.no_symlink_above(rel)?;
                self.tree
                    .retain(|p, _| !(p.starts_with(&dir) && p != &dir && !written.contains(p)));
                return Ok(());
            }
            Kind::Whiteout(victim) => {
                self.no_symlink_above(&victim)?;
                if !written.contains(&victim) {
                    self.tree.retain(|p, _| !p.starts_with(&victim));
                }
                return Ok(());
            }
            Kind::Special(_) => return Ok(()), // unpack creates no devices or FIFOs
            Kind::Dir => Node::Dir,
            Kind::File => {
                let mut hasher = Sha256::new();
                let size = io::copy(entry, &mut HashWriter(&mut hasher)).map_err(io_at(rel))?;
                Node::File(hex::encode(hasher.finalize()), size)
            }
            Kind::Symlink(target) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                if !resolves_inside(parent, &target, self.link_at()) {
                    return Err(Fail::Refuse(format!(
                        "symlink target `{}` resolves outside the destination through other symlinks",
                        target.display()
                    )));
                }
                Node::Symlink(target)
            }
            Kind::HardLink(source) => {
                self.no_symlink_above(&source)?;
                match self.tree.get(&source) {
                    Some(Node::File(digest, size)) => Node::File(digest.clone(), *size),
                    _ => {
                        return Err(Fail::Refuse(format!(
                            "hard link target `{}` is not a regular file inside the destination",
                            source.display()
                        )));
                    }
                }
            }
        };
        self.no_symlink_above(rel)?;
        // As unpack does on disk: a directory over a directory keeps what is below it; anything else replaces
        // whatever was at the path, a directory with its contents.
        if !(node == Node::Dir && self.tree.get(rel) == Some(&Node::Dir)) {
            self.tree.retain(|p, _| !p.starts_with(rel));
            self.tree.insert(rel.to_path_buf(), node);
        }
        let mut cur = Some(rel);
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || !written.insert(p.to_path_buf()) {
                break;
            }
            cur = p.parent();
        }
        Ok(())
    }

    /// Refuses an entry below a symlink or a file of the tree so far, as unpack refuses to write through a
    /// symlink or into something that is not a directory.
    fn no_symlink_above(&self, rel: &Path) -> Result<(), Fail> {
        let mut above = rel.parent();
        while let Some(p) = above {
            match self.tree.get(p) {
                Some(Node::Symlink(_)) => {
                    return Err(Fail::Refuse(format!(
                        "`{}` is a symlink; refusing to write through it",
                        p.display()
                    )));
                }
                Some(Node::File(..)) => {
                    return Err(Fail::Refuse(format!(
                        "`{}` is not a directory",
                        p.display()
                    )));
                }
                _ => {}
            }
            above = p.parent();
        }
        Ok(())
    }

    /// What the tree holds at `rel`, as `resolves_inside` asks it.
    fn link_at(&self) -> impl Fn(&Path) -> Option<Option<PathBuf>> + '_ {
        |rel| match self.tree.get(rel) {
            Some(Node::Symlink(target)) => Some(Some(target.clone())),
            _ => None,
        }
    }

    /// Every regular file of the final tree with its sha256 and size, once every symlink is checked again
    /// against the final tree (a later entry may have changed what a target resolves through), as unpack does.
    fn files(self) -> Result<BTreeMap<PathBuf, (String, u64)>, OciError> {
        for (rel, node) in &self.tree {
            if let Node::Symlink(target) = node
                && !resolves_inside(
                    rel.parent().unwrap_or(Path::new("")),
                    target,
                    self.link_at(),
                )
            {
                return Err(OciError::Unsafe {
                    layer: "(final tree)".into(),
                    entry: rel.display().to_string(),
                    why: format!(
                        "symlink target `{}` resolves outside the destination",
                        target.display()
                    ),
                });
            }
        }
        Ok(self
            .tree
            .into_iter()
            .filter_map(|(p, n)| match n {
                Node::File(digest, size) => Some((p, (digest, size))),
                _ => None,
            })
            .collect())
    }
}

/// True when every directory above `rel` in `dir` is a real directory, not a symlink (or missing).
fn real_parents(dir: &Path, rel: &Path) -> bool {
    let mut so_far = dir.to_path_buf();
    let Some(parent) = rel.parent() else {
        return true;
    };
    parent.components().all(|part| {
        so_far.push(part);
        std::fs::symlink_metadata(&so_far).is_ok_and(|m| m.is_dir())
    })
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sha256 of the regular file at `path`; a symlink there is an error (`O_NOFOLLOW`), not followed.
fn file_sha256(path: &Path, buf: &mut [u8], meter: &std::sync::Arc<Meter>) -> io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut file = Counted {
        inner: file,
        meter: meter.clone(),
    };
    let mut hasher = Sha256::new();
    copy_through(&mut file, &mut HashWriter(&mut hasher), buf)?;
    Ok(hex::encode(hasher.finalize()))
}
