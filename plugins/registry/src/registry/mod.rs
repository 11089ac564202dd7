//! One registry as the distribution API sees it: where it is, how to authenticate, and the requests the provider
//! makes (manifests, blobs, uploads, tags, referrers), each answer checked against the digest it claims.

use std::collections::HashMap;
use std::io::Read;

use respawn_plugin_sdk::http::{self, Client, Request, StreamingResponse, redact_query};
use respawn_plugin_sdk::{Failure, secrets};
use serde::Deserialize;

use crate::digest::{Digest, sha256_digest};
use crate::manifest::ACCEPT;

mod auth;

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
        if response.status == 401 {
            // A token that expired during a long upload: the step's retry gets a new one and continues.
            return Err(Failure::unavailable(format!(
                "PATCH upload {}/{repo} at {offset}: the registry asks for authentication again",
                self.host
            )));
        }
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
            // A retried PUT whose first try was committed finds the upload gone; the blob says whether it was.
            404 if self.blob_size(repo, digest)?.is_some() => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_read_as_their_last_byte() {
        assert_eq!(range_end(Some("0-1048575")), Some(1_048_575));
        assert_eq!(range_end(Some("bytes=0-9")), Some(9));
        assert_eq!(range_end(None), None);
    }
}
