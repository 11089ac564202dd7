//! Twenty members run as a Kubernetes Indexed Job runs them, five killed with SIGKILL and started again.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::respawn;
use super::*;

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
