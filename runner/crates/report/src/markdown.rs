//! `report.md`: what an auditor reads.

use std::fmt::Write;

use super::{Report, seconds};
use crate::artifacts::Witness;
use crate::objectives::Status;
use crate::record::{RecoveryFrom, StepRecord};

/// Seconds to the millisecond (`0.001s`), for objectives, where 1ms can matter.
fn seconds_exact(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{s:.3}s"))
}

/// Text that goes into a table cell: no `|` or line break may end the cell early.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let w = &r.workflow;
    let _ = writeln!(
        out,
        "# respawn {:?} report: {} {}\n",
        r.mode, w.name, w.version
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| run | `{}` |", r.run_id);
    let _ = writeln!(out, "| outcome | **{:?}** |", r.outcome);
    let _ = writeln!(out, "| workflow | `{}` sha256 `{}` |", w.file, w.sha256);
    let _ = writeln!(out, "| started | {} |", r.started_at);
    let _ = writeln!(out, "| finished | {} |", r.finished_at);
    let _ = writeln!(out, "| RTO | {} |", seconds(r.rto_seconds));
    let _ = writeln!(out, "| RPO | {} |", r.rpo_text());
    let _ = writeln!(
        out,
        "| journal head | {} |",
        r.journal_head.as_deref().unwrap_or("-")
    );
    if !r.recovery_points.is_empty() {
        let _ = writeln!(
            out,
            "\n## Recovery points\n\n| source | recovery point | RPO | from |\n|---|---|---|---|"
        );
        for p in &r.recovery_points {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                p.step,
                p.recovery_point,
                seconds(Some(p.rpo_seconds)),
                match p.from {
                    RecoveryFrom::Output => "output `recovery_point`",
                    RecoveryFrom::Image => "image `created`",
                }
            );
        }
    }
    if !r.objectives.is_empty() {
        let _ = writeln!(
            out,
            "\n## Objectives\n\n| objective | target | measured | result |\n|---|---|---|---|"
        );
        for j in &r.objectives {
            let result = match j.status {
                Status::Met => "met".to_string(),
                Status::Missed => format!(
                    "**missed** by {}{}",
                    seconds_exact(j.missed_by_seconds),
                    if j.enforced { "" } else { " (not enforced)" }
                ),
                Status::Unmeasured => format!(
                    "**unmeasured**{}",
                    if j.enforced { "" } else { " (not enforced)" }
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {result} |",
                j.objective.to_uppercase(),
                seconds_exact(Some(j.target_seconds)),
                seconds(j.measured_seconds),
            );
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "\n## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(out, "- {}", w.replace('\n', " "));
        }
    }
    if !r.artifacts.is_empty() {
        let _ = writeln!(
            out,
            "\n## Artifacts\n\n| step | kind | source | digest | created | recorded by |\n|---|---|---|---|---|---|"
        );
        for a in &r.artifacts {
            let mut source = a.source.url.clone().unwrap_or_default();
            if let Some(prefix) = &a.source.prefix {
                let _ = write!(source, " {prefix}");
            }
            if let Some(tag) = &a.source.tag {
                let _ = write!(source, ":{tag}");
            }
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | `{}` | {} | {} |",
                a.step.as_deref().unwrap_or("-"),
                a.kind,
                cell(source.trim()),
                cell(&a.digest),
                a.created.as_deref().map_or("-".to_string(), cell),
                match a.recorded_by {
                    Witness::Host => "respawn",
                    Witness::Plugin => "plugin",
                }
            );
        }
    }
    if !r.params.is_empty() {
        let _ = writeln!(out, "\n## Params\n\n| name | value |\n|---|---|");
        for (k, v) in &r.params {
            let _ = writeln!(out, "| {k} | `{v}` |");
        }
    }
    if !r.plugins.is_empty() {
        let _ = writeln!(
            out,
            "\n## Plugins\n\n| alias | source | sha256 |\n|---|---|---|"
        );
        for (k, p) in &r.plugins {
            let _ = writeln!(out, "| {k} | `{}` | `{}` |", p.source, p.sha256);
        }
    }
    table(&mut out, "Steps", &r.steps);
    table(&mut out, "Verifications", &r.verifications);
    let _ = writeln!(out, "\n## Teardown: {}", r.teardown.status);
    if !r.teardown.steps.is_empty() {
        table(&mut out, "Teardown steps", &r.teardown.steps);
    }
    for (i, again) in r.reverifications.iter().enumerate() {
        let title = format!(
            "Re-verification {} ({} to {}): {:?}",
            i + 1,
            again.started_at,
            again.finished_at,
            again.outcome
        );
        table(&mut out, &title, &again.verifications);
    }
    out
}

fn table(out: &mut String, title: &str, steps: &[StepRecord]) {
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## {title}\n\n| step | uses | status | attempts | started | finished | detail |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for s in steps {
        let detail = match (&s.error, &s.note) {
            (Some(e), _) => format!("{}: {}", e.kind, e.message),
            (None, Some(n)) => n.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:?} | {} | {} | {} | {} |",
            s.id,
            s.uses.as_deref().unwrap_or("-"),
            s.status,
            s.attempts,
            s.started_at.as_deref().unwrap_or("-"),
            s.finished_at.as_deref().unwrap_or("-"),
            detail.replace('|', "\\|").replace('\n', " ")
        );
    }
}
