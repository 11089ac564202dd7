//! Why the compile cache may be trusted with machine code: respawn loads a cache entry as native code without
//! re-checking it against the sandbox, so a writer of the cache could run anything as the runner. Two guards:
//!
//! - **Ownership.** The cache directory, its entries directory and its key must belong to the user respawn runs as
//!   and be writable by nobody else (the key readable by nobody else). A cache that fails this is not used: every
//!   run compiles instead, with a warning saying why. Directories respawn creates get mode 0700.
//! - **Authentication.** Every entry carries an HMAC-SHA256 of its name and payload under a per-user key
//!   (`mac.key`, 32 random bytes, mode 0600, made on first use). An entry whose MAC does not verify (written
//!   without the key, copied from another machine or user, renamed to another plugin's name, or from an older
//!   respawn that wrote none) is never loaded: it is recompiled and overwritten.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the key file in the cache's root directory.
pub const KEY_FILE: &str = "mac.key";
const KEY_LEN: usize = 32;
/// Bytes of a MAC in an entry.
pub const MAC_LEN: usize = 32;

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "{path} belongs to uid {owner}, not to uid {me} that respawn runs as: another user could put machine code there"
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is {what} by other users (mode {mode:04o}): they could put machine code there; `chmod go-w` it (and \
         go-r for {KEY_FILE})"
    )]
    Open {
        path: PathBuf,
        what: &'static str,
        mode: u32,
    },
    #[error("{path} is not a {expected}")]
    Kind {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The per-user key entries are authenticated with.
#[derive(Clone)]
pub struct CacheKey([u8; KEY_LEN]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

impl CacheKey {
    /// The MAC of the entry named `name` (its file name without `.cwasm`) holding `payload`.
    pub fn mac(&self, name: &str, payload: &[u8]) -> [u8; MAC_LEN] {
        self.hasher(name, payload).finalize().into_bytes().into()
    }

    /// Whether `mac` authenticates `payload` as the entry `name` (compared in constant time).
    pub fn verifies(&self, name: &str, payload: &[u8], mac: &[u8]) -> bool {
        self.hasher(name, payload).verify_slice(mac).is_ok()
    }

    fn hasher(&self, name: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut h =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // The name is length-prefixed so that no name/payload split collides with another.
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(payload);
        h
    }
}

/// Creates the cache rooted at `root` and its `entries` directory if missing (mode 0700), checks that both and
/// the key belong to this user and are closed to others, and returns the key (made now if there was none).
pub fn open(root: &Path, entries: &Path) -> Result<CacheKey, TrustError> {
    for dir in [root, entries] {
        ensure_dir(dir)?;
        check_private(dir, "directory", 0o022)?;
    }
    read_or_make_key(&root.join(KEY_FILE))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn ensure_dir(dir: &Path) -> Result<(), TrustError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// `path` (not followed if a symlink) is a `kind` owned by this user, with none of `forbidden` mode bits set.
fn check_private(path: &Path, kind: &'static str, forbidden: u32) -> Result<(), TrustError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let right_kind = match kind {
        "directory" => meta.is_dir(),
        _ => meta.is_file(),
    };
    if !right_kind {
        return Err(TrustError::Kind {
            path: path.to_path_buf(),
            expected: kind,
        });
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(TrustError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        let what = if mode & forbidden & 0o022 != 0 {
            "writable"
        } else {
            "readable"
        };
        return Err(TrustError::Open {
            path: path.to_path_buf(),
            what,
            mode,
        });
    }
    Ok(())
}

fn read_or_make_key(path: &Path) -> Result<CacheKey, TrustError> {
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match made {
        Ok(mut file) => {
            let mut key = [0u8; KEY_LEN];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut r| r.read_exact(&mut key))
                .map_err(io(Path::new("/dev/urandom")))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(io(path))?;
            return Ok(CacheKey(key));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    check_private(path, "file", 0o077)?;
    let bytes = std::fs::read(path).map_err(io(path))?;
    // A key cut short by a writer that died is unusable; there is no safe way to repair it but by hand.
    let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| TrustError::Kind {
        path: path.to_path_buf(),
        expected: "32-byte key (delete it and the cache's entries to start afresh)",
    })?;
    Ok(CacheKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_cache_open_to_other_users_is_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        let entries = root.join("components");
        let key = open(&root, &entries).unwrap();
        let again = open(&root, &entries).unwrap();
        assert_eq!(key.mac("e", b"x"), again.mac("e", b"x"), "the key persists");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join(KEY_FILE)), 0o600);

        chmod(&entries, 0o777);
        let err = open(&root, &entries).unwrap_err().to_string();
        assert!(
            err.contains("components") && err.contains("writable"),
            "{err}"
        );
        chmod(&entries, 0o755);
        assert!(
            open(&root, &entries).is_ok(),
            "readable by others is fine for a directory"
        );

        chmod(&root.join(KEY_FILE), 0o644);
        let err = open(&root, &entries).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE) && err.contains("readable"), "{err}");
        chmod(&root.join(KEY_FILE), 0o600);

        std::fs::write(root.join(KEY_FILE), b"short").unwrap();
        assert!(open(&root, &entries).is_err());
    }

    #[test]
    fn a_mac_binds_the_entry_name_and_its_payload() {
        let tmp = tempfile::tempdir().unwrap();
        let key = open(&tmp.path().join("c"), &tmp.path().join("c/e")).unwrap();
        let mac = key.mac("aa-01", b"code");
        assert!(key.verifies("aa-01", b"code", &mac));
        assert!(
            !key.verifies("bb-01", b"code", &mac),
            "renamed to another plugin"
        );
        assert!(!key.verifies("aa-01", b"codf", &mac), "payload changed");
        let other = open(&tmp.path().join("d"), &tmp.path().join("d/e")).unwrap();
        assert!(
            !other.verifies("aa-01", b"code", &mac),
            "another user's key"
        );
    }
}
