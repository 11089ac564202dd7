//! Where plugin components come from: `builtin:NAME@VER` (embedded by build.rs), `file://PATH` (relative to the
//! workflow), or any store URL.

use std::path::Path;

use sha2::{Digest, Sha256};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Largest component accepted from any source.
pub use respawn_sandbox::limits::MAX_COMPONENT_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no builtin plugin `{name}` matching version {version}; builtins: {available}")]
    NoBuiltin {
        name: String,
        version: String,
        available: String,
    },
    #[error("cannot read plugin {path}: {message}")]
    Read { path: String, message: String },
    #[error("plugin {source_url} is {size} bytes; the limit is {MAX_COMPONENT_BYTES}")]
    TooBig { source_url: String, size: usize },
    #[error("unsupported plugin source `{0}`")]
    Unsupported(String),
}

/// A plugin component's bytes and digest.
#[derive(Debug, Clone)]
pub struct PluginBytes {
    pub source: String,
    pub bytes: std::sync::Arc<[u8]>,
    /// Lowercase hex sha256 of `bytes`.
    pub sha256: String,
}

impl PluginBytes {
    pub fn new(source: &str, bytes: Vec<u8>) -> Result<PluginBytes, SourceError> {
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(SourceError::TooBig {
                source_url: source.into(),
                size: bytes.len(),
            });
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(PluginBytes {
            source: source.into(),
            bytes: bytes.into(),
            sha256,
        })
    }
}

/// `builtin:check@0.1` matches the embedded `check` whose version starts with `0.1` at a component boundary.
pub fn builtin(spec: &str) -> Result<PluginBytes, SourceError> {
    let (name, version) = spec.split_once('@').unwrap_or((spec, ""));
    let found = BUILTIN_PLUGINS.iter().find(|(n, v, _)| {
        *n == name && (version.is_empty() || *v == version || v.starts_with(&format!("{version}.")))
    });
    match found {
        Some((_, _, bytes)) => PluginBytes::new(&format!("builtin:{spec}"), bytes.to_vec()),
        None => Err(SourceError::NoBuiltin {
            name: name.into(),
            version: version.into(),
            available: BUILTIN_PLUGINS
                .iter()
                .map(|(n, v, _)| format!("{n}@{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Reads a plugin from `builtin:` or `file://` sources. Store URLs are read by the caller through `data/`.
pub fn load_local(source: &str, base_dir: &Path) -> Result<PluginBytes, SourceError> {
    if let Some(spec) = source.strip_prefix("builtin:") {
        return builtin(spec);
    }
    if let Some(rest) = source.strip_prefix("file://") {
        let path = if Path::new(rest).is_absolute() {
            Path::new(rest).to_path_buf()
        } else {
            base_dir.join(rest)
        };
        let meta = std::fs::metadata(&path).map_err(|e| SourceError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if meta.len() > MAX_COMPONENT_BYTES {
            return Err(SourceError::TooBig {
                source_url: source.into(),
                size: meta.len() as usize,
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| SourceError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        return PluginBytes::new(source, bytes);
    }
    Err(SourceError::Unsupported(source.into()))
}

/// Reads a plugin from a store URL whose last path segment is the object, e.g.
/// `s3://bucket/plugins/dns.wasm?endpoint=…`: the store is the URL without that segment.
pub async fn load_from_store(source: &str, base_dir: &Path) -> Result<PluginBytes, SourceError> {
    use respawn_data::object_store::ObjectStoreExt;
    let read = |message: String| SourceError::Read {
        path: source.to_string(),
        message,
    };
    let mut url = url::Url::parse(source).map_err(|e| read(e.to_string()))?;
    let path = url.path().to_string();
    let Some((dir, name)) = path.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
        return Err(read(
            "expected a URL ending in the component's object name".into(),
        ));
    };
    url.set_path(dir);
    let store =
        respawn_data::open_store(url.as_str(), base_dir).map_err(|e| read(e.to_string()))?;
    let key = respawn_data::stores::object_path(name).map_err(|e| read(e.to_string()))?;
    let meta = store.head(&key).await.map_err(|e| read(e.to_string()))?;
    if meta.size > MAX_COMPONENT_BYTES {
        return Err(SourceError::TooBig {
            source_url: source.into(),
            size: meta.size as usize,
        });
    }
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| read(e.to_string()))?
        .bytes()
        .await
        .map_err(|e| read(e.to_string()))?;
    PluginBytes::new(source, bytes.to_vec())
}

/// Where build.rs left the test-only plugins (echo, hostile, liar). For tests; never embedded.
pub const TEST_PLUGINS_DIR: &str = env!("RESPAWN_TEST_PLUGINS");
