//! Fleets through the binary: twenty members run as a Kubernetes Indexed Job runs them (one process per index,
//! its index in JOB_COMPLETION_INDEX, some killed with SIGKILL and started again), `fleet local` with a failing
//! member and one blocked behind it, the fleet report against docs/fleet-report.schema.json, and the Job
//! manifest of `fleet k8s` against the Kubernetes Job schema.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, respawn, text};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A member workflow: a slow restore (so that a kill lands inside the run), a step that counts its applies in
/// step state, and a verification.
fn member_workflow(failing: bool) -> String {
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
fn fleet_dir(name: &str, fleet: &str) -> tempfile::TempDir {
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

fn state_url(dir: &Path) -> String {
    format!("file://{}", dir.join("state").display())
}

/// `respawn fleet run fleet.yaml` for one index, as a pod of the Job: the index only in JOB_COMPLETION_INDEX.
fn start_member(dir: &Path, fleet_run: &str, index: usize) -> Child {
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
fn finish(child: Child, deadline: Duration, what: &str) -> (Option<i32>, String) {
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

fn events(dir: &Path, run_id: &str) -> Vec<Value> {
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
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// From the journal: once a step's apply succeeded it never started again, and no step succeeded twice.
fn assert_no_apply_ran_twice(run_id: &str, events: &[Value]) {
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
fn runs_of(dir: &Path, prefix: &str) -> Vec<String> {
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
fn check_against_schema(report: &Value) {
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
const KILLED: [usize; 5] = [0, 3, 8, 13, 19];

fn twenty_members() -> String {
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

#[test]
fn twenty_members_killed_and_restarted_like_an_indexed_job_each_pass_exactly_once() {
    let tmp = fleet_dir("job", &twenty_members());
    let dir = tmp.path();
    let out = respawn(dir, &["fleet", "validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("20 members"), "{}", text(&out));

    let fleet_run = format!("job-{}", std::process::id());
    let mut pods: Vec<Option<Child>> = (0..20)
        .map(|i| Some(start_member(dir, &fleet_run, i)))
        .collect();
    // SIGKILL chosen pods once their run is inside its steps (its journal holds a started step), as a node
    // failure would, then start them again as the Job controller does.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<usize> = KILLED.to_vec();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "members {pending:?} never started a step"
        );
        pending.retain(|&i| {
            let run_id = format!("{fleet_run}.{i}");
            let journal = events(dir, &run_id);
            if !journal.iter().any(|e| e["type"] == "step-started") {
                return true;
            }
            let mut pod = pods[i].take().unwrap();
            pod.kill().unwrap();
            pod.wait().unwrap();
            assert!(
                !events(dir, &run_id)
                    .iter()
                    .any(|e| e["type"] == "run-finished"),
                "member {i} finished before it was killed; the kill proves nothing"
            );
            pods[i] = Some(start_member(dir, &fleet_run, i));
            false
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, pod) in pods.into_iter().enumerate() {
        let (code, out) = finish(
            pod.unwrap(),
            Duration::from_secs(180),
            &format!("member {i}"),
        );
        assert_eq!(code, Some(0), "member {i}: {out}");
    }

    // Every member has exactly one run, which passed; no apply ran twice; the killed ones were resumed.
    let mut db_finished = String::new();
    for i in 0..20 {
        let run_id = format!("{fleet_run}.{i}");
        assert_eq!(
            runs_of(dir, &format!("{run_id}.")),
            Vec::<String>::new(),
            "member {i} started a second run"
        );
        let journal = events(dir, &run_id);
        assert_eq!(journal.first().unwrap()["type"], "run-started", "{run_id}");
        let last = journal.last().unwrap();
        assert_eq!(last["type"], "run-finished", "{run_id}");
        assert_eq!(last["outcome"], "passed", "{run_id}");
        assert_no_apply_ran_twice(&run_id, &journal);
        let resumed = journal.iter().any(|e| e["type"] == "resumed");
        assert_eq!(
            resumed,
            KILLED.contains(&i),
            "{run_id}: resumed only if it was killed"
        );
        if i == 0 {
            db_finished = last["at"].as_str().unwrap_or_default().to_string();
        }
        if (1..=6).contains(&i) {
            // A member that needs `db` started its run only after db's run finished.
            let started = journal[0]["started_at"].as_str().unwrap();
            assert!(
                started >= db_finished.as_str(),
                "{run_id} started at {started}, before db finished ({db_finished})"
            );
        }
    }
    assert!(!db_finished.is_empty());

    // A pod started again after its member passed finds the run and does nothing.
    let (code, out) = finish(
        start_member(dir, &fleet_run, 5),
        Duration::from_secs(60),
        "rerun of 5",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("already passed"), "{out}");
    assert_eq!(runs_of(dir, &fleet_run).len(), 20);

    let state = state_url(dir);
    let out = respawn(
        dir,
        &[
            "fleet", "report", &fleet_run, "--state", &state, "--format", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_against_schema(&report);
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["counts"], serde_json::json!({ "passed": 20 }));
    assert_eq!(report["rto"]["count"], 20);
    let members = report["members"].as_array().unwrap();
    let indexes: Vec<u64> = members
        .iter()
        .map(|m| m["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..20).collect::<Vec<u64>>());
    assert!(
        members
            .iter()
            .all(|m| m["runs"] == 1 && m["teardown"] == "succeeded")
    );
    // The fleet's RTO runs from the first start to the last recovery: at least every member's own RTO.
    let fleet_rto = report["rto_seconds"].as_f64().unwrap();
    assert!(
        fleet_rto >= report["rto"]["max"].as_f64().unwrap(),
        "{report:#}"
    );
    let first_start = members
        .iter()
        .map(|m| m["started_at"].as_str().unwrap())
        .min()
        .unwrap();
    assert_eq!(report["started_at"], first_start);
    let junit = respawn(
        dir,
        &[
            "fleet", "report", &fleet_run, "--state", &state, "--format", "junit",
        ],
    );
    let junit = String::from_utf8_lossy(&junit.stdout).into_owned();
    assert_eq!(junit.matches("<testcase").count(), 20, "{junit}");
    assert_eq!(junit.matches("<failure").count(), 0, "{junit}");
}

#[test]
fn fleet_local_runs_members_k_at_a_time_and_reports_failures_first() {
    let fleet = "respawn: 1\nfleet: small\nversion: 0.1.0\nmembers:\n\
        \x20 - name: web\n    workflow: svc/recover.yaml\n    params: { service: web, pause: '0.1' }\n\
        \x20 - name: payments\n    workflow: bad/recover.yaml\n    params: { service: payments, pause: '0.1' }\n\
        \x20 - name: ledger\n    workflow: svc/recover.yaml\n    params: { service: ledger }\n    needs: [payments]\n\
        \x20 - name: search\n    workflow: svc/recover.yaml\n    params: { service: search, pause: '0.1' }\n";
    let tmp = fleet_dir("local", fleet);
    let dir = tmp.path();
    let state = state_url(dir);
    let out = respawn(
        dir,
        &[
            "fleet",
            "local",
            "fleet.yaml",
            "--parallel",
            "2",
            "--state",
            &state,
            "--fleet-run",
            "loc1",
            "--out-dir",
            "out",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("member 1 payments: failed (exit 1)"), "{t}");
    assert!(t.contains("member 2 ledger: failed (exit 1)"), "{t}");
    assert!(t.contains("member 0 web: passed"), "{t}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/fleet-report.json")).unwrap())
            .unwrap();
    check_against_schema(&report);
    assert_eq!(report["outcome"], "failed");
    assert_eq!(
        report["rto_seconds"],
        Value::Null,
        "a fleet that did not recover has no RTO"
    );
    let order: Vec<(&str, &str)> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("payments", "failed"),
            ("ledger", "blocked"),
            ("web", "passed"),
            ("search", "passed")
        ]
    );
    let payments = &report["members"][0];
    assert!(
        payments["error"]
            .as_str()
            .unwrap()
            .contains("config store unreachable"),
        "{payments}"
    );
    assert_eq!(
        report["members"][1]["run_id"],
        Value::Null,
        "a blocked member never starts a run"
    );
    let junit = std::fs::read_to_string(dir.join("out/fleet-junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 4);
    assert_eq!(junit.matches("<failure").count(), 2);
    assert!(dir.join("out/member-1.log").exists());

    // Running the fleet run again starts nothing new: every member finds its run.
    let out = respawn(
        dir,
        &[
            "fleet",
            "local",
            "fleet.yaml",
            "--state",
            &state,
            "--fleet-run",
            "loc1",
            "--out-dir",
            "out",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(runs_of(dir, "loc1").len(), 3, "{:?}", runs_of(dir, "loc1"));

    // The same fleet run with a changed fleet file is refused before anything runs.
    std::fs::write(dir.join("fleet.yaml"), fleet.replace("0.1.0", "0.1.1")).unwrap();
    let out = respawn(
        dir,
        &[
            "fleet",
            "run",
            "fleet.yaml",
            "--index",
            "0",
            "--fleet-run",
            "loc1",
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("was started with another fleet file"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_fleets_and_bad_invocations_exit_2_with_the_place() {
    let fleet = "respawn: 1\nfleet: f\nversion: 1.0.0\nmembers:\n\
        \x20 - name: a\n    workflow: svc/recover.yaml\n    params: { service: a, nope: 1 }\n\
        \x20 - name: b\n    workflow: missing/recover.yaml\n    needs: [c]\n\
        \x20 - name: c\n    workflow: svc/recover.yaml\n    params: { service: c }\n";
    let tmp = fleet_dir("bad", fleet);
    let dir = tmp.path();
    let out = respawn(dir, &["fleet", "validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("fleet.yaml:10:13: `c` is member 2, listed after this one (1)"),
        "{t}"
    );

    // Structure fixed, the members' own problems point into the fleet file.
    std::fs::write(
        dir.join("fleet.yaml"),
        fleet.replace("    needs: [c]\n", ""),
    )
    .unwrap();
    let out = respawn(dir, &["fleet", "validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("fleet.yaml:7:27: member `a`"), "{t}");
    assert!(t.contains("--param nope"), "{t}");
    assert!(t.contains("fleet.yaml:9:15: member `b`"), "{t}");

    // An unlocked member workflow is refused, naming its lock.
    std::fs::remove_file(dir.join("svc/respawn.lock")).unwrap();
    let lone = "respawn: 1\nfleet: f\nversion: 1.0.0\nmembers:\n  - name: a\n    workflow: svc/recover.yaml\n    params: { service: a }\n";
    std::fs::write(dir.join("fleet.yaml"), lone).unwrap();
    let out = respawn(dir, &["fleet", "validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("respawn.lock"), "{}", text(&out));

    let state = state_url(dir);
    for (args, expect) in [
        (vec!["--index", "7"], "out of range"),
        (
            vec!["--index", "0", "--expect-sha256", "00"],
            "not the fleet file",
        ),
        (
            vec!["--index", "0", "--fleet-run", "../x"],
            "is not a run id",
        ),
    ] {
        let mut all = vec!["fleet", "run", "fleet.yaml", "--state", &state];
        if !args.contains(&"--fleet-run") {
            all.extend(["--fleet-run", "f1"]);
        }
        all.extend(args.iter());
        let out = respawn(dir, &all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", text(&out));
        assert!(text(&out).contains(expect), "{all:?}: {}", text(&out));
    }
    assert!(
        !dir.join("state/runs").exists(),
        "a refused member left a run behind"
    );
}

/// A member whose workflow is kept in S3 (moto) is fetched with its lock, checked against its pinned sha256, and
/// run; a wrong pin is refused before anything runs.
#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_member_workflow_in_a_store_is_fetched_pinned_and_run() {
    let bucket =
        std::env::var("RESPAWN_TEST_S3").expect("RESPAWN_TEST_S3: run tests/servers/start");
    let endpoint = std::env::var("RESPAWN_TEST_S3_ENDPOINT").unwrap();
    let tmp = fleet_dir("store", "");
    let dir = tmp.path();
    let prefix = format!("{bucket}/fleet-{}/svc", std::process::id());
    let query = format!("endpoint={endpoint}&allow_http=true");
    for file in ["recover.yaml", "respawn.lock"] {
        let url = format!("{prefix}/{file}?{query}");
        let local = dir.join("svc").join(file);
        let out = respawn(
            dir,
            &["store", "put", &url, "--file", local.to_str().unwrap()],
        );
        assert!(out.status.success(), "store put {url}: {}", text(&out));
    }
    let sha = {
        use sha2::Digest;
        hex_of(&sha2::Sha256::digest(
            std::fs::read(dir.join("svc/recover.yaml")).unwrap(),
        ))
    };
    // Only the store's copy exists from here on.
    std::fs::remove_dir_all(dir.join("svc")).unwrap();
    let fleet = |pin: &str| {
        format!(
            "respawn: 1\nfleet: remote\nversion: 1.0.0\nmembers:\n  - name: svc\n    workflow: {prefix}/recover.yaml?{query}\n\
             \x20   sha256: {pin}\n    params: {{ service: svc, pause: '0.1' }}\n"
        )
    };
    std::fs::write(dir.join("fleet.yaml"), fleet(&sha)).unwrap();
    let out = respawn(dir, &["fleet", "validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = state_url(dir);
    let out = respawn(
        dir,
        &[
            "fleet",
            "run",
            "fleet.yaml",
            "--index",
            "0",
            "--fleet-run",
            "remote1",
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(runs_of(dir, "remote1"), ["remote1.0"]);

    std::fs::write(dir.join("fleet.yaml"), fleet(&"0".repeat(64))).unwrap();
    let out = respawn(
        dir,
        &[
            "fleet",
            "run",
            "fleet.yaml",
            "--index",
            "0",
            "--fleet-run",
            "remote2",
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("has sha256 {sha}, not the")),
        "{}",
        text(&out)
    );
    assert!(runs_of(dir, "remote2").is_empty());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rendered Job, as YAML parsed to JSON.
fn manifest(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "fleet",
        "k8s",
        "fleet.yaml",
        "--image",
        "registry.example.com/dr/respawn:1.4.0",
        "--state",
        "s3://dr-state/respawn",
        "--fleet-run",
        "20261202T101010-a1b2c3",
        "--secret",
        "dr-creds",
        "-o",
        "job.yaml",
    ];
    args.extend_from_slice(extra);
    let out = respawn(dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_yaml::from_str(&std::fs::read_to_string(dir.join("job.yaml")).unwrap()).unwrap()
}

#[test]
fn the_job_manifest_maps_exit_codes_and_references_credentials() {
    let tmp = fleet_dir("k8s", &twenty_members());
    let dir = tmp.path();
    let job = manifest(dir, &["--parallel", "5", "--yes"]);
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 20);
    assert_eq!(spec["parallelism"], 5);
    assert_eq!(spec["backoffLimitPerIndex"], 3);
    let rules = spec["podFailurePolicy"]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["action"], "FailIndex");
    assert_eq!(rules[0]["onExitCodes"]["values"], serde_json::json!([1, 2]));
    assert_eq!(rules[1]["action"], "Ignore");
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "dr-creds");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let sha = respawn::workflow::fleet::load_file(&dir.join("fleet.yaml"))
        .unwrap()
        .sha256;
    assert_eq!(
        args,
        [
            "fleet",
            "run",
            "/fleet/fleet.yaml",
            "--no-progress",
            "--expect-sha256",
            &sha,
            "--yes"
        ]
    );
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "RESPAWN_FLEET_RUN" && e["value"] == "20261202T101010-a1b2c3")
    );
    assert!(
        env.iter().all(
            |e| e.get("valueFrom").is_none() && !e["name"].as_str().unwrap().contains("SECRET")
        )
    );

    let out = respawn(
        dir,
        &[
            "fleet",
            "k8s",
            "fleet.yaml",
            "--image",
            "x",
            "--state",
            "s3://AKIAEXAMPLE:wJalrXUtn@bucket/state",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        !text(&out).contains("wJalrXUtn"),
        "a credential was echoed: {}",
        text(&out)
    );
}

/// kubernetes-validate (PyPI, pinned in tests/servers/install) checks the manifest against the Job schema of
/// Kubernetes 1.33 with unknown fields refused; a manifest with a misspelt field must fail it, so the check
/// can fail.
#[test]
#[ignore = "needs kubernetes-validate (tests/servers/install)"]
fn the_job_manifest_is_a_valid_kubernetes_job() {
    let tool = repo().join("target/servers/venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run tests/servers/install",
        tool.display()
    );
    let tmp = fleet_dir("k8s-schema", &twenty_members());
    let dir = tmp.path();
    manifest(dir, &["--namespace", "dr", "--service-account", "respawn"]);
    let validate = |file: &str| {
        Command::new(&tool)
            .args(["--strict", "--kubernetes-version", "1.33.0", file])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let out = validate("job.yaml");
    assert!(out.status.success(), "kubernetes-validate: {}", text(&out));

    let good = std::fs::read_to_string(dir.join("job.yaml")).unwrap();
    let broken = good.replacen("backoffLimitPerIndex", "backoffLimitPerIdx", 1);
    assert_ne!(good, broken);
    std::fs::write(dir.join("broken.yaml"), broken).unwrap();
    let out = validate("broken.yaml");
    assert!(
        !out.status.success(),
        "a misspelt field passed: {}",
        text(&out)
    );
}
