//! Progress bars on stderr: one for the whole run, one line per running step (bytes and throughput for data
//! copies). Shown only on a TTY and without `--no-progress`. Log lines suspend the bars while they print, so
//! tracing output does not tear them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Observer;
use crate::engine::Phase;
use crate::report::record::StepStatus;

/// The bars of the current run, if any, so the log writer can suspend them.
static ACTIVE: OnceLock<MultiProgress> = OnceLock::new();

/// Runs `f` with the bars hidden (used by the log writer).
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match ACTIVE.get() {
        Some(multi) => multi.suspend(f),
        None => f(),
    }
}

/// Whether bars should be drawn: stderr is a terminal and the user did not ask for none.
pub fn wanted(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: Mutex<HashMap<String, (ProgressBar, Instant)>>,
}

impl Bars {
    /// Bars for a run of `total` step phases (apply, verify and destroy calls).
    pub fn new(total: u64) -> Arc<Bars> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let _ = ACTIVE.set(multi.clone());
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template("{elapsed:>5} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Arc::new(Bars {
            multi,
            overall,
            lines: Mutex::new(HashMap::new()),
        })
    }

    /// Updates a step's line with bytes moved (from the host's progress reports).
    pub fn data(&self, step: &str, done: u64, total: Option<u64>, message: &str) {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bar, started)) = lines.get(step) {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = indicatif::HumanBytes((done as f64 / secs) as u64);
            let of = total
                .map(|t| format!(" of {}", indicatif::HumanBytes(t)))
                .unwrap_or_default();
            bar.set_message(format!(
                "{message}: {}{of} at {rate}/s",
                indicatif::HumanBytes(done)
            ));
        }
    }

    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Observer for Bars {
    fn step_started(&self, id: &str, phase: Phase, attempt: u32) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let bar = lines
            .entry(id.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                (bar, Instant::now())
            })
            .0
            .clone();
        let retry = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        bar.set_prefix(format!("{id} {phase:?}{retry}").to_lowercase());
    }

    fn step_finished(&self, id: &str, phase: Phase, status: StepStatus) {
        if let Some((bar, _)) = self
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            bar.finish_and_clear();
        }
        self.overall.inc(1);
        if status != StepStatus::Succeeded {
            self.overall
                .set_message(format!("({id} {phase:?}: {status:?})").to_lowercase());
        }
    }
}
