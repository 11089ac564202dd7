//! `fleet local`, and fleets and invocations that are refused.

use serde_json::Value;

use super::common::{respawn, text};
use super::*;

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

    // A member whose journal was altered is not resumed or rerun (exit 2: fail the index), and the fleet report
    // shows it failed with why instead of failing as a whole.
    let events_dir = dir.join("state/runs/loc1.3/events");
    let mut files: Vec<_> = std::fs::read_dir(&events_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let step_event = files
        .iter()
        .find(|p| {
            String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains("\"step\":\"restore\"")
        })
        .expect("an event of step `restore`");
    let altered = String::from_utf8(std::fs::read(step_event).unwrap())
        .unwrap()
        .replacen("\"step\":\"restore\"", "\"step\":\"restorf\"", 1);
    std::fs::write(step_event, altered).unwrap();
    let out = respawn(
        dir,
        &[
            "fleet",
            "run",
            "fleet.yaml",
            "--index",
            "3",
            "--fleet-run",
            "loc1",
            "--state",
            &state,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
    let out = respawn(
        dir,
        &[
            "fleet", "report", "loc1", "--state", &state, "--format", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_against_schema(&report);
    let search = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "search")
        .unwrap();
    assert_eq!(
        (&search["name"], &search["status"]),
        (&"search".into(), &"failed".into()),
        "{report:#}"
    );
    assert!(
        search["error"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{search}"
    );

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

    // `respawn validate` on a fleet file says which command checks it.
    let out = respawn(dir, &["validate", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("respawn fleet validate fleet.yaml"),
        "{}",
        text(&out)
    );

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
