//! Evidence an auditor accepts, end to end through the binary on private copies of the quickstart (file://
//! stores): artifacts by digest, recovery objectives, signed reports, reports rendered from the state store
//! anywhere, and the history of drills.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, free_port, quickstart, respawn, run_id_of, text};
use serde_json::Value;

/// A drill of the quickstart copy in `dir`, its report in `dir/report`.
fn drill(dir: &Path, extra: &[&str]) -> Output {
    let port = format!("port={}", free_port());
    let mut args = vec![
        "drill",
        "recover.yaml",
        "--param",
        &port,
        "--report-dir",
        "report",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    Command::new(bin())
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap()).unwrap()
}

/// Puts `lines` into the quickstart's workflow right after its `description:` line.
fn declare(dir: &Path, lines: &str) {
    let path = dir.join("recover.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("\nparams:").expect("recover.yaml has params");
    std::fs::write(&path, format!("{}\n{lines}{}", &text[..at], &text[at..])).unwrap();
}

/// The tag -> manifest digest lines `respawn image verify` prints.
fn verified_digest(dir: &Path, image: &str) -> String {
    let url = format!(
        "file://{}",
        dir.join("backups/images").join(image).display()
    );
    let out = respawn(dir, &["image", "verify", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("image v1 "))
        .unwrap_or_else(|| panic!("no `image v1 DIGEST` line in: {stdout}"))
        .to_string()
}

#[test]
fn the_report_lists_both_images_by_the_digests_image_verify_prints() {
    let dir = quickstart("artifacts");
    let out = drill(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&dir);
    let artifacts = r["artifacts"].as_array().expect("an artifacts section");
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    let junit = std::fs::read_to_string(dir.join("report/junit.xml")).unwrap();
    let backups = format!("file://{}", dir.join("backups").display());
    for step in ["site", "catalog"] {
        let digest = verified_digest(&dir, step);
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        let image = artifacts
            .iter()
            .find(|a| a["step"] == step && a["kind"] == "image")
            .unwrap_or_else(|| panic!("no image artifact for {step}: {artifacts:?}"));
        assert_eq!(image["digest"], digest.as_str());
        assert_eq!(image["source"]["url"], backups.as_str());
        assert_eq!(image["source"]["prefix"], format!("images/{step}").as_str());
        assert_eq!(image["source"]["tag"], "v1");
        assert_eq!(image["recorded_by"], "host");
        assert!(image["created"].as_str().unwrap().ends_with('Z'), "{image}");
        assert!(
            md.contains(&format!(
                "| {step} | image | `{backups} images/{step}:v1` | `{digest}` |"
            )),
            "{md}"
        );
        assert!(junit.contains(&format!("value=\"{digest}\"")), "{junit}");
    }
    // The config step's plugin declares each template it rendered, by sha256.
    for entry in std::fs::read_dir(dir.join("config")).unwrap() {
        use sha2::Digest as _;
        let path = entry.unwrap().path();
        let digest = format!(
            "sha256:{:x}",
            sha2::Sha256::digest(std::fs::read(&path).unwrap())
        );
        let template = artifacts
            .iter()
            .find(|a| a["kind"] == "config-template" && a["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("no template {} by {digest}: {artifacts:?}", path.display()));
        assert_eq!(template["step"], "config");
        assert_eq!(template["recorded_by"], "plugin");
    }
    let plugins: Vec<&Value> = artifacts.iter().filter(|a| a["kind"] == "plugin").collect();
    assert_eq!(
        plugins.len(),
        2,
        "local and check, by sha256: {artifacts:?}"
    );
    assert_eq!(
        plugins[1]["digest"],
        format!(
            "sha256:{}",
            r["plugins"]["local"]["sha256"].as_str().unwrap()
        )
        .as_str()
    );
}

#[test]
fn an_objective_the_quickstart_cannot_meet_fails_the_run_and_says_by_how_much() {
    let dir = quickstart("objective-missed");
    declare(&dir, "objectives: { rto: 1ms, rpo: 30d }");
    let out = drill(&dir, &[]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missed RTO fails the run: {t}"
    );
    assert!(t.contains("outcome   Failed"), "{t}");
    assert!(t.contains("missed its objective of 1ms by "), "{t}");
    let r = report(&dir);
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["teardown"]["status"], "succeeded");
    let rto = &r["objectives"][0];
    assert_eq!(rto["objective"], "rto");
    assert_eq!(rto["status"], "missed");
    assert_eq!(rto["target_seconds"], 0.001);
    let by = rto["missed_by_seconds"].as_f64().unwrap();
    let measured = r["rto_seconds"].as_f64().unwrap();
    assert!(
        (by - (measured - 0.001)).abs() < 0.001,
        "{by} vs {measured}"
    );
    assert_eq!(
        r["objectives"][1]["status"], "met",
        "an RPO of 30 days is met"
    );
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(
        md.contains("| RTO | 0.001s |") && md.contains("**missed** by "),
        "{md}"
    );

    // Not enforced: the same miss is a warning and the run passes.
    let dir = quickstart("objective-warned");
    declare(&dir, "objectives: { rto: 1ms }\nobjectives_enforce: false");
    let out = drill(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&dir);
    assert_eq!(r["outcome"], "passed");
    assert_eq!(r["objectives"][0]["enforced"], false);
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(warning.contains("missed its objective of 1ms"), "{warning}");
}

/// Flips one byte of `path` (the first `from` to `to`), keeping everything else.
fn edit_one_byte(path: &Path, from: &str, to: &str) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    assert_eq!(from.len(), to.len());
    assert!(text.contains(from), "{} lacks {from}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    original
}

fn audit(dir: &Path, run: &str, key: &str) -> Output {
    respawn(
        dir,
        &[
            "audit",
            "verify",
            run,
            "--report-dir",
            "report",
            "--public-key",
            key,
        ],
    )
}

#[test]
fn a_signed_report_verifies_and_a_one_byte_edit_fails_naming_which() {
    let dir = quickstart("signed");
    let keys = respawn(&dir, &["audit", "keygen", "--out", "drill-key"]);
    assert!(keys.status.success(), "{}", text(&keys));
    // The key from an environment variable, as a CI secret would give it.
    let pem = std::fs::read_to_string(dir.join("drill-key.pem")).unwrap();
    let out = Command::new(bin())
        .args([
            "drill",
            "recover.yaml",
            "--report-dir",
            "report",
            "--no-progress",
        ])
        .args(["--param", &format!("port={}", free_port())])
        .args(["--sign-key", "env:RESPAWN_TEST_SIGN_KEY"])
        .env("RESPAWN_TEST_SIGN_KEY", &pem)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run_id_of(&out);
    assert!(dir.join("report/report.sig.json").exists());
    let sig = std::fs::read_to_string(dir.join("report/report.sig.json")).unwrap();
    assert!(
        !sig.contains(pem.lines().nth(1).unwrap()),
        "the private key is not in the signature"
    );

    let ok = audit(&dir, &run, "drill-key.pub.pem");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("signature valid"), "{}", text(&ok));

    // Another key does not verify it.
    let other = respawn(&dir, &["audit", "keygen", "--out", "other-key"]);
    assert!(other.status.success());
    let wrong = audit(&dir, &run, "other-key.pub.pem");
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("not valid for this public key"),
        "{}",
        text(&wrong)
    );

    // One byte of each report file, then of a journal event: each fails, naming what was edited.
    for (file, from, to) in [
        (
            "report.md",
            "| outcome | **Passed** |",
            "| outcome | **Passes** |",
        ),
        (
            "report.json",
            "\"outcome\": \"passed\"",
            "\"outcome\": \"passeD\"",
        ),
        ("junit.xml", "name=\"homepage\"", "name=\"homepagE\""),
    ] {
        let path = dir.join("report").join(file);
        let original = edit_one_byte(&path, from, to);
        let bad = audit(&dir, &run, "drill-key.pub.pem");
        assert_eq!(bad.status.code(), Some(1), "{file}: {}", text(&bad));
        assert!(
            text(&bad).contains("TAMPERED") && text(&bad).contains(file),
            "{file}: {}",
            text(&bad)
        );
        std::fs::write(&path, original).unwrap();
    }
    // Event 3 is in its own file, or on a line of the file of an earlier event it was stored with.
    let events = dir.join(format!(".respawn/state/runs/{run}/events"));
    let event = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("{\"seq\":3,")))
        .expect("event 3 is stored");
    edit_one_byte(&event, "{\"seq\":3,\"at\":\"2", "{\"seq\":3,\"at\":\"3");
    let bad = audit(&dir, &run, "drill-key.pub.pem");
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("TAMPERED") && text(&bad).contains("event 3"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_signature_is_found_in_the_state_store_from_another_directory() {
    let dir = quickstart("signed-elsewhere");
    assert!(
        respawn(&dir, &["audit", "keygen", "--out", "k"])
            .status
            .success()
    );
    let out = drill(&dir, &["--sign-key", "k.pem"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run_id_of(&out);
    let elsewhere = tempfile::tempdir().unwrap();
    let state = format!("file://{}", dir.join(".respawn/state").display());
    let key = dir.join("k.pub.pem");
    let ok = respawn(
        elsewhere.path(),
        &[
            "audit",
            "verify",
            &run,
            "--state",
            &state,
            "--report-dir",
            "no-report-here",
            "--public-key",
            key.to_str().unwrap(),
        ],
    );
    // An auditor without the report files: the stored signature is checked against the report the journal
    // gives.
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!("runs/{run}/signatures/")),
        "{}",
        text(&ok)
    );
}

/// Renders `run`'s report from the state store at `state` in `cwd`, in each format, and compares the bytes with
/// the files in `original`.
fn assert_rebuilt_equal(cwd: &Path, run: &str, state: &str, original: &Path) {
    for (format, file) in [
        ("json", "report.json"),
        ("md", "report.md"),
        ("junit", "junit.xml"),
    ] {
        let out = respawn(cwd, &["report", run, "--state", state, "--format", format]);
        assert!(out.status.success(), "{}", text(&out));
        let want = std::fs::read(original.join(file)).unwrap();
        assert!(
            out.stdout == want,
            "{file} rebuilt from the journal differs:\n{}\n---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want)
        );
    }
}

#[test]
fn a_report_rebuilt_from_the_state_store_in_another_directory_equals_the_original() {
    let dir = quickstart("rebuilt");
    declare(&dir, "objectives: { rto: 10m, rpo: 30d }");
    let out = drill(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run_id_of(&out);
    let elsewhere = tempfile::tempdir().unwrap();
    let state = format!("file://{}", dir.join(".respawn/state").display());
    assert_rebuilt_equal(elsewhere.path(), &run, &state, &dir.join("report"));
    let unfinished = respawn(
        elsewhere.path(),
        &["report", "no-such-run", "--state", &state],
    );
    assert_eq!(unfinished.status.code(), Some(2), "{}", text(&unfinished));
}

fn history(dir: &Path, args: &[&str]) -> Value {
    let out = respawn(dir, args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[test]
fn history_over_three_drills_is_right() {
    let dir = quickstart("history");
    let workflow = dir.join("recover.yaml");
    let plain = std::fs::read_to_string(&workflow).unwrap();
    assert_eq!(drill(&dir, &[]).status.code(), Some(0));
    declare(&dir, "objectives: { rto: 1ms }");
    assert_eq!(drill(&dir, &[]).status.code(), Some(1));
    std::fs::write(&workflow, plain.replace("version: 1.0.0", "version: 1.1.0")).unwrap();
    declare(&dir, "objectives: { rto: 10m, rpo: 30d }");
    assert_eq!(drill(&dir, &[]).status.code(), Some(0));
    let state = format!("file://{}", dir.join(".respawn/state").display());

    let from_runs = history(&dir, &["runs", "--workflow", "shop", "--json"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let from_report = history(
        elsewhere.path(),
        &[
            "report",
            "--history",
            "shop",
            "--state",
            &state,
            "--format",
            "json",
        ],
    );
    assert_eq!(from_runs, from_report);
    let runs = from_runs["runs"].as_array().unwrap();
    let column = |field: &str| runs.iter().map(|r| r[field].clone()).collect::<Vec<_>>();
    assert_eq!(column("version"), ["1.0.0", "1.0.0", "1.1.0"]);
    assert_eq!(column("outcome"), ["passed", "failed", "passed"]);
    assert_eq!(
        column("rto_objective"),
        [Value::Null, "missed".into(), "met".into()]
    );
    assert_eq!(
        column("rpo_objective"),
        [Value::Null, Value::Null, "met".into()]
    );
    assert!(
        runs.iter()
            .all(|r| r["rto_seconds"].as_f64().unwrap() > 0.0)
    );
    let started = column("started_at");
    assert!(
        started.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
        "oldest first: {started:?}"
    );
    let trend = &from_runs["trend"];
    assert_eq!(trend["runs"], 3);
    assert_eq!(trend["passed"], 2);
    assert_eq!(trend["objectives_met"], 1);
    assert_eq!(trend["objectives_declared"], 2);
    assert!(["improving", "steady", "worsening"].contains(&trend["rto"].as_str().unwrap()));

    let md = respawn(&dir, &["runs", "--workflow", "shop"]);
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.contains("| started | run | version | mode | outcome | RTO | RTO objective |"),
        "{md}"
    );
    assert_eq!(md.matches("| drill |").count(), 3, "{md}");
    assert!(md.contains("3 runs, 2 passed"), "{md}");
    let none = history(&dir, &["runs", "--workflow", "no-such-workflow", "--json"]);
    assert_eq!(none["runs"].as_array().unwrap().len(), 0);
}

/// The state store on S3 (moto): the report rendered from it in another directory is the original's bytes, and
/// the signature stored beside the journal verifies there without the report files.
#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn on_s3_a_report_and_its_signature_verify_from_the_state_store_alone() {
    let bucket =
        std::env::var("RESPAWN_TEST_S3").expect("RESPAWN_TEST_S3: run tests/servers/start");
    let endpoint = std::env::var("RESPAWN_TEST_S3_ENDPOINT").unwrap();
    let state = format!(
        "{bucket}/evidence-{}/state?endpoint={endpoint}&allow_http=true",
        std::process::id()
    );
    let dir = quickstart("s3-evidence");
    assert!(
        respawn(&dir, &["audit", "keygen", "--out", "k"])
            .status
            .success()
    );
    let out = drill(&dir, &["--state", &state, "--sign-key", "k.pem"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = run_id_of(&out);
    let elsewhere = tempfile::tempdir().unwrap();
    assert_rebuilt_equal(elsewhere.path(), &run, &state, &dir.join("report"));
    let key = dir.join("k.pub.pem");
    let ok = respawn(
        elsewhere.path(),
        &[
            "audit",
            "verify",
            &run,
            "--state",
            &state,
            "--report-dir",
            "none",
            "--public-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("signature valid"), "{}", text(&ok));
    let history = history(
        elsewhere.path(),
        &[
            "report",
            "--history",
            "shop",
            "--state",
            &state,
            "--format",
            "json",
        ],
    );
    assert_eq!(history["runs"][0]["run_id"], run.as_str());
}

/// A third-party plugin declares what it used through its `artifacts` output: the report lists it (its URL
/// without credentials), and a malformed declaration fails the step as a contract error naming the entry.
#[test]
fn a_plugin_declares_its_artifacts_through_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let echo =
        Path::new(respawn::host::sources::TEST_PLUGINS_DIR).join("respawn_testing_echo.wasm");
    let workflow = |artifacts: &str| {
        format!(
            r#"respawn: 1
name: declared
version: 1.0.0
plugins:
  echo: file://{}
steps:
  - id: backup
    uses: echo/outputs
    with:
      artifacts: {artifacts}
verify:
  - id: check-copy
    uses: echo/outputs
    with:
      artifacts: [{{ kind: checked-copy, digest: "sha256:00ff" }}]
"#,
            echo.display()
        )
    };
    let good = r#"[{ kind: database-backup, digest: "backup-label:0/3000028", created: "2026-05-01T11:00:00Z", source: { url: "s3://ak:sk@dr-backups/pg?endpoint=http://127.0.0.1:5055&secret_key=x", prefix: base/2026-05-01 } }]"#;
    std::fs::write(dir.path().join("w.yaml"), workflow(good)).unwrap();
    assert!(respawn(dir.path(), &["lock", "w.yaml"]).status.success());
    let out = respawn(dir.path(), &["drill", "w.yaml", "--report-dir", "report"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(dir.path());
    let declared = r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["recorded_by"] == "plugin")
        .unwrap_or_else(|| panic!("no declared artifact: {}", r["artifacts"]));
    assert_eq!(declared["step"], "backup");
    assert_eq!(declared["kind"], "database-backup");
    assert_eq!(declared["digest"], "backup-label:0/3000028");
    assert_eq!(
        declared["source"]["url"],
        "s3://dr-backups/pg?endpoint=http://127.0.0.1:5055"
    );
    assert_eq!(declared["created"], "2026-05-01T11:00:00Z");
    let checked = r["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["step"] == "check-copy")
        .unwrap_or_else(|| panic!("a verification declares artifacts too: {}", r["artifacts"]));
    assert_eq!(checked["kind"], "checked-copy");
    let all = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(
        !all.contains("ak:sk") && !all.contains("secret_key"),
        "{all}"
    );

    let bad = r#"[{ kind: Database Backup, digest: x }]"#;
    std::fs::write(dir.path().join("w.yaml"), workflow(bad)).unwrap();
    let out = respawn(dir.path(), &["drill", "w.yaml", "--report-dir", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bad/report.json")).unwrap())
            .unwrap();
    let error = &r["steps"][0]["error"];
    assert_eq!(error["kind"], "contract", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("artifacts[0].kind"),
        "{error}"
    );
}
