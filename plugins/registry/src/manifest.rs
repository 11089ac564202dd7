//! What a manifest points at: child manifests (an index), blobs (config and layers), and its subject (a
//! referrer). Docker schema 2 and OCI manifests and indexes are understood; schema 1 is refused.

use respawn_plugin_sdk::Failure;
use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a GET of a manifest accepts.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

/// A manifest's edges.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The media type to PUT it with: the document's own, else the one it was served with.
    pub media_type: String,
    pub children: Vec<Descriptor>,
    pub blobs: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
}

pub fn parse(bytes: &[u8], served_as: &str, what: &str) -> Result<Parsed, Failure> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| Failure::invalid_input(format!("{what}: not a manifest: {e}")))?;
    if raw.schema_version != 2 {
        return Err(Failure::invalid_input(format!(
            "{what}: schemaVersion {} is not supported (only image manifests and indexes of schema 2 / OCI)",
            raw.schema_version
        )));
    }
    let served = served_as.split(';').next().unwrap_or_default().trim();
    let media_type = raw.media_type.clone().unwrap_or_else(|| {
        if !served.is_empty() {
            served.to_string()
        } else if raw.manifests.is_some() {
            OCI_INDEX.to_string()
        } else {
            OCI_MANIFEST.to_string()
        }
    });
    let is_index = raw.manifests.is_some() || media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let mut blobs = Vec::new();
    if !is_index {
        blobs.extend(raw.config.clone());
        blobs.extend(raw.layers.clone().unwrap_or_default());
    }
    Ok(Parsed {
        media_type,
        children: raw.manifests.unwrap_or_default(),
        blobs,
        subject: raw.subject,
    })
}
