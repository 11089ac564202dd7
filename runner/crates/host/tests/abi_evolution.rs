//! ABI evolution (docs/plugin-abi.md, "ABI evolution"): a plugin built against an older `respawn:plugin` 0.2
//! keeps running in this host, and wasmtime's semver matching of import names decides which other versions link.
//!
//! `plugins/testing/old-abi` is built with wit-bindgen, without the SDK, against a frozen copy of the WIT from
//! before `stores.get-range` and `images.unpack-as` were added. If a change to `plugins/wit` breaks what such a
//! plugin imports or exports (a changed signature, record, enum or variant), it fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use respawn_engine::{Mode, Phase, StepCall, StepExecutor};
use respawn_host::sources::{PluginBytes, TEST_PLUGINS_DIR};
use respawn_host::{Host, HostError, RunResources};
use respawn_workflow::{Grants, Limits};
use serde_json::json;

const OLD_ABI: &str = "respawn_testing_old_abi.wasm";

fn old_abi_bytes() -> (String, Vec<u8>) {
    let path = Path::new(TEST_PLUGINS_DIR).join(OLD_ABI);
    (
        format!("file://{}", path.display()),
        std::fs::read(&path).expect("test plugin built"),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A host whose store `backups` is a directory of the scratch dir.
fn host(name: &str) -> Host {
    let dir = scratch(name);
    let store_dir = dir.join("backups");
    std::fs::create_dir_all(&store_dir).unwrap();
    let mut run = RunResources::new(dir.clone());
    let urls = BTreeMap::from([(
        "backups".to_string(),
        format!("file://{}", store_dir.display()),
    )]);
    run.stores = respawn_data::StoreSet::open(&urls, &dir).unwrap();
    Host::with_cache_dir(run, Some(dir.join("cache"))).unwrap()
}

fn call(op: &str, params: serde_json::Value, grants: &str) -> StepCall {
    StepCall {
        run_id: "abi-run".into(),
        step_id: format!("old-{op}"),
        plugin: "old".into(),
        operation: op.into(),
        phase: Phase::Apply,
        mode: Mode::Drill,
        attempt: 1,
        params,
        grants: serde_yaml::from_str::<Grants>(grants).unwrap(),
        limits: Limits::default(),
        timeout: Duration::from_secs(20),
        state: BTreeMap::new(),
    }
}

/// The same component with every `respawn:plugin/…@0.2.0` import renamed to `@{version}` (same length, so the
/// binary stays well formed): what a plugin built against another release of the package would import.
fn restamped(version: &str) -> PluginBytes {
    assert_eq!(version.len(), "0.2.0".len());
    let (source, mut bytes) = old_abi_bytes();
    let mut renamed = 0;
    for interface in ["types", "log", "stores", "state"] {
        let from = format!("respawn:plugin/{interface}@0.2.0");
        let to = format!("respawn:plugin/{interface}@{version}");
        let mut at = 0;
        while let Some(i) = bytes[at..]
            .windows(from.len())
            .position(|w| w == from.as_bytes())
        {
            let start = at + i;
            bytes[start..start + to.len()].copy_from_slice(to.as_bytes());
            at = start + to.len();
            renamed += 1;
        }
    }
    assert!(renamed >= 4, "the old plugin imports respawn:plugin@0.2.0");
    PluginBytes::new(&format!("{source}#restamped-{version}"), bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_an_older_0_2_describes_and_runs() {
    let host = host("old-abi");
    let (source, bytes) = old_abi_bytes();
    let loaded = host
        .load("old", &PluginBytes::new(&source, bytes).unwrap())
        .await
        .expect("an older 0.2 plugin links against this host");
    let d = &loaded.description;
    assert_eq!((d.name.as_str(), d.version.as_str()), ("old-abi", "0.1.0"));
    let ops: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(ops, ["state", "stores"]);

    // state (and log, which every call uses): the count survives an attempt through the returned state.
    let first = host.execute(call("state", json!({}), "{}")).await;
    assert_eq!(first.outcome.unwrap()["count"], 1);
    let mut again = call("state", json!({}), "{}");
    again.attempt = 2;
    again.state = first.state.clone();
    let second = host.execute(again).await;
    assert_eq!(second.outcome.unwrap()["count"], 2);
    assert_eq!(second.state.get("count").map(String::as_str), Some("2"));

    // stores: put, get, head, list and delete under a write grant; denied without one.
    let params = json!({"store": "backups", "key": "notes/a.txt", "data": "kept"});
    let grant = "stores: { backups: { access: write } }";
    let out = host
        .execute(call("stores", params.clone(), grant))
        .await
        .outcome
        .unwrap();
    assert_eq!(
        out,
        json!({"read": "kept", "size": 4, "listed": ["notes/a.txt"], "deleted": true})
    );
    let denied = host
        .execute(call("stores", params, "{}"))
        .await
        .outcome
        .unwrap_err();
    assert_eq!(denied.kind(), "denied", "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_link_across_0_2_patch_releases_and_never_across_minors() {
    let host = host("restamped");

    // A plugin built against a later 0.2.x (with nothing this host lacks) links to the host's 0.2.2.
    let later_patch = restamped("0.2.9");
    host.load("old", &later_patch)
        .await
        .expect("0.2.9 imports are served by the host's 0.2.2");
    let out = host.execute(call("state", json!({}), "{}")).await;
    assert_eq!(out.outcome.unwrap()["count"], 1);

    // 0.1 and 0.3 are other interfaces as far as the linker is concerned: refused at load, naming the import.
    for version in ["0.3.0", "0.1.0"] {
        let err = host
            .load("other", &restamped(version))
            .await
            .err()
            .unwrap_or_else(|| panic!("a {version} plugin must not link"));
        let text = err.to_string();
        assert!(matches!(err, HostError::Abi { .. }), "{text}");
        assert!(
            text.contains(&format!("@{version}")) && text.contains("respawn:plugin/"),
            "{text}"
        );
    }
}
