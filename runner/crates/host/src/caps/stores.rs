//! The stores capability: named stores, each granted `read` or `write`, optionally under a key prefix (checked by
//! `respawn_sandbox::stores`). Bulk copies run inside the host, streaming with a sha256 check, so the data never
//! passes through guest memory; a plugin that must see the bytes of a large object reads it in chunks with
//! `get-range`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use respawn_data::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use respawn_data::{DataError, StoreSet, copy_blob, stores::object_path};
use respawn_engine::StepCall;
use respawn_sandbox::limits::MAX_GET_BYTES;
use respawn_sandbox::stores::{Need, StoreGrant};
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::stores::{self as api, CopyResult, ObjectMeta};
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::context::{ProgressSink, RunResources, StepContext};
use super::{Answer, Capability, failure};

pub struct Stores;

impl Capability for Stores {
    /// The workflow's stores, opened.
    type Run = StoreSet;

    fn configure(run: &RunResources) -> StoreSet {
        run.stores.clone()
    }

    /// The step's `stores` grant.
    type Step = BTreeMap<String, StoreGrant>;

    fn prepare(
        call: &StepCall,
        _: &RunResources,
        _: &mut WasiCtxBuilder,
    ) -> std::io::Result<BTreeMap<String, StoreGrant>> {
        Ok(call.grants.stores.clone())
    }
}

/// What the stores interface touches of an attempt.
pub struct StoresView<'a> {
    pub ctx: &'a mut StepContext,
    pub grant: &'a BTreeMap<String, StoreGrant>,
    pub stores: &'a StoreSet,
    /// Copies report their bytes as progress.
    pub progress: &'a Option<ProgressSink>,
}

linked_through!(StoresView, api);

impl api::Host for StoresView<'_> {
    async fn get(&mut self, store: String, key: String) -> Answer<Vec<u8>> {
        Ok(get(self, &store, &key).await)
    }

    async fn get_range(
        &mut self,
        store: String,
        key: String,
        offset: u64,
        length: u64,
    ) -> Answer<Vec<u8>> {
        Ok(get_range(self, &store, &key, offset, length).await)
    }

    async fn put(&mut self, store: String, key: String, data: Vec<u8>) -> Answer<()> {
        Ok(put(self, &store, &key, data).await)
    }

    async fn head(&mut self, store: String, key: String) -> Answer<Option<ObjectMeta>> {
        Ok(head(self, &store, &key).await)
    }

    async fn list(&mut self, store: String, prefix: String) -> Answer<Vec<ObjectMeta>> {
        Ok(list(self, &store, &prefix).await)
    }

    async fn delete(&mut self, store: String, key: String) -> Answer<()> {
        Ok(delete(self, &store, &key).await)
    }

    async fn copy(
        &mut self,
        from_store: String,
        from_key: String,
        to_store: String,
        to_key: String,
        expected_sha256: Option<String>,
    ) -> Answer<CopyResult> {
        Ok(copy(
            self,
            (&from_store, &from_key),
            (&to_store, &to_key),
            expected_sha256.as_deref(),
        )
        .await)
    }
}

/// Checks `grant` for `store`/`key` and returns the opened store, or the denial the plugin sees (also for
/// capabilities built on stores, such as images).
pub(crate) fn open(
    ctx: &mut StepContext,
    (grant, stores): (&BTreeMap<String, StoreGrant>, &StoreSet),
    store: &str,
    key: &str,
    need: Need,
) -> Result<Arc<dyn ObjectStore>, Failure> {
    let read_only = ctx.read_only();
    if let Err(denial) = respawn_sandbox::stores::check(grant, store, key, need, read_only) {
        return Err(ctx.deny(denial));
    }
    if need != Need::Read {
        ctx.still_owner()?;
    }
    stores.get(store).cloned().ok_or_else(|| {
        failure(
            FailureKind::Internal,
            format!("store `{store}` is granted but was not opened"),
        )
    })
}

impl StoresView<'_> {
    fn open(
        &mut self,
        store: &str,
        key: &str,
        need: Need,
    ) -> Result<Arc<dyn ObjectStore>, Failure> {
        open(self.ctx, (self.grant, self.stores), store, key, need)
    }
}

fn from_data(e: DataError) -> Failure {
    let kind = match &e {
        DataError::NotFound { .. } => FailureKind::NotFound,
        DataError::DigestMismatch { .. } => FailureKind::VerificationFailed,
        DataError::BadKey { .. } | DataError::BadUrl { .. } => FailureKind::InvalidInput,
        DataError::Store(respawn_data::object_store::Error::NotFound { .. }) => {
            FailureKind::NotFound
        }
        _ if e.is_transient() => FailureKind::Unavailable,
        _ => FailureKind::Internal,
    };
    failure(kind, e.to_string())
}

fn meta(m: respawn_data::object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        key: m.location.to_string(),
        size: m.size,
        last_modified: m.last_modified.timestamp(),
    }
}

async fn get(v: &mut StoresView<'_>, store: &str, key: &str) -> Result<Vec<u8>, Failure> {
    let st = v.open(store, key, Need::Read)?;
    let path = object_path(key).map_err(from_data)?;
    let head = st.head(&path).await.map_err(|e| from_data(e.into()))?;
    if head.size > MAX_GET_BYTES {
        return Err(failure(
            FailureKind::InvalidInput,
            format!(
                "{store}:{key} is {} bytes; stores.get returns at most {MAX_GET_BYTES}, use stores.copy",
                head.size
            ),
        ));
    }
    let bytes = st
        .get(&path)
        .await
        .map_err(|e| from_data(e.into()))?
        .bytes()
        .await;
    bytes.map(|b| b.to_vec()).map_err(|e| from_data(e.into()))
}

/// `length` bytes from `offset`: fewer at the object's end, none past it. The length is capped before the store
/// is touched; the object's size comes from a `head` first, because stores refuse a range that starts past the end.
async fn get_range(
    v: &mut StoresView<'_>,
    store: &str,
    key: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, Failure> {
    let st = v.open(store, key, Need::Read)?;
    respawn_sandbox::stores::check_range_length(store, key, length)
        .map_err(|why| failure(FailureKind::InvalidInput, why))?;
    let path = object_path(key).map_err(from_data)?;
    let head = st.head(&path).await.map_err(|e| from_data(e.into()))?;
    let range = respawn_sandbox::stores::clamp_range(offset, length, head.size);
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = st
        .get_range(&path, range)
        .await
        .map_err(|e| from_data(e.into()))?;
    Ok(bytes.to_vec())
}

async fn put(v: &mut StoresView<'_>, store: &str, key: &str, data: Vec<u8>) -> Result<(), Failure> {
    let st = v.open(store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    st.put(&path, PutPayload::from(data))
        .await
        .map(|_| ())
        .map_err(|e| from_data(e.into()))
}

async fn head(
    v: &mut StoresView<'_>,
    store: &str,
    key: &str,
) -> Result<Option<ObjectMeta>, Failure> {
    let st = v.open(store, key, Need::Read)?;
    let path = object_path(key).map_err(from_data)?;
    match st.head(&path).await {
        Ok(m) => Ok(Some(meta(m))),
        Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(from_data(e.into())),
    }
}

async fn list(
    v: &mut StoresView<'_>,
    store: &str,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, Failure> {
    let st = v.open(store, prefix, Need::Read)?;
    let path = if prefix.is_empty() {
        None
    } else {
        Some(object_path(prefix.trim_end_matches('/')).map_err(from_data)?)
    };
    let items: Vec<respawn_data::object_store::ObjectMeta> = st
        .list(path.as_ref())
        .try_collect()
        .await
        .map_err(|e| from_data(e.into()))?;
    Ok(items.into_iter().map(meta).collect())
}

async fn delete(v: &mut StoresView<'_>, store: &str, key: &str) -> Result<(), Failure> {
    let st = v.open(store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    match st.delete(&path).await {
        Ok(()) | Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(from_data(e.into())),
    }
}

async fn copy(
    v: &mut StoresView<'_>,
    from: (&str, &str),
    to: (&str, &str),
    expected_sha256: Option<&str>,
) -> Result<CopyResult, Failure> {
    let src = v.open(from.0, from.1, Need::Read)?;
    let dst = v.open(to.0, to.1, Need::Write)?;
    // Bytes, total and throughput to the step's progress bar (and the log, off a terminal), as a restore's.
    let progress = v.progress.clone().map(|sink| {
        let step = v.ctx.step_id.clone();
        let to_bar: respawn_data::progress::ProgressFn =
            std::sync::Arc::new(move |done, total, what: &str| sink(&step, done, total, what));
        to_bar
    });
    let label = format!("copy {}:{}", from.0, from.1);
    let done = copy_blob(
        src.as_ref(),
        from.1,
        dst.as_ref(),
        to.1,
        expected_sha256,
        &label,
        progress,
    )
    .await
    .map_err(from_data)?;
    Ok(CopyResult {
        bytes: done.bytes,
        sha256: done.sha256,
    })
}
