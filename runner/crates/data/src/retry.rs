//! [`RetryingStore`]: retries object store calls that fail transiently, with exponential backoff and jitter.
//!
//! Cloud stores already retry single HTTP requests inside object_store (its `RetryConfig`); this layer also
//! covers what those do not: errors surfacing as `Generic` from any store, and whole operations such as the
//! verification of a `PutMode::Create` whose first attempt may have landed.
//!
//! Like `faults.rs`, the `#[async_trait]` methods are written in desugared form (no `async-trait` dependency).

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};

use super::faults::splitmix64;

/// Whether retrying `e` can help: everything but answers about the object or the request itself. Unknown
/// (future) variants count as transient, as do `Generic` errors, which is how network failures surface.
pub fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error::*;
    !matches!(
        e,
        NotFound { .. }
            | AlreadyExists { .. }
            | Precondition { .. }
            | NotModified { .. }
            | NotSupported { .. }
            | NotImplemented { .. }
            | InvalidPath { .. }
            | PermissionDenied { .. }
            | Unauthenticated { .. }
            | UnknownConfigurationKey { .. }
    )
}

/// How often and how patiently [`RetryingStore`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per call, the first included. Default `5`: with the default backoff that is at most about
    /// 1.1 s of waiting (50 + 100 + 200 + 400 ms, plus jitter), enough to ride out a connection reset or a short
    /// throttling burst without stalling a drill. `0` acts as `1`.
    pub attempts: u32,
    /// Wait before the first retry, doubled for each later one. Default 50 ms.
    pub initial_backoff: Duration,
    /// Cap on any single wait, jitter included. Default 2 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The policy plus jitter state; cloned into the `'static` streams that list and delete return.
#[derive(Debug, Clone)]
struct Retrier {
    policy: RetryPolicy,
    jitter: Arc<AtomicU64>,
}

impl Retrier {
    /// Wait before retry number `retry` (1-based): the doubled backoff plus up to half of it again, so
    /// clients that failed together do not retry in lockstep.
    fn delay(&self, retry: u32) -> Duration {
        let base = self
            .policy
            .initial_backoff
            .saturating_mul(1 << (retry - 1).min(20));
        let base = base.min(self.policy.max_backoff);
        let jitter = base.mul_f64((splitmix64(&self.jitter) >> 11) as f64 / (1u64 << 54) as f64);
        (base + jitter).min(self.policy.max_backoff)
    }

    /// Logs a transient failure of attempt `attempt` and waits before the next one.
    async fn wait(&self, op: &str, location: &str, attempt: u32, error: &object_store::Error) {
        let delay = self.delay(attempt);
        tracing::debug!(op, location, attempt, ?delay, %error, "retrying object store call");
        tokio::time::sleep(delay).await;
    }

    /// Runs `call` until it succeeds, fails non-transiently or runs out of attempts; returns the result and the
    /// number of attempts made (above 1 only if earlier attempts failed transiently).
    async fn run<T, F, Fut>(&self, op: &str, location: &str, mut call: F) -> (Result<T>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if is_transient(&e) && attempt < self.policy.attempts => {
                    self.wait(op, location, attempt, &e).await;
                    attempt += 1;
                }
                result => return (result, attempt),
            }
        }
    }

    /// A list stream, re-created while its first item is a transient error. Once an item has been yielded a
    /// restart would repeat entries (listings are paginated), so later errors pass through.
    fn list<F>(&self, prefix: Option<&Path>, list: F) -> BoxStream<'static, Result<ObjectMeta>>
    where
        F: Fn() -> BoxStream<'static, Result<ObjectMeta>> + Send + 'static,
    {
        let retrier = self.clone();
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        stream::once(async move {
            let mut attempt = 1;
            loop {
                let mut listing = list();
                match listing.next().await {
                    Some(Err(e)) if is_transient(&e) && attempt < retrier.policy.attempts => {
                        retrier.wait("list", &prefix, attempt, &e).await;
                        attempt += 1;
                    }
                    first => {
                        // An ended listing is not polled again: S3's paginated stream panics if it is.
                        let rest = match first {
                            Some(_) => listing,
                            None => stream::empty().boxed(),
                        };
                        return stream::iter(first).chain(rest);
                    }
                }
            }
        })
        .flatten()
        .boxed()
    }
}

/// Wraps a store and retries calls that fail with a transient error (see [`is_transient`]), waiting per
/// [`RetryPolicy`] between attempts.
///
/// Retried: `get_opts` (the request, not a body stream that fails midway), `get_ranges`, `list_with_delimiter`,
/// the start of `list` streams, deletes, `copy_opts` with `CopyMode::Overwrite`, the creation of multipart
/// uploads, and `put_opts` except with `PutMode::Update`. Not retried: conditional updates and creating copies
/// (a lost response would make the retry report a conflict with our own write), renames (a retry after a lost
/// response fails with NotFound), and multipart parts (`put_part` returns a `'static` future, which cannot call
/// the upload again).
#[derive(Debug)]
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    retrier: Retrier,
}

impl RetryingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        // Seeded from the clock so that separate processes' jitter differs; reproducibility does not matter here.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let jitter = Arc::new(AtomicU64::new(seed));
        RetryingStore {
            inner,
            retrier: Retrier { policy, jitter },
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.retrier.policy
    }
}

impl fmt::Display for RetryingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RetryingStore(attempts={}, {})",
            self.retrier.policy.attempts, self.inner
        )
    }
}

/// Deletes in flight at once. Default 10: each location is deleted and retried on its own (a batch error cannot
/// be traced to its locations), which gives up S3-style batching; 10 keeps a bulk delete moving without a burst.
const DELETE_CONCURRENCY: usize = 10;

impl RetryingStore {
    /// A `Create` that met AlreadyExists: an earlier attempt, ours or the cloud client's, may have written the
    /// object before its response was lost. It did if the stored bytes are the payload. Writers that must tell
    /// each other apart (journal events name their runner) never write the same bytes.
    async fn created_by_us(
        &self,
        location: &Path,
        payload: &PutPayload,
        exists: object_store::Error,
    ) -> Result<PutResult> {
        let get = || async {
            let got = self.inner.get_opts(location, GetOptions::default()).await?;
            let meta = got.meta.clone();
            // Another size is another writer's: no need to read a body that may be large.
            if meta.size != payload.content_length() as u64 {
                return Ok((meta, None));
            }
            Ok((meta, Some(got.bytes().await?)))
        };
        match self
            .retrier
            .run("put-verify", location.as_ref(), get)
            .await
            .0
        {
            Ok((meta, Some(bytes))) if bytes == Bytes::from(payload.clone()) => {
                tracing::debug!(%location, "create met an existing object: it is our own earlier write");
                Ok(PutResult {
                    e_tag: meta.e_tag,
                    version: meta.version,
                    extensions: Default::default(),
                })
            }
            // Unknown either way: say so rather than claim a conflict.
            Err(e) if is_transient(&e) => Err(e),
            _ => Err(exists),
        }
    }
}

impl ObjectStore for RetryingStore {
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
            let create = match opts.mode {
                // A retry cannot tell a lost response from a lost race; the caller re-reads and decides.
                PutMode::Update(_) => return self.inner.put_opts(location, payload, opts).await,
                PutMode::Create => true,
                PutMode::Overwrite => false,
            };
            let put = || self.inner.put_opts(location, payload.clone(), opts.clone());
            match self.retrier.run("put", location.as_ref(), put).await {
                // Also after a single attempt here: a cloud client retries the request itself, so even our
                // first attempt may have met its own earlier write.
                (Err(e @ object_store::Error::AlreadyExists { .. }), _) if create => {
                    self.created_by_us(location, &payload, e).await
                }
                (result, _) => result,
            }
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
        // Creating an upload writes nothing visible; a lost response at worst orphans an upload id, which
        // the bucket's lifecycle rules clean up.
        let create = move || self.inner.put_multipart_opts(location, opts.clone());
        Box::pin(async move {
            self.retrier
                .run("put_multipart", location.as_ref(), create)
                .await
                .0
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
        let get = move || self.inner.get_opts(location, options.clone());
        Box::pin(async move { self.retrier.run("get", location.as_ref(), get).await.0 })
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
        let get = move || self.inner.get_ranges(location, ranges);
        Box::pin(async move {
            self.retrier
                .run("get_ranges", location.as_ref(), get)
                .await
                .0
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (inner, retrier) = (Arc::clone(&self.inner), self.retrier.clone());
        let delete = move |location: Result<Path>| {
            let (inner, retrier) = (Arc::clone(&inner), retrier.clone());
            async move {
                let location = location?;
                let delete = || inner.delete(&location);
                match retrier.run("delete", location.as_ref(), delete).await {
                    // An earlier attempt may have deleted it: gone is what was asked for.
                    (Err(object_store::Error::NotFound { .. }), attempts) if attempts > 1 => {
                        Ok(location)
                    }
                    (result, _) => result.map(|()| location),
                }
            }
        };
        locations.map(delete).buffered(DELETE_CONCURRENCY).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, owned) = (Arc::clone(&self.inner), prefix.cloned());
        self.retrier
            .list(prefix, move || inner.list(owned.as_ref()))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, owned, offset) = (Arc::clone(&self.inner), prefix.cloned(), offset.clone());
        self.retrier.list(prefix, move || {
            inner.list_with_offset(owned.as_ref(), &offset)
        })
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
        let list = move || self.inner.list_with_delimiter(prefix);
        let location = prefix.map_or("", |p| p.as_ref());
        Box::pin(async move {
            self.retrier
                .run("list_with_delimiter", location, list)
                .await
                .0
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
        if options.mode == CopyMode::Create {
            // A retry after a lost response would meet our own copy as AlreadyExists; telling the two apart
            // would mean reading both objects, which may be large.
            return self.inner.copy_opts(from, to, options);
        }
        let copy = move || self.inner.copy_opts(from, to, options.clone());
        Box::pin(async move { self.retrier.run("copy", to.as_ref(), copy).await.0 })
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
        self.inner.rename_opts(from, to, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultInjectingStore, Faults};
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn retrying(inner: Arc<dyn ObjectStore>, attempts: u32) -> RetryingStore {
        let policy = RetryPolicy {
            attempts,
            initial_backoff: Duration::from_micros(10),
            max_backoff: Duration::from_millis(1),
        };
        RetryingStore::new(inner, policy)
    }

    fn faulty(transient: f64) -> Arc<FaultInjectingStore> {
        let faults = Faults {
            transient,
            seed: 11,
            ..Faults::default()
        };
        Arc::new(FaultInjectingStore::new(Arc::new(InMemory::new()), faults))
    }

    /// An empty listing ends, even from a stream that must not be polled after its end (S3's pagination).
    #[tokio::test]
    async fn an_empty_listing_is_not_polled_past_its_end() {
        let retrier = retrying(Arc::new(InMemory::new()), 2).retrier;
        let listing = retrier.list(None, || {
            stream::unfold(false, |done| async move {
                assert!(!done, "polled after the end");
                None::<(Result<ObjectMeta>, bool)>
            })
            .boxed()
        });
        assert!(listing.collect::<Vec<_>>().await.is_empty());
    }

    #[tokio::test]
    async fn rides_out_frequent_faults() {
        let faults = faulty(0.5);
        let store = retrying(faults.clone(), 20);
        for i in 0..50 {
            let path = Path::from(format!("k/{i}"));
            store.put(&path, format!("value {i}").into()).await.unwrap();
            let got = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(got, format!("value {i}").as_bytes());
        }
        assert_eq!(
            store
                .list(Some(&Path::from("k")))
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            50
        );
        assert_eq!(
            store
                .list_with_delimiter(None)
                .await
                .unwrap()
                .common_prefixes
                .len(),
            1
        );
        let keys = store.list(None).map_ok(|m| m.location).boxed();
        assert_eq!(
            store
                .delete_stream(keys)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            50
        );
        assert_eq!(store.list(None).count().await, 0);
        assert!(
            faults.injected() > 50,
            "only {} faults injected",
            faults.injected()
        );
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        let faults = faulty(1.0);
        let err = retrying(faults.clone(), 4)
            .head(&Path::from("a"))
            .await
            .unwrap_err();
        assert!(is_transient(&err), "{err}");
        assert_eq!(faults.calls(), 4);

        // A definite answer is not retried.
        let faults = faulty(0.0);
        let err = retrying(faults.clone(), 4)
            .head(&Path::from("a"))
            .await
            .unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        assert_eq!(faults.calls(), 1);
    }

    /// Its first put writes `first` (or the payload) and then fails as if the response were lost.
    #[derive(Debug)]
    struct LostResponse {
        inner: InMemory,
        first: Option<PutPayload>,
        failed: AtomicBool,
    }

    impl fmt::Display for LostResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("LostResponse")
        }
    }

    impl ObjectStore for LostResponse {
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
                if self.failed.swap(true, Ordering::SeqCst) {
                    return self.inner.put_opts(location, payload, opts).await;
                }
                let written = self.first.clone().unwrap_or(payload);
                self.inner.put_opts(location, written, opts).await?;
                Err(object_store::Error::Generic {
                    store: "test",
                    source: "connection reset".into(),
                })
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
            self.inner.put_multipart_opts(location, opts)
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
            self.inner.get_opts(location, options)
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
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
            self.inner.list_with_delimiter(prefix)
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
            self.inner.copy_opts(from, to, options)
        }
    }

    async fn create_after_lost_response(first: Option<PutPayload>) -> Result<PutResult> {
        let inner = LostResponse {
            inner: InMemory::new(),
            first,
            failed: AtomicBool::new(false),
        };
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        retrying(Arc::new(inner), 5)
            .put_opts(&Path::from("e/1"), "mine".into(), opts)
            .await
    }

    #[tokio::test]
    async fn create_after_lost_response_checks_the_bytes() {
        let ours = create_after_lost_response(None).await.unwrap();
        assert!(ours.e_tag.is_some());
        let err = create_after_lost_response(Some("theirs".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err}"
        );
    }

    /// A cloud client retries a request itself, so our very first attempt can meet its own earlier write.
    #[tokio::test]
    async fn first_attempt_create_meeting_its_own_bytes_succeeds() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = Path::from("e/2");
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        inner.put_opts(&key, "mine".into(), create()).await.unwrap();
        let store = retrying(inner, 1);
        store.put_opts(&key, "mine".into(), create()).await.unwrap();
        for theirs in ["theirs", "your"] {
            // Another size, and the same size with other bytes.
            let err = store
                .put_opts(&key, theirs.into(), create())
                .await
                .unwrap_err();
            assert!(
                matches!(err, object_store::Error::AlreadyExists { .. }),
                "{theirs}: {err}"
            );
        }
    }
}
