//! Authentication and answer checks, natively against `MockHost`: the bearer-token flow (which the test registries,
//! basic auth only, cannot show), refused credentials that are never echoed, and a manifest that is not what its
//! digest says.

use respawn_plugin_sdk::http::Response;
use respawn_plugin_sdk::testing::MockHost;
use respawn_plugin_sdk::{
    Context, Failure, FailureKind, Phase, Plugin, PluginInfo, operation, outputs, params,
};
use serde_json::{Value, json};

use crate::digest::sha256_digest;
use crate::registry::{Endpoint, Registry};

/// Fetches one manifest through `Registry`, as replicate does.
struct Fetch;

impl Plugin for Fetch {
    fn describe() -> PluginInfo {
        PluginInfo::new("fetch", "0.1.0").operation(operation("manifest", "", "{}"))
    }

    fn invoke(_ctx: Context, raw: &str) -> Result<String, Failure> {
        let p: Value = params(raw)?;
        let endpoint: Endpoint = serde_json::from_value(p["endpoint"].clone())
            .map_err(|e| Failure::invalid_input(e.to_string()))?;
        let mut registry = Registry::connect(&endpoint, "source")?;
        let fetched = registry
            .manifest("team/app", p["reference"].as_str().unwrap_or("v1"))?
            .ok_or_else(|| Failure::not_found("no manifest"))?;
        outputs(&json!({ "digest": fetched.digest, "media_type": fetched.media_type }))
    }
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
const SECRET: &str = "s3cret-Passw0rd";

fn endpoint(registry: &str, insecure: bool) -> Value {
    json!({ "registry": registry, "insecure": insecure,
            "auth": { "username": "robot", "password_secret": "PW" } })
}

fn manifest_response() -> Response {
    Response::new(200, MANIFEST)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .header(
            "Docker-Content-Digest",
            sha256_digest(MANIFEST.as_bytes()).to_string(),
        )
}

#[test]
fn a_bearer_challenge_is_answered_with_a_token_for_the_scope_it_names() {
    let url = "https://reg.test/v2/team/app/manifests/v1";
    let token_url = "https://auth.test/token?service=reg.test&scope=repository%3Ateam%2Fapp%3Apull";
    let mut host = MockHost::new()
        .secret("PW", SECRET)
        .http_with(url, |call| {
            Ok(match call.headers.get("authorization") {
                Some("Bearer tok-123") => manifest_response(),
                _ => Response::new(401, "").header(
                    "WWW-Authenticate",
                    r#"Bearer realm="https://auth.test/token",service="reg.test",scope="repository:team/app:pull""#,
                ),
            })
        })
        .http_with(token_url, |call| {
            // robot:s3cret-Passw0rd
            Ok(match call.headers.get("authorization") {
                Some("Basic cm9ib3Q6czNjcmV0LVBhc3N3MHJk") => {
                    Response::new(200, r#"{"token":"tok-123"}"#)
                }
                _ => Response::new(401, ""),
            })
        });
    let out = host
        .invoke::<Fetch>(
            "manifest",
            Phase::Apply,
            json!({ "endpoint": endpoint("reg.test", false) }),
        )
        .unwrap();
    assert_eq!(out["digest"], json!(sha256_digest(MANIFEST.as_bytes())));
    let calls: Vec<_> = host.http_calls().iter().map(|c| c.url.as_str()).collect();
    assert_eq!(calls, [url, token_url, url]);
}

#[test]
fn refused_credentials_are_denied_without_echoing_the_secret() {
    let url = "http://127.0.0.1:5000/v2/team/app/manifests/v1";
    let mut host = MockHost::new().secret("PW", SECRET).http_with(url, |_| {
        Ok(Response::new(401, "").header("WWW-Authenticate", r#"Basic realm="r""#))
    });
    let failure = host
        .invoke::<Fetch>(
            "manifest",
            Phase::Apply,
            json!({ "endpoint": endpoint("127.0.0.1:5000", true) }),
        )
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied, "{failure:?}");
    assert!(
        failure.message.contains("user `robot`"),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains(SECRET));
    assert!(host.logs().iter().all(|(_, line)| !line.contains(SECRET)));
}

#[test]
fn a_token_service_that_refuses_is_denied() {
    let url = "https://reg.test/v2/team/app/manifests/v1";
    let mut host = MockHost::new()
        .secret("PW", SECRET)
        .http_with(url, |_| {
            Ok(Response::new(401, "").header(
                "WWW-Authenticate",
                r#"Bearer realm="https://auth.test/token",service="reg.test""#,
            ))
        })
        .http_with(
            "https://auth.test/token?service=reg.test&scope=repository%3Ateam%2Fapp%3Apull",
            |_| Ok(Response::new(401, "")),
        );
    let failure = host
        .invoke::<Fetch>(
            "manifest",
            Phase::Apply,
            json!({ "endpoint": endpoint("reg.test", false) }),
        )
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Denied, "{failure:?}");
}

#[test]
fn plain_http_is_only_for_loopback() {
    let mut host = MockHost::new().secret("PW", SECRET);
    let failure = host
        .invoke::<Fetch>(
            "manifest",
            Phase::Apply,
            json!({ "endpoint": endpoint("registry.example.com", true) }),
        )
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::InvalidInput);
    assert!(failure.message.contains("loopback"), "{}", failure.message);
}

#[test]
fn a_manifest_that_does_not_hash_to_the_digest_asked_for_is_refused() {
    let claimed = format!("sha256:{}", "ab".repeat(32));
    let url = format!("http://127.0.0.1:5000/v2/team/app/manifests/{claimed}");
    let mut host = MockHost::new().http_with(&url, |_| Ok(manifest_response()));
    let failure = host
        .invoke::<Fetch>(
            "manifest",
            Phase::Apply,
            json!({ "endpoint": { "registry": "127.0.0.1:5000", "insecure": true }, "reference": claimed }),
        )
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::VerificationFailed);
    assert!(failure.message.contains(&claimed), "{}", failure.message);
}

#[test]
fn references_parse_or_say_what_was_expected() {
    use crate::Reference;
    let r = Reference::parse("team/app:v1", "from").unwrap();
    assert_eq!(
        (r.repo.as_str(), r.tag.as_deref()),
        ("team/app", Some("v1"))
    );
    let pinned = format!("team/app@sha256:{}", "0".repeat(64));
    let r = Reference::parse(&pinned, "from").unwrap();
    assert_eq!(r.source_reference(), format!("sha256:{}", "0".repeat(64)));
    for bad in [
        "Team/App:v1",
        "registry.example.com:5000/app:v1/x",
        "app:",
        "app@sha256:zz",
        "",
    ] {
        let failure = Reference::parse(bad, "images[0].from").unwrap_err();
        assert!(
            failure.message.starts_with("images[0].from"),
            "{bad}: {}",
            failure.message
        );
    }
}

#[test]
fn referrers_found_through_the_api_also_get_the_fallback_tag() {
    let answer = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":321,"artifactType":"application/spdx+json"}]}"#;
    let index = crate::source::fallback_index(answer).unwrap();
    let doc: Value = serde_json::from_slice(&index.bytes).unwrap();
    assert_eq!(doc["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(doc["manifests"][0]["artifactType"], "application/spdx+json");
    assert_eq!(index.digest, sha256_digest(&index.bytes));
}
