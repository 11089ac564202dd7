//! Fault injection for object stores: [`FaultInjectingStore`] fails a seeded fraction of calls with a transient
//! error and can corrupt what GETs return, so the retry and digest-check paths can be exercised without a flaky
//! network.
//!
//! `ObjectStore` is an `#[async_trait]` trait and this crate does not depend on `async-trait`, so the impls below
//! are written in its desugared form: each async method returns a boxed future bound by the argument lifetimes.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// What [`FaultInjectingStore`] does wrong. The default injects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Fraction (`0.0..=1.0`) of calls that fail with a transient error before reaching the inner store.
    pub transient: f64,
    /// Flip one bit of every GET body (the first byte of its first non-empty chunk), so no digest matches.
    pub corrupt_reads: bool,
    /// With `corrupt_reads`, corrupt only content-addressed blobs (keys containing `blobs/sha256/`), whose digest
    /// check must catch it; other reads (an image's `index.json`) stay intact. Spec: `corrupt=blobs`.
    pub corrupt_blobs_only: bool,
    /// Seed of the fault sequence. Default `0`: runs are reproducible unless a seed is chosen.
    pub seed: u64,
}

impl Faults {
    /// Parses a comma-separated spec such as `transient=0.1,seed=7` or `corrupt`. Keys: `transient=FRACTION`
    /// (`0..=1`), `seed=U64`, `corrupt` (or `corrupt=true|false`). Empty items are ignored, so `""` is no faults.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match (key, value) {
                ("transient", Some(v)) => {
                    faults.transient = v
                        .parse::<f64>()
                        .ok()
                        .filter(|f| (0.0..=1.0).contains(f))
                        .ok_or_else(|| {
                            format!("fault `transient={v}`: expected a fraction from 0 to 1")
                        })?;
                }
                ("seed", Some(v)) => {
                    faults.seed = v
                        .parse()
                        .map_err(|_| format!("fault `seed={v}`: expected an unsigned integer"))?;
                }
                ("corrupt", None) => faults.corrupt_reads = true,
                ("corrupt", Some("blobs")) => {
                    faults.corrupt_reads = true;
                    faults.corrupt_blobs_only = true;
                }
                ("corrupt", Some(v)) => {
                    faults.corrupt_reads = v.parse().map_err(|_| {
                        format!("fault `corrupt={v}`: expected true, false or blobs")
                    })?;
                }
                ("transient" | "seed", None) => {
                    return Err(format!("fault `{key}` needs a value, e.g. `{key}=...`"));
                }
                _ => {
                    return Err(format!(
                        "unknown fault `{key}`: expected `transient=FRACTION`, `seed=N` or `corrupt`"
                    ));
                }
            }
        }
        Ok(faults)
    }
}

impl Faults {
    fn corrupts(&self, location: &Path) -> bool {
        self.corrupt_reads
            && (!self.corrupt_blobs_only || location.as_ref().contains("blobs/sha256/"))
    }
}

/// Prints a spec that [`Faults::parse`] reads back.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transient={},seed={}", self.transient, self.seed)?;
        match (self.corrupt_reads, self.corrupt_blobs_only) {
            (true, true) => f.write_str(",corrupt=blobs"),
            (true, false) => f.write_str(",corrupt"),
            _ => Ok(()),
        }
    }
}

/// One step of splitmix64 over a shared state: small, seedable, good enough for fault and jitter decisions.
pub(crate) fn splitmix64(state: &AtomicU64) -> u64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut z = state
        .fetch_add(GAMMA, Ordering::Relaxed)
        .wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fault decisions, shared with the streams and uploads a store hands out (which outlive `&self`).
#[derive(Debug)]
struct Dice {
    faults: Faults,
    state: AtomicU64,
    calls: AtomicUsize,
    injected: AtomicUsize,
}

impl Dice {
    /// Counts a call and decides whether it fails.
    fn roll(&self, op: &'static str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits as a uniform f64 in [0, 1): `transient = 1.0` always fails, `0.0` never does.
        let u = (splitmix64(&self.state) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.faults.transient {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(object_store::Error::Generic {
                store: "fault-injection",
                source: format!("injected transient fault in {op}").into(),
            });
        }
        Ok(())
    }
}

/// Wraps a store and injects [`Faults`] into every call that would reach the network in a real store.
///
/// Decisions come from one seeded sequence, so a sequential caller sees the same faults on every run; concurrent
/// callers see the same sequence in a scheduling-dependent order. A failing call never reaches the inner store.
/// `MultipartUpload::abort` is never failed: it is the cleanup path, and failing it would only leak parts.
#[derive(Debug)]
pub struct FaultInjectingStore {
    inner: Arc<dyn ObjectStore>,
    dice: Arc<Dice>,
}

impl FaultInjectingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        let dice = Dice {
            faults,
            state: AtomicU64::new(faults.seed),
            calls: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
        };
        FaultInjectingStore {
            inner,
            dice: Arc::new(dice),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.dice.faults
    }

    /// Calls seen so far (failed or passed through), including multipart parts and completions.
    pub fn calls(&self) -> usize {
        self.dice.calls.load(Ordering::Relaxed)
    }

    /// Calls failed so far.
    pub fn injected(&self) -> usize {
        self.dice.injected.load(Ordering::Relaxed)
    }

    fn failing<T: Send + 'static>(
        &self,
        op: &'static str,
    ) -> Option<BoxStream<'static, Result<T>>> {
        let err = self.dice.roll(op).err()?;
        Some(stream::once(future::ready(Err(err))).boxed())
    }
}

impl fmt::Display for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FaultInjectingStore({}, {})",
            self.dice.faults, self.inner
        )
    }
}

fn flip_first(chunk: Bytes) -> Bytes {
    let mut bytes = chunk.to_vec();
    bytes[0] ^= 0x01;
    Bytes::from(bytes)
}

/// Flips the first byte of the body's first non-empty chunk. A `File` payload (local stores) becomes a stream.
fn corrupt_body(result: GetResult) -> GetResult {
    let (meta, range) = (result.meta.clone(), result.range.clone());
    let (attributes, extensions) = (result.attributes.clone(), result.extensions.clone());
    let mut flipped = false;
    let body = result.into_stream().map(move |chunk| match chunk {
        Ok(c) if !flipped && !c.is_empty() => {
            flipped = true;
            Ok(flip_first(c))
        }
        other => other,
    });
    GetResult {
        payload: GetResultPayload::Stream(body.boxed()),
        meta,
        range,
        attributes,
        extensions,
    }
}

impl ObjectStore for FaultInjectingStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.dice.roll("put")?;
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.dice.roll("put_multipart")?;
            let upload = self.inner.put_multipart_opts(location, opts).await?;
            let dice = Arc::clone(&self.dice);
            Ok(Box::new(FaultyUpload { upload, dice }) as Box<dyn MultipartUpload>)
        })
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.dice.roll("get")?;
            let head = options.head;
            let result = self.inner.get_opts(location, options).await?;
            if self.dice.faults.corrupts(location) && !head {
                return Ok(corrupt_body(result));
            }
            Ok(result)
        })
    }

    fn get_ranges<'a, 'b, 'c, 'd>(
        &'a self,
        location: &'b Path,
        ranges: &'c [Range<u64>],
    ) -> BoxFuture<'d, Result<Vec<Bytes>>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(async move {
            self.dice.roll("get_ranges")?;
            let mut parts = self.inner.get_ranges(location, ranges).await?;
            if self.dice.faults.corrupts(location) {
                // Each range is a body of its own to the caller: corrupt every one.
                for part in parts.iter_mut().filter(|p| !p.is_empty()) {
                    *part = flip_first(std::mem::take(part));
                }
            }
            Ok(parts)
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // One decision per location, made on the way in so a failed delete deletes nothing.
        let dice = Arc::clone(&self.dice);
        let locations = locations.map(move |location| {
            dice.roll("delete")?;
            location
        });
        self.inner.delete_stream(locations.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.failing("list")
            .unwrap_or_else(|| self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.failing("list")
            .unwrap_or_else(|| self.inner.list_with_offset(prefix, offset))
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.dice.roll("list_with_delimiter")?;
            self.inner.list_with_delimiter(prefix).await
        })
    }

    fn copy_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> BoxFuture<'d, Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(async move {
            self.dice.roll("copy")?;
            self.inner.copy_opts(from, to, options).await
        })
    }

    fn rename_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: RenameOptions,
    ) -> BoxFuture<'d, Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(async move {
            self.dice.roll("rename")?;
            self.inner.rename_opts(from, to, options).await
        })
    }
}

/// Fails a seeded fraction of part uploads and completions, like the store that made it.
#[derive(Debug)]
struct FaultyUpload {
    upload: Box<dyn MultipartUpload>,
    dice: Arc<Dice>,
}

impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.dice.roll("put_part") {
            Ok(()) => self.upload.put_part(data),
            Err(e) => Box::pin(future::ready(Err(e))),
        }
    }

    fn complete<'a, 'b>(&'a mut self) -> BoxFuture<'b, Result<PutResult>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.dice.roll("complete")?;
            self.upload.complete().await
        })
    }

    fn abort<'a, 'b>(&'a mut self) -> BoxFuture<'b, Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.upload.abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::is_transient;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use sha2::{Digest, Sha256};

    async fn store(faults: Faults) -> FaultInjectingStore {
        let inner = Arc::new(InMemory::new());
        inner
            .put(&Path::from("a"), PutPayload::from_static(b"hello world"))
            .await
            .unwrap();
        FaultInjectingStore::new(inner, faults)
    }

    fn transient(fraction: f64, seed: u64) -> Faults {
        Faults {
            transient: fraction,
            seed,
            ..Faults::default()
        }
    }

    #[tokio::test]
    async fn always_and_never() {
        let s = store(transient(1.0, 1)).await;
        let a = Path::from("a");
        let errs = [
            s.head(&a).await.unwrap_err(),
            s.get(&a).await.unwrap_err(),
            s.get_ranges(&a, &[0..2, 3..4]).await.unwrap_err(),
            s.put(&a, PutPayload::from_static(b"x")).await.unwrap_err(),
            s.put_multipart(&a).await.unwrap_err(),
            s.delete(&a).await.unwrap_err(),
            s.list(None).next().await.unwrap().unwrap_err(),
            s.list_with_delimiter(None).await.unwrap_err(),
            s.copy(&a, &Path::from("b")).await.unwrap_err(),
        ];
        assert!(errs.iter().all(is_transient), "{errs:?}");
        assert!(errs[0].to_string().contains("injected transient fault"));
        assert_eq!((s.calls(), s.injected()), (9, 9));

        let s = store(transient(0.0, 1)).await;
        for _ in 0..100 {
            s.head(&a).await.unwrap();
        }
        s.copy(&a, &Path::from("b")).await.unwrap();
        assert_eq!(s.list(None).count().await, 2);
        assert_eq!(s.injected(), 0);
    }

    #[tokio::test]
    async fn seeded_fraction_is_stable() {
        let mut counts = Vec::new();
        for seed in [42, 42, 43] {
            let s = store(transient(0.3, seed)).await;
            let mut failed = 0;
            for _ in 0..1000 {
                failed += usize::from(s.head(&Path::from("a")).await.is_err());
            }
            assert_eq!(failed, s.injected());
            assert!((200..400).contains(&failed), "{failed} of 1000 failed");
            counts.push(failed);
        }
        assert_eq!(counts[0], counts[1]);
    }

    #[tokio::test]
    async fn corrupt_reads_flip_a_byte() {
        let s = store(Faults::parse("corrupt").unwrap()).await;
        let a = Path::from("a");
        let body = s.get(&a).await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len(), 11);
        assert_ne!(Sha256::digest(&body), Sha256::digest(b"hello world"));
        assert_eq!(&body[1..], b"ello world");
        assert_eq!(
            s.get_range(&a, 6..11).await.unwrap(),
            Bytes::from_static(b"vorld")
        );
        let ranges = s.get_ranges(&a, &[0..1, 2..4]).await.unwrap();
        assert_eq!(ranges, [&b"i"[..], b"ml"]);
        assert_eq!(s.head(&a).await.unwrap().size, 11);

        // Local stores answer with a `File` payload rather than a stream.
        let dir = tempfile::tempdir().unwrap();
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        local
            .put(&a, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        let s = FaultInjectingStore::new(Arc::new(local), s.dice.faults);
        let body = s.get(&a).await.unwrap().bytes().await.unwrap();
        assert_eq!(body, Bytes::from_static(b"iello"));
    }

    #[test]
    fn parse_specs() {
        let f = Faults::parse(" transient=0.1 , seed=7").unwrap();
        assert_eq!((f.transient, f.seed, f.corrupt_reads), (0.1, 7, false));
        assert_eq!(Faults::parse(&f.to_string()), Ok(f));
        assert!(Faults::parse("corrupt,seed=3").unwrap().corrupt_reads);
        assert_eq!(Faults::parse(""), Ok(Faults::default()));
        for (bad, says) in [
            ("transient=1.5", "from 0 to 1"),
            ("transient=-0.1", "from 0 to 1"),
            ("transient=NaN", "from 0 to 1"),
            ("transient", "needs a value"),
            ("seed=x", "unsigned integer"),
            ("slow=3", "unknown fault `slow`"),
        ] {
            let err = Faults::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
