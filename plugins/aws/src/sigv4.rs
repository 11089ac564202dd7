//! AWS Signature Version 4: the `Authorization` header of a request, computed inside the plugin.
//!
//! The algorithm as AWS publishes it: a canonical request (method, path, sorted query, sorted signed headers, the
//! payload's SHA-256), a string to sign naming the credential scope (`date/region/service/aws4_request`), and an
//! HMAC-SHA256 chain from `AWS4` + the secret key through date, region, service and `aws4_request`. The unit tests
//! check it against AWS's own test suite and against botocore's signer.

use sha2::{Digest, Sha256};

/// The keys a request is signed with; from granted secrets only. `Debug` never shows them.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(…)")
    }
}

/// One request as it will be sent: the parts the signature covers.
pub struct Unsigned<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path as it goes on the wire (its characters already URI-encoded where needed).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Headers besides `host`, `x-amz-date` and `x-amz-security-token`, which are added here; all are signed.
    pub headers: &'a [(String, String)],
    pub payload: &'a [u8],
}

/// The headers to add to the request: `x-amz-date`, the session token when there is one, and `authorization`. `amz_date` is `YYYYMMDD'T'HHMMSS'Z'`.
pub fn sign(
    request: &Unsigned,
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let payload_hash = hex(&Sha256::digest(request.payload));
    let mut added = vec![("x-amz-date".to_string(), amz_date.to_string())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .chain(added.iter())
        .map(|(n, v)| (n.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    headers.push(("host".into(), request.host.to_ascii_lowercase()));
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query),
    );
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    added.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key
        ),
    ));
    added
}

/// `x-amz-date` for a time in seconds since the Unix epoch.
pub fn amz_date(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// RFC 3339 (`2024-05-01T12:00:00Z`) for a time in seconds since the Unix epoch.
pub fn rfc3339(epoch_seconds: i64) -> String {
    let d = amz_date(epoch_seconds);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

/// Now, in seconds since the Unix epoch (wasi:clocks' wall clock in the component).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Howard Hinnant's civil-from-days.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as SigV4 asks.
pub fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every service but S3 encodes each path segment once more for the canonical request.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trimmed, inner runs of spaces made one.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HMAC-SHA256 (RFC 2104). Written out rather than taken from the `hmac` crate: that crate turns on digest's `mac`
/// feature, which, unified across the plugins workspace, changes every other builtin's bytes (and locks).
fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes any key length");
    hmac::Mac::update(&mut mac, data);
    hmac::Mac::finalize(mac).into_bytes().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn authorization(headers: &[(String, String)]) -> &str {
        &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        // aws-sig-v4-test-suite/get-vanilla; its request carries no x-amz-content-sha256, so only host and
        // x-amz-date are signed, as here.
        let signed = sign(
            &Unsigned {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                query: &[],
                headers: &[],
                payload: b"",
            },
            &example(),
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            authorization(&signed),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// Signs like the request botocore 1.44's `SigV4Auth` signed at the same moment (its output pasted here).
    fn signed_like_botocore(
        request: Unsigned,
        credentials: &Credentials,
        region: &str,
        service: &str,
    ) -> String {
        authorization(&sign(
            &request,
            credentials,
            region,
            service,
            "20261202T105216Z",
        ))
        .to_string()
    }

    #[test]
    fn query_parameters_sort_like_botocore() {
        let query = [
            ("Param2".to_string(), "value2".to_string()),
            ("Param1".to_string(), "value1".to_string()),
        ];
        let request = Unsigned {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: &query,
            headers: &[],
            payload: b"",
        };
        assert!(
            signed_like_botocore(request, &example(), "us-east-1", "service").ends_with(
                "Signature=f9ab0cb32de3b11e565ffe01ab1e7fb7a1764270f12ce55e687ad7e4072cbb5c"
            )
        );
    }

    #[test]
    fn a_query_api_post_with_a_session_token_signs_like_botocore() {
        let mut credentials = example();
        credentials.session_token = Some("session-token-EXAMPLE".into());
        let headers = [(
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let request = Unsigned {
            method: "POST",
            host: "ec2.us-west-2.amazonaws.com",
            path: "/",
            query: &[],
            headers: &headers,
            payload: b"Action=DescribeImages&ImageId.1=ami-12345678&Version=2016-11-15",
        };
        assert_eq!(
            signed_like_botocore(request, &credentials, "us-west-2", "ec2"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/us-west-2/ec2/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
             Signature=e1a5c6333e536fc38de6ae499887dd21f83d80b3a8253afdf02e686af7bc7a6a"
        );
    }

    #[test]
    fn a_route53_get_with_a_dotted_name_signs_like_botocore() {
        let query = [
            ("name".to_string(), "shop.example.com.".to_string()),
            ("type".to_string(), "A".to_string()),
        ];
        let request = Unsigned {
            method: "GET",
            host: "route53.amazonaws.com",
            path: "/2013-04-01/hostedzone/Z1D633PJN98FT9/rrset",
            query: &query,
            headers: &[],
            payload: b"",
        };
        assert!(
            signed_like_botocore(request, &example(), "us-east-1", "route53").ends_with(
                "Signature=4971ae9101a2467b957b2e34f4e8c9edf2bb304c605fd59607578c2a581a48b0"
            )
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test cases 2 (a short key) and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn dates_format_as_aws_and_rfc_3339() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn credentials_never_show_in_debug() {
        assert_eq!(format!("{:?}", example()), "Credentials(…)");
    }
}
