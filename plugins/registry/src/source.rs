//! Where images come from: another registry (`replicate`) or an OCI image layout in a store (`push-layout`).

use std::io::Read;

use respawn_plugin_sdk::{Failure, stores};
use serde::Deserialize;

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, OCI_INDEX};
use crate::registry::{Fetched, Registry};

/// Largest `index.json` or manifest read from a layout.
const MAX_LAYOUT_DOCUMENT: u64 = 4 << 20;
/// Bytes read from a store per `get-range` call (the host's cap is 16 MiB).
const STORE_READ: u64 = 8 << 20;

/// Referrers of one manifest as a source knows them.
#[derive(Default)]
pub struct Referrers {
    /// Referrer manifests, by digest.
    pub digests: Vec<Digest>,
    /// The tag-schema fallback index (`sha256-<hex>`), when the source has one, to copy as it is.
    pub fallback: Option<(String, Fetched)>,
    /// Cosign-style tags (`sha256-<hex>.sig`, `.att`, `.sbom`) and the manifests they name.
    pub tagged: Vec<(String, Fetched)>,
}

pub trait Source {
    /// For messages: `host/repo` or `store:prefix`.
    fn name(&self) -> String;
    fn manifest(&mut self, reference: &str) -> Result<Option<Fetched>, Failure>;
    /// `length` bytes of a blob from `offset`, streamed.
    fn blob(
        &mut self,
        blob: &Descriptor,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read>, Failure>;
    fn referrers(&mut self, digest: &Digest) -> Result<Referrers, Failure>;
    /// `(registry host, repository)` when blobs could be mounted from here by a registry on the same host.
    fn mountable(&self) -> Option<(String, String)>;
}

/// A repository of a registry.
pub struct RegistrySource {
    pub registry: Registry,
    pub repo: String,
}

impl Source for RegistrySource {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.repo)
    }

    fn manifest(&mut self, reference: &str) -> Result<Option<Fetched>, Failure> {
        self.registry.manifest(&self.repo, reference)
    }

    fn blob(
        &mut self,
        blob: &Descriptor,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read>, Failure> {
        self.registry
            .blob_range(&self.repo, &blob.digest, offset, length)
    }

    fn referrers(&mut self, digest: &Digest) -> Result<Referrers, Failure> {
        let mut found = Referrers::default();
        if let Some(index) = self.registry.referrers_api(&self.repo, digest)? {
            let parsed = manifest::parse(&index, OCI_INDEX, "referrers")?;
            found.digests = parsed.children.into_iter().map(|d| d.digest).collect();
            // A target without the API finds referrers only under the fallback tag: write it there too.
            if !found.digests.is_empty() {
                found.fallback =
                    Some((format!("sha256-{}", digest.hex()), fallback_index(&index)?));
            }
        } else {
            let tag = format!("sha256-{}", digest.hex());
            if let Some(index) = self.registry.manifest(&self.repo, &tag)? {
                let parsed = manifest::parse(&index.bytes, &index.media_type, &tag)?;
                found.digests = parsed.children.into_iter().map(|d| d.digest).collect();
                found.fallback = Some((tag, index));
            }
        }
        for suffix in ["sig", "att", "sbom"] {
            let tag = format!("sha256-{}.{suffix}", digest.hex());
            if let Some(fetched) = self.registry.manifest(&self.repo, &tag)? {
                found.tagged.push((tag, fetched));
            }
        }
        Ok(found)
    }

    fn mountable(&self) -> Option<(String, String)> {
        Some((self.registry.host.clone(), self.repo.clone()))
    }
}

/// An OCI image layout under a prefix of a store.
pub struct LayoutSource {
    pub store: String,
    pub prefix: String,
    index: Option<Vec<Descriptor>>,
    tags: Vec<(String, Descriptor)>,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<LayoutEntry>,
}

#[derive(Deserialize)]
struct LayoutEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

impl LayoutSource {
    pub fn new(store: &str, prefix: &str) -> LayoutSource {
        LayoutSource {
            store: store.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            index: None,
            tags: Vec::new(),
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn load_index(&mut self) -> Result<(), Failure> {
        if self.index.is_some() {
            return Ok(());
        }
        let key = self.key("index.json");
        let bytes = stores::get(&self.store, &key).map_err(|f| {
            Failure::new(
                f.kind,
                format!(
                    "{}:{key}: {} (is this an OCI image layout?)",
                    self.store, f.message
                ),
            )
        })?;
        if bytes.len() as u64 > MAX_LAYOUT_DOCUMENT {
            return Err(Failure::invalid_input(format!(
                "{}:{key} is larger than 4 MiB",
                self.store
            )));
        }
        let index: LayoutIndex = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::invalid_input(format!("{}:{key}: not an OCI index: {e}", self.store))
        })?;
        for entry in &index.manifests {
            if let Some(tag) = entry.annotations.get("org.opencontainers.image.ref.name") {
                self.tags.push((tag.clone(), entry.descriptor.clone()));
            }
        }
        self.index = Some(index.manifests.into_iter().map(|e| e.descriptor).collect());
        Ok(())
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Failure> {
        let key = self.key(&format!("blobs/sha256/{}", digest.hex()));
        match stores::head(&self.store, &key)? {
            Some(meta) if meta.size > MAX_LAYOUT_DOCUMENT => Err(Failure::invalid_input(format!(
                "{}:{key}: a manifest larger than 4 MiB",
                self.store
            ))),
            Some(_) => stores::get(&self.store, &key),
            None => Err(Failure::not_found(format!(
                "{}:{key}: blob {digest} is missing from the layout",
                self.store
            ))),
        }
    }
}

impl Source for LayoutSource {
    fn name(&self) -> String {
        format!("{}:{}", self.store, self.prefix)
    }

    fn manifest(&mut self, reference: &str) -> Result<Option<Fetched>, Failure> {
        self.load_index()?;
        let descriptor = if reference.starts_with("sha256:") {
            let digest = Digest::parse(reference)?;
            let listed = self
                .index
                .iter()
                .flatten()
                .find(|d| d.digest == digest)
                .cloned();
            match listed {
                Some(d) => d,
                None => {
                    // A child of an index: its media type is in the document itself.
                    let bytes = self.read_blob(&digest)?;
                    let parsed = manifest::parse(&bytes, "", reference)?;
                    return Ok(Some(checked(
                        bytes,
                        parsed.media_type,
                        &digest,
                        &self.name(),
                    )?));
                }
            }
        } else {
            match self.tags.iter().find(|(t, _)| t == reference) {
                Some((_, d)) => d.clone(),
                None => return Ok(None),
            }
        };
        let bytes = self.read_blob(&descriptor.digest)?;
        let media_type = if descriptor.media_type.is_empty() {
            manifest::parse(&bytes, "", reference)?.media_type
        } else {
            descriptor.media_type.clone()
        };
        Ok(Some(checked(
            bytes,
            media_type,
            &descriptor.digest,
            &self.name(),
        )?))
    }

    fn blob(
        &mut self,
        blob: &Descriptor,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read>, Failure> {
        let key = self.key(&format!("blobs/sha256/{}", blob.digest.hex()));
        if stores::head(&self.store, &key)?.is_none() {
            return Err(Failure::not_found(format!(
                "{}:{key}: blob {} is missing from the layout",
                self.store, blob.digest
            )));
        }
        let reader = StoreReader {
            store: self.store.clone(),
            key,
            offset,
            buffer: Vec::new(),
            at: 0,
            done: false,
        };
        Ok(Box::new(reader.take(length)))
    }

    fn referrers(&mut self, _digest: &Digest) -> Result<Referrers, Failure> {
        Ok(Referrers::default())
    }

    fn mountable(&self) -> Option<(String, String)> {
        None
    }
}

/// The tag-schema index for a referrers API answer: the same descriptors, as an image index of its own.
pub fn fallback_index(api_answer: &[u8]) -> Result<Fetched, Failure> {
    let answer: serde_json::Value = serde_json::from_slice(api_answer)
        .map_err(|e| Failure::unavailable(format!("a referrers answer that is not JSON: {e}")))?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": answer["manifests"].clone(),
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| Failure::internal(e.to_string()))?;
    Ok(Fetched {
        digest: crate::digest::sha256_digest(&bytes),
        bytes,
        media_type: OCI_INDEX.to_string(),
    })
}

fn checked(
    bytes: Vec<u8>,
    media_type: String,
    digest: &Digest,
    source: &str,
) -> Result<Fetched, Failure> {
    let actual = crate::digest::sha256_digest(&bytes);
    if &actual != digest {
        return Err(Failure::verification_failed(format!(
            "{source}: manifest {digest} hashes to {actual}"
        )));
    }
    Ok(Fetched {
        bytes,
        media_type,
        digest: actual,
    })
}

/// A store object read in ranges, as `Read`.
struct StoreReader {
    store: String,
    key: String,
    offset: u64,
    buffer: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buffer.len() {
            if self.done {
                return Ok(0);
            }
            self.buffer = stores::get_range(&self.store, &self.key, self.offset, STORE_READ)
                .map_err(|f| std::io::Error::other(f.message))?;
            self.at = 0;
            self.offset += self.buffer.len() as u64;
            if (self.buffer.len() as u64) < STORE_READ {
                self.done = true;
            }
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.buffer.len() - self.at);
        buf[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
