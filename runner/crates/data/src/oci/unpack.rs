//! Unpacking a stored OCI image into a directory, safely.
//!
//! Each layer is streamed from the store into a spool file beside the destination while its digest is checked;
//! only a layer whose digest matched is extracted (so unverified bytes never reach the destination), and its
//! uncompressed stream is checked against the config's diff_id as it is read. Extraction refuses absolute paths,
//! `..` components, symlinks whose target is absolute or resolves outside the destination, hard links to
//! anything but a regular file inside it, and writing through a symlink; it applies OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) layer by layer, and keeps file modes. Owners and times are not restored.
//! Layers may be plain tar, gzip or zstd (recognized by their first bytes).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use object_store::ObjectStore;

use super::pipeline::{copy_through, decode_in_threads};
use super::walk::{Fail, Kind, io_at, resolves_inside, walk};
use super::{OciError, fetch_blob, resolve};
use crate::progress::{Counted, Meter, ProgressFn};

/// What `unpack` restored. It is only returned when every layer verified and extracted.
#[derive(Debug, Clone, PartialEq)]
pub struct UnpackReport {
    pub manifest_digest: String,
    /// The config's `created`, when present: what RPO is measured against.
    pub created: Option<SystemTime>,
    pub layers: usize,
    /// Regular files and hard links written.
    pub files: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
    /// Devices and FIFOs, which are not created.
    pub skipped: u64,
}

/// Unpacks the image tagged `tag` (or the only image, with an empty tag) from the layout at `prefix` of `store`
/// into `dest`, creating it if needed.
pub async fn unpack(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
    dest: &Path,
) -> Result<UnpackReport, OciError> {
    unpack_with_progress(store, prefix, tag, dest, None).await
}

/// [`unpack`], reporting the bytes fetched and then unpacked (of the layers' compressed size) to `progress`, and
/// to the log every few seconds when stderr is not a terminal.
pub async fn unpack_with_progress(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
    dest: &Path,
    progress: Option<ProgressFn>,
) -> Result<UnpackReport, OciError> {
    let image = resolve(store, prefix, tag).await?;
    let total: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    let name = if tag.is_empty() { prefix } else { tag };
    let fetching = Meter::new(format!("fetching {name}"), Some(total), progress.clone());
    let unpacking = Meter::new(format!("unpacking {name}"), Some(total), progress);
    fs::create_dir_all(dest).map_err(|e| OciError::io(dest.display(), e))?;
    let root = dest
        .canonicalize()
        .map_err(|e| OciError::io(dest.display(), e))?;
    let diff_ids = image
        .config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    // Layer i+1 is fetched and its digest checked while layer i is extracted; layers are still applied in
    // order, each only after its own digest matched. The extractor is either here or with the extracting task.
    let mut idle = Some(Extractor::new(root.clone()));
    let mut extracting: Option<tokio::task::JoinHandle<Result<Extractor, OciError>>> = None;
    for (i, layer) in image.manifest.layers.iter().enumerate() {
        let fetched = spool_layer(store, prefix, layer, &root, &fetching).await;
        if let Some(previous) = extracting.take() {
            idle = Some(joined(previous.await)?);
        }
        let file = fetched?;
        let Some(mut extractor) = idle.take() else {
            unreachable!("the extractor is back from the previous layer's task")
        };
        let digest = layer.digest.clone();
        let diff_id = diff_ids.get(i).cloned();
        let file = Counted {
            inner: file,
            meter: unpacking.clone(),
        };
        extracting = Some(tokio::task::spawn_blocking(move || {
            let applied = extractor.apply_layer(file, &digest, diff_id.as_deref());
            applied.map(|()| extractor)
        }));
    }
    let mut extractor = match extracting {
        Some(last) => joined(last.await)?,
        None => idle.unwrap_or_else(|| Extractor::new(root.clone())),
    };
    extractor.finish()?;
    Ok(UnpackReport {
        manifest_digest: image.manifest_digest.clone(),
        created: image.created(),
        layers: image.manifest.layers.len(),
        files: extractor.files,
        bytes: extractor.bytes,
        skipped: extractor.skipped,
    })
}

/// Fetches a layer into a spool file beside the destination, checking its size and digest on the way.
async fn spool_layer(
    store: &dyn ObjectStore,
    prefix: &str,
    layer: &super::Descriptor,
    root: &Path,
    meter: &Meter,
) -> Result<File, OciError> {
    let spool_name = "the layer spool file";
    let mut out = BufWriter::with_capacity(1 << 20, spool_file(root)?);
    fetch_blob(store, prefix, layer, |chunk| {
        meter.add(chunk.len() as u64);
        out.write_all(chunk)
            .map_err(|e| OciError::io(spool_name, e))
    })
    .await?;
    out.into_inner()
        .map_err(|e| OciError::io(spool_name, e.into_error()))
}

fn joined(
    extracted: Result<Result<Extractor, OciError>, tokio::task::JoinError>,
) -> Result<Extractor, OciError> {
    extracted.map_err(|e| OciError::io("unpacking", io::Error::other(e)))?
}

/// A spool file beside the destination (same filesystem, sized for the data), else in the temp directory. It has
/// no name (tempfile's `O_TMPFILE`, or unlinked right after creation where that is unsupported): a runner killed
/// mid-restore leaves no file in the region for teardown to trip over.
fn spool_file(root: &Path) -> Result<File, OciError> {
    let dir = root.parent().unwrap_or(root);
    tempfile::tempfile_in(dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(|e| OciError::io("the layer spool file", e))
}

/// A layer's uncompressed tar stream: gzip and zstd are recognised by their first bytes, anything else is read as
/// plain tar.
pub(crate) fn decompressed<R: Read + Seek + Send + 'static>(
    mut file: R,
) -> io::Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    file.rewind()?;
    while got < magic.len() {
        match file.read(&mut magic[got..])? {
            0 => break,
            n => got += n,
        }
    }
    file.rewind()?;
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            file,
        ))),
        // libzstd reads concatenated frames (as `zstd:chunked` layers and parallel packs have) and skips
        // skippable ones.
        [0x28, 0xb5, 0x2f, 0xfd] | [0x50..=0x5f, 0x2a, 0x4d, 0x18] => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))?,
        ),
        _ => Box::new(BufReader::with_capacity(1 << 20, file)),
    })
}

struct Extractor {
    root: PathBuf,
    /// Paths written by the current layer (and their ancestors): whiteouts only remove lower layers' content.
    written: HashSet<PathBuf>,
    /// Directory modes, applied at the end so a read-only directory does not block its own contents.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Symlinks created, checked once more at the end against the final tree.
    symlinks: Vec<PathBuf>,
    /// Where file contents pass from the stream to the file, one large write per read.
    buffer: Vec<u8>,
    files: u64,
    bytes: u64,
    skipped: u64,
}

impl Extractor {
    fn new(root: PathBuf) -> Extractor {
        Extractor {
            root,
            written: HashSet::new(),
            dir_modes: BTreeMap::new(),
            symlinks: Vec::new(),
            buffer: vec![0; crate::body::CHUNK],
            files: 0,
            bytes: 0,
            skipped: 0,
        }
    }

    fn apply_layer(
        &mut self,
        file: impl Read + Seek + Send + 'static,
        layer: &str,
        diff_id: Option<&str>,
    ) -> Result<(), OciError> {
        let layer_err = |why: String| OciError::Layer {
            layer: layer.to_string(),
            why,
        };
        let reader = decompressed(file).map_err(|e| layer_err(e.to_string()))?;
        self.written.clear();
        let (walked, actual) = decode_in_threads(reader, diff_id.is_some(), |stream| {
            let mut archive = tar::Archive::new(&mut *stream);
            walk(&mut archive, layer, |rel, kind, mode, entry| {
                self.entry(rel, kind, mode, entry)
            })?;
            // Read what follows the end-of-archive marker too: the diff_id covers the whole stream.
            io::copy(stream, &mut io::sink())
                .map_err(|e| layer_err(format!("reading the layer: {e}")))
        });
        walked?;
        let actual = actual.unwrap_or_default();
        if let Some(want) = diff_id
            && want != actual
        {
            return Err(layer_err(format!(
                "uncompressed content is {actual}, but the config's diff_id is {want}"
            )));
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        rel: &Path,
        kind: Kind,
        mode: u32,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), Fail> {
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let path = self.root.join(rel);
        // Never setuid or setgid: an image is untrusted input, and a restore must not plant a program that runs
        // with its owner's rights. The sticky bit is harmless and kept.
        let mode = mode & 0o1777;
        match kind {
            Kind::Opaque(dir) => {
                if self.parents(rel, false)? {
                    self.opaque(&dir)?;
                }
                return Ok(());
            }
            Kind::Whiteout(victim) => {
                if self.parents(&victim, false)? && !self.written.contains(&victim) {
                    let path = self.root.join(&victim);
                    remove_existing(&path).map_err(io_at(&path))?;
                }
                return Ok(());
            }
            Kind::Dir => {
                self.parents(rel, true)?;
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&path).map_err(io_at(&path))?;
                        fs::create_dir(&path).map_err(io_at(&path))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&path).map_err(io_at(&path))?;
                    }
                    Err(e) => return Err(io_at(&path)(e)),
                }
                self.dir_modes.insert(rel.to_path_buf(), mode);
            }
            Kind::File => {
                self.parents(rel, true)?;
                remove_existing(&path).map_err(io_at(&path))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_at(&path))?;
                self.bytes +=
                    copy_through(entry, &mut file, &mut self.buffer).map_err(io_at(&path))?;
                file.set_permissions(Permissions::from_mode(mode))
                    .map_err(io_at(&path))?;
                self.files += 1;
            }
            Kind::Symlink(target) => {
                self.parents(rel, true)?;
                if !resolves_inside(&parent, &target, link_on_disk(&self.root)) {
                    return Err(Fail::Refuse(format!(
                        "symlink target `{}` resolves outside the destination through other symlinks",
                        target.display()
                    )));
                }
                remove_existing(&path).map_err(io_at(&path))?;
                symlink(&target, &path).map_err(io_at(&path))?;
                self.symlinks.push(rel.to_path_buf());
            }
            Kind::HardLink(source_rel) => {
                let source = self.root.join(&source_rel);
                let is_file = self.parents(&source_rel, false)?
                    && fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
                if !is_file {
                    return Err(Fail::Refuse(format!(
                        "hard link target `{}` is not a regular file inside the destination",
                        source_rel.display()
                    )));
                }
                self.parents(rel, true)?;
                remove_existing(&path).map_err(io_at(&path))?;
                fs::hard_link(&source, &path).map_err(io_at(&path))?;
                self.files += 1;
            }
            Kind::Special(other) => {
                tracing::warn!(entry = %rel.display(), kind = ?other, "not creating a device or FIFO");
                self.skipped += 1;
                return Ok(());
            }
        }
        self.mark_written(rel);
        Ok(())
    }

    /// Checks every parent of `rel` is a real directory, never a symlink. Missing parents are created when
    /// `create`; otherwise returns `false` when one is missing.
    fn parents(&mut self, rel: &Path, create: bool) -> Result<bool, Fail> {
        let mut so_far = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(true);
        };
        for part in parent.components() {
            so_far.push(part);
            let path = self.root.join(&so_far);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Fail::Refuse(format!(
                        "`{}` is a symlink; refusing to write through it",
                        so_far.display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Fail::Refuse(format!(
                        "`{}` is not a directory",
                        so_far.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(false);
                    }
                    fs::create_dir(&path).map_err(io_at(&path))?;
                    self.mark_written(&so_far);
                }
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok(true)
    }

    /// `.wh..wh..opq`: removes what lower layers put in `dir`, keeping what this layer wrote.
    fn opaque(&self, dir: &Path) -> Result<(), Fail> {
        let path = self.root.join(dir);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&path)(e)),
        }
        let children = fs::read_dir(&path)
            .and_then(|it| {
                it.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(io_at(&path))?;
        for name in children {
            let child = dir.join(&name);
            let child_path = self.root.join(&child);
            if !self.written.contains(&child) {
                remove_existing(&child_path).map_err(io_at(&child_path))?;
            } else if fs::symlink_metadata(&child_path).is_ok_and(|m| m.is_dir()) {
                self.opaque(&child)?;
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, rel: &Path) {
        let mut cur = Some(rel);
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || !self.written.insert(p.to_path_buf()) {
                break;
            }
            cur = p.parent();
        }
    }

    /// Re-checks every symlink against the final tree (a later entry may have changed what a target resolves
    /// through), then applies directory modes, deepest first.
    fn finish(&mut self) -> Result<(), OciError> {
        for rel in &self.symlinks {
            let path = self.root.join(rel);
            let Ok(target) = fs::read_link(&path) else {
                continue; // replaced or removed since
            };
            let parent = rel.parent().unwrap_or(Path::new(""));
            if target.is_absolute() || !resolves_inside(parent, &target, link_on_disk(&self.root)) {
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
        let modes = std::mem::take(&mut self.dir_modes);
        for (rel, mode) in modes.iter().rev() {
            let path = self.root.join(rel);
            if matches!(self.parents(rel, false), Ok(true))
                && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
            {
                fs::set_permissions(&path, Permissions::from_mode(*mode))
                    .map_err(|e| OciError::io(path.display(), e))?;
            }
        }
        Ok(())
    }
}

/// `resolves_inside` against the disk: the symlink at `rel` of `root`, if there is one there.
fn link_on_disk(root: &Path) -> impl Fn(&Path) -> Option<Option<PathBuf>> + '_ {
    move |rel| {
        let path = root.join(rel);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            Some(fs::read_link(&path).ok())
        } else {
            None
        }
    }
}

/// Removes whatever is at `path` (a directory with its contents), without following a symlink there.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_frames_are_concatenated_and_skippable_frames_skipped() {
        let mut stream = zstd::encode_all(&b"hello "[..], 1).unwrap();
        stream.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        stream.extend(zstd::encode_all(&b"world"[..], 1).unwrap());
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&stream).unwrap();
        let mut out = String::new();
        decompressed(file)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
