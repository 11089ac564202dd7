//! Services: long-running programs a run starts through the exec grant. They are tracked so that destroy, the end
//! of the run, or an interrupt stops them, and a resumed run takes over the ones its journal says are finished
//! steps' and stops every other one the dead runner left behind.
//!
//! A failover's services, and a kept drill's, outlive the runner: they are *detached*, started in a session and
//! process group of their own (numbered by their pid) with stdin closed and stdout and stderr appended to log
//! files, and the runner releases them when it exits. `respawn destroy` adopts them from the journal and stops
//! each by its process group, after checking the leader's start time. A drill's services are children of the
//! runner, killed with it whatever happens.
//!
//! Each service's environment carries [`RUN_ENV`] and [`STEP_ENV`]. A runner killed between starting a service and
//! journaling it leaves a process no event names; the marker is how a resumed run still finds it (Linux: it reads
//! `/proc/PID/environ` of its own user's processes).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::path::Path;

use super::process::{ExecError, Request, command};
use respawn_journal::ServiceLogs;
use respawn_journal::replay::ServiceRecord;

/// Environment variable naming the run that started a service. Set by the host; a plugin cannot override it.
pub const RUN_ENV: &str = "RESPAWN_RUN";
/// Environment variable naming the step that started a service.
pub const STEP_ENV: &str = "RESPAWN_STEP";

/// How long a resumed run waits for a stopped leftover service to go (it is not our child: it cannot be waited
/// for). Default 2 s: SIGKILL takes effect at once; this only covers the kernel's reaping by init.
const GONE_WAIT: Duration = Duration::from_secs(2);

/// How long a detached service's process group gets to go after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A service the run stops at destroy: a child of this runner, or one adopted from a runner that died.
enum Tracked {
    Child(tokio::process::Child),
    /// Started by an earlier runner of this run (per the journal) and still running.
    Adopted,
}

/// One tracked service.
struct Service {
    step: String,
    process: Tracked,
    start_ticks: Option<u64>,
    /// In its own session and process group: stopped by its group.
    detached: bool,
}

/// Services started by a run: pid -> service. Stopped at destroy; at the end of the run either all stopped (a
/// drill) or all released to run on (a failover, a kept drill).
#[derive(Clone, Default)]
pub struct Services {
    inner: Arc<Mutex<BTreeMap<u32, Service>>>,
    /// Whether services started from now on are detached.
    detach: bool,
}

impl Services {
    /// Whether the services this tracker starts outlive the runner.
    pub fn detaches(&self) -> bool {
        self.detach
    }
}

/// A service just started, as the journal records it.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub detached: bool,
    pub logs: Option<ServiceLogs>,
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
    /// A tracker whose services outlive the runner when `detach` (a failover, a kept drill).
    pub fn new(detach: bool) -> Services {
        Services {
            inner: Arc::default(),
            detach,
        }
    }

    /// Starts a long-running program marked with `run_id` and `step`, leading a process group of its own. A
    /// detached one leads a session of its own too and appends its output to `STEP.stdout.log` and
    /// `STEP.stderr.log` under `log_dir` (which the caller made and checked); any other one has its output
    /// discarded and is killed if the tracker is dropped.
    pub fn spawn(
        &self,
        run_id: &str,
        step: &str,
        req: Request<'_>,
        log_dir: &Path,
    ) -> Result<Started, ExecError> {
        let io = |e: std::io::Error| ExecError::Io {
            program: req.name.to_string(),
            message: e.to_string(),
        };
        let mut cmd = command(&req);
        cmd.env(RUN_ENV, run_id)
            .env(STEP_ENV, step)
            .stdin(Stdio::null());
        let logs = if self.detach {
            let path = |stream: &str| log_dir.join(format!("{step}.{stream}.log"));
            let (out, err) = (path("stdout"), path("stderr"));
            // The directory is the plugin's to write: never follow a link it may have planted there.
            let append = |p: &Path| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(p)
            };
            cmd.stdout(append(&out).map_err(io)?)
                .stderr(append(&err).map_err(io)?)
                .kill_on_drop(false);
            // SAFETY: runs in the forked child before exec; setsid(2) is async-signal-safe and touches no memory
            // shared with the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            Some(ServiceLogs {
                stdout: out.display().to_string(),
                stderr: err.display().to_string(),
            })
        } else {
            // A process group of its own, so stopping it stops what it started too.
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            None
        };
        let child = cmd.spawn().map_err(io)?;
        let pid = child.id().unwrap_or(0);
        let start_ticks = process_start_ticks(pid);
        self.lock().insert(
            pid,
            Service {
                step: step.to_string(),
                process: Tracked::Child(child),
                start_ticks,
                detached: self.detach,
            },
        );
        Ok(Started {
            pid,
            start_ticks,
            detached: self.detach,
            logs,
        })
    }

    /// Takes over a service that an earlier runner of this run started, if that very process still runs (its
    /// start time tells it from a process that reused the pid). Returns whether it was adopted.
    pub fn adopt(&self, record: &ServiceRecord) -> bool {
        if !same_process(record.pid, record.start_ticks) {
            return false;
        }
        self.lock().insert(
            record.pid,
            Service {
                step: record.step.clone(),
                process: Tracked::Adopted,
                start_ticks: record.start_ticks,
                detached: record.detached,
            },
        );
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
            if self.adopt(s) {
                done.adopted.push((s.step.clone(), s.pid));
                seen.insert(s.pid);
            }
        }
        let unfinished = recorded
            .iter()
            .filter(|s| !finished.contains(&s.step))
            .map(|s| {
                let marked = Marked {
                    pid: s.pid,
                    step: s.step.clone(),
                    start_ticks: s.start_ticks,
                };
                (marked, s.detached)
            });
        // An unjournaled leftover that leads its own session is a detached service: stopped with its group.
        let unnamed = marked(run_id).into_iter().map(|m| {
            let detached = session_of(m.pid) == Some(m.pid);
            (m, detached)
        });
        let adopted: BTreeSet<u32> = seen.clone();
        for (leftover, detached) in unfinished.chain(unnamed) {
            if !seen.insert(leftover.pid) || !same_process(leftover.pid, leftover.start_ticks) {
                continue;
            }
            // A child of an adopted service carries the run's marker too: it belongs to that service.
            if belongs_to(leftover.pid, &adopted) {
                continue;
            }
            if detached {
                stop_group(leftover.pid, leftover.start_ticks, GONE_WAIT).await;
            } else {
                kill_and_wait(leftover.pid, leftover.start_ticks, GONE_WAIT).await;
            }
            done.stopped.push((leftover.step, leftover.pid));
        }
        done
    }

    /// Stops a tracked service. A pid this run did not start is refused; an exited one is fine.
    pub async fn stop(&self, pid: u32) -> Result<bool, ExecError> {
        let tracked = self.lock().remove(&pid);
        match tracked {
            Some(service) => {
                stop(pid, service).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Kills every tracked service (runner exit, interrupted drill).
    pub async fn stop_all(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.lock()).into_iter().collect();
        for (pid, service) in all {
            stop(pid, service).await;
        }
    }

    /// Lets every service run on after this runner exits: a failover's or kept drill's (detached, journaled,
    /// stopped later by `respawn destroy`), or those of a run another runner took over and owns now.
    pub fn release_all(&self) {
        for (_, service) in std::mem::take(&mut *self.lock()) {
            if let Tracked::Child(child) = service.process {
                // Dropping would kill it (kill_on_drop); forgetting leaves it running.
                std::mem::forget(child);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Service>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn stop(pid: u32, service: Service) {
    tracing::debug!(step = %service.step, pid, detached = service.detached, "stopping a service");
    match service.process {
        // Our own child, not reaped yet: its group id cannot have been reused, so the group is the service's
        // even when the leader has already exited.
        Tracked::Child(mut child) => {
            signal_group(pid, libc::SIGTERM);
            let started = std::time::Instant::now();
            let mut reaped = false;
            while started.elapsed() < STOP_GRACE {
                reaped = reaped || matches!(child.try_wait(), Ok(Some(_)));
                if reaped && !group_alive(pid) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            signal_group(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
        }
        Tracked::Adopted if service.detached => {
            stop_group(pid, service.start_ticks, STOP_GRACE).await
        }
        Tracked::Adopted => {
            // Not our child, so it cannot be waited for; give it a moment to go.
            kill_and_wait(pid, service.start_ticks, Duration::from_millis(500)).await;
        }
    }
}

/// Sends `signal` to the process group led by `pid`.
fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: killpg(2) with a process group id and a signal number has no memory-safety preconditions.
    unsafe {
        libc::killpg(pid as libc::pid_t, signal);
    }
}

/// Whether any process, a zombie included, is still in the group led by `pid`.
fn group_alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the group has members.
    unsafe { libc::kill(-(pid as libc::pid_t), 0) == 0 }
}

/// The session `pid` belongs to.
fn session_of(pid: u32) -> Option<u32> {
    // SAFETY: getsid(2) only reads the process table.
    let sid = unsafe { libc::getsid(pid as libc::pid_t) };
    (sid > 0).then_some(sid as u32)
}

/// Whether `pid` is in the process group or session of one of `leaders` (a service's own children).
fn belongs_to(pid: u32, leaders: &BTreeSet<u32>) -> bool {
    // SAFETY: getpgid(2) only reads the process table.
    let group = unsafe { libc::getpgid(pid as libc::pid_t) };
    let in_group = group > 0 && group as u32 != pid && leaders.contains(&(group as u32));
    let in_session = session_of(pid).is_some_and(|s| s != pid && leaders.contains(&s));
    in_group || in_session
}

/// Stops the process group led by `pid` if the leader is still the process started at `start_ticks`: SIGTERM,
/// then SIGKILL to whatever of the group is left after `grace`. A reused pid, or a leader already gone, is never
/// signalled.
async fn stop_group(pid: u32, start_ticks: Option<u64>, grace: Duration) {
    if !same_process(pid, start_ticks) {
        return;
    }
    signal_group(pid, libc::SIGTERM);
    let started = std::time::Instant::now();
    while process_start_ticks(pid).is_some() && started.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The group is the one the leader made; members that outlive it are the service's own.
    signal_group(pid, libc::SIGKILL);
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

/// Whether `pid` runs and is the process that started at `start_ticks`. Without a recorded start time nothing
/// proves it is the process the run started, so it is not (a reused pid must never be signalled).
fn same_process(pid: u32, start_ticks: Option<u64>) -> bool {
    match (process_start_ticks(pid), start_ticks) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) | (None, _) => false,
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
            detached: false,
            logs: None,
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

    /// A process with no recorded start time is never taken for the run's: nothing proves it.
    #[tokio::test]
    async fn a_process_without_a_recorded_start_time_is_never_signalled() {
        let mut child = sleeper(&[]);
        assert!(!same_process(child.id(), None));
        let recorded = [ServiceRecord {
            step: "web".into(),
            pid: child.id(),
            program: "sleep".into(),
            start_ticks: None,
            detached: false,
            logs: None,
        }];
        let services = Services::default();
        let done = services.recover("run-x", &recorded, &BTreeSet::new()).await;
        assert!(done.stopped.is_empty(), "{done:?}");
        kill_and_wait(child.id(), None, Duration::from_millis(50)).await;
        assert!(child.try_wait().unwrap().is_none(), "it runs on");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Destroy adopts a journaled service only if its start time proves it is the process the run started: a
    /// process that merely has its pid is never adopted, so never signalled.
    #[tokio::test]
    async fn a_process_whose_start_time_differs_is_never_adopted_or_signalled() {
        let run = format!("test-reused-{}", std::process::id());
        let mut stranger = sleeper(&[]);
        let ticks = process_start_ticks(stranger.id()).expect("it runs");
        let recorded = [ServiceRecord {
            step: "web".into(),
            pid: stranger.id(),
            program: "python3".into(),
            start_ticks: Some(ticks + 1),
            detached: true,
            logs: None,
        }];
        let services = Services::new(false);
        let done = services
            .recover(&run, &recorded, &BTreeSet::from(["web".to_string()]))
            .await;
        assert!(
            done.adopted.is_empty() && done.stopped.is_empty(),
            "{done:?}"
        );
        assert!(
            !services.stop(stranger.id()).await.unwrap(),
            "not ours to stop"
        );
        stop_group(stranger.id(), Some(ticks + 1), Duration::from_millis(50)).await;
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "the stranger runs on"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
    }

    /// A detached service has a session of its own, logs to the given directory, and survives its tracker being
    /// released; stopping it takes its whole process group.
    #[tokio::test]
    async fn a_detached_service_outlives_its_tracker_and_stops_by_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::new(true);
        let req = Request {
            program: "/bin/sh".into(),
            name: "sh",
            args: &["-c".into(), "echo started; sleep 30 & sleep 30".into()],
            cwd: dir.path(),
            env: &[],
            user: None,
        };
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let started = services
            .spawn("run-1", "web", req, &dir.path().join("logs"))
            .unwrap();
        assert!(started.detached);
        let pid = started.pid;
        // SAFETY: getsid(2) only reads the process table.
        let sid = unsafe { libc::getsid(pid as libc::pid_t) };
        assert_eq!(sid, pid as libc::pid_t, "it leads a session of its own");
        services.release_all();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            same_process(pid, started.start_ticks),
            "released, it runs on"
        );
        let logs = started.logs.expect("detached services log");
        assert_eq!(std::fs::read_to_string(&logs.stdout).unwrap(), "started\n");

        let record = ServiceRecord {
            step: "web".into(),
            pid,
            program: "sh".into(),
            start_ticks: started.start_ticks,
            detached: true,
            logs: None,
        };
        let later = Services::new(false);
        assert!(later.adopt(&record), "the same process is adopted");
        assert!(later.stop(pid).await.unwrap());
        let gone = std::time::Instant::now();
        while process_start_ticks(pid).is_some() && gone.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(process_start_ticks(pid).is_none(), "the leader is gone");
        // Reap the leader (this test is its parent), then wait for init to reap its background child.
        // SAFETY: waitpid(2) on our own child with a valid status pointer.
        unsafe {
            let mut status = 0;
            libc::waitpid(pid as libc::pid_t, &mut status, 0);
        }
        let empty = std::time::Instant::now();
        // SAFETY: kill(2) with signal 0 only checks whether the group still has members.
        let members = || unsafe { libc::kill(-(pid as libc::pid_t), 0) };
        while members() == 0 && empty.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(members(), -1, "its background child went with it");
    }

    /// The children of an adopted service carry the run's marker too; recovery leaves them to their service
    /// instead of killing them as leftovers.
    #[tokio::test]
    async fn recovery_leaves_the_children_of_an_adopted_service_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let run = format!("test-children-{}", std::process::id());
        let services = Services::new(true);
        let req = Request {
            program: "/bin/sh".into(),
            name: "sh",
            args: &["-c".into(), "sleep 30 & wait".into()],
            cwd: dir.path(),
            env: &[],
            user: None,
        };
        let started = services
            .spawn(&run, "web", req, &dir.path().join("logs"))
            .unwrap();
        services.release_all();
        let wait = std::time::Instant::now();
        while marked(&run).len() < 2 && wait.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let family = marked(&run);
        assert_eq!(family.len(), 2, "the shell and its sleep: {family:?}");
        let recorded = [ServiceRecord {
            step: "web".into(),
            pid: started.pid,
            program: "sh".into(),
            start_ticks: started.start_ticks,
            detached: true,
            logs: None,
        }];
        let later = Services::new(false);
        let done = later
            .recover(&run, &recorded, &BTreeSet::from(["web".to_string()]))
            .await;
        assert_eq!(done.adopted, vec![("web".to_string(), started.pid)]);
        assert!(
            done.stopped.is_empty(),
            "its child was taken for a leftover: {done:?}"
        );
        assert_eq!(marked(&run).len(), 2, "both still run");
        later.stop_all().await;
        let gone = std::time::Instant::now();
        while !marked(&run).is_empty() && gone.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            marked(&run).is_empty(),
            "stopping the service stopped its family"
        );
    }
}
