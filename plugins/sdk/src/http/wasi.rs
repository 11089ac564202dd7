//! The transport on `wasi:http/outgoing-handler`: one request out, the response's head back, its body a stream.

use std::io::Read;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

use super::{Body, Exchange, Headers, Timeouts, redact_query};
use crate::{Failure, FailureKind};

/// Bytes asked of the host per read of a response body.
const READ_CHUNK: u64 = 1 << 20;

pub(super) fn send(
    method: &str,
    url: &str,
    headers: &Headers,
    body: Body,
    timeouts: &Timeouts,
) -> Result<Exchange, Failure> {
    let shown = redact_query(url);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Failure::invalid_input(format!("bad url `{shown}`")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        },
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .0
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    let length = match &body {
        Body::Empty => None,
        Body::Bytes(b) => Some(b.len() as u64),
        Body::Stream { length, .. } => *length,
    };
    if let Some(length) = length
        && !entries.iter().any(|(n, _)| n == "content-length")
        && !(length == 0 && matches!(method, "GET" | "HEAD" | "DELETE"))
    {
        entries.push(("content-length".into(), length.to_string().into_bytes()));
    }
    let fields = Fields::from_list(&entries).map_err(|e| {
        Failure::invalid_input(format!(
            "{method} {shown}: a request header is not valid HTTP: {e:?}"
        ))
    })?;
    let req = OutgoingRequest::new(fields);
    let bad = |what: &str| Failure::invalid_input(format!("bad {what} in `{shown}`"));
    let method_value = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.into()),
    };
    req.set_method(&method_value).map_err(|_| bad("method"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.into()),
    };
    req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
    req.set_authority(Some(authority))
        .map_err(|_| bad("authority"))?;
    req.set_path_with_query(Some(&path))
        .map_err(|_| bad("path"))?;
    let options = RequestOptions::new();
    let nanos = |d: std::time::Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    if let Some(d) = timeouts.connect {
        let _ = options.set_connect_timeout(Some(nanos(d)));
    }
    if let Some(d) = timeouts.first_byte {
        let _ = options.set_first_byte_timeout(Some(nanos(d)));
    }
    if let Some(d) = timeouts.between_bytes {
        let _ = options.set_between_bytes_timeout(Some(nanos(d)));
    }
    let out_body = req
        .body()
        .map_err(|_| Failure::internal("request body taken twice"))?;
    // Hand the request over before writing its body, so a large body flows while it is written rather than
    // filling the host's buffer first.
    let future =
        outgoing_handler::handle(req, Some(options)).map_err(|e| map_error(method, shown, e))?;
    let written = {
        let stream = out_body
            .write()
            .map_err(|_| Failure::internal("request body stream"))?;
        let result = match body {
            Body::Empty => Ok(()),
            Body::Bytes(bytes) => write_all(&stream, &bytes),
            Body::Stream { mut reader, .. } => copy_into(&mut reader, &stream),
        };
        drop(stream);
        result
    };
    let response = match written {
        Ok(()) => {
            OutgoingBody::finish(out_body, None).map_err(|e| map_error(method, shown, e))?;
            wait(&future, method, shown)?
        }
        // The host may have closed the body stream because the request is complete (all of `Content-Length`
        // written) or because the server already answered; either way the answer, if any, says what happened.
        Err(why) => {
            let _ = OutgoingBody::finish(out_body, None);
            match wait(&future, method, shown) {
                Ok(response) => response,
                Err(failure) if failure.kind == FailureKind::Denied => return Err(failure),
                Err(failure) => {
                    return Err(Failure::unavailable(format!(
                        "{method} {shown}: sending the body: {why} ({})",
                        failure.message
                    )));
                }
            }
        }
    };
    let status = response.status();
    let headers = Headers(
        response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    );
    let incoming = response
        .consume()
        .map_err(|_| Failure::internal("response body taken twice"))?;
    let stream = incoming
        .stream()
        .map_err(|_| Failure::internal("response body stream"))?;
    Ok(Exchange {
        status,
        headers,
        body: Box::new(BodyReader {
            stream,
            _body: incoming,
            _response: response,
        }),
    })
}

/// A response body as `Read`. Field order is drop order: the stream goes before the body that owns it.
struct BodyReader {
    stream: InputStream,
    _body: IncomingBody,
    _response: wasi::http::types::IncomingResponse,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self
                .stream
                .blocking_read((buf.len() as u64).min(READ_CHUNK))
            {
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(StreamError::LastOperationFailed(e)) => {
                    let why = match wasi::http::types::http_error_code(&e) {
                        Some(ErrorCode::HttpResponseBodySize(limit)) => format!(
                            "the response is larger than the step's limits.http_response ({} bytes)",
                            limit.unwrap_or_default()
                        ),
                        Some(code) => format!("{code:?}"),
                        None => e.to_debug_string(),
                    };
                    return Err(std::io::Error::other(why));
                }
            }
        }
    }
}

fn wait(
    future: &wasi::http::types::FutureIncomingResponse,
    method: &str,
    url: &str,
) -> Result<wasi::http::types::IncomingResponse, Failure> {
    future.subscribe().block();
    future
        .get()
        .ok_or_else(|| Failure::internal("response not ready"))?
        .map_err(|_| Failure::internal("response taken twice"))?
        .map_err(|e| map_error(method, url, e))
}

fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        let permitted = loop {
            match stream.check_write() {
                Ok(0) => stream.subscribe().block(),
                Ok(n) => break n,
                Err(e) => return Err(format!("{e:?}")),
            }
        };
        let n = bytes.len().min(permitted as usize);
        stream.write(&bytes[..n]).map_err(|e| format!("{e:?}"))?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush().map_err(|e| format!("{e:?}"))
}

fn copy_into(reader: &mut dyn Read, stream: &OutputStream) -> Result<(), String> {
    let mut buf = vec![0u8; READ_CHUNK as usize];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the body to send: {e}")),
        };
        write_all(stream, &buf[..n])?;
    }
    Ok(())
}

fn map_error(method: &str, url: &str, e: ErrorCode) -> Failure {
    match e {
        ErrorCode::HttpRequestDenied => Failure::new(
            FailureKind::Denied,
            format!("http: {method} {url} denied (not in the step's http grant)"),
        ),
        ErrorCode::InternalError(Some(m)) if m.contains("denied") => {
            Failure::new(FailureKind::Denied, format!("http: {m}"))
        }
        ErrorCode::DnsError(_) | ErrorCode::ConnectionRefused | ErrorCode::ConnectionTimeout => {
            Failure::unavailable(format!("{method} {url}: {e:?}"))
        }
        other => Failure::unavailable(format!("{method} {url}: {other:?}")),
    }
}
