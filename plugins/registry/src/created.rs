//! `recovery_point`: the newest `created` time among the image configs a step brought back, the moment whose
//! data the step restored (an image holds what was in it when it was built).

use std::io::Read;

use respawn_plugin_sdk::log;

use crate::copy::Graph;
use crate::source::Source;
use respawn_plugin_sdk::time::rfc3339_seconds;

/// Largest image config read for its `created` time.
const MAX_CONFIG: u64 = 1 << 20;
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The newest `created` of the configs of `graph`'s images (referrers and signatures aside), as written there.
pub fn newest(source: &mut dyn Source, graph: &Graph) -> Option<(i64, String)> {
    let mut newest: Option<(i64, String)> = None;
    for node in graph.nodes.iter().filter(|n| n.parsed.subject.is_none()) {
        for config in node
            .parsed
            .blobs
            .iter()
            .filter(|b| CONFIG_TYPES.contains(&b.media_type.as_str()))
        {
            if config.size > MAX_CONFIG {
                continue;
            }
            let mut bytes = Vec::new();
            let read = source.blob(config, 0, config.size).and_then(|mut r| {
                r.read_to_end(&mut bytes)
                    .map_err(|e| respawn_plugin_sdk::Failure::unavailable(e.to_string()))
            });
            if let Err(e) = read {
                log::debug(&format!("config {}: {}", config.digest, e.message));
                continue;
            }
            let created = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["created"].as_str().map(str::to_string));
            if let Some(text) = created
                && let Some(seconds) = rfc3339_seconds(&text)
                && newest.as_ref().is_none_or(|(s, _)| seconds > *s)
            {
                newest = Some((seconds, text));
            }
        }
    }
    newest
}
