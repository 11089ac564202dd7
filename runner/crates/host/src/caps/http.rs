//! The http capability: an allowlist of `scheme://host:port` patterns, checked in the single outgoing-request
//! hook. `*` matches a whole host label or the whole port. Also used for `tcp://host:port` probes.

use std::time::{Duration, Instant};

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::super::bindings::types::{Failure, FailureKind};
use super::super::state::{Denial, StepState};
use respawn_engine::Phase;

/// Whether `scheme://host:port` is allowed by any pattern of `grants`.
pub fn allowed(grants: &[String], scheme: &str, host: &str, port: u16) -> bool {
    grants
        .iter()
        .any(|pattern| matches(pattern, scheme, host, port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn matches(pattern: &str, scheme: &str, host: &str, port: u16) -> bool {
    let Some((p_scheme, rest)) = pattern.split_once("://") else {
        return false;
    };
    if !p_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let (p_host, p_port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    let port_ok = match p_port {
        Some("*") => true,
        Some(p) => p.parse::<u16>().is_ok_and(|p| p == port),
        None => default_port(scheme) == Some(port),
    };
    port_ok && host_matches(p_host, host)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(p, h)| *p == "*" || p.eq_ignore_ascii_case(h))
}

/// Connect timeout for plugin HTTP requests (a plugin may ask for less, never more).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the first response byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between response bytes.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body a plugin may receive; bulk data moves through `store-copy`, not HTTP into the guest.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// The single outgoing-request hook of wasi:http for one step.
pub struct HttpHooks {
    pub grants: Vec<String>,
    pub phase: Phase,
    pub denial: Option<Denial>,
}

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: IoFuture,
    ) -> Box<
        dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), wasmtime_wasi_http::Error>>
            + Send,
    > {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let method = request.method().clone();
        let asked = format!("{method} {scheme}://{host}:{port}{}", uri.path());
        let refusal = if !allowed(&self.grants, &scheme, &host, port) {
            Some(format!("{asked} is not in the step's http grant"))
        } else if self.phase == Phase::Plan
            && method != http::Method::GET
            && method != http::Method::HEAD
        {
            Some(format!("{asked}: the plan phase may only GET or HEAD"))
        } else {
            None
        };
        if let Some(why) = &refusal {
            tracing::warn!(%why, "http denied");
            if self.denial.is_none() {
                self.denial = Some(Denial {
                    capability: "http".into(),
                    asked: why.clone(),
                });
            }
        }
        let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |d| d.min(max)));
        let options = RequestOptions {
            connect_timeout: cap(options.and_then(|o| o.connect_timeout), CONNECT_TIMEOUT),
            first_byte_timeout: cap(
                options.and_then(|o| o.first_byte_timeout),
                FIRST_BYTE_TIMEOUT,
            ),
            between_bytes_timeout: cap(
                options.and_then(|o| o.between_bytes_timeout),
                BETWEEN_BYTES_TIMEOUT,
            ),
        };
        Box::new(async move {
            if refusal.is_some() {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            use http_body_util::BodyExt;
            let (resp, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let resp = resp.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    seen: 0,
                }
                .boxed_unsync()
            });
            Ok((resp, Box::new(io) as IoFuture))
        })
    }
}

/// A response body that fails with `HttpResponseBodySize` once it exceeds [`MAX_RESPONSE_BYTES`].
struct CappedBody {
    inner: WasiBody,
    seen: u64,
}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.seen += data.len() as u64;
            if self.seen > MAX_RESPONSE_BYTES {
                tracing::warn!("http response larger than {MAX_RESPONSE_BYTES} bytes cut off");
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(MAX_RESPONSE_BYTES)),
                )));
            }
        }
        polled
    }
}

/// `tcp-probe`: connect and close, allowed by a `tcp://host:port` entry of the http grant.
pub async fn tcp_probe(
    s: &mut StepState,
    host: &str,
    port: u16,
    timeout_ms: u32,
) -> Result<u64, Failure> {
    if !allowed(&s.grants.http, "tcp", host, port) {
        return Err(s.deny(
            "http",
            format!("tcp://{host}:{port} is not in the step's http grant"),
        ));
    }
    let started = Instant::now();
    let timeout = Duration::from_millis(u64::from(timeout_ms.max(1))).min(CONNECT_TIMEOUT);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_stream)) => Ok(started.elapsed().as_micros() as u64),
        Ok(Err(e)) => Err(super::failure(
            FailureKind::Unavailable,
            format!("tcp://{host}:{port}: {e}"),
        )),
        Err(_) => Err(super::failure(
            FailureKind::Unavailable,
            format!("tcp://{host}:{port}: no connection within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_defaults() {
        let g = vec![
            "http://127.0.0.1:*".to_string(),
            "https://*.example.com".to_string(),
        ];
        assert!(allowed(&g, "http", "127.0.0.1", 8080));
        assert!(
            !allowed(&g, "https", "127.0.0.1", 8080),
            "scheme must match"
        );
        assert!(allowed(&g, "https", "api.example.com", 443));
        assert!(
            !allowed(&g, "https", "api.example.com", 8443),
            "no port means the default port"
        );
        assert!(!allowed(&g, "https", "evil.com", 443));
        assert!(
            !allowed(&g, "https", "a.b.example.com", 443),
            "* is one label"
        );
        assert!(
            !allowed(&[], "http", "127.0.0.1", 80),
            "nothing granted, nothing allowed"
        );
    }
}
