//! `testing::MockHost` against a plugin that makes every kind of host call: grants are enforced like the
//! runner's, plan is read-only, and what the plugin did can be inspected afterwards.

use respawn_plugin_sdk::testing::{Access, Level, MockHost, output};
use respawn_plugin_sdk::{
    Context, Failure, FailureKind, Phase, Plugin, PluginInfo, exec, http, log, net, operation,
    progress, secrets, state, stores,
};
use serde_json::{Value, json};

/// Does what its params say, through the SDK's host helpers.
struct Tool;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

impl Plugin for Tool {
    fn describe() -> PluginInfo {
        [
            "store",
            "state",
            "exec",
            "service",
            "http",
            "tcp",
            "log",
            "swallow",
            "bad-outputs",
            "panic",
        ]
        .into_iter()
        .fold(PluginInfo::new("tool", "0.1.0"), |info, op| {
            info.operation(operation(op, op, "{}"))
        })
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let p: Value = respawn_plugin_sdk::params(params)?;
        let (store, key) = (text(&p["store"]), text(&p["key"]));
        let out = match (ctx.operation.as_str(), text(&p["do"])) {
            ("store", "get") => {
                json!({ "data": String::from_utf8(stores::get(store, key)?).unwrap() })
            }
            ("store", "get-range") => {
                let (offset, length) =
                    (p["offset"].as_u64().unwrap(), p["length"].as_u64().unwrap());
                let bytes = stores::get_range(store, key, offset, length)?;
                json!({ "data": String::from_utf8(bytes).unwrap() })
            }
            ("store", "put") => {
                stores::put(store, key, text(&p["data"]).as_bytes())?;
                json!({})
            }
            ("store", "head") => match stores::head(store, key)? {
                Some(m) => json!({ "key": m.key, "size": m.size, "modified": m.last_modified }),
                None => json!({ "missing": true }),
            },
            ("store", "list") => {
                let keys: Vec<String> = stores::list(store, text(&p["prefix"]))?
                    .into_iter()
                    .map(|m| m.key)
                    .collect();
                json!({ "keys": keys })
            }
            ("store", "delete") => {
                stores::delete(store, key)?;
                json!({})
            }
            ("store", "copy") => {
                let to = (text(&p["to_store"]), text(&p["to_key"]));
                let done = stores::copy((store, key), to, p["sha256"].as_str())?;
                json!({ "bytes": done.bytes, "sha256": done.sha256 })
            }
            ("state", _) => {
                state::set("set", "yes");
                state::delete("old");
                json!({ "state": state::list() })
            }
            ("exec", _) => {
                let out = exec::Command::new(text(&p["program"]))
                    .args(
                        p["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| text(a).to_string()),
                    )
                    .env("K", "V")
                    .output()?;
                json!({ "status": out.status, "stdout": String::from_utf8(out.stdout).unwrap() })
            }
            ("service", _) => {
                let first = exec::Command::new(text(&p["program"])).spawn_service()?;
                let second = exec::Command::new(text(&p["program"])).spawn_service()?;
                exec::stop_service(first)?;
                json!({ "running": second })
            }
            ("http", _) => {
                let body = p["body"].as_str().map(str::as_bytes);
                let r = http::request(text(&p["method"]), text(&p["url"]), body)?;
                json!({ "status": r.status, "body": String::from_utf8(r.body).unwrap() })
            }
            ("tcp", _) => {
                let port = p["port"].as_u64().unwrap() as u16;
                json!({ "micros": net::tcp_probe(text(&p["host"]), port, 1000)? })
            }
            ("log", _) => {
                log::debug("starting");
                progress::report(1, Some(2), "half");
                log::warn("careful");
                progress::report(2, Some(2), "done");
                json!({})
            }
            ("swallow", _) => json!({ "secret": secrets::get("nope").is_ok() }),
            ("bad-outputs", _) => return Ok("[1, 2]".into()),
            ("panic", _) => {
                state::set("before-panic", "1");
                panic!("plugin bug");
            }
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

fn store_op(host: &mut MockHost, phase: Phase, params: Value) -> Result<Value, Failure> {
    host.invoke::<Tool>("store", phase, params)
}

fn denied(result: Result<Value, Failure>, capability: &str, host: &MockHost) -> String {
    let failure = result.expect_err("denied");
    assert_eq!(failure.kind, FailureKind::Denied, "{failure:?}");
    assert!(!failure.retryable);
    let denial = host.denial().expect("the denial is recorded");
    assert_eq!(denial.capability, capability);
    failure.message
}

#[test]
fn stores_enforce_grants() {
    let mut host = MockHost::new()
        .store("src", Access::Read)
        .with_object("src", "a/b.txt", "hello")
        .store("dst", Access::Write);

    let got = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "get", "store": "src", "key": "a/b.txt" }),
    );
    assert_eq!(got.unwrap(), json!({ "data": "hello" }));
    assert!(host.denials().is_empty());

    let msg = denied(
        store_op(
            &mut host,
            Phase::Apply,
            json!({ "do": "put", "store": "src", "key": "x", "data": "d" }),
        ),
        "stores",
        &host,
    );
    assert_eq!(
        msg,
        "stores denied: write src:x: store `src` is granted read only"
    );

    let msg = denied(
        store_op(
            &mut host,
            Phase::Apply,
            json!({ "do": "get", "store": "other", "key": "x" }),
        ),
        "stores",
        &host,
    );
    assert_eq!(
        msg,
        "stores denied: read other:x: store `other` is not granted"
    );

    let msg = denied(
        store_op(
            &mut host,
            Phase::Apply,
            json!({ "do": "get", "store": "src", "key": "a/../b" }),
        ),
        "stores",
        &host,
    );
    assert!(msg.contains("`..`"), "{msg}");

    let missing = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "get", "store": "src", "key": "nope" }),
    );
    assert_eq!(missing.unwrap_err().kind, FailureKind::NotFound);
    assert!(host.denials().is_empty(), "denials are per invocation");
}

#[test]
fn plan_may_read_but_not_write_stores() {
    let mut host = MockHost::new()
        .store("dst", Access::Write)
        .with_object("dst", "k", "v");
    let got = store_op(
        &mut host,
        Phase::Plan,
        json!({ "do": "get", "store": "dst", "key": "k" }),
    );
    assert_eq!(got.unwrap(), json!({ "data": "v" }));
    for action in ["put", "delete"] {
        let msg = denied(
            store_op(
                &mut host,
                Phase::Plan,
                json!({ "do": action, "store": "dst", "key": "k", "data": "w" }),
            ),
            "stores",
            &host,
        );
        assert_eq!(
            msg,
            "stores denied: write dst:k: the plan phase is read-only"
        );
    }
    assert_eq!(host.object("dst", "k"), Some(&b"v"[..]));
}

#[test]
fn store_writes_head_list_delete() {
    let mut host = MockHost::new().store("s", Access::Write);
    for key in ["a/1", "a/2", "ab/3"] {
        store_op(
            &mut host,
            Phase::Apply,
            json!({ "do": "put", "store": "s", "key": key, "data": key }),
        )
        .unwrap();
    }
    assert_eq!(host.object_keys("s"), ["a/1", "a/2", "ab/3"]);
    let listed = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "list", "store": "s", "prefix": "a/" }),
    );
    assert_eq!(listed.unwrap(), json!({ "keys": ["a/1", "a/2"] }));
    let listed = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "list", "store": "s", "prefix": "" }),
    );
    assert_eq!(listed.unwrap()["keys"].as_array().unwrap().len(), 3);

    let head = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "head", "store": "s", "key": "ab/3" }),
    )
    .unwrap();
    assert_eq!(head["size"], 4);
    assert!(head["modified"].as_i64().unwrap() > 0);

    store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "delete", "store": "s", "key": "a/1" }),
    )
    .unwrap();
    store_op(
        &mut host,
        Phase::Destroy,
        json!({ "do": "delete", "store": "s", "key": "a/1" }),
    )
    .expect("deleting a missing object succeeds");
    let head = store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "head", "store": "s", "key": "a/1" }),
    );
    assert_eq!(head.unwrap(), json!({ "missing": true }));
}

#[test]
fn store_grant_prefix_is_enforced() {
    let mut host = MockHost::new().store_under("s", Access::Write, "mine/");
    store_op(
        &mut host,
        Phase::Apply,
        json!({ "do": "put", "store": "s", "key": "mine/x", "data": "1" }),
    )
    .unwrap();
    let msg = denied(
        store_op(
            &mut host,
            Phase::Apply,
            json!({ "do": "put", "store": "s", "key": "theirs/x", "data": "1" }),
        ),
        "stores",
        &host,
    );
    assert!(msg.contains("outside the granted prefix `mine/`"), "{msg}");
}

#[test]
fn store_copy_checks_the_digest() {
    let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // sha256("hello")
    let mut host = MockHost::new()
        .store("src", Access::Read)
        .with_object("src", "k", "hello")
        .store("dst", Access::Write);
    let copy = |sha256: &str| json!({ "do": "copy", "store": "src", "key": "k", "to_store": "dst", "to_key": "c", "sha256": sha256 });

    let bad = store_op(&mut host, Phase::Apply, copy(&"0".repeat(64))).unwrap_err();
    assert_eq!(bad.kind, FailureKind::VerificationFailed);
    assert_eq!(
        host.object("dst", "c"),
        None,
        "a mismatch leaves no destination behind"
    );

    let done = store_op(&mut host, Phase::Apply, copy(sha)).unwrap();
    assert_eq!(done, json!({ "bytes": 5, "sha256": sha }));
    assert_eq!(host.object("dst", "c"), Some(&b"hello"[..]));

    let msg = denied(store_op(&mut host, Phase::Plan, copy(sha)), "stores", &host);
    assert!(msg.contains("plan phase"), "{msg}");
}

#[test]
fn store_get_range_reads_chunks_with_the_grant_of_get() {
    use respawn_plugin_sdk::testing::MAX_GET_RANGE_BYTES;
    let mut host = MockHost::new()
        .store_under("s", Access::Read, "blobs/")
        .with_object("s", "blobs/b", "0123456789");
    let range = |key: &str, offset: u64, length: u64| json!({ "do": "get-range", "store": "s", "key": key, "offset": offset, "length": length });
    let read = |host: &mut MockHost, offset: u64, length: u64| {
        store_op(host, Phase::Plan, range("blobs/b", offset, length)).map(|v| v["data"].clone())
    };
    assert_eq!(read(&mut host, 0, 4).unwrap(), "0123");
    assert_eq!(read(&mut host, 3, 4).unwrap(), "3456");
    assert_eq!(read(&mut host, 8, 4).unwrap(), "89", "fewer at the end");
    assert_eq!(read(&mut host, 10, 4).unwrap(), "", "none at the end");
    assert_eq!(read(&mut host, 1 << 40, 4).unwrap(), "", "none past it");
    assert_eq!(read(&mut host, 2, 0).unwrap(), "");

    let long = read(&mut host, 0, MAX_GET_RANGE_BYTES + 1).unwrap_err();
    assert_eq!(long.kind, FailureKind::InvalidInput);
    assert!(
        long.message.contains("at most 16777216 bytes"),
        "{}",
        long.message
    );
    assert!(host.denials().is_empty());

    let missing = store_op(&mut host, Phase::Apply, range("blobs/nope", 0, 4)).unwrap_err();
    assert_eq!(missing.kind, FailureKind::NotFound);

    let msg = denied(
        store_op(&mut host, Phase::Apply, range("other/b", 0, 4)),
        "stores",
        &host,
    );
    assert_eq!(
        msg,
        "stores denied: read s:other/b: outside the granted prefix `blobs/`"
    );
    let msg = denied(
        host.invoke::<Tool>(
            "store",
            Phase::Apply,
            json!({ "do": "get-range", "store": "t", "key": "k", "offset": 0, "length": 1 }),
        ),
        "stores",
        &host,
    );
    assert_eq!(msg, "stores denied: read t:k: store `t` is not granted");
}

#[test]
fn state_writes_in_plan_are_dropped() {
    let mut host = MockHost::new().state("old", "1");
    let out = host
        .invoke::<Tool>("state", Phase::Plan, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "state": [["old", "1"]] }));
    assert_eq!(host.state_get("old"), Some("1"));
    assert_eq!(host.state_get("set"), None);

    let out = host
        .invoke::<Tool>("state", Phase::Apply, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "state": [["set", "yes"]] }));
    assert_eq!(host.state_map().len(), 1);
}

#[test]
fn exec_runs_granted_programs_only() {
    let mut host = MockHost::new()
        .exec("pg_dump", output(0, "dumped\n", ""))
        .exec_with("echo", |req| Ok(output(3, &req.args.join(" "), "")));

    let out = host.invoke::<Tool>(
        "exec",
        Phase::Apply,
        json!({ "program": "pg_dump", "args": ["-Fc"] }),
    );
    assert_eq!(out.unwrap(), json!({ "status": 0, "stdout": "dumped\n" }));
    let out = host.invoke::<Tool>(
        "exec",
        Phase::Apply,
        json!({ "program": "echo", "args": ["a", "b"] }),
    );
    assert_eq!(out.unwrap(), json!({ "status": 3, "stdout": "a b" }));
    let calls = host.exec_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].program, "pg_dump");
    assert_eq!(calls[0].args, ["-Fc"]);
    assert_eq!(calls[0].env, [("K".to_string(), "V".to_string())]);

    let msg = denied(
        host.invoke::<Tool>(
            "exec",
            Phase::Apply,
            json!({ "program": "rm", "args": ["-rf", "/"] }),
        ),
        "exec",
        &host,
    );
    assert_eq!(
        msg,
        "exec denied: program `rm` is not in the step's exec grant"
    );
    let msg = denied(
        host.invoke::<Tool>("exec", Phase::Plan, json!({ "program": "pg_dump" })),
        "exec",
        &host,
    );
    assert_eq!(
        msg,
        "exec denied: `pg_dump`: the plan phase may not run programs"
    );
    assert_eq!(host.exec_calls().len(), 2, "denied programs did not run");
}

#[test]
fn exec_failures_are_returned() {
    let mut host = MockHost::new().exec_failure("slow", Failure::unavailable("timed out"));
    let failure = host
        .invoke::<Tool>("exec", Phase::Apply, json!({ "program": "slow" }))
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert!(failure.retryable);
    assert!(host.denials().is_empty());
}

#[test]
fn services_are_tracked() {
    let mut host = MockHost::new().exec("redis-server", output(0, "", ""));
    let out = host
        .invoke::<Tool>(
            "service",
            Phase::Apply,
            json!({ "program": "redis-server" }),
        )
        .unwrap();
    let services = host.services();
    assert_eq!(services.len(), 1, "the first was stopped");
    assert_eq!(json!(services[0].pid), out["running"]);
    assert_eq!(services[0].request.program, "redis-server");
    denied(
        host.invoke::<Tool>("service", Phase::Plan, json!({ "program": "redis-server" })),
        "exec",
        &host,
    );
}

#[test]
fn http_answers_granted_urls() {
    let url = "https://api.example.com/health";
    let mut host = MockHost::new().http(url, 200, "ok").http_failure(
        "http://down.example.com/",
        Failure::unavailable("connection refused"),
    );

    let get = |method: &str, url: &str| json!({ "method": method, "url": url });
    let out = host
        .invoke::<Tool>("http", Phase::Plan, get("GET", url))
        .unwrap();
    assert_eq!(out, json!({ "status": 200, "body": "ok" }));
    let out = host.invoke::<Tool>(
        "http",
        Phase::Apply,
        json!({ "method": "POST", "url": url, "body": "x" }),
    );
    assert_eq!(out.unwrap()["status"], 200);
    assert_eq!(host.http_calls().len(), 2);
    assert_eq!(host.http_calls()[1].method, "POST");
    assert_eq!(host.http_calls()[1].body.as_deref(), Some(&b"x"[..]));

    let msg = denied(
        host.invoke::<Tool>("http", Phase::Plan, get("POST", url)),
        "http",
        &host,
    );
    assert_eq!(msg, format!("http: {url} denied"));
    assert!(host.denial().unwrap().asked.contains("plan phase"));
    let msg = denied(
        host.invoke::<Tool>(
            "http",
            Phase::Apply,
            get("GET", "https://evil.example.com/"),
        ),
        "http",
        &host,
    );
    assert_eq!(msg, "http: https://evil.example.com/ denied");

    let down = host
        .invoke::<Tool>("http", Phase::Apply, get("GET", "http://down.example.com/"))
        .unwrap_err();
    assert_eq!(down.kind, FailureKind::Unavailable);
    let bad = host
        .invoke::<Tool>("http", Phase::Apply, get("GET", "nonsense"))
        .unwrap_err();
    assert_eq!(bad.kind, FailureKind::InvalidInput);
}

#[test]
fn tcp_probes_need_a_grant() {
    let mut host = MockHost::new().tcp("db", 5432, 250);
    let out = host.invoke::<Tool>("tcp", Phase::Verify, json!({ "host": "db", "port": 5432 }));
    assert_eq!(out.unwrap(), json!({ "micros": 250 }));
    let msg = denied(
        host.invoke::<Tool>("tcp", Phase::Verify, json!({ "host": "db", "port": 22 })),
        "http",
        &host,
    );
    assert_eq!(
        msg,
        "http denied: tcp://db:22 is not in the step's http grant"
    );
}

#[test]
fn logs_and_progress_are_captured() {
    let mut host = MockHost::new();
    host.invoke::<Tool>("log", Phase::Apply, json!({})).unwrap();
    assert_eq!(host.log_messages(), ["starting", "careful"]);
    assert_eq!(host.logs()[1].0, Level::Warn);
    let reports: Vec<_> = host
        .progress()
        .iter()
        .map(|p| (p.done, p.total, p.message.as_str()))
        .collect();
    assert_eq!(reports, [(1, Some(2), "half"), (2, Some(2), "done")]);
    host.clear_captured();
    assert!(host.logs().is_empty() && host.progress().is_empty());
}

#[test]
fn a_swallowed_denial_is_still_recorded() {
    let mut host = MockHost::new();
    let out = host
        .invoke::<Tool>("swallow", Phase::Apply, json!({}))
        .unwrap();
    assert_eq!(out, json!({ "secret": false }));
    assert_eq!(host.denial().unwrap().capability, "secrets");
}

#[test]
fn the_mock_survives_a_panicking_plugin() {
    let mut host = MockHost::new().state("kept", "1");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        host.invoke::<Tool>("panic", Phase::Apply, json!({}))
    }));
    assert!(caught.is_err());
    assert_eq!(host.state_get("kept"), Some("1"));
    assert_eq!(host.state_get("before-panic"), Some("1"));
    // And it is uninstalled: another mock works on this thread.
    let mut other = MockHost::new();
    other
        .invoke::<Tool>("state", Phase::Apply, json!({}))
        .unwrap();
    assert_eq!(other.state_get("set"), Some("yes"));
    assert_eq!(host.state_get("set"), None);
}

#[test]
fn enter_runs_helpers_against_the_mock() {
    let mut host = MockHost::new().secret("token", "abc");
    let value = host.enter(Phase::Apply, || secrets::get("token"));
    assert_eq!(value.unwrap(), "abc");
    host.enter(Phase::Plan, || state::set("k", "v"));
    assert_eq!(host.state_get("k"), None);
}

#[test]
fn context_is_what_the_plugin_sees() {
    let host = MockHost::new().run_id("r1").step_id("s1").attempt(3);
    let ctx = host.context("op", Phase::Verify);
    assert_eq!(
        (ctx.run_id.as_str(), ctx.step_id.as_str(), ctx.attempt),
        ("r1", "s1", 3)
    );
    assert_eq!(ctx.phase, Phase::Verify);
}

#[test]
#[should_panic(expected = "outside MockHost::invoke")]
fn host_calls_need_a_mock() {
    let _ = state::get("k");
}

#[test]
#[should_panic(expected = "has no operation `nope`")]
fn operations_must_be_described() {
    let _ = MockHost::new().invoke::<Tool>("nope", Phase::Apply, json!({}));
}

#[test]
#[should_panic(expected = "outputs must be a JSON object")]
fn outputs_must_be_an_object() {
    let _ = MockHost::new().invoke::<Tool>("bad-outputs", Phase::Apply, json!({}));
}
