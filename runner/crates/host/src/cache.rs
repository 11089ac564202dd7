//! Compile cache of precompiled components under the user cache dir.
//!
//! The key is the component's sha256 plus the engine's compatibility hash. Deserializing precompiled code is
//! unsafe (it is trusted machine code), so only files this cache wrote are loaded: each file carries a magic
//! header and an HMAC of its name and payload under a per-user key, checked before deserializing, and the cache
//! is used only when it and the key belong to the runner's user and are closed to others (`cache_trust`). A
//! missing, truncated, corrupt or unauthenticated entry is recompiled and rewritten; the cache can never break
//! a run.
//!
//! Compiling is the one slow part of loading a plugin (an 18.5 MiB Python component takes about 10 s in a
//! release build, most of a minute in a debug one), so a compile is announced on stderr at info level (target
//! [`COMPILE_LOG_TARGET`], which the CLI shows by default), and a hit is silent.
//!
//! The cache is bounded: after each insert, the least recently used entries are deleted until the whole is within
//! [`max_bytes_from_env`] (`RESPAWN_CACHE_MAX`, default [`DEFAULT_MAX_BYTES`]). A hit refreshes its entry's
//! modification time, which is what "recently used" means here. [`list`] and [`prune`] serve `respawn cache ls`
//! and `respawn cache prune`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::cache_trust::{self, CacheKey, MAC_LEN};

/// Entries with the plugin's source after the magic (`u16` length, little endian, then UTF-8) and a sha256 of
/// the payload: no longer loaded (anyone could write one), but still listed and pruned.
const MAGIC_V2: &[u8; 16] = b"respawn-cwasm-2\n";
/// As v2, with an HMAC of the entry's name and payload in place of the sha256.
const MAGIC: &[u8; 16] = b"respawn-cwasm-3\n";
/// Longest source recorded in an entry: enough for any URL a person would type; a longer one is cut.
const MAX_SOURCE_BYTES: usize = 1024;

/// The cap when `RESPAWN_CACHE_MAX` is unset: dozens of plugins (a builtin compiles to a few MiB, a Python
/// component to tens), and room for the entries of a previous respawn until they age out.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// The variable that sets the cap, as a size (`500MiB`, `2GiB`, `0` to keep nothing).
pub const MAX_BYTES_ENV: &str = "RESPAWN_CACHE_MAX";
/// A temp file older than this is a leftover of a writer that died mid-write, and is deleted by the next prune.
const STALE_TEMP_AFTER: Duration = Duration::from_secs(3600);

/// The tracing target of the line announcing a compile (shown by the CLI at its default verbosity).
pub const COMPILE_LOG_TARGET: &str = "respawn::compile";

/// `$XDG_CACHE_HOME/respawn` or `~/.cache/respawn`; `RESPAWN_CACHE_DIR` overrides (tests, CI).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RESPAWN_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("respawn"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("respawn"))
}

/// Where the entries of a cache rooted at `dir` live.
pub fn entries_dir(dir: &Path) -> PathBuf {
    dir.join("components")
}

/// The cap from `RESPAWN_CACHE_MAX`, else [`DEFAULT_MAX_BYTES`]. A value that is not a size is ignored with a
/// warning (the cache never breaks a run).
pub fn max_bytes_from_env() -> u64 {
    match std::env::var(MAX_BYTES_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_size(&text).unwrap_or_else(|e| {
            tracing::warn!(
                "{MAX_BYTES_ENV}: {e}; using {}",
                format_size(DEFAULT_MAX_BYTES)
            );
            DEFAULT_MAX_BYTES
        }),
        _ => DEFAULT_MAX_BYTES,
    }
}

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

pub struct CompileCache {
    /// The cache's root and its key: `None` when there is no cache or it cannot be trusted.
    dir: Option<(PathBuf, CacheKey)>,
    engine_key: String,
    max_bytes: u64,
}

impl CompileCache {
    /// A cache in `dir` (`None`: compile every time) for components of `engine`, capped by
    /// [`max_bytes_from_env`].
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let dir = dir.and_then(|dir| match cache_trust::open(&dir, &entries_dir(&dir)) {
            Ok(key) => Some((dir, key)),
            Err(e) => {
                tracing::warn!(
                    target: COMPILE_LOG_TARGET,
                    "compile cache {} not used, so every run compiles its plugins: {e}",
                    dir.display()
                );
                None
            }
        });
        CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
            max_bytes: max_bytes_from_env(),
        }
    }

    /// The same cache with another cap.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> CompileCache {
        self.max_bytes = max_bytes;
        self
    }

    /// The engine half of every key this cache writes: entries with another one belong to another wasmtime
    /// version or configuration and are never loaded by this one.
    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }

    fn entry(&self, sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|(d, _)| entries_dir(d).join(format!("{sha256}-{}.cwasm", self.engine_key)))
    }

    /// Whether a trusted cache is in use (`false`: none was given, or it failed the ownership checks).
    pub fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// Returns the compiled component for `bytes` (whose sha256 is `sha256`), fetched from `source`.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
        source: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        if let (Some(path), Some((_, key))) = (self.entry(sha256), &self.dir)
            && let Some(component) = read_entry(engine, &path, key)
        {
            touch(&path);
            return Ok((component, CacheOutcome::Hit));
        }
        let size = format_size(bytes.len() as u64);
        let later = match &self.dir {
            Some(_) => "first run only: later runs load it from the compile cache",
            None => "there is no compile cache, so every run compiles it",
        };
        tracing::info!(target: COMPILE_LOG_TARGET, "compiling plugin {source} ({size}) to machine code; {later}");
        let started = Instant::now();
        let compiled = engine.precompile_component(bytes)?;
        tracing::debug!(target: COMPILE_LOG_TARGET, "compiled {source} in {:.1?}", started.elapsed());
        if let Some(path) = self.entry(sha256) {
            self.insert(&path, &compiled, source);
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }

    /// Writes an entry, then deletes the least recently used others until the cache fits its cap.
    fn insert(&self, path: &Path, compiled: &[u8], source: &str) {
        let size =
            (MAGIC.len() + 2 + source.len().min(MAX_SOURCE_BYTES) + 32 + compiled.len()) as u64;
        if size > self.max_bytes {
            tracing::info!(
                target: COMPILE_LOG_TARGET,
                "plugin {source} compiles to {}, more than the compile cache's cap of {} ({MAX_BYTES_ENV}): \
                 not cached",
                format_size(size),
                format_size(self.max_bytes)
            );
            return;
        }
        let Some((_, key)) = &self.dir else { return };
        if let Err(e) = write_entry(path, compiled, source, key) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache; continuing without it");
            return;
        }
        let dir = path.parent().expect("cache entries live in a directory");
        if let Err(e) = prune_entries(dir, self.max_bytes, Some(path)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot prune the compile cache");
        }
    }
}

/// One entry of the cache, as `respawn cache ls` shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    /// The file name without `.cwasm`: `SHA256-ENGINEKEY`.
    pub key: String,
    /// The component's sha256 (the first half of the key).
    pub sha256: String,
    /// The engine's compatibility key (the second half).
    pub engine_key: String,
    /// Bytes on disk.
    pub size: u64,
    /// When the entry was last written or loaded.
    pub last_used: SystemTime,
    /// Where the component came from when it was compiled (`builtin:check@0.1.0`, `file://…`), if recorded.
    pub source: Option<String>,
}

/// The entries of the cache rooted at `dir`, most recently used first. A cache never written is empty.
pub fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = scan(&entries_dir(dir))?.0;
    entries.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
    Ok(entries)
}

/// What [`prune`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// The entries deleted, least recently used first.
    pub removed: Vec<Entry>,
    /// Entries left, and their bytes.
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Deletes the least recently used entries of the cache rooted at `dir` until the rest take at most `max_bytes`
/// (0 deletes them all), and any temp file a dead writer left behind.
pub fn prune(dir: &Path, max_bytes: u64) -> std::io::Result<Pruned> {
    prune_entries(&entries_dir(dir), max_bytes, None)
}

/// [`prune`] on the entries directory itself, never deleting `keep` (the entry just written).
fn prune_entries(dir: &Path, max_bytes: u64, keep: Option<&Path>) -> std::io::Result<Pruned> {
    let (mut entries, stale_temps) = scan(dir)?;
    for temp in stale_temps {
        let _ = std::fs::remove_file(temp);
    }
    entries.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.key.cmp(&b.key)));
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    let mut pruned = Pruned::default();
    for entry in entries {
        if total > max_bytes && keep != Some(entry.path.as_path()) {
            match std::fs::remove_file(&entry.path) {
                // Another respawn pruning at the same time got there first: it is gone either way.
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= entry.size;
            pruned.removed.push(entry);
        } else {
            pruned.kept += 1;
            pruned.kept_bytes += entry.size;
        }
    }
    Ok(pruned)
}

/// The entries in `dir`, and the temp files older than [`STALE_TEMP_AFTER`]. Files that are neither are not
/// ours and are left alone.
fn scan(dir: &Path) -> std::io::Result<(Vec<Entry>, Vec<PathBuf>)> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let (mut entries, mut stale) = (Vec::new(), Vec::new());
    for dirent in read {
        let dirent = dirent?;
        let path = dirent.path();
        let Ok(meta) = dirent.metadata() else {
            continue; // deleted meanwhile
        };
        let name = dirent.file_name().to_string_lossy().into_owned();
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(key) = name.strip_suffix(".cwasm")
            && let Some((sha256, engine_key)) = parse_key(key)
            && meta.is_file()
        {
            entries.push(Entry {
                key: key.to_string(),
                sha256: sha256.to_string(),
                engine_key: engine_key.to_string(),
                size: meta.len(),
                last_used: modified,
                source: read_source(&path),
                path,
            });
        } else if let Some((key, pid)) = name.split_once(".tmp")
            && parse_key(key).is_some()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && modified.elapsed().is_ok_and(|age| age > STALE_TEMP_AFTER)
        {
            stale.push(path);
        }
    }
    Ok((entries, stale))
}

/// `SHA256-ENGINEKEY` split in two, when both halves are lowercase hex of the right length.
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let (sha256, engine_key) = key.split_once('-')?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(sha256, 64) && hex(engine_key, 16)).then_some((sha256, engine_key))
}

/// The source recorded in an entry's header, reading only the header.
fn read_source(path: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(MAGIC.len() + 2 + MAX_SOURCE_BYTES);
    std::fs::File::open(path)
        .ok()?
        .take((MAGIC.len() + 2 + MAX_SOURCE_BYTES) as u64)
        .read_to_end(&mut head)
        .ok()?;
    let rest = head
        .strip_prefix(MAGIC.as_slice())
        .or_else(|| head.strip_prefix(MAGIC_V2.as_slice()))?;
    let (source, _) = split_source(rest)?;
    Some(String::from_utf8_lossy(source).into_owned())
}

/// A length-prefixed source and what follows it.
fn split_source(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Marks an entry used now, so the cap deletes it last. A cache on a read-only disk is simply not refreshed.
fn touch(path: &Path) {
    let now = SystemTime::now();
    let times = std::fs::FileTimes::new()
        .set_accessed(now)
        .set_modified(now);
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_times(times));
}

fn read_entry(engine: &Engine, path: &Path, key: &CacheKey) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let payload = verified_payload(&data, &entry_name(path), key);
    let Some(payload) = payload else {
        if data.starts_with(MAGIC_V2) {
            tracing::info!(target: COMPILE_LOG_TARGET, path = %path.display(), "compile cache entry from an earlier respawn, which did not authenticate entries; recompiling");
        } else {
            tracing::warn!(path = %path.display(), "compile cache entry is corrupt, or not authenticated by this user's key; recompiling");
        }
        let _ = std::fs::remove_file(path);
        return None;
    };
    // SAFETY: the payload's MAC verifies under this user's key, which only this user can read, so this cache
    // wrote it from `precompile_component` of an engine with the same compatibility hash (part of the name).
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// An entry's name: its file name without `.cwasm` (`SHA256-ENGINEKEY`), which its MAC covers.
fn entry_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn verified_payload<'a>(data: &'a [u8], name: &str, key: &CacheKey) -> Option<&'a [u8]> {
    let rest = split_source(data.strip_prefix(MAGIC.as_slice())?)?.1;
    let (mac, payload) = rest.split_first_chunk::<MAC_LEN>()?;
    key.verifies(name, payload, mac).then_some(payload)
}

/// Writes via a temp file and rename, so a concurrent reader never sees half an entry.
fn write_entry(path: &Path, compiled: &[u8], source: &str, key: &CacheKey) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut cut = source.len().min(MAX_SOURCE_BYTES);
    while !source.is_char_boundary(cut) {
        cut -= 1;
    }
    let source = &source.as_bytes()[..cut];
    let mut data = Vec::with_capacity(MAGIC.len() + 2 + source.len() + 32 + compiled.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&(source.len() as u16).to_le_bytes());
    data.extend_from_slice(source);
    data.extend_from_slice(&key.mac(&entry_name(path), compiled));
    data.extend_from_slice(compiled);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// A size such as `2GiB`, `500MiB`, `1.5G`, `300MB` or `1048576` (bytes). `K`, `M`, `G` and `T` alone, and with
/// `iB`, are powers of 1024; with `B` (`MB`), powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("`{text}` is not a size (e.g. 2GiB, 500MiB, 0)")),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 2GiB, 500MiB, 0)"))?;
    Ok((number * unit_bytes as f64) as u64)
}

/// `18.5 MiB`: one decimal in the largest binary unit that keeps the number at least 1.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key(root: &Path) -> CacheKey {
        cache_trust::open(root, &entries_dir(root)).unwrap()
    }

    #[test]
    fn payload_check_rejects_truncation_forgery_and_foreign_files() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let key = test_key(dir.path());
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&3u16.to_le_bytes());
        data.extend_from_slice(b"src");
        data.extend_from_slice(&key.mac("name", b"code"));
        data.extend_from_slice(b"code");
        assert_eq!(verified_payload(&data, "name", &key), Some(&b"code"[..]));
        assert_eq!(verified_payload(&data, "other", &key), None);
        assert_eq!(
            verified_payload(&data[..data.len() - 1], "name", &key),
            None
        );
        assert_eq!(verified_payload(b"\x7fELF not ours", "name", &key), None);
        assert_eq!(
            verified_payload(&data[..MAGIC.len() + 1], "name", &key),
            None
        );

        // What anyone could write without the key: an earlier entry format, whose check was a plain sha256.
        let mut v2 = MAGIC_V2.to_vec();
        v2.extend_from_slice(&0u16.to_le_bytes());
        v2.extend_from_slice(&Sha256::digest(b"code"));
        v2.extend_from_slice(b"code");
        assert_eq!(verified_payload(&v2, "name", &key), None);
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&0u16.to_le_bytes());
        forged.extend_from_slice(&Sha256::digest(b"code"));
        forged.extend_from_slice(b"code");
        assert_eq!(verified_payload(&forged, "name", &key), None);
    }

    #[test]
    fn a_cache_directory_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shared");
        std::fs::create_dir_all(entries_dir(&root)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = CompileCache::new(&Engine::default(), Some(root.clone()));
        assert!(!cache.enabled());
        assert!(
            cache.entry(&"07".repeat(32)).is_none(),
            "nothing is read or written there"
        );
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(CompileCache::new(&Engine::default(), Some(root)).enabled());
    }

    fn key(n: u8) -> String {
        format!("{}-{}", format!("{n:02x}").repeat(32), "0123456789abcdef")
    }

    /// An entry of `size` bytes recording `source`, last used `age` ago.
    fn fake_entry(dir: &Path, n: u8, size: usize, age: Duration, source: &str) -> PathBuf {
        let path = entries_dir(dir).join(format!("{}.cwasm", key(n)));
        write_entry(&path, &vec![n; size], source, &test_key(dir)).unwrap();
        let when = SystemTime::now() - age;
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn pruning_to_a_cap_deletes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let oldest = fake_entry(dir.path(), 1, 1000, hour * 3, "file:///a.wasm");
        let middle = fake_entry(dir.path(), 2, 1000, hour * 2, "file:///b.wasm");
        let newest = fake_entry(dir.path(), 3, 1000, hour, "builtin:c@1.0.0");
        let entry_size = std::fs::metadata(&newest).unwrap().len();
        // Somebody else's file and a live writer's temp file are left alone; a dead writer's is deleted.
        let foreign = entries_dir(dir.path()).join("notes.txt");
        std::fs::write(&foreign, "mine").unwrap();
        let live_temp = entries_dir(dir.path()).join(format!("{}.tmp42", key(4)));
        std::fs::write(&live_temp, "half").unwrap();
        let dead_temp = entries_dir(dir.path()).join(format!("{}.tmp43", key(5)));
        std::fs::write(&dead_temp, "half").unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(&dead_temp)
            .unwrap();
        f.set_modified(SystemTime::now() - hour * 2).unwrap();

        let listed = list(dir.path()).unwrap();
        let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, [key(3), key(2), key(1)], "most recently used first");
        assert_eq!(listed[0].source.as_deref(), Some("builtin:c@1.0.0"));
        assert_eq!(listed[0].size, entry_size);

        let two_newest = listed[0].size + listed[1].size;
        let pruned = prune(dir.path(), two_newest + 10).unwrap();
        assert_eq!(pruned.removed.len(), 1);
        assert_eq!(pruned.removed[0].path, oldest);
        assert_eq!((pruned.kept, pruned.kept_bytes), (2, two_newest));
        assert!(!oldest.exists() && middle.exists() && newest.exists());
        assert!(foreign.exists() && live_temp.exists() && !dead_temp.exists());

        // A hit refreshes an entry: now `middle` is the newest and `newest` goes first.
        touch(&middle);
        let pruned = prune(dir.path(), entry_size).unwrap();
        assert_eq!(pruned.removed[0].path, newest);
        assert!(middle.exists());

        let all = prune(dir.path(), 0).unwrap();
        assert_eq!((all.removed.len(), all.kept), (1, 0));
        assert!(list(dir.path()).unwrap().is_empty());
        assert!(
            foreign.exists(),
            "files that are not entries are never deleted"
        );
    }

    #[test]
    fn an_insert_keeps_the_cache_under_its_cap_and_never_deletes_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        fake_entry(dir.path(), 1, 1000, hour * 2, "old");
        fake_entry(dir.path(), 2, 1000, hour, "newer");
        let engine = Engine::default();
        let cache = CompileCache::new(&engine, Some(dir.path().to_path_buf())).with_max_bytes(2500);
        let path = cache.entry(&"07".repeat(32)).unwrap();
        cache.insert(&path, &[7; 1000], "new");
        let sources: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .filter_map(|e| e.source)
            .collect();
        assert_eq!(sources, ["new", "newer"]);

        // Bigger than the whole cap: not written, and nothing else is deleted for it.
        let huge = cache.entry(&"08".repeat(32)).unwrap();
        cache.insert(&huge, &[8; 4000], "huge");
        assert!(!huge.exists());
        assert_eq!(list(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(19_398_656), "18.5 MiB");
        assert_eq!(format_size(DEFAULT_MAX_BYTES), "2.0 GiB");
    }
}
