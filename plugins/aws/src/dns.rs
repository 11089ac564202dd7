//! `aws/dns-failover`: a Route 53 record pointed at the DR endpoint, with simple, weighted or failover routing and
//! an optional health check; waited for until the change is INSYNC.
//!
//! Before the first change, the record set as it was (its XML exactly as Route 53 listed it, or "there was none")
//! goes into step state; destroy puts exactly that back, or deletes the record this step created. The health
//! check is created with a CallerReference kept in state before the call, which Route 53 itself deduplicates.

use respawn_plugin_sdk::{Context, Failure, FailureKind, Phase, log, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Aws, CredentialSecrets, NodeExt, parse};
use crate::{Connection, Poll, default_wait, unresolved};

const NS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// State value meaning "there was no such record before this step".
const NONE_BEFORE: &str = "none";

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Routing {
    Simple,
    Weighted,
    Failover,
}

fn simple() -> Routing {
    Routing::Simple
}
fn global() -> String {
    "us-east-1".into()
}
fn a_record() -> String {
    "A".into()
}
fn sixty() -> u32 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFailoverParams {
    #[serde(default = "global")]
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    credentials: CredentialSecrets,
    #[serde(default = "default_wait")]
    wait_seconds: u64,
    zone_id: String,
    name: String,
    #[serde(default = "a_record", rename = "type")]
    record_type: String,
    #[serde(default = "sixty")]
    ttl: u32,
    values: Vec<String>,
    #[serde(default = "simple")]
    routing: Routing,
    #[serde(default)]
    set_identifier: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    failover: Option<String>,
    #[serde(default)]
    health_check: Option<HealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    #[serde(rename = "type")]
    check_type: String,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    fqdn: Option<String>,
    port: u16,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    failure_threshold: Option<u32>,
}

/// One record set as Route 53 lists it, with its XML as listed.
#[derive(Debug, Clone)]
struct Record {
    values: Vec<String>,
    ttl: Option<u32>,
    health_check: Option<String>,
    xml: String,
}

/// `name` as Route 53 writes it: lower case, with the final dot.
fn fqdn(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

fn zone_path(zone: &str) -> String {
    format!(
        "/hostedzone/{}",
        zone.trim_start_matches("/hostedzone/")
            .trim_start_matches('/')
    )
}

/// The same values in any order (Route 53 keeps its own).
fn same_values(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl DnsFailoverParams {
    fn check(&self) -> Result<(), Failure> {
        if self.values.is_empty() {
            return Err(Failure::invalid_input(
                "values: give at least one value (the DR endpoint)",
            ));
        }
        let needs_id = self.routing != Routing::Simple;
        if needs_id && self.set_identifier.is_none() {
            return Err(Failure::invalid_input(
                "set_identifier: weighted and failover routing need one",
            ));
        }
        if self.routing == Routing::Weighted && self.weight.is_none() {
            return Err(Failure::invalid_input("weight: weighted routing needs one"));
        }
        if self.routing == Routing::Failover
            && !matches!(self.failover.as_deref(), Some("PRIMARY" | "SECONDARY"))
        {
            return Err(Failure::invalid_input(
                "failover: failover routing needs PRIMARY or SECONDARY",
            ));
        }
        Ok(())
    }

    /// The record set apply writes.
    fn desired_xml(&self, health_check: Option<&str>) -> String {
        let mut x = format!(
            "<ResourceRecordSet><Name>{}</Name><Type>{}</Type>",
            escape(&fqdn(&self.name)),
            escape(&self.record_type)
        );
        if let Some(id) = &self.set_identifier {
            x.push_str(&format!("<SetIdentifier>{}</SetIdentifier>", escape(id)));
        }
        match self.routing {
            Routing::Weighted => {
                x.push_str(&format!("<Weight>{}</Weight>", self.weight.unwrap_or(0)))
            }
            Routing::Failover => x.push_str(&format!(
                "<Failover>{}</Failover>",
                escape(self.failover.as_deref().unwrap_or_default())
            )),
            Routing::Simple => {}
        }
        x.push_str(&format!("<TTL>{}</TTL><ResourceRecords>", self.ttl));
        for v in &self.values {
            x.push_str(&format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            ));
        }
        x.push_str("</ResourceRecords>");
        if let Some(id) = health_check {
            x.push_str(&format!("<HealthCheckId>{}</HealthCheckId>", escape(id)));
        }
        x.push_str("</ResourceRecordSet>");
        x
    }
}

/// The record set of `name`/`type` (and set identifier), as listed now.
fn current(aws: &Aws, p: &DnsFailoverParams) -> Result<Option<Record>, Failure> {
    let mut query = vec![
        ("name".to_string(), fqdn(&p.name)),
        ("type".to_string(), p.record_type.clone()),
    ];
    if let Some(id) = &p.set_identifier {
        query.push(("identifier".into(), id.clone()));
    }
    let xml = aws.route53(
        "GET",
        &format!("{}/rrset", zone_path(&p.zone_id)),
        &query,
        None,
    )?;
    let doc = parse(&xml)?;
    let found = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "ResourceRecordSet")
        .find(|n| {
            n.text_of("Name").map(|s| fqdn(&s.replace("\\052", "*"))) == Some(fqdn(&p.name))
                && n.text_of("Type").as_deref() == Some(p.record_type.as_str())
                && n.text_of("SetIdentifier") == p.set_identifier
        });
    Ok(found.map(|n| Record {
        values: n
            .list("ResourceRecords")
            .iter()
            .filter_map(|r| r.text_of("Value"))
            .collect(),
        ttl: n.text_of("TTL").and_then(|t| t.parse().ok()),
        health_check: n.text_of("HealthCheckId"),
        xml: xml[n.range()].to_string(),
    }))
}

/// Sends one change and waits until Route 53 says it is INSYNC.
fn change(
    aws: &Aws,
    p: &DnsFailoverParams,
    action: &str,
    record_xml: &str,
) -> Result<String, Failure> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"{NS}\"><ChangeBatch>\
         <Comment>respawn dns-failover</Comment><Changes><Change><Action>{action}</Action>{record_xml}</Change>\
         </Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    );
    let xml = aws.route53(
        "POST",
        &format!("{}/rrset/", zone_path(&p.zone_id)),
        &[],
        Some(body),
    )?;
    let doc = parse(&xml)?;
    let info = doc
        .descendants()
        .find(|n| n.tag_name().name() == "ChangeInfo")
        .ok_or_else(|| Failure::internal("ChangeResourceRecordSets answered without ChangeInfo"))?;
    let id = info.text_of("Id").unwrap_or_default();
    let short = id.trim_start_matches("/change/").to_string();
    log::info(&format!(
        "{action} {} {}: change {short}",
        fqdn(&p.name),
        p.record_type
    ));
    crate::wait_for(&format!("Route 53 change {short}"), p.wait_seconds, || {
        let xml = aws.route53("GET", &format!("/change/{short}"), &[], None)?;
        let status = crate::client::xml_text(&xml, "Status").unwrap_or_default();
        if status == "INSYNC" {
            Ok(Poll::Done(()))
        } else {
            Ok(Poll::Pending(status))
        }
    })?;
    Ok(short)
}

pub fn run(ctx: &Context, p: DnsFailoverParams) -> Result<Value, Failure> {
    p.check()?;
    let conn = Connection {
        phase: ctx.phase,
        region: &p.region,
        endpoint: p.endpoint.as_deref(),
        credentials: &p.credentials,
    };
    let aws = conn.connect()?;
    match ctx.phase {
        Phase::Plan => plan(&aws, &p),
        Phase::Apply => apply(ctx, &aws, &p),
        Phase::Verify => verify(&aws, &p),
        Phase::Destroy => destroy(&aws, &p),
    }
}

fn plan(aws: &Aws, p: &DnsFailoverParams) -> Result<Value, Failure> {
    let now = current(aws, p)?;
    let values = if p.values.iter().any(|v| unresolved(v)) {
        format!("{} (known at apply)", p.values.join(", "))
    } else {
        p.values.join(", ")
    };
    let mut would = vec![match now {
        Some(r) => format!(
            "UPSERT {} {} in {}: {} (ttl {}) → {values} (ttl {}); the record set as it is now is kept for teardown",
            fqdn(&p.name),
            p.record_type,
            p.zone_id,
            r.values.join(", "),
            r.ttl.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            p.ttl
        ),
        None => format!(
            "CREATE {} {} in {}: {values} (ttl {}); teardown deletes it",
            fqdn(&p.name),
            p.record_type,
            p.zone_id,
            p.ttl
        ),
    }];
    if let Some(h) = &p.health_check {
        would.push(format!(
            "create a {} health check of {}:{}{}",
            h.check_type,
            h.ip.as_deref().or(h.fqdn.as_deref()).unwrap_or("?"),
            h.port,
            h.path.as_deref().unwrap_or("")
        ));
    }
    Ok(json!({ "would": would }))
}

fn apply(ctx: &Context, aws: &Aws, p: &DnsFailoverParams) -> Result<Value, Failure> {
    if state::get("saved").is_none() {
        let saved = current(aws, p)?
            .map(|r| r.xml)
            .unwrap_or_else(|| NONE_BEFORE.into());
        state::set("saved", &saved);
    }
    let health_check = match &p.health_check {
        Some(h) => Some(health_check(ctx, aws, h)?),
        None => None,
    };
    let change_id = change(aws, p, "UPSERT", &p.desired_xml(health_check.as_deref()))?;
    state::set("change_id", &change_id);
    Ok(json!({
        "name": fqdn(&p.name),
        "type": p.record_type,
        "values": p.values,
        "change_id": change_id,
        "health_check_id": health_check,
    }))
}

fn health_check(ctx: &Context, aws: &Aws, h: &HealthCheck) -> Result<String, Failure> {
    if let Some(id) = state::get("health_check_id") {
        return Ok(id);
    }
    let reference = crate::token(ctx, "health-check");
    let mut config = format!(
        "<Type>{}</Type><Port>{}</Port>",
        escape(&h.check_type),
        h.port
    );
    if let Some(ip) = &h.ip {
        config.push_str(&format!("<IPAddress>{}</IPAddress>", escape(ip)));
    }
    if let Some(name) = &h.fqdn {
        config.push_str(&format!(
            "<FullyQualifiedDomainName>{}</FullyQualifiedDomainName>",
            escape(name)
        ));
    }
    if let Some(path) = &h.path {
        config.push_str(&format!("<ResourcePath>{}</ResourcePath>", escape(path)));
    }
    config.push_str(&format!(
        "<RequestInterval>30</RequestInterval><FailureThreshold>{}</FailureThreshold>",
        h.failure_threshold.unwrap_or(3)
    ));
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHealthCheckRequest xmlns=\"{NS}\">\
         <CallerReference>{reference}</CallerReference><HealthCheckConfig>{config}</HealthCheckConfig>\
         </CreateHealthCheckRequest>"
    );
    let xml = aws.route53("POST", "/healthcheck", &[], Some(body))?;
    let doc = parse(&xml)?;
    let id = doc
        .descendants()
        .find(|n| n.tag_name().name() == "HealthCheck")
        .and_then(|n| n.text_of("Id"))
        .ok_or_else(|| Failure::internal("CreateHealthCheck answered without an Id"))?;
    state::set("health_check_id", &id);
    log::info(&format!("health check {id} created"));
    Ok(id)
}

fn verify(aws: &Aws, p: &DnsFailoverParams) -> Result<Value, Failure> {
    let now = current(aws, p)?.ok_or_else(|| {
        Failure::verification_failed(format!(
            "no {} record {} in {}",
            p.record_type,
            fqdn(&p.name),
            p.zone_id
        ))
    })?;
    let mut problems = Vec::new();
    if !same_values(&now.values, &p.values) {
        problems.push(format!(
            "values are {}, not {}",
            now.values.join(", "),
            p.values.join(", ")
        ));
    }
    if now.ttl != Some(p.ttl) {
        problems.push(format!("ttl is {:?}, not {}", now.ttl, p.ttl));
    }
    if let Some(id) = state::get("health_check_id")
        && now.health_check.as_deref() != Some(id.as_str())
    {
        problems.push(format!("health check is {:?}, not {id}", now.health_check));
    }
    if !problems.is_empty() {
        return Err(Failure::verification_failed(format!(
            "{} {}: {}",
            fqdn(&p.name),
            p.record_type,
            problems.join("; ")
        )));
    }
    Ok(json!({ "name": fqdn(&p.name), "values": now.values }))
}

fn destroy(aws: &Aws, p: &DnsFailoverParams) -> Result<Value, Failure> {
    let mut restored = Value::Null;
    if let Some(saved) = state::get("saved") {
        let now = current(aws, p)?;
        if saved == NONE_BEFORE {
            match now {
                Some(r) if same_values(&r.values, &p.values) => {
                    change(aws, p, "DELETE", &r.xml)?;
                    restored = json!("deleted the record this run created");
                }
                // Changed since apply by someone else: theirs now, not this run's to delete.
                Some(r) => log::warn(&format!(
                    "{} {} now holds {}, not what this run wrote: left in place",
                    fqdn(&p.name),
                    p.record_type,
                    r.values.join(", ")
                )),
                None => {}
            }
        } else if now.as_ref().map(|r| r.xml.as_str()) != Some(saved.as_str()) {
            change(aws, p, "UPSERT", &saved)?;
            restored = json!("put the saved record set back");
        }
    }
    if let Some(id) = state::get("health_check_id") {
        match aws.route53("DELETE", &format!("/healthcheck/{id}"), &[], None) {
            Ok(_) => log::info(&format!("health check {id} deleted")),
            Err(f) if f.kind == FailureKind::NotFound => {}
            Err(f) => return Err(f),
        }
    }
    for key in ["saved", "health_check_id", "change_id"] {
        state::delete(key);
    }
    Ok(json!({ "restored": restored }))
}
