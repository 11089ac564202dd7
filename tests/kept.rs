//! A failover that stays up: its services outlive the runner, `respawn verify` checks the live environment again
//! and `respawn destroy` tears it down from the journal; the same for `drill --keep`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    free_port, listening, process_running, quickstart, region_dir, respawn, run_id_of, text,
    wait_for_site_restored,
};
use sha2::{Digest, Sha256};

/// sha256 of the quickstart's index.html, as its homepage verification expects.
const HOMEPAGE_SHA256: &str = "3e1c0576ab7e2bdc8316b1c2172e8464e16df10eb398682922afbe8c9e1f3750";

/// GET `path` from 127.0.0.1:`port`: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec()))
}

fn state_arg(dir: &Path) -> String {
    format!("file://{}", dir.join("state").display())
}

fn report(dir: &Path) -> serde_json::Value {
    let path = dir.join("report/report.json");
    serde_json::from_slice(&std::fs::read(&path).expect("report.json")).expect("report is JSON")
}

/// The report validates against docs/report.schema.json.
fn assert_schema(report: &serde_json::Value) {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema_path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("report.schema.json", schema)
        .expect("schema loads");
    let id = compiler
        .compile("report.schema.json", &mut schemas)
        .expect("schema compiles");
    if let Err(e) = schemas.validate(report, id) {
        panic!("report does not match the schema: {e:#}\n{report:#}");
    }
}

/// Apply, exit, then the environment is still there: the service answers with the restored page.
fn assert_up(dir: &Path, port: u16) {
    let (status, body) =
        get(port, "/index.html").expect("the service answers after respawn exited");
    assert_eq!(status, 200);
    assert_eq!(hex(&Sha256::digest(&body)), HOMEPAGE_SHA256);
    assert!(region_dir(dir).join("shop/site/index.html").exists());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Destroy leaves no process, no listener and no region directory; a second destroy changes nothing.
fn destroy_and_check(dir: &Path, run_id: &str, port: u16, extra: &[&str]) {
    let state = state_arg(dir);
    let mut args = vec!["destroy", run_id, "--no-progress", "--state", &state];
    args.extend_from_slice(extra);
    let out = respawn(dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("teardown  succeeded"), "{}", text(&out));
    assert!(!listening(port), "the service still listens after destroy");
    assert!(
        !process_running(&format!("http.server {port}")),
        "a service process is left"
    );
    assert!(!region_dir(dir).join("shop").exists(), "the region is left");
    let r = report(dir);
    assert_eq!(r["teardown"]["status"], "succeeded", "{r:#}");
    assert_eq!(r["teardown"]["steps"].as_array().unwrap().len(), 4, "{r:#}");
    assert_schema(&r);

    let again = respawn(dir, &args);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        text(&again).contains("nothing left to destroy"),
        "{}",
        text(&again)
    );
    let runs = text(&respawn(dir, &["runs", "--state", &state]));
    let line = runs.lines().find(|l| l.starts_with(run_id)).unwrap();
    assert!(line.contains("destroyed"), "{line}");
    let verify = respawn(dir, &["verify", run_id, "--state", &state]);
    assert_eq!(verify.status.code(), Some(2), "{}", text(&verify));
    assert!(text(&verify).contains("destroyed"), "{}", text(&verify));
    let audit = respawn(
        dir,
        &[
            "audit",
            "verify",
            run_id,
            "--state",
            &state,
            "--report-dir",
            "report",
        ],
    );
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(text(&audit).contains("head matches"), "{}", text(&audit));
}

/// Verify passes against the live environment, is journaled and lands in the report.
fn verify_and_check(dir: &Path, run_id: &str) {
    let state = state_arg(dir);
    let out = respawn(dir, &["verify", run_id, "--no-progress", "--state", &state]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(dir);
    let again = &r["reverifications"][0];
    assert_eq!(again["outcome"], "passed", "{r:#}");
    assert_eq!(again["verifications"].as_array().unwrap().len(), 3);
    assert_eq!(r["outcome"], "passed", "the run's own outcome is unchanged");
    assert_schema(&r);
}

#[test]
fn a_failover_stays_up_after_respawn_exits_and_is_verified_and_destroyed_later() {
    let dir = quickstart("failover-up");
    let port = free_port();
    let state = state_arg(&dir);
    let port_param = format!("port={port}");
    let out = respawn(
        &dir,
        &[
            "failover",
            "recover.yaml",
            "--yes",
            "--no-progress",
            "--param",
            &port_param,
            "--state",
            &state,
            "--report-dir",
            "report",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run_id = run_id_of(&out);
    std::thread::sleep(Duration::from_millis(500));
    assert_up(&dir, port);
    let logs = dir.join(".respawn/regions/.respawn-logs").join(&run_id);
    assert!(
        logs.join("web.stderr.log").exists(),
        "the service logs to the granted directory"
    );

    let runs = text(&respawn(&dir, &["runs", "--state", &state]));
    let line = runs.lines().find(|l| l.starts_with(&run_id)).unwrap();
    assert!(line.contains(" up "), "{line}");

    verify_and_check(&dir, &run_id);

    // Destroying a live region asks first; with no terminal and no --yes it refuses and changes nothing.
    let refused = respawn(&dir, &["destroy", &run_id, "--state", &state]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    assert_up(&dir, port);

    destroy_and_check(&dir, &run_id, port, &["--yes"]);
}

#[test]
fn a_kept_drill_stays_up_and_is_verified_and_destroyed_later() {
    let dir = quickstart("kept-up");
    let port = free_port();
    let state = state_arg(&dir);
    let port_param = format!("port={port}");
    let out = respawn(
        &dir,
        &[
            "drill",
            "recover.yaml",
            "--keep",
            "--no-progress",
            "--param",
            &port_param,
            "--state",
            &state,
            "--report-dir",
            "report",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run_id = run_id_of(&out);
    std::thread::sleep(Duration::from_millis(500));
    assert_up(&dir, port);
    verify_and_check(&dir, &run_id);
    destroy_and_check(&dir, &run_id, port, &[]);
}

#[test]
fn a_drill_without_keep_leaves_nothing_running() {
    let dir = quickstart("drill-down");
    let port = free_port();
    let port_param = format!("port={port}");
    let state = state_arg(&dir);
    let out = respawn(
        &dir,
        &[
            "drill",
            "recover.yaml",
            "--no-progress",
            "--param",
            &port_param,
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!listening(port));
    let run_id = run_id_of(&out);
    let nothing = respawn(&dir, &["destroy", &run_id, "--state", &state]);
    assert_eq!(nothing.status.code(), Some(0), "{}", text(&nothing));
    assert!(
        text(&nothing).contains("nothing left to destroy"),
        "{}",
        text(&nothing)
    );
}

#[test]
fn destroy_of_an_unknown_run_is_refused_clearly() {
    let dir = quickstart("destroy-unknown");
    let state = state_arg(&dir);
    for command in ["destroy", "verify"] {
        let out = respawn(
            &dir,
            &[command, "20991231T000000-abcdef", "--state", &state],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("no run `20991231T000000-abcdef`"),
            "{}",
            text(&out)
        );
        assert!(!text(&out).contains("panicked"));
    }
}

/// A failover whose runner was SIGKILLed mid-apply: destroy refuses while the dead runner's lease looks alive,
/// then with --takeover tears down everything the journal shows was created, services included.
#[test]
fn destroy_after_the_runner_was_killed_mid_apply_removes_what_the_journal_shows() {
    let dir = quickstart("destroy-killed");
    // The web step waits for a port nothing listens on, so its apply is still running (its service started and
    // journaled) when the runner is killed.
    let workflow = dir.join("recover.yaml");
    let text_before = std::fs::read_to_string(&workflow).unwrap();
    let slow = text_before.replace(
        "      port: ${{ params.port }}\n",
        "      port: 1\n      wait_ms: 30000\n",
    );
    assert_ne!(slow, text_before, "the web step's port line moved");
    std::fs::write(&workflow, slow).unwrap();
    let port = free_port();
    let state = state_arg(&dir);
    let port_param = format!("port={port}");
    let mut runner = Command::new(common::bin())
        .args([
            "failover",
            "recover.yaml",
            "--yes",
            "--no-progress",
            "--param",
            &port_param,
            "--state",
            &state,
            "--report-dir",
            "report",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_site_restored(&dir);
    let started = std::time::Instant::now();
    while !listening(port) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the service never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        runner.try_wait().unwrap().is_none(),
        "the runner is still applying"
    );
    runner.kill().unwrap();
    runner.wait().unwrap();
    let run_id = std::fs::read_dir(dir.join("state/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();

    let held = respawn(&dir, &["destroy", &run_id, "--yes", "--state", &state]);
    assert_eq!(held.status.code(), Some(2), "{}", text(&held));
    assert!(text(&held).contains("--takeover"), "{}", text(&held));

    assert!(
        listening(port),
        "the dead runner's detached service runs on"
    );
    let out = respawn(
        &dir,
        &[
            "destroy",
            &run_id,
            "--yes",
            "--takeover",
            "--no-progress",
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("destroy   web"),
        "the cut-off step is destroyed: {}",
        text(&out)
    );
    assert!(
        !region_dir(&dir).join("shop").exists(),
        "the region is left"
    );
    assert!(!listening(port));
    assert!(!process_running(&format!("http.server {port}")));
    let runs = text(&respawn(&dir, &["runs", "--state", &state]));
    let line = runs.lines().find(|l| l.starts_with(&run_id)).unwrap();
    assert!(line.contains("destroyed"), "{line}");
}
