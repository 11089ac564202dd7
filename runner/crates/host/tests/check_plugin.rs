//! The builtin verifier `check@0.1` against real endpoints: a tiny HTTP server on 127.0.0.1, its listening port
//! for TCP probes, and a file:// store. Passing checks report what they measured; mismatches are
//! `verification-failed` naming expected and actual values; grants are enforced; typos in params are
//! `invalid-input`; plan and destroy touch nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use respawn_data::StoreSet;
use respawn_engine::{Mode, Phase, StepCall, StepError, StepExecutor};
use respawn_host::{Host, RunResources};
use respawn_workflow::{Grants, Limits};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BODY: &str = "respawn check fixture: service is healthy\n";

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A compile cache shared by the tests of this file (and kept between runs): the first test compiles `check`,
/// the others load it from the cache instead of compiling it again.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-plugin-cache")
}

static COMPILED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A host with `check` loaded from the embedded builtin, and `stores` opened relative to `dir`.
async fn host(dir: &Path, stores: &[(&str, &str)]) -> Host {
    let check = respawn_host::sources::builtin("check@0.1").expect("check is embedded");
    COMPILED
        .get_or_init(|| async {
            let warm =
                Host::with_cache_dir(RunResources::new(dir.to_path_buf()), Some(cache_dir()));
            warm.unwrap()
                .load("check", &check)
                .await
                .expect("check loads");
        })
        .await;
    let mut run = RunResources::new(dir.to_path_buf());
    let urls: BTreeMap<String, String> = stores
        .iter()
        .map(|(name, url)| (name.to_string(), url.to_string()))
        .collect();
    run.stores = StoreSet::open(&urls, dir).unwrap();
    let host = Host::with_cache_dir(run, Some(cache_dir())).unwrap();
    host.load("check", &check).await.expect("check loads");
    host
}

fn call(op: &str, params: Value, grants: Grants) -> StepCall {
    StepCall {
        run_id: "test-run".into(),
        step_id: format!("check-{op}"),
        plugin: "check".into(),
        operation: op.into(),
        phase: Phase::Verify,
        mode: Mode::Drill,
        attempt: 1,
        params,
        grants,
        limits: Limits::default(),
        timeout: Duration::from_secs(20),
        state: BTreeMap::new(),
    }
}

fn grants(yaml: &str) -> Grants {
    serde_yaml::from_str(yaml).unwrap()
}

async fn run(host: &Host, c: StepCall) -> Result<Value, StepError> {
    host.execute(c).await.outcome
}

/// The plugin's own failure: (kind, message, retryable).
fn plugin_failure(err: &StepError) -> (&str, &str, bool) {
    match err {
        StepError::Plugin {
            failure_kind,
            message,
            retryable,
            ..
        } => (failure_kind, message, *retryable),
        other => panic!(
            "expected a plugin failure, got {} error: {other}",
            other.kind()
        ),
    }
}

/// Serves at most `connections` connections on 127.0.0.1 (an ephemeral port), then exits; gives up after 30 s
/// so a failing test never leaves it running. `GET /` answers 200 with [`BODY`], anything else 404. A
/// connection that sends nothing (a TCP probe) counts too.
fn serve(connections: usize) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < connections && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    served += 1;
                    let _ = answer(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    });
    (port, handle)
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(()); // a probe: connected and closed
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/" {
        ("200 OK", BODY)
    } else {
        ("404 Not Found", "no such page\n")
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_passes_and_reports_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    let (port, server) = serve(4);
    let url = format!("http://127.0.0.1:{port}/");
    let allow = grants("http: ['http://127.0.0.1:*']");
    let digest = sha256_hex(BODY.as_bytes());

    let out = run(
        &host,
        call(
            "http",
            json!({
                "url": url,
                "status": 200,
                "body_sha256": format!("sha256:{digest}"),
                "body_contains": "healthy",
                "max_latency_ms": 10_000,
            }),
            allow.clone(),
        ),
    )
    .await
    .expect("the check passes");
    assert_eq!(out["status"], 200);
    assert_eq!(out["body_sha256"], digest.as_str());
    assert_eq!(out["bytes"], BODY.len());
    assert!(out["latency_ms"].as_u64().unwrap() < 10_000, "{out}");

    // The same digest without the prefix, in apply: apply runs the check too.
    let mut apply = call(
        "http",
        json!({"url": url, "body_sha256": digest}),
        allow.clone(),
    );
    apply.phase = Phase::Apply;
    run(&host, apply).await.expect("apply checks as well");

    let wrong = "0".repeat(64);
    let err = run(
        &host,
        call(
            "http",
            json!({"url": url, "body_sha256": wrong}),
            allow.clone(),
        ),
    )
    .await
    .expect_err("a wrong digest fails");
    let (kind, message, retryable) = plugin_failure(&err);
    assert_eq!(kind, "verification-failed", "{err}");
    assert!(!retryable);
    assert!(
        message.contains(&wrong),
        "names the expected digest: {message}"
    );
    assert!(
        message.contains(&digest),
        "names the actual digest: {message}"
    );

    let err = run(
        &host,
        call(
            "http",
            json!({"url": format!("http://127.0.0.1:{port}/missing"), "body_contains": "healthy"}),
            allow.clone(),
        ),
    )
    .await
    .expect_err("a 404 fails");
    let (kind, message, _) = plugin_failure(&err);
    assert_eq!(kind, "verification-failed", "{err}");
    assert!(message.contains("expected 200, got 404"), "{message}");
    assert!(message.contains("\"healthy\""), "{message}");

    server.join().unwrap();
}

#[tokio::test]
async fn http_check_outside_the_grant_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    // Nothing listens here on purpose: the request must be refused before any connection.
    let err = run(
        &host,
        call(
            "http",
            json!({"url": "http://127.0.0.1:9/health"}),
            grants("http: ['http://localhost:8080']"),
        ),
    )
    .await
    .expect_err("denied");
    assert_eq!(err.kind(), "denied", "{err}");
    let StepError::Denied {
        capability, asked, ..
    } = &err
    else {
        unreachable!()
    };
    assert_eq!(capability, "http");
    assert!(asked.contains("127.0.0.1:9"), "{asked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_connects_or_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    let allow = grants("http: ['tcp://127.0.0.1:*']");
    let (port, server) = serve(1);

    let out = run(
        &host,
        call(
            "tcp",
            json!({"host": "127.0.0.1", "port": port}),
            allow.clone(),
        ),
    )
    .await
    .expect("the listener accepts");
    assert!(out["connect_us"].is_u64(), "{out}");
    server.join().unwrap();

    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = run(
        &host,
        call(
            "tcp",
            json!({"host": "127.0.0.1", "port": closed, "timeout_ms": 500}),
            allow,
        ),
    )
    .await
    .expect_err("nothing listens on a closed port");
    let (kind, message, retryable) = plugin_failure(&err);
    assert_eq!(kind, "unavailable", "{err}");
    assert!(retryable, "a closed port may open: {err}");
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );

    let err = run(
        &host,
        call(
            "tcp",
            json!({"host": "127.0.0.1", "port": closed}),
            Grants::default(),
        ),
    )
    .await
    .expect_err("tcp needs a grant");
    assert_eq!(err.kind(), "denied", "{err}");
}

#[tokio::test]
async fn digest_check_against_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("backups");
    std::fs::create_dir_all(store_dir.join("db")).unwrap();
    let blob = b"pretend this is a database dump\n".repeat(1000);
    let digest = sha256_hex(&blob);
    std::fs::write(store_dir.join("db/dump.sql"), &blob).unwrap();
    std::fs::write(
        store_dir.join("db/dump.sql.sha256"),
        format!("{digest}  dump.sql\n"),
    )
    .unwrap();
    std::fs::write(store_dir.join("db/bad.sha256"), "not-a-digest\n").unwrap();
    let url = format!("file://{}", store_dir.display());
    let host = host(dir.path(), &[("backups", url.as_str())]).await;
    let read = grants("stores: {backups: read}");

    let out = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/dump.sql", "sha256": digest.to_uppercase()}),
            read.clone(),
        ),
    )
    .await
    .expect("expected digest matches");
    assert_eq!(out["sha256"], digest.as_str());
    assert_eq!(out["bytes"], blob.len());

    let out = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/dump.sql", "sidecar": "db/dump.sql.sha256"}),
            read.clone(),
        ),
    )
    .await
    .expect("sidecar digest matches");
    assert_eq!(out["sha256"], digest.as_str());

    let wrong = format!("sha256:{}", "ab".repeat(32));
    let err = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/dump.sql", "sha256": wrong}),
            read.clone(),
        ),
    )
    .await
    .expect_err("a wrong digest fails");
    let (kind, message, _) = plugin_failure(&err);
    assert_eq!(kind, "verification-failed", "{err}");
    assert!(message.contains(&"ab".repeat(32)), "{message}");
    assert!(message.contains(&digest), "{message}");
    assert!(message.contains("backups:db/dump.sql"), "{message}");

    let err = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/dump.sql", "sidecar": "db/bad.sha256"}),
            read.clone(),
        ),
    )
    .await
    .expect_err("a sidecar without a digest fails");
    assert_eq!(plugin_failure(&err).0, "verification-failed", "{err}");

    for params in [
        json!({"store": "backups", "key": "db/dump.sql"}),
        json!({"store": "backups", "key": "db/dump.sql", "sha256": digest, "sidecar": "db/dump.sql.sha256"}),
    ] {
        let err = run(&host, call("digest", params, read.clone()))
            .await
            .expect_err("exactly one of sha256 and sidecar");
        let (kind, message, _) = plugin_failure(&err);
        assert_eq!(kind, "invalid-input", "{err}");
        assert!(message.contains("exactly one"), "{message}");
    }

    let err = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/missing", "sha256": digest}),
            read.clone(),
        ),
    )
    .await
    .expect_err("a missing object fails");
    assert_eq!(plugin_failure(&err).0, "not-found", "{err}");

    let err = run(
        &host,
        call(
            "digest",
            json!({"store": "backups", "key": "db/dump.sql", "sha256": digest}),
            Grants::default(),
        ),
    )
    .await
    .expect_err("the store must be granted");
    assert_eq!(err.kind(), "denied", "{err}");
}

#[tokio::test]
async fn unknown_params_are_invalid_input_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    let cases = [
        (
            "http",
            json!({"url": "http://127.0.0.1:9/", "stauts": 200}),
            "stauts",
        ),
        (
            "tcp",
            json!({"host": "127.0.0.1", "port": 9, "timeout": 5}),
            "timeout",
        ),
        (
            "digest",
            json!({"store": "s", "key": "k", "sha265": "00"}),
            "sha265",
        ),
        ("http", json!({"status": 200}), "url"),
        (
            "http",
            json!({"url": "http://127.0.0.1:9/", "body_sha256": "xyz"}),
            "body_sha256",
        ),
    ];
    for (op, params, field) in cases {
        for phase in [Phase::Plan, Phase::Verify] {
            let mut c = call(op, params.clone(), grants("http: ['http://127.0.0.1:*']"));
            c.phase = phase;
            let err = run(&host, c).await.expect_err("bad params fail");
            let (kind, message, retryable) = plugin_failure(&err);
            assert_eq!(kind, "invalid-input", "{op} {params}: {err}");
            assert!(!retryable);
            assert!(message.contains(field), "{op}: `{message}` names `{field}`");
        }
    }
}

#[tokio::test]
async fn plan_and_destroy_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    // No grants at all: any network or store access would be denied.
    for (op, params) in [
        (
            "http",
            json!({"url": "http://127.0.0.1:9/health", "status": 204}),
        ),
        ("tcp", json!({"host": "127.0.0.1", "port": 9})),
        (
            "digest",
            json!({"store": "backups", "key": "k", "sidecar": "k.sha256"}),
        ),
    ] {
        let mut plan = call(op, params.clone(), Grants::default());
        plan.phase = Phase::Plan;
        let out = run(&host, plan).await.expect("plan does no I/O");
        let would = out["would"].as_str().unwrap_or_default();
        assert!(would.starts_with("check "), "{op}: {out}");

        let mut destroy = call(op, params, Grants::default());
        destroy.phase = Phase::Destroy;
        let out = run(&host, destroy).await.expect("destroy does nothing");
        assert_eq!(out, json!({}), "{op}");
    }
}

#[tokio::test]
async fn describe_lists_operations_with_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), &[]).await;
    let d = &host.plugin("check").unwrap().description;
    assert_eq!(d.name, "check");
    assert_eq!(d.version, "0.1.0");
    assert_eq!(d.capabilities, ["http", "stores"]);
    let ops: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(ops, ["http", "tcp", "digest"]);
    let required = |op: &str| -> Vec<String> {
        let schema = &d
            .operations
            .iter()
            .find(|o| o.name == op)
            .unwrap()
            .params_schema;
        assert_eq!(schema["type"], "object", "{op}");
        assert_eq!(schema["additionalProperties"], false, "{op}");
        serde_json::from_value(schema["required"].clone()).unwrap()
    };
    assert_eq!(required("http"), ["url"]);
    assert_eq!(required("tcp"), ["host", "port"]);
    assert_eq!(required("digest"), ["store", "key"]);
    let tcp = &d.operations[1].params_schema;
    assert_eq!(tcp["properties"]["port"]["type"], "integer");
    assert_eq!(tcp["properties"]["timeout_ms"]["default"], 2000);
}
