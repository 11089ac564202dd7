//! How a registry is authenticated: its `WWW-Authenticate` challenge answered with Basic credentials or a bearer
//! token from its realm, credentials only from granted secrets and never in a message.

use std::collections::HashMap;

use respawn_plugin_sdk::http::Request;
use respawn_plugin_sdk::{Failure, FailureKind};
use serde::Deserialize;

use super::{MAX_DOCUMENT, Registry, Scheme};

impl Registry {
    pub(super) fn denied(&self) -> Failure {
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

    pub(super) fn authorize(&self, request: Request, scope: &str) -> Request {
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
    pub(super) fn learn(&mut self, challenge: &str, scope: &str) -> Result<(), Failure> {
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
pub(super) fn encode(value: &str) -> String {
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
pub(super) fn base64(text: &str) -> String {
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
}
