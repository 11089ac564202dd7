//! Checking a restored directory against its image: every regular file the image would leave (after whiteouts)
//! must exist in the directory with the same sha256. Used by verification after a restore.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use super::{OciError, fetch_blob, resolve};

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
    let image = resolve(store, prefix, tag).await?;
    let mut expected: BTreeMap<PathBuf, String> = BTreeMap::new();
    for layer in &image.manifest.layers {
        let mut file = tempfile::tempfile().map_err(|e| OciError::io("the layer spool file", e))?;
        fetch_blob(store, prefix, layer, |chunk| {
            file.write_all(chunk).map_err(|e| OciError::io("spool", e))
        })
        .await?;
        let digest = layer.digest.clone();
        let entries = tokio::task::spawn_blocking(move || {
            layer_files(file).map_err(|why| OciError::Layer { layer: digest, why })
        })
        .await
        .map_err(|e| OciError::io("comparing", io::Error::other(e)))??;
        for (path, content) in entries {
            apply(&mut expected, path, content);
        }
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut mismatches = Vec::new();
        for (rel, want) in &expected {
            let path = dir.join(rel);
            let ok = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => file_sha256(&path).is_ok_and(|got| &got == want),
                _ => false,
            };
            if !ok {
                mismatches.push(rel.display().to_string());
            }
        }
        CompareReport {
            checked: expected.len() as u64,
            mismatches,
        }
    })
    .await
    .map_err(|e| OciError::io("comparing", io::Error::other(e)))
}

/// What a layer entry does to the final tree: a regular file with its digest, a whiteout, or another kind of
/// entry that replaces whatever was at the path.
enum Content {
    File(String),
    Whiteout,
    Opaque,
    Other,
}

fn apply(expected: &mut BTreeMap<PathBuf, String>, path: PathBuf, content: Content) {
    match content {
        Content::File(digest) => {
            expected.insert(path, digest);
        }
        Content::Other => {
            expected.remove(&path);
        }
        Content::Whiteout => expected.retain(|p, _| !p.starts_with(&path)),
        Content::Opaque => expected.retain(|p, _| !(p.starts_with(&path) && p != &path)),
    }
}

/// Lists a layer's entries with the sha256 of each regular file.
fn layer_files(file: File) -> Result<Vec<(PathBuf, Content)>, String> {
    let reader = super::unpack::decompressed(file).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("bad tar entry: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("bad entry path: {e}"))?
            .into_owned();
        // Unpack already refused unsafe paths; here they are simply not expected anywhere.
        let rel: PathBuf = raw
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            out.push((parent, Content::Opaque));
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            out.push((parent.join(hidden), Content::Whiteout));
        } else if entry.header().entry_type().is_file() {
            let mut hasher = Sha256::new();
            io::copy(&mut entry, &mut HashWriter(&mut hasher)).map_err(|e| e.to_string())?;
            out.push((rel, Content::File(hex::encode(hasher.finalize()))));
        } else if !entry.header().entry_type().is_dir() {
            out.push((rel, Content::Other));
        }
    }
    Ok(out)
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

fn file_sha256(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut HashWriter(&mut hasher))?;
    Ok(hex::encode(hasher.finalize()))
}
