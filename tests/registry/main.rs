//! The `registry` provider end to end against two real registries (Debian's docker-registry 2.8 on 127.0.0.1,
//! one anonymous, one with basic auth) that `tests/servers/start` runs; skopeo is the oracle for what landed.
//! Each test uses repositories of its own, named after the test and the process, so they run side by side.

#[path = "../common/mod.rs"]
mod common;
mod faults;
mod resume;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{RegistryEnv, bin, registry_env, run_id_of, skopeo_digest, text};
use serde_json::Value;

fn env() -> RegistryEnv {
    registry_env().expect(
        "RESPAWN_TEST_REGISTRY_* unset: run tests/servers/start and source target/servers/env",
    )
}

/// A repository name of this test and process.
fn repo(test: &str, name: &str) -> String {
    format!("{test}-{}/{name}", std::process::id())
}

/// A salt of this test run's own: a registry keeps one copy of a blob for all its repositories, and a blob a
/// test corrupts or cuts must be no other run's.
fn salt(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// A fresh directory holding `wf.yaml` with `steps`, locked. Each step with id `images` is also run as the
/// verify step `check`: the same operation and params, in the verify phase.
fn workflow(test: &str, steps: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-registry-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "respawn: 1\nname: {test}\nversion: 1.0.0\nsecrets:\n  REG_PW: {{ env: REG_PW }}\n\
         plugins:\n  registry: builtin:registry@0.1\nsteps:\n{steps}verify:\n{}",
        steps.replacen("- id: images", "- id: check", 1)
    );
    std::fs::write(dir.join("wf.yaml"), yaml).unwrap();
    let out = run(&dir, &["lock", "wf.yaml"]);
    assert!(out.status.success(), "lock: {}", text(&out));
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("REG_PW", env().password)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A replicate step from the open registry to the auth one.
fn replicate_step(images: &[(&str, &str)], extra: &str) -> String {
    let e = env();
    let list: String = images
        .iter()
        .map(|(from, to)| format!("        - {{ from: \"{from}\", to: \"{to}\" }}\n"))
        .collect();
    format!(
        "  - id: images\n    uses: registry/replicate\n    with:\n\
         \x20     source: {{ registry: \"{open}\", insecure: true }}\n\
         \x20     target: {{ registry: \"{auth}\", insecure: true, auth: {{ username: {user}, password_secret: REG_PW }} }}\n\
         \x20     images:\n{list}{extra}\
         \x20   grants:\n      http: [\"http://{open}\", \"http://{auth}\"]\n      secrets: [REG_PW]\n",
        open = e.open,
        auth = e.auth,
        user = e.user,
    )
}

fn at_auth(reference: &str) -> Option<String> {
    let e = env();
    skopeo_digest(&e.auth, reference, e.creds())
}

fn digest_of(images: &Value, key: &str) -> String {
    images[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {images}"))
        .to_string()
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn replicate_copies_a_multi_arch_index_with_its_referrers_and_destroy_removes_only_that() {
    let e = env();
    let (src, dst) = (repo("replicate", "src"), repo("replicate", "dr"));
    let images = common::push_test_images(&e.open, &src, None, None);
    // Already in the target before the run: images of its own, under the tag the run moves, and a referrers
    // index for the source's `multi` that lists a referrer of the target's own.
    let before = common::push_test_images_salted(
        &e.auth,
        &dst,
        e.creds(),
        None,
        Some(&salt("there-before")),
    );
    let referrers_tag = digest_of(&images, "referrers_tag");
    let their_referrer = digest_of(&before, "referrer");
    let their_index = put_index(&e, &dst, &referrers_tag, &their_referrer);
    let dir = workflow(
        "replicate",
        &replicate_step(
            &[
                (&format!("{src}:multi"), &format!("{dst}:multi")),
                (&format!("{src}:single"), &format!("{dst}:restored-single")),
            ],
            "      sample_percent: 100\n",
        ),
    );
    let plan = run(&dir, &["plan", "wf.yaml"]);
    assert!(plan.status.success(), "plan: {}", text(&plan));
    assert!(
        text(&plan).contains("push 5 of 5 manifests"),
        "plan: {}",
        text(&plan)
    );
    assert!(
        text(&plan).contains("move tag multi from"),
        "plan: {}",
        text(&plan)
    );
    assert_eq!(
        at_auth(&format!("{dst}:multi")),
        Some(digest_of(&before, "multi")),
        "plan pushed something"
    );

    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    let run_id = run_id_of(&out);

    // skopeo sees at the target exactly the digests of the source.
    let multi = digest_of(&images, "multi");
    assert_eq!(
        at_auth(&format!("{dst}:multi")).as_deref(),
        Some(multi.as_str())
    );
    for platform in images["multi_platforms"].as_object().unwrap().values() {
        let d = platform.as_str().unwrap();
        assert_eq!(
            at_auth(&format!("{dst}@{d}")).as_deref(),
            Some(d),
            "platform {d}"
        );
    }
    let referrer = digest_of(&images, "referrer");
    assert_eq!(
        at_auth(&format!("{dst}@{referrer}")).as_deref(),
        Some(referrer.as_str())
    );
    // The target's referrers index now lists both referrers.
    let merged = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{}:{}", e.user, e.password))
        .arg(format!("docker://{}/{dst}:{referrers_tag}", e.auth))
        .output()
        .unwrap();
    let merged: Value = serde_json::from_slice(&merged.stdout).unwrap();
    let listed: Vec<&str> = merged["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [their_referrer.as_str(), referrer.as_str()]);
    let signature_tag = digest_of(&images, "signature_tag");
    assert_eq!(
        at_auth(&format!("{dst}:{signature_tag}")),
        Some(digest_of(&images, "signature"))
    );
    assert_eq!(
        at_auth(&format!("{dst}:restored-single")),
        Some(digest_of(&images, "single"))
    );
    // The outputs (journaled) map each source reference to its destination digest.
    assert!(
        journal_mentions(
            &dir.join(".respawn/state"),
            &format!("\"{src}:multi\":\"{multi}\"")
        ),
        "no outputs mapping {src}:multi to {multi}"
    );
    // Its recovery point is when the newest image it brought back was made (the fixtures' configs say 2024).
    assert!(
        journal_mentions(
            &dir.join(".respawn/state"),
            "\"recovery_point\":\"2024-01-01T00:00:00Z\""
        ),
        "no recovery_point in the outputs"
    );

    // A second apply finds everything there and pushes nothing.
    let again = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress", "-v"]);
    assert!(again.status.success(), "second drill: {}", text(&again));
    assert!(
        text(&again).contains("(0 manifests pushed, 5 there; 0 blobs copied"),
        "{}",
        text(&again)
    );

    let destroyed = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(at_auth(&format!("{dst}@{multi}")), None);
    assert_eq!(at_auth(&format!("{dst}@{referrer}")), None);
    assert_eq!(at_auth(&format!("{dst}:{signature_tag}")), None);
    assert_eq!(at_auth(&format!("{dst}:restored-single")), None);
    // What was there before the run is still there, and the tags the run moved name it again.
    assert_eq!(
        at_auth(&format!("{dst}:{referrers_tag}")),
        Some(their_index)
    );
    assert_eq!(
        at_auth(&format!("{dst}:multi")),
        Some(digest_of(&before, "multi"))
    );
    assert_eq!(
        at_auth(&format!("{dst}:single")),
        Some(digest_of(&before, "single"))
    );
    // The second drill kept its own run up; it pushed nothing, so its destroy removes nothing.
    let second = run_id_of(&again);
    let destroyed = run(&dir, &["destroy", &second, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(
        at_auth(&format!("{dst}:multi")),
        Some(digest_of(&before, "multi"))
    );
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_copy_within_one_registry_mounts_blobs_instead_of_sending_them() {
    let e = env();
    let (src, dst) = (repo("mount", "src"), repo("mount", "dr"));
    let images = common::push_test_images(&e.open, &src, None, None);
    let steps = format!(
        "  - id: images\n    uses: registry/replicate\n    with:\n\
         \x20     source: {{ registry: \"{open}\", insecure: true }}\n\
         \x20     target: {{ registry: \"{open}\", insecure: true }}\n\
         \x20     images: [{{ from: \"{src}:single\", to: \"{dst}:single\" }}]\n\
         \x20   grants: {{ http: [\"http://{open}\"] }}\n",
        open = e.open
    );
    let dir = workflow("mount", &steps);
    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress", "-v"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    assert!(
        text(&out).contains("0 blobs copied, 0 bytes; 0 there; 6 mounted"),
        "{}",
        text(&out)
    );
    assert_eq!(
        skopeo_digest(&e.open, &format!("{dst}:single"), None),
        Some(digest_of(&images, "single"))
    );
    let run_id = run_id_of(&out);
    let destroyed = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(skopeo_digest(&e.open, &format!("{dst}:single"), None), None);
    assert_eq!(
        skopeo_digest(&e.open, &format!("{src}:single"), None),
        Some(digest_of(&images, "single")),
        "destroy touched the source"
    );
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn push_layout_makes_a_packed_image_runnable_from_the_registry() {
    let e = env();
    let dst = repo("layout", "site");
    let dir = common::quickstart("registry-layout");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("backups/images/site/index.json")).unwrap())
            .unwrap();
    let packed = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let steps = format!(
        "respawn: 1\nname: layout\nversion: 1.0.0\nstores:\n  backups: file://backups\n\
         plugins:\n  registry: builtin:registry@0.1\nsteps:\n\
         \x20 - id: push\n    uses: registry/push-layout\n    with:\n\
         \x20     store: backups\n\
         \x20     target: {{ registry: \"{open}\", insecure: true }}\n\
         \x20     images: [{{ prefix: images/site, tag: v1, to: \"{dst}\" }}]\n\
         \x20     sample_percent: 100\n\
         \x20   grants: {{ stores: {{ backups: read }}, http: [\"http://{open}\"] }}\n",
        open = e.open
    );
    let verify =
        steps[steps.find("  - id: push").unwrap()..].replacen("- id: push", "- id: check", 1);
    std::fs::write(dir.join("layout.yaml"), format!("{steps}verify:\n{verify}")).unwrap();
    let out = run(&dir, &["lock", "layout.yaml"]);
    assert!(out.status.success(), "lock: {}", text(&out));
    let out = run(&dir, &["drill", "layout.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    assert_eq!(
        skopeo_digest(&e.open, &format!("{dst}:v1"), None),
        Some(packed.clone())
    );
    let run_id = run_id_of(&out);
    // The report names the pushed image by the digest skopeo sees, and where it came from.
    let report: Value = serde_json::from_slice(
        &std::fs::read(dir.join(".respawn/runs").join(&run_id).join("report.json")).unwrap(),
    )
    .unwrap();
    let pushed = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "registry-image")
        .unwrap_or_else(|| panic!("no registry-image artifact: {}", report["artifacts"]))
        .clone();
    assert_eq!(pushed["step"], "push");
    assert_eq!(pushed["digest"], packed.as_str());
    assert_eq!(
        pushed["source"],
        serde_json::json!({
            "url": format!("file://{}", dir.join("backups").display()),
            "prefix": "images/site",
            "tag": "v1"
        })
    );
    let destroyed = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    assert_eq!(skopeo_digest(&e.open, &format!("{dst}:v1"), None), None);
}

fn journal_mentions(dir: &Path, needle: &str) -> bool {
    fn walk(dir: &Path, needle: &str) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                std::fs::read_to_string(&path).is_ok_and(|t| t.contains(needle))
            }
        })
    }
    walk(dir, needle)
}

/// Puts under `tag` of `repo` in the auth registry an OCI index listing manifest `listed`; returns its digest.
fn put_index(e: &RegistryEnv, repo: &str, tag: &str, listed: &str) -> String {
    let size = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{}:{}", e.user, e.password))
        .arg(format!("docker://{}/{repo}@{listed}", e.auth))
        .output()
        .unwrap()
        .stdout
        .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": listed, "size": size }],
    })
    .to_string();
    let put = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-u",
        ])
        .arg(format!("{}:{}", e.user, e.password))
        .args([
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
        ])
        .arg(&index)
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", e.auth))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(index.as_bytes()))
}

/// `skopeo inspect --raw` of `registry/reference` on the open registry.
fn raw_manifest(registry: &str, reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{registry}/{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        text(&out)
    );
    out.stdout
}

fn failing_drill(dir: &Path, password: &str) -> String {
    let out = Command::new(bin())
        .args(["drill", "wf.yaml", "--no-progress"])
        .current_dir(dir)
        .env("REG_PW", password)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the drill did not fail: {}",
        text(&out)
    );
    text(&out)
}
