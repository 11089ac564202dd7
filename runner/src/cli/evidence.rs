//! The commands that give an auditor evidence: `respawn report` (a run's report, or a workflow's history, from
//! the state store), `respawn audit verify` and `audit keygen`, and the signing of `--sign-key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use respawn::data::object_store::ObjectStore;
use respawn::engine::resume::report_from_journal;
use respawn::journal::chain::{self, ChainError};
use respawn::journal::{self as journal, EventBody};
use respawn::report::history::History;
use respawn::report::signature::{self, Keys, Signed};
use respawn::report::{Format, Report};

use super::run as runs;
use super::{Usage, exit, setup};

/// The signing key of `--sign-key SOURCE`: `env:NAME` reads the PEM from that environment variable, anything else
/// is a file. Never from the workflow: a key there would be in the journal and the report.
pub fn load_sign_key(source: &str) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let (what, pem) = match source.strip_prefix("env:") {
        Some(name) => (
            format!("--sign-key env:{name}"),
            std::env::var(name).map_err(|e| {
                Usage(format!(
                    "--sign-key env:{name}: the environment variable {e}"
                ))
            })?,
        ),
        None => (
            format!("--sign-key {source}"),
            std::fs::read_to_string(source)
                .map_err(|e| Usage(format!("--sign-key {source}: {e}")))?,
        ),
    };
    Keys::signing_from_pem(&what, &pem).map_err(|e| Usage(e.to_string()).into())
}

/// Signs the report just written into `dir` and the journal head it carries: `report.sig.json` there, and a copy
/// in the state store at the head, where `audit verify` finds it from any machine.
pub fn sign_report(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    report: &Report,
    dir: &Path,
    key: &ed25519_dalek::SigningKey,
) -> anyhow::Result<PathBuf> {
    let head = report
        .journal_head
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the report has no journal head to sign"))?;
    let files = read_signed_files(dir)?;
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let signed = signature::sign(key, &report.run_id, &head, &borrowed);
    let text = serde_json::to_string_pretty(&signed)? + "\n";
    let path = dir.join(signature::FILE);
    std::fs::write(&path, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    runtime
        .block_on(journal::put_signature(
            store,
            &report.run_id,
            &head,
            text.into_bytes(),
        ))
        .map_err(|e| anyhow::anyhow!("storing the signature in the state store: {e}"))?;
    Ok(path)
}

fn read_signed_files(dir: &Path) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    signature::SIGNED_FILES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|bytes| (*name, bytes))
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
        })
        .collect()
}

/// The three renderings of a report, named as the files they are written to.
fn rendered(report: &Report) -> Vec<(&'static str, Vec<u8>)> {
    [
        ("report.json", Format::Json),
        ("report.md", Format::Markdown),
        ("junit.xml", Format::Junit),
    ]
    .into_iter()
    .map(|(name, format)| (name, report.render(format).into_bytes()))
    .collect()
}

/// The report of a finished run, rendered from its journal in `store`.
fn report_of(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
) -> anyhow::Result<Report> {
    let (stored, replayed) = super::durable::read_run(runtime, store, run_id)?;
    report_from_journal(&stored, &replayed)
        .map_err(|e| Usage(e.to_string()))?
        .ok_or_else(|| {
            Usage(format!(
                "run `{run_id}` has not finished (status {}): it has no report yet",
                replayed.status()
            ))
            .into()
        })
}

/// `respawn report RUN_ID`: from the state store with `--state` (or `RESPAWN_STATE`), else the report directory,
/// else the default state store. `--history NAME` shows the runs of a workflow instead.
pub fn report(args: super::ReportArgs) -> anyhow::Result<u8> {
    if let Some(name) = &args.history {
        return history(name, args.state.as_deref(), &args.format);
    }
    let Some(run_id) = args.run_id.as_deref() else {
        return Err(Usage("give a RUN_ID, or --history WORKFLOW".into()).into());
    };
    journal::check_run_id(run_id).map_err(Usage)?;
    let format = match args.format.as_str() {
        "json" => Format::Json,
        "junit" => Format::Junit,
        _ => Format::Markdown,
    };
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| respawn::report::default_dir(run_id));
    let local = Report::read(&dir).ok().filter(|r| r.run_id == run_id);
    let report = match (&args.state, local) {
        (None, Some(local)) => local,
        (Some(state), _) => {
            let store = runs::open_state(Some(state))?;
            report_of(&setup::runtime()?, &store, run_id)?
        }
        (None, None) => {
            let store = runs::open_state(None)?;
            report_of(&setup::runtime()?, &store, run_id).map_err(|e| {
                Usage(format!(
                    "no report for run `{run_id}` in {}, nor in the default state store: {e}",
                    dir.display()
                ))
            })?
        }
    };
    out_raw!("{}", report.render(format));
    Ok(exit::OK)
}

/// Every finished run of `workflow` in the state store, oldest first, as reports.
fn reports_of(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    workflow: &str,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for id in runtime.block_on(journal::list_runs(store))? {
        let Ok((stored, replayed)) = runtime.block_on(journal::read_run(store, &id)) else {
            tracing::warn!(run = %id, "left out of the history: its journal does not read or verify");
            continue;
        };
        if replayed.start.workflow.name != workflow {
            continue;
        }
        match report_from_journal(&stored, &replayed) {
            Ok(Some(report)) => reports.push(report),
            Ok(None) => {}
            Err(e) => tracing::warn!(run = %id, "left out of the history: {e}"),
        }
    }
    Ok(reports)
}

/// `respawn report --history NAME` and `respawn runs --workflow NAME`: the finished runs of one workflow over
/// time, as Markdown or JSON.
pub fn history(workflow: &str, state: Option<&str>, format: &str) -> anyhow::Result<u8> {
    let store = runs::open_state(state)?;
    let runtime = setup::runtime()?;
    let reports = reports_of(&runtime, &store, workflow)?;
    let history = History::of(workflow, &reports);
    match format {
        "json" => out_raw!("{}", history.to_json()),
        "md" => out_raw!("{}", history.to_markdown()),
        other => {
            return Err(Usage(format!(
                "--format {other}: a history is shown as md or json"
            ))
            .into());
        }
    }
    Ok(exit::OK)
}

/// `respawn audit keygen --out PREFIX`: PREFIX.pem (the private key, mode 0600) and PREFIX.pub.pem.
pub fn keygen(out: &Path) -> anyhow::Result<u8> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let keys = Keys::generate()?;
    let private = out.with_extension("pem");
    let public = out.with_extension("pub.pem");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| Usage(format!("{}: {e}", private.display())))?;
    file.write_all(keys.private_pem()?.as_bytes())?;
    std::fs::write(&public, keys.public_pem())?;
    out!(
        "private key {} (keep it secret; give it to --sign-key)",
        private.display()
    );
    out!(
        "public key  {} (give it to auditors: audit verify --public-key)",
        public.display()
    );
    Ok(exit::OK)
}

/// What `audit verify` checks the report against: the report directory, when it holds this run's report.
struct Found {
    dir: PathBuf,
    files: Option<Vec<(&'static str, Vec<u8>)>>,
}

/// `respawn audit verify`: re-hashes the chain; checks that the report files match the report the journal gives
/// (byte for byte) and its head; with `--public-key`, checks the signature over the head and the files.
pub fn audit_verify(
    run_id: &str,
    state: Option<&str>,
    report_dir: Option<&Path>,
    public_key: Option<&Path>,
) -> anyhow::Result<u8> {
    journal::check_run_id(run_id).map_err(Usage)?;
    let public_key = public_key
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("--public-key {}: {e}", path.display())))?;
            Keys::public_from_pem(&pem)
                .map_err(|e| Usage(format!("--public-key {}: {e}", path.display())))
        })
        .transpose()?;
    let store = runs::open_state(state)?;
    let runtime = setup::runtime()?;
    let stored =
        runtime
            .block_on(chain::read_all(&store, run_id))
            .map_err(|e| -> anyhow::Error {
                if e.is_usage() {
                    Usage(e.to_string()).into()
                } else {
                    e.into()
                }
            })?;
    let tampered = |why: String| -> anyhow::Result<u8> {
        out!("run {run_id}: TAMPERED: {why}");
        Ok(exit::RUN_FAILED)
    };
    let events = match chain::verify(&stored) {
        Ok(events) => events,
        Err(e) => return tampered(e.to_string()),
    };
    let head = stored.last().map(|e| e.sha256.clone()).unwrap_or_default();
    let recorded_dir = events.iter().rev().find_map(|e| match &e.body {
        EventBody::RunFinished { report_dir, .. } => report_dir.clone().map(PathBuf::from),
        _ => None,
    });
    let dir = report_dir
        .map(Path::to_path_buf)
        .or(recorded_dir)
        .unwrap_or_else(|| respawn::report::default_dir(run_id));
    // Another run's report in the directory is not this run's; one that does not even read as a report is, and
    // fails the comparison below.
    let other_run = Report::read(&dir).is_ok_and(|r| r.run_id != run_id);
    let found = Found {
        files: read_signed_files(&dir).ok().filter(|_| !other_run),
        dir,
    };
    out!(
        "run {run_id}: chain intact: {} events, head sha256:{head}",
        events.len()
    );
    let replayed = respawn::journal::replay::Replayed::from_events(&events)
        .map_err(|message| Usage(format!("run `{run_id}`: {message}")))?;
    let from_journal = report_from_journal(&stored, &replayed).map_err(|e| Usage(e.to_string()))?;
    match (&found.files, &from_journal) {
        (Some(files), Some(expected)) => {
            let on_disk: Report =
                serde_json::from_slice(&files[0].1).unwrap_or_else(|_| expected.clone());
            if on_disk.journal_head.as_deref() != Some(head.as_str()) {
                let last = events.last();
                let e = ChainError::HeadMismatch {
                    seq: last.map_or(0, |e| e.seq),
                    kind: last.map_or("?", |e| e.body.kind()).to_string(),
                    actual: head,
                    recorded: on_disk.journal_head.unwrap_or_default(),
                };
                return tampered(e.to_string());
            }
            // A report written before reports were rendered from the journal (it has no `artifacts`) is not
            // the bytes the journal gives now; its head is all there is to compare, as before. (It cannot have
            // been signed either.)
            let older = serde_json::from_slice::<serde_json::Value>(&files[0].1)
                .is_ok_and(|v| v.get("artifacts").is_none());
            if older {
                out!(
                    "head matches {} (a report from an earlier respawn: only its head is compared)",
                    found.dir.join("report.json").display()
                );
            } else {
                for ((name, actual), (_, expected)) in files.iter().zip(rendered(expected)) {
                    if *actual != expected {
                        return tampered(format!(
                            "{} does not match the report its journal gives: {}",
                            found.dir.join(name).display(),
                            first_difference(actual, &expected)
                        ));
                    }
                }
                out!(
                    "head matches {}, and the report files match the report its journal gives",
                    found.dir.join("report.json").display()
                );
            }
        }
        (None, Some(_)) => out!(
            "no report found to check against the journal (looked in {}); the journal gives it: respawn \
             report {run_id} --state URL",
            found.dir.display()
        ),
        (_, None) => out!("the run has not finished: no report to check"),
    }
    let Some(public_key) = public_key else {
        return Ok(exit::OK);
    };
    // The files the signature must cover: the report directory's, else the report the journal gives.
    let files = match (found.files, &from_journal) {
        (Some(files), _) => files,
        (None, Some(report)) => rendered(report),
        (None, None) => return tampered("the run has not finished, so nothing was signed".into()),
    };
    let local = found.dir.join(signature::FILE);
    let (what, text) = match std::fs::read_to_string(&local) {
        Ok(text) => (local.display().to_string(), text),
        Err(_) => match runtime.block_on(journal::get_signature(&store, run_id, &head))? {
            Some(bytes) => (
                journal::signature_key(run_id, &head),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
            None => {
                return tampered(format!(
                    "no signature: neither {} nor {} in the state store",
                    local.display(),
                    journal::signature_key(run_id, &head)
                ));
            }
        },
    };
    let signed: Signed = match signature::parse(&what, &text) {
        Ok(s) => s,
        Err(e) => return tampered(e.to_string()),
    };
    if signed.run_id != run_id {
        return tampered(format!("{what} signs run `{}`", signed.run_id));
    }
    if signed.journal_head != head {
        let at = stored.iter().position(|e| e.sha256 == signed.journal_head);
        return tampered(match at {
            Some(i) => format!(
                "the signature covers the journal up to event {i}; events {} to {} came after it unsigned",
                i + 1,
                stored.len() - 1
            ),
            None => format!(
                "the signed journal head sha256:{} is no event of this journal",
                signed.journal_head
            ),
        });
    }
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    if let Err(e) = signature::verify(&signed, &public_key, &borrowed) {
        return tampered(e.to_string());
    }
    out!("signature valid: {what}, ed25519 key {}", signed.public_key);
    Ok(exit::OK)
}

/// Where two renderings first differ: the line number and both lines, shortened.
fn first_difference(actual: &[u8], expected: &[u8]) -> String {
    let actual = String::from_utf8_lossy(actual);
    let expected = String::from_utf8_lossy(expected);
    let short = |s: &str| s.chars().take(120).collect::<String>();
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        if a != e {
            return format!(
                "line {} is `{}`, the journal gives `{}`",
                i + 1,
                short(a.trim()),
                short(e.trim())
            );
        }
    }
    format!(
        "it has {} lines, the journal gives {}",
        actual.lines().count(),
        expected.lines().count()
    )
}
