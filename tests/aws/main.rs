//! The `aws` provider end to end against the moto server that `tests/servers/start` runs on 127.0.0.1:5055, seeded
//! and inspected with boto3 (tests/aws/moto.py, in moto's own venv). moto's state is in memory and shared, so each
//! test makes its own AMI, DB instance and hosted zone under a prefix of its own.

#[path = "../common/mod.rs"]
mod common;
mod faults;
mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, run_id_of, text};
use serde_json::Value;

/// moto's endpoint, from target/servers/env.
fn moto() -> String {
    std::env::var("RESPAWN_TEST_S3_ENDPOINT").expect(
        "RESPAWN_TEST_S3_ENDPOINT unset: run tests/servers/start and source target/servers/env",
    )
}

fn moto_port() -> u16 {
    moto()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("RESPAWN_TEST_S3_ENDPOINT has no port")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// moto's venv (tests/servers/install): its python has boto3, its bin moto_server.
fn venv() -> PathBuf {
    std::env::var_os("RESPAWN_TEST_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/servers/venv"))
}

/// tests/aws/moto.py against `endpoint` with the test credentials (or `creds`); its JSON answer.
fn moto_py(endpoint: &str, args: &[&str], creds: Option<(&str, &str)>) -> Value {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(repo_root().join("tests/aws/moto.py"))
        .arg(endpoint)
        .args(args);
    if let Some((key, secret)) = creds {
        cmd.env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    let out = cmd.output().expect("moto.py: is moto's venv installed?");
    assert!(out.status.success(), "moto.py {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A prefix of this test and process: lower case, starting with a letter (an RDS identifier's rules).
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{test}-{}-{}", std::process::id(), nanos % 100_000)
}

struct Seed {
    prefix: String,
    image: String,
    zone_id: String,
    db: String,
    record: String,
}

fn seed(test: &str) -> Seed {
    let prefix = prefix(test);
    let s = moto_py(&moto(), &["seed", &prefix, "us-east-1", "us-west-2"], None);
    let get = |k: &str| s[k].as_str().unwrap().to_string();
    Seed {
        image: get("image"),
        zone_id: get("zone_id"),
        db: get("db"),
        record: get("record"),
        prefix,
    }
}

impl Seed {
    /// What moto holds of this test's resources now, and the ids of every health check (other tests' too).
    fn state(&self) -> Value {
        moto_py(
            &moto(),
            &["state", &self.prefix, "us-west-2", &self.zone_id],
            None,
        )
    }

    /// [`Seed::state`] without what other tests change beside this one.
    fn own_state(&self) -> Value {
        let mut state = self.state();
        state.as_object_mut().unwrap().remove("health_check_ids");
        state
    }

    fn params(&self, endpoint: &str) -> Vec<String> {
        [
            format!("endpoint={endpoint}"),
            format!("image={}", self.image),
            format!("db_source={}", self.db),
            format!("db_identifier={}-dr", self.prefix),
            format!("zone_id={}", self.zone_id),
            format!("record={}", self.record),
        ]
        .into_iter()
        .flat_map(|p| ["--param".to_string(), p])
        .collect()
    }
}

/// A fresh directory to run in (reports and the state store go under its .respawn/), and the path of
/// workflows/aws-failover/recover.yaml, run as it is in the repository, lock and all.
fn example_workflow(test: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("respawn-aws-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let workflow = repo_root().join("workflows/aws-failover/recover.yaml");
    (dir, workflow.display().to_string())
}

/// `respawn ARGS` in `dir` with the test credentials (or `env` over them).
fn respawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn with_params<'a>(args: &[&'a str], params: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(params.iter().map(String::as_str));
    all
}

fn report(dir: &Path, run_id: &str) -> Value {
    let path = dir.join(format!(".respawn/runs/{run_id}/report.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn plan_lists_every_change_and_writes_nothing() {
    let s = seed("plan");
    let (dir, wf) = example_workflow("plan");
    let before = s.own_state();
    let params = s.params(&moto());
    let out = respawn(&dir, &with_params(&["plan", &wf], &params), &[]);
    let said = text(&out);
    assert!(out.status.success(), "plan: {said}");
    for expected in [
        format!(
            "copy {} ({}-web, 1 snapshots) from us-east-1 to us-west-2",
            s.image, s.prefix
        ),
        format!("restore {} to ", s.db),
        format!("as DB instance {}-dr in us-west-2", s.prefix),
        format!(
            "UPSERT {}. A in {}: 192.0.2.10 (ttl 300) → 198.51.100.20 (ttl 60)",
            s.record, s.zone_id
        ),
        "create a HTTP health check of 198.51.100.20:80/health".to_string(),
        // What the launch depends on is known only after the copy.
        "known_after_apply".to_string(),
    ] {
        assert!(
            said.contains(&expected),
            "plan does not say `{expected}`: {said}"
        );
    }
    assert_eq!(s.own_state(), before, "plan changed moto's state");
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_kept_drill_fails_over_then_verify_and_destroy_put_everything_back() {
    let s = seed("keep");
    let (dir, wf) = example_workflow("keep");
    let before = s.state();
    assert_eq!(before["images"], serde_json::json!([]));
    let params = s.params(&moto());
    let out = respawn(
        &dir,
        &with_params(&["drill", &wf, "--keep", "--no-progress"], &params),
        &[],
    );
    assert!(out.status.success(), "drill: {}", text(&out));
    let run_id = run_id_of(&out);
    let during = s.state();
    let images = during["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "one copy in us-west-2: {during}");
    assert_eq!(during["instances"].as_array().unwrap().len(), 2, "{during}");
    assert_eq!(
        during["dbs"],
        serde_json::json!([s.db, format!("{}-dr", s.prefix)])
    );
    let rep = report(&dir, &run_id);
    let web = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == "web")
        .unwrap();
    assert_eq!(web["status"], "succeeded", "{web}");
    let record = &during["record"];
    assert_eq!(record["TTL"], 60, "{record}");
    assert_eq!(
        record["ResourceRecords"][0]["Value"], "198.51.100.20",
        "the record does not point at the DR address: {record}"
    );
    let health_check = record["HealthCheckId"].as_str().unwrap().to_string();
    assert!(
        during["health_check_ids"]
            .to_string()
            .contains(&health_check),
        "{during}"
    );
    assert_eq!(rep["recovery_points"][0]["step"], "db", "{rep}");

    let verified = respawn(&dir, &["verify", &run_id, "--no-progress"], &[]);
    assert!(verified.status.success(), "verify: {}", text(&verified));

    let destroyed = respawn(&dir, &["destroy", &run_id, "--yes", "--no-progress"], &[]);
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
    let after = s.state();
    assert_eq!(after["images"], before["images"], "{after}");
    assert_eq!(after["instances"], before["instances"], "{after}");
    assert_eq!(after["dbs"], before["dbs"], "{after}");
    assert_eq!(
        after["record"], before["record"],
        "the record set is not back exactly: {after}"
    );
    assert!(
        !after["health_check_ids"]
            .to_string()
            .contains(&health_check),
        "the health check is still there: {after}"
    );
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_drill_tears_down_to_exactly_what_was_there() {
    let s = seed("drill");
    let (dir, wf) = example_workflow("drill");
    let before = s.state();
    let params = s.params(&moto());
    let out = respawn(
        &dir,
        &with_params(&["drill", &wf, "--no-progress"], &params),
        &[],
    );
    let said = text(&out);
    assert!(out.status.success(), "drill: {said}");
    assert!(said.contains("teardown  succeeded"), "{said}");
    let rep = report(&dir, &run_id_of(&out));
    assert_eq!(rep["outcome"], "passed", "{rep}");
    for v in rep["verifications"].as_array().unwrap() {
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let after = s.state();
    assert_eq!(after["images"], before["images"], "{after}");
    assert_eq!(after["instances"], before["instances"], "{after}");
    assert_eq!(after["dbs"], before["dbs"], "{after}");
    assert_eq!(after["record"], before["record"], "{after}");
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn the_example_runs_as_a_drill_with_one_command() {
    let scratch = std::env::temp_dir().join(format!("respawn-aws-{}-run", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let state = format!("file://{}", scratch.join("state").display());
    let out = Command::new("bash")
        .arg(repo_root().join("workflows/aws-failover/run"))
        .args(["--no-progress", "--state", &state, "--report-dir"])
        .arg(scratch.join("report"))
        .env("RESPAWN", bin())
        .env("RESPAWN_TEST_MOTO_VENV", venv())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", text(&out));
    let rep: Value =
        serde_json::from_slice(&std::fs::read(scratch.join("report/report.json")).unwrap())
            .unwrap();
    assert_eq!(rep["outcome"], "passed", "{rep}");
    assert_eq!(rep["teardown"]["status"], "succeeded", "{rep}");
    assert_eq!(rep["steps"].as_array().unwrap().len(), 4, "{rep}");
}

/// Plan only: moto keeps a promoted replica's ReadReplicaSourceDBInstanceIdentifier, which AWS clears when the
/// promotion is done, so apply would wait for ever there; promotion itself is tested against the mock host
/// (plugins/aws/src/tests.rs).
#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn plan_says_a_cross_region_replica_would_be_promoted_and_promotes_nothing() {
    let prefix = prefix("promote");
    let seeded = moto_py(
        &moto(),
        &["seed-replica", &prefix, "us-east-1", "us-west-2"],
        None,
    );
    let replica = seeded["replica"].as_str().unwrap();
    let db = |id: &str| moto_py(&moto(), &["db", "us-west-2", id], None);
    assert!(db(replica)["replica_of"].is_string());
    let dir = std::env::temp_dir().join(format!("respawn-aws-{}-promote", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "respawn: 1\nname: promote\nversion: 1.0.0\n\
         secrets:\n  AWS_ACCESS_KEY_ID: {{ env: AWS_ACCESS_KEY_ID }}\n  AWS_SECRET_ACCESS_KEY: {{ env: AWS_SECRET_ACCESS_KEY }}\n\
         plugins:\n  aws: builtin:aws@0.1\nsteps:\n  - id: db\n    uses: aws/rds-restore\n\
         \x20   with: {{ endpoint: \"{}\", region: us-west-2, mode: promote-replica, identifier: {replica} }}\n\
         \x20   grants: {{ http: [\"http://127.0.0.1:*\"], secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY] }}\n",
        moto()
    );
    std::fs::write(dir.join("wf.yaml"), yaml).unwrap();
    let locked = respawn(&dir, &["lock", "wf.yaml"], &[]);
    assert!(locked.status.success(), "lock: {}", text(&locked));
    let plan = respawn(&dir, &["plan", "wf.yaml"], &[]);
    assert!(plan.status.success(), "plan: {}", text(&plan));
    assert!(
        text(&plan).contains(&format!(
            "promote read replica {replica} in us-west-2 (replicating arn:aws:rds:us-east-1:"
        )) && text(&plan).contains("this cannot be undone"),
        "plan: {}",
        text(&plan)
    );
    assert!(db(replica)["replica_of"].is_string(), "plan promoted it");
}
