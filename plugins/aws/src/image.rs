//! `aws/copy-image`: an AMI and its snapshots copied from the source region into the target region.
//!
//! Apply keeps the copy's name and ClientToken in step state before CopyImage, then its id right after; a retried
//! or resumed step finds the copy by id, else by that name, and never asks for a second. The copy is tagged with
//! the run and step (its snapshots too, once it is available), which is how destroy finds it when state did not
//! keep its id.

use std::collections::BTreeMap;

use respawn_plugin_sdk::{Context, Failure, Phase, log, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Aws, CredentialSecrets, NodeExt, Service, all, parse, tags_of};
use crate::{
    Connection, Poll, default_wait, derived_token, ec2_tag, filters, made_by, made_by_run, run_tags,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyImageParams {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    credentials: CredentialSecrets,
    #[serde(default = "default_wait")]
    wait_seconds: u64,
    source_region: String,
    image: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    encrypted: bool,
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// What DescribeImages says of one image.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub state: String,
    pub architecture: String,
    pub root_device_type: String,
    pub snapshots: Vec<String>,
    pub tags: Vec<(String, String)>,
}

pub fn describe_images(aws: &Aws, params: &[(String, String)]) -> Result<Vec<Image>, Failure> {
    let xml = aws.query(Service::Ec2, "DescribeImages", params)?;
    let doc = parse(&xml)?;
    let images = match all(&doc, "imagesSet").first() {
        Some(set) => set.children().filter(|n| n.is_element()).collect(),
        None => Vec::new(),
    };
    Ok(images
        .into_iter()
        .map(|item| Image {
            id: item.text_of("imageId").unwrap_or_default(),
            name: item.text_of("name").unwrap_or_default(),
            state: item.text_of("imageState").unwrap_or_default(),
            architecture: item.text_of("architecture").unwrap_or_default(),
            root_device_type: item.text_of("rootDeviceType").unwrap_or_default(),
            snapshots: item
                .list("blockDeviceMapping")
                .iter()
                .filter_map(|m| m.child("ebs").and_then(|e| e.text_of("snapshotId")))
                .filter(|s| !s.is_empty())
                .collect(),
            tags: tags_of(&item),
        })
        .filter(|i| i.state != "deregistered")
        .collect())
}

/// The image `id`, or none when the region has no such image.
pub fn image_by_id(aws: &Aws, id: &str) -> Result<Option<Image>, Failure> {
    match describe_images(aws, &[("ImageId.1".into(), id.into())]) {
        Ok(images) => Ok(images.into_iter().next()),
        Err(f) if f.kind == respawn_plugin_sdk::FailureKind::NotFound => Ok(None),
        Err(f) => Err(f),
    }
}

fn image_by_name(aws: &Aws, name: &str) -> Result<Option<Image>, Failure> {
    let mut params = vec![("Owner.1".to_string(), "self".to_string())];
    params.extend(filters(&[("name", &[name])]));
    Ok(describe_images(aws, &params)?.into_iter().next())
}

/// AMI names: 3 to 128 characters of letters, digits and `()[] ./-'@_`.
fn check_name(name: &str) -> Result<(), Failure> {
    let ok = (3..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Failure::invalid_input(format!(
            "name `{name}`: an AMI name is 3 to 128 letters, digits and ()[] ./-'@_"
        )))
    }
}

pub fn run(ctx: &Context, p: CopyImageParams) -> Result<Value, Failure> {
    let conn = Connection {
        phase: ctx.phase,
        region: &p.region,
        endpoint: p.endpoint.as_deref(),
        credentials: &p.credentials,
    };
    let target = conn.connect()?;
    if ctx.phase == Phase::Destroy {
        return destroy(ctx, &target);
    }
    let source = target.in_region(&p.source_region);
    let original = image_by_id(&source, &p.image)?.ok_or_else(|| {
        Failure::not_found(format!(
            "image {} not found in {} (the source region)",
            p.image, p.source_region
        ))
    })?;
    let name = match &p.name {
        Some(n) => n.clone(),
        None => {
            let base: String = original.name.chars().take(80).collect();
            format!("{base}-dr-{}", &derived_token(ctx, "copy-image")[..12])
        }
    };
    check_name(&name)?;
    match ctx.phase {
        Phase::Plan => plan(ctx, &target, &original, &p, &name),
        Phase::Apply => apply(ctx, &target, &original, &p, &name),
        Phase::Verify => verify(ctx, &target, &original, &name),
        Phase::Destroy => unreachable!("handled above"),
    }
}

fn plan(
    ctx: &Context,
    target: &Aws,
    original: &Image,
    p: &CopyImageParams,
    name: &str,
) -> Result<Value, Failure> {
    let would = match image_by_name(target, name)? {
        Some(found) if made_by(ctx, &found.tags) => format!(
            "{name} is already in {} as {} ({}): apply adopts it",
            target.region, found.id, found.state
        ),
        Some(found) => {
            return Err(Failure::conflict(format!(
                "an image named {name} already exists in {} ({}) and this run did not make it; choose another `name`",
                target.region, found.id
            )));
        }
        None => format!(
            "copy {} ({}, {} snapshots) from {} to {} as {name}, tagged respawn:run={} respawn:step={}",
            original.id,
            original.name,
            original.snapshots.len(),
            p.source_region,
            target.region,
            ctx.run_id,
            ctx.step_id
        ),
    };
    Ok(json!({ "would": [would] }))
}

fn apply(
    ctx: &Context,
    target: &Aws,
    original: &Image,
    p: &CopyImageParams,
    name: &str,
) -> Result<Value, Failure> {
    let mut tags = run_tags(ctx);
    tags.extend(p.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let kept = match state::get("image_id") {
        Some(id) => image_by_id(target, &id)?.map(|i| i.id),
        None => None,
    };
    let id = match kept {
        Some(id) => {
            log::info(&format!("{id}: copied by an earlier attempt"));
            id
        }
        None => match image_by_name(target, name)? {
            // Ours by tag, or untagged under the name this step recorded before its CopyImage (the runner died
            // between the copy and the tags).
            Some(found)
                if made_by(ctx, &found.tags)
                    || (state::get("name").as_deref() == Some(name)
                        && !found.tags.iter().any(|(k, _)| k == "respawn:run")) =>
            {
                log::info(&format!(
                    "{}: {name} was copied by an earlier attempt",
                    found.id
                ));
                state::set("image_id", &found.id);
                found.id
            }
            Some(found) => {
                return Err(Failure::conflict(format!(
                    "an image named {name} already exists in {} ({}) and this run did not make it",
                    target.region, found.id
                )));
            }
            None => copy(ctx, target, original, p, name)?,
        },
    };
    ec2_tag(target, std::slice::from_ref(&id), &tags)?;
    let image = crate::wait_for(
        &format!("copy of {} to {}", original.id, target.region),
        p.wait_seconds,
        || match image_by_id(target, &id)? {
            Some(i) if i.state == "available" => Ok(Poll::Done(i)),
            Some(i) if matches!(i.state.as_str(), "failed" | "error" | "invalid") => Err(
                Failure::internal(format!("copy {id} of {} ended {}", original.id, i.state)),
            ),
            Some(i) => Ok(Poll::Pending(i.state)),
            None => Ok(Poll::Pending("not visible yet".into())),
        },
    )?;
    ec2_tag(target, &image.snapshots, &tags)?;
    state::set("snapshot_ids", &image.snapshots.join(","));
    Ok(json!({
        "image_id": id,
        "name": name,
        "region": target.region,
        "source_image": original.id,
        "snapshot_ids": image.snapshots,
    }))
}

fn copy(
    ctx: &Context,
    target: &Aws,
    original: &Image,
    p: &CopyImageParams,
    name: &str,
) -> Result<String, Failure> {
    let token = crate::token(ctx, "copy-image");
    state::set("name", name);
    let mut params = vec![
        ("SourceImageId".to_string(), original.id.clone()),
        ("SourceRegion".to_string(), p.source_region.clone()),
        ("Name".to_string(), name.to_string()),
        ("ClientToken".to_string(), token),
    ];
    if let Some(d) = &p.description {
        params.push(("Description".into(), d.clone()));
    }
    if p.encrypted {
        params.push(("Encrypted".into(), "true".into()));
    }
    if let Some(k) = &p.kms_key_id {
        params.push(("KmsKeyId".into(), k.clone()));
    }
    let xml = target.query(Service::Ec2, "CopyImage", &params)?;
    let doc = parse(&xml)?;
    let id = all(&doc, "imageId")
        .first()
        .and_then(|n| n.text())
        .map(str::to_string)
        .ok_or_else(|| Failure::internal("CopyImage answered without an imageId"))?;
    state::set("image_id", &id);
    log::info(&format!(
        "CopyImage {} ({}) → {id} in {} requested",
        original.id, p.source_region, target.region
    ));
    Ok(id)
}

/// Checks the copy named `name` (a verify step passes the apply step's `name` output) against its source.
fn verify(ctx: &Context, target: &Aws, original: &Image, name: &str) -> Result<Value, Failure> {
    let image = image_by_name(target, name)?.ok_or_else(|| {
        Failure::verification_failed(format!("no image named {name} in {}", target.region))
    })?;
    let id = image.id.clone();
    let mut problems = Vec::new();
    if image.state != "available" {
        problems.push(format!("state is {}", image.state));
    }
    if !made_by_run(ctx, &image.tags) {
        problems.push("it lacks this run's respawn:run tag".into());
    }
    if image.architecture != original.architecture {
        problems.push(format!(
            "architecture {} differs from the source's {}",
            image.architecture, original.architecture
        ));
    }
    if image.root_device_type != original.root_device_type {
        problems.push(format!(
            "root device type {} differs from the source's {}",
            image.root_device_type, original.root_device_type
        ));
    }
    if image.snapshots.len() != original.snapshots.len() {
        problems.push(format!(
            "{} snapshots, the source has {}",
            image.snapshots.len(),
            original.snapshots.len()
        ));
    }
    if !problems.is_empty() {
        return Err(Failure::verification_failed(format!(
            "image {id} in {}: {}",
            target.region,
            problems.join("; ")
        )));
    }
    Ok(json!({ "image_id": id, "state": image.state, "snapshots": image.snapshots.len() }))
}

fn destroy(ctx: &Context, target: &Aws) -> Result<Value, Failure> {
    let mut found: Vec<Image> = Vec::new();
    if let Some(id) = state::get("image_id")
        && let Some(image) = image_by_id(target, &id)?
    {
        found.push(image);
    }
    let mut params = vec![("Owner.1".to_string(), "self".to_string())];
    params.extend(filters(&[
        ("tag:respawn:run", &[ctx.run_id.as_str()]),
        ("tag:respawn:step", &[ctx.step_id.as_str()]),
    ]));
    for image in describe_images(target, &params)? {
        if !found.iter().any(|f| f.id == image.id) {
            found.push(image);
        }
    }
    let mut removed = Vec::new();
    for image in &found {
        target.query(
            Service::Ec2,
            "DeregisterImage",
            &[("ImageId".into(), image.id.clone())],
        )?;
        let mut snapshots = image.snapshots.clone();
        if let Some(kept) = state::get("snapshot_ids") {
            snapshots.extend(
                kept.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        snapshots.sort();
        snapshots.dedup();
        for snapshot in &snapshots {
            match target.query(
                Service::Ec2,
                "DeleteSnapshot",
                &[("SnapshotId".into(), snapshot.clone())],
            ) {
                Ok(_) => {}
                Err(f) if f.kind == respawn_plugin_sdk::FailureKind::NotFound => {}
                Err(f) => return Err(f),
            }
        }
        log::info(&format!(
            "deregistered {} and deleted {} snapshots in {}",
            image.id,
            snapshots.len(),
            target.region
        ));
        removed.push(image.id.clone());
    }
    for key in ["image_id", "snapshot_ids", "name"] {
        state::delete(key);
    }
    Ok(json!({ "deregistered": removed }))
}
