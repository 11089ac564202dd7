//! Recovery points and RPO per data source (DESIGN.md §6).
//!
//! A data source is a step that restored data. Its recovery point is the newest moment whose data it brought
//! back: the `recovery_point` it outputs from apply (RFC 3339 with a UTC offset), or else the newest `created` time
//! of the images it restored through the host's `images.unpack`. Its RPO is the run's start minus that moment,
//! and the run's RPO is the worst (largest) of them:
//!
//! ```
//! use respawn_engine::recovery::{points, worst};
//! use respawn_journal::replay::ImageCreated;
//!
//! let images = [
//!     ImageCreated { step: "site".into(), created: "2026-05-01T11:00:00Z".into() },
//!     ImageCreated { step: "catalog".into(), created: "2026-05-01T11:57:00Z".into() },
//! ];
//! let sources = points("2026-05-01T12:00:00Z", &[], &images);
//! assert_eq!(sources.len(), 2);
//! assert_eq!(worst(&sources), Some(3600.0)); // the site's data is an hour old
//! ```
//!
//! A `recovery_point` output that is not such a time, or lies in the future, fails its step
//! ([`check_outputs`]): an RPO measured from a wrong moment is worse than none, and the report of a drill is
//! evidence.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use respawn_journal::replay::ImageCreated;
use respawn_report::record::{RecoveryFrom, RecoveryPoint, StepRecord, StepStatus};

use crate::{Phase, StepCall, StepError, StepResult};

/// The output a step names its recovery point with.
pub const OUTPUT: &str = "recovery_point";

/// How far past the moment a step finished its `recovery_point` may lie: the clocks of the machine that made the
/// backup and of the runner may differ by this much (NTP keeps them well within it); further is a wrong time.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How much of a bad output value an error quotes: enough to recognise it, not an output's megabyte.
const QUOTED: usize = 80;

/// An image the host restored for a step in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredImage {
    pub step: String,
    /// The image config's `created`.
    pub created: SystemTime,
}

impl RestoredImage {
    /// As the journal records it (`image-restored`): `created` in RFC 3339, UTC, whole seconds.
    pub fn journaled(&self) -> ImageCreated {
        ImageCreated {
            step: self.step.clone(),
            created: humantime::format_rfc3339_seconds(self.created).to_string(),
        }
    }
}

/// Fails an apply whose `recovery_point` output is not an RFC 3339 time with an offset, or is in the future by
/// more than [`CLOCK_SKEW`]: a broken contract, naming the step, the output and the value. `null` counts as absent.
pub fn check_outputs(call: &StepCall, result: StepResult) -> StepResult {
    let Ok(outputs) = &result.outcome else {
        return result;
    };
    if call.phase != Phase::Apply {
        return result;
    }
    let Some(value) = outputs.get(OUTPUT).filter(|v| !v.is_null()) else {
        return result;
    };
    let problem = match value.as_str() {
        None => Some("not a string".to_string()),
        Some(text) => match parse_rfc3339(text) {
            Err(why) => Some(why),
            Ok(at) => at
                .duration_since(SystemTime::now())
                .ok()
                .filter(|ahead| *ahead > CLOCK_SKEW)
                .map(|ahead| {
                    format!(
                        "{} in the future (a recovery point is a moment the data already existed; clocks may \
                         differ by up to {})",
                        humantime::format_duration(Duration::from_secs(ahead.as_secs())),
                        humantime::format_duration(CLOCK_SKEW)
                    )
                }),
        },
    };
    let Some(problem) = problem else {
        return result;
    };
    let mut quoted = value.to_string();
    if quoted.len() > QUOTED {
        let mut end = QUOTED;
        while !quoted.is_char_boundary(end) {
            end -= 1;
        }
        quoted.truncate(end);
        quoted.push('…');
    }
    StepResult {
        outcome: Err(StepError::Contract {
            plugin: call.plugin.clone(),
            step: call.step_id.clone(),
            message: format!(
                "output `{OUTPUT}` is {quoted}: {problem}; it must be an RFC 3339 time with a UTC offset, e.g. \
                 2026-05-01T12:00:00Z, the newest moment whose data the step restored"
            ),
        }),
        state: result.state,
    }
}

/// The data sources of a run that started at `started_at`: each succeeded step (in `steps`' order) that output
/// `recovery_point`, then each step that restored images without one, with the newest of its images.
pub fn points(
    started_at: &str,
    steps: &[StepRecord],
    images: &[ImageCreated],
) -> Vec<RecoveryPoint> {
    let Ok(started) = parse_rfc3339(started_at) else {
        tracing::warn!("the run's start {started_at:?} is not an RFC 3339 time: no RPO");
        return Vec::new();
    };
    let rpo = |at: SystemTime| started.duration_since(at).map_or(0.0, |d| d.as_secs_f64());
    // The newest image of each step.
    let mut newest: BTreeMap<&str, (SystemTime, &str)> = BTreeMap::new();
    for image in images {
        let Ok(at) = parse_rfc3339(&image.created) else {
            tracing::warn!(step = %image.step, "an image's created time {:?} does not parse", image.created);
            continue;
        };
        let slot = newest.entry(&image.step).or_insert((at, &image.created));
        if at > slot.0 {
            *slot = (at, &image.created);
        }
    }
    let mut sources = Vec::new();
    for step in steps.iter().filter(|s| s.status == StepStatus::Succeeded) {
        let Some(text) = step.outputs["outputs"][OUTPUT].as_str() else {
            continue;
        };
        // Checked when the step ran; a journal from an older runner may hold one that does not parse.
        let Ok(at) = parse_rfc3339(text) else {
            tracing::warn!(step = %step.id, "output `{OUTPUT}` {text:?} does not parse: not a source");
            continue;
        };
        // The step's own word wins over the images it restored.
        newest.remove(step.id.as_str());
        sources.push(RecoveryPoint {
            step: step.id.clone(),
            recovery_point: text.to_string(),
            rpo_seconds: rpo(at),
            from: RecoveryFrom::Output,
        });
    }
    sources.extend(newest.into_iter().map(|(step, (at, text))| RecoveryPoint {
        step: step.to_string(),
        recovery_point: text.to_string(),
        rpo_seconds: rpo(at),
        from: RecoveryFrom::Image,
    }));
    // In the workflow's order; images of steps outside it (a verification's) last, by name.
    sources.sort_by_key(|p| {
        steps
            .iter()
            .position(|s| s.id == p.step)
            .unwrap_or(usize::MAX)
    });
    sources
}

/// The run's RPO: the worst of its sources; `None` when it restored none.
pub fn worst(sources: &[RecoveryPoint]) -> Option<f64> {
    sources.iter().map(|p| p.rpo_seconds).reduce(f64::max)
}

/// An RFC 3339 date-time (section 5.6): `2026-05-01T12:00:00Z`, with an optional fraction and a `Z` or `±HH:MM`
/// offset (`t` and `z` in lower case too). humantime reads only UTC, so the offset is applied here.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err("not of the form YYYY-MM-DDTHH:MM:SS".into());
    }
    let (local, east) = split_offset(text)?;
    if local.len() < 19 {
        return Err("not of the form YYYY-MM-DDTHH:MM:SS".into());
    }
    let utc = format!("{}T{}Z", &local[..10], &local[11..]);
    let at = humantime::parse_rfc3339(&utc).map_err(|e| e.to_string())?;
    let shift = Duration::from_secs(east.unsigned_abs());
    // Local time = UTC + offset.
    let at = if east >= 0 {
        at.checked_sub(shift)
    } else {
        at.checked_add(shift)
    };
    at.ok_or_else(|| "out of range".to_string())
}

/// The date-time before its offset, and the offset in seconds east of UTC.
fn split_offset(text: &str) -> Result<(&str, i64), String> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Ok((local, 0));
    }
    let no_offset = || "no UTC offset (`Z` or `+HH:MM`)".to_string();
    let at = text.len().checked_sub(6).ok_or_else(no_offset)?;
    let (Some(local), Some(offset)) = (text.get(..at), text.get(at..)) else {
        return Err(no_offset());
    };
    let o = offset.as_bytes();
    if !matches!(o[0], b'+' | b'-') || o[3] != b':' {
        return Err(no_offset());
    }
    let two = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let (Some(hours), Some(minutes)) = (two(&offset[1..3]), two(&offset[4..6])) else {
        return Err(no_offset());
    };
    if hours > 23 || minutes > 59 {
        return Err(format!("offset {offset} out of range"));
    }
    let east = hours * 3600 + minutes * 60;
    Ok((local, if o[0] == b'-' { -east } else { east }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn rfc3339_offsets_and_fractions_are_read() {
        let noon = at("2026-05-01T12:00:00Z");
        assert_eq!(at("2026-05-01T14:00:00+02:00"), noon);
        assert_eq!(at("2026-05-01T07:30:00-04:30"), noon);
        assert_eq!(at("2026-05-01t12:00:00z"), noon);
        assert_eq!(at("2026-05-01T12:00:00.000+00:00"), noon);
        assert_eq!(
            at("2026-05-01T12:00:00.25Z"),
            noon + Duration::from_millis(250)
        );
        for bad in [
            "yesterday",
            "2026-05-01",
            "2026-05-01T12:00:00",
            "2026-05-01 12:00:00Z",
            "2026-13-01T12:00:00Z",
            "2026-05-01T12:00:00+2:00",
            "2026-05-01T12:00:00+24:00",
            "2026-05-01T12:00:00éZ",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} parsed");
        }
    }

    fn succeeded(id: &str, outputs: serde_json::Value) -> StepRecord {
        let mut r = StepRecord::new(id, None);
        r.status = StepStatus::Succeeded;
        r.outputs = serde_json::json!({ "params": {}, "outputs": outputs });
        r
    }

    fn image(step: &str, created: &str) -> ImageCreated {
        ImageCreated {
            step: step.into(),
            created: created.into(),
        }
    }

    /// Each step is one source; a step's output wins over its images; a step's newest image counts; the run's
    /// RPO is the oldest source's.
    #[test]
    fn each_step_is_a_source_and_the_worst_is_the_runs() {
        let steps = [
            succeeded(
                "db",
                serde_json::json!({ "recovery_point": "2026-05-01T13:55:00+02:00" }),
            ),
            succeeded("site", serde_json::json!({})),
            succeeded(
                "catalog",
                serde_json::json!({ "recovery_point": "2026-05-01T11:57:00Z" }),
            ),
            succeeded("plain", serde_json::json!({ "recovery_point": null })),
        ];
        let images = [
            image("site", "2026-05-01T10:00:00Z"),
            image("site", "2026-05-01T11:00:00Z"),
            image("catalog", "2020-01-01T00:00:00Z"),
            image("verify-copy", "2026-05-01T11:59:00Z"),
        ];
        let sources = points("2026-05-01T12:00:00.000Z", &steps, &images);
        let got: Vec<_> = sources
            .iter()
            .map(|p| {
                (
                    p.step.as_str(),
                    p.recovery_point.as_str(),
                    p.rpo_seconds,
                    p.from,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "db",
                    "2026-05-01T13:55:00+02:00",
                    300.0,
                    RecoveryFrom::Output
                ),
                ("site", "2026-05-01T11:00:00Z", 3600.0, RecoveryFrom::Image),
                (
                    "catalog",
                    "2026-05-01T11:57:00Z",
                    180.0,
                    RecoveryFrom::Output
                ),
                (
                    "verify-copy",
                    "2026-05-01T11:59:00Z",
                    60.0,
                    RecoveryFrom::Image
                ),
            ]
        );
        assert_eq!(worst(&sources), Some(3600.0));
        assert_eq!(worst(&[]), None);
        // Data newer than the run's start (a snapshot taken during the run) is no loss at all.
        let fresh = points("2026-05-01T11:00:00Z", &steps[2..3], &[]);
        assert_eq!(fresh[0].rpo_seconds, 0.0);
    }
}
