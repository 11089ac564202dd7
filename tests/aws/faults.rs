//! Faults: a runner killed right after a create call (CopyImage, RunInstances), refused credentials, an unknown
//! AMI, throttling.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::common::{free_port, listening};
use super::*;

/// A workflow of one copy-image step (id `image`) from us-east-1 to us-west-2 through `endpoint` (any loopback
/// port: moto, the fault proxy, a moto of the test's own).
fn copy_workflow(test: &str) -> PathBuf {
    one_step_workflow(
        test,
        "image",
        "uses: aws/copy-image\n    with: { endpoint: \"${{ params.endpoint }}\", region: us-west-2, \
         source_region: us-east-1, image: \"${{ params.image }}\" }\n",
    )
}

/// A workflow with params `endpoint` and `image` and the one step `id`: `step` is its `uses` and `with` lines.
fn one_step_workflow(test: &str, id: &str, step: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-aws-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "respawn: 1\nname: aws-{test}\nversion: 1.0.0\n\
         params:\n  endpoint: {{ type: string, required: true }}\n  image: {{ type: string, required: true }}\n\
         secrets:\n  AWS_ACCESS_KEY_ID: {{ env: AWS_ACCESS_KEY_ID }}\n  AWS_SECRET_ACCESS_KEY: {{ env: AWS_SECRET_ACCESS_KEY }}\n\
         plugins:\n  aws: builtin:aws@0.1\n\
         steps:\n  - id: {id}\n    {step}\
         \x20   grants: {{ http: [\"http://127.0.0.1:*\"], secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY] }}\n"
    );
    std::fs::write(dir.join("wf.yaml"), yaml).unwrap();
    let out = respawn(&dir, &["lock", "wf.yaml"], &[]);
    assert!(out.status.success(), "lock: {}", text(&out));
    dir
}

/// The failed step's error as the report gives it: its kind (`denied`, or `plugin` for a failure the plugin
/// returned) and the message, which names the plugin's failure kind (`…failed: not-found: …`).
fn step_error(dir: &Path, out: &Output) -> (String, String) {
    let error = &report(dir, &run_id_of(out))["steps"][0]["error"];
    let field = |k: &str| error[k].as_str().unwrap_or_default().to_string();
    (field("kind"), field("message"))
}

/// Images named after `prefix` in us-west-2.
fn copies(s: &Seed) -> usize {
    s.state()["images"].as_array().unwrap().len()
}

/// Starts `drill --keep` of `dir`'s wf.yaml through a proxy that holds the answer to `action`, and SIGKILLs the
/// runner once moto has carried the action out (the runner has not heard back). Returns the run id and the state
/// store's URL.
fn kill_after(action: &str, dir: &Path, image: &str) -> (String, String) {
    let proxy = proxy::Proxy::start(moto_port());
    *proxy.faults.hold_answer_of.lock().unwrap() = Some(action.into());
    let state_url = format!("file://{}", dir.join("state").display());
    let mut child = Command::new(bin())
        .args([
            "drill",
            "wf.yaml",
            "--keep",
            "--no-progress",
            "--state",
            &state_url,
        ])
        .args(["--param", &format!("endpoint={}", proxy.endpoint())])
        .args(["--param", &format!("image={image}")])
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !proxy.faults.holding.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none(),
            "the run never reached {action}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    proxy.faults.released.store(true, Ordering::SeqCst);
    (run_id_of(&out), state_url)
}

/// `resume --takeover -v`, `check` of what it said, then `destroy --yes`; both must succeed.
fn resume_then_destroy(dir: &Path, run_id: &str, state_url: &str, check: impl FnOnce(&str)) {
    let resumed = respawn(
        dir,
        &[
            "resume",
            run_id,
            "--takeover",
            "--no-progress",
            "-v",
            "--state",
            state_url,
        ],
        &[],
    );
    let said = text(&resumed);
    assert!(resumed.status.success(), "resume: {said}");
    check(&said);
    let destroyed = respawn(
        dir,
        &[
            "destroy",
            run_id,
            "--yes",
            "--no-progress",
            "--state",
            state_url,
        ],
        &[],
    );
    assert!(destroyed.status.success(), "destroy: {}", text(&destroyed));
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_runner_killed_right_after_copy_image_resumes_to_exactly_one_copy() {
    let s = seed("kill");
    let dir = copy_workflow("kill");
    let (run_id, state_url) = kill_after("CopyImage", &dir, &s.image);
    assert_eq!(
        copies(&s),
        1,
        "CopyImage did not reach moto before the kill"
    );
    resume_then_destroy(&dir, &run_id, &state_url, |said| {
        assert_eq!(copies(&s), 1, "resume made a second copy: {}", s.state());
        assert!(
            said.contains("was copied by an earlier attempt"),
            "the resumed step did not find the copy by its name: {said}"
        );
    });
    assert_eq!(copies(&s), 0, "{}", s.state());
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn a_runner_killed_right_after_run_instances_resumes_to_exactly_one_set() {
    let s = seed("kill-launch");
    // In the source region, from the seeded image itself: moto.py's `state` counts instances of PREFIX* images.
    let dir = one_step_workflow(
        "kill-launch",
        "web",
        "uses: aws/launch\n    with: { endpoint: \"${{ params.endpoint }}\", region: us-east-1, \
         image: \"${{ params.image }}\", instance_type: t3.micro, count: 2 }\n",
    );
    let running = || {
        moto_py(
            &moto(),
            &["state", &s.prefix, "us-east-1", &s.zone_id],
            None,
        )["instances"]
            .as_array()
            .unwrap()
            .len()
    };
    let (run_id, state_url) = kill_after("RunInstances", &dir, &s.image);
    assert_eq!(
        running(),
        2,
        "RunInstances did not reach moto before the kill"
    );
    resume_then_destroy(&dir, &run_id, &state_url, |said| {
        assert_eq!(running(), 2, "resume launched a second set");
        assert!(said.contains("launched by an earlier attempt"), "{said}");
    });
    assert_eq!(running(), 0, "destroy left instances running");
}

/// A moto of this test's own that checks signatures and IAM (INITIAL_NO_AUTH_ACTION_COUNT), stopped on drop.
struct AuthMoto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for AuthMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth_moto() -> AuthMoto {
    let port = free_port();
    let child = Command::new(venv().join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // The four actions of `moto.py iam-user` are the only ones it lets through unsigned.
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server: is moto's venv installed?");
    let started = Instant::now();
    while !listening(port) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    AuthMoto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

#[test]
#[ignore = "needs moto's venv (tests/servers/install)"]
fn signatures_are_accepted_by_a_checking_moto_and_bad_credentials_are_denied_unechoed() {
    let moto = auth_moto();
    let user = moto_py(&moto.endpoint, &["iam-user"], None);
    let (key, secret) = (
        user["access_key"].as_str().unwrap(),
        user["secret_key"].as_str().unwrap(),
    );
    let prefix = prefix("auth");
    let seeded = moto_py(
        &moto.endpoint,
        &["seed", &prefix, "us-east-1", "us-west-2"],
        Some((key, secret)),
    );
    let image = seeded["image"].as_str().unwrap();
    let dir = copy_workflow("auth");
    let params = [
        "--param".to_string(),
        format!("endpoint={}", moto.endpoint),
        "--param".into(),
        format!("image={image}"),
    ];

    // moto recomputes each signature with the user's secret: a drill that gets through was signed right, every
    // call of it (DescribeImages in two regions, CopyImage, CreateTags, DeregisterImage, DeleteSnapshot).
    let good = respawn(
        &dir,
        &with_params(&["drill", "wf.yaml", "--no-progress"], &params),
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    assert!(
        good.status.success(),
        "drill with good credentials: {}",
        text(&good)
    );

    let wrong_secret = "Wr0ngSecretKeyThatMustNotBeEchoed000000";
    let bad = respawn(
        &dir,
        &with_params(&["drill", "wf.yaml", "--no-progress"], &params),
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", wrong_secret),
        ],
    );
    let said = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{said}");
    let (kind, error) = step_error(&dir, &bad);
    assert_eq!(kind, "denied", "{error}");
    assert!(error.contains("AuthFailure"), "{error}");
    assert!(!said.contains(wrong_secret), "the secret is in the output");
    // Reports (json, md, junit) and the journal: everything the run wrote.
    let mut files = vec![dir.join(".respawn")];
    let mut journal_events = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            journal_events += usize::from(path.to_string_lossy().contains("/events/"));
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(wrong_secret),
                "the secret is in {}",
                path.display()
            );
        }
    }
    assert!(journal_events > 0, "no journal under {}", dir.display());
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn an_unknown_ami_is_not_found() {
    let dir = copy_workflow("unknown");
    let params = [
        "--param".to_string(),
        format!("endpoint={}", moto()),
        "--param".into(),
        "image=ami-0123456789abcdef0".into(),
    ];
    let out = respawn(
        &dir,
        &with_params(&["drill", "wf.yaml", "--no-progress"], &params),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (kind, error) = step_error(&dir, &out);
    assert_eq!(kind, "plugin", "{error}");
    assert!(
        error.contains("failed: not-found: image ami-0123456789abcdef0 not found in us-east-1"),
        "{error}"
    );
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn throttling_is_retried_with_backoff() {
    let s = seed("throttled");
    let proxy = proxy::Proxy::start(moto_port());
    proxy.faults.throttle.store(3, Ordering::SeqCst);
    let dir = copy_workflow("throttled");
    let params = [
        "--param".to_string(),
        format!("endpoint={}", proxy.endpoint()),
        "--param".into(),
        format!("image={}", s.image),
    ];
    let out = respawn(
        &dir,
        &with_params(&["drill", "wf.yaml", "--no-progress", "-v"], &params),
        &[],
    );
    let said = text(&out);
    assert!(out.status.success(), "drill: {said}");
    assert_eq!(proxy.faults.throttled.load(Ordering::SeqCst), 3);
    assert!(
        said.contains("ThrottlingException") && said.contains("HTTP 503"),
        "no retry was logged: {said}"
    );
    assert_eq!(copies(&s), 0, "teardown left the copy: {}", s.state());
}

#[test]
#[ignore = "needs moto (tests/servers/start)"]
fn throttling_that_does_not_end_is_unavailable() {
    let proxy = proxy::Proxy::start(moto_port());
    proxy.faults.throttle.store(u32::MAX, Ordering::SeqCst);
    let dir = copy_workflow("throttled-always");
    let params = [
        "--param".to_string(),
        format!("endpoint={}", proxy.endpoint()),
        "--param".into(),
        "image=ami-0123456789abcdef0".into(),
    ];
    let started = Instant::now();
    let out = respawn(
        &dir,
        &with_params(&["drill", "wf.yaml", "--keep", "--no-progress"], &params),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (kind, error) = step_error(&dir, &out);
    assert_eq!(kind, "plugin", "{error}");
    assert!(error.contains("failed: unavailable: "), "{error}");
    // Six tries with backoff (0.2 s doubling), then given up: bounded, not forever. (--keep: no teardown, whose
    // own six tries would count too.)
    assert_eq!(proxy.faults.throttled.load(Ordering::SeqCst), 6);
    assert!(started.elapsed() < Duration::from_secs(30));
}
