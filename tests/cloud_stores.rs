//! The quickstart with its images and its journal on real object stores: moto (S3) and azurite (Azure Blob),
//! started on 127.0.0.1 by `tests/servers/start`, which `tests/run` calls before these ignored tests. The
//! servers' addresses and credentials come from the environment it writes (`target/servers/env`). One test,
//! of an unreachable endpoint, needs no server.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, listening, quickstart, region_dir, respawn, resume_takeover, text};

/// A store URL for `what` under a prefix unique to this test process, on S3 (moto) or Azure (azurite).
fn url(cloud: &str, test: &str, what: &str) -> String {
    let unique = format!("{test}-{}", std::process::id());
    match cloud {
        "s3" => {
            let bucket =
                std::env::var("RESPAWN_TEST_S3").expect("RESPAWN_TEST_S3: run tests/servers/start");
            let endpoint = std::env::var("RESPAWN_TEST_S3_ENDPOINT").unwrap();
            format!("{bucket}/{unique}/{what}?endpoint={endpoint}&allow_http=true")
        }
        _ => {
            let container = std::env::var("RESPAWN_TEST_AZURE")
                .expect("RESPAWN_TEST_AZURE: run tests/servers/start");
            format!("{container}/{unique}/{what}")
        }
    }
}

/// A quickstart copy whose backups are packed into the cloud store and whose workflow reads them there.
fn cloud_quickstart(cloud: &str, test: &str) -> std::path::PathBuf {
    let dir = quickstart(&format!("{cloud}-{test}"));
    let backups = url(cloud, test, "backups");
    let (base, query) = backups
        .split_once('?')
        .map_or((backups.as_str(), ""), |(b, q)| (b, q));
    for image in ["site", "catalog"] {
        let mut to = format!("{base}/images/{image}");
        if !query.is_empty() {
            to = format!("{to}?{query}");
        }
        let src = dir.join("src").join(image);
        let out = respawn(
            &dir,
            &[
                "image",
                "pack",
                src.to_str().unwrap(),
                "--to",
                &to,
                "--tag",
                "v1",
            ],
        );
        assert!(out.status.success(), "pack to {to}: {}", text(&out));
    }
    // The local copy of the backups is removed: the drill can only read the cloud ones.
    std::fs::remove_dir_all(dir.join("backups")).unwrap();
    let wf = std::fs::read_to_string(dir.join("recover.yaml")).unwrap();
    let edited = wf.replace(
        "backups: file://backups",
        &format!("backups: \"{backups}\""),
    );
    assert_ne!(wf, edited);
    std::fs::write(dir.join("recover.yaml"), edited).unwrap();
    dir
}

fn drill_args<'a>(state: &'a str, port: &'a str) -> Vec<&'a str> {
    vec![
        "drill",
        "recover.yaml",
        "--no-progress",
        "--state",
        state,
        "--param",
        port,
        "--report-dir",
        "report",
    ]
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap()).unwrap()
}

fn drill_passes_with_images_and_journal_in(cloud: &str) {
    let dir = cloud_quickstart(cloud, "drill");
    let state = url(cloud, "drill", "state");
    let port = free_port();
    let port_arg = format!("port={port}");
    let out = respawn(&dir, &drill_args(&state, &port_arg));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("outcome   Passed"), "{t}");
    let r = report(&dir);
    let run_id = r["run_id"].as_str().unwrap();
    assert!(
        r["rpo_seconds"].as_f64().is_some(),
        "RPO from the cloud images"
    );
    let runs = text(&respawn(&dir, &["runs", "--state", &state]));
    assert!(
        runs.lines()
            .any(|l| l.starts_with(run_id) && l.contains("passed")),
        "{runs}"
    );
    let audit = respawn(&dir, &["audit", "verify", run_id, "--state", &state]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(text(&audit).contains("head matches"), "{}", text(&audit));
    assert!(!region_dir(&dir).exists());
    assert!(!listening(port));
}

fn journal_survives_a_kill_and_resumes_in(cloud: &str) {
    let dir = cloud_quickstart(cloud, "kill");
    let state = url(cloud, "kill", "state");
    let port = free_port();
    let port_arg = format!("port={port}");
    let mut child = Command::new(bin())
        .args(drill_args(&state, &port_arg))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once apply is under way (the first volume is restored).
    let started = Instant::now();
    while !region_dir(&dir).join("shop/site/index.html").exists()
        && !region_dir(&dir).join("shop/catalog").exists()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "apply never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let runs = text(&respawn(&dir, &["runs", "--state", &state]));
    let line = runs.lines().nth(1).unwrap_or_else(|| panic!("{runs}"));
    assert!(
        line.contains("running"),
        "a killed runner's run shows as running until its lease ends: {runs}"
    );
    let run_id = line.split_whitespace().next().unwrap().to_string();
    let out = resume_takeover(&dir, &run_id, &state, &["--report-dir", "report"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&dir)["outcome"], "passed");
    assert!(!region_dir(&dir).exists());
    assert!(!listening(port));
    let audit = respawn(&dir, &["audit", "verify", &run_id, "--state", &state]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn s3_drill_with_images_and_journal_in_the_bucket() {
    drill_passes_with_images_and_journal_in("s3");
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn s3_journal_survives_a_runner_kill_and_resumes() {
    journal_survives_a_kill_and_resumes_in("s3");
}

#[test]
#[ignore = "needs azurite (tests/servers/start)"]
fn azure_drill_with_images_and_journal_in_the_container() {
    drill_passes_with_images_and_journal_in("az");
}

#[test]
#[ignore = "needs azurite (tests/servers/start)"]
fn azure_journal_survives_a_runner_kill_and_resumes() {
    journal_survives_a_kill_and_resumes_in("az");
}

/// Fencing needs the store's conditional create: the second writer of an event key must be refused.
fn second_create_of_an_event_is_refused_in(cloud: &str) {
    use respawn::data::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
    let store = respawn::data::open_store(&url(cloud, "fence", "raw"), Path::new(".")).unwrap();
    let key = respawn::data::object_store::path::Path::from("runs/x/events/000000000000");
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        store
            .put_opts(&key, PutPayload::from_static(b"a"), create())
            .await
            .unwrap();
        let again = store
            .put_opts(&key, PutPayload::from_static(b"b"), create())
            .await;
        assert!(
            matches!(
                again,
                Err(respawn::data::object_store::Error::AlreadyExists { .. })
            ),
            "{again:?}"
        );
        let kept = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&kept[..], b"a", "the first writer's event is kept");
    });
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn s3_refuses_a_second_create_of_an_event() {
    second_create_of_an_event_is_refused_in("s3");
}

#[test]
#[ignore = "needs azurite (tests/servers/start)"]
fn azure_refuses_a_second_create_of_an_event() {
    second_create_of_an_event_is_refused_in("az");
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_plugin_is_loaded_from_an_s3_url_and_pinned_by_digest() {
    use respawn::data::object_store::{ObjectStoreExt, PutPayload};
    let dir = std::env::temp_dir().join(format!("respawn-remote-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(
        Path::new(respawn::host::sources::TEST_PLUGINS_DIR).join("respawn_testing_echo.wasm"),
    )
    .unwrap();
    let plugins = url("s3", "remote-plugin", "plugins");
    let store = respawn::data::open_store(&plugins, Path::new(".")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.put(&"echo.wasm".into(), PutPayload::from(bytes.clone())))
        .unwrap();
    let (base, query) = plugins.split_once('?').unwrap();
    let source = format!("{base}/echo.wasm?{query}");
    std::fs::write(
        dir.join("remote.yaml"),
        format!(
            "respawn: 1\nname: remote\nversion: 1.0.0\nplugins:\n  echo: \"{source}\"\nsteps:\n  - id: say\n    uses: echo/echo\n"
        ),
    )
    .unwrap();
    let lock = respawn(&dir, &["lock", "remote.yaml"]);
    assert!(lock.status.success(), "{}", text(&lock));
    let plan = respawn(&dir, &["plan", "remote.yaml"]);
    assert!(plan.status.success(), "{}", text(&plan));
    // Replace the object with different bytes: the pinned digest refuses it.
    let mut changed = bytes;
    changed.extend_from_slice(b"\0");
    rt.block_on(store.put(&"echo.wasm".into(), PutPayload::from(changed)))
        .unwrap();
    let refused = respawn(&dir, &["plan", "remote.yaml"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("locked sha256:"),
        "{}",
        text(&refused)
    );
}

/// A store that cannot be reached is reported once and clearly, naming the request. Needs no server, so it is
/// not ignored.
#[test]
fn an_unreachable_endpoint_fails_with_one_clear_error() {
    // Nothing listens on the port once the probe listener is dropped.
    let port = free_port();
    let url = format!("s3://respawn-test/x?endpoint=http://127.0.0.1:{port}&allow_http=true");
    let out = Command::new(bin())
        .args(["image", "verify", &url])
        // Static credentials: without them the AWS client would ask an instance metadata service.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}/respawn-test/x/")),
        "{err}"
    );
    assert_eq!(err.matches("error sending request").count(), 1, "{err}");
}
