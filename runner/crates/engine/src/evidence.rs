//! The artifacts of a run, from its journal: what the report's `artifacts` section lists (docs/report.md).
//!
//! Each step in the workflow's order (steps, then verifications) contributes the images the host restored for it
//! (`image-restored` events, with the store URL the workflow names) and then what its plugin declared in its
//! apply or verify outputs (`artifacts`, checked when the step ran by [`check_declared`]); the plugins the run
//! loaded come last, by sha256.

use std::collections::HashMap;

use respawn_journal::replay::Replayed;
use respawn_report::artifacts::{self, Artifact, Source, Witness};
use respawn_report::record::{StepRecord, StepStatus};
use respawn_workflow::Workflow;

use crate::{Phase, StepCall, StepError, StepResult};

/// Every artifact the run used, in the report's order; `records` are the steps' and verifications' records.
pub fn artifacts(r: &Replayed, records: &[&StepRecord], workflow: &Workflow) -> Vec<Artifact> {
    let mut out = Vec::new();
    // By step id, so each step looks up its own (a scan per step made a 10,000-step report quadratic).
    let mut images: HashMap<&str, Vec<_>> = HashMap::new();
    for image in &r.images_restored {
        images.entry(image.step.as_str()).or_default().push(image);
    }
    let mut succeeded: HashMap<&str, Vec<&StepRecord>> = HashMap::new();
    for s in records.iter().filter(|s| s.status == StepStatus::Succeeded) {
        succeeded.entry(s.id.as_str()).or_default().push(s);
    }
    let ids = workflow.steps.iter().chain(&workflow.verify).map(|s| &s.id);
    for id in ids {
        for image in images.get(id.as_str()).into_iter().flatten() {
            let url = image
                .store
                .as_ref()
                .and_then(|name| workflow.stores.get(name))
                .map(|url| artifacts::without_credentials(&beside(&r.start.workflow.path, url)));
            out.push(Artifact {
                step: Some(id.clone()),
                kind: "image".into(),
                source: Source {
                    store: None,
                    url,
                    prefix: image.prefix.clone(),
                    tag: image.tag.clone(),
                },
                digest: image.manifest_digest.clone(),
                created: image.created.clone(),
                recorded_by: Witness::Host,
            });
        }
        let store_url = |name: &str| {
            workflow
                .stores
                .get(name)
                .map(|url| artifacts::without_credentials(&beside(&r.start.workflow.path, url)))
        };
        let declared =
            succeeded.get(id.as_str()).into_iter().flatten().flat_map(
                |s| match artifacts::declared(id, &s.outputs["outputs"]) {
                    // A workflow store named by the plugin is shown as its URL.
                    Ok(found) => found
                        .into_iter()
                        .map(|mut a| {
                            if let Some(name) = a.source.store.take() {
                                a.source.url = a.source.url.or_else(|| store_url(&name));
                                if a.source.url.is_none() {
                                    a.source.store = Some(name);
                                }
                            }
                            a
                        })
                        .collect(),
                    Err(why) => {
                        // Checked when the step ran; a journal from an older runner may hold one that is not.
                        tracing::warn!(step = %id, "artifacts not listed: {why}");
                        Vec::new()
                    }
                },
            );
        out.extend(declared);
    }
    for plugin in r.start.plugins.values() {
        out.push(Artifact {
            step: None,
            kind: "plugin".into(),
            source: Source {
                store: None,
                url: Some(artifacts::without_credentials(&plugin.source)),
                prefix: None,
                tag: None,
            },
            digest: format!("sha256:{}", plugin.sha256),
            created: None,
            recorded_by: Witness::Host,
        });
    }
    out
}

/// Fails an apply or verify whose `artifacts` output is not the documented shape: a broken contract, naming the
/// step and the entry. Evidence that cannot be read is worse than none.
pub fn check_declared(call: &StepCall, result: StepResult) -> StepResult {
    let Ok(outputs) = &result.outcome else {
        return result;
    };
    if !matches!(call.phase, Phase::Apply | Phase::Verify) {
        return result;
    }
    match artifacts::declared(&call.step_id, outputs) {
        Ok(_) => result,
        Err(why) => StepResult {
            outcome: Err(StepError::Contract {
                plugin: call.plugin.clone(),
                step: call.step_id.clone(),
                message: format!("{why} (docs/plugin-abi.md, \"Artifacts\")"),
            }),
            state: result.state,
        },
    }
}

/// A relative `file://` store URL made absolute the way the run resolved it: relative to the workflow's
/// directory (journaled absolute), so the report names the directory an auditor can look at.
fn beside(workflow_path: &str, url: &str) -> String {
    let Some(rest) = url.strip_prefix("file://") else {
        return url.to_string();
    };
    if rest.starts_with('/') {
        return url.to_string();
    }
    let dir = std::path::Path::new(workflow_path)
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    format!("file://{}", dir.join(rest).display())
}
