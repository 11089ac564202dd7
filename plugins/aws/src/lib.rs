//! The `aws` provider: region failover on AWS, calling the APIs itself with SigV4-signed requests over wasi:http.
//!
//! - `aws/copy-image` copies an AMI (and its snapshots) from a source region to the target region;
//! - `aws/launch` runs instances from an image in the target region;
//! - `aws/rds-restore` restores a DB instance to a point in time, or promotes a cross-region read replica;
//! - `aws/dns-failover` points a Route 53 record at the DR endpoint, and a drill's teardown puts it back.
//!
//! Plan calls only Describe*/List*/Get* and says what apply would create or change. Apply keeps each create's
//! idempotency token (and the name or tag it will be found by) in step state before the create call, so a retried
//! or resumed step adopts what an earlier attempt made instead of making a second one. Destroy removes what this
//! run created, found from step state and then from the `respawn:run` / `respawn:step` tags. Credentials come only
//! from granted secrets; the region and an endpoint override (moto, VPC endpoints) are params. See
//! docs/providers/aws.md.

mod client;
mod dns;
mod image;
mod launch;
mod rds;
mod schema;
mod sigv4;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, export_plugin, log, state};
use sha2::{Digest, Sha256};

use crate::client::{Aws, CredentialSecrets};

struct AwsProvider;

impl Plugin for AwsProvider {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("aws", env!("CARGO_PKG_VERSION"));
        for (name, description, params) in schema::OPERATIONS {
            info = info.operation(respawn_plugin_sdk::operation(
                name,
                description,
                &schema::with_connection(params),
            ));
        }
        info.capability("http").capability("secrets")
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let out = match ctx.operation.as_str() {
            "copy-image" => image::run(&ctx, respawn_plugin_sdk::params(params)?)?,
            "launch" => launch::run(&ctx, respawn_plugin_sdk::params(params)?)?,
            "rds-restore" => rds::run(&ctx, respawn_plugin_sdk::params(params)?)?,
            "dns-failover" => dns::run(&ctx, respawn_plugin_sdk::params(params)?)?,
            _ => return Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        };
        respawn_plugin_sdk::outputs(&out)
    }
}

export_plugin!(AwsProvider);

/// How long apply waits for AWS by default (an image copy of a large volume takes tens of minutes); the step's
/// `timeout` ends it sooner.
const DEFAULT_WAIT_SECONDS: u64 = 3600;
/// First wait between two polls: moto is done at once, AWS in seconds to minutes.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// Longest wait between two polls: the describe calls stay far below API rate limits.
const MAX_POLL: Duration = Duration::from_secs(15);
/// A waiting step says how long it has waited at least this often, so a long copy does not look hung.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

pub(crate) fn default_wait() -> u64 {
    DEFAULT_WAIT_SECONDS
}

/// The params every operation shares: where, as whom, how long to wait.
pub(crate) struct Connection<'a> {
    pub phase: respawn_plugin_sdk::Phase,
    pub region: &'a str,
    pub endpoint: Option<&'a str>,
    pub credentials: &'a CredentialSecrets,
}

impl Connection<'_> {
    pub fn connect(&self) -> Result<Aws, Failure> {
        Ok(Aws::connect(self.region, self.endpoint, self.credentials)?
            .reading_with_get(self.phase == respawn_plugin_sdk::Phase::Plan))
    }
}

/// What one poll saw.
pub(crate) enum Poll<T> {
    Done(T),
    /// Not yet; the resource's current status, shown in progress lines.
    Pending(String),
}

/// Polls `check` with backoff until it is done or `wait_seconds` pass, with a log line at each change of status and
/// at least every [`PROGRESS_EVERY`] while it stays the same. (Log lines, not `progress.report`, which the runner
/// shows as bytes.)
pub(crate) fn wait_for<T>(
    what: &str,
    wait_seconds: u64,
    mut check: impl FnMut() -> Result<Poll<T>, Failure>,
) -> Result<T, Failure> {
    let started = Instant::now();
    let limit = Duration::from_secs(wait_seconds);
    let mut delay = FIRST_POLL;
    let mut last_status = String::new();
    let mut last_line = started;
    loop {
        match check()? {
            Poll::Done(value) => {
                log::info(&format!(
                    "{what}: done after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(value);
            }
            Poll::Pending(status) => {
                if status != last_status || last_line.elapsed() >= PROGRESS_EVERY {
                    log::info(&format!(
                        "{what}: {status} ({:.0}s)",
                        started.elapsed().as_secs_f64()
                    ));
                    last_status = status;
                    last_line = Instant::now();
                }
            }
        }
        if started.elapsed() + delay > limit {
            return Err(Failure::unavailable(format!(
                "{what}: still {last_status} after {wait_seconds}s (wait_seconds)"
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// An idempotency token of this run's step for `purpose`: the same on every attempt and after a resume, and kept
/// in step state before the create call it goes with. 32 hex digits (AWS allows 64 ASCII characters).
pub(crate) fn token(ctx: &Context, purpose: &str) -> String {
    let key = format!("token:{purpose}");
    if let Some(kept) = state::get(&key) {
        return kept;
    }
    let token = derived_token(ctx, purpose);
    state::set(&key, &token);
    token
}

/// The token [`token`] keeps, computed without touching state (for plan, which writes nothing).
pub(crate) fn derived_token(ctx: &Context, purpose: &str) -> String {
    let digest = Sha256::digest(format!("{}/{}/{purpose}", ctx.run_id, ctx.step_id).as_bytes());
    sigv4::hex(&digest)[..32].to_string()
}

/// EC2 Query parameters for a filter list: `Filter.N.Name`, `Filter.N.Value.M`.
pub(crate) fn filters(list: &[(&str, &[&str])]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (name, values)) in list.iter().enumerate() {
        out.push((format!("Filter.{}.Name", i + 1), name.to_string()));
        for (j, v) in values.iter().enumerate() {
            out.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.to_string()));
        }
    }
    out
}

/// EC2 CreateTags for `resources`: this run's tags, `extra` and the user's.
pub(crate) fn ec2_tag(
    aws: &Aws,
    resources: &[String],
    tags: &[(String, String)],
) -> Result<(), Failure> {
    if resources.is_empty() {
        return Ok(());
    }
    let mut params = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        params.push((format!("ResourceId.{}", i + 1), r.clone()));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((format!("Tag.{}.Key", i + 1), k.clone()));
        params.push((format!("Tag.{}.Value", i + 1), v.clone()));
    }
    aws.query(client::Service::Ec2, "CreateTags", &params)?;
    Ok(())
}

/// The tags every resource this provider creates carries, so destroy finds it even when step state lost it.
pub(crate) fn run_tags(ctx: &Context) -> Vec<(String, String)> {
    vec![
        ("respawn:run".into(), ctx.run_id.clone()),
        ("respawn:step".into(), ctx.step_id.clone()),
    ]
}

/// Whether `tags` say this run's step made the resource.
pub(crate) fn made_by(ctx: &Context, tags: &[(String, String)]) -> bool {
    let has = |k: &str, v: &str| tags.iter().any(|(tk, tv)| tk == k && tv == v);
    has("respawn:run", &ctx.run_id) && has("respawn:step", &ctx.step_id)
}

/// Whether `tags` say this run made the resource (any of its steps): what a verify step, which has a step id
/// of its own, can check.
pub(crate) fn made_by_run(ctx: &Context, tags: &[(String, String)]) -> bool {
    tags.iter()
        .any(|(k, v)| k == "respawn:run" && *v == ctx.run_id)
}

/// A value that `respawn plan` could not know yet: an expression over an earlier step's outputs, shown as written.
pub(crate) fn unresolved(value: &str) -> bool {
    value.contains("${{")
}
