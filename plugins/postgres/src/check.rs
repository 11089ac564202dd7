//! `postgres/check`: proves a database from the outside. `pg_amcheck` over every table and index, and SQL checks
//! with expected results, each reported by its name; a mismatch is `verification-failed` with expected and found.

use respawn_plugin_sdk::{Context, Failure, Phase, exec, log};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sql::{Connection, Psql};

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"required":["connection"],
"properties":{
"connection":{"type":"object","required":["port"],"description":"host (absent: the Unix socket in socket_dir), port, user, password_secret, database, socket_dir"},
"bindir":{"type":"string","default":"/usr/lib/postgresql/15/bin"},
"amcheck":{"type":"boolean","default":false,"description":"run pg_amcheck on every table and btree index (installs the amcheck extension when missing)"},
"checks":{"type":"array","items":{"type":"object","required":["name","sql","expect"],"additionalProperties":false,
  "properties":{"name":{"type":"string"},"sql":{"type":"string"},"database":{"type":"string"},
  "expect":{"description":"{rows: N} | {value: TEXT} | {nonempty: true}"}}}}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    connection: Connection,
    #[serde(default = "crate::default_bindir")]
    bindir: String,
    #[serde(default)]
    amcheck: bool,
    #[serde(default)]
    checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    name: String,
    sql: String,
    #[serde(default)]
    database: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Expect {
    /// The query returns this many rows.
    Rows(u64),
    /// The query's single value, as text.
    Value(String),
    /// The query returns at least one row (`true`) or none (`false`).
    Nonempty(bool),
}

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    if ctx.phase == Phase::Plan {
        let names: Vec<&str> = p.checks.iter().map(|c| c.name.as_str()).collect();
        return Ok(json!({ "would": format!(
            "check {}{}{}",
            p.connection.dsn(),
            if p.amcheck { " with pg_amcheck" } else { "" },
            if names.is_empty() { String::new() } else { format!(", SQL checks: {}", names.join(", ")) }
        ) }));
    }
    if ctx.phase == Phase::Destroy {
        return Ok(json!({}));
    }
    let mut results = Vec::new();
    let mut failed = Vec::new();
    if p.amcheck {
        let (ok, said) = amcheck(&p)?;
        results.push(json!({ "name": "pg_amcheck", "passed": ok }));
        if !ok {
            failed.push(format!("pg_amcheck: {said}"));
        }
    }
    for check in &p.checks {
        let conn = match &check.database {
            Some(db) => p.connection.with_database(db),
            None => p.connection.clone(),
        };
        let psql = Psql {
            bindir: &p.bindir,
            conn: &conn,
        };
        let rows = psql
            .query(&check.sql)
            .map_err(|e| e.into_failure(&format!("check `{}`", check.name)))?;
        let (passed, expected, found) = match &check.expect {
            Expect::Rows(n) => (
                rows.len() as u64 == *n,
                format!("{n} rows"),
                format!("{} rows", rows.len()),
            ),
            Expect::Value(v) => {
                let got = rows
                    .first()
                    .and_then(|r| r.first())
                    .cloned()
                    .unwrap_or_default();
                let one = rows.len() == 1 && rows[0].len() == 1;
                (
                    one && got == *v,
                    format!("{v:?}"),
                    if one {
                        format!("{got:?}")
                    } else {
                        format!("{} rows", rows.len())
                    },
                )
            }
            Expect::Nonempty(want) => (
                rows.is_empty() != *want,
                if *want {
                    "some rows".into()
                } else {
                    "no rows".into()
                },
                format!("{} rows", rows.len()),
            ),
        };
        log::info(&format!(
            "check `{}`: {}",
            check.name,
            if passed { "passed" } else { "FAILED" }
        ));
        results.push(
            json!({ "name": check.name, "passed": passed, "expected": expected, "found": found }),
        );
        if !passed {
            failed.push(format!(
                "`{}`: expected {expected}, found {found}",
                check.name
            ));
        }
    }
    if !failed.is_empty() {
        return Err(Failure::verification_failed(format!(
            "{} of {} checks of {} failed: {}",
            failed.len(),
            results.len(),
            p.connection.dsn(),
            failed.join("; ")
        )));
    }
    Ok(json!({ "checks": results }))
}

/// `pg_amcheck` over every database's tables and btree indexes; (passed, what it reported).
fn amcheck(p: &Params) -> Result<(bool, String), Failure> {
    let c = &p.connection;
    let host = c.host.clone().unwrap_or_else(|| c.socket_dir.clone());
    let port = c.port.to_string();
    let mut cmd = exec::Command::new(&format!("{}/pg_amcheck", p.bindir))
        .args(["--install-missing", "--heapallindexed", "--no-strict-names"])
        .args(["-h", &host, "-p", &port, "-U", &c.user, "-d", &c.database])
        .timeout_ms(3_600_000);
    if let Some(secret) = &c.password_secret {
        cmd = cmd.env("PGPASSWORD", &respawn_plugin_sdk::secrets::get(secret)?);
    }
    let out = cmd.output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = said.lines().take(10).collect::<Vec<_>>().join(" / ");
    match out.status {
        0 => Ok((true, said)),
        // 2: it found corruption; anything else: it could not run.
        2 => Ok((false, said)),
        _ if said.contains("could not connect") => {
            Err(Failure::unavailable(format!("pg_amcheck: {said}")))
        }
        _ => Ok((false, said)),
    }
}
