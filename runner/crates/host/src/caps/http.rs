//! The http capability: an allowlist of `scheme://host:port` patterns (`respawn_sandbox::http`), checked in the
//! single outgoing-request hook of wasi:http, with timeouts and the step's response size cap
//! (`limits.http_response`). Also `tcp://host:port` probes, the `net` interface.

use std::time::{Duration, Instant};

use respawn_engine::{Phase, StepCall};
use respawn_sandbox::limits::{
    HTTP_BETWEEN_BYTES_TIMEOUT, HTTP_CONNECT_TIMEOUT, HTTP_FIRST_BYTE_TIMEOUT,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::super::bindings::abi::net as api;
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::context::{Denial, RunResources, StepContext};
use super::super::limits::StepLimits;
use super::{Answer, Capability};

pub struct Http;

impl Capability for Http {
    type Run = ();

    fn configure(_: &RunResources) {}

    /// The wasi:http hook, holding the step's `http` grant and response cap.
    type Step = HttpHooks;

    fn prepare(
        call: &StepCall,
        _: &RunResources,
        _: &mut WasiCtxBuilder,
    ) -> std::io::Result<HttpHooks> {
        Ok(HttpHooks {
            grants: call.grants.http.clone(),
            phase: call.phase,
            response_limit: StepLimits::from(&call.limits).http_response,
            denial: None,
        })
    }
}

/// What the `net` interface touches of an attempt.
pub struct NetView<'a> {
    pub ctx: &'a mut StepContext,
    /// The step's `http` grant, whose `tcp://` entries allow probes.
    pub grant: &'a [String],
}

// wasi:http itself is linked with WASI and reaches [`HttpHooks`] through `WasiHttpView`.
linked_through!(NetView, api);

impl api::Host for NetView<'_> {
    async fn tcp_probe(&mut self, host: String, port: u16, timeout_ms: u32) -> Answer<u64> {
        Ok(tcp_probe(self, &host, port, timeout_ms).await)
    }
}

/// The single outgoing-request hook of wasi:http for one step.
pub struct HttpHooks {
    pub grants: Vec<String>,
    pub phase: Phase,
    /// The step's `limits.http_response`, defaults applied: bytes of one response body.
    pub response_limit: u64,
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
        let refusal = respawn_sandbox::http::check_request(
            &self.grants,
            method.as_str(),
            (&scheme, &host, port),
            uri.path(),
            self.phase == Phase::Plan,
        )
        .err()
        .map(|denial| denial.asked);
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
            connect_timeout: cap(
                options.and_then(|o| o.connect_timeout),
                HTTP_CONNECT_TIMEOUT,
            ),
            first_byte_timeout: cap(
                options.and_then(|o| o.first_byte_timeout),
                HTTP_FIRST_BYTE_TIMEOUT,
            ),
            between_bytes_timeout: cap(
                options.and_then(|o| o.between_bytes_timeout),
                HTTP_BETWEEN_BYTES_TIMEOUT,
            ),
        };
        let limit = self.response_limit;
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
                    limit,
                }
                .boxed_unsync()
            });
            Ok((resp, Box::new(io) as IoFuture))
        })
    }
}

/// A response body that fails with `HttpResponseBodySize` once it exceeds its step's `limits.http_response`.
struct CappedBody {
    inner: WasiBody,
    seen: u64,
    limit: u64,
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
            if self.seen > self.limit {
                let limit = self.limit;
                tracing::warn!(
                    "http response cut off past {limit} bytes, the step's limits.http_response ({}); \
                     raise limits.http_response to receive more",
                    respawn_sandbox::limits::Value::Bytes(limit)
                );
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(limit)),
                )));
            }
        }
        polled
    }
}

/// `net.tcp-probe`: connect and close, allowed by a `tcp://host:port` entry of the http grant.
async fn tcp_probe(
    v: &mut NetView<'_>,
    host: &str,
    port: u16,
    timeout_ms: u32,
) -> Result<u64, Failure> {
    if let Err(denial) = respawn_sandbox::http::check_tcp(v.grant, host, port) {
        return Err(v.ctx.deny(denial));
    }
    let started = Instant::now();
    let timeout = Duration::from_millis(u64::from(timeout_ms.max(1))).min(HTTP_CONNECT_TIMEOUT);
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
