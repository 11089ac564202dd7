//! Outgoing HTTP through `wasi:http`, for plugins that talk to real APIs. The host allows only the step's `http`
//! grant, checked on every request, redirects included.
//!
//! [`Client::send`] streams both ways: a request body can be any [`std::io::Read`] and a response body is read as
//! it arrives ([`StreamingResponse`] implements `Read`), so a multi-GiB blob never sits whole in guest memory. The
//! client follows redirects (dropping `Authorization` when one leaves the origin, so a registry's token never
//! reaches the storage it redirects to) and retries `429`, `502`, `503` and `504` answers and connection
//! failures, waiting what `Retry-After` asks when the step's budget allows, for requests whose body can be sent
//! again. [`get`] and [`request`] are the one-line buffered forms.
//!
//! Why a layer of our own over the `wasi` bindings rather than a crate: `wstd` is async and would put an executor
//! in every plugin, whose API is synchronous; `http`'s types would add little to a header list and a status
//! code; and what matters here (bounded streaming, grant-aware redirects, budgeted retries, errors as respawn
//! failures) is this module's own policy either way.
//!
//! Natively (plugin unit tests) requests are answered by the `MockHost` that
//! `respawn_plugin_sdk::testing::MockHost::invoke` installs.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::{Failure, FailureKind};

#[cfg(target_arch = "wasm32")]
mod wasi;

/// Header names and values in order; names compare without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.0.push((name.to_string(), value.into()));
    }
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

/// What a request sends.
pub enum Body {
    Empty,
    /// Bytes held in memory; such a request can be retried and redirected.
    Bytes(Vec<u8>),
    /// Bytes read as they are sent, e.g. a chunk of a file. `length` becomes `Content-Length` when known (the host
    /// then refuses a body that ends early or runs long). Sent once: never retried or redirected.
    Stream {
        reader: Box<dyn Read>,
        length: Option<u64>,
    },
}

impl Body {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream { .. })
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Stream { length, .. } => write!(f, "Stream({length:?})"),
        }
    }
}

/// One request. Build it with [`Request::new`] and the setters.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Headers,
    pub body: Body,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Headers::new(),
            body: Body::Empty,
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.0.push((name.to_string(), value.into()));
        self
    }
    pub fn body(mut self, bytes: Vec<u8>) -> Request {
        self.body = Body::Bytes(bytes);
        self
    }
    pub fn stream(mut self, reader: impl Read + 'static, length: Option<u64>) -> Request {
        self.body = Body::Stream {
            reader: Box::new(reader),
            length,
        };
        self
    }
}

/// A received response with its whole body (for small answers; see [`StreamingResponse::bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: body.into(),
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.0.push((name.to_string(), value.into()));
        self
    }
}

/// A response whose body is read as it arrives.
pub struct StreamingResponse {
    pub status: u16,
    pub headers: Headers,
    /// The URL that answered, after redirects.
    pub url: String,
    body: Box<dyn Read>,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Read for StreamingResponse {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

impl StreamingResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The whole body, refusing one longer than `max` bytes (an answer that large is not what was asked for).
    pub fn bytes(mut self, max: u64) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        let read = (&mut self.body)
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| read_failure(&self.url, &e))?;
        if read as u64 > max {
            return Err(Failure::invalid_input(format!(
                "{}: response body larger than {max} bytes",
                self.url
            )));
        }
        Ok(body)
    }

    /// Reads exactly `buf.len()` bytes, or fewer at the end of the body; returns how many.
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.body.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_failure(&self.url, &e)),
            }
        }
        Ok(filled)
    }

    /// The failure a non-success status means: 401/403 `denied`, 404 `not-found`, 409 `conflict`, 429 and 5xx
    /// `unavailable` (retryable), other 4xx `invalid-input`. The body (an API's error document) is quoted,
    /// shortened. `what` says what was being done, e.g. `GET manifest sha256:…`.
    pub fn failure(self, what: &str) -> Failure {
        let status = self.status;
        let url = redact_query(&self.url).to_string();
        let detail = self
            .bytes(64 * 1024)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        status_failure(status, &format!("{what}: {url}"), detail.trim())
    }
}

/// The failure kind an HTTP status stands for (see [`StreamingResponse::failure`]).
pub fn status_failure(status: u16, what: &str, detail: &str) -> Failure {
    let kind = match status {
        401 | 403 => FailureKind::Denied,
        404 => FailureKind::NotFound,
        409 => FailureKind::Conflict,
        429 | 500..=599 => FailureKind::Unavailable,
        _ => FailureKind::InvalidInput,
    };
    let mut message = format!("{what}: HTTP {status}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Failure::new(kind, message)
}

fn read_failure(url: &str, e: &std::io::Error) -> Failure {
    let message = e.to_string();
    if message.contains("limits.http_response") {
        Failure::invalid_input(format!("reading {url}: {message}"))
    } else {
        Failure::unavailable(format!("reading {url}: {message}"))
    }
}

/// How a [`Client`] retries.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Wait before the second try when the server gives no `Retry-After`; doubles each time.
    pub backoff: Duration,
    /// Longest single wait; a `Retry-After` asking for more is not retried.
    pub max_wait: Duration,
    /// Longest time all tries of one request may take; a wait that would pass it is not made.
    pub budget: Duration,
}

impl Retry {
    /// One try only.
    pub fn none() -> Retry {
        Retry {
            attempts: 1,
            ..Retry::default()
        }
    }
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 6,
            backoff: Duration::from_millis(200),
            max_wait: Duration::from_secs(30),
            budget: Duration::from_secs(120),
        }
    }
}

/// Per-request timeouts asked of the host (which caps them with its own).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub between_bytes: Option<Duration>,
}

/// Sends requests with redirects and retries. `Client::default()` follows 10 redirects and retries per
/// [`Retry::default`].
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub max_redirects: u32,
    pub retry: Retry,
    pub timeouts: Timeouts,
}

impl Default for Client {
    fn default() -> Client {
        Client {
            max_redirects: 10,
            retry: Retry::default(),
            timeouts: Timeouts::default(),
        }
    }
}

/// One exchange as the transport returns it.
pub(crate) struct Exchange {
    pub status: u16,
    pub headers: Headers,
    pub body: Box<dyn Read>,
}

impl Client {
    /// Sends `request`, following redirects and retrying as configured; the response body is read as it
    /// arrives. Any status is returned as a response: map the ones you did not expect with
    /// [`StreamingResponse::failure`]. Errors: a destination outside the step's grant is `denied`; a connection
    /// that fails after every retry is `unavailable`.
    pub fn send(&self, mut request: Request) -> Result<StreamingResponse, Failure> {
        let started = Instant::now();
        let origin = origin_of(&request.url)?;
        let mut redirects = 0;
        let mut tries = 0;
        loop {
            tries += 1;
            let replayable = request.body.replayable();
            let body = match &mut request.body {
                Body::Stream { .. } => std::mem::replace(&mut request.body, Body::Empty),
                Body::Bytes(b) => Body::Bytes(b.clone()),
                Body::Empty => Body::Empty,
            };
            let sent = transport(
                &request.method,
                &request.url,
                &request.headers,
                body,
                &self.timeouts,
            );
            let retry_after = match &sent {
                Ok(exchange) if matches!(exchange.status, 429 | 502 | 503 | 504) => {
                    Some(retry_after(&exchange.headers))
                }
                Err(failure) if failure.kind == FailureKind::Unavailable => Some(None),
                _ => None,
            };
            if let Some(asked) = retry_after
                && replayable
                && tries < self.retry.attempts
            {
                // A server that asks for longer than we would wait gets its answer returned, not a retry early.
                let wait = asked.unwrap_or_else(|| {
                    (self.retry.backoff * 2u32.saturating_pow(tries - 1)).min(self.retry.max_wait)
                });
                if wait <= self.retry.max_wait && started.elapsed() + wait <= self.retry.budget {
                    let why = match &sent {
                        Ok(e) => format!("HTTP {}", e.status),
                        Err(f) => f.message.clone(),
                    };
                    crate::log::debug(&format!(
                        "{} {}: {why}; try {} in {wait:?}",
                        request.method,
                        redact_query(&request.url),
                        tries + 1
                    ));
                    std::thread::sleep(wait);
                    continue;
                }
            }
            let exchange = sent?;
            let location = exchange.headers.get("location").map(str::to_string);
            let follows = self.max_redirects > 0
                && match exchange.status {
                    301..=303 => true,
                    307 | 308 => replayable,
                    _ => false,
                };
            if let (true, Some(location)) = (follows, location) {
                redirects += 1;
                if redirects > self.max_redirects {
                    return Err(Failure::unavailable(format!(
                        "{} {}: more than {} redirects",
                        request.method,
                        redact_query(&request.url),
                        self.max_redirects
                    )));
                }
                let next = resolve(&request.url, &location)?;
                if origin_of(&next)? != origin {
                    // Credentials are for the origin they were given for, never for where it sends us.
                    request.headers.remove("authorization");
                }
                if exchange.status == 303
                    || (matches!(exchange.status, 301 | 302) && request.method == "POST")
                {
                    request.method = "GET".into();
                    request.body = Body::Empty;
                    request.headers.remove("content-length");
                    request.headers.remove("content-type");
                }
                request.url = next;
                tries = 0;
                continue;
            }
            return Ok(StreamingResponse {
                status: exchange.status,
                headers: exchange.headers,
                url: request.url,
                body: exchange.body,
            });
        }
    }

    /// [`Client::send`], then the whole body (up to `max` bytes).
    pub fn fetch(&self, request: Request, max: u64) -> Result<Response, Failure> {
        let response = self.send(request)?;
        let (status, headers) = (response.status, response.headers.clone());
        Ok(Response {
            status,
            headers,
            body: response.bytes(max)?,
        })
    }
}

/// Largest body [`get`] and [`request`] read into memory.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024 * 1024;

/// `GET url`, the whole body.
pub fn get(url: &str) -> Result<Response, Failure> {
    request("GET", url, None)
}

/// Sends one request, no redirect followed and no retry (a health check wants the answer it got), and reads the
/// whole body (up to [`MAX_BUFFERED_BODY`]). Errors map to failures: a denied destination is `denied`, network
/// trouble `unavailable`.
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, Failure> {
    let mut req = Request::new(method, url);
    if let Some(body) = body {
        req = req.body(body.to_vec());
    }
    let once = Client {
        max_redirects: 0,
        retry: Retry::none(),
        timeouts: Timeouts::default(),
    };
    once.fetch(req, MAX_BUFFERED_BODY)
}

/// `Retry-After` as a wait: delta-seconds only (an HTTP date would need a wall clock a plugin may not trust).
fn retry_after(headers: &Headers) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// `scheme://authority` of an absolute URL.
pub fn origin_of(url: &str) -> Result<String, Failure> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Failure::invalid_input(format!("bad url `{}`", redact_query(url))))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Failure::invalid_input(format!(
            "bad url `{}`: no host",
            redact_query(url)
        )));
    }
    Ok(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
}

/// A `Location` (absolute, or a path on the same origin) resolved against the URL that sent it.
pub fn resolve(base: &str, location: &str) -> Result<String, Failure> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let origin = origin_of(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = origin.split("://").next().unwrap_or("https");
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{origin}{location}"));
    }
    // Relative to the base path's directory.
    let path = &base[origin.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    Ok(format!("{origin}{dir}/{location}"))
}

/// A URL for messages: its query (which can carry upload state or signatures) left out.
pub fn redact_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(target_arch = "wasm32")]
fn transport(
    method: &str,
    url: &str,
    headers: &Headers,
    body: Body,
    timeouts: &Timeouts,
) -> Result<Exchange, Failure> {
    wasi::send(method, url, headers, body, timeouts)
}

#[cfg(not(target_arch = "wasm32"))]
fn transport(
    method: &str,
    url: &str,
    headers: &Headers,
    body: Body,
    _timeouts: &Timeouts,
) -> Result<Exchange, Failure> {
    let body = match body {
        Body::Empty => None,
        Body::Bytes(b) => Some(b),
        Body::Stream { mut reader, .. } => {
            let mut b = Vec::new();
            reader
                .read_to_end(&mut b)
                .map_err(|e| Failure::internal(format!("request body: {e}")))?;
            Some(b)
        }
    };
    let response = crate::testing::imports::http_send(method, url, headers, body)?;
    Ok(Exchange {
        status: response.status,
        headers: response.headers,
        body: Box::new(std::io::Cursor::new(response.body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_that_sent_them() {
        let base = "http://127.0.0.1:5000/v2/app/blobs/uploads/?x=1";
        assert_eq!(
            resolve(base, "/v2/app/blobs/uploads/u1?_state=s").unwrap(),
            "http://127.0.0.1:5000/v2/app/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            resolve(base, "https://s3.example/b?sig=1").unwrap(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(
            resolve(base, "//cdn.example/x").unwrap(),
            "http://cdn.example/x"
        );
        assert_eq!(resolve("http://h/a/b", "c").unwrap(), "http://h/a/c");
        assert!(origin_of("no-scheme").is_err());
    }

    #[test]
    fn headers_compare_names_without_case() {
        let mut h = Headers::new();
        h.set("Docker-Content-Digest", "sha256:ab");
        assert_eq!(h.get("docker-content-digest"), Some("sha256:ab"));
        h.set("DOCKER-CONTENT-DIGEST", "sha256:cd");
        assert_eq!(
            h.get_all("docker-content-digest").collect::<Vec<_>>(),
            ["sha256:cd"]
        );
    }

    #[test]
    fn statuses_map_to_failure_kinds() {
        assert_eq!(status_failure(401, "x", "").kind, FailureKind::Denied);
        assert_eq!(status_failure(404, "x", "").kind, FailureKind::NotFound);
        let busy = status_failure(429, "x", "slow down");
        assert_eq!(busy.kind, FailureKind::Unavailable);
        assert!(busy.retryable && busy.message.ends_with("HTTP 429: slow down"));
        assert_eq!(status_failure(400, "x", "").kind, FailureKind::InvalidInput);
    }
}
