//! `respawn image verify`: re-hash every blob of a layout and check every descriptor reached from `index.json`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{
    Descriptor, Hasher, Index, Manifest, OciError, blob_rel, layout_key, parse_digest, read_index,
    read_small_blob,
};
use crate::stores::object_path;

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProblem {
    pub digest: String,
    pub key: String,
    pub expected: String,
    pub got: String,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: usize,
    pub bytes: u64,
    /// Manifests and indexes reached from `index.json`.
    pub manifests: usize,
    pub problems: Vec<BlobProblem>,
    /// Each entry of `index.json`: its tag (`ref.name`), if any, and its digest, as a run's report names
    /// the image it restored.
    pub tagged: Vec<(Option<String>, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-hashes every blob of a layout against its name, then walks `index.json` → manifests → configs and layers,
/// checking each descriptor's blob is present with its size. A missing or invalid layout is an `Err`; bad
/// blobs are listed in the report.
pub async fn verify(store: &dyn ObjectStore, prefix: &str) -> Result<VerifyReport, OciError> {
    let index = read_index(store, prefix).await?;
    let mut report = VerifyReport {
        tagged: index
            .manifests
            .iter()
            .map(|d| (d.ref_name().map(str::to_string), d.digest.clone()))
            .collect(),
        ..VerifyReport::default()
    };
    let blobs_prefix = layout_key(prefix, "blobs");
    let mut listed: Vec<String> = Vec::new();
    let mut listing = store.list(Some(&object_path(&blobs_prefix)?));
    while let Some(meta) = listing.next().await {
        listed.push(meta?.location.to_string());
    }
    listed.sort();
    // digest → (size, content matches the name)
    let mut stored: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for key in listed {
        let rel = key
            .strip_prefix(&blobs_prefix)
            .unwrap_or(&key)
            .trim_start_matches('/');
        let digest = rel.replacen('/', ":", 1);
        let algorithm = match parse_digest(&digest) {
            Ok((algorithm, _)) => algorithm,
            Err(_) => {
                report.problems.push(BlobProblem {
                    digest: rel.to_string(),
                    key: key.clone(),
                    expected: "a blob named blobs/<sha256|sha512>/<hex>".into(),
                    got: "an unexpected object".into(),
                });
                continue;
            }
        };
        let got = store.get(&object_path(&key)?).await?;
        let mut stream = crate::body_stream(got);
        let mut hasher = Hasher::new(algorithm);
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let actual = hasher.finish();
        report.blobs += 1;
        report.bytes += size;
        if actual != digest {
            report.problems.push(BlobProblem {
                digest: digest.clone(),
                key: key.clone(),
                expected: digest.clone(),
                got: format!("{actual} ({size} bytes)"),
            });
        }
        stored.insert(digest.clone(), (size, actual == digest));
    }

    #[derive(PartialEq)]
    enum Kind {
        Image,
        Content,
    }
    let mut queue: VecDeque<(Descriptor, String, Kind)> = index
        .manifests
        .into_iter()
        .map(|d| (d, "index.json".to_string(), Kind::Image))
        .collect();
    let mut walked = BTreeSet::new();
    while let Some((desc, referrer, kind)) = queue.pop_front() {
        let key = blob_rel(&desc.digest)
            .map(|rel| layout_key(prefix, &rel))
            .unwrap_or_default();
        let mut problem = |expected: String, got: String| {
            report.problems.push(BlobProblem {
                digest: desc.digest.clone(),
                key: key.clone(),
                expected,
                got,
            })
        };
        if let Err(e) = parse_digest(&desc.digest) {
            problem(format!("a valid digest in {referrer}"), e.to_string());
            continue;
        }
        let Some(&(size, content_ok)) = stored.get(&desc.digest) else {
            if !desc.extra.contains_key("urls") {
                problem(
                    format!("a blob of {} bytes, referenced by {referrer}", desc.size),
                    "missing".into(),
                );
            }
            continue;
        };
        if size != desc.size {
            problem(
                format!("{} bytes, as {referrer} says", desc.size),
                format!("{size} bytes"),
            );
            continue;
        }
        if !content_ok || kind != Kind::Image || !walked.insert(desc.digest.clone()) {
            continue;
        }
        report.manifests += 1;
        let parsed = read_small_blob(store, prefix, &desc)
            .await
            .and_then(|bytes| {
                serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| OciError::BadBlob {
                    digest: desc.digest.clone(),
                    why: e.to_string(),
                })
            });
        let value = match parsed {
            Ok(v) => v,
            Err(e) => {
                problem(
                    "an image manifest or index".into(),
                    format!("unreadable: {e}"),
                );
                continue;
            }
        };
        if value.get("manifests").is_some() {
            match serde_json::from_value::<Index>(value) {
                Ok(nested) => queue.extend(
                    nested
                        .manifests
                        .into_iter()
                        .map(|d| (d, desc.digest.clone(), Kind::Image)),
                ),
                Err(e) => problem("an image index".into(), format!("invalid: {e}")),
            }
        } else {
            match serde_json::from_value::<Manifest>(value) {
                Ok(m) => {
                    queue.push_back((m.config, desc.digest.clone(), Kind::Content));
                    queue.extend(
                        m.layers
                            .into_iter()
                            .map(|d| (d, desc.digest.clone(), Kind::Content)),
                    );
                }
                Err(e) => problem("an image manifest".into(), format!("invalid: {e}")),
            }
        }
    }
    Ok(report)
}
