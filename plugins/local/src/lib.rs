//! The `local` provider: a region is a directory, `<root>/<region>/<env>/`, under a directory the workflow
//! grants `rw`. `local/volume` restores a stored image there, `local/config` renders templates there, and
//! `local/service` runs a granted program from it. Plan says what would be made; apply is idempotent; verify
//! checks; destroy removes what apply made and succeeds when nothing is left.

mod config;
mod service;
mod volume;

#[cfg(test)]
mod tests;

use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, export_plugin, operation};
use serde::Deserialize;

struct Local;

impl Plugin for Local {
    fn describe() -> PluginInfo {
        PluginInfo::new("local", env!("CARGO_PKG_VERSION"))
            .operation(operation(
                "volume",
                "Restore an OCI image into a region directory",
                volume::SCHEMA,
            ))
            .operation(operation(
                "config",
                "Render configuration templates into a region directory",
                config::SCHEMA,
            ))
            .operation(operation(
                "service",
                "Run a granted program from a region directory",
                service::SCHEMA,
            ))
            .capability("stores")
            .capability("files")
            .capability("exec")
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let out = match ctx.operation.as_str() {
            "volume" => volume::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            "config" => config::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            "service" => service::invoke(&ctx, respawn_plugin_sdk::params(params)?)?,
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(Local);

/// Where a region's things live: `<root>/<region>/<env>/<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Place {
    /// A directory granted `rw` (files grant) holding every region.
    root: String,
    region: String,
    env: String,
    name: String,
}

impl Place {
    fn check(&self) -> Result<(), Failure> {
        for (field, value) in [
            ("region", &self.region),
            ("env", &self.env),
            ("name", &self.name),
        ] {
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(Failure::invalid_input(format!(
                    "{field} `{value}` must be letters, digits, `-`, `_` or `.`"
                )));
            }
        }
        Ok(())
    }

    fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.root.trim_end_matches('/'),
            self.region,
            self.env,
            self.name
        )
    }

    /// Removes the thing itself (apply clears what a cut-off earlier attempt left this way).
    fn remove(&self) -> Result<(), Failure> {
        let path = self.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Failure::internal(format!("removing {path}: {e}"))),
        }
    }

    /// Removes the thing and then the env and region directories if they are left empty, so a drill leaves no
    /// region directory behind. Destroy only: during apply a sibling step may have just made the env directory
    /// for its own thing, and removing it then fails that step.
    fn remove_and_prune(&self) -> Result<(), Failure> {
        self.remove()?;
        let root = self.root.trim_end_matches('/');
        for dir in [
            format!("{root}/{}/{}", self.region, self.env),
            format!("{root}/{}", self.region),
        ] {
            // Fails (and stays) when not empty: another step's things are still there.
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }
}

pub(crate) fn io_failure(what: &str, e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Failure::new(
            respawn_plugin_sdk::FailureKind::Denied,
            format!("files: {what}: {e}"),
        ),
        std::io::ErrorKind::NotFound => Failure::not_found(format!("{what}: {e}")),
        _ => Failure::internal(format!("{what}: {e}")),
    }
}
