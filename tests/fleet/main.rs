//! Fleets through the binary: twenty members run as a Kubernetes Indexed Job runs them (one process per index,
//! its index in JOB_COMPLETION_INDEX, some killed with SIGKILL and started again), `fleet local` with a failing
//! member and one blocked behind it, the fleet report against docs/fleet-report.schema.json, and the Job
//! manifest of `fleet k8s` against the Kubernetes Job schema.

#[path = "../common/mod.rs"]
mod common;

mod job;
mod k8s;
mod local;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, respawn, text};
use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A member workflow: a slow restore (so that a kill lands inside the run), a step that counts its applies in
/// step state, and a verification.
pub fn member_workflow(failing: bool) -> String {
    let echo =
        Path::new(respawn::host::sources::TEST_PLUGINS_DIR).join("respawn_testing_echo.wasm");
    let last = if failing {
        "  - id: configure\n    uses: echo/fail\n    needs: [restore]\n    with: { message: config store unreachable }\n"
    } else {
        "  - id: configure\n    uses: echo/state\n    needs: [restore]\n"
    };
    format!(
        "respawn: 1\nname: svc\nversion: 1.0.0\n\
         params:\n  service: {{ type: string }}\n  pause: {{ type: string, default: '0.5' }}\n\
         plugins:\n  echo: file://{}\n\
         steps:\n  - id: restore\n    uses: echo/run\n    with: {{ program: sleep, args: ['${{{{ params.pause }}}}'] }}\n\
         \x20   grants: {{ exec: [sleep] }}\n{last}\
         verify:\n  - id: answers\n    uses: echo/echo\n    with: {{ service: '${{{{ params.service }}}}' }}\n",
        echo.display()
    )
}

/// A directory with `svc/recover.yaml` and `bad/recover.yaml` locked, and `fleet.yaml` as given.
pub fn fleet_dir(name: &str, fleet: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("respawn-fleet-{name}-"))
        .tempdir()
        .unwrap();
    for (sub, failing) in [("svc", false), ("bad", true)] {
        let d = tmp.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("recover.yaml"), member_workflow(failing)).unwrap();
        let out = respawn(&d, &["lock", "recover.yaml"]);
        assert!(out.status.success(), "lock: {}", text(&out));
    }
    std::fs::write(tmp.path().join("fleet.yaml"), fleet).unwrap();
    tmp
}

pub fn state_url(dir: &Path) -> String {
    format!("file://{}", dir.join("state").display())
}

/// `respawn fleet run fleet.yaml` for one index, as a pod of the Job: the index only in JOB_COMPLETION_INDEX.
pub fn start_member(dir: &Path, fleet_run: &str, index: usize) -> Child {
    Command::new(bin())
        .args(["fleet", "run", "fleet.yaml", "--no-progress"])
        .args(["--fleet-run", fleet_run, "--state", &state_url(dir)])
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env("RESPAWN_LEASE", "2s")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for a child and returns its exit code and output.
pub fn finish(child: Child, deadline: Duration, what: &str) -> (Option<i32>, String) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (out.status.code(), text(&out));
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end within {deadline:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn events(dir: &Path, run_id: &str) -> Vec<Value> {
    let events_dir = dir.join("state/runs").join(run_id).join("events");
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&events_dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect(),
        Err(_) => return Vec::new(),
    };
    paths.sort();
    paths
        .iter()
        // An event file holds one event, or several on lines of their own when they were stored together.
        .flat_map(|p| {
            std::fs::read(p)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_json::from_slice(line).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// From the journal: once a step's apply succeeded it never started again, and no step succeeded twice.
pub fn assert_no_apply_ran_twice(run_id: &str, events: &[Value]) {
    let mut done = std::collections::BTreeSet::new();
    for e in events.iter().filter(|e| e["phase"] == "apply") {
        let step = e["step"].as_str().unwrap().to_string();
        if e["type"] == "step-started" {
            assert!(
                !done.contains(&step),
                "{run_id}: apply of `{step}` ran again after it succeeded"
            );
        }
        if e["type"] == "step-finished" && e["status"] == "succeeded" {
            assert!(
                done.insert(step.clone()),
                "{run_id}: `{step}` succeeded twice"
            );
        }
    }
}

/// The runs in the state store whose id starts with `prefix`.
pub fn runs_of(dir: &Path, prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("state/runs"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The compiled docs/fleet-report.schema.json, with `format` asserted.
pub fn check_against_schema(report: &Value) {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/fleet-report.schema.json")).unwrap(),
    )
    .unwrap();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource("file:///fleet-report.schema.json", doc)
        .unwrap();
    let mut schemas = boon::Schemas::new();
    let index = compiler
        .compile("file:///fleet-report.schema.json", &mut schemas)
        .unwrap();
    if let Err(e) = schemas.validate(report, index) {
        panic!("fleet report does not match its schema: {e:#}\n{report:#}");
    }
}

/// The members the Job test kills once each: `db`, which six others need, one of those, and three more. Their
/// restore takes two seconds, so that the kill lands inside it.
pub const KILLED: [usize; 5] = [0, 3, 8, 13, 19];

pub fn twenty_members() -> String {
    let mut fleet =
        String::from("respawn: 1\nfleet: eu-west\nversion: 1.0.0\nneeds_timeout: 3m\nmembers:\n");
    fleet.push_str(
        "  - name: db\n    workflow: svc/recover.yaml\n    params: { service: db, pause: '2' }\n",
    );
    for i in 1..20 {
        let needs = if i <= 6 { "\n    needs: [db]" } else { "" };
        let pause = if KILLED.contains(&i) {
            ", pause: '2'"
        } else {
            ""
        };
        fleet.push_str(&format!(
            "  - name: svc-{i}\n    workflow: svc/recover.yaml\n    params: {{ service: svc-{i}{pause} }}{needs}\n"
        ));
    }
    fleet
}
