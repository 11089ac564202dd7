//! The second quickstart, `bash workflows/registry/run`, end to end against the two registries `tests/servers/start`
//! runs (the script reuses them, installs nothing and leaves them running): with `--keep`, skopeo finds the shop's
//! images and the replicated base image in the DR registry, digest for digest; `destroy` removes all of it; and the
//! plain run passes and leaves nothing behind. The script uses fixed repositories (shop/site, shop/catalog,
//! base/runtime), so this test must not run beside a manual `workflows/registry/run`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{RegistryEnv, bin, registry_env, run_id_of, skopeo_digest, text};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `bash workflows/registry/run ARGS` with this test's binary, on a state store and report directory of its own.
fn run_script(scratch: &Path, name: &str, extra: &[&str]) -> Output {
    let state = format!("file://{}", scratch.join("state").display());
    let report = scratch.join(name);
    Command::new("bash")
        .arg(root().join("workflows/registry/run"))
        .args(["--no-progress", "--state", &state, "--report-dir"])
        .arg(&report)
        .args(extra)
        .env("RESPAWN", bin())
        .env_remove("DR_REGISTRY_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn report(scratch: &Path, name: &str) -> Value {
    let path = scratch.join(name).join("report.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn statuses(r: &Value, key: &str) -> Vec<String> {
    r[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {r}"))
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect()
}

/// The manifest digest `respawn image pack` gave the quickstart's layout `name` (tag v1).
fn packed(name: &str) -> String {
    let index = root().join(format!(
        "workflows/quickstart/backups/images/{name}/index.json"
    ));
    let index: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every reference the quickstart puts into the DR registry, each with the digest it must have there.
fn expected(e: &RegistryEnv) -> Vec<(String, String)> {
    let at_primary = |reference: &str| {
        skopeo_digest(&e.open, reference, None)
            .unwrap_or_else(|| panic!("{reference} is not in the primary registry"))
    };
    let multi = at_primary("base/runtime:multi");
    let single = at_primary("base/runtime:single");
    let signature_tag = format!("base/runtime:sha256-{}.sig", &single["sha256:".len()..]);
    let referrers_tag = format!("base/runtime:sha256-{}", &multi["sha256:".len()..]);
    vec![
        ("shop/site:v1".into(), packed("site")),
        ("shop/catalog:v1".into(), packed("catalog")),
        ("base/runtime:multi".into(), multi.clone()),
        (format!("base/runtime@{multi}"), multi),
        ("base/runtime:single".into(), single.clone()),
        (format!("base/runtime@{single}"), single),
        (signature_tag.clone(), at_primary(&signature_tag)),
        (referrers_tag.clone(), at_primary(&referrers_tag)),
    ]
}

fn nothing_at_dr(e: &RegistryEnv, refs: &[(String, String)], when: &str) {
    for (reference, _) in refs {
        assert_eq!(
            skopeo_digest(&e.auth, reference, e.creds()),
            None,
            "{when}: {reference} is in the DR registry {}",
            e.auth
        );
    }
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn the_registry_quickstart_restores_replicates_verifies_and_leaves_nothing_behind() {
    let e = registry_env().expect(
        "RESPAWN_TEST_REGISTRY_* unset: run tests/servers/start and source target/servers/env",
    );
    assert_eq!(
        (e.open.as_str(), e.auth.as_str()),
        ("127.0.0.1:5101", "127.0.0.1:5102"),
        "workflows/registry/recover.yaml's defaults and grants name tests/servers' registries"
    );
    let scratch = std::env::temp_dir().join(format!("respawn-registry-qs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();

    // Left over from an interrupted earlier run, a tag would be "there before" and outlive destroy.
    for tag in [
        "shop/site:v1",
        "shop/catalog:v1",
        "base/runtime:multi",
        "base/runtime:single",
    ] {
        assert_eq!(
            skopeo_digest(&e.auth, tag, e.creds()),
            None,
            "{tag} is in the DR registry before the run: delete it first"
        );
    }

    // Kept: the images stay in the DR registry for skopeo to look at.
    let kept = run_script(&scratch, "kept", &["--keep"]);
    let t = text(&kept);
    assert_eq!(kept.status.code(), Some(0), "{t}");
    assert!(t.contains("outcome   Passed"), "{t}");
    let r = report(&scratch, "kept");
    assert_eq!(statuses(&r, "steps"), vec!["succeeded"; 2], "{r}");
    assert_eq!(statuses(&r, "verifications"), vec!["succeeded"; 2], "{r}");
    let refs = expected(&e);
    for (reference, digest) in &refs {
        assert_eq!(
            skopeo_digest(&e.auth, reference, e.creds()).as_deref(),
            Some(digest.as_str()),
            "{reference} in the DR registry"
        );
    }

    let state = format!("file://{}", scratch.join("state").display());
    let run_id = run_id_of(&kept);
    // destroy, like the run, needs the DR registry's password.
    let destroyed = Command::new(bin())
        .args([
            "destroy",
            &run_id,
            "--yes",
            "--no-progress",
            "--state",
            &state,
        ])
        .current_dir(root())
        .env("DR_REGISTRY_PASSWORD", &e.password)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    nothing_at_dr(&e, &refs, "after destroy");

    // The one command as a person runs it: apply, verify, tear down.
    let plain = run_script(&scratch, "plain", &[]);
    let t = text(&plain);
    assert_eq!(plain.status.code(), Some(0), "{t}");
    let r = report(&scratch, "plain");
    assert_eq!(r["outcome"], "passed", "{r}");
    assert_eq!(statuses(&r, "verifications"), vec!["succeeded"; 2], "{r}");
    assert_eq!(r["teardown"]["status"], "succeeded", "{r}");
    nothing_at_dr(&e, &refs, "after the drill");
    // The base image stays where the script pushed it, in the primary registry.
    assert!(skopeo_digest(&e.open, "base/runtime:multi", None).is_some());
    let _ = std::fs::remove_dir_all(&scratch);
}
