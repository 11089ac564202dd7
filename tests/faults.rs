//! Fault injection through the binary (`RESPAWN_FAULTS`): transient store failures are retried and the drill
//! still passes; corrupted reads fail it with the bad digest named and nothing recorded as restored.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, free_port, quickstart, region_dir, text};

fn drill_with_faults(dir: &Path, faults: &str, state: &str) -> Output {
    let state = format!("file://{}", dir.join(state).display());
    Command::new(bin())
        .args(["drill", "recover.yaml", "--no-progress", "--state", &state])
        .args([
            "--param",
            &format!("port={}", free_port()),
            "--report-dir",
            "report",
        ])
        .env("RESPAWN_FAULTS", faults)
        .env("RUST_LOG", "warn,respawn_data=debug")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn journal(dir: &Path, state: &str) -> Vec<serde_json::Value> {
    let runs = dir.join(state).join("runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut paths: Vec<_> = std::fs::read_dir(run.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    // One event a file, or several on lines of their own when they were appended while the journal was writing.
    paths
        .iter()
        .flat_map(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes
                .split(|b| *b == b'\n')
                .map(|line| serde_json::from_slice(line).unwrap())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

#[test]
fn with_ten_percent_transient_faults_the_drill_still_passes() {
    let dir = quickstart("transient");
    let mut retried = 0;
    for seed in 1..=5 {
        let out = drill_with_faults(
            &dir,
            &format!("transient=0.1,seed={seed}"),
            &format!("state-{seed}"),
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "seed {seed}: {t}");
        assert!(t.contains("injecting faults"), "{t}");
        retried += t.matches("retrying object store call").count();
        assert!(!region_dir(&dir).exists(), "seed {seed}");
    }
    assert!(retried > 0, "faults were injected and retried");
}

#[test]
fn corrupted_reads_fail_the_drill_with_the_digest_named_and_nothing_marked_restored() {
    let dir = quickstart("corrupt-reads");
    let out = drill_with_faults(&dir, "corrupt=blobs", "state");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("digest mismatch: expected sha256:"), "{t}");
    let events = journal(&dir, "state");
    assert!(
        !events.iter().any(|e| e["type"] == "image-restored"),
        "no image is recorded as restored"
    );
    for e in events
        .iter()
        .filter(|e| e["type"] == "step-finished" && e["phase"] == "apply")
    {
        assert_ne!(e["status"], "succeeded", "{e}");
        assert!(
            e["state"].get("outputs").is_none(),
            "volume not marked restored: {e}"
        );
    }
    assert!(
        !region_dir(&dir).exists(),
        "teardown removed what was started"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap())
            .unwrap();
    assert_eq!(r["outcome"], "failed");
}
