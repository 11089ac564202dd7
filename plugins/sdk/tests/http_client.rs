//! `http::Client` against the mock host: redirects stay inside the grant and drop credentials when they leave
//! the origin, `Retry-After` is honoured within the budget, and streamed bodies flow both ways.

use std::io::Read;
use std::time::Duration;

use respawn_plugin_sdk::http::{Client, Request, Response, Retry};
use respawn_plugin_sdk::testing::MockHost;
use respawn_plugin_sdk::{Context, Failure, FailureKind, Phase, Plugin, PluginInfo, operation};
use serde_json::{Value, json};

/// Sends the request its params describe with a client whose retries are quick, and returns what came back.
struct Fetch;

impl Plugin for Fetch {
    fn describe() -> PluginInfo {
        PluginInfo::new("fetch", "0.1.0").operation(operation("send", "send", "{}"))
    }

    fn invoke(_ctx: Context, params: &str) -> Result<String, Failure> {
        let p: Value = respawn_plugin_sdk::params(params)?;
        let mut request = Request::new(
            p["method"].as_str().unwrap_or("GET"),
            p["url"].as_str().unwrap_or_default(),
        );
        if let Some(auth) = p["auth"].as_str() {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = p["stream"].as_str() {
            let bytes = body.as_bytes().to_vec();
            let len = bytes.len() as u64;
            request = request.stream(std::io::Cursor::new(bytes), Some(len));
        }
        let client = Client {
            retry: Retry {
                attempts: 3,
                backoff: Duration::from_millis(1),
                max_wait: Duration::from_millis(50),
                budget: Duration::from_secs(2),
            },
            ..Client::default()
        };
        let mut response = client.send(request)?;
        let mut body = String::new();
        response
            .read_to_string(&mut body)
            .map_err(|e| Failure::internal(e.to_string()))?;
        respawn_plugin_sdk::outputs(&json!({
            "status": response.status,
            "url": response.url,
            "body": body,
        }))
    }
}

fn send(host: &mut MockHost, params: Value) -> Result<Value, Failure> {
    host.invoke::<Fetch>("send", Phase::Apply, params)
}

#[test]
fn a_redirect_is_followed_and_credentials_stay_with_their_origin() {
    let mut host = MockHost::new()
        .http_with("http://reg.test:5000/v2/a/blobs/x", |_| {
            Ok(Response::new(307, "").header("Location", "http://store.test:9000/x?sig=1"))
        })
        .http_with("http://store.test:9000/x?sig=1", |call| {
            let leaked = call.headers.get("authorization").is_some();
            Ok(Response::new(200, if leaked { "leaked" } else { "blob" }))
        });
    let out = send(
        &mut host,
        json!({ "url": "http://reg.test:5000/v2/a/blobs/x", "auth": "Bearer secret-token" }),
    )
    .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(
        out["body"], "blob",
        "the Authorization header crossed origins"
    );
    assert_eq!(out["url"], "http://store.test:9000/x?sig=1");
    let calls = host.http_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].headers.get("authorization"),
        Some("Bearer secret-token")
    );
}

#[test]
fn a_redirect_outside_the_grant_is_denied() {
    let mut host = MockHost::new().http_with("http://reg.test:5000/v2/", |_| {
        Ok(Response::new(302, "").header("Location", "http://evil.test/steal"))
    });
    let failure = send(&mut host, json!({ "url": "http://reg.test:5000/v2/" })).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied, "{failure:?}");
    assert!(failure.message.contains("evil.test"), "{}", failure.message);
}

#[test]
fn too_many_requests_is_retried_after_what_the_server_asks() {
    let tries = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = tries.clone();
    let mut host = MockHost::new().http_with("http://api.test/x", move |_| {
        seen.set(seen.get() + 1);
        Ok(if seen.get() < 3 {
            Response::new(429, "slow down").header("Retry-After", "0")
        } else {
            Response::new(200, "done")
        })
    });
    let out = send(&mut host, json!({ "url": "http://api.test/x" })).unwrap();
    assert_eq!((out["status"].clone(), tries.get()), (json!(200), 3));
}

#[test]
fn a_storm_of_429s_ends_with_the_last_answer_when_tries_run_out() {
    let mut host = MockHost::new().http_with("http://api.test/x", |_| {
        Ok(Response::new(429, "slow down").header("Retry-After", "0"))
    });
    let out = send(&mut host, json!({ "url": "http://api.test/x" })).unwrap();
    assert_eq!(out["status"], 429);
    assert_eq!(host.http_calls().len(), 3, "attempts: 3 is the cap");
}

#[test]
fn a_retry_after_beyond_the_budget_is_not_waited_for() {
    let mut host = MockHost::new().http_with("http://api.test/x", |_| {
        Ok(Response::new(503, "").header("Retry-After", "3600"))
    });
    let started = std::time::Instant::now();
    let out = send(&mut host, json!({ "url": "http://api.test/x" })).unwrap();
    assert_eq!(out["status"], 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        host.http_calls().len(),
        1,
        "an hour is more than max_wait: no early retry"
    );
}

#[test]
fn a_streamed_body_is_sent_once_and_never_retried() {
    let mut host = MockHost::new().http_with("http://api.test/up", |call| {
        assert_eq!(call.body.as_deref(), Some(&b"chunk-bytes"[..]));
        Ok(Response::new(503, ""))
    });
    let out = send(
        &mut host,
        json!({ "url": "http://api.test/up", "method": "PATCH", "stream": "chunk-bytes" }),
    )
    .unwrap();
    assert_eq!(out["status"], 503);
    assert_eq!(host.http_calls().len(), 1);
}
