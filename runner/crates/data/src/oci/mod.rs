//! OCI image layouts in a store: the layout's types, reading a tagged image with every blob checked against its
//! digest, `verify` (re-hash every blob) and a reproducible `pack`. Unpacking and comparing live in [`unpack`] and [`compare`].
//!
//! A layout sits under a key prefix of a store (`""` for the store's root): `oci-layout`, `index.json` and
//! `blobs/<algorithm>/<hex>`.

use std::collections::BTreeMap;
use std::io;
use std::time::SystemTime;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::stores::{DataError, object_path};

pub mod compare;
pub mod pack;
mod pack_layers;
mod pipeline;
pub mod unpack;
pub mod verify;
mod walk;

pub use pack::{LayerCompression, PackOptions, PackReport, PackedLayer, pack, pack_with};
pub use verify::{BlobProblem, VerifyReport, verify};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The index annotation that names a tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests, configs, `index.json` and `oci-layout` are read into memory; none may be larger than this.
pub use respawn_sandbox::limits::MAX_OCI_JSON_BYTES as MAX_JSON_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("no OCI image layout at {root}: {why}")]
    NoLayout { root: String, why: String },
    #[error("invalid OCI image layout at {root}: {why}")]
    InvalidLayout { root: String, why: String },
    #[error("{}", tag_not_found(.root, .tag, .available))]
    TagNotFound {
        root: String,
        tag: String,
        available: Vec<String>,
    },
    #[error("blob {digest} is missing")]
    MissingBlob { digest: String },
    #[error("blob {digest}: digest mismatch: expected {digest}, got {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {got}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        got: String,
    },
    #[error("blob {digest}: {why}")]
    BadBlob { digest: String, why: String },
    #[error("layer {layer}: entry `{entry}` refused: {why}")]
    Unsafe {
        layer: String,
        entry: String,
        why: String,
    },
    #[error("layer {layer}: {why}")]
    Layer { layer: String, why: String },
    #[error("bad tag `{tag}`: {why}")]
    BadTag { tag: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("store error: {0}")]
    Store(#[from] object_store::Error),
}

fn tag_not_found(root: &str, tag: &str, available: &[String]) -> String {
    let tags = if available.is_empty() {
        "none".to_string()
    } else {
        available.join(", ")
    };
    if tag.is_empty() {
        format!("{root}/index.json has several images; name one by tag (tags: {tags})")
    } else {
        format!("tag `{tag}` not found in {root}/index.json (tags: {tags})")
    }
}

impl OciError {
    /// The layout itself is missing or unreadable (as opposed to one bad blob or entry).
    pub fn is_layout_problem(&self) -> bool {
        matches!(
            self,
            OciError::NoLayout { .. } | OciError::InvalidLayout { .. }
        )
    }

    pub(crate) fn io(what: impl std::fmt::Display, source: io::Error) -> OciError {
        OciError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// A content descriptor. Unknown fields are kept, so rewriting `index.json` loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: String, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
            extra: serde_json::Map::new(),
        }
    }

    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    fn is_index(&self) -> bool {
        self.media_type == MEDIA_INDEX || self.media_type == DOCKER_LIST
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The parts of an image config this crate reads; everything else is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigInfo {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The key of `rel` inside the layout at `prefix`.
pub fn layout_key(prefix: &str, rel: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

pub(crate) fn root_name(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        "the store root".to_string()
    } else {
        format!("`{prefix}`")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

/// Checks a digest string (`sha256:<64 lowercase hex>` or `sha512:<128>`); the hex part is safe as a key segment.
pub(crate) fn parse_digest(digest: &str) -> Result<(Algorithm, &str), OciError> {
    let bad = |why: &str| OciError::BadBlob {
        digest: digest.to_string(),
        why: why.to_string(),
    };
    let (name, hex) = digest
        .split_once(':')
        .ok_or_else(|| bad("not a digest (want algorithm:hex)"))?;
    let (algorithm, len) = match name {
        "sha256" => (Algorithm::Sha256, 64),
        "sha512" => (Algorithm::Sha512, 128),
        _ => return Err(bad("unsupported digest algorithm")),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("malformed digest"));
    }
    Ok((algorithm, hex))
}

/// `blobs/<algorithm>/<hex>` for a digest.
pub fn blob_rel(digest: &str) -> Result<String, OciError> {
    let (_, hex) = parse_digest(digest)?;
    let algorithm = &digest[..digest.len() - hex.len() - 1];
    Ok(format!("blobs/{algorithm}/{hex}"))
}

pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest as `algorithm:hex`.
    pub(crate) fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

fn get_error(digest: &str, e: object_store::Error) -> OciError {
    match e {
        object_store::Error::NotFound { .. } => OciError::MissingBlob {
            digest: digest.to_string(),
        },
        other => OciError::Store(other),
    }
}

/// Streams a blob through its digest and size check, handing each chunk to `sink`. The check happens at the
/// end: a caller must not treat what `sink` saw as good unless this returns `Ok`.
pub async fn fetch_blob(
    store: &dyn ObjectStore,
    prefix: &str,
    desc: &Descriptor,
    mut sink: impl FnMut(&[u8]) -> Result<(), OciError>,
) -> Result<u64, OciError> {
    let (algorithm, _) = parse_digest(&desc.digest)?;
    let key = layout_key(prefix, &blob_rel(&desc.digest)?);
    let got = store
        .get(&object_path(&key)?)
        .await
        .map_err(|e| get_error(&desc.digest, e))?;
    let mut stream = crate::body_stream(got);
    let mut hasher = Hasher::new(algorithm);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        if bytes > desc.size {
            return Err(OciError::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                got: format!("more ({bytes} so far)"),
            });
        }
        hasher.update(&chunk);
        sink(&chunk)?;
    }
    let actual = hasher.finish();
    if bytes != desc.size {
        return Err(OciError::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            got: bytes.to_string(),
        });
    }
    if actual != desc.digest {
        return Err(OciError::DigestMismatch {
            digest: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// A small (JSON) blob, checked against its descriptor.
pub async fn read_small_blob(
    store: &dyn ObjectStore,
    prefix: &str,
    desc: &Descriptor,
) -> Result<Vec<u8>, OciError> {
    if desc.size > MAX_JSON_BYTES {
        return Err(OciError::BadBlob {
            digest: desc.digest.clone(),
            why: format!(
                "{} bytes is too large for a manifest or config (limit {MAX_JSON_BYTES})",
                desc.size
            ),
        });
    }
    let mut out = Vec::with_capacity(desc.size as usize);
    fetch_blob(store, prefix, desc, |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// A small object of the layout (`oci-layout`, `index.json`); `None` when absent.
pub(crate) async fn read_layout_file(
    store: &dyn ObjectStore,
    prefix: &str,
    rel: &str,
) -> Result<Option<Vec<u8>>, OciError> {
    let got = match store.get(&object_path(&layout_key(prefix, rel))?).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if got.meta.size > MAX_JSON_BYTES {
        return Err(OciError::InvalidLayout {
            root: root_name(prefix),
            why: format!("{rel} is {} bytes, over the limit", got.meta.size),
        });
    }
    Ok(Some(got.bytes().await?.to_vec()))
}

/// Reads `oci-layout` and `index.json`, failing with [`OciError::NoLayout`] or [`OciError::InvalidLayout`].
pub async fn read_index(store: &dyn ObjectStore, prefix: &str) -> Result<Index, OciError> {
    let root = root_name(prefix);
    let marker = read_layout_file(store, prefix, "oci-layout")
        .await?
        .ok_or_else(|| OciError::NoLayout {
            root: root.clone(),
            why: "oci-layout not found".into(),
        })?;
    let version = serde_json::from_slice::<serde_json::Value>(&marker)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
    if version.is_none() {
        return Err(OciError::InvalidLayout {
            root,
            why: "oci-layout has no imageLayoutVersion".into(),
        });
    }
    let bytes = read_layout_file(store, prefix, "index.json")
        .await?
        .ok_or_else(|| OciError::NoLayout {
            root: root.clone(),
            why: "index.json not found".into(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| OciError::InvalidLayout {
        root,
        why: format!("index.json: {e}"),
    })
}

/// An image picked from a layout by tag, its manifest and config checked against their digests.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest_digest: String,
    pub manifest: Manifest,
    pub config: ConfigInfo,
}

impl ResolvedImage {
    pub fn created(&self) -> Option<SystemTime> {
        self.config.created.as_deref().and_then(parse_rfc3339)
    }
}

/// Picks the image tagged `tag` (by the `org.opencontainers.image.ref.name` annotation; with an empty tag, the
/// only image). A tag naming an image index picks the manifest for this platform, or its only one.
pub async fn resolve(
    store: &dyn ObjectStore,
    prefix: &str,
    tag: &str,
) -> Result<ResolvedImage, OciError> {
    let index = read_index(store, prefix).await?;
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.ref_name().map(str::to_string))
        .collect();
    let not_found = || OciError::TagNotFound {
        root: root_name(prefix),
        tag: tag.to_string(),
        available: available.clone(),
    };
    let mut desc = if tag.is_empty() {
        match index.manifests.as_slice() {
            [only] => only.clone(),
            _ => return Err(not_found()),
        }
    } else {
        let tagged: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.ref_name() == Some(tag))
            .collect();
        pick_platform(&tagged).ok_or_else(not_found)?.clone()
    };
    for _ in 0..4 {
        let bytes = read_small_blob(store, prefix, &desc).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| OciError::BadBlob {
                digest: desc.digest.clone(),
                why: format!("not JSON: {e}"),
            })?;
        if desc.is_index() || value.get("manifests").is_some() {
            let nested: Index = serde_json::from_value(value).map_err(|e| OciError::BadBlob {
                digest: desc.digest.clone(),
                why: format!("not an image index: {e}"),
            })?;
            let all: Vec<&Descriptor> = nested.manifests.iter().collect();
            desc = pick_platform(&all)
                .ok_or_else(|| OciError::BadBlob {
                    digest: desc.digest.clone(),
                    why: "image index has no manifest for this platform".into(),
                })?
                .clone();
            continue;
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| OciError::BadBlob {
            digest: desc.digest.clone(),
            why: format!("not an image manifest: {e}"),
        })?;
        let config_bytes = read_small_blob(store, prefix, &manifest.config).await?;
        let config: ConfigInfo =
            serde_json::from_slice(&config_bytes).map_err(|e| OciError::BadBlob {
                digest: manifest.config.digest.clone(),
                why: format!("not an image config: {e}"),
            })?;
        return Ok(ResolvedImage {
            manifest_digest: desc.digest,
            manifest,
            config,
        });
    }
    Err(OciError::BadBlob {
        digest: desc.digest,
        why: "image indexes nested too deeply".into(),
    })
}

/// The only candidate, or the one for this host's platform.
fn pick_platform<'a>(candidates: &[&'a Descriptor]) -> Option<&'a Descriptor> {
    match candidates {
        [] => None,
        [only] => Some(only),
        many => many
            .iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.os == std::env::consts::OS && p.architecture == oci_architecture()
                })
            })
            .or_else(|| many.first())
            .copied(),
    }
}

/// This host's architecture in OCI (Go) spelling.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The `created` time of the image tagged `tag`, from its config; `None` when the image, or the field, is absent
/// or unreadable. This is what RPO is measured against.
pub async fn image_created(store: &dyn ObjectStore, prefix: &str, tag: &str) -> Option<SystemTime> {
    resolve(store, prefix, tag).await.ok()?.created()
}

/// Parses an RFC 3339 timestamp, with `Z` or a numeric offset.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Some(utc) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return humantime::parse_rfc3339_weak(utc).ok();
    }
    let split = s.len().checked_sub(6)?;
    let (time, offset) = (s.get(..split)?, s.get(split..)?);
    let (sign, hm) = (offset.as_bytes()[0], &offset[1..]);
    let (h, m) = hm.split_once(':')?;
    let secs = h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60;
    let local = humantime::parse_rfc3339_weak(time).ok()?;
    let shift = std::time::Duration::from_secs(secs);
    match sign {
        b'+' => local.checked_sub(shift),
        b'-' => local.checked_add(shift),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_become_keys() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            blob_rel(&good).unwrap(),
            format!("blobs/sha256/{}", "a".repeat(64))
        );
        assert!(blob_rel("sha256:../../etc").is_err());
        assert!(blob_rel(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(blob_rel(&format!("md5:{}", "a".repeat(32))).is_err());
    }

    #[test]
    fn rfc3339_with_offsets() {
        let z = parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00-00:30"), Some(z));
        assert!(parse_rfc3339("2024-05-01T10:00:00.123456789Z").unwrap() > z);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
