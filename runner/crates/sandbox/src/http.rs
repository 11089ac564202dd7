//! The http capability: an allowlist of `scheme://host[:port]` patterns. `*` matches one whole host label or the
//! whole port; a pattern without a port means the scheme's default port. `tcp://host:port` entries allow TCP
//! probes. In the plan phase only `GET` and `HEAD` are allowed.

use crate::{Capability, Declared, Denial, Problem};

pub struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    type Grant = Vec<String>;

    fn validate(grant: &Self::Grant, _: &Declared<'_>) -> Vec<Problem> {
        grant
            .iter()
            .enumerate()
            .filter_map(|(i, pattern)| {
                check_pattern(pattern).err().map(|why| {
                    Problem::at(
                        format!("http[{i}]"),
                        format!("http grant `{pattern}`: {why}"),
                    )
                })
            })
            .collect()
    }
}

/// Whether a `method` request to `scheme://host:port` (its `path` for the message) is allowed by `grant`;
/// `read_only` in the plan phase.
pub fn check_request(
    grant: &[String],
    method: &str,
    (scheme, host, port): (&str, &str, u16),
    path: &str,
    read_only: bool,
) -> Result<(), Denial> {
    let asked = format!("{method} {scheme}://{host}:{port}{path}");
    if !allowed(grant, scheme, host, port) {
        return Err(Denial::new(
            Http::NAME,
            format!("{asked} is not in the step's http grant"),
        ));
    }
    if read_only && method != "GET" && method != "HEAD" {
        return Err(Denial::new(
            Http::NAME,
            format!("{asked}: the plan phase may only GET or HEAD"),
        ));
    }
    Ok(())
}

/// Whether a TCP probe of `host:port` is allowed by a `tcp://` entry of `grant`.
pub fn check_tcp(grant: &[String], host: &str, port: u16) -> Result<(), Denial> {
    if allowed(grant, "tcp", host, port) {
        Ok(())
    } else {
        Err(Denial::new(
            Http::NAME,
            format!("tcp://{host}:{port} is not in the step's http grant"),
        ))
    }
}

/// Whether `scheme://host:port` is allowed by any pattern of `grant`.
pub fn allowed(grant: &[String], scheme: &str, host: &str, port: u16) -> bool {
    grant
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

/// Checks `scheme://host[:port]` where host and port may be `*`. The scheme is `http` or `https`, or `tcp` with a
/// required port (the host allows plain TCP connections, e.g. probes, to such entries).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    const FORM: &str = "expected scheme://host[:port] with no path";
    let (scheme, rest) = pattern.split_once("://").ok_or(FORM)?;
    if !matches!(scheme, "http" | "https" | "tcp") {
        return Err(format!("scheme must be http, https or tcp, not `{scheme}`"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(FORM.into());
    }
    if rest.contains('@') {
        return Err("expected scheme://host[:port] without user info".into());
    }
    // `[::1]:8080`: an IPv6 host is bracketed, and its colons are not the port separator.
    let (host, port) = match rest.strip_prefix('[') {
        Some(inner) => {
            let (addr, after) = inner
                .split_once(']')
                .ok_or("unclosed `[` in an IPv6 host")?;
            if addr.is_empty()
                || !addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(format!("`[{addr}]` is not an IPv6 address"));
            }
            match after {
                "" => (rest, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (&rest[..addr.len() + 2], Some(p)),
                    None => return Err(FORM.into()),
                },
            }
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    match port {
        Some(p) if p != "*" && p.parse::<u16>().is_err() => {
            Err(format!("port `{p}` must be a number or `*`"))
        }
        None if scheme == "tcp" => Err(format!(
            "a tcp grant needs a port, e.g. tcp://{host}:5432 or tcp://{host}:*"
        )),
        _ => Ok(()),
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

    #[test]
    fn the_plan_phase_may_only_read() {
        let g = vec!["http://127.0.0.1:*".to_string()];
        let target = ("http", "127.0.0.1", 8080);
        assert!(check_request(&g, "GET", target, "/", true).is_ok());
        let denial = check_request(&g, "POST", target, "/x", true).unwrap_err();
        assert_eq!(
            denial.to_string(),
            "http denied: POST http://127.0.0.1:8080/x: the plan phase may only GET or HEAD"
        );
        assert!(check_request(&g, "POST", target, "/x", false).is_ok());
    }

    #[test]
    fn patterns() {
        for ok in [
            "http://127.0.0.1:*",
            "https://*.example.com:443",
            "http://example.com",
            "http://[::1]:8080",
            "tcp://db:5432",
            "tcp://*:*",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://127.0.0.1:8080/health", "with no path"),
            ("http://example.com?x=1", "with no path"),
            ("ftp://example.com", "scheme must be http, https or tcp"),
            ("tcp://db", "a tcp grant needs a port"),
            ("http://host:port", "port `port` must be a number"),
            ("http://user@host", "without user info"),
            ("http://:80", "the host is missing"),
            ("example.com", "expected scheme://host[:port]"),
        ] {
            let err = check_pattern(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
