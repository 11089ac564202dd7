//! Durable runs through the binary: the journal, resume after SIGKILL at random moments, fencing of a second
//! runner, the audit of the hash chain, and `respawn runs`.

#[path = "../common/mod.rs"]
mod common;

mod journal;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    bin, free_port, listening, process_running, quickstart, region_dir, respawn, resume_takeover,
    text, wait_for_site_restored,
};

/// splitmix64: a seeded, dependency-free source of kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn state_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn start_drill(dir: &Path, state: &Path, report: &str, port: u16, env: &[(&str, &str)]) -> Child {
    let state = state_url(state);
    let port = format!("port={port}");
    let mut cmd = Command::new(bin());
    cmd.args([
        "drill",
        "recover.yaml",
        "--no-progress",
        "--param",
        &port,
        "--state",
        &state,
        "--report-dir",
        report,
    ])
    .current_dir(dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The only run in a state store, waiting (bounded) until its first event is stored: a file named by its
/// number, not object_store's staging file (`000000000000#1`), which a runner killed at once leaves behind.
fn wait_for_run(state: &Path, deadline: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(mut runs) = std::fs::read_dir(state.join("runs"))
            && let Some(Ok(run)) = runs.next()
            && std::fs::read_dir(run.path().join("events")).is_ok_and(|mut e| {
                e.any(|f| {
                    f.is_ok_and(|f| {
                        let name = f.file_name();
                        let name = name.to_string_lossy();
                        name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit())
                    })
                })
            })
        {
            return Some(run.file_name().to_string_lossy().into_owned());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The event files of a run, in order. A runner killed mid-write can leave object_store's staging file beside
/// them (`000000000012#1`); like the runner's own listing, this passes over it.
fn event_paths(state: &Path, run_id: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(state.join("runs").join(run_id).join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    paths.sort();
    paths
}

/// The events of a run, in order: an event file holds one event, or several on lines of their own when they
/// were appended while the journal was writing.
fn events(state: &Path, run_id: &str) -> Vec<serde_json::Value> {
    event_paths(state, run_id)
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

/// From the journal: once a step's apply succeeded, it is never started again.
fn assert_no_apply_ran_twice(events: &[serde_json::Value]) {
    let mut done = std::collections::BTreeSet::new();
    for e in events {
        let (kind, phase, step) = (&e["type"], &e["phase"], e["step"].as_str());
        if phase != "apply" {
            continue;
        }
        let step = step.unwrap().to_string();
        if kind == "step-started" {
            assert!(
                !done.contains(&step),
                "apply of `{step}` ran again after it had succeeded (event {})",
                e["seq"]
            );
        }
        if kind == "step-finished" && e["status"] == "succeeded" {
            assert!(done.insert(step.clone()), "`{step}` succeeded twice");
        }
    }
}

/// A quickstart drill run to a pass, its report in `report`: (its directory, its state store, its run id).
fn passed_drill(name: &str) -> (PathBuf, PathBuf, String) {
    let dir = quickstart(name);
    let state = dir.join("state");
    let mut child = start_drill(&dir, &state, "report", free_port(), &[]);
    assert!(child.wait().unwrap().success());
    let run_id = wait_for_run(&state, Duration::from_secs(1)).unwrap();
    (dir, state, run_id)
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("report.json")).unwrap())
        .unwrap()
}

fn assert_clean(dir: &Path, port: u16, context: &str) {
    assert!(
        !region_dir(dir).exists(),
        "{context}: a region directory was left"
    );
    assert!(
        !listening(port),
        "{context}: something still listens on {port}"
    );
    assert!(
        !process_running(&format!("http.server {port}")),
        "{context}: the web service process was left"
    );
}

#[test]
fn a_drill_killed_at_random_moments_resumes_to_a_clean_pass_20_times() {
    let seed = std::env::var("RESPAWN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123u64);
    let mut rng = Rng(seed);
    let dir = quickstart("crash");

    // One uninterrupted drill measures how long a run lasts on this machine; kills fall inside that window.
    let state = dir.join("state-measure");
    let port = free_port();
    let mut child = start_drill(&dir, &state, "report-measure", port, &[]);
    wait_for_run(&state, Duration::from_secs(60)).expect("the run starts");
    let started = Instant::now();
    assert!(child.wait().unwrap().success());
    let window = started.elapsed().as_millis().max(50) as u64;

    let mut killed_mid_run = 0;
    for i in 0..20 {
        let context = format!("iteration {i} (seed {seed})");
        let state = dir.join(format!("state-{i}"));
        let report_dir = format!("report-{i}");
        let port = free_port();
        let mut child = start_drill(&dir, &state, &report_dir, port, &[]);
        let run_id = wait_for_run(&state, Duration::from_secs(60)).expect("the run starts");
        std::thread::sleep(Duration::from_millis(rng.next() % window));
        let finished_before_kill = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if !finished_before_kill {
            killed_mid_run += 1;
        }

        let out = resume_takeover(
            &dir,
            &run_id,
            &state_url(&state),
            &["--report-dir", &report_dir],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{context}: resume: {t}");
        let r = report(&dir, &report_dir);
        assert_eq!(r["outcome"], "passed", "{context}: {t}");
        assert_eq!(r["teardown"]["status"], "succeeded", "{context}: {t}");
        assert_clean(&dir, port, &context);
        let journal = events(&state, &run_id);
        assert_no_apply_ran_twice(&journal);
        assert_eq!(journal.last().unwrap()["type"], "run-finished", "{context}");
        let audit = respawn(
            &dir,
            &["audit", "verify", &run_id, "--state", &state_url(&state)],
        );
        assert_eq!(audit.status.code(), Some(0), "{context}: {}", text(&audit));
    }
    assert!(
        killed_mid_run >= 10,
        "only {killed_mid_run} of 20 kills hit a running drill (window {window} ms)"
    );
}

#[test]
fn a_live_run_is_not_resumed_without_takeover_and_a_dead_one_shows_as_stale() {
    let dir = quickstart("stale");
    let state = dir.join("state");
    let port = free_port();
    let mut child = start_drill(&dir, &state, "report", port, &[("RESPAWN_LEASE", "1s")]);
    let run_id = wait_for_run(&state, Duration::from_secs(60)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let state_arg = state_url(&state);

    let early = respawn(&dir, &["resume", &run_id, "--state", &state_arg]);
    let t = text(&early);
    if early.status.code() == Some(2) {
        assert!(t.contains("--takeover") && t.contains("lease"), "{t}");
    }
    std::thread::sleep(Duration::from_millis(1300));
    let runs = respawn(&dir, &["runs", "--state", &state_arg]);
    let listing = text(&runs);
    assert!(runs.status.success(), "{listing}");
    let line = listing
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.contains("shop@1.0.0") && line.contains("drill") && line.contains("stale"),
        "{line}"
    );

    // Resume runs the workflow text recorded at start, whatever the file on disk says now.
    std::fs::write(dir.join("recover.yaml"), "this is not a workflow any more").unwrap();
    let out = respawn(
        &dir,
        &[
            "resume",
            &run_id,
            "--no-progress",
            "--state",
            &state_arg,
            "--report-dir",
            "report",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_clean(&dir, port, "stale resume");
    let listing = text(&respawn(&dir, &["runs", "--state", &state_arg]));
    assert!(listing.contains("passed"), "{listing}");

    // A finished run says so and changes nothing.
    let before = event_paths(&state, &run_id).len();
    let again = respawn(&dir, &["resume", &run_id, "--state", &state_arg]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again).contains("already finished"),
        "{}",
        text(&again)
    );
    assert_eq!(event_paths(&state, &run_id).len(), before);
}

#[test]
fn two_runners_resuming_one_run_yield_exactly_one_that_proceeds() {
    let dir = quickstart("fence");
    let state = dir.join("state");
    let port = free_port();
    let mut child = start_drill(&dir, &state, "report", port, &[]);
    let run_id = wait_for_run(&state, Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _ = child.kill();
    let _ = child.wait();
    let state_arg = state_url(&state);
    let spawn_resume = || {
        Command::new(bin())
            .args([
                "resume",
                &run_id,
                "--takeover",
                "--no-progress",
                "--state",
                &state_arg,
            ])
            .args(["--report-dir", "report"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn_resume(), spawn_resume());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    let (winner, loser) = if codes[0] == Some(0) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(
        winner.status.code(),
        Some(0),
        "{}\n---\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(
        loser.status.code(),
        Some(2),
        "{}\n---\n{}",
        text(&a),
        text(&b)
    );
    let why = text(loser);
    assert!(
        why.contains("taken over") || why.contains("resumed run") || why.contains("held by"),
        "{why}"
    );
    assert_eq!(report(&dir, "report")["outcome"], "passed");
    assert_clean(&dir, port, "fenced resume");
    assert_no_apply_ran_twice(&events(&state, &run_id));
}

#[test]
fn a_takeover_stops_the_live_runner_at_once_and_the_new_one_finishes_the_run() {
    let dir = quickstart("takeover");
    // A web service that never listens keeps the first runner busy in apply.
    let wf = std::fs::read_to_string(dir.join("recover.yaml")).unwrap();
    let stuck = wf
        .replace(
            "args: [-m, http.server, \"${{ params.port | string }}\", --bind, 127.0.0.1, --directory, \".\"]",
            "args: [-c, \"import time; time.sleep(121)\"]",
        )
        .replace(
            "      port: ${{ params.port }}\n    grants: { exec",
            "      port: ${{ params.port }}\n      wait_ms: 3000\n    grants: { exec",
        );
    assert_eq!(stuck.matches("sleep(121)").count(), 1);
    assert!(stuck.contains("wait_ms: 3000"));
    std::fs::write(dir.join("recover.yaml"), stuck).unwrap();
    let state = dir.join("state");
    let port = free_port();
    let first = Command::new(bin())
        .args([
            "drill",
            "recover.yaml",
            "--no-progress",
            "--state",
            &state_url(&state),
        ])
        .args([
            "--param",
            &format!("port={port}"),
            "--report-dir",
            "report-first",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_id = wait_for_run(&state, Duration::from_secs(60)).unwrap();
    wait_for_site_restored(&dir);
    std::thread::sleep(Duration::from_millis(300));

    let second = resume_takeover(&dir, &run_id, &state_url(&state), &[]);
    let first = first.wait_with_output().unwrap();
    let (t1, t2) = (text(&first), text(&second));
    assert_eq!(first.status.code(), Some(2), "the first runner stops: {t1}");
    assert!(t1.contains("taken over"), "{t1}");
    assert!(
        !dir.join("report-first").exists(),
        "the runner that lost the run writes no report"
    );
    // The new owner finishes the run: the stuck service fails it, and the drill still tears everything down.
    assert_eq!(second.status.code(), Some(1), "{t2}");
    assert!(t2.contains("teardown  succeeded"), "{t2}");
    assert!(!region_dir(&dir).exists(), "{t2}");
    assert!(
        !process_running("time.sleep(121)"),
        "no service process is left"
    );
    let journal = events(&state, &run_id);
    assert_no_apply_ran_twice(&journal);
    let writers: std::collections::BTreeSet<&str> = journal
        .iter()
        .map(|e| e["runner"].as_str().unwrap())
        .collect();
    assert_eq!(writers.len(), 2, "two runners wrote the one chain");
    let audit = respawn(
        &dir,
        &["audit", "verify", &run_id, "--state", &state_url(&state)],
    );
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
}

/// A runner killed between starting the web service and journaling it leaves a process that no event names,
/// holding the port. Resume finds it by the run's marker in its environment and stops it; otherwise the web
/// step, run again, would meet "port in use by something else".
#[test]
fn resume_stops_a_service_the_dead_runner_never_journaled() {
    let dir = quickstart("unjournaled");
    let state = dir.join("state");
    let port = free_port();
    let mut runner = start_drill(&dir, &state, "report-first", port, &[]);
    let run_id = wait_for_run(&state, Duration::from_secs(60)).expect("the run starts");
    runner.kill().unwrap();
    runner.wait().unwrap();
    let journaled = events(&state, &run_id);
    assert!(
        !journaled.iter().any(|e| e["type"] == "service-started"),
        "the runner was meant to die before starting the service: {journaled:?}"
    );
    // What the dead runner's spawn would have left: the service, marked with the run and step, not journaled.
    let mut leftover = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .env("RESPAWN_RUN", &run_id)
        .env("RESPAWN_STEP", "web")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !listening(port) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the leftover never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = resume_takeover(
        &dir,
        &run_id,
        &state_url(&state),
        &["--report-dir", "report"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("stopped a service left by the dead runner"),
        "{}",
        text(&out)
    );
    let status = leftover.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the leftover was killed by a signal: {status}"
    );
    assert_eq!(report(&dir, "report")["outcome"], "passed");
    assert_clean(&dir, port, "after resume");
    assert_no_apply_ran_twice(&events(&state, &run_id));
}

/// A runner that dies after journaling the end of its run but before writing the report leaves no evidence
/// file. Resume of the finished run writes it from the journal, the same report the runner would have written.
#[test]
fn a_finished_run_whose_report_was_never_written_gets_it_from_the_journal() {
    let (dir, state, run_id) = passed_drill("lost-report");
    let written = report(&dir, "report");
    std::fs::remove_dir_all(dir.join("report")).unwrap();

    let out = respawn(&dir, &["resume", &run_id, "--state", &state_url(&state)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("already finished"), "{}", text(&out));
    assert!(
        text(&out).contains("its report was missing"),
        "{}",
        text(&out)
    );
    let mut rebuilt = report(&dir, "report");
    // The journal records the workflow's absolute path; the runner named it as it was given.
    let file = rebuilt["workflow"]["file"].take();
    assert_eq!(
        file.as_str(),
        Some(dir.join("recover.yaml").to_str().unwrap()),
        "{file}"
    );
    rebuilt["workflow"]["file"] = written["workflow"]["file"].clone();
    assert_eq!(
        rebuilt, written,
        "the report rebuilt from the journal differs"
    );
    for file in ["report.md", "junit.xml"] {
        assert!(dir.join("report").join(file).is_file(), "{file}");
    }
    let audit = respawn(
        &dir,
        &["audit", "verify", &run_id, "--state", &state_url(&state)],
    );
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(text(&audit).contains("head matches"), "{}", text(&audit));
    // Once there, it is left alone.
    let again = respawn(&dir, &["resume", &run_id, "--state", &state_url(&state)]);
    assert!(
        !text(&again).contains("its report was missing"),
        "{}",
        text(&again)
    );
}
