//! The artifacts a run used, by digest: what an auditor needs to say which versions were restored.
//!
//! Two witnesses record them. The host records every image it restores (`images.unpack`) in the journal's
//! `image-restored` event, with its store, prefix, tag and manifest digest. A plugin declares what it used through
//! its apply outputs, in this shape (docs/plugin-abi.md, "Artifacts"):
//!
//! ```json
//! { "artifacts": [ { "kind": "registry-image", "digest": "sha256:…",
//!                    "source": { "url": "https://dr.example.com", "prefix": "shop/site", "tag": "v1" },
//!                    "created": "2026-05-01T11:00:00Z" } ] }
//! ```
//!
//! ```
//! use respawn_report::artifacts::declared;
//!
//! let outputs = serde_json::json!({ "artifacts": [
//!     { "kind": "database-backup", "digest": "backup-label:0/3000028",
//!       "source": { "url": "s3://user:pw@backups/pg?endpoint=http://127.0.0.1:5055" } } ] });
//! let found = declared("catalog", &outputs).unwrap();
//! assert_eq!(found[0].source.url.as_deref(), Some("s3://backups/pg?endpoint=http://127.0.0.1:5055"));
//! ```

use serde::{Deserialize, Serialize};

/// The output a plugin declares its artifacts in.
pub const OUTPUT: &str = "artifacts";

/// The kinds respawn's own providers declare; a third-party provider may add its own (lowercase, `-`).
pub const KNOWN_KINDS: [&str; 6] = [
    "image",
    "registry-image",
    "database-backup",
    "wal-range",
    "config-template",
    "plugin",
];

/// Longest `kind`, `digest`, `created` or source field a plugin may declare: a digest or an LSN range fits many
/// times over; anything longer is not an identifier.
const MAX_FIELD: usize = 512;

/// Most artifacts one step may declare: a registry replication of many tags fits; more belongs in a manifest.
pub const MAX_PER_STEP: usize = 1000;

/// Who recorded an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Witness {
    /// The runner itself: an image it restored, a plugin it loaded.
    Host,
    /// The step's plugin, through its `artifacts` output.
    Plugin,
}

/// Where an artifact came from. URLs never carry credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A plugin may name one of the workflow's stores instead of a URL: the report shows that store's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// One artifact a run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The step that used it; absent for a plugin, which the run as a whole used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub kind: String,
    pub source: Source,
    /// Manifest digest, backup label or LSN range, template or plugin sha256: whatever names this exact version.
    pub digest: String,
    /// When it was made (an image's `created`, a backup's end), or its recovery time; RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub recorded_by: Witness,
}

/// What a plugin writes in its outputs, before the step and witness are added.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    kind: String,
    digest: String,
    #[serde(default)]
    source: Source,
    #[serde(default)]
    created: Option<String>,
}

/// The artifacts a step's apply outputs declare (none when `artifacts` is absent or null); an error names the
/// entry and what is wrong with it, for a contract failure of the step.
pub fn declared(step: &str, outputs: &serde_json::Value) -> Result<Vec<Artifact>, String> {
    let Some(list) = outputs.get(OUTPUT).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(format!("output `{OUTPUT}` must be a list"));
    };
    if list.len() > MAX_PER_STEP {
        return Err(format!(
            "output `{OUTPUT}` lists {} artifacts; at most {MAX_PER_STEP}",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let d: Declared = serde_json::from_value(item.clone())
            .map_err(|e| format!("output `{OUTPUT}[{i}]`: {e}"))?;
        let kind_ok = !d.kind.is_empty()
            && d.kind.len() <= 64
            && d.kind
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !kind_ok {
            return Err(format!(
                "output `{OUTPUT}[{i}].kind` `{}` must be lowercase letters, digits and `-` (e.g. {})",
                d.kind,
                KNOWN_KINDS.join(", ")
            ));
        }
        let fields = [
            ("digest", Some(&d.digest)),
            ("created", d.created.as_ref()),
            ("source.store", d.source.store.as_ref()),
            ("source.url", d.source.url.as_ref()),
            ("source.prefix", d.source.prefix.as_ref()),
            ("source.tag", d.source.tag.as_ref()),
        ];
        for (name, value) in fields {
            if value.is_some_and(|v| v.len() > MAX_FIELD || v.contains(['\n', '\r'])) {
                return Err(format!(
                    "output `{OUTPUT}[{i}].{name}` must be one line of at most {MAX_FIELD} bytes"
                ));
            }
        }
        if d.digest.trim().is_empty() {
            return Err(format!("output `{OUTPUT}[{i}].digest` is empty"));
        }
        out.push(Artifact {
            step: Some(step.to_string()),
            kind: d.kind,
            source: Source {
                url: d.source.url.as_deref().map(without_credentials),
                ..d.source
            },
            digest: d.digest,
            created: d.created,
            recorded_by: Witness::Plugin,
        });
    }
    Ok(out)
}

/// A store or registry URL as a report may show it: without user or password, and without query parameters that
/// look like credentials (`?access_key=…`, a SAS `sig=…`). What is not a URL is returned as it is.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match authority_and_path.find('/') {
        Some(i) => authority_and_path.split_at(i),
        None => (authority_and_path, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut out = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let key = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
                ![
                    "key",
                    "secret",
                    "token",
                    "password",
                    "sig",
                    "credential",
                    "signature",
                ]
                .iter()
                .any(|word| key.contains(word))
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_report() {
        for (url, shown) in [
            ("file:///srv/backups", "file:///srv/backups"),
            (
                "s3://ak:sk@bucket/p?endpoint=http://h:1",
                "s3://bucket/p?endpoint=http://h:1",
            ),
            (
                "az://c/p?sv=2020&sig=abc&account_key=x&se=1",
                "az://c/p?sv=2020&se=1",
            ),
            ("https://u:p@reg:5102", "https://reg:5102"),
            ("relative/dir", "relative/dir"),
        ] {
            assert_eq!(without_credentials(url), shown, "{url}");
        }
    }

    #[test]
    fn a_malformed_declaration_is_named() {
        let bad = |v: serde_json::Value| {
            declared("s", &serde_json::json!({ "artifacts": v })).unwrap_err()
        };
        assert!(bad(serde_json::json!("x")).contains("must be a list"));
        assert!(
            bad(serde_json::json!([{ "kind": "Image", "digest": "d" }]))
                .contains("artifacts[0].kind")
        );
        assert!(bad(serde_json::json!([{ "kind": "image" }])).contains("digest"));
        assert!(
            bad(serde_json::json!([{ "kind": "image", "digest": "d", "size": 1 }]))
                .contains("size")
        );
        assert!(bad(serde_json::json!([{ "kind": "image", "digest": " " }])).contains("empty"));
        assert!(declared("s", &serde_json::json!({})).unwrap().is_empty());
        assert!(
            declared("s", &serde_json::json!({ "artifacts": null }))
                .unwrap()
                .is_empty()
        );
    }
}
