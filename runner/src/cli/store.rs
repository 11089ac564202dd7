//! `respawn store put|get|ls|rm`: move single objects in and out of a store, e.g. WAL segments as PostgreSQL's
//! `archive_command` and `restore_command` (docs/store.md). Thin over `respawn::data::objects`: an object URL is
//! a store URL plus one last path segment, the key. Relative `file://` URLs are relative to the working directory.
//!
//! Quiet on success (archive_command runs once per segment); `-v` logs what was done. A transfer that takes
//! longer than [`BAR_AFTER`] shows bytes and throughput on stderr when it is a terminal.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use respawn::data::DataError;
use respawn::data::object_store::ObjectStore;
use respawn::data::objects::{
    self, ObjectUrl, PutOutcome, TransferError, list_objects, open_download, put_object,
    split_object_url,
};
use respawn::data::stores::{object_path, open_store_synced, open_store_with};

use super::{Usage, exit, setup};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Upload a file (or stdin) to the object URL names. An existing object with the same bytes is fine (exit 0);
    /// with other bytes it is kept and the command fails (exit 1) unless --overwrite.
    Put {
        /// STORE_URL/KEY, e.g. file:///srv/wal-archive/000000010000000000000003.
        url: String,
        /// The file to upload; stdin when absent or `-`.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Replace an existing object whatever it holds.
        #[arg(long)]
        overwrite: bool,
        /// Hide the progress line.
        #[arg(long)]
        no_progress: bool,
    },
    /// Download the object URL names to a file (or stdout). A missing object fails (exit 1); a file is written
    /// beside its destination and renamed into place, so no partial file ever appears.
    Get {
        /// STORE_URL/KEY.
        url: String,
        /// Where to write it; stdout when absent or `-`.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        #[arg(long)]
        no_progress: bool,
    },
    /// List every object under a store URL: key, size and last-modified time (RFC 3339), sorted by key.
    Ls {
        /// A store URL, e.g. file:///srv/wal-archive; keys are shown relative to it.
        url: String,
        /// A JSON array of {key, size, last_modified}.
        #[arg(long)]
        json: bool,
    },
    /// Delete the object URL names; a missing object is fine.
    Rm {
        /// STORE_URL/KEY.
        url: String,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<u8> {
    match command {
        StoreCommand::Put {
            url,
            file,
            overwrite,
            no_progress,
        } => put(&url, file.as_deref(), overwrite, no_progress),
        StoreCommand::Get {
            url,
            file,
            no_progress,
        } => get(&url, file.as_deref(), no_progress),
        StoreCommand::Ls { url, json } => ls(&url, json),
        StoreCommand::Rm { url } => rm(&url),
    }
}

/// A URL that names no object, or a store URL the allow-list refuses, is bad usage (exit 2); its message
/// already masks every value a refused URL carries.
fn usage(e: DataError) -> anyhow::Error {
    match e {
        DataError::BadUrl { .. } | DataError::BadKey { .. } => Usage(e.to_string()).into(),
        other => other.into(),
    }
}

/// The object URL split, and its store opened; `write` opens it for writing (a `file://` directory is created
/// and every write fsynced).
fn open(url: &str, write: bool) -> anyhow::Result<(ObjectUrl, Arc<dyn ObjectStore>)> {
    let object = split_object_url(url).map_err(usage)?;
    let cwd = std::env::current_dir()?;
    let store = if write {
        open_store_synced(&object.store_url, &cwd)
    } else {
        open_store_with(&object.store_url, &cwd, false)
    }
    .map_err(|e| match e {
        // Name the URL as given (masked), not the store part of it.
        DataError::BadUrl { why, .. } => usage(DataError::BadUrl {
            url: objects::masked(url),
            why,
        }),
        other => usage(other),
    })?;
    Ok((object, store))
}

/// `-` or nothing: the standard stream.
fn named(file: Option<&Path>) -> Option<&Path> {
    file.filter(|p| p.as_os_str() != "-")
}

fn put(url: &str, file: Option<&Path>, overwrite: bool, no_progress: bool) -> anyhow::Result<u8> {
    let (input, len) = match named(file) {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Usage(format!("put {url}: {}: {e}", path.display())))?;
            let meta = f.metadata()?;
            if meta.is_dir() {
                let why = format!("put {url}: {}: a directory, not a file", path.display());
                return Err(Usage(why).into());
            }
            (f, meta.is_file().then_some(meta.len()))
        }
        None => (
            std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?),
            None,
        ),
    };
    let (object, store) = open(url, true)?;
    let key = object_path(&object.key).map_err(usage)?;
    let mut meter = Meter::new("put", len, no_progress);
    let done = setup::runtime()?.block_on(async {
        let input = tokio::fs::File::from_std(input);
        let transfer = put_object(store.as_ref(), &key, input, len, overwrite, |n| {
            meter.update(n)
        });
        interruptible(transfer).await
    });
    meter.finish();
    let put = match done {
        Some(result) => result
            .map_err(|e| transfer_error(e, "reading the input").context(format!("put {url}")))?,
        None => return interrupted(&format!("put {url}")),
    };
    match put.outcome {
        PutOutcome::Written => {
            tracing::info!(url, bytes = put.bytes, "put: written");
            Ok(exit::OK)
        }
        PutOutcome::Identical => {
            tracing::info!(
                url,
                bytes = put.bytes,
                "put: already there with the same bytes"
            );
            Ok(exit::OK)
        }
        PutOutcome::Differs => Err(anyhow::anyhow!(
            "put {url}: the object already exists with different content; it was kept (--overwrite replaces it)"
        )),
    }
}

fn get(url: &str, file: Option<&Path>, no_progress: bool) -> anyhow::Result<u8> {
    let (object, store) = open(url, false)?;
    let target = named(file);
    let (dir, name) = match target {
        Some(path) => {
            let name = path
                .file_name()
                .ok_or_else(|| Usage(format!("{}: not a file name", path.display())))?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (dir, Some(name.to_os_string()))
        }
        None => (PathBuf::new(), None),
    };
    let runtime = setup::runtime()?;
    let download = runtime
        .block_on(open_download(store.as_ref(), &object.key))
        .map_err(|e| match e {
            DataError::NotFound { .. } => anyhow::anyhow!("get {url}: no such object"),
            other => anyhow::Error::new(other).context(format!("get {url}")),
        })?;
    let mut meter = Meter::new("get", Some(download.size()), no_progress);
    let (Some(path), Some(name)) = (target, name) else {
        let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        let done = runtime.block_on(async {
            let mut out = tokio::fs::File::from_std(stdout);
            interruptible(download.write_to(&mut out, |n| meter.update(n))).await
        });
        meter.finish();
        return match done {
            Some(Ok(_)) => Ok(exit::OK),
            // `respawn store get URL | head -c 100`: the reader has what it wanted.
            Some(Err(TransferError::Local(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Ok(exit::OK)
            }
            Some(Err(e)) => {
                Err(transfer_error(e, "writing to stdout").context(format!("get {url}")))
            }
            None => interrupted(&format!("get {url}")),
        };
    };
    // Written beside its destination under a hidden name, then renamed: restore_command must never leave a
    // partial segment where PostgreSQL would read it.
    let mut partial_name = std::ffi::OsString::from(".");
    partial_name.push(&name);
    partial_name.push(format!(
        ".respawn-{}-{:08x}.part",
        std::process::id(),
        fastrand::u32(..)
    ));
    let partial = dir.join(partial_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("get {url}: creating {}", partial.display()))?;
    let done = runtime.block_on(interruptible(async {
        let mut out = tokio::fs::File::from_std(file);
        let written = download.write_to(&mut out, |n| meter.update(n)).await?;
        out.sync_all().await?;
        Ok::<u64, TransferError>(written)
    }));
    meter.finish();
    let Some(done) = done else {
        let _ = std::fs::remove_file(&partial);
        return interrupted(&format!("get {url}"));
    };
    let placed = done
        .map_err(|e| transfer_error(e, &format!("writing {}", partial.display())))
        .and_then(|bytes| {
            std::fs::rename(&partial, path)
                .with_context(|| format!("renaming it to {}", path.display()))?;
            // The new name survives a crash too (best effort: not every filesystem syncs a directory).
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(bytes)
        });
    match placed {
        Ok(bytes) => {
            tracing::info!(url, file = %path.display(), bytes, "get: written");
            Ok(exit::OK)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.context(format!("get {url}")))
        }
    }
}

fn ls(url: &str, json: bool) -> anyhow::Result<u8> {
    objects::refuse_userinfo(url).map_err(usage)?;
    let cwd = std::env::current_dir()?;
    let store = open_store_with(url, &cwd, false).map_err(usage)?;
    let listed = setup::runtime()?
        .block_on(list_objects(store.as_ref()))
        .with_context(|| format!("ls {url}"))?;
    if json {
        out!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(exit::OK);
    }
    for o in &listed {
        out!("{}\t{}\t{}", o.key, o.size, o.last_modified);
    }
    Ok(exit::OK)
}

fn rm(url: &str) -> anyhow::Result<u8> {
    let (object, store) = open(url, false)?;
    setup::runtime()?
        .block_on(objects::delete_object(store.as_ref(), &object.key))
        .with_context(|| format!("rm {url}"))?;
    tracing::info!(url, "rm: deleted (or was not there)");
    Ok(exit::OK)
}

/// A transfer error with what the local side was doing when it was that side's.
fn transfer_error(e: TransferError, local: &str) -> anyhow::Error {
    match e {
        TransferError::Local(io) => anyhow::Error::new(io).context(local.to_string()),
        other => other.into(),
    }
}

/// Runs `transfer` unless SIGINT or SIGTERM comes first (None). Dropping the transfer drops an unfinished
/// upload, which leaves nothing under the key.
async fn interruptible<T>(transfer: impl std::future::Future<Output = T>) -> Option<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return Some(transfer.await);
    };
    tokio::select! {
        done = transfer => Some(done),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    }
}

fn interrupted(what: &str) -> anyhow::Result<u8> {
    eprintln!("error: {what}: interrupted");
    Ok(exit::INTERRUPTED)
}

/// A transfer shorter than this shows no progress line: archiving a segment from a terminal stays quiet.
const BAR_AFTER: Duration = Duration::from_secs(1);

/// How often the progress line's text is rebuilt (indicatif limits the drawing itself).
const BAR_EVERY: Duration = Duration::from_millis(100);

/// Bytes and throughput of one transfer on stderr, once it has taken [`BAR_AFTER`], and only on a terminal.
struct Meter {
    what: &'static str,
    total: Option<u64>,
    wanted: bool,
    started: Instant,
    last: Instant,
    bar: Option<ProgressBar>,
}

impl Meter {
    fn new(what: &'static str, total: Option<u64>, no_progress: bool) -> Meter {
        let now = Instant::now();
        Meter {
            what,
            total,
            wanted: !no_progress && std::io::stderr().is_terminal(),
            started: now,
            last: now,
            bar: None,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.wanted || self.last.elapsed() < BAR_EVERY || self.started.elapsed() < BAR_AFTER {
            return;
        }
        self.last = Instant::now();
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let of = self
            .total
            .map(|t| format!(" of {}", HumanBytes(t)))
            .unwrap_or_default();
        bar.set_message(format!(
            "{} {}{of} at {}/s",
            self.what,
            HumanBytes(done),
            HumanBytes((done as f64 / secs) as u64)
        ));
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
