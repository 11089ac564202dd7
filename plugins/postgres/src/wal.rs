//! The WAL a restore needs, from the archive store to a staging directory beside the data directory, where the
//! server's `restore_command` copies each segment from. A gap in the archive is found here and named, rather than
//! left for the server to stop at silently.

use std::io::Write;

use respawn_plugin_sdk::{Failure, log, progress, stores};
use sha2::{Digest, Sha256};

/// Bytes read from the store per `get-range` call.
const CHUNK: u64 = 16 << 20;

/// A WAL segment file name: timeline, log and segment, each 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl Segment {
    pub fn parse(name: &str) -> Option<Segment> {
        if name.len() != 24
            || !name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        {
            return None;
        }
        let part = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).ok();
        Some(Segment {
            timeline: part(0)?,
            log: part(8)?,
            seg: part(16)?,
        })
    }

    pub fn name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// Position in the WAL, whatever the timeline, for segments of `size` bytes.
    pub fn number(&self, size: u64) -> u64 {
        let per_log = 0x1_0000_0000 / size.max(1);
        u64::from(self.log) * per_log + u64::from(self.seg)
    }

    fn at(timeline: u32, number: u64, size: u64) -> Segment {
        let per_log = 0x1_0000_0000 / size.max(1);
        Segment {
            timeline,
            log: (number / per_log) as u32,
            seg: (number % per_log) as u32,
        }
    }
}

/// What the archive holds that a restore from `start` can use.
#[derive(Debug, Default)]
pub struct Plan {
    /// Object keys to stage, in order: timeline history files, then segments from `start` on.
    pub keys: Vec<(String, u64)>,
    /// The first segment missing between `start` and the newest one archived on `start`'s timeline.
    pub gap: Option<String>,
    /// The newest segment archived on `start`'s timeline.
    pub last: Option<String>,
    pub bytes: u64,
}

/// Lists the archive under `prefix` and picks what a restore from segment `start` needs.
pub fn plan(store: &str, prefix: &str, start: Segment) -> Result<Plan, Failure> {
    let listed = stores::list(store, prefix)?;
    let mut plan = Plan::default();
    let mut segments = Vec::new();
    let mut size = 16 << 20;
    for object in &listed {
        let name = object.key.rsplit('/').next().unwrap_or(&object.key);
        if name.ends_with(".history") {
            plan.keys.push((object.key.clone(), object.size));
        } else if let Some(segment) = Segment::parse(name)
            && segment.timeline >= start.timeline
        {
            if segment.timeline == start.timeline && object.size > 0 {
                size = object.size;
            }
            segments.push((segment, object.key.clone(), object.size));
        }
    }
    segments.sort();
    let start_number = start.number(size);
    let on_timeline: Vec<u64> = segments
        .iter()
        .filter(|(s, _, _)| s.timeline == start.timeline && s.number(size) >= start_number)
        .map(|(s, _, _)| s.number(size))
        .collect();
    if let Some(&newest) = on_timeline.last() {
        plan.last = Some(Segment::at(start.timeline, newest, size).name());
        if let Some((expected, _)) = (start_number..)
            .zip(on_timeline.iter())
            .find(|(expected, number)| **number != *expected)
        {
            plan.gap = Some(Segment::at(start.timeline, expected, size).name());
        }
    } else {
        plan.gap = Some(start.name());
    }
    for (segment, key, bytes) in segments {
        if segment.number(size) >= start_number {
            plan.bytes += bytes;
            plan.keys.push((key, bytes));
        }
    }
    Ok(plan)
}

/// Copies every key of `plan` into `dir` (a granted directory), each written whole under a temporary name and
/// then renamed, so the server never reads half a segment. A `<key>.sha256` beside a segment in the archive is
/// checked. Returns the number of files staged.
pub fn stage(store: &str, plan: &Plan, dir: &str) -> Result<u64, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let mut done = 0u64;
    for (key, size) in &plan.keys {
        let name = key.rsplit('/').next().unwrap_or(key);
        let path = format!("{dir}/{name}");
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == *size) {
            done += size;
            continue;
        }
        let partial = format!("{path}.partial");
        let mut file = std::fs::File::create(&partial).map_err(|e| io(&partial, &e))?;
        // Hashing in the plugin costs as much as the copy: only when the archive recorded a sha256 to check.
        let sidecar = format!("{key}.sha256");
        let mut hasher = stores::head(store, &sidecar)?.map(|_| Sha256::new());
        let mut offset = 0;
        loop {
            let bytes = stores::get_range(store, key, offset, CHUNK)?;
            if bytes.is_empty() {
                break;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&bytes);
            }
            file.write_all(&bytes).map_err(|e| io(&partial, &e))?;
            offset += bytes.len() as u64;
            done += bytes.len() as u64;
            progress::report(done, Some(plan.bytes), "staging WAL");
            if (bytes.len() as u64) < CHUNK {
                break;
            }
        }
        file.sync_all().map_err(|e| io(&partial, &e))?;
        if offset != *size {
            return Err(Failure::unavailable(format!(
                "{store}:{key}: read {offset} bytes of the {size} the archive lists"
            )));
        }
        if let Some(hasher) = hasher {
            let recorded = String::from_utf8_lossy(&stores::get(store, &sidecar)?)
                .trim()
                .to_string();
            let actual: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !recorded.starts_with(&actual) {
                let _ = std::fs::remove_file(&partial);
                return Err(Failure::verification_failed(format!(
                    "{store}:{key}: sha256 {actual}, the archive records {recorded}"
                )));
            }
        }
        std::fs::rename(&partial, &path).map_err(|e| io(&path, &e))?;
    }
    log::info(&format!(
        "staged {} WAL files ({} bytes) in {dir}",
        plan.keys.len(),
        plan.bytes
    ));
    Ok(plan.keys.len() as u64)
}

fn io(path: &str, e: &std::io::Error) -> Failure {
    Failure::internal(format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::Segment;

    #[test]
    fn segment_names_parse_and_count_across_a_log_boundary() {
        let s = Segment::parse("0000000100000000000000FF").unwrap();
        let size = 16 << 20;
        let next = Segment::at(1, s.number(size) + 1, size);
        assert_eq!(next.name(), "000000010000000100000000");
        assert!(Segment::parse("00000001000000000000000g").is_none());
        assert!(Segment::parse("000000010000000000000001.partial").is_none());
    }
}
