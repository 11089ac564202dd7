//! The region directory's lifecycle, natively against `MockHost` (which does not model images: an unpack fails
//! `internal`, after apply has done everything before it).

use std::path::{Path, PathBuf};

use respawn_plugin_sdk::testing::MockHost;
use respawn_plugin_sdk::{FailureKind, Phase};
use serde_json::{Value, json};

use super::Local;

/// A fresh directory standing for the granted root of the regions.
fn root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-local-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn volume(root: &Path, name: &str) -> Value {
    json!({
        "store": "backups", "image": "images/x", "tag": "v1",
        "root": root.to_str().unwrap(), "region": "eu-west", "env": "shop", "name": name,
    })
}

/// Two volumes restore at once: one has just made `<region>/<env>/` for its thing when the other starts. The
/// other's apply must not remove that (still empty) directory from under it.
#[test]
fn apply_leaves_the_env_directory_a_sibling_just_made() {
    let root = root("sibling");
    let env_dir = root.join("eu-west/shop");
    std::fs::create_dir_all(&env_dir).unwrap();
    let mut host = MockHost::new();
    let err = host
        .invoke::<Local>("volume", Phase::Apply, volume(&root, "catalog"))
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Internal, "{}", err.message);
    assert!(
        err.message.contains("does not model images"),
        "{}",
        err.message
    );
    assert!(env_dir.is_dir(), "apply removed the env directory");
    assert_eq!(
        host.state_get("path"),
        Some(env_dir.join("catalog").to_str().unwrap()),
        "the target is recorded before anything is made"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Destroy removes its thing, keeps directories that still hold a sibling's, and removes the region directory
/// with the last thing in it.
#[test]
fn destroy_prunes_only_empty_region_directories() {
    let root = root("prune");
    for name in ["site", "catalog"] {
        std::fs::create_dir_all(root.join("eu-west/shop").join(name)).unwrap();
    }
    std::fs::write(root.join("eu-west/shop/site/index.html"), "x").unwrap();
    let mut host = MockHost::new();
    host.invoke::<Local>("volume", Phase::Destroy, volume(&root, "site"))
        .unwrap();
    assert!(!root.join("eu-west/shop/site").exists());
    assert!(root.join("eu-west/shop/catalog").is_dir());
    host.invoke::<Local>("volume", Phase::Destroy, volume(&root, "catalog"))
        .unwrap();
    assert!(
        !root.join("eu-west").exists(),
        "the emptied region is removed"
    );
    // Nothing left: destroy again succeeds.
    host.invoke::<Local>("volume", Phase::Destroy, volume(&root, "catalog"))
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
