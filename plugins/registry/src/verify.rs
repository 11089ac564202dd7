//! Proving a copy from the outside: every manifest at the target fetched by digest and re-hashed, every blob's
//! size checked with HEAD, a sample of blobs re-hashed in full, and the referrers of every manifest compared
//! with the source's.

use std::io::Read;

use respawn_plugin_sdk::{Failure, log, progress};
use serde::Serialize;

use crate::copy::{self, Graph};
use crate::digest::{Digest, Hasher};
use crate::registry::Registry;
use crate::source::{RegistrySource, Source};

#[derive(Debug, Default, Serialize)]
pub struct Verified {
    pub manifests: u64,
    pub blobs: u64,
    pub blobs_rehashed: u64,
    pub bytes_rehashed: u64,
    pub referrers: u64,
}

/// Bytes of a blob read per request when re-hashing.
const RANGE: u64 = 32 << 20;

/// Whether a blob is in the sample: chosen by its digest, so the same blobs are chosen every time.
fn sampled(digest: &Digest, percent: u8) -> bool {
    let bucket = u32::from_str_radix(&digest.hex()[..8], 16).unwrap_or(0) % 100;
    bucket < u32::from(percent)
}

/// Checks `reference` of `repo` at `target` against the graph read from the source.
pub fn image(
    target: &mut Registry,
    repo: &str,
    reference: &str,
    expected: &Graph,
    referrers: bool,
    sample_percent: u8,
) -> Result<Verified, Failure> {
    let at = format!("{}/{repo}:{reference}", target.host);
    let found = target.manifest_exists(repo, reference)?;
    if found.as_ref() != Some(&expected.top) {
        return Err(Failure::verification_failed(format!(
            "{at}: expected {}, found {}",
            expected.top,
            found.map_or("nothing".to_string(), |d| d.to_string())
        )));
    }
    let graph = {
        let mut source = RegistrySource {
            registry: target.clone(),
            repo: repo.to_string(),
        };
        copy::walk(&mut source, expected.top.as_str(), None, referrers)?
    };
    let mut verified = Verified {
        manifests: graph.nodes.len() as u64,
        ..Verified::default()
    };
    let blobs = graph.blobs();
    let mut chosen: Vec<_> = blobs
        .iter()
        .filter(|b| sampled(&b.digest, sample_percent))
        .collect();
    if chosen.is_empty() && sample_percent > 0 && !blobs.is_empty() {
        chosen.push(&blobs[0]);
    }
    let total: u64 = chosen.iter().map(|b| b.size).sum();
    for blob in &blobs {
        match target.blob_size(repo, &blob.digest)? {
            Some(size) if size == blob.size => verified.blobs += 1,
            Some(size) => {
                return Err(Failure::verification_failed(format!(
                    "{at}: blob {} has {size} bytes, its manifest says {}",
                    blob.digest, blob.size
                )));
            }
            None if !blob.urls.is_empty() => {
                log::debug(&format!("{}: a foreign layer, not checked", blob.digest))
            }
            None => {
                return Err(Failure::verification_failed(format!(
                    "{at}: blob {} is missing",
                    blob.digest
                )));
            }
        }
    }
    for blob in chosen {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        let mut offset = 0;
        while offset < blob.size {
            let length = RANGE.min(blob.size - offset);
            let mut stream = target.blob_range(repo, &blob.digest, offset, length)?;
            loop {
                let n = stream.read(&mut buf).map_err(|e| {
                    Failure::unavailable(format!("{at}: reading blob {}: {e}", blob.digest))
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                read += n as u64;
                verified.bytes_rehashed += n as u64;
            }
            offset += length;
            if read != offset {
                break;
            }
            progress::report(
                verified.bytes_rehashed,
                Some(total),
                "re-hashing sampled blobs",
            );
        }
        let actual = hasher.finish();
        if actual != blob.digest || read != blob.size {
            return Err(Failure::verification_failed(format!(
                "{at}: blob {} at the target hashes to {actual} ({read} bytes)",
                blob.digest
            )));
        }
        verified.blobs_rehashed += 1;
    }
    if referrers {
        for node in &expected.nodes {
            let want = expected.referrers_of(&node.fetched.digest);
            let have = graph.referrers_of(&node.fetched.digest);
            let missing: Vec<_> = want.iter().filter(|d| !have.contains(d)).collect();
            if !missing.is_empty() {
                return Err(Failure::verification_failed(format!(
                    "{at}: referrers of {} missing at the target: {}",
                    node.fetched.digest,
                    missing
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            verified.referrers += want.len() as u64;
        }
    }
    Ok(verified)
}

/// The source's graph for verify, under `name` for messages.
pub fn expected(
    source: &mut dyn Source,
    reference: &str,
    referrers: bool,
) -> Result<Graph, Failure> {
    copy::walk(source, reference, None, referrers)
}
