//! `respawn image pack`: a directory as an OCI image, built reproducibly. Entries are sorted, owners and times
//! are zeroed, gzip carries no name or time, and the config's `created` is the newest input mtime, so the same
//! input gives the same manifest digest.
//!
//! Layers are zstd by default, compressed on every core (libzstd's multi-threaded mode, whose output is the
//! same for any number of worker threads, so the digest does not depend on the machine); gzip on request, for
//! tools that cannot read zstd layers. A directory larger than [`LAYER_BYTES`] is cut into several layers of
//! about that size ([`pack_layers`](super::pack_layers)), built at once, one a core: the tar walk and both hashes
//! then run on every core too, and a restore fetches and checks one layer while it extracts the one before.
//! Into a local store, each layer is built beside the layout and renamed into place; any other store gets it
//! streamed from a temporary file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::pack_layers::{BuiltLayer, build_layers, plan_layers, scan};
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
    /// The layers, in the order they apply.
    pub layers: Vec<PackedLayer>,
    /// RFC 3339: the newest mtime among the packed entries.
    pub created: String,
    /// Files, directories and symlinks packed.
    pub entries: u64,
    /// Sockets, FIFOs and devices, which are left out.
    pub skipped: Vec<std::path::PathBuf>,
}

/// One layer `pack` made.
#[derive(Debug, Clone)]
pub struct PackedLayer {
    pub digest: String,
    pub size: u64,
    /// sha256 of the uncompressed tar (the config's rootfs diff_id).
    pub diff_id: String,
    /// Entries of the directory in this layer.
    pub entries: u64,
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
pub(super) const ZSTD_LEVEL: i32 = 3;

/// A directory whose regular files hold more than this is cut into layers of about this size: large enough
/// that a layer's fixed costs (a fetch, a digest check, a spool file) do not show, small enough that a GiB
/// makes several layers to build on several cores and to fetch while another extracts.
pub const LAYER_BYTES: u64 = 256 << 20;

/// At most this many layers (larger layers past 16 × [`LAYER_BYTES`]): some registries and runtimes refuse
/// images with very many layers, and each is a round trip on restore.
pub const MAX_LAYERS: usize = 16;

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Zstd => MEDIA_LAYER_ZSTD,
            LayerCompression::Gzip => MEDIA_LAYER_GZIP,
        }
    }
}

/// How `pack` builds an image.
#[derive(Debug, Clone, Copy)]
pub struct PackOptions {
    pub compression: LayerCompression,
    /// Where a directory is cut into layers ([`LAYER_BYTES`]; tests make it small).
    pub layer_bytes: u64,
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions {
            compression: LayerCompression::default(),
            layer_bytes: LAYER_BYTES,
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
    let options = PackOptions {
        compression,
        ..PackOptions::default()
    };
    pack_with(store, None, prefix, dir, tag, options).await
}

/// [`pack`] with its options. `local_root` is the directory of `store` when it is a `file://` store
/// ([`local_root`](crate::stores::local_root)): layers are then built beside the layout and renamed into place,
/// instead of being written twice.
pub async fn pack_with(
    store: &dyn ObjectStore,
    local_root: Option<&Path>,
    prefix: &str,
    dir: &Path,
    tag: &str,
    options: PackOptions,
) -> Result<PackReport, OciError> {
    check_tag(tag)?;
    let owned = dir.to_path_buf();
    // Spool beside the layout when it is local: the same filesystem, so a layer is renamed into place.
    let spool_dir = local_root.map(|root| root.join(layout_key(prefix, "")));
    if let Some(d) = &spool_dir {
        std::fs::create_dir_all(d.join("blobs/sha256"))
            .map_err(|e| OciError::io(d.display(), e))?;
    }
    let spool = spool_dir.clone();
    let (built, entries, skipped, newest) = tokio::task::spawn_blocking(move || {
        let (entries, skipped) = scan(&owned)?;
        let newest = entries
            .iter()
            .map(|(_, m)| m.modified().unwrap_or(UNIX_EPOCH))
            .max()
            .unwrap_or(UNIX_EPOCH);
        let plan = plan_layers(&entries, options.layer_bytes);
        let built = build_layers(
            &owned,
            &entries,
            &plan,
            options.compression,
            spool.as_deref(),
        )?;
        Ok::<_, OciError>((built, entries.len() as u64, skipped, newest))
    })
    .await
    .map_err(|e| OciError::io("packing", std::io::Error::other(e)))??;
    let mut layers = Vec::with_capacity(built.len());
    for layer in built {
        let key = layout_key(prefix, &blob_rel(&layer.digest)?);
        layers.push(PackedLayer {
            digest: layer.digest.clone(),
            size: layer.size,
            diff_id: layer.diff_id.clone(),
            entries: layer.entries,
        });
        store_layer(store, local_root, &key, layer).await?;
    }

    let created = humantime::format_rfc3339_seconds(newest).to_string();
    let config = ImageConfig {
        created: &created,
        architecture: oci_architecture(),
        os: std::env::consts::OS,
        config: serde_json::Map::new(),
        rootfs: RootFsOut {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history: vec![History {
            created: &created,
            created_by: "respawn image pack",
        }],
    };
    let config_desc = put_blob(store, prefix, MEDIA_CONFIG, &config).await?;
    let media = options.compression.media_type();
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_string(),
        config: config_desc.clone(),
        layers: layers
            .iter()
            .map(|l| Descriptor::new(media, l.digest.clone(), l.size))
            .collect(),
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
        layers,
        created,
        entries,
        skipped,
    })
}

/// Puts a built layer at `key`: renamed into a local store's directory, else streamed to the store.
async fn store_layer(
    store: &dyn ObjectStore,
    local_root: Option<&Path>,
    key: &str,
    layer: BuiltLayer,
) -> Result<(), OciError> {
    if let Some(root) = local_root {
        use std::os::unix::fs::PermissionsExt;
        // object_store's local store maps a key to this path, and writes objects readable by all, as here
        // (a temporary file is private).
        let path = root.join(key);
        let fail = |e: std::io::Error| OciError::io(path.display(), e);
        let perms = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(layer.file.path(), perms).map_err(fail)?;
        layer.file.persist(&path).map_err(|e| fail(e.error))?;
        return Ok(());
    }
    put_file(store, key, layer.file.path(), &layer.digest).await
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
