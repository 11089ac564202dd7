//! The PostgreSQL 15 source cluster that tests/servers/pg-source runs on 127.0.0.1 (`tests/servers/start pg`) and
//! describes in target/servers/env: clients for it, base backups of it and streaming standbys of it, for the
//! end-to-end tests of the postgres provider. Every client connects over TCP as `respawn` (a superuser with the
//! REPLICATION attribute, scram-sha-256) with its password in `PGPASSWORD`, never on a command line.
//!
//! The servers run as the OS user `postgres` when the tests run as root (the server refuses root), otherwise as
//! the tests' own user; a directory a server uses must be enterable by that user ([`standby`] sees to that for
//! directories under the system's temporary directory).
#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The source cluster, from tests/servers/start's variables.
#[derive(Debug, Clone)]
pub struct PgEnv {
    /// Always 127.0.0.1.
    pub host: String,
    /// `RESPAWN_TEST_PG_PORT` (5433).
    pub port: u16,
    /// `RESPAWN_TEST_PG_BIN`: the directory of postgres, pg_ctl, initdb, psql, pg_basebackup… (PostgreSQL 15).
    pub bin: PathBuf,
    /// `RESPAWN_TEST_PG_USER` and `RESPAWN_TEST_PG_PASSWORD`: a superuser that may also replicate.
    pub user: String,
    pub password: String,
    /// `RESPAWN_TEST_PG_ARCHIVE`: the WAL archive the cluster's archive_command copies every finished segment to
    /// (a plain directory: a file:// store). Shared by every test: tests must not write to it.
    pub archive: PathBuf,
    /// `RESPAWN_TEST_PG_SOCKET`: the cluster's unix socket directory (peer auth: for the OS user `postgres` only).
    pub socket: PathBuf,
}

impl PgEnv {
    /// `tool` (psql, pg_basebackup, pg_ctl…) of [`PgEnv::bin`].
    pub fn tool(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }

    /// A libpq connection string for database `db` of the source cluster, without the password (which a client
    /// takes from `PGPASSWORD`, see [`PgEnv::client`]).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.host, self.port, self.user
        )
    }

    /// A client `tool` of [`PgEnv::bin`] with the password in its environment, stdin closed. The caller passes
    /// host, port, user and database.
    pub fn client(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        cmd.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }
}

/// The source cluster's environment, or None when tests/servers/start's pg variables are not set.
pub fn pg_env() -> Option<PgEnv> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(PgEnv {
        host: "127.0.0.1".into(),
        port: var("RESPAWN_TEST_PG_PORT")?.parse().ok()?,
        bin: var("RESPAWN_TEST_PG_BIN")?.into(),
        user: var("RESPAWN_TEST_PG_USER")?,
        password: var("RESPAWN_TEST_PG_PASSWORD")?,
        archive: var("RESPAWN_TEST_PG_ARCHIVE")?.into(),
        socket: var("RESPAWN_TEST_PG_SOCKET")?.into(),
    })
}

fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"))
}

fn stdout_of(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

/// `psql -At -c SQL` on database `db` of the server on 127.0.0.1:`port` as `env`'s user; the last statement's rows,
/// one a line, columns separated by `|`, without the final newline. Panics with psql's message on any error.
pub fn psql_port(env: &PgEnv, port: u16, db: &str, sql: &str) -> String {
    let out = output(
        env.client("psql")
            .args(["--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(&env.host)
            .arg("-p")
            .arg(port.to_string())
            .arg("-U")
            .arg(&env.user)
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql),
        "psql",
    );
    assert!(
        out.status.success(),
        "psql on {}:{port}/{db} failed ({}): {sql}\n{}",
        env.host,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_of(&out)
}

/// [`psql_port`] on the source cluster.
pub fn psql(env: &PgEnv, db: &str, sql: &str) -> String {
    psql_port(env, env.port, db, sql)
}

/// `"name"`, for names the tests make up (letters, digits, `_`, `-`).
fn ident(name: &str) -> String {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "not a plain database name: {name:?}"
    );
    format!("\"{name}\"")
}

/// A fresh, empty database `name` on the source cluster: one of the same name is dropped first (its sessions cut).
/// Use a name of the test's own: the cluster is shared by every test, and tests run at once.
pub fn create_db(env: &PgEnv, name: &str) {
    let name = ident(name);
    psql(
        env,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(env, "postgres", &format!("CREATE DATABASE {name}"));
}

/// The source cluster's clock now (`clock_timestamp()`, not the transaction's start), as RFC 3339 in UTC with
/// microseconds: `2026-12-02T07:40:19.123456Z`. Taken between two commits, a recovery target time that keeps the
/// first and drops the second. Beware: PostgreSQL 15 rejects the `Z` in `recovery_target_time` (time zone
/// abbreviations are not loaded when the server checks its configuration), so write it as `+00:00` there.
pub fn now_utc(env: &PgEnv) -> String {
    psql(
        env,
        "postgres",
        r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#,
    )
}

/// Ends the current WAL segment (`pg_switch_wal()`) and waits, a minute at most, until the archive has it; returns
/// its name. Everything committed before the call is then in the archive. A segment is in the archive once its
/// file is there (archive_command renames it into place whole); `pg_stat_archiver` explains a failure.
pub fn switch_wal(env: &PgEnv) -> String {
    let segment = psql(env, "postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(env, &segment);
    segment
}

/// Waits, a minute at most, until the archive has `file` (a segment, `….backup` or `….history` name).
pub fn wait_archived(env: &PgEnv, file: &str) {
    let started = Instant::now();
    while !env.archive.join(file).is_file() {
        if started.elapsed() > Duration::from_secs(60) {
            let stat = psql(
                env,
                "postgres",
                "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal, last_failed_time \
                 FROM pg_stat_archiver",
            );
            panic!(
                "{file} not archived to {} within 60 s; pg_stat_archiver (archived_count|last_archived_wal|\
                 failed_count|last_failed_wal|last_failed_time): {stat}",
                env.archive.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A base backup of the source cluster made by [`base_backup`].
#[derive(Debug, Clone)]
pub struct BaseBackup {
    /// The backup: a plain-format data directory with its backup_label, without pg_wal's contents (the WAL it
    /// needs is in the archive), readable by everyone (directories 0755, files 0644) and owned by the tests' user.
    pub dir: PathBuf,
    /// The segment of backup_label's `START WAL LOCATION`: the first the restore reads from the archive.
    pub start_wal: String,
    /// backup_label's `START WAL LOCATION` (`0/6000028`).
    pub start_lsn: String,
    /// The backup history file's `STOP WAL LOCATION` and its segment: recovery must replay at least that far
    /// before the restored cluster is consistent.
    pub stop_lsn: String,
    pub stop_wal: String,
    /// The backup history file in the archive (`START_WAL.OFFSET.backup`).
    pub history_file: String,
    /// The source cluster's clock ([`now_utc`]) once pg_basebackup had returned: a recovery target time at or
    /// after it is reachable from this backup and the archive.
    pub end_time: String,
    /// backup_label's text.
    pub label: String,
}

/// `pg_basebackup -Fp -Xnone --checkpoint=fast` of the source cluster into `dest` (which must not exist or be
/// empty). Without WAL (-Xnone), so a restore depends on the archive, which by the time this returns has every
/// segment up to the backup's end and the backup history file (the server waits for them).
pub fn base_backup(env: &PgEnv, dest: &Path) -> BaseBackup {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let out = output(
        env.client("pg_basebackup")
            .arg("-h")
            .arg(&env.host)
            .arg("-p")
            .arg(env.port.to_string())
            .arg("-U")
            .arg(&env.user)
            .arg("-D")
            .arg(dest)
            .args([
                "-Fp",
                "-Xnone",
                "--checkpoint=fast",
                "--no-sync",
                "--label=respawn-test",
            ]),
        "pg_basebackup",
    );
    assert!(
        out.status.success(),
        "pg_basebackup into {} failed ({}):\n{}",
        dest.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let end_time = now_utc(env);
    make_readable(dest);
    let label = std::fs::read_to_string(dest.join("backup_label")).unwrap();
    let (start_lsn, start_wal) = wal_location(&label, "START WAL LOCATION")
        .unwrap_or_else(|| panic!("no START WAL LOCATION in backup_label:\n{label}"));
    let history_file = format!("{start_wal}.{:08X}.backup", lsn_segment_offset(&start_lsn));
    wait_archived(env, &history_file);
    let history = std::fs::read_to_string(env.archive.join(&history_file)).unwrap();
    let (stop_lsn, stop_wal) = wal_location(&history, "STOP WAL LOCATION")
        .unwrap_or_else(|| panic!("no STOP WAL LOCATION in {history_file}:\n{history}"));
    BaseBackup {
        dir: dest.to_path_buf(),
        start_wal,
        start_lsn,
        stop_lsn,
        stop_wal,
        history_file,
        end_time,
        label,
    }
}

/// `KEY: 0/6000028 (file 000000010000000000000006)` in `text` → (`0/6000028`, `000000010000000000000006`).
fn wal_location(text: &str, key: &str) -> Option<(String, String)> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))?;
    let (lsn, file) = rest.split_once(" (file ")?;
    Some((lsn.to_string(), file.strip_suffix(')')?.to_string()))
}

/// The offset of `lsn` (`HI/LO`, hex) in its 16 MiB segment.
fn lsn_segment_offset(lsn: &str) -> u64 {
    let (_, lo) = lsn.split_once('/').expect("an LSN HI/LO");
    u64::from_str_radix(lo, 16).expect("a hex LSN") % (16 << 20)
}

/// Directories 0755 and files 0644 under `dir`, `dir` included.
fn make_readable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            make_readable(&entry.path());
        } else if kind.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Whether the tests run as root: servers then run as `postgres`.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `program` as the OS user that runs the servers (`runuser -u postgres --` under root), from `/`.
pub fn as_server_user(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir("/").stdin(Stdio::null());
    cmd
}

/// Makes sure the server user can enter every parent of `dir`: under root, a parent below the system's temporary
/// directory (a test's tempdir, 0700) gets o+x; any other parent without it is an error.
pub fn ensure_enterable(dir: &Path) {
    if !is_root() {
        return;
    }
    let tmp = std::env::temp_dir();
    for parent in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(parent).unwrap();
        let mode = meta.permissions().mode();
        if mode & 0o001 != 0 {
            continue;
        }
        assert!(
            parent.starts_with(&tmp) && parent != tmp,
            "the postgres user cannot enter {} (mode {:o}), a parent of {}",
            parent.display(),
            mode & 0o7777,
            dir.display()
        );
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
    }
}

/// `chown -R postgres: path` under root; nothing otherwise.
pub fn give_to_server_user(path: &Path) {
    if is_root() {
        let out = output(
            Command::new("chown").arg("-R").arg("postgres:").arg(path),
            "chown",
        );
        assert!(
            out.status.success(),
            "chown -R postgres: {}",
            path.display()
        );
    }
}

/// Whether a server answers on 127.0.0.1:`port` (pg_isready: accepting connections).
pub fn ready(env: &PgEnv, port: u16) -> bool {
    Command::new(env.tool("pg_isready"))
        .args(["-q", "-t", "2", "-h"])
        .arg(&env.host)
        .arg("-p")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pid in `data`'s postmaster.pid if that process still runs a postgres on `data`.
pub fn postmaster_pid(data: &Path) -> Option<u32> {
    let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = pidfile.lines().next()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (cmdline.contains("postgres") && cmdline.contains(&format!("-D {}", data.display())))
        .then_some(pid)
}

/// A streaming standby of the source cluster made by [`standby`]; stopped by [`Standby::stop`] or when dropped.
#[derive(Debug)]
pub struct Standby {
    /// Its data directory (owned by the server user, 0700).
    pub dir: PathBuf,
    /// It listens on 127.0.0.1:`port` only, and on a socket in `socket` (`DIR/socket`).
    pub port: u16,
    pub socket: PathBuf,
    /// Its server log (`DIR/standby.log`).
    pub log: PathBuf,
    bin: PathBuf,
}

/// A hot standby of the source cluster in `dir` (which must not exist or be empty; its parents must be enterable
/// by the server user, see [`ensure_enterable`]) on 127.0.0.1:`port`: `pg_basebackup -R -Xstream` (so
/// standby.signal and primary_conninfo, as `env`'s user with the password, over TCP), started with pg_ctl as the
/// server user; returns once it accepts connections, 60 s at most. It streams from the source; `restore_command`
/// reads the archive if it falls behind. Unlike the source it does not archive (`archive_mode = off`), also once
/// promoted, so that nothing but the source writes the shared archive.
pub fn standby(env: &PgEnv, dir: &Path, port: u16) -> Standby {
    std::fs::create_dir_all(dir).unwrap();
    ensure_enterable(dir);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    give_to_server_user(dir);
    let out = output(
        as_server_user(&env.tool("pg_basebackup"))
            .env("PGPASSWORD", &env.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .arg("-h")
            .arg(&env.host)
            .arg("-p")
            .arg(env.port.to_string())
            .arg("-U")
            .arg(&env.user)
            .arg("-D")
            .arg(dir)
            .args([
                "-Fp",
                "-Xstream",
                "-R",
                "--checkpoint=fast",
                "--no-sync",
                "--label=respawn-test-standby",
            ]),
        "pg_basebackup -R",
    );
    assert!(
        out.status.success(),
        "pg_basebackup -R into {} failed ({}):\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let standby = Standby {
        dir: dir.to_path_buf(),
        port,
        socket: dir.join("socket"),
        log: dir.join("standby.log"),
        bin: env.bin.clone(),
    };
    std::fs::create_dir_all(&standby.socket).unwrap();
    // The source's respawn-test.conf (included from postgresql.conf) came with the backup: this one replaces it.
    std::fs::write(
        dir.join("respawn-test.conf"),
        format!(
            "# Written by tests/common/pg.rs standby().\n\
             listen_addresses = '{host}'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n\
             archive_mode = off\n\
             restore_command = 'cp \"{archive}/%f\" %p 2>/dev/null'\n",
            host = env.host,
            socket = standby.socket.display(),
            archive = env.archive.display(),
        ),
    )
    .unwrap();
    give_to_server_user(dir);
    let out = output(
        as_server_user(&env.tool("pg_ctl"))
            .arg("-D")
            .arg(dir)
            .arg("-l")
            .arg(&standby.log)
            .args(["-W", "-s", "start"])
            .stdout(Stdio::null()),
        "pg_ctl start",
    );
    assert!(
        out.status.success(),
        "pg_ctl start of the standby in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&standby.log).unwrap_or_default()
    );
    // From here on, dropping `standby` (also on a panic) stops the server.
    let started = Instant::now();
    while !ready(env, port) {
        let dead = postmaster_pid(dir).is_none() && started.elapsed() > Duration::from_secs(1);
        if dead || started.elapsed() > Duration::from_secs(60) {
            panic!(
                "the standby in {} {} on 127.0.0.1:{port}; log:\n{}",
                dir.display(),
                if dead {
                    "exited before answering"
                } else {
                    "did not answer within 60 s"
                },
                std::fs::read_to_string(&standby.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    standby
}

impl Standby {
    /// [`psql_port`] on the standby (read-only while it is one).
    pub fn psql(&self, env: &PgEnv, db: &str, sql: &str) -> String {
        psql_port(env, self.port, db, sql)
    }

    /// Waits, a minute at most, until the standby has replayed everything the source had written when called.
    pub fn wait_caught_up(&self, env: &PgEnv) {
        let target = psql(env, "postgres", "SELECT pg_current_wal_lsn()");
        let started = Instant::now();
        loop {
            let caught_up = self.psql(
                env,
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"),
            );
            if caught_up == "t" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the standby on port {} did not replay up to {target} within 60 s (replayed: {})",
                self.port,
                self.psql(env, "postgres", "SELECT pg_last_wal_replay_lsn()")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        postmaster_pid(&self.dir)
    }

    /// Stops the server, if it runs: a fast shutdown, 30 s at most, then SIGKILL. Never panics; idempotent.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["stop", "-m", "fast", "-t", "30", "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && self.pid().is_some() {
            if started.elapsed() > Duration::from_secs(5) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.stop();
    }
}
