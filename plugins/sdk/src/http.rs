//! Outgoing HTTP through `wasi:http`. The host allows only the step's `http` grant.
//!
//! Natively (plugin unit tests) requests are answered by the `MockHost` that
//! `respawn_plugin_sdk::testing::MockHost::invoke` installs.

use crate::Failure;
#[cfg(target_arch = "wasm32")]
use wasi::http::outgoing_handler;
#[cfg(target_arch = "wasm32")]
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

/// A received response with its whole body (bounded by the host's response cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Failure> {
    request("GET", url, None)
}

/// Sends a request. Errors map to failures: a denied destination is `denied`, network trouble `unavailable`.
#[cfg(not(target_arch = "wasm32"))]
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, Failure> {
    crate::testing::imports::http_request(method, url, body)
}

/// Sends a request. Errors map to failures: a denied destination is `denied`, network trouble `unavailable`.
#[cfg(target_arch = "wasm32")]
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, Failure> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Failure::invalid_input(format!("bad url `{url}`")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.into()),
    };
    let bad = |what: &str| Failure::invalid_input(format!("bad {what} in `{url}`"));
    req.set_method(&method).map_err(|_| bad("method"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.into()),
    };
    req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| bad("authority"))?;
    req.set_path_with_query(Some(path))
        .map_err(|_| bad("path"))?;
    let out_body = req
        .body()
        .map_err(|_| Failure::internal("request body taken twice"))?;
    if let Some(bytes) = body {
        let stream = out_body
            .write()
            .map_err(|_| Failure::internal("request body stream"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Failure::unavailable(format!("send body: {e:?}")))?;
        }
        drop(stream);
    }
    let future = outgoing_handler::handle(req, None).map_err(|e| map_error(url, e))?;
    OutgoingBody::finish(out_body, None).map_err(|e| map_error(url, e))?;
    let pollable = future.subscribe();
    pollable.block();
    let response = future
        .get()
        .ok_or_else(|| Failure::internal("response not ready"))?
        .map_err(|_| Failure::internal("response taken twice"))?
        .map_err(|e| map_error(url, e))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| Failure::internal("response body taken twice"))?;
    let stream = incoming
        .stream()
        .map_err(|_| Failure::internal("response body stream"))?;
    // Chunks are kept as read and joined once at the end: a doubling `Vec` leaves freed blocks behind it that the
    // guest allocator cannot always reuse, and near the host's 64 MiB response cap that ran a 256 MiB guest out of
    // memory before the cap could answer.
    let mut chunks = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => chunks.push(chunk),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(Failure::unavailable(format!("reading {url}: {e:?}"))),
        }
    }
    Ok(Response {
        status,
        body: chunks.concat(),
    })
}

#[cfg(target_arch = "wasm32")]
fn map_error(url: &str, e: ErrorCode) -> Failure {
    match e {
        ErrorCode::HttpRequestDenied => {
            Failure::new(crate::FailureKind::Denied, format!("http: {url} denied"))
        }
        ErrorCode::InternalError(Some(m)) if m.contains("denied") => {
            Failure::new(crate::FailureKind::Denied, format!("http: {m}"))
        }
        other => Failure::unavailable(format!("http {url}: {other:?}")),
    }
}
