//! The builtin verifier, `builtin:check@0.1`, used in `verify:` sections.
//!
//! - `check/http`: GET a URL and compare status, body digest, body text and latency.
//! - `check/tcp`: connect to `host:port` through the host's probe.
//! - `check/digest`: hash an object of a store and compare it with an expected or sidecar digest.
//!
//! Params are parsed strictly (unknown fields are `invalid-input`). `plan` validates the params and says what
//! would be checked without any I/O; `destroy` does nothing; `apply` and `verify` run the check. A mismatch is
//! `verification-failed` naming what was expected and what was found; network trouble is `unavailable`
//! (retryable).

use respawn_plugin_sdk::{
    Context, Failure, FailureKind, Phase, Plugin, PluginInfo, export_plugin, http, log, net,
    operation, stores,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HTTP_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "check/http",
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "http:// or https:// URL to GET; must be allowed by the step's http grant", "pattern": "^https?://"},
    "status": {"type": "integer", "minimum": 100, "maximum": 599, "default": 200, "description": "Expected response status"},
    "body_sha256": {"type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$", "description": "Expected sha256 of the body, hex, optionally prefixed with sha256:"},
    "body_contains": {"type": "string", "description": "Text the body must contain"},
    "max_latency_ms": {"type": "integer", "minimum": 0, "description": "Largest accepted time to the whole response, in milliseconds"}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

const TCP_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "check/tcp",
  "type": "object",
  "properties": {
    "host": {"type": "string", "minLength": 1, "description": "Host name or IP address; the step's http grant must allow tcp://host:port"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "TCP port"},
    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 4294967295, "default": 2000, "description": "Connect timeout in milliseconds"}
  },
  "required": ["host", "port"],
  "additionalProperties": false
}"#;

const DIGEST_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "check/digest",
  "type": "object",
  "properties": {
    "store": {"type": "string", "minLength": 1, "description": "Name of a store granted to the step (read)"},
    "key": {"type": "string", "minLength": 1, "description": "Key of the object to hash"},
    "sha256": {"type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$", "description": "Expected sha256, hex, optionally prefixed with sha256:"},
    "sidecar": {"type": "string", "minLength": 1, "description": "Key of an object in the same store whose first whitespace-separated token is the expected sha256, e.g. blob.sha256"}
  },
  "required": ["store", "key"],
  "oneOf": [
    {"required": ["sha256"], "not": {"required": ["sidecar"]}},
    {"required": ["sidecar"], "not": {"required": ["sha256"]}}
  ],
  "additionalProperties": false
}"#;

fn default_status() -> u16 {
    200
}

fn default_timeout_ms() -> u32 {
    2000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpParams {
    url: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    body_sha256: Option<String>,
    #[serde(default)]
    body_contains: Option<String>,
    #[serde(default)]
    max_latency_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpParams {
    host: String,
    port: u16,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestParams {
    store: String,
    key: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    sidecar: Option<String>,
}

struct Check;

impl Plugin for Check {
    fn describe() -> PluginInfo {
        PluginInfo::new("check", env!("CARGO_PKG_VERSION"))
            .operation(operation(
                "http",
                "GET a URL and check its status, body sha256, body text and latency",
                HTTP_SCHEMA,
            ))
            .operation(operation(
                "tcp",
                "Check that host:port accepts TCP connections",
                TCP_SCHEMA,
            ))
            .operation(operation(
                "digest",
                "Hash an object of a store and compare it with an expected or sidecar sha256",
                DIGEST_SCHEMA,
            ))
            .capability("http")
            .capability("stores")
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        // Destroy has nothing to undo: a check creates nothing.
        if ctx.phase == Phase::Destroy {
            return respawn_plugin_sdk::outputs(&json!({}));
        }
        let plan = ctx.phase == Phase::Plan;
        let out = match ctx.operation.as_str() {
            "http" => check_http(respawn_plugin_sdk::params(params)?, plan)?,
            "tcp" => check_tcp(respawn_plugin_sdk::params(params)?, plan)?,
            "digest" => check_digest(respawn_plugin_sdk::params(params)?, plan)?,
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(Check);

/// Normalizes an expected digest (`[sha256:]HEX`) to lowercase hex, or says why it is not one.
fn parse_digest(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    let hex = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{value}` is not a sha256 digest (64 hex digits, optionally prefixed with `sha256:`)"
        ))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

fn check_http(p: HttpParams, plan: bool) -> Result<Value, Failure> {
    if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
        return Err(Failure::invalid_input(format!(
            "url: `{}` must start with http:// or https://",
            p.url
        )));
    }
    if !(100..=599).contains(&p.status) {
        return Err(Failure::invalid_input(format!(
            "status: {} is not an HTTP status (100-599)",
            p.status
        )));
    }
    let expected_sha = p
        .body_sha256
        .as_deref()
        .map(parse_digest)
        .transpose()
        .map_err(|e| Failure::invalid_input(format!("body_sha256: {e}")))?;
    if plan {
        let mut what = format!("check GET {} returns status {}", p.url, p.status);
        if let Some(sha) = &expected_sha {
            what.push_str(&format!(", body sha256 {sha}"));
        }
        if let Some(text) = &p.body_contains {
            what.push_str(&format!(", body containing {text:?}"));
        }
        if let Some(ms) = p.max_latency_ms {
            what.push_str(&format!(", within {ms} ms"));
        }
        return Ok(json!({ "would": what }));
    }

    let started = std::time::Instant::now();
    let response = http::get(&p.url).map_err(|f| match f.kind {
        // Anything but a refusal or a bad URL is network trouble: worth a retry.
        FailureKind::Denied | FailureKind::InvalidInput => f,
        _ => Failure::unavailable(format!("GET {}: {}", p.url, f.message)),
    })?;
    let latency_ms = started.elapsed().as_millis() as u64;
    let body_sha256 = sha256_hex(&response.body);
    let bytes = response.body.len() as u64;
    log::debug(&format!(
        "GET {}: status {}, {bytes} bytes, {latency_ms} ms",
        p.url, response.status
    ));

    let mut problems = Vec::new();
    if response.status != p.status {
        problems.push(format!(
            "status: expected {}, got {}",
            p.status, response.status
        ));
    }
    if let Some(expected) = &expected_sha
        && *expected != body_sha256
    {
        problems.push(format!(
            "body sha256: expected {expected}, got {body_sha256}"
        ));
    }
    if let Some(text) = &p.body_contains
        && !contains(&response.body, text.as_bytes())
    {
        problems.push(format!(
            "body: expected it to contain {text:?}, got {bytes} bytes without it{}",
            preview(&response.body)
        ));
    }
    if let Some(max) = p.max_latency_ms
        && latency_ms > max
    {
        problems.push(format!(
            "latency: expected at most {max} ms, got {latency_ms} ms"
        ));
    }
    if !problems.is_empty() {
        return Err(Failure::verification_failed(format!(
            "GET {}: {}",
            p.url,
            problems.join("; ")
        )));
    }
    Ok(json!({
        "status": response.status,
        "latency_ms": latency_ms,
        "body_sha256": body_sha256,
        "bytes": bytes,
    }))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The start of a body, for messages.
fn preview(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let more = if body.len() > 120 { "…" } else { "" };
    format!(" (starts {:?}{more})", text)
}

fn check_tcp(p: TcpParams, plan: bool) -> Result<Value, Failure> {
    if p.host.trim().is_empty() {
        return Err(Failure::invalid_input("host: must not be empty"));
    }
    if p.port == 0 {
        return Err(Failure::invalid_input("port: must be 1-65535"));
    }
    if p.timeout_ms == 0 {
        return Err(Failure::invalid_input("timeout_ms: must be at least 1"));
    }
    let target = format!("{}:{}", p.host, p.port);
    if plan {
        return Ok(json!({
            "would": format!("check tcp {target} accepts a connection within {} ms", p.timeout_ms)
        }));
    }
    match net::tcp_probe(&p.host, p.port, p.timeout_ms) {
        Ok(connect_us) => {
            log::debug(&format!("tcp {target}: connected in {connect_us} us"));
            Ok(json!({ "connect_us": connect_us }))
        }
        Err(f) if f.kind == FailureKind::Denied || f.kind == FailureKind::InvalidInput => Err(f),
        Err(f) => Err(Failure::unavailable(format!(
            "tcp {target} did not accept a connection: {}",
            f.message
        ))),
    }
}

fn check_digest(p: DigestParams, plan: bool) -> Result<Value, Failure> {
    if p.store.is_empty() {
        return Err(Failure::invalid_input("store: must not be empty"));
    }
    if p.key.is_empty() {
        return Err(Failure::invalid_input("key: must not be empty"));
    }
    let expected = match (&p.sha256, &p.sidecar) {
        (Some(sha), None) => {
            Some(parse_digest(sha).map_err(|e| Failure::invalid_input(format!("sha256: {e}")))?)
        }
        (None, Some(sidecar)) if !sidecar.is_empty() => None,
        (None, Some(_)) => return Err(Failure::invalid_input("sidecar: must not be empty")),
        (Some(_), Some(_)) => {
            return Err(Failure::invalid_input(
                "give exactly one of `sha256` and `sidecar`, not both",
            ));
        }
        (None, None) => {
            return Err(Failure::invalid_input(
                "give exactly one of `sha256` (the expected digest) and `sidecar` (key of an object holding it)",
            ));
        }
    };
    let object = format!("{}:{}", p.store, p.key);
    if plan {
        let against = match (&expected, &p.sidecar) {
            (Some(sha), _) => format!("sha256 {sha}"),
            (None, Some(sidecar)) => format!("the digest in {}:{sidecar}", p.store),
            (None, None) => unreachable!("checked above"),
        };
        return Ok(json!({ "would": format!("check {object} hashes to {against}") }));
    }

    let (expected, source) = match (expected, &p.sidecar) {
        (Some(sha), _) => (sha, "expected".to_string()),
        (None, Some(sidecar)) => {
            let sidecar_object = format!("{}:{sidecar}", p.store);
            let raw = stores::get(&p.store, sidecar)?;
            let text = String::from_utf8_lossy(&raw);
            let token = text.split_whitespace().next().unwrap_or_default();
            let sha = parse_digest(token).map_err(|e| {
                Failure::verification_failed(format!(
                    "sidecar {sidecar_object} does not hold a sha256 digest: {e}"
                ))
            })?;
            (sha, format!("expected (from sidecar {sidecar_object})"))
        }
        (None, None) => unreachable!("checked above"),
    };
    let data = stores::get(&p.store, &p.key)?;
    let got = sha256_hex(&data);
    let bytes = data.len() as u64;
    drop(data);
    if got != expected {
        return Err(Failure::verification_failed(format!(
            "sha256 mismatch for {object}: {source} {expected}, got {got} ({bytes} bytes)"
        )));
    }
    log::debug(&format!("{object}: sha256 {got} ({bytes} bytes) matches"));
    Ok(json!({ "sha256": got, "bytes": bytes }))
}
