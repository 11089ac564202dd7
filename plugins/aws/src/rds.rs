//! `aws/rds-restore`: a DB instance brought up in the target region, by point-in-time restore (from a source
//! instance in that region, or from automated backups replicated there) or by promoting a cross-region read
//! replica; waited for until available. Outputs the endpoint and `recovery_point`.
//!
//! RDS has no client token: the target identifier is the idempotency key. It goes into step state, with the
//! recovery point, before the restore call; a retried or resumed step finds the instance by it and adopts it when
//! its tags (or that state) say this run made it. Destroy deletes a restored instance; a promotion cannot be
//! undone, so destroy leaves a promoted replica and says so.

use std::collections::BTreeMap;

use respawn_plugin_sdk::{Context, Failure, FailureKind, Phase, log, state, time};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Aws, CredentialSecrets, NodeExt, Service, all, parse, tags_of};
use crate::sigv4::{now, rfc3339};
use crate::{Connection, Poll, default_wait, made_by, made_by_run, run_tags};

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    PointInTime,
    PromoteReplica,
}

fn point_in_time() -> Mode {
    Mode::PointInTime
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsRestoreParams {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    credentials: CredentialSecrets,
    #[serde(default = "default_wait")]
    wait_seconds: u64,
    #[serde(default = "point_in_time")]
    mode: Mode,
    identifier: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    restore_time: Option<String>,
    #[serde(default)]
    instance_class: Option<String>,
    #[serde(default)]
    subnet_group: Option<String>,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    multi_az: Option<bool>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Db {
    id: String,
    status: String,
    engine: String,
    address: String,
    port: String,
    arn: String,
    latest_restorable: Option<String>,
    replica_of: Option<String>,
    tags: Vec<(String, String)>,
}

fn describe(aws: &Aws, id: &str) -> Result<Option<Db>, Failure> {
    let xml = match aws.query(
        Service::Rds,
        "DescribeDBInstances",
        &[("DBInstanceIdentifier".into(), id.into())],
    ) {
        Ok(xml) => xml,
        Err(f) if f.kind == FailureKind::NotFound => return Ok(None),
        Err(f) => return Err(f),
    };
    let doc = parse(&xml)?;
    let Some(db) = all(&doc, "DBInstance").into_iter().next() else {
        return Ok(None);
    };
    let endpoint = db.child("Endpoint");
    Ok(Some(Db {
        id: db.text_of("DBInstanceIdentifier").unwrap_or_default(),
        status: db.text_of("DBInstanceStatus").unwrap_or_default(),
        engine: db.text_of("Engine").unwrap_or_default(),
        address: endpoint
            .and_then(|e| e.text_of("Address"))
            .unwrap_or_default(),
        port: endpoint.and_then(|e| e.text_of("Port")).unwrap_or_default(),
        arn: db.text_of("DBInstanceArn").unwrap_or_default(),
        latest_restorable: db.text_of("LatestRestorableTime"),
        replica_of: db
            .text_of("ReadReplicaSourceDBInstanceIdentifier")
            .filter(|s| !s.is_empty()),
        tags: tags_of(&db),
    }))
}

/// The newest moment automated backups replicated to this region can restore (DescribeDBInstanceAutomatedBackups).
fn backups_latest_time(aws: &Aws, arn: &str) -> Result<Option<String>, Failure> {
    let xml = aws.query(
        Service::Rds,
        "DescribeDBInstanceAutomatedBackups",
        &[("DBInstanceAutomatedBackupsArn".into(), arn.into())],
    )?;
    let doc = parse(&xml)?;
    Ok(all(&doc, "RestoreWindow")
        .first()
        .and_then(|w| w.text_of("LatestTime")))
}

pub fn run(ctx: &Context, p: RdsRestoreParams) -> Result<Value, Failure> {
    let conn = Connection {
        phase: ctx.phase,
        region: &p.region,
        endpoint: p.endpoint.as_deref(),
        credentials: &p.credentials,
    };
    let aws = conn.connect()?;
    if let Some(t) = &p.restore_time
        && time::rfc3339_seconds(t).is_none()
    {
        return Err(Failure::invalid_input(format!(
            "restore_time `{t}`: expected RFC 3339, e.g. 2024-05-01T12:00:00Z"
        )));
    }
    if p.mode == Mode::PointInTime && p.source.is_none() {
        return Err(Failure::invalid_input(
            "source: point-in-time restore needs the source DB instance identifier (or the ARN of its \
             automated backups replicated to this region)",
        ));
    }
    match (ctx.phase, p.mode) {
        (Phase::Plan, _) => plan(ctx, &aws, &p),
        (Phase::Apply, Mode::PointInTime) => restore(ctx, &aws, &p),
        (Phase::Apply, Mode::PromoteReplica) => promote(&aws, &p),
        (Phase::Verify, _) => verify(ctx, &aws, &p),
        (Phase::Destroy, _) => destroy(ctx, &aws, &p),
    }
}

/// The source's newest restorable moment, or `restore_time` when given.
fn recovery_point(aws: &Aws, p: &RdsRestoreParams) -> Result<String, Failure> {
    if let Some(t) = &p.restore_time {
        return Ok(t.clone());
    }
    let source = p.source.as_deref().unwrap_or_default();
    let latest = if source.starts_with("arn:") {
        backups_latest_time(aws, source)?
    } else {
        let db = describe(aws, source)?.ok_or_else(|| {
            Failure::not_found(format!(
                "source DB instance {source} not found in {}",
                aws.region
            ))
        })?;
        db.latest_restorable
    };
    // Without a restorable time from AWS, the moment of the call: restore asks for the latest data there is.
    Ok(latest.unwrap_or_else(|| rfc3339(now())))
}

fn plan(ctx: &Context, aws: &Aws, p: &RdsRestoreParams) -> Result<Value, Failure> {
    let existing = describe(aws, &p.identifier)?;
    let would = match (p.mode, existing) {
        (Mode::PointInTime, Some(db)) if made_by(ctx, &db.tags) => format!(
            "{} already restored by this run in {} ({}): apply adopts it",
            db.id, aws.region, db.status
        ),
        (Mode::PointInTime, Some(db)) => {
            return Err(Failure::conflict(format!(
                "DB instance {} already exists in {} and this run did not make it; choose another `identifier`",
                db.id, aws.region
            )));
        }
        (Mode::PointInTime, None) => {
            let point = recovery_point(aws, p)?;
            format!(
                "restore {} to {point} as DB instance {} in {}{}, tagged respawn:run={} respawn:step={}",
                p.source.as_deref().unwrap_or_default(),
                p.identifier,
                aws.region,
                p.instance_class
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                ctx.run_id,
                ctx.step_id
            )
        }
        (Mode::PromoteReplica, Some(db)) => match &db.replica_of {
            Some(source) => format!(
                "promote read replica {} in {} (replicating {source}) to a standalone DB instance; this cannot be undone",
                db.id, aws.region
            ),
            None => format!(
                "{} in {} is standalone already: nothing to promote",
                db.id, aws.region
            ),
        },
        (Mode::PromoteReplica, None) => {
            return Err(Failure::not_found(format!(
                "read replica {} not found in {}",
                p.identifier, aws.region
            )));
        }
    };
    Ok(json!({ "would": [would] }))
}

fn restore(ctx: &Context, aws: &Aws, p: &RdsRestoreParams) -> Result<Value, Failure> {
    let point = match describe(aws, &p.identifier)? {
        Some(db)
            if made_by(ctx, &db.tags)
                || state::get("identifier").as_deref() == Some(&p.identifier) =>
        {
            log::info(&format!(
                "{}: restored by an earlier attempt ({})",
                db.id, db.status
            ));
            state::get("recovery_point").unwrap_or_else(|| rfc3339(now()))
        }
        Some(db) => {
            return Err(Failure::conflict(format!(
                "DB instance {} already exists in {} and this run did not make it",
                db.id, aws.region
            )));
        }
        None => {
            let point = recovery_point(aws, p)?;
            state::set("identifier", &p.identifier);
            state::set("recovery_point", &point);
            let source = p.source.clone().unwrap_or_default();
            let mut params = vec![(
                "TargetDBInstanceIdentifier".to_string(),
                p.identifier.clone(),
            )];
            if source.starts_with("arn:") {
                params.push(("SourceDBInstanceAutomatedBackupsArn".into(), source.clone()));
            } else {
                params.push(("SourceDBInstanceIdentifier".into(), source.clone()));
            }
            match &p.restore_time {
                Some(t) => params.push(("RestoreTime".into(), t.clone())),
                None => params.push(("UseLatestRestorableTime".into(), "true".into())),
            }
            if let Some(c) = &p.instance_class {
                params.push(("DBInstanceClass".into(), c.clone()));
            }
            if let Some(g) = &p.subnet_group {
                params.push(("DBSubnetGroupName".into(), g.clone()));
            }
            for (i, g) in p.security_groups.iter().enumerate() {
                params.push((
                    format!("VpcSecurityGroupIds.VpcSecurityGroupId.{}", i + 1),
                    g.clone(),
                ));
            }
            if let Some(m) = p.multi_az {
                params.push(("MultiAZ".into(), m.to_string()));
            }
            let mut tags = run_tags(ctx);
            tags.extend(p.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (i, (k, v)) in tags.iter().enumerate() {
                params.push((format!("Tags.Tag.{}.Key", i + 1), k.clone()));
                params.push((format!("Tags.Tag.{}.Value", i + 1), v.clone()));
            }
            aws.query(Service::Rds, "RestoreDBInstanceToPointInTime", &params)?;
            log::info(&format!(
                "RestoreDBInstanceToPointInTime {source} → {} in {} requested (to {point})",
                p.identifier, aws.region
            ));
            point
        }
    };
    let db = wait_available(aws, p, false)?;
    Ok(outputs(&db, &point))
}

fn promote(aws: &Aws, p: &RdsRestoreParams) -> Result<Value, Failure> {
    let db = describe(aws, &p.identifier)?.ok_or_else(|| {
        Failure::not_found(format!(
            "read replica {} not found in {}",
            p.identifier, aws.region
        ))
    })?;
    let point = match (&db.replica_of, state::get("recovery_point")) {
        (Some(source), kept) => {
            // Replication stops at the promotion: the data is the source's as of about now.
            let point = kept.unwrap_or_else(|| rfc3339(now()));
            state::set("identifier", &p.identifier);
            state::set("recovery_point", &point);
            aws.query(
                Service::Rds,
                "PromoteReadReplica",
                &[("DBInstanceIdentifier".into(), p.identifier.clone())],
            )?;
            log::info(&format!(
                "PromoteReadReplica {} (replica of {source}) in {} requested",
                p.identifier, aws.region
            ));
            point
        }
        (None, Some(kept)) => kept,
        (None, None) => {
            return Err(Failure::conflict(format!(
                "{} in {} is not a read replica and this run did not promote it",
                p.identifier, aws.region
            )));
        }
    };
    let db = wait_available(aws, p, true)?;
    Ok(outputs(&db, &point))
}

fn wait_available(aws: &Aws, p: &RdsRestoreParams, standalone: bool) -> Result<Db, Failure> {
    crate::wait_for(
        &format!("DB instance {} in {}", p.identifier, aws.region),
        p.wait_seconds,
        || match describe(aws, &p.identifier)? {
            Some(db) if db.status == "available" && !(standalone && db.replica_of.is_some()) => {
                Ok(Poll::Done(db))
            }
            Some(db) if matches!(db.status.as_str(), "failed" | "incompatible-restore") => Err(
                Failure::internal(format!("DB instance {} ended {}", db.id, db.status)),
            ),
            Some(db) => Ok(Poll::Pending(db.status)),
            None => Ok(Poll::Pending("not visible yet".into())),
        },
    )
}

fn outputs(db: &Db, point: &str) -> Value {
    json!({
        "identifier": db.id,
        "endpoint": db.address,
        "port": db.port.parse::<u64>().ok(),
        "arn": db.arn,
        "engine": db.engine,
        "recovery_point": point,
    })
}

fn verify(ctx: &Context, aws: &Aws, p: &RdsRestoreParams) -> Result<Value, Failure> {
    let db = describe(aws, &p.identifier)?.ok_or_else(|| {
        Failure::verification_failed(format!(
            "DB instance {} is gone from {}",
            p.identifier, aws.region
        ))
    })?;
    let mut problems = Vec::new();
    if db.status != "available" {
        problems.push(format!("status is {}", db.status));
    }
    if db.address.is_empty() {
        problems.push("it has no endpoint".into());
    }
    match p.mode {
        Mode::PointInTime => {
            if !made_by_run(ctx, &db.tags) {
                problems.push("it lacks this run's respawn:run tag".into());
            }
            let source = p.source.as_deref().unwrap_or_default();
            if !source.starts_with("arn:")
                && let Some(src) = describe(aws, source)?
                && src.engine != db.engine
            {
                problems.push(format!(
                    "engine {} differs from the source's {}",
                    db.engine, src.engine
                ));
            }
        }
        Mode::PromoteReplica => {
            if let Some(source) = &db.replica_of {
                problems.push(format!("it still replicates {source}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Failure::verification_failed(format!(
            "DB instance {} in {}: {}",
            db.id,
            aws.region,
            problems.join("; ")
        )));
    }
    Ok(json!({ "identifier": db.id, "status": db.status, "endpoint": db.address }))
}

fn destroy(ctx: &Context, aws: &Aws, p: &RdsRestoreParams) -> Result<Value, Failure> {
    if p.mode == Mode::PromoteReplica {
        if state::get("identifier").is_some() {
            log::warn(&format!(
                "{} in {} was promoted from a read replica: a promotion cannot be undone, so destroy leaves it; \
                 recreate the replica from the primary when the drill is over",
                p.identifier, aws.region
            ));
        }
        return Ok(json!({ "deleted": [], "left": p.identifier }));
    }
    let mut deleted = Vec::new();
    if let Some(db) = describe(aws, &p.identifier)? {
        if !made_by(ctx, &db.tags) {
            // Not ours (or its tags are gone): never delete what was there before.
            log::warn(&format!(
                "{} in {} lacks this run's tags: left in place",
                db.id, aws.region
            ));
        } else {
            aws.query(
                Service::Rds,
                "DeleteDBInstance",
                &[
                    ("DBInstanceIdentifier".into(), db.id.clone()),
                    ("SkipFinalSnapshot".into(), "true".into()),
                    ("DeleteAutomatedBackups".into(), "true".into()),
                ],
            )?;
            crate::wait_for(
                &format!("deleting DB instance {}", db.id),
                p.wait_seconds,
                || match describe(aws, &db.id)? {
                    Some(d) => Ok(Poll::Pending(d.status)),
                    None => Ok(Poll::Done(())),
                },
            )?;
            deleted.push(db.id);
        }
    }
    state::delete("identifier");
    state::delete("recovery_point");
    Ok(json!({ "deleted": deleted }))
}
