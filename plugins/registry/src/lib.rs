//! The `registry` provider: brings container images back in the DR region.
//!
//! - `registry/replicate` copies images, whole graphs byte-exact, from a source registry to a target registry;
//! - `registry/push-layout` pushes OCI image layouts kept in a store (what `respawn image pack` and skopeo
//!   write) into a registry.
//!
//! Plan only reads (GET and HEAD) and says what apply would push; apply is idempotent and journals each upload's
//! progress, so a resumed step continues a large blob; verify re-reads everything at the target; destroy
//! removes what this run pushed and nothing that was there before. See docs/providers/registry.md.

mod copy;
mod created;
mod destroy;
mod digest;
mod manifest;
mod record;
mod registry;
mod source;
mod transfer;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use respawn_plugin_sdk::{Context, Failure, Phase, Plugin, PluginInfo, export_plugin, operation};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::copy::Graph;
use crate::registry::{Endpoint, Registry};
use crate::source::{LayoutSource, RegistrySource, Source};

struct RegistryProvider;

const ENDPOINT_SCHEMA: &str = r#"{
  "type": "object", "required": ["registry"], "additionalProperties": false,
  "properties": {
    "registry": { "type": "string", "description": "host[:port]" },
    "insecure": { "type": "boolean", "description": "plain http; loopback only" },
    "auth": { "type": "object", "required": ["password_secret"], "additionalProperties": false,
      "properties": { "username": { "type": "string" }, "username_secret": { "type": "string" },
                      "password_secret": { "type": "string" } } }
  }
}"#;

fn replicate_schema() -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["source", "target", "images"], "additionalProperties": false,
  "properties": {{
    "source": {ENDPOINT_SCHEMA},
    "target": {ENDPOINT_SCHEMA},
    "images": {{ "type": "array", "minItems": 1, "items": {{ "type": "object", "required": ["from"],
      "additionalProperties": false,
      "properties": {{ "from": {{ "type": "string", "description": "repo:tag or repo@sha256:…" }},
                      "to": {{ "type": "string", "description": "repo[:tag]; defaults to from" }} }} }} }},
    "referrers": {{ "type": "boolean", "default": true }},
    "chunk_mib": {{ "type": "integer", "minimum": 1, "maximum": 256, "default": 32 }},
    "sample_percent": {{ "type": "integer", "minimum": 0, "maximum": 100, "default": 10 }}
  }}
}}"#
    )
}

fn push_layout_schema() -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["store", "target", "images"], "additionalProperties": false,
  "properties": {{
    "store": {{ "type": "string" }},
    "target": {ENDPOINT_SCHEMA},
    "images": {{ "type": "array", "minItems": 1, "items": {{ "type": "object",
      "required": ["prefix", "tag", "to"], "additionalProperties": false,
      "properties": {{ "prefix": {{ "type": "string" }}, "tag": {{ "type": "string" }},
                      "to": {{ "type": "string", "description": "repo[:tag]; the tag defaults to `tag`" }} }} }} }},
    "chunk_mib": {{ "type": "integer", "minimum": 1, "maximum": 256, "default": 32 }},
    "sample_percent": {{ "type": "integer", "minimum": 0, "maximum": 100, "default": 10 }}
  }}
}}"#
    )
}

impl Plugin for RegistryProvider {
    fn describe() -> PluginInfo {
        PluginInfo::new("registry", env!("CARGO_PKG_VERSION"))
            .operation(operation(
                "replicate",
                "Copy images, whole graphs byte-exact, from one registry to another",
                &replicate_schema(),
            ))
            .operation(operation(
                "push-layout",
                "Push OCI image layouts from a store into a registry",
                &push_layout_schema(),
            ))
            .capability("http")
            .capability("secrets")
            .capability("stores")
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let out = match ctx.operation.as_str() {
            "replicate" => replicate(&ctx, respawn_plugin_sdk::params(params)?)?,
            "push-layout" => push_layout(&ctx, respawn_plugin_sdk::params(params)?)?,
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(RegistryProvider);

fn yes() -> bool {
    true
}
fn default_chunk() -> u64 {
    32
}
fn default_sample() -> u8 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicateParams {
    source: Endpoint,
    target: Endpoint,
    images: Vec<ImageCopy>,
    #[serde(default = "yes")]
    referrers: bool,
    #[serde(default = "default_chunk")]
    chunk_mib: u64,
    #[serde(default = "default_sample")]
    sample_percent: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageCopy {
    from: String,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushLayoutParams {
    store: String,
    target: Endpoint,
    images: Vec<LayoutImage>,
    #[serde(default = "default_chunk")]
    chunk_mib: u64,
    #[serde(default = "default_sample")]
    sample_percent: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutImage {
    prefix: String,
    tag: String,
    to: String,
}

/// `repo[:tag][@sha256:…]` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    repo: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    fn parse(text: &str, field: &str) -> Result<Reference, Failure> {
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => {
                let digest = digest::Digest::parse(d).map_err(|f| {
                    Failure::invalid_input(format!("{field} `{text}`: {}", f.message))
                })?;
                (n, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let (repo, tag) = match name.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (name, None),
        };
        let repo_ok = !repo.is_empty()
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let tag_ok = tag.as_deref().is_none_or(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !repo_ok || !tag_ok {
            return Err(Failure::invalid_input(format!(
                "{field} `{text}`: expected repository[:tag][@sha256:…] (lowercase repository path, tag of letters, \
                 digits, `.`, `_`, `-`), without the registry host"
            )));
        }
        Ok(Reference {
            repo: repo.to_string(),
            tag,
            digest,
        })
    }

    /// What to ask the source for: the digest when pinned, else the tag, else `latest`.
    fn source_reference(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }
}

fn chunk_bytes(mib: u64) -> Result<u64, Failure> {
    if !(1..=256).contains(&mib) {
        return Err(Failure::invalid_input(format!(
            "chunk_mib: {mib} is not between 1 and 256"
        )));
    }
    Ok(mib << 20)
}

fn check_sample(percent: u8) -> Result<u8, Failure> {
    if percent > 100 {
        return Err(Failure::invalid_input(format!(
            "sample_percent: {percent} is more than 100"
        )));
    }
    Ok(percent)
}

/// One image of a step: where it comes from, where it goes.
struct Job {
    /// As the params name it, for outputs.
    label: String,
    source_repo: String,
    source_reference: String,
    repo: String,
    tag: Option<String>,
    /// Where the image came from, as its `artifacts` entry says (docs/plugin-abi.md, "Artifacts").
    origin: Value,
}

fn replicate(ctx: &Context, p: ReplicateParams) -> Result<Value, Failure> {
    let chunk = chunk_bytes(p.chunk_mib)?;
    let sample = check_sample(p.sample_percent)?;
    let mut jobs = Vec::new();
    for (i, image) in p.images.iter().enumerate() {
        let from = Reference::parse(&image.from, &format!("images[{i}].from"))?;
        let to = match &image.to {
            Some(to) => Reference::parse(to, &format!("images[{i}].to"))?,
            None => Reference {
                repo: from.repo.clone(),
                tag: from.tag.clone(),
                digest: None,
            },
        };
        if to.digest.is_some() {
            return Err(Failure::invalid_input(format!(
                "images[{i}].to `{}`: a destination is repository[:tag]; its digest is the source's",
                image.to.as_deref().unwrap_or_default()
            )));
        }
        let scheme = if p.source.insecure { "http" } else { "https" };
        let mut origin =
            json!({ "url": format!("{scheme}://{}", p.source.registry), "prefix": from.repo });
        if let Some(tag) = &from.tag {
            origin["tag"] = json!(tag);
        }
        jobs.push(Job {
            origin,
            label: image.from.clone(),
            source_repo: from.repo.clone(),
            source_reference: from.source_reference(),
            repo: to.repo,
            tag: to.tag.or(from.tag),
        });
    }
    let source = Registry::connect(&p.source, "source")?;
    let mut target = Registry::connect(&p.target, "target")?;
    run(ctx, &mut target, jobs, chunk, sample, p.referrers, |job| {
        Box::new(RegistrySource {
            registry: source.clone(),
            repo: job.source_repo.clone(),
        })
    })
}

fn push_layout(ctx: &Context, p: PushLayoutParams) -> Result<Value, Failure> {
    let chunk = chunk_bytes(p.chunk_mib)?;
    let sample = check_sample(p.sample_percent)?;
    let mut jobs = Vec::new();
    for (i, image) in p.images.iter().enumerate() {
        let to = Reference::parse(&image.to, &format!("images[{i}].to"))?;
        if to.digest.is_some() {
            return Err(Failure::invalid_input(format!(
                "images[{i}].to `{}`: give repository[:tag]",
                image.to
            )));
        }
        jobs.push(Job {
            origin: json!({ "store": p.store, "prefix": image.prefix, "tag": image.tag }),
            label: format!("{}:{}:{}", p.store, image.prefix, image.tag),
            source_repo: image.prefix.clone(),
            source_reference: image.tag.clone(),
            repo: to.repo,
            tag: to.tag.or(Some(image.tag.clone())),
        });
    }
    let mut target = Registry::connect(&p.target, "target")?;
    let store = p.store.clone();
    let out = run(ctx, &mut target, jobs, chunk, sample, false, |job| {
        Box::new(LayoutSource::new(&store, &job.source_repo))
    })?;
    Ok(out)
}

fn run(
    ctx: &Context,
    target: &mut Registry,
    jobs: Vec<Job>,
    chunk: u64,
    sample: u8,
    referrers: bool,
    mut open: impl FnMut(&Job) -> Box<dyn Source>,
) -> Result<Value, Failure> {
    match ctx.phase {
        Phase::Destroy => destroy::destroy(target),
        Phase::Plan => {
            let mut would = Vec::new();
            for job in &jobs {
                let mut source = open(job);
                let graph = copy::walk(
                    source.as_mut(),
                    &job.source_reference,
                    job.tag.as_deref(),
                    referrers,
                )?;
                would.push(plan_line(target, job, &graph)?);
            }
            Ok(json!({ "would": would }))
        }
        Phase::Apply => {
            copy::settle_pending(target)?;
            let mut known = HashMap::new();
            let mut digests = serde_json::Map::new();
            let mut images = Vec::new();
            let mut bytes = 0;
            let mut recovery_point: Option<(i64, String)> = None;
            let mut artifacts = Vec::new();
            for job in &jobs {
                let mut source = open(job);
                let graph = copy::walk(
                    source.as_mut(),
                    &job.source_reference,
                    job.tag.as_deref(),
                    referrers,
                )?;
                let created = created::newest(source.as_mut(), &graph);
                let mut artifact = json!({
                    "kind": "registry-image",
                    "digest": graph.top,
                    "source": job.origin,
                });
                if let Some((_, when)) = &created {
                    artifact["created"] = json!(when);
                }
                artifacts.push(artifact);
                if let Some(created) = created
                    && recovery_point.as_ref().is_none_or(|(s, _)| created.0 > *s)
                {
                    recovery_point = Some(created);
                }
                let pushed = copy::push(
                    &graph,
                    source.as_mut(),
                    target,
                    &job.repo,
                    chunk,
                    &mut known,
                )?;
                bytes += pushed.bytes_copied;
                respawn_plugin_sdk::log::info(&format!(
                    "{} → {}: {} ({} manifests pushed, {} there; {} blobs copied, {} bytes; {} there; {} mounted)",
                    job.label,
                    destination(target, job),
                    graph.top,
                    pushed.manifests,
                    pushed.manifests_present,
                    pushed.blobs_copied,
                    pushed.bytes_copied,
                    pushed.blobs_present,
                    pushed.blobs_mounted
                ));
                digests.insert(job.label.clone(), json!(graph.top));
                images.push(json!({
                    "from": job.label,
                    "to": destination(target, job),
                    "digest": graph.top,
                    "pushed": pushed,
                }));
            }
            let mut out = json!({
                "digests": digests, "images": images, "bytes_copied": bytes, "artifacts": artifacts
            });
            if let Some((_, when)) = recovery_point {
                out["recovery_point"] = json!(when);
            }
            Ok(out)
        }
        Phase::Verify => {
            let mut verified = Vec::new();
            for job in &jobs {
                let mut source = open(job);
                let expected = verify::expected(source.as_mut(), &job.source_reference, referrers)?;
                let reference = job.tag.clone().unwrap_or_else(|| expected.top.to_string());
                let report =
                    verify::image(target, &job.repo, &reference, &expected, referrers, sample)?;
                verified.push(json!({ "image": destination(target, job), "digest": expected.top, "checked": report }));
            }
            Ok(json!({ "verified": verified }))
        }
    }
}

fn destination(target: &Registry, job: &Job) -> String {
    match &job.tag {
        Some(tag) => format!("{}/{}:{tag}", target.host, job.repo),
        None => format!("{}/{}", target.host, job.repo),
    }
}

/// What apply would do for one image, from HEADs at the target.
fn plan_line(target: &mut Registry, job: &Job, graph: &Graph) -> Result<String, Failure> {
    let mut missing_manifests = 0;
    for node in &graph.nodes {
        if target
            .manifest_exists(&job.repo, node.fetched.digest.as_str())?
            .is_none()
        {
            missing_manifests += 1;
        }
    }
    let (mut missing_blobs, mut missing_bytes, mut present) = (0, 0u64, 0);
    for blob in graph.blobs() {
        match target.blob_size(&job.repo, &blob.digest)? {
            Some(_) => present += 1,
            None => {
                missing_blobs += 1;
                missing_bytes += blob.size;
            }
        }
    }
    let tag_now = match &job.tag {
        Some(tag) => target.manifest_exists(&job.repo, tag)?,
        None => None,
    };
    let tag_note = match (&job.tag, tag_now) {
        (Some(tag), Some(now)) if now == graph.top => format!("; tag {tag} already names it"),
        (Some(tag), Some(now)) => format!("; move tag {tag} from {now}"),
        (Some(tag), None) => format!("; create tag {tag}"),
        (None, _) => String::new(),
    };
    Ok(format!(
        "{} → {} ({}): push {missing_manifests} of {} manifests and {missing_blobs} blobs ({missing_bytes} bytes); \
         {present} blobs already there{tag_note}",
        job.label,
        destination(target, job),
        graph.top,
        graph.nodes.len()
    ))
}
