//! `respawn drill` and `respawn failover` end to end through the binary, on a copy of workflows/hello.

mod common;

use std::path::PathBuf;

use common::{copy_hello, respawn, text};

/// A private copy of workflows/hello, locked.
fn hello(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-runs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_hello(&dir);
    let out = respawn(&dir, &["lock", "verify.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    dir
}

#[test]
fn drill_passes_and_writes_all_three_reports() {
    let dir = hello("pass");
    let out = respawn(&dir, &["drill", "verify.yaml", "--report-dir", "report"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("outcome   Passed"), "{}", text(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["outcome"], "passed");
    assert_eq!(json["mode"], "drill");
    assert_eq!(json["workflow"]["name"], "hello");
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert_eq!(json["verifications"][0]["status"], "succeeded");
    assert_eq!(json["teardown"]["status"], "succeeded");
    assert_eq!(
        json["steps"][0]["plugin_digest"].as_str().map(str::len),
        Some(64)
    );
    assert!(json["rto_seconds"].as_f64().unwrap() >= 0.0);
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(md.contains("| outcome | **Passed** |"), "{md}");
    let junit = std::fs::read_to_string(dir.join("report/junit.xml")).unwrap();
    assert!(
        junit.contains("<testcase classname=\"verify\" name=\"page-still-intact\"/>"),
        "{junit}"
    );
}

#[test]
fn a_corrupted_backup_fails_the_drill_with_both_digests_and_exit_1() {
    let dir = hello("corrupt");
    std::fs::write(dir.join("site/index.html"), "<h1>tampered</h1>\n").unwrap();
    let out = respawn(&dir, &["drill", "verify.yaml", "--report-dir", "report"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("verification-failed") && t.contains("sha256 mismatch"),
        "{t}"
    );
    let expected = std::fs::read_to_string(dir.join("site/index.html.sha256")).unwrap();
    assert!(
        t.contains(expected.trim()),
        "names the expected digest: {t}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["outcome"], "failed");
    assert_eq!(
        json["verifications"][0]["status"], "skipped",
        "verification needs every step to succeed"
    );
    assert_eq!(
        json["teardown"]["status"], "succeeded",
        "teardown runs after a failure"
    );
}

#[test]
fn failover_stops_at_an_approval_gate_without_a_terminal_or_yes() {
    let dir = hello("gate");
    let wf = std::fs::read_to_string(dir.join("verify.yaml")).unwrap();
    let gated = wf.replace(
        "verify:\n",
        "  - id: switch-traffic\n    needs: [page-digest]\n    approval: \"Send users to the restored site?\"\nverify:\n",
    );
    std::fs::write(dir.join("verify.yaml"), gated).unwrap();
    let out = respawn(&dir, &["failover", "verify.yaml", "--report-dir", "report"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("needs confirmation") && t.contains("--yes"),
        "says how to proceed: {t}"
    );
    let yes = respawn(
        &dir,
        &[
            "failover",
            "verify.yaml",
            "--yes",
            "--report-dir",
            "report2",
        ],
    );
    assert_eq!(yes.status.code(), Some(0), "{}", text(&yes));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report2/report.json")).unwrap())
            .unwrap();
    assert_eq!(
        json["teardown"]["status"], "skipped",
        "failover never tears down"
    );
    let gate = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "switch-traffic")
        .unwrap()
        .clone();
    assert!(
        gate["note"].as_str().unwrap().contains("approved (--yes)"),
        "{gate}"
    );
}

#[test]
fn report_re_renders_a_run_in_each_format() {
    let dir = hello("report");
    let out = respawn(&dir, &["drill", "verify.yaml", "--report-dir", "r"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r/report.json")).unwrap()).unwrap();
    let run_id = json["run_id"].as_str().unwrap().to_string();
    for (format, file) in [
        ("json", "report.json"),
        ("md", "report.md"),
        ("junit", "junit.xml"),
    ] {
        let again = respawn(
            &dir,
            &["report", &run_id, "--report-dir", "r", "--format", format],
        );
        assert_eq!(again.status.code(), Some(0), "{}", text(&again));
        let written = std::fs::read_to_string(dir.join("r").join(file)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            written,
            "{format} re-renders identically"
        );
    }
    let missing = respawn(&dir, &["report", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("no report for run `no-such-run`"),
        "{}",
        text(&missing)
    );
}

/// Output to a closed pipe (`respawn runs | head -1`) ends quietly: no panic, no exit 101.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["plugin", "list"][..],
        &["plugin", "inspect", "builtin:check@0.1"][..],
        &["runs", "--state", "memory://"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        // The reader is gone before respawn writes a byte.
        drop(reader);
        let out = std::process::Command::new(common::bin())
            .args(args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// Log lines carry no colour codes when stderr is not a terminal (a file, a pipe, CI).
#[test]
fn logs_are_plain_text_off_a_terminal() {
    let out = std::process::Command::new(common::bin())
        .args(["validate", "verify.yaml"])
        .current_dir(hello("plain-logs"))
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DEBUG"),
        "debug logs were asked for: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in piped logs: {stderr}"
    );
}
