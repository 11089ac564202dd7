//! Progress of long data moves (restores and compares): bytes done, the total, and the throughput, handed to the
//! caller's sink (the progress bars on a terminal) and, when stderr is not a terminal, written to the log every
//! [`LOG_EVERY`], so that a long restore in CI is not silent.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Receives (bytes done, total bytes, what is happening).
pub type ProgressFn = Arc<dyn Fn(u64, Option<u64>, &str) + Send + Sync>;

/// How often a progress line goes to the log when nobody watches a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the sink is told: often enough for a smooth bar, rarely enough to cost nothing per chunk.
const SINK_EVERY: Duration = Duration::from_millis(100);

/// Counts bytes of one data move and reports them.
pub struct Meter {
    what: String,
    total: Option<u64>,
    done: AtomicU64,
    /// The first byte: throughput counts from here, not from when the meter was made (an unpack's meter is made
    /// before the fetch that precedes it).
    started: OnceLock<Instant>,
    /// When the sink and the log were last told.
    last: Mutex<(Instant, Instant)>,
    sink: Option<ProgressFn>,
    log: bool,
}

impl Meter {
    pub fn new(
        what: impl Into<String>,
        total: Option<u64>,
        sink: Option<ProgressFn>,
    ) -> Arc<Meter> {
        let now = Instant::now();
        Arc::new(Meter {
            what: what.into(),
            total,
            done: AtomicU64::new(0),
            started: OnceLock::new(),
            last: Mutex::new((now, now)),
            sink,
            log: !std::io::stderr().is_terminal(),
        })
    }

    /// Adds `n` bytes; tells the sink and the log when their time has come.
    pub fn add(&self, n: u64) {
        self.started.get_or_init(Instant::now);
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = self.last.try_lock() else {
            return; // another thread is reporting right now
        };
        let now = Instant::now();
        if let Some(sink) = &self.sink
            && now.duration_since(last.0) >= SINK_EVERY
        {
            last.0 = now;
            sink(done, self.total, &self.what);
        }
        if self.log && now.duration_since(last.1) >= LOG_EVERY {
            last.1 = now;
            tracing::info!(target: "respawn::progress", "{}", self.line(done));
        }
    }

    /// `what: 512.0 MiB of 1.0 GiB (50%), 210.3 MiB/s`.
    fn line(&self, done: u64) -> String {
        let secs = self
            .started
            .get()
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
            .max(0.001);
        let rate = mib(done as f64 / secs);
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {} of {} ({}%), {rate}/s",
                self.what,
                mib(done as f64),
                mib(total as f64),
                done * 100 / total
            ),
            _ => format!("{}: {}, {rate}/s", self.what, mib(done as f64)),
        }
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
}

/// A reader that counts what passes through it into a [`Meter`].
pub(crate) struct Counted<R> {
    pub(crate) inner: R,
    pub(crate) meter: Arc<Meter>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.add(n as u64);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counted<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Heard = Arc<Mutex<Vec<(u64, Option<u64>, String)>>>;

    #[test]
    fn the_sink_hears_bytes_total_and_what() {
        let heard: Heard = Arc::default();
        let to = heard.clone();
        let sink: ProgressFn = Arc::new(move |done, total, what: &str| {
            to.lock().unwrap().push((done, total, what.to_string()))
        });
        let meter = Meter::new("unpacking x", Some(100), Some(sink));
        std::thread::sleep(SINK_EVERY);
        meter.add(40);
        assert_eq!(
            heard.lock().unwrap().as_slice(),
            [(40, Some(100), "unpacking x".to_string())]
        );
        assert!(
            meter
                .line(40)
                .starts_with("unpacking x: 0.0 MiB of 0.0 MiB (40%), "),
            "{}",
            meter.line(40)
        );
    }
}
