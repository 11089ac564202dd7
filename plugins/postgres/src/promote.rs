//! `postgres/promote`: the scripted failover of a database that has a streaming standby in the DR region. The
//! standby's last replayed transaction is read before it is promoted (that is the `recovery_point`), it is
//! promoted and waited for until it accepts writes, and the old primary, when it can be reached, is made
//! read-only so that clients still pointed at it cannot write (a drill's destroy makes it writable again).

use std::time::{Duration, Instant};

use respawn_plugin_sdk::{Context, Failure, Phase, log, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server_time_to_rfc3339;
use crate::sql::{Connection, Psql, SqlError};

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"required":["standby"],
"properties":{
"standby":{"type":"object","required":["port"],"description":"how to reach the standby: host, port, user, password_secret, database, socket_dir"},
"old_primary":{"type":"object","required":["port"],"description":"how to reach the old primary, to fence it"},
"bindir":{"type":"string","default":"/usr/lib/postgresql/15/bin"},
"wait_s":{"type":"integer","minimum":1,"default":120}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    standby: Connection,
    #[serde(default)]
    old_primary: Option<Connection>,
    #[serde(default = "crate::default_bindir")]
    bindir: String,
    #[serde(default = "default_wait")]
    wait_s: u64,
}

fn default_wait() -> u64 {
    120
}

const FENCE: &str = "ALTER SYSTEM SET default_transaction_read_only = on";
const UNFENCE: &str = "ALTER SYSTEM RESET default_transaction_read_only";

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    let standby = Psql {
        bindir: &p.bindir,
        conn: &p.standby,
    };
    match ctx.phase {
        Phase::Plan => {
            let role = match standby.value("select pg_is_in_recovery()") {
                Ok(Some(v)) if v == "t" => "a standby",
                Ok(_) => "already a primary",
                Err(_) => "not reachable now",
            };
            Ok(json!({ "would": format!(
                "promote {} ({role}){}",
                p.standby.dsn(),
                p.old_primary.as_ref().map(|o| format!(" and make {} read-only if it answers", o.dsn())).unwrap_or_default()
            ) }))
        }
        Phase::Apply => apply(&p, &standby),
        Phase::Verify => match standby.value("select pg_is_in_recovery()") {
            Ok(Some(v)) if v == "f" => Ok(json!({ "dsn": p.standby.dsn(), "writable": true })),
            Ok(_) => Err(Failure::verification_failed(format!(
                "{} is still a standby",
                p.standby.dsn()
            ))),
            Err(e) => Err(Failure::verification_failed(
                e.into_failure(&p.standby.dsn()).message,
            )),
        },
        Phase::Destroy => {
            // A promotion cannot be undone; the fence can.
            if state::get("fenced").as_deref() == Some("read-only")
                && let Some(old) = &p.old_primary
            {
                let psql = Psql {
                    bindir: &p.bindir,
                    conn: old,
                };
                psql.query(UNFENCE)
                    .and_then(|_| psql.query("select pg_reload_conf()"))
                    .map_err(|e| e.into_failure(&format!("making {} writable again", old.dsn())))?;
                log::info(&format!("{} is writable again", old.dsn()));
                state::delete("fenced");
            }
            Ok(json!({ "promoted": p.standby.dsn(), "note": "a promoted standby stays a primary" }))
        }
    }
}

fn apply(p: &Params, standby: &Psql<'_>) -> Result<Value, Failure> {
    let in_recovery = standby
        .value("select pg_is_in_recovery()")
        .map_err(|e| e.into_failure(&format!("reaching the standby {}", p.standby.dsn())))?;
    if in_recovery.as_deref() == Some("t") {
        // Read before promoting: after it, the standby replays nothing more from the old primary.
        let replayed = standby
            .value("select pg_last_xact_replay_timestamp()")
            .map_err(|e| e.into_failure("reading the last replayed transaction"))?
            .filter(|v| !v.is_empty());
        if let Some(ts) = &replayed {
            state::set("recovery_point", &server_time_to_rfc3339(ts));
        }
        let asked = standby
            .value(&format!("select pg_promote(true, {})", p.wait_s.min(3600)))
            .map_err(|e| e.into_failure(&format!("promoting {}", p.standby.dsn())))?;
        if asked.as_deref() != Some("t") {
            return Err(Failure::unavailable(format!(
                "{} did not finish promotion within {}s",
                p.standby.dsn(),
                p.wait_s
            )));
        }
    } else if state::get("promoted").is_none() {
        return Err(Failure::conflict(format!(
            "{} is not a standby: it is already a primary, and this run did not promote it",
            p.standby.dsn()
        )));
    }
    state::set("promoted", "1");
    let started = Instant::now();
    loop {
        match standby.value("select pg_is_in_recovery()") {
            Ok(Some(v)) if v == "f" => break,
            Ok(_) | Err(SqlError::Unreachable(_)) => {}
            Err(e) => return Err(e.into_failure("waiting for the promotion")),
        }
        if started.elapsed() > Duration::from_secs(p.wait_s) {
            return Err(Failure::unavailable(format!(
                "{} is not writable after {}s",
                p.standby.dsn(),
                p.wait_s
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let fenced = match &p.old_primary {
        None => "not asked".to_string(),
        Some(old) => fence(p, old),
    };
    let mut out = json!({ "dsn": p.standby.dsn(), "promoted": true, "old_primary": fenced });
    if let Some(point) = state::get("recovery_point") {
        out["recovery_point"] = json!(point);
    }
    Ok(out)
}

/// Makes the old primary read-only for new transactions and ends the sessions it has, when it answers.
fn fence(p: &Params, old: &Connection) -> String {
    let psql = Psql {
        bindir: &p.bindir,
        conn: old,
    };
    let done = psql
        .query(FENCE)
        .and_then(|_| psql.query("select pg_reload_conf()"))
        .and_then(|_| {
            psql.query(
                "select pg_terminate_backend(pid) from pg_stat_activity \
                 where pid <> pg_backend_pid() and backend_type = 'client backend'",
            )
        });
    match done {
        Ok(_) => {
            state::set("fenced", "read-only");
            log::info(&format!("{} fenced: read-only", old.dsn()));
            "read-only".into()
        }
        Err(SqlError::Unreachable(why)) => {
            log::warn(&format!(
                "{} not fenced, it does not answer: {why}",
                old.dsn()
            ));
            "unreachable".into()
        }
        Err(e) => {
            let failure = e.into_failure("fencing");
            log::warn(&format!("{} not fenced: {}", old.dsn(), failure.message));
            format!("not fenced: {}", failure.message)
        }
    }
}
