//! `junit.xml`: one test suite per section, one test case per step, for CI systems. The run's measurements (RTO,
//! RPO and each data source's recovery point) are properties of the `steps` suite, where CI systems show them.

use std::fmt::Write;

use super::Report;
use crate::record::{StepRecord, StepStatus};

/// `s` escaped for an XML attribute or text.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(r: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"respawn {}\">",
        esc(&r.workflow.name)
    );
    let measured = measurements(r);
    for (name, steps, props) in [
        ("steps", &r.steps, measured.as_slice()),
        ("verify", &r.verifications, &[]),
        ("teardown", &r.teardown.steps, &[]),
    ] {
        suite(&mut out, &r.run_id, name, steps, props);
    }
    out.push_str("</testsuites>\n");
    out
}

/// `rto_seconds`, `rpo_seconds` and `rpo_source` when known, then `recovery_point.STEP` and `rpo_seconds.STEP` for
/// each data source.
fn measurements(r: &Report) -> Vec<(String, String)> {
    let mut props = Vec::new();
    if let Some(rto) = r.rto_seconds {
        props.push(("rto_seconds".to_string(), rto.to_string()));
    }
    if let Some(rpo) = r.rpo_seconds {
        props.push(("rpo_seconds".to_string(), rpo.to_string()));
    }
    if let Some(worst) = r.worst_recovery_point() {
        props.push(("rpo_source".to_string(), worst.step.clone()));
    }
    for p in &r.recovery_points {
        props.push((
            format!("recovery_point.{}", p.step),
            p.recovery_point.clone(),
        ));
        props.push((format!("rpo_seconds.{}", p.step), p.rpo_seconds.to_string()));
    }
    for j in &r.objectives {
        let name = format!("objective.{}", j.objective);
        props.push((
            format!("{name}.target_seconds"),
            j.target_seconds.to_string(),
        ));
        props.push((
            format!("{name}.result"),
            format!("{:?}", j.status).to_lowercase(),
        ));
        if let Some(by) = j.missed_by_seconds {
            props.push((format!("{name}.missed_by_seconds"), by.to_string()));
        }
    }
    // Numbered from 1 in the report's order: one step may use several artifacts of one kind.
    for (i, a) in r.artifacts.iter().enumerate() {
        let name = format!("artifact.{}", i + 1);
        if let Some(step) = &a.step {
            props.push((format!("{name}.step"), step.clone()));
        }
        props.push((format!("{name}.kind"), a.kind.clone()));
        for (field, value) in [
            ("url", &a.source.url),
            ("prefix", &a.source.prefix),
            ("tag", &a.source.tag),
        ] {
            if let Some(v) = value {
                props.push((format!("{name}.{field}"), v.clone()));
            }
        }
        props.push((format!("{name}.digest"), a.digest.clone()));
        if let Some(created) = &a.created {
            props.push((format!("{name}.created"), created.clone()));
        }
    }
    props
}

fn suite(
    out: &mut String,
    run: &str,
    name: &str,
    steps: &[StepRecord],
    props: &[(String, String)],
) {
    let failures = steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled))
        .count();
    let skipped = steps
        .iter()
        .filter(|s| s.status == StepStatus::Skipped)
        .count();
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        esc(&format!("{run}.{name}")),
        steps.len()
    );
    if !props.is_empty() {
        out.push_str("    <properties>\n");
        for (k, v) in props {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                esc(k),
                esc(v)
            );
        }
        out.push_str("    </properties>\n");
    }
    for s in steps {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            esc(name),
            esc(&s.id)
        );
        match s.status {
            StepStatus::Succeeded => out.push_str("/>\n"),
            StepStatus::Skipped => {
                let _ = writeln!(
                    out,
                    "><skipped message=\"{}\"/></testcase>",
                    esc(s.note.as_deref().unwrap_or(""))
                );
            }
            StepStatus::Failed | StepStatus::Cancelled => {
                let (kind, message) = s
                    .error
                    .as_ref()
                    .map_or(("cancelled", s.note.clone().unwrap_or_default()), |e| {
                        (e.kind.as_str(), e.message.clone())
                    });
                let _ = writeln!(
                    out,
                    "><failure type=\"{}\" message=\"{}\"/></testcase>",
                    esc(kind),
                    esc(&message)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}
