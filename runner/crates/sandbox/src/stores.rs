//! The stores capability: named stores, each granted `read` or `write` (`write` implies read), optionally under
//! a key prefix. Writes are refused in the plan phase, and no key may climb out with `..`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_GET_RANGE_BYTES, Value};
use crate::{Capability, Declared, Denial, Problem};

pub struct Stores;

impl Capability for Stores {
    const NAME: &'static str = "stores";
    type Grant = BTreeMap<String, StoreGrant>;

    fn validate(grant: &Self::Grant, declared: &Declared<'_>) -> Vec<Problem> {
        grant
            .keys()
            .filter(|name| !declared.stores.contains(&name.as_str()))
            .map(|name| {
                Problem::at_key(
                    format!("stores.{name}"),
                    format!("grant names undeclared store `{name}`"),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreAccess {
    Read,
    Write,
}

/// A store grant: `read`, `write`, or `{ access: read, prefix: images/ }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreGrant {
    pub access: StoreAccess,
    /// Restricts the step to keys under this prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// What a request does with a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// Whether `key` of `store` may be read or written by a step with `grant`; `read_only` in the plan phase.
pub fn check(
    grant: &BTreeMap<String, StoreGrant>,
    store: &str,
    key: &str,
    need: Need,
    read_only: bool,
) -> Result<(), Denial> {
    let verb = if need == Need::Write { "write" } else { "read" };
    let deny = |why: String| Err(Denial::new(Stores::NAME, why));
    let Some(grant) = grant.get(store) else {
        return deny(format!(
            "{verb} {store}:{key}: store `{store}` is not granted"
        ));
    };
    if need == Need::Write && grant.access != StoreAccess::Write {
        return deny(format!(
            "write {store}:{key}: store `{store}` is granted read only"
        ));
    }
    if need == Need::Write && read_only {
        return deny(format!("write {store}:{key}: the plan phase is read-only"));
    }
    if let Some(prefix) = &grant.prefix
        && !under(key, prefix)
    {
        return deny(format!(
            "{verb} {store}:{key}: outside the granted prefix `{prefix}`"
        ));
    }
    if key.split('/').any(|segment| segment == "..") {
        return deny(format!("{verb} {store}:{key}: `..` is not allowed in keys"));
    }
    Ok(())
}

/// Whether a `stores.get-range` of `length` bytes may be asked for: at most [`MAX_GET_RANGE_BYTES`]. The refusal
/// (an `invalid-input` failure, not a denial) names the cap.
pub fn check_range_length(store: &str, key: &str, length: u64) -> Result<(), String> {
    if length > MAX_GET_RANGE_BYTES {
        return Err(format!(
            "{store}:{key}: stores.get-range reads at most {MAX_GET_RANGE_BYTES} bytes ({}) per call, asked for {length}",
            Value::Bytes(MAX_GET_RANGE_BYTES)
        ));
    }
    Ok(())
}

/// The bytes of an object of `size` bytes that `stores.get-range(offset, length)` returns: fewer at its end, none
/// (an empty range at `size`) from its end on.
pub fn clamp_range(offset: u64, length: u64, size: u64) -> Range<u64> {
    offset.min(size)..offset.saturating_add(length).min(size)
}

/// Whether `key` lies under `prefix` by whole `/`-separated segments: `site/` admits `site/a`; `site` admits
/// `site/a` and the object `site` itself; neither admits `site-prod/a`. An empty prefix admits every key.
fn under(key: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix.ends_with('/') {
        return key.starts_with(prefix);
    }
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl<'de> Deserialize<'de> for StoreGrant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GrantVisitor;
        impl<'de> Visitor<'de> for GrantVisitor {
            type Value = StoreGrant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`read`, `write`, or a map { access: read|write, prefix: PATH }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StoreGrant, E> {
                let access = match v {
                    "read" => StoreAccess::Read,
                    "write" => StoreAccess::Write,
                    other => return Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                };
                Ok(StoreGrant {
                    access,
                    prefix: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StoreGrant, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Full {
                    access: StoreAccess,
                    #[serde(default)]
                    prefix: Option<String>,
                }
                let full = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(StoreGrant {
                    access: full.access,
                    prefix: full.prefix,
                })
            }
        }
        deserializer.deserialize_any(GrantVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_to_the_object_and_capped() {
        assert_eq!(clamp_range(0, 4, 10), 0..4);
        assert_eq!(clamp_range(8, 4, 10), 8..10, "fewer at the end");
        assert_eq!(clamp_range(10, 4, 10), 10..10, "none at the end");
        assert_eq!(clamp_range(99, 4, 10), 10..10, "none past it");
        assert_eq!(clamp_range(3, u64::MAX, 10), 3..10, "no overflow");
        assert!(check_range_length("b", "k", MAX_GET_RANGE_BYTES).is_ok());
        let refused = check_range_length("b", "k", MAX_GET_RANGE_BYTES + 1).unwrap_err();
        assert!(
            refused.contains("b:k") && refused.contains("16 MiB"),
            "{refused}"
        );
    }

    fn grant(access: StoreAccess, prefix: Option<&str>) -> BTreeMap<String, StoreGrant> {
        BTreeMap::from([(
            "b".to_string(),
            StoreGrant {
                access,
                prefix: prefix.map(str::to_string),
            },
        )])
    }

    #[test]
    fn each_refusal_names_the_store_key_and_reason() {
        let read = grant(StoreAccess::Read, None);
        let write = grant(StoreAccess::Write, Some("site/"));
        let cases = [
            (
                &read,
                "c",
                "k",
                Need::Read,
                false,
                "read c:k: store `c` is not granted",
            ),
            (
                &read,
                "b",
                "k",
                Need::Write,
                false,
                "write b:k: store `b` is granted read only",
            ),
            (
                &write,
                "b",
                "site/k",
                Need::Write,
                true,
                "write b:site/k: the plan phase is read-only",
            ),
            (
                &write,
                "b",
                "other/k",
                Need::Read,
                false,
                "read b:other/k: outside the granted prefix `site/`",
            ),
            (
                &write,
                "b",
                "site/../k",
                Need::Read,
                false,
                "read b:site/../k: `..` is not allowed in keys",
            ),
        ];
        for (g, store, key, need, read_only, asked) in cases {
            let denial = check(g, store, key, need, read_only).unwrap_err();
            assert_eq!(denial.capability, "stores");
            assert_eq!(denial.asked, asked);
        }
        assert!(check(&write, "b", "site/k", Need::Write, false).is_ok());
        assert!(check(&read, "b", "k", Need::Read, true).is_ok());
    }

    /// A prefix is a directory, not the start of a name: `site` must not admit `site-prod/…`.
    #[test]
    fn a_prefix_matches_whole_path_segments() {
        let cases: [(&str, &[&str], &[&str]); 2] = [
            (
                "site",
                &["site/a", "site/a/b", "site"],
                &["site-prod/a", "sites", "other/site/a", "sit"],
            ),
            (
                "site/",
                &["site/a", "site/a/b", "site/"],
                &["site-prod/a", "sites", "other/site/a", "site"],
            ),
        ];
        for (prefix, allowed, refused) in cases {
            let g = grant(StoreAccess::Read, Some(prefix));
            for key in allowed {
                assert!(
                    check(&g, "b", key, Need::Read, false).is_ok(),
                    "{prefix} admits {key}"
                );
            }
            for key in refused {
                let denial = check(&g, "b", key, Need::Read, false).unwrap_err();
                assert!(
                    denial.asked.contains("outside the granted prefix"),
                    "{prefix} refuses {key}"
                );
            }
        }
    }
}
