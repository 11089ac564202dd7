//! What this run put into the target, kept in step state so destroy removes exactly that. Each manifest or tag
//! is announced (`pending`) before the request that creates it, so a crash between the two still leaves it
//! found: on the next attempt a pending item that now exists is this run's.

use respawn_plugin_sdk::state;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

const PENDING: &str = "pending";
/// State keys `pushed.0`, `pushed.1`, …: each a list, a new one begun before a value nears the host's 64 KiB.
const PUSHED: &str = "pushed";
const PART_BYTES: usize = 48 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub repo: String,
    pub digest: Digest,
    /// Set when the item is a tag this run made point at `digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// What the tag named before, for destroy to put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Digest>,
}

impl Item {
    pub fn manifest(repo: &str, digest: &Digest) -> Item {
        Item {
            repo: repo.to_string(),
            digest: digest.clone(),
            tag: None,
            replaced: None,
        }
    }
}

/// Says what the next request will create, before it is sent.
pub fn announce(items: &[Item]) {
    state::set(PENDING, &serde_json::to_string(items).unwrap_or_default());
}

/// What an earlier attempt announced and may or may not have created.
pub fn pending() -> Vec<Item> {
    state::get(PENDING)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

pub fn clear_pending() {
    state::delete(PENDING);
}

/// Appends `items` to the record and clears `pending`.
pub fn created(items: Vec<Item>) {
    for item in items {
        append(item);
    }
    clear_pending();
}

fn append(item: Item) {
    let mut parts = parts();
    if !parts.iter().flatten().any(|i| *i == item) {
        let fits = parts
            .last()
            .map(|p| serde_json::to_string(p).map_or(0, |s| s.len()) < PART_BYTES)
            .unwrap_or(false);
        if !fits {
            parts.push(Vec::new());
        }
        let last = parts.len() - 1;
        parts[last].push(item);
        state::set(
            &format!("{PUSHED}.{last}"),
            &serde_json::to_string(&parts[last]).unwrap_or_default(),
        );
    }
}

/// Everything created, in the order it was created.
pub fn all() -> Vec<Item> {
    parts().into_iter().flatten().collect()
}

fn parts() -> Vec<Vec<Item>> {
    let mut parts = Vec::new();
    while let Some(value) = state::get(&format!("{PUSHED}.{}", parts.len())) {
        parts.push(serde_json::from_str(&value).unwrap_or_default());
    }
    parts
}

/// Replaces the record with what is left (after a destroy that could not remove everything).
pub fn keep_only(left: &[Item]) {
    let mut index = 0;
    while state::get(&format!("{PUSHED}.{index}")).is_some() {
        state::delete(&format!("{PUSHED}.{index}"));
        index += 1;
    }
    created(left.to_vec());
}
