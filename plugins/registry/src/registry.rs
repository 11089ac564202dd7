//! One registry as the distribution API sees it: where it is, how to authenticate, and the requests the provider
//! makes (manifests, blobs, uploads, tags, referrers), each answer checked against the digest it claims.

use std::collections::HashMap;
use std::io::Read;

use respawn_plugin_sdk::http::{self, Client, Request, StreamingResponse, redact_query};
use respawn_plugin_sdk::{Failure, FailureKind, secrets};
use serde::Deserialize;

use crate::digest::{Digest, sha256_digest};
use crate::manifest::ACCEPT;

/// Largest manifest or token document read into memory.
const MAX_DOCUMENT: u64 = 4 << 20;

/// A registry as a step's params name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host[:port]`, e.g. `registry.example.com` or `127.0.0.1:5000`.
    pub registry: String,
    /// Plain http, only for a registry on loopback (127.0.0.0/8, ::1, localhost).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub auth: Option<AuthParams>,
}

/// Credentials, only ever from granted secrets (a username may be given plainly).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthParams {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub username_secret: Option<String>,
    pub password_secret: String,
}

/// How requests authenticate, learnt from the registry's challenge.
#[derive(Debug, Clone)]
enum Scheme {
    /// Not challenged yet, or anonymous.
    Unknown,
    Basic,
    Bearer,
}

#[derive(Clone)]
pub struct Registry {
    /// `http://host:port` or `https://host`.
    pub base: String,
    /// `host[:port]`, for messages and references.
    pub host: String,
    credentials: Option<(String, String)>,
    scheme: Scheme,
    /// Bearer tokens by scope string.
    tokens: HashMap<String, String>,
    pub client: Client,
}

impl Registry {
    pub fn connect(endpoint: &Endpoint, field: &str) -> Result<Registry, Failure> {
        let host = endpoint.registry.trim().trim_end_matches('/').to_string();
        if host.is_empty() || host.contains("://") || host.contains('/') {
            return Err(Failure::invalid_input(format!(
                "{field}.registry `{host}`: expected host[:port], without a scheme or path"
            )));
        }
        let hostname = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        let loopback = hostname == "localhost" || hostname == "::1" || hostname.starts_with("127.");
        if endpoint.insecure && !loopback {
            return Err(Failure::invalid_input(format!(
                "{field}.insecure: plain http is allowed only for a registry on loopback, not `{host}`"
            )));
        }
        let scheme = if endpoint.insecure { "http" } else { "https" };
        let credentials = match &endpoint.auth {
            None => None,
            Some(auth) => {
                let username = match (&auth.username, &auth.username_secret) {
                    (Some(u), None) => u.clone(),
                    (None, Some(s)) => secrets::get(s)?,
                    _ => {
                        return Err(Failure::invalid_input(format!(
                            "{field}.auth: give exactly one of `username` and `username_secret`"
                        )));
                    }
                };
                Some((username, secrets::get(&auth.password_secret)?))
            }
        };
        Ok(Registry {
            base: format!("{scheme}://{host}"),
            host,
            credentials,
            scheme: Scheme::Unknown,
            tokens: HashMap::new(),
            client: Client::default(),
        })
    }

    /// Sends a request to `path` (or an absolute URL the registry gave), answering an auth challenge once.
    /// `scope` is the token scope a bearer registry needs, e.g. `repository:app:pull,push`.
    pub fn send(
        &mut self,
        build: &dyn Fn() -> Request,
        scope: &str,
    ) -> Result<StreamingResponse, Failure> {
        let response = self.client.send(self.authorize(build(), scope))?;
        if response.status != 401 {
            return Ok(response);
        }
        let challenge = response
            .header("www-authenticate")
            .unwrap_or_default()
            .to_string();
        self.learn(&challenge, scope)?;
        let response = self.client.send(self.authorize(build(), scope))?;
        if response.status == 401 {
            return Err(self.denied());
        }
        Ok(response)
    }

    fn denied(&self) -> Failure {
        match &self.credentials {
            Some((user, _)) => Failure::new(
                FailureKind::Denied,
                format!(
                    "{}: the registry refused the credentials of user `{user}`",
                    self.host
                ),
            ),
            None => Failure::new(
                FailureKind::Denied,
                format!(
                    "{}: the registry asks for credentials and the step gives none (set `auth`)",
                    self.host
                ),
            ),
        }
    }

    fn authorize(&self, request: Request, scope: &str) -> Request {
        match (&self.scheme, &self.credentials) {
            (Scheme::Basic, Some((user, password))) => request.header(
                "Authorization",
                format!("Basic {}", base64(&format!("{user}:{password}"))),
            ),
            (Scheme::Bearer, _) => match self.tokens.get(scope) {
                Some(token) => request.header("Authorization", format!("Bearer {token}")),
                None => request,
            },
            _ => request,
        }
    }

    /// Reads a `WWW-Authenticate` challenge and, for bearer, fetches a token for `scope`.
    fn learn(&mut self, challenge: &str, scope: &str) -> Result<(), Failure> {
        let (kind, params) = parse_challenge(challenge);
        match kind.to_ascii_lowercase().as_str() {
            "basic" => {
                if self.credentials.is_none() || matches!(self.scheme, Scheme::Basic) {
                    return Err(self.denied());
                }
                self.scheme = Scheme::Basic;
                Ok(())
            }
            "bearer" => {
                let realm = params.get("realm").cloned().ok_or_else(|| {
                    Failure::new(
                        FailureKind::Denied,
                        format!("{}: a bearer challenge without a realm", self.host),
                    )
                })?;
                let service = params.get("service").cloned().unwrap_or_default();
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| scope.to_string());
                let token = self.fetch_token(&realm, &service, &scope)?;
                self.scheme = Scheme::Bearer;
                self.tokens.insert(scope.clone(), token.clone());
                // The caller asks again with its own scope string; the challenge's may be spelt differently.
                self.tokens.entry(scope).or_insert(token);
                Ok(())
            }
            _ => Err(Failure::new(
                FailureKind::Denied,
                format!(
                    "{}: unsupported authentication challenge `{kind}`",
                    self.host
                ),
            )),
        }
    }

    fn fetch_token(&mut self, realm: &str, service: &str, scope: &str) -> Result<String, Failure> {
        let mut url = format!("{realm}?service={}", encode(service));
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            url.push_str(&format!("&scope={}", encode(s)));
        }
        let mut request = Request::new("GET", &url);
        if let Some((user, password)) = &self.credentials {
            request = request.header(
                "Authorization",
                format!("Basic {}", base64(&format!("{user}:{password}"))),
            );
        }
        let response = self.client.send(request)?;
        if matches!(response.status, 401 | 403) {
            return Err(self.denied());
        }
        if response.status != 200 {
            return Err(response.failure(&format!("{}: token for {scope}", self.host)));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = response.bytes(MAX_DOCUMENT)?;
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            Failure::unavailable(format!(
                "{}: the token service answered something not a token: {e}",
                self.host
            ))
        })?;
        token.token.or(token.access_token).ok_or_else(|| {
            Failure::unavailable(format!(
                "{}: the token service answered no token",
                self.host
            ))
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A manifest by tag or digest: its bytes, media type and digest. Bytes fetched by digest must hash to it;
    /// by tag, to the `Docker-Content-Digest` the registry states, when it states one.
    pub fn manifest(&mut self, repo: &str, reference: &str) -> Result<Option<Fetched>, Failure> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = pull(repo);
        let response = self.send(
            &|| Request::new("GET", &url).header("Accept", ACCEPT),
            &scope,
        )?;
        if response.status == 404 {
            return Ok(None);
        }
        if response.status != 200 {
            return Err(response.failure(&format!("GET manifest {}/{repo}:{reference}", self.host)));
        }
        let media_type = response
            .header("content-type")
            .unwrap_or_default()
            .to_string();
        let stated = response.header("docker-content-digest").map(str::to_string);
        let bytes = response.bytes(MAX_DOCUMENT)?;
        let digest = sha256_digest(&bytes);
        let claimed = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            stated
        };
        if let Some(claimed) = claimed
            && claimed != digest.as_str()
        {
            return Err(Failure::verification_failed(format!(
                "{}/{repo}: the manifest {reference} the registry sent hashes to {digest}, not {claimed}",
                self.host
            )));
        }
        Ok(Some(Fetched {
            bytes,
            media_type,
            digest,
        }))
    }

    /// HEAD a manifest: its digest when it exists.
    pub fn manifest_exists(
        &mut self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, Failure> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self.send(
            &|| Request::new("HEAD", &url).header("Accept", ACCEPT),
            &pull(repo),
        )?;
        match response.status {
            200 => Ok(response
                .header("docker-content-digest")
                .and_then(|d| Digest::parse(d).ok())
                .or_else(|| Digest::parse(reference).ok())),
            404 => Ok(None),
            _ => Err(response.failure(&format!("HEAD manifest {}/{repo}:{reference}", self.host))),
        }
    }

    pub fn put_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        fetched: &Fetched,
    ) -> Result<(), Failure> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let (bytes, media_type) = (fetched.bytes.clone(), fetched.media_type.clone());
        let response = self.send(
            &|| {
                Request::new("PUT", &url)
                    .header("Content-Type", media_type.clone())
                    .body(bytes.clone())
            },
            &push(repo),
        )?;
        if !matches!(response.status, 200..=202) {
            return Err(response.failure(&format!("PUT manifest {}/{repo}:{reference}", self.host)));
        }
        if let Some(stated) = response.header("docker-content-digest")
            && stated != fetched.digest.as_str()
        {
            return Err(Failure::verification_failed(format!(
                "{}/{repo}: pushed manifest {} but the registry stored {stated}",
                self.host, fetched.digest
            )));
        }
        Ok(())
    }

    /// HEAD a blob: its size when it exists.
    pub fn blob_size(&mut self, repo: &str, digest: &Digest) -> Result<Option<u64>, Failure> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let response = self.send(&|| Request::new("HEAD", &url), &pull(repo))?;
        match response.status {
            200 => {
                if let Some(stated) = response.header("docker-content-digest")
                    && stated != digest.as_str()
                {
                    return Err(Failure::verification_failed(format!(
                        "{}/{repo}: HEAD of blob {digest} answered digest {stated}",
                        self.host
                    )));
                }
                Ok(Some(
                    response
                        .header("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0),
                ))
            }
            404 => Ok(None),
            _ => Err(response.failure(&format!("HEAD blob {}/{repo}@{digest}", self.host))),
        }
    }

    /// `length` bytes of a blob from `offset`, streamed. Asking by range keeps each response within the step's
    /// `limits.http_response` however large the blob; a registry that ignores the range is read past the offset.
    pub fn blob_range(
        &mut self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read>, Failure> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let last = offset + length.max(1) - 1;
        let mut response = self.send(
            &|| Request::new("GET", &url).header("Range", format!("bytes={offset}-{last}")),
            &pull(repo),
        )?;
        match response.status {
            206 => Ok(Box::new(response.take(length))),
            200 => {
                std::io::copy(&mut (&mut response).take(offset), &mut std::io::sink()).map_err(
                    |e| {
                        Failure::unavailable(format!(
                            "{}/{repo}: reading blob {digest}: {e}",
                            self.host
                        ))
                    },
                )?;
                Ok(Box::new(response.take(length)))
            }
            // An empty blob has no byte to ask for.
            416 if length == 0 => Ok(Box::new(std::io::empty())),
            // Retryable: a source cut short may be whole again (a replica catching up, a restore finishing).
            416 => Err(Failure::unavailable(format!(
                "{}/{repo}: blob {digest} ends before byte {offset}, shorter than its manifest says",
                self.host
            ))),
            404 => Err(Failure::not_found(format!(
                "{}/{repo}: blob {digest} is not there",
                self.host
            ))),
            _ => Err(response.failure(&format!("GET blob {}/{repo}@{digest}", self.host))),
        }
    }

    /// The referrers API: `Some(index bytes)` when the registry has it, `None` when it does not.
    pub fn referrers_api(
        &mut self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let response = self.send(
            &|| {
                Request::new("GET", &url)
                    .header("Accept", "application/vnd.oci.image.index.v1+json")
            },
            &pull(repo),
        )?;
        let is_index = response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        match response.status {
            200 if is_index => Ok(Some(response.bytes(MAX_DOCUMENT)?)),
            // No such route (404/405), or something that is not the API: fall back to the tag schema.
            _ => Ok(None),
        }
    }

    pub fn delete_manifest(&mut self, repo: &str, reference: &str) -> Result<Deleted, Failure> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self.send(
            &|| Request::new("DELETE", &url),
            &format!("repository:{repo}:delete"),
        )?;
        match response.status {
            200 | 202 | 204 => Ok(Deleted::Done),
            404 => Ok(Deleted::Gone),
            405 | 400 => Ok(Deleted::Refused(format!(
                "{}: the registry refuses deletes of {repo}:{reference} (HTTP {}; deletes may be disabled)",
                self.host, response.status
            ))),
            _ => {
                Err(response.failure(&format!("DELETE manifest {}/{repo}:{reference}", self.host)))
            }
        }
    }

    /// Starts an upload, or mounts `digest` from `from` when the registry can. Returns the upload URL, or
    /// `None` when the mount made the blob present.
    pub fn start_upload(
        &mut self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<String>, Failure> {
        let path = match mount {
            Some((digest, from)) => format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            None => format!("/v2/{repo}/blobs/uploads/"),
        };
        let url = self.url(&path);
        let scope = match mount {
            Some((_, from)) => format!("{} {}", push(repo), pull(from)),
            None => push(repo),
        };
        let response = self.send(
            &|| Request::new("POST", &url).header("Content-Length", "0"),
            &scope,
        )?;
        match response.status {
            201 if mount.is_some() => Ok(None),
            202 => {
                let location = response.header("location").ok_or_else(|| {
                    Failure::unavailable(format!(
                        "{}/{repo}: an upload started without a Location",
                        self.host
                    ))
                })?;
                Ok(Some(http::resolve(&url, location)?))
            }
            _ => Err(response.failure(&format!("POST upload {}/{repo}", self.host))),
        }
    }

    /// Where an upload stands: the next offset and the upload URL to continue at, or `None` when the registry no
    /// longer has it (dropped, expired, or invalidated by a request cut short).
    pub fn upload_status(
        &mut self,
        repo: &str,
        url: &str,
    ) -> Result<Option<(u64, String)>, Failure> {
        let response = self.send(&|| Request::new("GET", url), &push(repo))?;
        match response.status {
            204 => {
                let next = range_end(response.header("range")).map_or(0, |end| end + 1);
                let location = response
                    .header("location")
                    .and_then(|l| http::resolve(url, l).ok())
                    .unwrap_or_else(|| url.to_string());
                Ok(Some((next, location)))
            }
            _ => Ok(None),
        }
    }

    /// Sends `length` bytes of `body` at `offset` of the upload; returns the URL to continue at.
    pub fn patch(
        &mut self,
        repo: &str,
        url: &str,
        offset: u64,
        length: u64,
        body: impl Read + 'static,
    ) -> Result<String, Failure> {
        let request = Request::new("PATCH", url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{offset}-{}", offset + length - 1))
            .stream(body, Some(length));
        // Credentials were settled by the POST that started the upload; a stream cannot be sent twice.
        let response = self.client.send(self.authorize(request, &push(repo)))?;
        if response.status != 202 {
            return Err(response.failure(&format!("PATCH upload {}/{repo} at {offset}", self.host)));
        }
        if let Some(end) = range_end(response.header("range"))
            && end + 1 != offset + length
        {
            return Err(Failure::unavailable(format!(
                "{}/{repo}: the upload holds {} bytes after a chunk ending at {}",
                self.host,
                end + 1,
                offset + length
            )));
        }
        let location = response.header("location").unwrap_or(url).to_string();
        http::resolve(url, &location)
    }

    /// Ends an upload as `digest`, with `last` bytes sent in the same request (a monolithic upload). The
    /// registry re-hashes what it received and refuses a mismatch.
    pub fn finish_upload(
        &mut self,
        repo: &str,
        url: &str,
        digest: &Digest,
        last: Option<Vec<u8>>,
    ) -> Result<(), Failure> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let target = format!("{url}{sep}digest={digest}");
        let response = match last {
            Some(bytes) => self.send(
                &|| {
                    Request::new("PUT", &target)
                        .header("Content-Type", "application/octet-stream")
                        .body(bytes.clone())
                },
                &push(repo),
            )?,
            None => self.send(
                &|| Request::new("PUT", &target).header("Content-Length", "0"),
                &push(repo),
            )?,
        };
        match response.status {
            201 | 204 => Ok(()),
            400 => Err(Failure::verification_failed(format!(
                "{}/{repo}: the registry refused blob {digest} as uploaded (its bytes do not hash to it): {}",
                self.host,
                redact_query(&response.failure("PUT").message)
            ))),
            _ => Err(response.failure(&format!("PUT upload {}/{repo}@{digest}", self.host))),
        }
    }
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

pub enum Deleted {
    Done,
    Gone,
    Refused(String),
}

pub fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

pub fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// `0-123` (a `Range` header of an upload) as its last offset.
fn range_end(header: Option<&str>) -> Option<u64> {
    let value = header?.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    value.split_once('-')?.1.parse().ok()
}

/// `Bearer realm="…",service="…",scope="…"` as the scheme and its parameters.
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (kind, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    (kind.to_string(), params)
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding, for a Basic credential.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let (kind, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(kind, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).0,
            "Basic"
        );
    }

    #[test]
    fn basic_credentials_encode_as_rfc4648() {
        assert_eq!(base64("respawn:pw"), "cmVzcGF3bjpwdw==");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("abc"), "YWJj");
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn upload_ranges_read_as_their_last_byte() {
        assert_eq!(range_end(Some("0-1048575")), Some(1_048_575));
        assert_eq!(range_end(Some("bytes=0-9")), Some(9));
        assert_eq!(range_end(None), None);
    }
}
