//! Services: long-running programs a run starts through the exec grant. They are tracked so that destroy, the end
//! of the run, or an interrupt stops them, and a resumed run takes over the ones its journal says are finished
//! steps' and stops every other one the dead runner left behind.
//!
//! Each service's environment carries [`RUN_ENV`] and [`STEP_ENV`]. A runner killed between starting a service and
//! journaling it leaves a process no event names; the marker is how a resumed run still finds it (Linux: it reads
//! `/proc/PID/environ` of its own user's processes).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::{ExecError, Request, command};
use respawn_journal::replay::ServiceRecord;

/// Environment variable naming the run that started a service. Set by the host; a plugin cannot override it.
pub const RUN_ENV: &str = "RESPAWN_RUN";
/// Environment variable naming the step that started a service.
pub const STEP_ENV: &str = "RESPAWN_STEP";

/// How long a resumed run waits for a stopped leftover service to go (it is not our child: it cannot be waited
/// for). Default 2 s: SIGKILL takes effect at once; this only covers the kernel's reaping by init.
const GONE_WAIT: Duration = Duration::from_secs(2);

/// A service the run stops at destroy: a child of this runner, or one adopted from a runner that died.
enum Tracked {
    Child(tokio::process::Child),
    /// Started by an earlier runner of this run (per the journal) and still running.
    Adopted {
        start_ticks: Option<u64>,
    },
}

/// Services started by a run: pid -> (step, process). Stopped at destroy, and all of them when the runner
/// drops the tracker.
#[derive(Clone, Default)]
pub struct Services {
    inner: Arc<Mutex<BTreeMap<u32, (String, Tracked)>>>,
}

/// A process that carries a run's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: u32,
    pub step: String,
    pub start_ticks: Option<u64>,
}

/// What [`Services::recover`] did with the services a dead runner left.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Services of steps that finished: tracked now, stopped at destroy as if this runner had started them.
    pub adopted: Vec<(String, u32)>,
    /// Services of steps that had not finished (they run again and start their own), and services no event
    /// names: stopped.
    pub stopped: Vec<(String, u32)>,
}

impl Services {
    /// Starts a long-running program with output discarded, marked with `run_id` and `step`. The child is
    /// killed if the tracker is dropped.
    pub fn spawn(&self, run_id: &str, step: &str, req: Request<'_>) -> Result<u32, ExecError> {
        let io = |e: std::io::Error| ExecError::Io {
            program: req.name.to_string(),
            message: e.to_string(),
        };
        let child = command(&req)
            .env(RUN_ENV, run_id)
            .env(STEP_ENV, step)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io)?;
        let pid = child.id().unwrap_or(0);
        self.lock()
            .insert(pid, (step.to_string(), Tracked::Child(child)));
        Ok(pid)
    }

    /// Takes over a service that an earlier runner of this run started, if that very process still runs (its
    /// start time tells it from a process that reused the pid). Returns whether it was adopted.
    pub fn adopt(&self, step: &str, pid: u32, start_ticks: Option<u64>) -> bool {
        if !same_process(pid, start_ticks) {
            return false;
        }
        self.lock()
            .insert(pid, (step.to_string(), Tracked::Adopted { start_ticks }));
        true
    }

    /// Settles the services a dead runner of `run_id` left on this machine: those the journal `recorded` for a
    /// step in `finished` are adopted; every other one, recorded or only marked, is stopped, because its step
    /// runs again and starts its own (a leftover would hold its port).
    pub async fn recover(
        &self,
        run_id: &str,
        recorded: &[ServiceRecord],
        finished: &BTreeSet<String>,
    ) -> Recovered {
        let mut done = Recovered::default();
        let mut seen = BTreeSet::new();
        for s in recorded.iter().filter(|s| finished.contains(&s.step)) {
            if self.adopt(&s.step, s.pid, s.start_ticks) {
                done.adopted.push((s.step.clone(), s.pid));
                seen.insert(s.pid);
            }
        }
        let unfinished = recorded
            .iter()
            .filter(|s| !finished.contains(&s.step))
            .map(|s| Marked {
                pid: s.pid,
                step: s.step.clone(),
                start_ticks: s.start_ticks,
            });
        for leftover in unfinished.chain(marked(run_id)) {
            if !seen.insert(leftover.pid) || !same_process(leftover.pid, leftover.start_ticks) {
                continue;
            }
            kill_and_wait(leftover.pid, leftover.start_ticks, GONE_WAIT).await;
            done.stopped.push((leftover.step, leftover.pid));
        }
        done
    }

    /// Stops a tracked service. A pid this run did not start is refused; an exited one is fine.
    pub async fn stop(&self, pid: u32) -> Result<bool, ExecError> {
        let tracked = self.lock().remove(&pid);
        match tracked {
            Some((_, process)) => {
                stop(pid, process).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Kills every tracked service (runner exit, interrupted drill).
    pub async fn stop_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for (pid, (_, process)) in all {
            stop(pid, process).await;
        }
    }

    /// Lets every service run on after this runner exits: another runner took the run over and owns them.
    pub fn release_all(&self) {
        for (_, (_, process)) in std::mem::take(&mut *self.lock()) {
            if let Tracked::Child(child) = process {
                // Dropping would kill it (kill_on_drop); forgetting leaves it to the new owner.
                std::mem::forget(child);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (String, Tracked)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn stop(pid: u32, process: Tracked) {
    match process {
        Tracked::Child(mut child) => {
            let _ = child.kill().await;
        }
        Tracked::Adopted { start_ticks } => {
            // Not our child, so it cannot be waited for; give it a moment to go.
            kill_and_wait(pid, start_ticks, Duration::from_millis(500)).await;
        }
    }
}

/// SIGKILLs `pid` if it is still the process started at `start_ticks`, then waits up to `wait` for it to go.
async fn kill_and_wait(pid: u32, start_ticks: Option<u64>, wait: Duration) {
    // Checked right before the kill: never signal a process that merely reused the pid.
    if !same_process(pid, start_ticks) {
        return;
    }
    // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let started = std::time::Instant::now();
    while process_start_ticks(pid).is_some() && started.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` runs and is the process that started at `start_ticks` (any process, when that is unknown).
fn same_process(pid: u32, start_ticks: Option<u64>) -> bool {
    match (process_start_ticks(pid), start_ticks) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`); `None` when it is gone
/// or a zombie (Linux only).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is at index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The running processes whose environment names `run_id` in [`RUN_ENV`]. Processes of other users cannot be
/// read and are passed over: services run as the runner's user.
pub fn marked(run_id: &str) -> Vec<Marked> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = format!("{RUN_ENV}={run_id}");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&want.as_bytes()) {
            continue;
        }
        let step = vars
            .iter()
            .find_map(|v| v.strip_prefix(format!("{STEP_ENV}=").as_bytes()))
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        // Read before any decision, so a pid reused after this scan is never signalled.
        if let Some(start_ticks) = process_start_ticks(pid) {
            found.push(Marked {
                pid,
                step,
                start_ticks: Some(start_ticks),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    /// A leftover the journal never named is found by its marker and stopped; one of a finished step is adopted.
    #[tokio::test]
    async fn recover_adopts_finished_steps_services_and_stops_unnamed_ones() {
        let run = format!("test-recover-{}", std::process::id());
        let mut unnamed = sleeper(&[(RUN_ENV, &run), (STEP_ENV, "web")]);
        let mut kept = sleeper(&[(RUN_ENV, &run), (STEP_ENV, "db")]);
        let mut other_run = sleeper(&[(RUN_ENV, "another-run"), (STEP_ENV, "web")]);
        let found = marked(&run);
        assert_eq!(found.len(), 2, "{found:?}");
        let recorded = [ServiceRecord {
            step: "db".into(),
            pid: kept.id(),
            program: "sleep".into(),
            start_ticks: process_start_ticks(kept.id()),
        }];
        let finished = BTreeSet::from(["db".to_string()]);
        let services = Services::default();
        let done = services.recover(&run, &recorded, &finished).await;
        assert_eq!(done.adopted, vec![("db".to_string(), kept.id())]);
        assert_eq!(done.stopped, vec![("web".to_string(), unnamed.id())]);
        // The stopped one is our child here, so it lingers as a zombie until reaped.
        assert!(
            unnamed.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        assert!(
            kept.try_wait().unwrap().is_none(),
            "the adopted service runs on"
        );
        assert!(
            other_run.try_wait().unwrap().is_none(),
            "another run's service is left alone"
        );
        services.stop_all().await;
        assert!(kept.wait().unwrap().code().is_none());
        let _ = other_run.kill();
        let _ = other_run.wait();
    }
}
