//! `recovery_point`: the newest `created` time among the image configs a step brought back, the moment whose
//! data the step restored (an image holds what was in it when it was built).

use std::io::Read;

use respawn_plugin_sdk::log;

use crate::copy::Graph;
use crate::source::Source;

/// Largest image config read for its `created` time.
const MAX_CONFIG: u64 = 1 << 20;
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The newest `created` of the configs of `graph`'s images (referrers and signatures aside), as written there.
pub fn newest(source: &mut dyn Source, graph: &Graph) -> Option<(i64, String)> {
    let mut newest: Option<(i64, String)> = None;
    for node in graph.nodes.iter().filter(|n| n.parsed.subject.is_none()) {
        for config in node
            .parsed
            .blobs
            .iter()
            .filter(|b| CONFIG_TYPES.contains(&b.media_type.as_str()))
        {
            if config.size > MAX_CONFIG {
                continue;
            }
            let mut bytes = Vec::new();
            let read = source.blob(config, 0, config.size).and_then(|mut r| {
                r.read_to_end(&mut bytes)
                    .map_err(|e| respawn_plugin_sdk::Failure::unavailable(e.to_string()))
            });
            if let Err(e) = read {
                log::debug(&format!("config {}: {}", config.digest, e.message));
                continue;
            }
            let created = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["created"].as_str().map(str::to_string));
            if let Some(text) = created
                && let Some(seconds) = rfc3339_seconds(&text)
                && newest.as_ref().is_none_or(|(s, _)| seconds > *s)
            {
                newest = Some((seconds, text));
            }
        }
    }
    newest
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`, fractions and offsets allowed).
pub fn rfc3339_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_seconds;

    #[test]
    fn rfc3339_times_read_as_epoch_seconds() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            rfc3339_seconds("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        assert_eq!(rfc3339_seconds("2024-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_seconds("yesterday"), None);
    }
}
