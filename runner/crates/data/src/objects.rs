//! Single objects named by URL, for `respawn store put|get|ls|rm` and PostgreSQL's `archive_command` and
//! `restore_command`.
//!
//! An *object URL* is a store URL (see [`crate::stores`]) with one more path segment, the key:
//! `file:///srv/wal-archive/000000010000000000000003` is key `000000010000000000000003` in the store
//! `file:///srv/wal-archive`, and `s3://bucket/wal/0003?endpoint=…` is key `0003` in `s3://bucket/wal?endpoint=…`.
//! [`split_object_url`] does the split. The store is the object's directory, so a `file://` archive directory is
//! created by the first put and never removed by a delete, and `ls` of the store URL lists the keys that, appended
//! to it, name the objects again.
//!
//! Every transfer streams with bounded memory (see [`ONE_PUT_MAX`], [`PART_SIZE`], [`PARTS_IN_FLIGHT`]). A put is
//! atomic: readers see the old object, or none, until the new one is complete (`file://` writes a staging file and
//! renames it; cloud stores publish a put or a completed multipart upload at once).
//!
//! ```no_run
//! # async fn example() -> Result<(), respawn_data::objects::TransferError> {
//! use respawn_data::objects::{PutOutcome, put_object, split_object_url};
//! use respawn_data::stores::{object_path, open_store_synced};
//!
//! let url = split_object_url("file:///srv/wal-archive/000000010000000000000003")?;
//! let store = open_store_synced(&url.store_url, std::path::Path::new("."))?;
//! let segment = tokio::fs::File::open("pg_wal/000000010000000000000003").await?;
//! let put = put_object(store.as_ref(), &object_path(&url.key)?, segment, None, false, |_| {}).await?;
//! assert_ne!(put.outcome, PutOutcome::Differs, "the archive holds other bytes under this name");
//! # Ok(()) }
//! ```

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stores::{DataError, object_path};

/// An input of at most this many bytes is published with one conditional put (`PutMode::Create`: a hard link on
/// `file://`, `If-None-Match: *` on S3), so that two writers racing for a new key cannot both win. 16 MiB is
/// PostgreSQL's default WAL segment size: every segment takes this path, and memory stays bounded by it.
pub const ONE_PUT_MAX: usize = 16 << 20;

/// Size of one part of a multipart upload (a larger input): 10,000 parts, S3's limit, make 78 GiB.
pub const PART_SIZE: usize = 8 << 20;

/// Parts uploaded at once: enough to keep a link busy while reading the next part, and bounds memory to about
/// `PARTS_IN_FLIGHT × PART_SIZE` (32 MiB).
pub const PARTS_IN_FLIGHT: usize = 4;

/// Bytes read from the input (or compared) at a time.
const READ_CHUNK: usize = 1 << 20;

/// An object URL split into the store URL and the key within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// The store: the URL without its last path segment, query kept (`s3://bucket/wal?endpoint=…`).
    pub store_url: String,
    /// The last path segment.
    pub key: String,
}

/// Splits an object URL into store URL and key: the key is the last path segment, the store is everything else
/// (with the query, which belongs to the store). A URL that ends in `/` or has no path names no object.
pub fn split_object_url(url: &str) -> Result<ObjectUrl, DataError> {
    let bad = |why: &str| DataError::BadUrl {
        url: masked(url),
        why: why.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad(
            "expected SCHEME://STORE/KEY, e.g. file:///srv/wal-archive/KEY or s3://BUCKET/PREFIX/KEY",
        ));
    };
    refuse_userinfo(url)?;
    let local = scheme == "file" || scheme == "memory";
    // `file://` paths are taken literally (a `?` is part of the name); a cloud URL's query configures the store.
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) if !local => (path, Some(query)),
        _ => (rest, None),
    };
    let (store, key) = match path.rsplit_once('/') {
        Some((store, key)) => (store, key),
        // file://NAME: NAME in the working directory.
        None if scheme == "file" => (".", path),
        None => {
            return Err(bad(&format!(
                "no key: expected {scheme}://BUCKET/…/KEY, the object's name after the last `/`"
            )));
        }
    };
    if key.is_empty() {
        return Err(bad(
            "ends with `/`: name an object (the key is what follows the last `/`)",
        ));
    }
    // `file:///KEY` is KEY in `/`.
    let store = if store.is_empty() && scheme == "file" {
        "/"
    } else {
        store
    };
    object_path(key)?;
    let store_url = match query {
        Some(q) => format!("{scheme}://{store}?{q}"),
        None => format!("{scheme}://{store}"),
    };
    Ok(ObjectUrl {
        store_url,
        key: key.to_string(),
    })
}

/// Refuses `user:password@` in a cloud store URL (the store would ignore it; the URL ends up in logs), masked.
pub fn refuse_userinfo(url: &str) -> Result<(), DataError> {
    if url.starts_with("file://") || url.starts_with("memory://") {
        return Ok(());
    }
    match url::Url::parse(url) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(DataError::BadUrl {
            url: masked(url),
            why: "credentials may not be set in a store URL; they come from the environment (AWS_*, AZURE_*, \
                  GOOGLE_*)"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// `url` with its user information and every query value replaced by `***`, for messages about a URL that was
/// refused (a refused value may be a secret).
pub fn masked(url: &str) -> String {
    if url.starts_with("file://") || url.starts_with("memory://") {
        return url.to_string();
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() {
                let _ = u.set_username("***");
            }
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, _)| (k.into_owned(), "***".into()))
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Unparsable: show only what precedes a query or user information.
        Err(_) => {
            let cut = url.find(['?', '@']).unwrap_or(url.len());
            format!("{}…", &url[..cut])
        }
    }
}

/// A failed transfer: the store's side, or the local side (reading the input, writing the output).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Data(#[from] DataError),
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Local(#[from] std::io::Error),
    /// The object's bytes ended before its size: nothing may treat what arrived as the object.
    #[error("the object ended after {got} of its {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    /// Without overwrite, an object appeared at the key while a multipart upload was under way.
    #[error(
        "an object appeared under this name during the upload; it was kept and the upload dropped"
    )]
    Appeared,
}

impl From<object_store::Error> for TransferError {
    fn from(e: object_store::Error) -> Self {
        TransferError::Data(DataError::Store(e))
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written (new, or replaced with overwrite).
    Written,
    /// The object already held exactly these bytes; nothing was written.
    Identical,
    /// The object already held other bytes; nothing was written.
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    pub outcome: PutOutcome,
    /// Bytes read from the input (for `Differs`, as far as the comparison got).
    pub bytes: u64,
}

/// Puts `input` at `key`. Without `overwrite`, an existing object is compared with the input instead: the same
/// bytes are [`PutOutcome::Identical`], other bytes [`PutOutcome::Differs`], and it is never changed.
/// `input_len`, when known, lets a size difference answer without reading. `progress` gets the bytes read so far.
pub async fn put_object<R: AsyncRead + Unpin + Send>(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    mut input: R,
    input_len: Option<u64>,
    overwrite: bool,
    mut progress: impl FnMut(u64),
) -> Result<Put, TransferError> {
    if !overwrite {
        match store.head(key).await {
            Ok(meta) => {
                if input_len.is_some_and(|n| n != meta.size) {
                    return Ok(Put {
                        outcome: PutOutcome::Differs,
                        bytes: 0,
                    });
                }
                return compare(store, key, &mut input, &mut progress).await;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Read ahead up to one byte past ONE_PUT_MAX, to learn which way the input goes.
    let mut head: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    let mut ended = false;
    while read <= ONE_PUT_MAX {
        let want = READ_CHUNK.min(ONE_PUT_MAX + 1 - read);
        let chunk = read_chunk(&mut input, want).await?;
        if chunk.is_empty() {
            ended = true;
            break;
        }
        read += chunk.len();
        progress(read as u64);
        head.push(chunk);
    }
    if ended {
        let payload: PutPayload = head.iter().cloned().collect();
        let mode = if overwrite {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let written = Put {
            outcome: PutOutcome::Written,
            bytes: read as u64,
        };
        return match store.put_opts(key, payload.clone(), mode.into()).await {
            Ok(_) => Ok(written),
            // Another writer got there between the HEAD and this put: compare with what it wrote.
            Err(object_store::Error::AlreadyExists { .. }) => {
                let bytes: Vec<u8> = head.concat();
                compare(store, key, &mut bytes.as_slice(), &mut |_| {}).await
            }
            // A store without conditional puts (S3 configured so): the HEAD above found no object.
            Err(object_store::Error::NotImplemented { .. }) => {
                store.put(key, payload).await?;
                Ok(written)
            }
            Err(e) => Err(e.into()),
        };
    }
    let mut upload =
        WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, PART_SIZE);
    let streamed = async {
        for chunk in head {
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            upload.put(chunk);
        }
        loop {
            let chunk = read_chunk(&mut input, READ_CHUNK).await?;
            if chunk.is_empty() {
                break;
            }
            read += chunk.len();
            progress(read as u64);
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            upload.put(chunk);
        }
        // A multipart upload cannot be conditional: look once more just before publishing it.
        if !overwrite {
            match store.head(key).await {
                Ok(_) => return Err(TransferError::Appeared),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok::<(), TransferError>(())
    }
    .await;
    match streamed {
        Ok(()) => {
            upload.finish().await?;
            Ok(Put {
                outcome: PutOutcome::Written,
                bytes: read as u64,
            })
        }
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// Reads up to `max` bytes (fewer only at the end of the input).
async fn read_chunk<R: AsyncRead + Unpin>(input: &mut R, max: usize) -> std::io::Result<Bytes> {
    let mut buf = Vec::with_capacity(max);
    while buf.len() < max {
        let n = (&mut *input)
            .take((max - buf.len()) as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// Compares the object at `key` with the rest of `input`, byte for byte, stopping at the first difference.
async fn compare<R: AsyncRead + Unpin>(
    store: &dyn ObjectStore,
    key: &ObjectPath,
    input: &mut R,
    progress: &mut impl FnMut(u64),
) -> Result<Put, TransferError> {
    let differs = |bytes: u64| {
        Ok(Put {
            outcome: PutOutcome::Differs,
            bytes,
        })
    };
    let mut stream = crate::body_stream(store.get(key).await?);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut same = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for part in chunk.chunks(READ_CHUNK) {
            let mine = &mut buf[..part.len()];
            match input.read_exact(mine).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return differs(same),
                Err(e) => return Err(e.into()),
            }
            if mine != part {
                return differs(same);
            }
            same += part.len() as u64;
            progress(same);
        }
    }
    // The object has ended; the input must end too.
    if input.read(&mut buf[..1]).await? != 0 {
        return differs(same);
    }
    Ok(Put {
        outcome: PutOutcome::Identical,
        bytes: same,
    })
}

/// An object being read: its size is known before any byte is written anywhere.
pub struct Download {
    key: String,
    size: u64,
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
}

/// Starts reading the object at `key`; a missing object is [`DataError::NotFound`].
pub async fn open_download(store: &dyn ObjectStore, key: &str) -> Result<Download, DataError> {
    let path = object_path(key)?;
    let got = store.get(&path).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => DataError::NotFound {
            key: key.to_string(),
        },
        other => DataError::Store(other),
    })?;
    Ok(Download {
        key: key.to_string(),
        size: got.meta.size,
        stream: crate::body_stream(got),
    })
}

impl Download {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Streams the object into `out` and flushes it; fails (rather than returning early) when fewer bytes than
    /// the object's size arrive. `progress` gets the bytes written so far.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        mut self,
        out: &mut W,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, TransferError> {
        let mut written = 0u64;
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await?;
            written += chunk.len() as u64;
            progress(written);
        }
        out.flush().await?;
        if written != self.size {
            tracing::warn!(key = %self.key, written, size = self.size, "object ended early");
            return Err(TransferError::Truncated {
                got: written,
                expected: self.size,
            });
        }
        Ok(written)
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedObject {
    /// The key relative to the listed store URL.
    pub key: String,
    pub size: u64,
    /// RFC 3339, UTC, whole seconds.
    pub last_modified: String,
}

/// Every object in `store` (the whole store, recursively), sorted by key.
pub async fn list_objects(store: &dyn ObjectStore) -> Result<Vec<ListedObject>, DataError> {
    let mut listing = store.list(None);
    let mut objects = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        objects.push(ListedObject {
            key: meta.location.to_string(),
            size: meta.size,
            last_modified: humantime::format_rfc3339_seconds(std::time::SystemTime::from(
                meta.last_modified,
            ))
            .to_string(),
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

/// Deletes the object at `key`; a missing object is fine.
pub async fn delete_object(store: &dyn ObjectStore, key: &str) -> Result<(), DataError> {
    match store.delete(&object_path(key)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn the_key_is_the_last_segment_and_the_query_stays_with_the_store() {
        let split = |u: &str| split_object_url(u).map(|o| (o.store_url, o.key));
        assert_eq!(
            split("file:///srv/wal-archive/000000010000000000000003").unwrap(),
            (
                "file:///srv/wal-archive".into(),
                "000000010000000000000003".into()
            )
        );
        assert_eq!(
            split("s3://bucket/wal/0003?endpoint=http://127.0.0.1:5055&allow_http=true").unwrap(),
            (
                "s3://bucket/wal?endpoint=http://127.0.0.1:5055&allow_http=true".into(),
                "0003".into()
            )
        );
        assert_eq!(
            split("s3://bucket/0003").unwrap(),
            ("s3://bucket".into(), "0003".into())
        );
        assert_eq!(
            split("file://archive/a").unwrap(),
            ("file://archive".into(), "a".into())
        );
        assert_eq!(split("file://a").unwrap(), ("file://.".into(), "a".into()));
        assert_eq!(split("file:///a").unwrap(), ("file:///".into(), "a".into()));
        for bad in [
            "file:///srv/wal-archive/",
            "s3://bucket",
            "s3://bucket/wal/?region=x",
            "/srv/wal-archive/a",
            "file:///srv/..",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
        let err = split("s3://AKIA:hunter2@bucket/k").unwrap_err().to_string();
        assert!(!err.contains("hunter2") && !err.contains("AKIA"), "{err}");
    }

    #[tokio::test]
    async fn put_keeps_what_is_there_unless_told() {
        let store = InMemory::new();
        let key = object_path("seg").unwrap();
        let put = |data: &'static [u8], overwrite: bool| {
            put_object(&store, &key, data, None, overwrite, |_| {})
        };
        assert_eq!(
            put(b"one", false).await.unwrap().outcome,
            PutOutcome::Written
        );
        assert_eq!(
            put(b"one", false).await.unwrap().outcome,
            PutOutcome::Identical
        );
        for other in [&b"two"[..], b"on", b"one!", b""] {
            let got = put_object(&store, &key, other, None, false, |_| {});
            assert_eq!(got.await.unwrap().outcome, PutOutcome::Differs, "{other:?}");
        }
        assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), "one");
        assert_eq!(
            put(b"two", true).await.unwrap().outcome,
            PutOutcome::Written
        );
        assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), "two");
    }

    #[tokio::test]
    async fn large_inputs_go_up_in_parts_and_come_back_whole() {
        let store = InMemory::new();
        let key = object_path("big").unwrap();
        let data: Vec<u8> = (0..ONE_PUT_MAX + PART_SIZE + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let put = put_object(&store, &key, data.as_slice(), None, false, |_| {});
        assert_eq!(put.await.unwrap().outcome, PutOutcome::Written);
        let again = put_object(&store, &key, data.as_slice(), None, false, |_| {});
        assert_eq!(again.await.unwrap().outcome, PutOutcome::Identical);
        let mut out = Vec::new();
        let n = open_download(&store, "big")
            .await
            .unwrap()
            .write_to(&mut out, |_| {})
            .await
            .unwrap();
        assert_eq!(n as usize, data.len());
        assert!(out == data);
        assert!(matches!(
            open_download(&store, "nothing").await,
            Err(DataError::NotFound { .. })
        ));
        delete_object(&store, "big").await.unwrap();
        delete_object(&store, "big").await.unwrap();
        assert!(list_objects(&store).await.unwrap().is_empty());
    }
}
