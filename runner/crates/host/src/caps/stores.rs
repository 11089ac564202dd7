//! The stores capability: named stores, each granted `read` or `write`, optionally under a key prefix (checked by
//! `respawn_sandbox::stores`). Bulk copies run inside the host, streaming with a sha256 check, so the data never
//! passes through guest memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use respawn_data::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use respawn_data::{DataError, StoreSet, copy_blob, stores::object_path};
use respawn_engine::StepCall;
use respawn_sandbox::limits::MAX_GET_BYTES;
use respawn_sandbox::stores::{Need, StoreGrant};
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::stores::{self as api, CopyResult, ObjectMeta};
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::state::{RunResources, StepState};
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

    fn link(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        api::add_to_linker::<StepState, HasSelf<StepState>>(linker, |s| s)
    }
}

impl api::Host for StepState {
    async fn get(&mut self, store: String, key: String) -> Answer<Vec<u8>> {
        Ok(get(self, &store, &key).await)
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

/// Checks the grant for `store`/`key` and returns the store, or the denial the plugin sees.
fn open(
    s: &mut StepState,
    store: &str,
    key: &str,
    need: Need,
) -> Result<Arc<dyn ObjectStore>, Failure> {
    let read_only = s.read_only();
    if let Err(denial) = respawn_sandbox::stores::check(&s.caps.stores, store, key, need, read_only)
    {
        return Err(s.deny(denial));
    }
    s.run_caps.stores.get(store).cloned().ok_or_else(|| {
        failure(
            FailureKind::Internal,
            format!("store `{store}` is granted but was not opened"),
        )
    })
}

/// The store for reading `key`, or the denial (for capabilities built on stores, such as images).
pub(crate) fn open_for_read(
    s: &mut StepState,
    store: &str,
    key: &str,
) -> Result<Arc<dyn ObjectStore>, Failure> {
    open(s, store, key, Need::Read)
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

async fn get(s: &mut StepState, store: &str, key: &str) -> Result<Vec<u8>, Failure> {
    let st = open(s, store, key, Need::Read)?;
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

async fn put(s: &mut StepState, store: &str, key: &str, data: Vec<u8>) -> Result<(), Failure> {
    let st = open(s, store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    st.put(&path, PutPayload::from(data))
        .await
        .map(|_| ())
        .map_err(|e| from_data(e.into()))
}

async fn head(s: &mut StepState, store: &str, key: &str) -> Result<Option<ObjectMeta>, Failure> {
    let st = open(s, store, key, Need::Read)?;
    let path = object_path(key).map_err(from_data)?;
    match st.head(&path).await {
        Ok(m) => Ok(Some(meta(m))),
        Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(from_data(e.into())),
    }
}

async fn list(s: &mut StepState, store: &str, prefix: &str) -> Result<Vec<ObjectMeta>, Failure> {
    let st = open(s, store, prefix, Need::Read)?;
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

async fn delete(s: &mut StepState, store: &str, key: &str) -> Result<(), Failure> {
    let st = open(s, store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    match st.delete(&path).await {
        Ok(()) | Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(from_data(e.into())),
    }
}

async fn copy(
    s: &mut StepState,
    from: (&str, &str),
    to: (&str, &str),
    expected_sha256: Option<&str>,
) -> Result<CopyResult, Failure> {
    let src = open(s, from.0, from.1, Need::Read)?;
    let dst = open(s, to.0, to.1, Need::Write)?;
    let sink = s.run_caps.log.clone();
    let step = s.step_id.clone();
    let label = format!("copy {}:{}", from.0, from.1);
    let done = copy_blob(
        src.as_ref(),
        from.1,
        dst.as_ref(),
        to.1,
        expected_sha256,
        |bytes| {
            if let Some(sink) = &sink {
                sink(&step, bytes, None, &label);
            }
        },
    )
    .await
    .map_err(from_data)?;
    Ok(CopyResult {
        bytes: done.bytes,
        sha256: done.sha256,
    })
}
