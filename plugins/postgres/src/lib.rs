//! The `postgres` provider: brings a PostgreSQL database back in the DR region and proves it intact.
//!
//! - `postgres/restore`: a base backup from a store plus the WAL archive, recovered to a point in time, served on
//!   a port; `recovery_point` is the last transaction it replayed.
//! - `postgres/promote`: a streaming standby already running in the DR region made primary, the old primary
//!   fenced when it can be reached.
//! - `postgres/check`: `pg_amcheck` and SQL checks with expected results, each reported by name.
//!
//! Programs run as the OS user the step's `exec` grant names (`{ program: …/postgres, user: postgres }`): the
//! server refuses root, and no workflow needs `su`. See docs/providers/postgres.md.

mod check;
mod promote;
mod restore;
mod sql;
mod wal;

#[cfg(test)]
mod tests;

use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, export_plugin, operation};
use serde::Deserialize;

pub(crate) use respawn_plugin_sdk::time::rfc3339_seconds;

struct Postgres;

impl Plugin for Postgres {
    fn describe() -> PluginInfo {
        PluginInfo::new("postgres", env!("CARGO_PKG_VERSION"))
            .operation(operation(
                "restore",
                "Restore a base backup and its WAL to a point in time and serve it",
                restore::SCHEMA,
            ))
            .operation(operation(
                "promote",
                "Promote a streaming standby and fence the old primary",
                promote::SCHEMA,
            ))
            .operation(operation(
                "check",
                "pg_amcheck and SQL checks with expected results",
                check::SCHEMA,
            ))
            .capability("stores")
            .capability("images")
            .capability("files")
            .capability("exec")
            .capability("secrets")
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let out = match ctx.operation.as_str() {
            "restore" => restore::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            "promote" => promote::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            "check" => check::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(Postgres);

pub(crate) fn default_bindir() -> String {
    "/usr/lib/postgresql/15/bin".into()
}

/// Where recovery stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Target {
    /// The end of the archive.
    #[default]
    Latest,
    /// The last transaction committed at or before this time (RFC 3339).
    Time { time: String },
    /// A WAL location, `X/Y` in hex.
    Lsn { lsn: String },
    /// A restore point made with `pg_create_restore_point`.
    Name { name: String },
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            time: Option<String>,
            lsn: Option<String>,
            name: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Map(Map),
        }
        let bad = || {
            serde::de::Error::custom(
                "target: expected `latest`, or exactly one of { time: RFC 3339 }, { lsn: X/Y }, { name: NAME }",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Word(w) if w == "latest" => Ok(Target::Latest),
            Raw::Word(_) => Err(bad()),
            Raw::Map(Map {
                time: Some(time),
                lsn: None,
                name: None,
            }) => Ok(Target::Time { time }),
            Raw::Map(Map {
                time: None,
                lsn: Some(lsn),
                name: None,
            }) => Ok(Target::Lsn { lsn }),
            Raw::Map(Map {
                time: None,
                lsn: None,
                name: Some(name),
            }) => Ok(Target::Name { name }),
            Raw::Map(_) => Err(bad()),
        }
    }
}

impl Target {
    pub fn check(&self) -> Result<(), Failure> {
        match self {
            Target::Latest => Ok(()),
            Target::Time { time } if rfc3339_seconds(time).is_some() => Ok(()),
            Target::Time { time } => Err(Failure::invalid_input(format!(
                "target.time `{time}`: expected an RFC 3339 time with an offset, like 2026-12-02T07:30:00Z"
            ))),
            Target::Lsn { lsn } => {
                let ok = lsn.split_once('/').is_some_and(|(a, b)| {
                    [a, b].iter().all(|h| {
                        !h.is_empty() && h.len() <= 8 && h.bytes().all(|c| c.is_ascii_hexdigit())
                    })
                });
                if ok {
                    Ok(())
                } else {
                    Err(Failure::invalid_input(format!(
                        "target.lsn `{lsn}`: expected a WAL location like 0/3000060"
                    )))
                }
            }
            Target::Name { name }
                if !name.is_empty() && name.len() < 64 && !name.contains('\n') =>
            {
                Ok(())
            }
            Target::Name { name } => Err(Failure::invalid_input(format!(
                "target.name `{name}`: not a restore point name"
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Latest => "the end of the archive".into(),
            Target::Time { time } => format!("time {time}"),
            Target::Lsn { lsn } => format!("LSN {lsn}"),
            Target::Name { name } => format!("restore point `{name}`"),
        }
    }

    /// The server settings for this target.
    pub fn settings(&self) -> Vec<String> {
        match self {
            Target::Latest => Vec::new(),
            // PostgreSQL 15 refuses the `Z` of UTC in recovery_target_time; `+00:00` says the same.
            Target::Time { time } => {
                let time = match time.strip_suffix(['Z', 'z']) {
                    Some(t) => format!("{t}+00:00"),
                    None => time.clone(),
                };
                vec![format!("recovery_target_time={time}")]
            }
            Target::Lsn { lsn } => vec![format!("recovery_target_lsn={lsn}")],
            Target::Name { name } => vec![format!("recovery_target_name={name}")],
        }
    }
}

/// A server timestamp (`2026-12-02 07:30:00.123456+00`, or `… UTC` from a backup label) as RFC 3339.
pub(crate) fn server_time_to_rfc3339(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_suffix(" UTC")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| text.to_string());
    let mut out = text.replacen(' ', "T", 1);
    // `+00` and `+05:30` offsets: RFC 3339 wants hours and minutes.
    if let Some(sign) = out.rfind(['+', '-']).filter(|&i| i > 10) {
        let offset = &out[sign + 1..];
        if offset.len() == 2 {
            out.push_str(":00");
        }
    }
    out
}
