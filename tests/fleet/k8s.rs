//! The Job manifest of `fleet k8s`, and a member whose workflow is kept in a store.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::common::{respawn, text};
use super::*;

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
