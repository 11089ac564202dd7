//! The plugin host against real components: hostile plugins fail only their own step, with the right kind and
//! the capability named; a well-behaved sibling in the same host succeeds; state, secrets and the compile cache
//! behave as plugins and operators rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use respawn_engine::{Mode, Phase, StepCall, StepError, StepExecutor};
use respawn_host::sources::{PluginBytes, TEST_PLUGINS_DIR};
use respawn_host::{Host, HostError, RunResources};
use respawn_workflow::{Grants, Limits};
use serde_json::json;

fn plugin(file: &str) -> PluginBytes {
    let path = Path::new(TEST_PLUGINS_DIR).join(file);
    PluginBytes::new(
        &format!("file://{}", path.display()),
        std::fs::read(&path).expect("test plugin built"),
    )
    .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn host(name: &str) -> Host {
    let dir = scratch(name);
    let mut run = RunResources::new(dir.clone());
    let mut secrets = BTreeMap::new();
    secrets.insert("db_password".to_string(), "hunter22".to_string());
    run.secrets = Arc::new(secrets);
    Host::with_cache_dir(run, Some(dir.join("cache"))).unwrap()
}

fn call(plugin: &str, op: &str, params: serde_json::Value, grants: Grants) -> StepCall {
    StepCall {
        run_id: "test-run".into(),
        step_id: format!("{plugin}-{op}"),
        plugin: plugin.into(),
        operation: op.into(),
        phase: Phase::Apply,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_own_step() {
    let host = host("hostile");
    host.load("hostile", &plugin("respawn_testing_hostile.wasm"))
        .await
        .unwrap();
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let outside = std::env::temp_dir().join(format!("respawn-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&outside);

    // (operation, params, grants, expected kind, text the error must contain)
    let cases: Vec<(&str, serde_json::Value, Grants, &str, &str)> = vec![
        (
            "read-host-file",
            json!({"path": "/etc/passwd"}),
            Grants::default(),
            "denied",
            "files",
        ),
        (
            "write-outside",
            json!({"path": outside.display().to_string()}),
            Grants::default(),
            "denied",
            "files",
        ),
        (
            "http-not-allowed",
            json!({"url": "http://127.0.0.1:9/steal"}),
            grants("http: ['http://localhost:8080']"),
            "denied",
            "http",
        ),
        (
            "exec-not-granted",
            json!({"program": "sh"}),
            grants("exec: [python3]"),
            "denied",
            "exec",
        ),
        (
            "exec-inject-loader",
            json!({"program": "sh"}),
            grants("exec: [sh]"),
            "denied",
            "exec",
        ),
        (
            "exec-args-outside-grant",
            json!({"program": "sh"}),
            grants(r#"exec: [{ program: sh, args: ["-c", "echo *"] }]"#),
            "denied",
            "exec",
        ),
        (
            "exec-env-outside-grant",
            json!({"program": "sh"}),
            grants("exec: [{ program: sh, env: [PGPASSWORD] }]"),
            "denied",
            "exec",
        ),
        (
            "store-outside-prefix",
            json!({"store": "backups", "key": "site-prod/secrets.tar"}),
            grants("stores: { backups: { access: read, prefix: site } }"),
            "denied",
            "stores",
        ),
        (
            "secret-not-granted",
            json!({"name": "db_password"}),
            Grants::default(),
            "denied",
            "secrets",
        ),
        (
            "store-not-granted",
            json!({"store": "backups"}),
            Grants::default(),
            "denied",
            "stores",
        ),
        (
            "infinite-loop",
            json!({}),
            Grants::default(),
            "timeout",
            "timed out",
        ),
        (
            "memory-bomb",
            json!({}),
            Grants::default(),
            "out-of-memory",
            "limit",
        ),
        ("deep-recursion", json!({}), Grants::default(), "trap", ""),
        (
            "huge-output",
            json!({}),
            Grants::default(),
            "contract",
            "outputs are",
        ),
        ("trap", json!({}), Grants::default(), "trap", "unreachable"),
        (
            "panic",
            json!({}),
            Grants::default(),
            "trap",
            "panics on purpose",
        ),
    ];
    let mut calls = Vec::new();
    for (op, params, g, _, _) in &cases {
        let mut c = call("hostile", op, params.clone(), g.clone());
        if *op == "infinite-loop" {
            c.timeout = Duration::from_secs(1);
        }
        calls.push(host.execute(c));
    }
    let sibling = host.execute(call(
        "echo",
        "echo",
        json!({"hello": "world"}),
        Grants::default(),
    ));
    let (results, sibling) = tokio::join!(futures::future::join_all(calls), sibling);

    let out = sibling
        .outcome
        .expect("the well-behaved sibling step succeeds");
    assert_eq!(out["params"]["hello"], "world");
    for ((op, _, _, kind, text), result) in cases.iter().zip(results) {
        let err = result
            .outcome
            .expect_err(&format!("hostile `{op}` must fail"));
        assert_eq!(err.kind(), *kind, "`{op}`: {err}");
        assert!(
            err.to_string().contains(text),
            "`{op}`: `{err}` should mention `{text}`"
        );
        if *kind == "denied" {
            let StepError::Denied { capability, .. } = &err else {
                unreachable!()
            };
            assert_eq!(capability, text, "`{op}` names the capability");
            assert_eq!(
                err.to_string().matches(&format!("{text}: ")).count(),
                1,
                "`{op}` names the capability once: {err}"
            );
        }
    }
    assert!(
        !outside.exists(),
        "write-outside must not have written {}",
        outside.display()
    );
}

#[tokio::test]
async fn a_plugin_whose_describe_lies_is_refused_at_load() {
    let host = host("liar");
    let err = host
        .load("liar", &plugin("respawn_testing_liar.wasm"))
        .await
        .err()
        .expect("refused");
    let HostError::BadDescribe { problems, .. } = &err else {
        panic!("{err}")
    };
    let text = problems.join("\n");
    assert!(
        text.contains("operation `volume` is listed twice"),
        "{text}"
    );
    assert!(text.contains("not a JSON Schema"), "{text}");
    assert!(text.contains("not semver"), "{text}");
}

#[tokio::test]
async fn state_survives_attempts_and_plan_writes_nothing() {
    let host = host("state");
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let first = host
        .execute(call("echo", "state", json!({}), Grants::default()))
        .await;
    assert_eq!(first.outcome.unwrap()["count"], 1);
    assert_eq!(first.state.get("count").map(String::as_str), Some("1"));

    let mut again = call("echo", "state", json!({}), Grants::default());
    again.attempt = 2;
    again.state = first.state.clone();
    let second = host.execute(again).await;
    assert_eq!(second.outcome.unwrap()["count"], 2);

    let mut plan = call("echo", "state", json!({}), Grants::default());
    plan.phase = Phase::Plan;
    plan.state = second.state.clone();
    let planned = host.execute(plan).await;
    assert_eq!(planned.outcome.unwrap()["count"], 3, "plan sees the state");
    assert_eq!(
        planned.state.get("count").map(String::as_str),
        Some("2"),
        "plan wrote nothing"
    );
}

#[tokio::test]
async fn granted_secret_reaches_the_plugin_only() {
    let host = host("secret");
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let ok = host
        .execute(call(
            "echo",
            "secret",
            json!({"name": "db_password"}),
            grants("secrets: [db_password]"),
        ))
        .await;
    assert_eq!(ok.outcome.unwrap()["length"], 8);
    let denied = host
        .execute(call(
            "echo",
            "secret",
            json!({"name": "db_password"}),
            Grants::default(),
        ))
        .await;
    let err = denied.outcome.unwrap_err();
    assert_eq!(err.kind(), "denied");
    assert!(
        !err.to_string().contains("hunter22"),
        "the value never appears in errors"
    );
}

#[tokio::test]
async fn plugin_failures_keep_their_kind_and_retryability() {
    let host = host("fail");
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let params = json!({"kind": "unavailable", "message": "registry down", "retryable": true});
    let err = host
        .execute(call("echo", "fail", params, Grants::default()))
        .await
        .outcome
        .unwrap_err();
    assert_eq!(err.kind(), "plugin");
    assert!(err.retryable());
    assert!(
        err.to_string().contains("unavailable: registry down"),
        "{err}"
    );
    let unknown = host
        .execute(call("echo", "nope", json!({}), Grants::default()))
        .await
        .outcome
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no operation `nope`"),
        "{unknown}"
    );
}

#[tokio::test]
async fn compile_cache_hits_and_survives_corruption() {
    use respawn_host::cache::CacheOutcome;
    let dir = scratch("cache");
    let cache_dir = dir.join("cache");
    let new_host =
        || Host::with_cache_dir(RunResources::new(dir.clone()), Some(cache_dir.clone())).unwrap();
    let echo = plugin("respawn_testing_echo.wasm");

    let first = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(first.compile, CacheOutcome::Compiled);
    let second = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(second.compile, CacheOutcome::Hit);

    // Corrupt every entry: truncate one byte and flip another.
    for entry in std::fs::read_dir(cache_dir.join("components")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let host = new_host();
    let third = host.load("echo", &echo).await.unwrap();
    assert_eq!(
        third.compile,
        CacheOutcome::Compiled,
        "a corrupt entry is recompiled, never trusted"
    );
    let out = host
        .execute(call("echo", "echo", json!({"x": 1}), Grants::default()))
        .await;
    assert_eq!(out.outcome.unwrap()["params"]["x"], 1);

    std::fs::remove_dir_all(&cache_dir).unwrap();
    let fourth = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(
        fourth.compile,
        CacheOutcome::Compiled,
        "a deleted cache is rebuilt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_responses_are_capped() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // One bounded connection: 70 MiB, more than the default response cap (`limits.http_response`, 64 MiB).
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = [0u8; 4096];
        let _ = conn.read(&mut request);
        let size: usize = 70 << 20;
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
        );
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..70 {
            if conn.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let host = host("http-cap");
    host.load("hostile", &plugin("respawn_testing_hostile.wasm"))
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/big");
    let c = call(
        "hostile",
        "http-not-allowed",
        json!({"url": url}),
        grants("http: ['http://127.0.0.1:*']"),
    );
    let err = host
        .execute(c)
        .await
        .outcome
        .expect_err("a 70 MiB response must not reach the plugin whole");
    assert_eq!(err.kind(), "plugin", "{err}");
    // The host cuts the body off at the cap; the guest sees its read fail.
    assert!(
        err.to_string().contains("reading http://127.0.0.1"),
        "{err}"
    );
    server.join().unwrap();
}

/// Serves `sizes.len()` connections in order, the n-th answering with a body of `sizes[n]` bytes.
fn serve_bodies(sizes: Vec<usize>) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for size in sizes {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
            );
            let _ = conn.write_all(&vec![b'x'; size]);
        }
    });
    (port, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_response_cap_is_the_steps_limit() {
    let limit: u64 = 1 << 20;
    let (port, server) = serve_bodies(vec![limit as usize, limit as usize + 1]);
    let host = host("http-limit");
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let fetch = || {
        let mut c = call(
            "echo",
            "fetch",
            json!({"url": format!("http://127.0.0.1:{port}/blob")}),
            grants("http: ['http://127.0.0.1:*']"),
        );
        c.limits = Limits {
            http_response: Some(limit),
            ..Limits::default()
        };
        c
    };
    let whole = host
        .execute(fetch())
        .await
        .outcome
        .expect("a body of exactly limits.http_response arrives whole");
    assert_eq!(whole["len"], limit);
    let err = host
        .execute(fetch())
        .await
        .outcome
        .expect_err("one byte over limits.http_response is cut off");
    assert_eq!(err.kind(), "plugin", "{err}");
    // The guest's read fails with HttpResponseBodySize, which the SDK reports as `unavailable` (naming the limit
    // once it decodes the error code, as a stream error reading the URL before).
    let text = err.to_string();
    assert!(text.contains("unavailable: "), "{err}");
    assert!(
        text.contains("limits.http_response") || text.contains("reading http://127.0.0.1"),
        "{err}"
    );
    server.join().unwrap();
}

#[tokio::test]
async fn stores_get_range_reads_chunks_under_the_get_grant() {
    let dir = scratch("get-range");
    let store_dir = dir.join("backups");
    std::fs::create_dir_all(store_dir.join("blobs")).unwrap();
    std::fs::write(store_dir.join("blobs/layer"), b"0123456789").unwrap();
    let mut run = RunResources::new(dir.clone());
    let urls = BTreeMap::from([(
        "backups".to_string(),
        format!("file://{}", store_dir.display()),
    )]);
    run.stores = respawn_data::StoreSet::open(&urls, &dir).unwrap();
    let host = Host::with_cache_dir(run, Some(dir.join("cache"))).unwrap();
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let read = grants("stores: { backups: { access: read, prefix: blobs/ } }");
    let range = |key: &str, offset: u64, length: u64, g: &Grants| {
        let params = json!({"store": "backups", "key": key, "offset": offset, "length": length});
        host.execute(call("echo", "get-range", params, g.clone()))
    };

    // (offset, length, what comes back)
    for (offset, length, want) in [
        (0, 4, "0123"),
        (3, 4, "3456"),
        (8, 4, "89"),
        (10, 4, ""),
        (1 << 40, 4, ""),
        (2, 0, ""),
    ] {
        let out = range("blobs/layer", offset, length, &read)
            .await
            .outcome
            .unwrap_or_else(|e| panic!("get-range({offset}, {length}): {e}"));
        assert_eq!(out["data"], want, "get-range({offset}, {length})");
    }

    let missing = range("blobs/nope", 0, 4, &read).await.outcome.unwrap_err();
    assert!(
        missing.to_string().contains("not-found: "),
        "a missing object is not-found: {missing}"
    );

    let long = range("blobs/layer", 0, (16 << 20) + 1, &read)
        .await
        .outcome
        .unwrap_err();
    assert_eq!(long.kind(), "plugin", "{long}");
    assert!(
        long.to_string().contains("invalid-input: ")
            && long.to_string().contains("at most 16777216 bytes (16 MiB)"),
        "asking more than the cap names it: {long}"
    );

    for (key, g) in [
        ("blobs/layer", Grants::default()),
        ("other/layer", read.clone()),
    ] {
        let err = range(key, 0, 4, &g).await.outcome.unwrap_err();
        assert_eq!(err.kind(), "denied", "{key}: {err}");
        let StepError::Denied { capability, .. } = &err else {
            unreachable!()
        };
        assert_eq!(capability, "stores");
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A program runs as the user its grant entry names, and what `unpack-as` restores belongs to that user; a user
/// no grant entry names is denied.
#[tokio::test]
async fn programs_and_restored_files_belong_to_the_user_the_grant_names() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = scratch("run-as");
    let source = dir.join("src");
    std::fs::create_dir_all(source.join("base")).unwrap();
    std::fs::write(source.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(source.join("base/1"), "rows").unwrap();
    let store_dir = dir.join("backups");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store =
        respawn_data::object_store::local::LocalFileSystem::new_with_prefix(&store_dir).unwrap();
    respawn_data::oci::pack::pack(&store, "db", &source, "v1", Default::default())
        .await
        .unwrap();

    let mut run = RunResources::new(dir.clone());
    let urls = BTreeMap::from([(
        "backups".to_string(),
        format!("file://{}", store_dir.display()),
    )]);
    run.stores = respawn_data::StoreSet::open(&urls, &dir).unwrap();
    let host = Host::with_cache_dir(run, Some(dir.join("cache"))).unwrap();
    host.load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let as_nobody = grants(
        "{ exec: [{ program: id, user: nobody }], stores: { backups: read }, files: { out: rw } }",
    );
    let id = host
        .execute(call(
            "echo",
            "run",
            json!({"program": "id", "args": ["-u"]}),
            as_nobody.clone(),
        ))
        .await
        .outcome;
    if !running_as_root() {
        let err = id.unwrap_err();
        assert!(
            err.to_string()
                .contains("only root can run a program as another user"),
            "{err}"
        );
        return;
    }
    assert_eq!(id.unwrap()["stdout"], "65534\n");
    let as_runner = grants("exec: [id]");
    let id = host
        .execute(call(
            "echo",
            "run",
            json!({"program": "id", "args": ["-u"]}),
            as_runner,
        ))
        .await
        .outcome
        .unwrap();
    assert_eq!(id["stdout"], "0\n");

    std::fs::create_dir_all(dir.join("out")).unwrap();
    let unpack = |user: &str| {
        let params = json!({"store": "backups", "prefix": "db", "tag": "v1", "dir": "out/data", "user": user});
        host.execute(call("echo", "unpack-as", params, as_nobody.clone()))
    };
    unpack("nobody").await.outcome.unwrap();
    let data = dir.join("out/data");
    for path in [
        data.clone(),
        data.join("PG_VERSION"),
        data.join("base"),
        data.join("base/1"),
    ] {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), 65534, "{}", path.display());
    }
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let err = unpack("root").await.outcome.unwrap_err();
    assert!(
        err.to_string().contains("exec") && err.to_string().contains("user `root`"),
        "{err}"
    );
}

/// The fencing token a plugin sees is the run's lease epoch as this runner holds it (0 without a journal, as in
/// `respawn plan`), so a provider can hand it to systems that refuse writes from a runner that lost the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_the_runs_lease_epoch_as_their_fencing_token() {
    let no_journal = host("fencing-none");
    no_journal
        .load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let out = no_journal
        .execute(call("echo", "echo", json!({}), Grants::default()))
        .await
        .outcome
        .unwrap();
    assert_eq!(out["fencing_token"], 0);

    let dir = scratch("fencing-third");
    let store: Arc<dyn respawn_data::object_store::ObjectStore> =
        Arc::new(respawn_data::object_store::memory::InMemory::new());
    let journal = respawn_journal::Journal::open(store, "test-run", Default::default(), 0, None)
        .with_epoch(3);
    let mut run = RunResources::new(dir.clone());
    run.journal = Some(Arc::new(journal));
    let third = Host::with_cache_dir(run, Some(dir.join("cache"))).unwrap();
    third
        .load("echo", &plugin("respawn_testing_echo.wasm"))
        .await
        .unwrap();
    let out = third
        .execute(call("echo", "echo", json!({}), Grants::default()))
        .await
        .outcome
        .unwrap();
    assert_eq!(out["fencing_token"], 3, "{out}");
}
