//! `aws/launch`: instances run from an image in the target region, waited for until running.
//!
//! RunInstances carries a ClientToken kept in step state before the call, and tags the instances (in the same
//! call) with the run, the step and that token: a retried or resumed step finds the instances by the token tag
//! and never launches a second set. Destroy terminates what carries this run's tags.

use std::collections::BTreeMap;

use respawn_plugin_sdk::{Context, Failure, Phase, log, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Aws, CredentialSecrets, NodeExt, Service, all, parse};
use crate::image::image_by_id;
use crate::{Connection, Poll, default_wait, filters, run_tags, unresolved};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchParams {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    credentials: CredentialSecrets,
    #[serde(default = "default_wait")]
    wait_seconds: u64,
    image: String,
    instance_type: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Verify: the instances to check (a verify step passes the apply step's `instance_ids` output).
    #[serde(default)]
    instance_ids: Option<Vec<String>>,
}

fn one() -> u32 {
    1
}

/// Most instances one step launches: a guard against a typo, not an AWS limit.
const MAX_COUNT: u32 = 100;

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    state: String,
    image: String,
    private_ip: String,
}

fn describe(aws: &Aws, params: &[(String, String)]) -> Result<Vec<Instance>, Failure> {
    let xml = aws.query(Service::Ec2, "DescribeInstances", params)?;
    let doc = parse(&xml)?;
    let mut out = Vec::new();
    for set in all(&doc, "instancesSet") {
        for item in set.children().filter(|n| n.is_element()) {
            let state = item
                .child("instanceState")
                .and_then(|s| s.text_of("name"))
                .unwrap_or_default();
            out.push(Instance {
                id: item.text_of("instanceId").unwrap_or_default(),
                state,
                image: item.text_of("imageId").unwrap_or_default(),
                private_ip: item.text_of("privateIpAddress").unwrap_or_default(),
            });
        }
    }
    Ok(out
        .into_iter()
        .filter(|i| !matches!(i.state.as_str(), "terminated" | "shutting-down"))
        .collect())
}

fn by_tags(aws: &Aws, tags: &[(&str, &str)]) -> Result<Vec<Instance>, Failure> {
    let names: Vec<String> = tags.iter().map(|(k, _)| format!("tag:{k}")).collect();
    let values: Vec<[&str; 1]> = tags.iter().map(|(_, v)| [*v]).collect();
    let list: Vec<(&str, &[&str])> = names
        .iter()
        .zip(values.iter())
        .map(|(n, v)| (n.as_str(), &v[..]))
        .collect();
    describe(aws, &filters(&list))
}

pub fn run(ctx: &Context, p: LaunchParams) -> Result<Value, Failure> {
    let conn = Connection {
        phase: ctx.phase,
        region: &p.region,
        endpoint: p.endpoint.as_deref(),
        credentials: &p.credentials,
    };
    let aws = conn.connect()?;
    if !(1..=MAX_COUNT).contains(&p.count) {
        return Err(Failure::invalid_input(format!(
            "count: {} is not between 1 and {MAX_COUNT}",
            p.count
        )));
    }
    match ctx.phase {
        Phase::Plan => plan(ctx, &aws, &p),
        Phase::Apply => apply(ctx, &aws, &p),
        Phase::Verify => verify(ctx, &aws, &p),
        Phase::Destroy => destroy(ctx, &aws),
    }
}

fn plan(ctx: &Context, aws: &Aws, p: &LaunchParams) -> Result<Value, Failure> {
    let image = if unresolved(&p.image) {
        format!("the image of `{}` (known at apply)", p.image)
    } else {
        let found = image_by_id(aws, &p.image)?.ok_or_else(|| {
            Failure::not_found(format!("image {} not found in {}", p.image, aws.region))
        })?;
        format!("{} ({})", found.id, found.name)
    };
    let token = crate::derived_token(ctx, "launch");
    let running = by_tags(aws, &[("respawn:token", &token)])?;
    let would = if running.len() == p.count as usize {
        format!(
            "{} instances of this run already in {}: apply adopts them",
            running.len(),
            aws.region
        )
    } else {
        format!(
            "run {} {} instances from {image} in {}{}{}, tagged respawn:run={} respawn:step={}",
            p.count,
            p.instance_type,
            aws.region,
            p.subnet
                .as_deref()
                .map(|s| format!(" subnet {s}"))
                .unwrap_or_default(),
            if p.security_groups.is_empty() {
                String::new()
            } else {
                format!(" security groups {}", p.security_groups.join(","))
            },
            ctx.run_id,
            ctx.step_id
        )
    };
    Ok(json!({ "would": [would] }))
}

fn apply(ctx: &Context, aws: &Aws, p: &LaunchParams) -> Result<Value, Failure> {
    let token = crate::token(ctx, "launch");
    let mut ids: Vec<String> = by_tags(aws, &[("respawn:token", &token)])?
        .into_iter()
        .map(|i| i.id)
        .collect();
    if ids.is_empty() {
        if image_by_id(aws, &p.image)?.is_none() {
            return Err(Failure::not_found(format!(
                "image {} not found in {}",
                p.image, aws.region
            )));
        }
        let mut params = vec![
            ("ImageId".to_string(), p.image.clone()),
            ("InstanceType".to_string(), p.instance_type.clone()),
            ("MinCount".to_string(), p.count.to_string()),
            ("MaxCount".to_string(), p.count.to_string()),
            ("ClientToken".to_string(), token.clone()),
            (
                "TagSpecification.1.ResourceType".to_string(),
                "instance".to_string(),
            ),
        ];
        let mut tags = run_tags(ctx);
        tags.push(("respawn:token".into(), token.clone()));
        tags.extend(p.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (i, (k, v)) in tags.iter().enumerate() {
            params.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
            params.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
        }
        if let Some(s) = &p.subnet {
            params.push(("SubnetId".into(), s.clone()));
        }
        for (i, g) in p.security_groups.iter().enumerate() {
            params.push((format!("SecurityGroupId.{}", i + 1), g.clone()));
        }
        if let Some(u) = &p.user_data {
            params.push(("UserData".into(), base64(u.as_bytes())));
        }
        if let Some(k) = &p.key_name {
            params.push(("KeyName".into(), k.clone()));
        }
        let xml = aws.query(Service::Ec2, "RunInstances", &params)?;
        let doc = parse(&xml)?;
        ids = all(&doc, "instancesSet")
            .iter()
            .flat_map(|s| s.children().filter(|n| n.is_element()))
            .filter_map(|i| i.text_of("instanceId"))
            .collect();
        log::info(&format!(
            "RunInstances in {}: {} requested",
            aws.region,
            ids.join(", ")
        ));
    } else {
        log::info(&format!(
            "{}: launched by an earlier attempt",
            ids.join(", ")
        ));
    }
    state::set("instance_ids", &ids.join(","));
    let mut params = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        params.push((format!("InstanceId.{}", i + 1), id.clone()));
    }
    let instances = crate::wait_for(
        &format!("{} instances in {}", ids.len(), aws.region),
        p.wait_seconds,
        || {
            let now = describe(aws, &params)?;
            let running = now.iter().filter(|i| i.state == "running").count();
            if now.len() < ids.len() {
                return Err(Failure::internal(format!(
                    "{} of the launched instances ended before running",
                    ids.len() - now.len()
                )));
            }
            if running == ids.len() {
                Ok(Poll::Done(now))
            } else {
                Ok(Poll::Pending(format!("{running} of {} running", ids.len())))
            }
        },
    )?;
    Ok(json!({
        "instance_ids": ids,
        "private_ips": instances.iter().map(|i| i.private_ip.clone()).collect::<Vec<_>>(),
        "region": aws.region,
    }))
}

fn verify(ctx: &Context, aws: &Aws, p: &LaunchParams) -> Result<Value, Failure> {
    let kept = state::get("instance_ids").unwrap_or_default();
    let ids: Vec<&str> = match &p.instance_ids {
        Some(ids) => ids.iter().map(String::as_str).collect(),
        None => kept.split(',').filter(|s| !s.is_empty()).collect(),
    };
    if ids.is_empty() {
        return Err(Failure::verification_failed(
            "no instances to check: give `instance_ids` (the apply step's output)",
        ));
    }
    if ids.len() != p.count as usize {
        return Err(Failure::verification_failed(format!(
            "{} instances, {} asked",
            ids.len(),
            p.count
        )));
    }
    let tagged = by_tags(aws, &[("respawn:run", &ctx.run_id)])?;
    let mut problems = Vec::new();
    for id in &ids {
        match tagged.iter().find(|i| i.id == *id) {
            None => problems.push(format!("{id} is gone or lost its respawn tags")),
            Some(i) if i.state != "running" => problems.push(format!("{id} is {}", i.state)),
            Some(i) if !unresolved(&p.image) && i.image != p.image => {
                problems.push(format!("{id} runs {}, not {}", i.image, p.image))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(Failure::verification_failed(problems.join("; ")));
    }
    Ok(json!({ "running": ids }))
}

fn destroy(ctx: &Context, aws: &Aws) -> Result<Value, Failure> {
    let kept: Vec<String> = state::get("instance_ids")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // Through a filter, which (unlike InstanceId.N) passes over ids that no longer exist.
    let mut live = Vec::new();
    if !kept.is_empty() {
        let ids: Vec<&str> = kept.iter().map(String::as_str).collect();
        live = describe(aws, &filters(&[("instance-id", &ids)]))?;
    }
    for i in by_tags(
        aws,
        &[("respawn:run", &ctx.run_id), ("respawn:step", &ctx.step_id)],
    )? {
        if !live.iter().any(|l| l.id == i.id) {
            live.push(i);
        }
    }
    let ids: Vec<String> = live.into_iter().map(|i| i.id).collect();
    if !ids.is_empty() {
        let mut params = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            params.push((format!("InstanceId.{}", i + 1), id.clone()));
        }
        aws.query(Service::Ec2, "TerminateInstances", &params)?;
        log::info(&format!("terminated {} in {}", ids.join(", "), aws.region));
    }
    state::delete("instance_ids");
    Ok(json!({ "terminated": ids }))
}

/// Standard base64 with padding (RunInstances' UserData).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_data_is_base64() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"#!/bin/sh\n"), "IyEvYmluL3NoCg==");
    }
}
