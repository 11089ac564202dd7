//! Bad input and faults: each a clear error, and nothing half-pushed marked done.

use std::process::Command;

use serde_json::Value;

use super::common::{registry_blob_path, text};
use super::*;

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn verify_catches_a_blob_corrupted_on_the_targets_disk() {
    let e = env();
    let (src, dst) = (repo("corrupt", "src"), repo("corrupt", "dr"));
    let images =
        common::push_test_images_salted(&e.open, &src, None, None, Some(&salt("corrupt-target")));
    let dir = workflow(
        "corrupt",
        &replicate_step(
            &[(&format!("{src}:single"), &format!("{dst}:v1"))],
            "      sample_percent: 100\n",
        ),
    );
    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    let run_id = run_id_of(&out);

    // Flip bytes of the largest layer where the target keeps it: same size, other content.
    let manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{}:{}", e.user, e.password))
        .arg(format!("docker://{}/{dst}:v1", e.auth))
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = registry_blob_path(&e.data_auth, &layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(images["blobs"].to_string().contains(&layer));

    let verify = run(&dir, &["verify", &run_id, "--no-progress"]);
    assert_eq!(verify.status.code(), Some(1), "verify: {}", text(&verify));
    let said = text(&verify);
    assert!(
        said.contains("verification-failed") && said.contains(&layer),
        "verify: {said}"
    );
    let _ = run(&dir, &["destroy", &run_id, "--yes", "--no-progress"]);
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn an_unknown_image_or_wrong_credentials_fail_clearly() {
    let e = env();
    let (src, dst) = (repo("bad", "src"), repo("bad", "dr"));
    common::push_test_images(&e.open, &src, None, None);
    let dir = workflow(
        "unknown",
        &replicate_step(&[(&format!("{src}:nope"), &format!("{dst}:nope"))], ""),
    );
    let said = failing_drill(&dir, &e.password);
    assert!(
        said.contains("not-found") && said.contains(&format!("{}/{src}: no image `nope`", e.open)),
        "{said}"
    );

    let wrong = "wrong-Passw0rd-for-this-test";
    let dir = workflow(
        "denied",
        &replicate_step(&[(&format!("{src}:single"), &format!("{dst}:single"))], ""),
    );
    let said = failing_drill(&dir, wrong);
    assert!(
        said.contains("denied") && said.contains("refused the credentials of user `respawn`"),
        "{said}"
    );
    assert!(!said.contains(wrong), "the password was echoed: {said}");
    assert!(
        !journal_mentions(&dir.join(".respawn"), wrong),
        "the password reached the journal or the report"
    );
    assert_eq!(at_auth(&format!("{dst}:single")), None);
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_manifest_that_does_not_hash_to_its_digest_is_refused_and_nothing_is_tagged() {
    let e = env();
    let (src, dst) = (repo("badhash", "src"), repo("badhash", "dr"));
    let images = common::push_test_images_salted(&e.open, &src, None, None, Some(&salt("badhash")));
    let single = digest_of(&images, "single");
    // The registry keeps manifests as blobs: change one digit of a size in the stored document, which the
    // registry still parses and serves under the digest of the original.
    let path = registry_blob_path(&e.data_open, &single);
    let mut bytes = std::fs::read(&path).unwrap();
    let key = b"\"size\":";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let at = at + bytes[at..].iter().position(u8::is_ascii_digit).unwrap();
    bytes[at] = if bytes[at] == b'9' {
        b'8'
    } else {
        bytes[at] + 1
    };
    std::fs::write(&path, &bytes).unwrap();
    let dir = workflow(
        "badhash",
        &replicate_step(&[(&format!("{src}:single"), &format!("{dst}:single"))], ""),
    );
    let said = failing_drill(&dir, &e.password);
    assert!(
        said.contains("verification-failed") && said.contains(&single),
        "{said}"
    );
    assert_eq!(at_auth(&format!("{dst}:single")), None);
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_blob_cut_short_at_the_source_is_never_marked_done() {
    let e = env();
    let (src, dst) = (repo("cut", "src"), repo("cut", "dr"));
    common::push_test_images_salted(&e.open, &src, None, None, Some(&salt("cut")));
    let manifest: Value =
        serde_json::from_slice(&raw_manifest(&e.open, &format!("{src}:single"))).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = registry_blob_path(&e.data_open, &layer);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let dir = workflow(
        "cut",
        &replicate_step(&[(&format!("{src}:single"), &format!("{dst}:single"))], ""),
    );
    let said = failing_drill(&dir, &e.password);
    assert!(
        said.contains("cut short") && said.contains(&layer),
        "{said}"
    );
    assert_eq!(at_auth(&format!("{dst}:single")), None);
    // Nor is the blob there: the registry refused what did not hash to its digest, or never got it whole.
    let head = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", "-u"])
        .arg(format!("{}:{}", e.user, e.password))
        .arg(format!("http://{}/v2/{dst}/blobs/{layer}", e.auth))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "404");
}

#[test]
#[ignore = "needs docker-registry and skopeo (tests/servers/start)"]
fn a_referrer_loop_is_walked_once() {
    let e = env();
    let (src, dst) = (repo("loop", "src"), repo("loop", "dr"));
    let images = common::push_test_images(&e.open, &src, None, None);
    let single = digest_of(&images, "single");
    let size = raw_manifest(&e.open, &format!("{src}:single")).len();
    // A referrers index of `single` that names `single` itself: followed naively, it never ends.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": single, "size": size }],
    });
    let tag = format!("sha256-{}", single.trim_start_matches("sha256:"));
    let put = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
        ])
        .arg("Content-Type: application/vnd.oci.image.index.v1+json")
        .arg("--data-binary")
        .arg(index.to_string())
        .arg(format!("http://{}/v2/{src}/manifests/{tag}", e.open))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");
    let dir = workflow(
        "loop",
        &replicate_step(&[(&format!("{src}:single"), &format!("{dst}:single"))], "")
            .replace("    grants:", "    timeout: 1m\n    grants:"),
    );
    let out = run(&dir, &["drill", "wf.yaml", "--keep", "--no-progress"]);
    assert!(out.status.success(), "drill: {}", text(&out));
    assert_eq!(at_auth(&format!("{dst}:single")), Some(single));
    assert!(
        at_auth(&format!("{dst}:{tag}")).is_some(),
        "the referrers tag was not copied"
    );
    let destroyed = run(
        &dir,
        &["destroy", &run_id_of(&out), "--yes", "--no-progress"],
    );
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
}
