//! An image's whole graph, byte-exact: every platform of an index, children before parents, each child pushed
//! by digest and only the top manifest by tag; referrers (the API or the `sha256-<hex>` tag fallback) and
//! cosign-style tags follow their subject. Manifests are copied as the bytes they are, and blobs never
//! re-compressed.

use std::collections::{HashMap, HashSet};

use respawn_plugin_sdk::{Failure, log};

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, Parsed};
use crate::record::{self, Item};
use crate::registry::{Fetched, Registry};
use crate::source::Source;
use crate::transfer::{Outcome, Transfer};

/// Most manifests one image's graph may have, referrers included.
const MAX_MANIFESTS: usize = 10_000;
/// Deepest chain of referrers of referrers followed.
const MAX_REFERRER_DEPTH: u32 = 8;

pub struct Node {
    pub fetched: Fetched,
    pub parsed: Parsed,
    /// The tag it is pushed under (the top manifest, a referrers index, a signature); else pushed by digest.
    pub tag: Option<String>,
}

pub struct Graph {
    /// Push order: children before parents, referrers after their subject.
    pub nodes: Vec<Node>,
    pub top: Digest,
}

impl Graph {
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = HashSet::new();
        self.nodes
            .iter()
            .flat_map(|n| n.parsed.blobs.iter())
            .filter(|b| seen.insert(b.digest.clone()))
            .collect()
    }

    /// Digests of the manifests that refer to `digest` (have it as subject).
    pub fn referrers_of(&self, digest: &Digest) -> Vec<Digest> {
        let mut found: Vec<Digest> = self
            .nodes
            .iter()
            .filter(|n| {
                n.parsed
                    .subject
                    .as_ref()
                    .is_some_and(|s| s.digest == *digest)
            })
            .map(|n| n.fetched.digest.clone())
            .collect();
        found.sort();
        found
    }
}

/// Reads the graph of `reference` from `source`; the top manifest gets `top_tag` (if any).
pub fn walk(
    source: &mut dyn Source,
    reference: &str,
    top_tag: Option<&str>,
    referrers: bool,
) -> Result<Graph, Failure> {
    let top = source
        .manifest(reference)?
        .ok_or_else(|| Failure::not_found(format!("{}: no image `{reference}`", source.name())))?;
    let top_digest = top.digest.clone();
    let mut walker = Walker {
        source,
        nodes: Vec::new(),
        seen: HashSet::new(),
    };
    walker.visit(top, top_tag.map(str::to_string))?;
    if referrers {
        let mut queue: Vec<(Digest, u32)> = walker
            .nodes
            .iter()
            .map(|n| (n.fetched.digest.clone(), 0))
            .collect();
        let mut next = 0;
        while next < queue.len() {
            let (subject, depth) = queue[next].clone();
            next += 1;
            if depth >= MAX_REFERRER_DEPTH {
                log::warn(&format!(
                    "referrers of {subject}: deeper than {MAX_REFERRER_DEPTH} levels, not followed"
                ));
                continue;
            }
            let before = walker.nodes.len();
            let found = walker.source.referrers(&subject)?;
            for digest in found.digests {
                if walker.seen.contains(&digest) {
                    log::debug(&format!(
                        "referrer {digest} of {subject} is already in the graph (a loop or a repeat)"
                    ));
                    continue;
                }
                let fetched = walker.fetch_child(&digest)?;
                walker.visit(fetched, None)?;
            }
            for (tag, fetched) in found.fallback.into_iter().chain(found.tagged) {
                if walker.seen.contains(&fetched.digest) {
                    log::debug(&format!(
                        "tag {tag} names {} already in the graph",
                        fetched.digest
                    ));
                    walker.retag(&fetched.digest, &tag);
                    continue;
                }
                walker.visit(fetched, Some(tag))?;
            }
            queue.extend(
                walker.nodes[before..]
                    .iter()
                    .map(|n| (n.fetched.digest.clone(), depth + 1)),
            );
        }
    }
    Ok(Graph {
        nodes: walker.nodes,
        top: top_digest,
    })
}

struct Walker<'a> {
    source: &'a mut dyn Source,
    nodes: Vec<Node>,
    seen: HashSet<Digest>,
}

impl Walker<'_> {
    fn fetch_child(&mut self, digest: &Digest) -> Result<Fetched, Failure> {
        self.source.manifest(digest.as_str())?.ok_or_else(|| {
            Failure::not_found(format!(
                "{}: manifest {digest} is referenced but not there",
                self.source.name()
            ))
        })
    }

    fn visit(&mut self, fetched: Fetched, tag: Option<String>) -> Result<(), Failure> {
        if !self.seen.insert(fetched.digest.clone()) {
            return Ok(());
        }
        if self.seen.len() > MAX_MANIFESTS {
            return Err(Failure::invalid_input(format!(
                "{}: more than {MAX_MANIFESTS} manifests in one image's graph",
                self.source.name()
            )));
        }
        let what = format!("{} manifest {}", self.source.name(), fetched.digest);
        let parsed = manifest::parse(&fetched.bytes, &fetched.media_type, &what)?;
        for child in &parsed.children {
            if self.seen.contains(&child.digest) {
                continue;
            }
            let fetched = self.fetch_child(&child.digest)?;
            self.visit(fetched, None)?;
        }
        self.nodes.push(Node {
            fetched,
            parsed,
            tag,
        });
        Ok(())
    }

    fn retag(&mut self, digest: &Digest, tag: &str) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.fetched.digest == *digest)
            && node.tag.is_none()
        {
            node.tag = Some(tag.to_string());
        }
    }
}

/// What a push did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Pushed {
    pub manifests: u64,
    pub manifests_present: u64,
    pub blobs_copied: u64,
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    pub bytes_copied: u64,
}

/// Pushes `graph` from `source` into `repo` of `target`.
pub fn push(
    graph: &Graph,
    source: &mut dyn Source,
    target: &mut Registry,
    repo: &str,
    chunk: u64,
    known: &mut HashMap<Digest, String>,
) -> Result<Pushed, Failure> {
    let mut pushed = Pushed::default();
    let total: u64 = graph.blobs().iter().map(|b| b.size).sum();
    let mut done_blobs = HashSet::new();
    let mut bytes_seen = 0u64;
    for node in &graph.nodes {
        for blob in &node.parsed.blobs {
            if !done_blobs.insert(blob.digest.clone()) {
                continue;
            }
            let mut transfer = Transfer {
                target: &mut *target,
                repo,
                chunk,
                known: &mut *known,
            };
            match transfer.blob(source, blob) {
                Ok(Outcome::Present) => pushed.blobs_present += 1,
                Ok(Outcome::Mounted) => pushed.blobs_mounted += 1,
                Ok(Outcome::Copied { bytes, .. }) => {
                    pushed.blobs_copied += 1;
                    pushed.bytes_copied += bytes;
                }
                Err(e)
                    if e.kind == respawn_plugin_sdk::FailureKind::NotFound
                        && !blob.urls.is_empty() =>
                {
                    log::warn(&format!(
                        "{}: foreign layer not in the source, left to its URLs",
                        blob.digest
                    ));
                }
                Err(e) => return Err(e),
            }
            bytes_seen += blob.size;
            respawn_plugin_sdk::progress::report(
                bytes_seen,
                Some(total),
                &format!("{repo}: blobs"),
            );
        }
        if ensure_manifest(target, repo, node)? {
            pushed.manifests += 1;
        } else {
            pushed.manifests_present += 1;
        }
    }
    Ok(pushed)
}

/// Puts one manifest (by its tag when it has one, else by digest) unless it is there; true when it pushed. A tag
/// that named something else is recorded with what it named, for destroy to put back; a referrers index tag
/// that the target already has gets the union of both lists, so the target's own referrers stay findable.
fn ensure_manifest(target: &mut Registry, repo: &str, node: &Node) -> Result<bool, Failure> {
    let Some(tag) = &node.tag else {
        let digest = &node.fetched.digest;
        if target.manifest_exists(repo, digest.as_str())?.is_some() {
            return Ok(false);
        }
        let items = vec![Item::manifest(repo, digest)];
        record::announce(&items);
        target.put_manifest(repo, digest.as_str(), &node.fetched)?;
        record::created(items);
        return Ok(true);
    };
    let now = target.manifest_exists(repo, tag)?;
    let pushing = match &now {
        Some(other) if is_referrers_tag(tag) && *other != node.fetched.digest => {
            let theirs = target.manifest(repo, other.as_str())?.ok_or_else(|| {
                Failure::conflict(format!(
                    "{}/{repo}:{tag} changed while it was read",
                    target.host
                ))
            })?;
            merge_indexes(&theirs, &node.fetched)?
        }
        _ => node.fetched.clone(),
    };
    if now.as_ref() == Some(&pushing.digest) {
        return Ok(false);
    }
    let mut items = Vec::new();
    if target
        .manifest_exists(repo, pushing.digest.as_str())?
        .is_none()
    {
        items.push(Item::manifest(repo, &pushing.digest));
    }
    items.push(Item {
        repo: repo.to_string(),
        digest: pushing.digest.clone(),
        tag: Some(tag.clone()),
        replaced: now,
    });
    record::announce(&items);
    target.put_manifest(repo, tag, &pushing)?;
    record::created(items);
    Ok(true)
}

/// `sha256-<64 hex>`: the tag under which the OCI tag-schema fallback keeps a manifest's referrers.
fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An index listing what `theirs` lists, then what `ours` adds.
fn merge_indexes(theirs: &Fetched, ours: &Fetched) -> Result<Fetched, Failure> {
    let parse = |f: &Fetched| -> Result<serde_json::Value, Failure> {
        serde_json::from_slice(&f.bytes)
            .map_err(|e| Failure::invalid_input(format!("referrers index {}: {e}", f.digest)))
    };
    let (mut merged, ours_doc) = (parse(theirs)?, parse(ours)?);
    let mut list = merged["manifests"].as_array().cloned().unwrap_or_default();
    for entry in ours_doc["manifests"].as_array().into_iter().flatten() {
        if !list.iter().any(|e| e["digest"] == entry["digest"]) {
            list.push(entry.clone());
        }
    }
    merged["manifests"] = serde_json::Value::Array(list);
    let bytes = serde_json::to_vec(&merged)
        .map_err(|e| Failure::internal(format!("merging referrers indexes: {e}")))?;
    Ok(Fetched {
        digest: crate::digest::sha256_digest(&bytes),
        bytes,
        media_type: manifest::OCI_INDEX.to_string(),
    })
}

/// Settles what an interrupted attempt announced: what exists now is this run's.
pub fn settle_pending(target: &mut Registry) -> Result<(), Failure> {
    let pending = record::pending();
    if pending.is_empty() {
        return Ok(());
    }
    let mut made = Vec::new();
    for item in pending {
        let reference = item.tag.clone().unwrap_or_else(|| item.digest.to_string());
        if target.manifest_exists(&item.repo, &reference)?.as_ref() == Some(&item.digest) {
            made.push(item);
        }
    }
    record::created(made);
    Ok(())
}
