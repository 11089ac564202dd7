//! `respawn image pack`: a directory as a one-layer OCI image, built reproducibly. Entries are sorted, owners
//! and times are zeroed, gzip carries no name or time, and the config's `created` is the newest input mtime, so
//! the same input gives the same manifest digest. The layer is built into a temporary file while both of its
//! digests are computed, then streamed to the store.
//!
//! Layers are zstd by default, compressed on every core (libzstd's multi-threaded mode, whose output is the
//! same for any number of worker threads, so the digest does not depend on the machine); gzip on request, for
//! tools that cannot read zstd layers.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::{Compression, GzBuilder};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::walk::link_escapes;
use super::{
    Descriptor, Index, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD,
    MEDIA_MANIFEST, Manifest, OciError, REF_NAME, blob_rel, layout_key, oci_architecture,
    read_layout_file, root_name,
};
use crate::stores::object_path;

/// What `pack` made.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub tag: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    /// sha256 of the uncompressed tar (the config's rootfs diff_id).
    pub diff_id: String,
    /// RFC 3339: the newest mtime among the packed entries.
    pub created: String,
    /// Files, directories and symlinks packed.
    pub entries: u64,
    /// Sockets, FIFOs and devices, which are left out.
    pub skipped: Vec<PathBuf>,
}

/// How a packed layer is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// zstd level 3 (zstd's own default), on every core.
    #[default]
    Zstd,
    /// gzip level 6 (gzip's own default), for tools that cannot read zstd layers.
    Gzip,
}

/// zstd's default level: what `zstd` and `tar --zstd` use, and the baseline pack is measured against.
const ZSTD_LEVEL: i32 = 3;

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Zstd => MEDIA_LAYER_ZSTD,
            LayerCompression::Gzip => MEDIA_LAYER_GZIP,
        }
    }
}

/// Packs `dir` into the layout at `prefix` of `store`, tagged `tag` (an existing image with that tag is
/// replaced in `index.json`; other tags are kept).
pub async fn pack(
    store: &dyn ObjectStore,
    prefix: &str,
    dir: &Path,
    tag: &str,
    compression: LayerCompression,
) -> Result<PackReport, OciError> {
    check_tag(tag)?;
    let owned = dir.to_path_buf();
    let layer = tokio::task::spawn_blocking(move || build_layer(&owned, compression))
        .await
        .map_err(|e| OciError::io("packing", io::Error::other(e)))??;
    let layer_desc = Descriptor::new(compression.media_type(), layer.digest.clone(), layer.size);
    put_file(
        store,
        &layout_key(prefix, &blob_rel(&layer.digest)?),
        layer.file.path(),
        &layer.digest,
    )
    .await?;

    let created = humantime::format_rfc3339_seconds(layer.newest).to_string();
    let config = ImageConfig {
        created: &created,
        architecture: oci_architecture(),
        os: std::env::consts::OS,
        config: serde_json::Map::new(),
        rootfs: RootFsOut {
            kind: "layers",
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: &created,
            created_by: "respawn image pack",
        }],
    };
    let config_desc = put_blob(store, prefix, MEDIA_CONFIG, &config).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_string(),
        config: config_desc.clone(),
        layers: vec![layer_desc],
        annotations: Default::default(),
        extra: serde_json::Map::new(),
    };
    let manifest_desc = put_blob(store, prefix, MEDIA_MANIFEST, &manifest).await?;
    write_tag(store, prefix, tag, manifest_desc.clone()).await?;
    Ok(PackReport {
        tag: tag.to_string(),
        manifest_digest: manifest_desc.digest,
        manifest_size: manifest_desc.size,
        config_digest: config_desc.digest,
        layer_digest: layer.digest,
        layer_size: layer.size,
        diff_id: layer.diff_id,
        created,
        entries: layer.entries,
        skipped: layer.skipped,
    })
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: serde_json::Map<String, serde_json::Value>,
    rootfs: RootFsOut,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
struct RootFsOut {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

/// A tag is what `org.opencontainers.image.ref.name` may hold: printable, no spaces.
fn check_tag(tag: &str) -> Result<(), OciError> {
    let bad = |why: &str| OciError::BadTag {
        tag: tag.to_string(),
        why: why.to_string(),
    };
    if tag.is_empty() {
        return Err(bad("empty"));
    }
    if tag.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/@+".contains(c))
    {
        return Err(bad("use letters, digits and . _ - : / @ +"));
    }
    Ok(())
}

struct BuiltLayer {
    /// Removed when dropped.
    file: tempfile::NamedTempFile,
    digest: String,
    size: u64,
    diff_id: String,
    newest: SystemTime,
    entries: u64,
    skipped: Vec<PathBuf>,
}

/// Builds the layer (tar + zstd or gzip) of `dir` into a temporary file, hashing it compressed and
/// uncompressed.
fn build_layer(dir: &Path, compression: LayerCompression) -> Result<BuiltLayer, OciError> {
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

    let file = tempfile::Builder::new()
        .prefix(".respawn-pack-")
        .tempfile()
        .map_err(|e| OciError::io(std::env::temp_dir().display(), e))?;
    let handle = file
        .as_file()
        .try_clone()
        .map_err(|e| OciError::io(file.path().display(), e))?;
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, handle));
    let encoder = Encoder::new(compressed, compression)
        .map_err(|e| OciError::io(file.path().display(), e))?;
    let mut builder = tar::Builder::new(HashWriter::new(encoder));
    let mut newest = UNIX_EPOCH;
    for (rel, meta) in &entries {
        let abs = dir.join(rel);
        let fail = |e: io::Error| OciError::io(abs.display(), e);
        newest = newest.max(meta.modified().unwrap_or(UNIX_EPOCH));
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
    }
    let layer_err = |e: io::Error| OciError::io(file.path().display(), e);
    let (encoder, diff_id, _) = builder.into_inner().map_err(layer_err)?.finish();
    let (buffered, digest, size) = encoder.finish().map_err(layer_err)?.finish();
    let handle = buffered
        .into_inner()
        .map_err(|e| layer_err(e.into_error()))?;
    handle.sync_all().map_err(layer_err)?;
    Ok(BuiltLayer {
        file,
        digest,
        size,
        diff_id,
        newest,
        entries: entries.len() as u64,
        skipped,
    })
}

/// The layer's compressor.
enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: LayerCompression) -> io::Result<Encoder<W>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Encoder::with_workers(inner, compression, cores as u32)
    }

    fn with_workers(
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

    fn finish(self) -> io::Result<W> {
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
    out: &mut Vec<(PathBuf, fs::Metadata)>,
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

/// Streams a local file to `key` with a multipart upload, re-hashing it on the way; a mismatch aborts.
async fn put_file(
    store: &dyn ObjectStore,
    key: &str,
    path: &Path,
    digest: &str,
) -> Result<(), OciError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| OciError::io(path.display(), e))?;
    let mut writer = WriteMultipart::new(store.put_multipart(&object_path(key)?).await?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(OciError::io(path.display(), e));
            }
        };
        hasher.update(&buf[..n]);
        if let Err(e) = writer.wait_for_capacity(4).await {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        writer.write(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        let _ = writer.abort().await;
        return Err(OciError::DigestMismatch {
            digest: digest.to_string(),
            actual,
        });
    }
    writer.finish().await?;
    Ok(())
}

/// Stores a JSON blob under its digest and returns its descriptor.
async fn put_blob(
    store: &dyn ObjectStore,
    prefix: &str,
    media_type: &str,
    value: &impl Serialize,
) -> Result<Descriptor, OciError> {
    let bytes = serde_json::to_vec(value).expect("serializable");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let desc = Descriptor::new(media_type, digest, bytes.len() as u64);
    let key = layout_key(prefix, &blob_rel(&desc.digest)?);
    store
        .put(&object_path(&key)?, PutPayload::from(bytes))
        .await?;
    Ok(desc)
}

/// Writes `index.json` with `desc` as the image tagged `tag`: an entry with the same tag is replaced, others
/// are kept, and entries are sorted by tag then digest. Also writes `oci-layout`.
pub async fn write_tag(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
    mut desc: Descriptor,
) -> Result<(), OciError> {
    let root = root_name(prefix);
    let mut index = match read_layout_file(store, prefix, "index.json").await? {
        None => Index {
            schema_version: 2,
            media_type: MEDIA_INDEX.to_string(),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        },
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| OciError::InvalidLayout {
            root: root.clone(),
            why: format!("existing index.json: {e}; not overwriting it"),
        })?,
    };
    desc.annotations
        .insert(REF_NAME.to_string(), tag.to_string());
    index.manifests.retain(|d| d.ref_name() != Some(tag));
    index.manifests.push(desc);
    index.manifests.sort_by(|a, b| {
        (a.ref_name().unwrap_or(""), &a.digest).cmp(&(b.ref_name().unwrap_or(""), &b.digest))
    });
    let marker = serde_json::json!({ "imageLayoutVersion": "1.0.0" });
    put_json(store, &layout_key(prefix, "oci-layout"), &marker).await?;
    put_json(store, &layout_key(prefix, "index.json"), &index).await
}

async fn put_json(
    store: &dyn ObjectStore,
    key: &str,
    value: &impl Serialize,
) -> Result<(), OciError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializable");
    bytes.push(b'\n');
    store
        .put(&object_path(key)?, PutPayload::from(bytes))
        .await?;
    Ok(())
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
