//! `junit.xml`: one test suite per section, one test case per step, for CI systems.

use std::fmt::Write;

use super::Report;
use crate::record::{StepRecord, StepStatus};

fn esc(s: &str) -> String {
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
    for (name, steps) in [
        ("steps", &r.steps),
        ("verify", &r.verifications),
        ("teardown", &r.teardown.steps),
    ] {
        suite(&mut out, &r.run_id, name, steps);
    }
    out.push_str("</testsuites>\n");
    out
}

fn suite(out: &mut String, run: &str, name: &str, steps: &[StepRecord]) {
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
