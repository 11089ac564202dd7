//! Compile cache of precompiled components under the user cache dir.
//!
//! The key is the component's sha256 plus the engine's compatibility hash. Deserializing precompiled code is
//! unsafe (it is trusted machine code), so only files this cache wrote are loaded: each file carries a magic
//! header and the sha256 of its payload, checked before deserializing. A missing, truncated or corrupt entry
//! is recompiled and rewritten; the cache can never break a run.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"respawn-cwasm-1\n";

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

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl CompileCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> CompileCache {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    fn entry(&self, sha256: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("components")
                .join(format!("{sha256}-{}.cwasm", self.engine_key))
        })
    }

    /// Returns the compiled component for `bytes` (whose sha256 is `sha256`).
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        if let Some(path) = self.entry(sha256)
            && let Some(component) = read_entry(engine, &path)
        {
            return Ok((component, CacheOutcome::Hit));
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Some(path) = self.entry(sha256)
            && let Err(e) = write_entry(&path, &compiled)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache; continuing without it");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let payload = verified_payload(&data);
    let Some(payload) = payload else {
        tracing::warn!(path = %path.display(), "compile cache entry is corrupt; recompiling");
        let _ = std::fs::remove_file(path);
        return None;
    };
    // SAFETY: the payload carries our magic and its sha256 matches, so this cache wrote it from
    // `precompile_component` of an engine with the same compatibility hash (part of the file name).
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

fn verified_payload(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (digest, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

/// Writes via a temp file and rename, so a concurrent reader never sees half an entry.
fn write_entry(path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut data = Vec::with_capacity(MAGIC.len() + 32 + compiled.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&Sha256::digest(compiled));
    data.extend_from_slice(compiled);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_check_rejects_truncation_and_foreign_files() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&Sha256::digest(b"code"));
        data.extend_from_slice(b"code");
        assert_eq!(verified_payload(&data), Some(&b"code"[..]));
        assert_eq!(verified_payload(&data[..data.len() - 1]), None);
        assert_eq!(verified_payload(b"\x7fELF not ours"), None);
    }
}
