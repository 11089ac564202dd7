//! The shop quickstart end to end through the binary, on a private copy: restore images, render config, start a
//! real python3 web service, verify, tear down. Also a corrupted backup and an interrupt in the middle of apply.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, listening, quickstart, region_dir, text};

fn drill(dir: &Path, port: u16, extra: &[&str]) -> Output {
    let port = format!("port={port}");
    let mut args = vec![
        "drill",
        "recover.yaml",
        "--param",
        &port,
        "--report-dir",
        "report",
    ];
    args.extend_from_slice(extra);
    Command::new(bin())
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap()).unwrap()
}

#[test]
fn quickstart_drill_recreates_verifies_and_leaves_nothing_behind() {
    let dir = quickstart("pass");
    let port = free_port();
    let out = drill(&dir, port, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("outcome   Passed") && t.contains("RTO") && t.contains("RPO"),
        "{t}"
    );
    let r = report(&dir);
    assert!(r["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        r["rpo_seconds"].as_f64().unwrap() >= 0.0,
        "RPO measured from the images' creation time"
    );
    let checked: Vec<&str> = r["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(checked, vec!["succeeded"; 3]);
    assert_eq!(r["teardown"]["status"], "succeeded");
    assert!(
        !region_dir(&dir).exists(),
        "no region directory is left behind"
    );
    assert!(!listening(port), "the web service was stopped");
}

#[test]
fn a_corrupted_layer_fails_the_drill_naming_the_digest_and_teardown_still_runs() {
    let dir = quickstart("corrupt");
    let blobs = dir.join("backups/images/site/blobs/sha256");
    // The layer is the largest blob of the site image.
    let layer = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let digest = layer.file_name().unwrap().to_string_lossy().into_owned();

    let port = free_port();
    let out = drill(&dir, port, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&digest), "the bad blob is named: {t}");
    let r = report(&dir);
    let site = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "site")
        .unwrap()
        .clone();
    assert_eq!(site["status"], "failed");
    assert_eq!(r["teardown"]["status"], "succeeded");
    assert!(
        !region_dir(&dir).join("shop/site").exists(),
        "a blob that did not verify is never left restored"
    );
    assert!(!region_dir(&dir).exists());
    assert!(!listening(port));
}

#[test]
fn sigint_in_the_middle_of_apply_tears_down_and_exits_3() {
    let dir = quickstart("sigint");
    // A web service that never listens keeps apply busy until the interrupt.
    let wf = std::fs::read_to_string(dir.join("recover.yaml")).unwrap();
    let stuck = wf.replace(
        "args: [-m, http.server, \"${{ params.port | string }}\", --bind, 127.0.0.1, --directory, \".\"]",
        "args: [-c, \"import time; time.sleep(120)\"]",
    );
    assert_ne!(wf, stuck, "the test edits the web step");
    std::fs::write(dir.join("recover.yaml"), stuck).unwrap();
    let port = free_port();
    let port_arg = format!("port={port}");
    let child = Command::new(bin())
        .args([
            "drill",
            "recover.yaml",
            "--param",
            &port_arg,
            "--report-dir",
            "report",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the volumes are restored (apply is under way), then interrupt.
    let started = Instant::now();
    while !region_dir(&dir).join("shop/site/index.html").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "apply never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    let r = report(&dir);
    assert_eq!(r["outcome"], "interrupted");
    assert_eq!(r["teardown"]["status"], "succeeded", "{t}");
    assert!(!region_dir(&dir).exists(), "full teardown after SIGINT");
    let leftover = Command::new("pgrep")
        .args(["-f", "time.sleep\\(120\\)"])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "the service process was killed: {}",
        text(&leftover)
    );
}

#[test]
#[ignore = "needs skopeo (Debian package; tests/setup installs it)"]
fn a_layout_written_by_skopeo_restores() {
    let dir = quickstart("skopeo");
    let ours = dir.join("backups/images/site");
    let theirs = dir.join("backups/images/site-skopeo");
    // skopeo re-writes the image as its own layout, recompressing the layer with zstd.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--insecure-policy",
            "--dest-compress-format",
            "zstd",
        ])
        .arg(format!("oci:{}:v1", ours.display()))
        .arg(format!("oci:{}:v1", theirs.display()))
        .output()
        .expect("skopeo is installed (bash tests/setup)");
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let index = std::fs::read_to_string(theirs.join("index.json")).unwrap();
    let ours_index = std::fs::read_to_string(ours.join("index.json")).unwrap();
    assert_ne!(
        index, ours_index,
        "skopeo wrote a different manifest (zstd layer)"
    );
    std::fs::remove_dir_all(&ours).unwrap();
    std::fs::rename(&theirs, &ours).unwrap();

    let port = free_port();
    let out = drill(&dir, port, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        report(&dir)["verifications"][1]["status"],
        "succeeded",
        "every restored file matches"
    );
    assert!(!region_dir(&dir).exists());
}
