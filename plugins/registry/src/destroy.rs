//! Removing what this run pushed and nothing else: tags it moved are put back on what they named, its manifests
//! are deleted by digest, parents before children, then the tags it made. Blobs stay for the registry's garbage collector: one this run uploaded may by now
//! be a layer of an image someone else pushed, and a blob no manifest names is unreachable anyway.

use respawn_plugin_sdk::{Failure, FailureKind, log};
use serde_json::{Value, json};

use crate::copy;
use crate::record::{self, Item};
use crate::registry::{Deleted, Registry};

pub fn destroy(target: &mut Registry) -> Result<Value, Failure> {
    copy::settle_pending(target)?;
    let items = record::all();
    let mut deleted = 0u64;
    let mut restored = 0u64;
    let mut left: Vec<Item> = Vec::new();
    let mut refusals = Vec::new();
    // Tags this run moved go back to what they named, while that is still there.
    for item in items
        .iter()
        .filter(|i| i.tag.is_some() && i.replaced.is_some())
    {
        let (tag, old) = (
            item.tag.as_deref().unwrap_or_default(),
            item.replaced.as_ref(),
        );
        if target.manifest_exists(&item.repo, tag)?.as_ref() != Some(&item.digest) {
            continue;
        }
        match old
            .map(|d| target.manifest(&item.repo, d.as_str()))
            .transpose()?
            .flatten()
        {
            Some(before) => {
                target.put_manifest(&item.repo, tag, &before)?;
                restored += 1;
            }
            None => log::warn(&format!(
                "{}:{tag} named {} before this run, which is gone; the tag goes with this run's manifest",
                item.repo,
                old.map(|d| d.as_str()).unwrap_or_default()
            )),
        }
    }
    // Manifests: the record is in push order (children first), so undo it backwards.
    for item in items.iter().rev().filter(|i| i.tag.is_none()) {
        match target.delete_manifest(&item.repo, item.digest.as_str())? {
            Deleted::Done => deleted += 1,
            Deleted::Gone => {}
            Deleted::Refused(why) => {
                refusals.push(why);
                left.push(item.clone());
            }
        }
    }
    for item in items
        .iter()
        .filter(|i| i.tag.is_some() && i.replaced.is_none())
    {
        let tag = item.tag.as_deref().unwrap_or_default();
        // Deleting its manifest took the tag with it, unless the tag has moved on since.
        match target.manifest_exists(&item.repo, tag)? {
            None => continue,
            Some(now) if now != item.digest => {
                log::info(&format!(
                    "{}:{tag} now names {now}, not what this run pushed; left alone",
                    item.repo
                ));
                continue;
            }
            Some(_) => {}
        }
        match target.delete_manifest(&item.repo, tag)? {
            Deleted::Done | Deleted::Gone => deleted += 1,
            Deleted::Refused(why) => {
                refusals.push(why);
                left.push(item.clone());
            }
        }
    }
    record::keep_only(&left);
    if !refusals.is_empty() {
        return Err(Failure::new(
            FailureKind::Conflict,
            format!(
                "{} of what this run pushed to {} could not be removed: {}",
                left.len(),
                target.host,
                refusals.join("; ")
            ),
        ));
    }
    Ok(json!({ "deleted": deleted, "tags_restored": restored }))
}
