//! `postgres/restore`: a base backup from a store, the WAL after it from the archive, recovery to a target, and
//! the server running on a port, writable, with the moment it recovered to as `recovery_point`.

use std::time::{Duration, Instant};

use respawn_plugin_sdk::{Context, Failure, FailureKind, Phase, exec, images, log, net, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sql::{Connection, Psql};
use crate::wal::{self, Segment};
use crate::{Target, server_time_to_rfc3339};

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,
"required":["backup","wal","data_dir","port"],
"properties":{
"backup":{"type":"object","required":["store","prefix","tag"],"additionalProperties":false,
  "properties":{"store":{"type":"string"},"prefix":{"type":"string"},"tag":{"type":"string"}},
  "description":"an OCI image layout of a plain-format pg_basebackup (respawn image pack of its directory)"},
"wal":{"type":"object","required":["store"],"additionalProperties":false,
  "properties":{"store":{"type":"string"},"prefix":{"type":"string"}},"description":"the WAL archive"},
"data_dir":{"type":"string","description":"inside a files grant rw; must not exist unless this run made it"},
"port":{"type":"integer","minimum":1,"maximum":65535},
"target":{"description":"latest, or {time: RFC 3339} | {lsn: X/Y} | {name: restore point}"},
"bindir":{"type":"string","default":"/usr/lib/postgresql/15/bin"},
"user":{"type":"string","default":"postgres","description":"the OS user the exec grant runs postgres as"},
"db_user":{"type":"string","default":"postgres"},
"listen":{"type":"string","default":"127.0.0.1"},
"socket_dir":{"type":"string","default":"/tmp"},
"wait_s":{"type":"integer","minimum":1,"default":600}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    backup: Backup,
    wal: Archive,
    data_dir: String,
    port: u16,
    #[serde(default)]
    target: Target,
    #[serde(default = "crate::default_bindir")]
    bindir: String,
    #[serde(default = "crate::sql::default_user")]
    user: String,
    #[serde(default = "crate::sql::default_user")]
    db_user: String,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "crate::sql::default_socket_dir")]
    socket_dir: String,
    #[serde(default = "default_wait")]
    wait_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backup {
    store: String,
    prefix: String,
    tag: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Archive {
    store: String,
    #[serde(default)]
    prefix: String,
}

fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_wait() -> u64 {
    600
}

/// Files a data directory cannot start without.
const REQUIRED: [&str; 3] = ["PG_VERSION", "global/pg_control", "backup_label"];
/// Where the server logs, inside the data directory.
const LOG: &str = "log/respawn.log";

impl Params {
    fn connection(&self) -> Connection {
        Connection {
            host: None,
            port: self.port,
            user: self.db_user.clone(),
            password_secret: None,
            database: "postgres".into(),
            socket_dir: self.socket_dir.clone(),
        }
    }

    fn check(&self) -> Result<(), Failure> {
        let dir = self.data_dir.trim_end_matches('/');
        if dir.is_empty() || dir.split('/').any(|part| part == "..") {
            return Err(Failure::invalid_input(format!(
                "data_dir `{}`: give a directory inside a files grant, without `..`",
                self.data_dir
            )));
        }
        self.target.check()
    }

    /// The staging directory for WAL: a sibling of the data directory, named after it.
    fn stage_dir(&self) -> String {
        format!("{}.wal", self.data_dir.trim_end_matches('/'))
    }

    fn parent_and_name(&self) -> (String, String) {
        let dir = self.data_dir.trim_end_matches('/');
        match dir.rsplit_once('/') {
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => (".".to_string(), dir.to_string()),
        }
    }
}

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    p.check()?;
    match ctx.phase {
        Phase::Plan => plan(&p),
        Phase::Apply => apply(&p),
        Phase::Verify => verify(&p),
        Phase::Destroy => destroy(&p),
    }
}

fn plan(p: &Params) -> Result<Value, Failure> {
    let archived = respawn_plugin_sdk::stores::list(&p.wal.store, &p.wal.prefix)?;
    let segments = archived
        .iter()
        .filter(|o| Segment::parse(o.key.rsplit('/').next().unwrap_or(&o.key)).is_some())
        .count();
    Ok(json!({ "would": format!(
        "restore {}:{}@{} into {} (owned by {}), stage the WAL it needs from {} ({segments} segments archived), \
         recover to {}, and serve it on {}:{}",
        p.backup.store, p.backup.prefix, p.backup.tag, p.data_dir, p.user, p.wal.store,
        p.target.describe(), p.listen, p.port
    ) }))
}

fn apply(p: &Params) -> Result<Value, Failure> {
    let conn = p.connection();
    let psql = Psql {
        bindir: &p.bindir,
        conn: &conn,
    };
    if let Some(done) = state::get("outputs")
        && listening(p.port)
        && psql
            .value("select pg_is_in_recovery()")
            .ok()
            .flatten()
            .as_deref()
            == Some("f")
    {
        return serde_json::from_str(&done).map_err(|e| Failure::internal(format!("state: {e}")));
    }
    let dir = p.data_dir.trim_end_matches('/').to_string();
    let ours = state::get("data_dir").as_deref() == Some(dir.as_str());
    if !ours && std::fs::metadata(&dir).is_ok() {
        return Err(Failure::conflict(format!(
            "{dir} already exists and this run did not make it; restore into a new directory"
        )));
    }
    // Recorded before anything is made, so destroy finds it however far apply got.
    state::set("data_dir", &dir);
    state::set("stage_dir", &p.stage_dir());

    if state::get("restored").is_none() {
        if std::fs::metadata(&dir).is_ok() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, &e))?;
        }
        let restored = images::unpack_as(
            &p.backup.store,
            &p.backup.prefix,
            &p.backup.tag,
            &dir,
            &p.user,
        )?;
        log::info(&format!(
            "base backup restored into {dir}: {} files, {} bytes",
            restored.files, restored.bytes
        ));
        check_backup(p, &dir)?;
        state::set("restored", "1");
    }
    let label = read(&format!("{dir}/backup_label"))?;
    let start = start_segment(&label)?;
    if let (Target::Time { time }, Some(started)) = (&p.target, label_field(&label, "START TIME")) {
        let started = server_time_to_rfc3339(&started);
        if let (Some(t), Some(s)) = (
            crate::rfc3339_seconds(time),
            crate::rfc3339_seconds(&started),
        ) && t < s
        {
            return Err(Failure::invalid_input(format!(
                "target time {time} is before the base backup started ({started}): it cannot be reached from this backup"
            )));
        }
    }

    let plan = wal::plan(&p.wal.store, &p.wal.prefix, start)?;
    if let Some(gap) = &plan.gap
        && matches!(p.target, Target::Latest)
    {
        return Err(Failure::not_found(format!(
            "WAL segment {gap} is missing from {}:{} (the archive has segments after it, up to {}): recovering to \
             latest would stop there silently",
            p.wal.store,
            p.wal.prefix,
            plan.last.as_deref().unwrap_or("none")
        )));
    }
    wal::stage(&p.wal.store, &plan, &p.stage_dir())?;

    // The log is appended to by every server started on this directory: only the lines of the one this attempt
    // waits for count, from where the log ended before it started (or, for one already running, its start).
    let log_path = format!("{dir}/{LOG}");
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (pid, since) = match state::get("pid").and_then(|v| v.parse::<u32>().ok()) {
        Some(pid) if listening(p.port) => {
            let at = logged.rfind("starting PostgreSQL").unwrap_or(0);
            (pid, logged[..at].rfind('\n').map_or(0, |n| n + 1))
        }
        _ => (start_server(p)?, logged.len()),
    };
    let promoted = wait_until_promoted(p, &psql, plan.gap.as_deref(), since)?;
    let replayed = psql
        .value("select pg_last_xact_replay_timestamp()")
        .map_err(|e| e.into_failure("reading the last replayed transaction"))?
        .filter(|v| !v.is_empty());
    let recovery_point = match replayed {
        Some(ts) => server_time_to_rfc3339(&ts),
        None => label_field(&label, "START TIME")
            .map(|t| server_time_to_rfc3339(&t))
            .unwrap_or_default(),
    };
    let version = psql
        .value("show server_version")
        .map_err(|e| e.into_failure("reading the server version"))?
        .unwrap_or_default();
    let out = json!({
        "dsn": conn.dsn(),
        "port": p.port,
        "data_dir": dir,
        "pid": pid,
        "server_version": version,
        "recovery_point": recovery_point,
        "recovered_to": p.target.describe(),
        "wal_files_staged": plan.keys.len(),
        "wal_bytes_staged": plan.bytes,
        "recovery_seconds": promoted.as_secs_f64(),
        "artifacts": artifacts(p, &label, &plan),
    });
    state::set("outputs", &out.to_string());
    Ok(out)
}

/// What the restore used, by what names its version (docs/plugin-abi.md, "Artifacts"): the base backup by its
/// label's start WAL location, and the range of archived WAL segments staged for replay.
fn artifacts(p: &Params, label: &str, plan: &wal::Plan) -> Value {
    let mut backup = json!({
        "kind": "database-backup",
        "digest": format!(
            "backup_label START WAL LOCATION: {}",
            label_field(label, "START WAL LOCATION").unwrap_or_default()
        ),
        "source": { "store": p.backup.store, "prefix": p.backup.prefix, "tag": p.backup.tag },
    });
    if let Some(started) = label_field(label, "START TIME") {
        backup["created"] = json!(server_time_to_rfc3339(&started));
    }
    let mut out = vec![backup];
    let segments: Vec<&str> = plan
        .keys
        .iter()
        .map(|(key, _)| key.rsplit('/').next().unwrap_or(key))
        .filter(|name| !name.ends_with(".history"))
        .collect();
    if let (Some(first), Some(last)) = (segments.first(), segments.last()) {
        out.push(json!({
            "kind": "wal-range",
            "digest": format!("{first}..{last}"),
            "source": { "store": p.wal.store, "prefix": p.wal.prefix },
        }));
    }
    Value::Array(out)
}

/// The files a server needs, then `pg_verifybackup` against the backup's manifest when it has one: a missing or
/// changed file fails here, naming it, before a server ever starts on it.
fn check_backup(p: &Params, dir: &str) -> Result<(), Failure> {
    for file in REQUIRED {
        if std::fs::metadata(format!("{dir}/{file}")).is_err() {
            return Err(Failure::verification_failed(format!(
                "the base backup {}:{}@{} has no {file}: not a complete pg_basebackup",
                p.backup.store, p.backup.prefix, p.backup.tag
            )));
        }
    }
    if std::fs::metadata(format!("{dir}/backup_manifest")).is_ok() {
        let (parent, name) = p.parent_and_name();
        let out = exec::Command::new(&format!("{}/pg_verifybackup", p.bindir))
            .args(["--no-parse-wal", "--quiet", &name])
            .cwd(&parent)
            .timeout_ms(3_600_000)
            .output()?;
        if out.status != 0 {
            let said = String::from_utf8_lossy(&out.stderr);
            return Err(Failure::verification_failed(format!(
                "the base backup {}:{}@{} does not match its manifest: {}",
                p.backup.store,
                p.backup.prefix,
                p.backup.tag,
                said.lines().take(5).collect::<Vec<_>>().join(" / ")
            )));
        }
    }
    // A backup of a cluster whose configuration lives elsewhere (Debian's /etc/postgresql) has none: give it the
    // smallest that works, everything else comes from the command line.
    for (file, text) in [
        (
            "postgresql.conf",
            "# written by respawn: the base backup had none\n",
        ),
        (
            "pg_hba.conf",
            "# written by respawn: the base backup had none\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
        ),
    ] {
        let path = format!("{dir}/{file}");
        if std::fs::metadata(&path).is_err() {
            std::fs::write(&path, text).map_err(|e| io(&path, &e))?;
        }
    }
    let signal = format!("{dir}/recovery.signal");
    std::fs::write(&signal, "").map_err(|e| io(&signal, &e))?;
    let _ = std::fs::remove_file(format!("{dir}/standby.signal"));
    Ok(())
}

fn start_server(p: &Params) -> Result<u32, Failure> {
    if listening(p.port) {
        return Err(Failure::conflict(format!(
            "port {} is already in use by another server",
            p.port
        )));
    }
    let (parent, name) = p.parent_and_name();
    let stage = p.stage_dir();
    let stage_name = stage.rsplit('/').next().unwrap_or(&stage);
    // The server runs in the data directory, so the staging directory is its sibling `../NAME.wal`.
    let mut settings = vec![
        format!("port={}", p.port),
        format!("listen_addresses={}", p.listen),
        format!("unix_socket_directories={}", p.socket_dir),
        // Never send this server's WAL into the production archive the backup's configuration names.
        "archive_mode=off".into(),
        format!("restore_command=cp ../{stage_name}/%f \"%p\""),
        "recovery_target_action=promote".into(),
        "recovery_target_timeline=latest".into(),
        "primary_conninfo=".into(),
        "logging_collector=on".into(),
        "log_directory=log".into(),
        "log_filename=respawn.log".into(),
        "log_file_mode=0640".into(),
        "hot_standby=on".into(),
    ];
    settings.extend(p.target.settings());
    let mut args = vec!["-D".to_string(), name];
    for setting in settings {
        args.push("-c".into());
        args.push(setting);
    }
    let pid = exec::Command::new(&format!("{}/postgres", p.bindir))
        .args(args)
        .cwd(&parent)
        .spawn_service()?;
    state::set("pid", &pid.to_string());
    log::info(&format!(
        "postgres (pid {pid}) recovering {} on port {}",
        p.data_dir, p.port
    ));
    Ok(pid)
}

/// Waits until the server has finished recovery and accepts writes. A server that stops on the way fails the
/// step with its log's last lines, and one that stopped short of its target names the first missing segment.
fn wait_until_promoted(
    p: &Params,
    psql: &Psql<'_>,
    gap: Option<&str>,
    since: usize,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let log_path = format!("{}/{LOG}", p.data_dir.trim_end_matches('/'));
    // A server accepts TCP connections from its start, recovery included: one that stops answering has gone, even
    // when it could log nothing (a postmaster killed outright).
    let (mut answered, mut silent_since) = (false, None::<Instant>);
    loop {
        let up = listening(p.port);
        if up {
            answered = true;
            silent_since = None;
        } else if answered {
            silent_since.get_or_insert_with(Instant::now);
        }
        match psql.value("select pg_is_in_recovery()") {
            Ok(Some(v)) if v == "f" => {
                log::info(&format!(
                    "recovery finished after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(started.elapsed());
            }
            Ok(_) => {}
            Err(crate::sql::SqlError::Unreachable(_)) => {}
            Err(e) => return Err(e.into_failure("asking whether recovery finished")),
        }
        let whole = std::fs::read_to_string(&log_path).unwrap_or_default();
        let text = whole.get(since..).unwrap_or_default();
        if let Some(failure) = stopped(text, p, gap) {
            return Err(failure);
        }
        let gone = silent_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3))
            || (!answered && started.elapsed() > Duration::from_secs(30));
        if gone {
            return Err(Failure::unavailable(format!(
                "the server on port {} {} during recovery; its log ends: {}",
                p.port,
                if answered {
                    "stopped answering"
                } else {
                    "never answered"
                },
                tail(text)
            )));
        }
        if started.elapsed() > Duration::from_secs(p.wait_s) {
            return Err(Failure::unavailable(format!(
                "the server on port {} did not finish recovery within {}s; its log ends: {}",
                p.port,
                p.wait_s,
                tail(text)
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Lines a server logs when it refuses a client while it starts or stops: not the server giving up.
fn refuses_a_client(line: &str) -> bool {
    [
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
        "the database system is shutting down",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// The failure a server log shows, if the server gave up.
fn stopped(log_text: &str, p: &Params, gap: Option<&str>) -> Option<Failure> {
    let fatals: Vec<&str> = log_text
        .lines()
        .filter(|l| (l.contains("FATAL:") || l.contains("PANIC:")) && !refuses_a_client(l))
        .collect();
    if let Some(refused) = fatals.iter().find(|l| l.contains("authentication failed")) {
        return Some(Failure::new(
            FailureKind::Denied,
            format!(
                "the restored server refused respawn's connection as `{}`: {}",
                p.db_user,
                refused.trim()
            ),
        ));
    }
    let down = log_text.contains("database system is shut down")
        || log_text.contains("shutting down due to startup process failure")
        || log_text.contains("terminated by signal");
    if !down {
        return None;
    }
    let fatal = fatals.last().map(|l| l.trim()).unwrap_or_default();
    if fatal.contains("recovery ended before configured recovery target was reached") {
        return Some(Failure::not_found(match gap {
            Some(gap) => format!(
                "recovery to {} stopped at missing WAL segment {gap} of {}:{}",
                p.target.describe(),
                p.wal.store,
                p.wal.prefix
            ),
            None => format!(
                "the archive {}:{} ends before {}: {fatal}",
                p.wal.store,
                p.wal.prefix,
                p.target.describe()
            ),
        }));
    }
    if fatal.contains("before consistent recovery point") {
        return Some(Failure::invalid_input(format!(
            "{} cannot be reached from this backup: {fatal}",
            p.target.describe()
        )));
    }
    Some(Failure::new(
        FailureKind::Unavailable,
        format!(
            "the server stopped during recovery: {}; its log ends: {}",
            why_it_stopped(log_text, &fatals),
            tail(log_text)
        ),
    ))
}

/// The line that says why a server stopped: the tail alone may be the restart that followed it.
fn why_it_stopped<'a>(log_text: &'a str, fatals: &[&'a str]) -> &'a str {
    log_text
        .lines()
        .find(|l| l.contains("terminated by signal") || l.contains("PANIC:"))
        .or(fatals.last().copied())
        .map_or("no reason logged", str::trim)
}

fn verify(p: &Params) -> Result<Value, Failure> {
    let conn = p.connection();
    let psql = Psql {
        bindir: &p.bindir,
        conn: &conn,
    };
    match psql.value("select pg_is_in_recovery()") {
        Ok(Some(v)) if v == "f" => Ok(json!({ "dsn": conn.dsn(), "writable": true })),
        Ok(_) => Err(Failure::verification_failed(format!(
            "the server on port {} is still in recovery",
            p.port
        ))),
        Err(e) => Err(Failure::verification_failed(format!(
            "the server on port {} does not answer: {}",
            p.port,
            e.into_failure("connecting").message
        ))),
    }
}

fn destroy(p: &Params) -> Result<Value, Failure> {
    if let Some(pid) = state::get("pid").and_then(|v| v.parse::<u32>().ok()) {
        match exec::stop_service(pid) {
            Ok(()) => {}
            Err(f) if f.kind == FailureKind::Denied => {
                log::warn(&format!("pid {pid}: {}", f.message))
            }
            Err(f) => return Err(f),
        }
        state::delete("pid");
    }
    let mut removed = Vec::new();
    for key in ["data_dir", "stage_dir"] {
        if let Some(dir) = state::get(key) {
            if std::fs::metadata(&dir).is_ok() {
                std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, &e))?;
                removed.push(dir);
            }
            state::delete(key);
        }
    }
    state::delete("restored");
    state::delete("outputs");
    let _ = p;
    Ok(json!({ "removed": removed }))
}

fn listening(port: u16) -> bool {
    net::tcp_probe("127.0.0.1", port, 500).is_ok()
}

fn read(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| io(path, &e))
}

fn io(path: &str, e: &std::io::Error) -> Failure {
    Failure::internal(format!("{path}: {e}"))
}

/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` as its segment.
fn start_segment(label: &str) -> Result<Segment, Failure> {
    label_field(label, "START WAL LOCATION")
        .and_then(|v| {
            v.split("(file ")
                .nth(1)
                .map(|f| f.trim_end_matches(')').to_string())
        })
        .and_then(|name| Segment::parse(&name))
        .ok_or_else(|| {
            Failure::verification_failed("backup_label names no START WAL LOCATION file")
        })
}

fn label_field(label: &str, field: &str) -> Option<String> {
    label.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// The last lines of a server log, for a failure message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(8);
    let shown = lines[start..].join(" / ");
    if shown.is_empty() {
        "(nothing logged)".into()
    } else {
        shown
    }
}
