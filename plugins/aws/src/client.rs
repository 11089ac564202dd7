//! Signed calls to EC2, RDS (the Query protocol: a form POST, an XML answer) and Route 53 (REST with XML), with
//! AWS's error codes mapped to failure kinds and throttling retried with backoff.
//!
//! Credentials come from granted secrets only and are scrubbed from every message this module builds, including
//! the error documents it quotes.

use std::time::Duration;

use respawn_plugin_sdk::http::{Client, Request, Retry};
use respawn_plugin_sdk::{Failure, FailureKind, log, secrets};
use serde::Deserialize;

use crate::sigv4::{self, Credentials, Unsigned};

/// Tries of one call in all: AWS asks clients to back off when throttled, and a DR run has minutes, not hours.
const ATTEMPTS: u32 = 6;
/// First wait after a throttled or unavailable answer; doubles each try (0.2, 0.4, … 3.2 s: 6.2 s in all).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Largest answer read: Describe* pages are tens of KiB.
const MAX_ANSWER: u64 = 8 << 20;

/// Which API a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ec2,
    Rds,
    Route53,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Rds => "rds",
            Service::Route53 => "route53",
        }
    }
    fn version(self) -> &'static str {
        match self {
            Service::Ec2 => "2016-11-15",
            Service::Rds => "2014-10-31",
            Service::Route53 => "2013-04-01",
        }
    }
}

/// Where the credentials come from: the names of granted secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSecrets {
    #[serde(default = "default_access_key")]
    pub access_key_secret: String,
    #[serde(default = "default_secret_key")]
    pub secret_key_secret: String,
    #[serde(default)]
    pub session_token_secret: Option<String>,
}

impl Default for CredentialSecrets {
    fn default() -> CredentialSecrets {
        CredentialSecrets {
            access_key_secret: default_access_key(),
            secret_key_secret: default_secret_key(),
            session_token_secret: None,
        }
    }
}

fn default_access_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// A signed-request client for one region (and an endpoint override, e.g. moto or a VPC endpoint).
pub struct Aws {
    credentials: Credentials,
    pub region: String,
    endpoint: Option<String>,
    /// Send read-only Query actions as GET (plan: the runner allows a plan only GET and HEAD).
    reads_as_get: bool,
}

impl Aws {
    pub fn connect(
        region: &str,
        endpoint: Option<&str>,
        names: &CredentialSecrets,
    ) -> Result<Aws, Failure> {
        // An empty override (a workflow param left blank for real AWS) means AWS's own endpoints.
        let endpoint = endpoint.filter(|e| !e.is_empty());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Failure::invalid_input(format!(
                "region `{region}`: expected a region name such as us-west-2"
            )));
        }
        if let Some(e) = endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Failure::invalid_input(format!(
                "endpoint `{e}`: expected http://host[:port] or https://host[:port]"
            )));
        }
        let credentials = Credentials {
            access_key: secrets::get(&names.access_key_secret)?,
            secret_key: secrets::get(&names.secret_key_secret)?,
            session_token: match &names.session_token_secret {
                Some(name) => Some(secrets::get(name)?),
                None => None,
            },
        };
        Ok(Aws {
            credentials,
            region: region.to_string(),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            reads_as_get: false,
        })
    }

    /// Read-only Query actions go as GET from now on: what plan needs. Other phases POST every action, as AWS's
    /// SDKs do (moto's signature check, for one, only understands a Query call as a form POST).
    pub fn reading_with_get(mut self, yes: bool) -> Aws {
        self.reads_as_get = yes;
        self
    }

    /// The same credentials and endpoint, another region (the source of a cross-region copy).
    pub fn in_region(&self, region: &str) -> Aws {
        Aws {
            credentials: self.credentials.clone(),
            region: region.to_string(),
            endpoint: self.endpoint.clone(),
            reads_as_get: self.reads_as_get,
        }
    }

    /// Where calls to `service` go.
    pub fn base_url(&self, service: Service) -> String {
        match (&self.endpoint, service) {
            (Some(e), _) => e.clone(),
            (None, Service::Route53) => "https://route53.amazonaws.com".into(),
            (None, s) => format!("https://{}.{}.amazonaws.com", s.signing_name(), self.region),
        }
    }

    /// A Query-protocol action (EC2, RDS) with its parameters; the answer's XML. A form POST, except read-only
    /// actions (Describe*, List*, Get*) in plan: those go as GET with the parameters in the query string, which
    /// both APIs accept, since the runner allows a plan only GET and HEAD.
    pub fn query(
        &self,
        service: Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, Failure> {
        let mut all = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), service.version().to_string()),
        ];
        all.extend(params.iter().cloned());
        let what = format!("{} {action}", service.signing_name());
        if self.reads_as_get && is_read_only(action) {
            return self.call(service, "GET", "/", &all, Vec::new(), Vec::new(), &what);
        }
        let form = all
            .iter()
            .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k), sigv4::uri_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let headers = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        self.call(service, "POST", "/", &[], headers, form.into_bytes(), &what)
    }

    /// A Route 53 REST call: `path` under `/2013-04-01`, the answer's XML.
    pub fn route53(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<String>,
    ) -> Result<String, Failure> {
        let headers = match body {
            Some(_) => vec![("content-type".to_string(), "application/xml".to_string())],
            None => Vec::new(),
        };
        self.call(
            Service::Route53,
            method,
            &format!("/{}{path}", Service::Route53.version()),
            query,
            headers,
            body.unwrap_or_default().into_bytes(),
            &format!("route53 {method} {path}"),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        service: Service,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
        what: &str,
    ) -> Result<String, Failure> {
        let base = self.base_url(service);
        let host = base.split_once("://").map_or(base.as_str(), |(_, h)| h);
        // Route 53 is global: it signs for us-east-1 wherever the step runs.
        let region = match service {
            Service::Route53 => "us-east-1",
            _ => self.region.as_str(),
        };
        let mut url = format!("{base}{path}");
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k), sigv4::uri_encode(v)))
                .collect();
            url.push('?');
            url.push_str(&q.join("&"));
        }
        // Our own retries: a throttled answer is HTTP 400 (ThrottlingException), which the SDK client does not
        // retry, and each try needs a fresh signature.
        let client = Client {
            max_redirects: 0,
            retry: Retry::none(),
            ..Client::default()
        };
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            let signed = sigv4::sign(
                &Unsigned {
                    method,
                    host,
                    path,
                    query,
                    headers: &headers,
                    payload: &payload,
                },
                &self.credentials,
                region,
                service.signing_name(),
                &sigv4::amz_date(sigv4::now()),
            );
            let mut request = Request::new(method, &url);
            for (n, v) in headers.iter().chain(signed.iter()) {
                request = request.header(n, v.clone());
            }
            if !payload.is_empty() {
                request = request.body(payload.clone());
            }
            let failure = match client.fetch(request, MAX_ANSWER) {
                Ok(response) if (200..300).contains(&response.status) => {
                    return String::from_utf8(response.body).map_err(|_| {
                        Failure::internal(format!("{what}: the answer is not UTF-8"))
                    });
                }
                Ok(response) => {
                    let body = String::from_utf8_lossy(&response.body).to_string();
                    self.failure(what, response.status, &body)
                }
                Err(f) => Failure::new(f.kind, self.scrub(&format!("{what}: {}", f.message))),
            };
            if !failure.retryable || attempt == ATTEMPTS {
                return Err(failure);
            }
            let wait = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            log::info(&format!(
                "{}; try {} of {ATTEMPTS} in {wait:?}",
                failure.message,
                attempt + 1
            ));
            std::thread::sleep(wait);
            last = Some(failure);
        }
        Err(last.unwrap_or_else(|| Failure::internal(format!("{what}: no try was made"))))
    }

    /// The failure an AWS error answer stands for, from its error code (the HTTP status when it has none).
    fn failure(&self, what: &str, status: u16, body: &str) -> Failure {
        let code = xml_text(body, "Code").unwrap_or_default();
        let message = xml_text(body, "Message").unwrap_or_default();
        let kind = error_kind(status, &code);
        let detail = match (code.is_empty(), message.is_empty()) {
            (true, _) => body.chars().take(300).collect::<String>(),
            (false, true) => code.clone(),
            (false, false) => format!("{code}: {message}"),
        };
        let text = self.scrub(&format!("{what}: HTTP {status}: {}", detail.trim()));
        Failure::new(kind, text)
    }

    /// `text` with every credential value replaced, so no message carries one.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let c = &self.credentials;
        for value in [
            Some(&c.secret_key),
            Some(&c.access_key),
            c.session_token.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if value.len() >= 4 {
                out = out.replace(value.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// Whether an action only reads (and so may run in plan).
pub fn is_read_only(action: &str) -> bool {
    ["Describe", "List", "Get"]
        .iter()
        .any(|p| action.starts_with(p))
}

/// Failure kind of an AWS error code, falling back on the HTTP status.
pub fn error_kind(status: u16, code: &str) -> FailureKind {
    const DENIED: &[&str] = &[
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    ];
    const BUSY: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    ];
    if DENIED.contains(&code) {
        FailureKind::Denied
    } else if BUSY.contains(&code) {
        FailureKind::Unavailable
    } else if code.ends_with("NotFound")
        || code.ends_with("NotFoundFault")
        || code.ends_with(".NotFound")
        || code.starts_with("NoSuch")
    {
        FailureKind::NotFound
    } else if code.ends_with("AlreadyExists")
        || code.ends_with("AlreadyExistsFault")
        || code.ends_with(".Duplicate")
    {
        FailureKind::Conflict
    } else {
        match status {
            401 | 403 => FailureKind::Denied,
            404 => FailureKind::NotFound,
            409 => FailureKind::Conflict,
            429 | 500..=599 => FailureKind::Unavailable,
            _ => FailureKind::InvalidInput,
        }
    }
}

/// The text of the first element named `name` anywhere in `xml`.
pub fn xml_text(xml: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .find(|n| n.tag_name().name() == name)
        .and_then(|n| n.text())
        .map(str::to_string)
}

/// Parses an answer; a malformed one is `internal` (AWS or the endpoint is not what we think).
pub fn parse(xml: &str) -> Result<roxmltree::Document<'_>, Failure> {
    roxmltree::Document::parse(xml)
        .map_err(|e| Failure::internal(format!("an answer is not XML: {e}")))
}

/// Navigation over an answer's tree by element names.
pub trait NodeExt<'a> {
    fn child(&self, name: &str) -> Option<roxmltree::Node<'a, 'a>>;
    fn text_of(&self, name: &str) -> Option<String>;
    /// `item`/`member` children of the child `name` (EC2 and RDS lists).
    fn list(&self, name: &str) -> Vec<roxmltree::Node<'a, 'a>>;
}

impl<'a> NodeExt<'a> for roxmltree::Node<'a, 'a> {
    fn child(&self, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
        self.children().find(|n| n.tag_name().name() == name)
    }
    fn text_of(&self, name: &str) -> Option<String> {
        self.child(name)
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
    }
    fn list(&self, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        self.child(name)
            .map(|l| l.children().filter(|n| n.is_element()).collect())
            .unwrap_or_default()
    }
}

/// Every element named `name` in the document, in order.
pub fn all<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.tag_name().name() == name)
        .collect()
}

/// EC2/RDS tags of a resource node (`tagSet/item/{key,value}` or `TagList/Tag/{Key,Value}`).
pub fn tags_of(node: &roxmltree::Node) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for list in ["tagSet", "TagList"] {
        for tag in node.list(list) {
            let key = tag.text_of("key").or_else(|| tag.text_of("Key"));
            let value = tag.text_of("value").or_else(|| tag.text_of("Value"));
            if let Some(k) = key {
                out.push((k, value.unwrap_or_default()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_codes_map_to_failure_kinds() {
        assert_eq!(
            error_kind(400, "InvalidAMIID.NotFound"),
            FailureKind::NotFound
        );
        assert_eq!(error_kind(404, "DBInstanceNotFound"), FailureKind::NotFound);
        assert_eq!(error_kind(401, "AuthFailure"), FailureKind::Denied);
        assert_eq!(error_kind(403, "InvalidClientTokenId"), FailureKind::Denied);
        assert_eq!(
            error_kind(400, "ThrottlingException"),
            FailureKind::Unavailable
        );
        assert_eq!(error_kind(503, ""), FailureKind::Unavailable);
        assert_eq!(
            error_kind(400, "DBInstanceAlreadyExists"),
            FailureKind::Conflict
        );
        assert_eq!(
            error_kind(400, "InvalidParameterValue"),
            FailureKind::InvalidInput
        );
    }

    #[test]
    fn error_documents_give_their_code_and_message() {
        let ec2 = "<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-1]' does not exist</Message></Error></Errors></Response>";
        assert_eq!(
            xml_text(ec2, "Code").as_deref(),
            Some("InvalidAMIID.NotFound")
        );
        let rds = "<ErrorResponse><Error><Type>Sender</Type><Code>DBInstanceNotFound</Code><Message>x</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(rds, "Code").as_deref(), Some("DBInstanceNotFound"));
    }
}
