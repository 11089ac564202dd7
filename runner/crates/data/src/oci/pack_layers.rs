//! Building the layers of `respawn image pack`: the directory's entries, cut into layers by size, each written
//! as a reproducible tar (sorted entries, owners and times zeroed) through zstd or gzip into a temporary file
//! while both of its digests are computed. Layers are built several at once, one a core.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use super::OciError;
use super::pack::{LayerCompression, MAX_LAYERS, ZSTD_LEVEL};
use super::walk::link_escapes;

/// One entry to pack: its path relative to the packed directory, and its metadata (symlinks not followed).
pub(super) type Entry = (PathBuf, fs::Metadata);

/// A layer built into a temporary file.
pub(super) struct BuiltLayer {
    /// Removed when dropped, unless persisted into a local store.
    pub(super) file: tempfile::NamedTempFile,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) diff_id: String,
    /// Entries of the directory in this layer (not counting the directories repeated above its first entry).
    pub(super) entries: u64,
}

/// The entries of `dir` to pack (depth first, names in byte order), and the sockets, FIFOs and devices left out.
pub(super) fn scan(dir: &Path) -> Result<(Vec<Entry>, Vec<PathBuf>), OciError> {
    let meta = fs::metadata(dir).map_err(|e| OciError::io(dir.display(), e))?;
    if !meta.is_dir() {
        return Err(OciError::io(
            dir.display(),
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    walk(dir, Path::new(""), &mut entries, &mut skipped)?;
    Ok((entries, skipped))
}

/// Cuts the entries into layers: one when their regular files hold at most `layer_bytes`, else consecutive runs
/// of about `layer_bytes` each (more when that would make over [`MAX_LAYERS`]). The cut depends only on the
/// entries and their sizes, never on the machine, so the same input gives the same layers.
pub(super) fn plan_layers(entries: &[Entry], layer_bytes: u64) -> Vec<Range<usize>> {
    let size = |e: &Entry| if e.1.is_file() { e.1.len() } else { 0 };
    let total: u64 = entries.iter().map(size).sum();
    if total <= layer_bytes || entries.is_empty() {
        return std::iter::once(0..entries.len()).collect();
    }
    let target = layer_bytes.max(total.div_ceil(MAX_LAYERS as u64));
    let mut out = Vec::new();
    let (mut start, mut held) = (0, 0u64);
    for (i, e) in entries.iter().enumerate() {
        held += size(e);
        if held >= target && i + 1 < entries.len() {
            out.push(start..i + 1);
            (start, held) = (i + 1, 0);
        }
    }
    if start < entries.len() {
        out.push(start..entries.len());
    }
    out
}

/// Builds every planned layer into a temporary file in `spool_dir` (or the temp directory), several at once
/// (one a core), each hashed compressed and uncompressed. Returns them in plan order.
pub(super) fn build_layers(
    dir: &Path,
    entries: &[Entry],
    plan: &[Range<usize>],
    compression: LayerCompression,
    spool_dir: Option<&Path>,
) -> Result<Vec<BuiltLayer>, OciError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let at_once = cores.min(plan.len()).max(1);
    // zstd's workers share the cores among the layers built at once; its output does not depend on how many.
    let zstd_workers = (cores / at_once).max(1) as u32;
    let next = AtomicUsize::new(0);
    let mut built: Vec<Option<Result<BuiltLayer, OciError>>> =
        (0..plan.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut built);
    std::thread::scope(|s| {
        for _ in 0..at_once {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(range) = plan.get(k) else { return };
                    let layer = build_layer(
                        dir,
                        entries,
                        range.clone(),
                        compression,
                        zstd_workers,
                        spool_dir,
                    );
                    let failed = layer.is_err();
                    if let Ok(mut results) = results.lock() {
                        results[k] = Some(layer);
                    }
                    if failed {
                        // Stop taking layers: the pack fails anyway.
                        next.store(plan.len(), Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(plan.len());
    for layer in built {
        match layer {
            Some(layer) => out.push(layer?),
            None => {
                return Err(OciError::io(
                    dir.display(),
                    io::Error::other("a layer was not built"),
                ));
            }
        }
    }
    Ok(out)
}

/// Builds one layer (tar + zstd or gzip) of the entries in `range` into a temporary file, hashing it compressed
/// and uncompressed. A layer after the first starts with the directories above its first entry, which an
/// earlier layer also holds, so each layer extracts on its own.
fn build_layer(
    dir: &Path,
    entries: &[Entry],
    range: Range<usize>,
    compression: LayerCompression,
    zstd_workers: u32,
    spool_dir: Option<&Path>,
) -> Result<BuiltLayer, OciError> {
    let mut parents: Vec<&Entry> = Vec::new();
    if let Some(first) = entries.get(range.start) {
        let above: Vec<&Path> = first
            .0
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        // Entries are depth first, so every ancestor is an earlier directory entry.
        for dir_path in above.into_iter().rev() {
            if let Some(e) = entries[..range.start]
                .iter()
                .rev()
                .find(|e| e.0 == dir_path)
            {
                parents.push(e);
            }
        }
    }
    let file = match spool_dir {
        Some(d) => tempfile::Builder::new()
            .prefix(".respawn-pack-")
            .tempfile_in(d),
        None => tempfile::Builder::new().prefix(".respawn-pack-").tempfile(),
    }
    .map_err(|e| OciError::io(spool_dir.unwrap_or(&std::env::temp_dir()).display(), e))?;
    let handle = file
        .as_file()
        .try_clone()
        .map_err(|e| OciError::io(file.path().display(), e))?;
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, handle));
    let encoder = Encoder::with_workers(compressed, compression, zstd_workers)
        .map_err(|e| OciError::io(file.path().display(), e))?;
    let mut builder = tar::Builder::new(HashWriter::new(encoder));
    for (rel, meta) in parents.into_iter().chain(&entries[range.clone()]) {
        append(&mut builder, dir, rel, meta)?;
    }
    let layer_err = |e: io::Error| OciError::io(file.path().display(), e);
    let (encoder, diff_id, _) = builder.into_inner().map_err(layer_err)?.finish();
    let (buffered, digest, size) = encoder.finish().map_err(layer_err)?.finish();
    // Not synced: the file is renamed into a local store or uploaded, as any object the store writes.
    buffered
        .into_inner()
        .map_err(|e| layer_err(e.into_error()))?;
    Ok(BuiltLayer {
        file,
        digest,
        size,
        diff_id,
        entries: range.len() as u64,
    })
}

/// Appends one entry with owners and times zeroed.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    meta: &fs::Metadata,
) -> Result<(), OciError> {
    let abs = dir.join(rel);
    let fail = |e: io::Error| OciError::io(abs.display(), e);
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(meta.mode() & 0o7777);
    let kind = meta.file_type();
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, rel, io::empty())
            .map_err(fail)?;
    } else if kind.is_symlink() {
        let target = fs::read_link(&abs).map_err(fail)?;
        if link_escapes(rel.parent().unwrap_or(Path::new("")), &target) {
            return Err(OciError::Unsafe {
                layer: "(being packed)".into(),
                entry: rel.display().to_string(),
                why: format!(
                    "symlink target `{}` is absolute or leaves the directory, and would be refused on unpack",
                    target.display()
                ),
            });
        }
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, rel, &target)
            .map_err(fail)?;
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let reader = ExactReader {
            inner: File::open(&abs).map_err(fail)?,
            remaining: meta.len(),
        };
        builder
            .append_data(&mut header, rel, reader)
            .map_err(fail)?;
    }
    Ok(())
}

/// The layer's compressor.
pub(super) enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    pub(super) fn with_workers(
        inner: W,
        compression: LayerCompression,
        workers: u32,
    ) -> io::Result<Encoder<W>> {
        Ok(match compression {
            LayerCompression::Zstd => {
                let mut zstd = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
                // Multi-threaded mode even on one core: its output is the same for any worker count (and
                // differs from single-threaded mode's), so the digest does not depend on the machine.
                zstd.multithread(workers.max(1))?;
                Encoder::Zstd(zstd)
            }
            LayerCompression::Gzip => Encoder::Gzip(
                GzBuilder::new()
                    .mtime(0)
                    .write(inner, Compression::default()),
            ),
        })
    }

    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(z) => z.finish(),
            Encoder::Gzip(g) => g.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(z) => z.write(buf),
            Encoder::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(z) => z.flush(),
            Encoder::Gzip(g) => g.flush(),
        }
    }
}

/// Depth first, each directory's names in byte order; symlinks are not followed.
fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<Entry>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), OciError> {
    let abs = root.join(rel);
    let mut names = fs::read_dir(&abs)
        .and_then(|it| {
            it.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| OciError::io(abs.display(), e))?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let meta = fs::symlink_metadata(root.join(&child))
            .map_err(|e| OciError::io(child.display(), e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            out.push((child.clone(), meta));
            walk(root, &child, out, skipped)?;
        } else if kind.is_file() || kind.is_symlink() {
            out.push((child, meta));
        } else {
            skipped.push(child);
        }
    }
    Ok(())
}

/// Reads exactly `remaining` bytes, failing if the file shrank while it was packed.
struct ExactReader {
    inner: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.try_into().unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer, the `sha256:` digest and the byte count of what went through.
    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same input gives the same zstd layer whatever the number of cores that compressed it.
    #[test]
    fn zstd_layers_do_not_depend_on_the_number_of_workers() {
        let mut input = Vec::new();
        let mut x = 7u32;
        // Several of libzstd's jobs (a few MiB each at level 3), so that workers really split the work.
        while input.len() < 24 << 20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            input.extend_from_slice(format!("line {} of {}\n", x >> 16, x % 97).as_bytes());
        }
        let layer = |workers| {
            let mut e = Encoder::with_workers(Vec::new(), LayerCompression::Zstd, workers).unwrap();
            e.write_all(&input).unwrap();
            e.finish().unwrap()
        };
        let one = layer(1);
        assert_eq!(one, layer(2));
        assert_eq!(one, layer(4));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), input);
    }
}
