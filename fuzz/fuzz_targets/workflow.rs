//! Workflow text, as a user or an attacker could hand it to `respawn validate` and `respawn plan`: loading (YAML,
//! positions, the model), validation (graph, grants, durations, expressions), params and the plan's rendering
//! must never panic, hang or exhaust memory, whatever the bytes. Seeded with every workflow in the repository.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use respawn_workflow::expr::{RunInfo, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(loaded) = respawn_workflow::load::load_bytes(Path::new("fuzz.yaml"), data.to_vec()) else {
        return;
    };
    if !respawn_workflow::validate::validate(&loaded, None).is_empty() {
        return;
    }
    let Ok(params) = respawn_workflow::params::resolve(&loaded, &[]) else {
        return;
    };
    let scope = Scope {
        params,
        run: RunInfo {
            id: "fuzz".into(),
            mode: "plan".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
        },
        steps: Default::default(),
    };
    if let Ok(plan) = respawn_workflow::plan::build(&loaded, &scope) {
        let _ = respawn_workflow::plan::render_text(&plan);
    }
});
