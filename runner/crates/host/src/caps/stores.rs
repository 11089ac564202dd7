//! The stores capability: named stores, each granted `read` or `write`, optionally under a key prefix. Bulk
//! copies run inside the host, streaming with a sha256 check, so the data never passes through guest memory.

use std::sync::Arc;

use futures::TryStreamExt;
use respawn_data::object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::super::bindings::host_api::{CopyResult, ObjectMeta};
use super::super::bindings::types::{Failure, FailureKind};
use super::super::state::StepState;
use super::failure;
use respawn_data::{DataError, copy_blob, stores::object_path};
use respawn_workflow::StoreAccess;

/// Largest object `store-get` returns into guest memory; bigger data moves with `store-copy`.
pub const MAX_GET_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Need {
    Read,
    Write,
}

/// Checks the grant for `store`/`key` and returns the store, or the denial the plugin sees.
fn open(
    s: &mut StepState,
    store: &str,
    key: &str,
    need: Need,
) -> Result<Arc<dyn ObjectStore>, Failure> {
    let verb = if need == Need::Write { "write" } else { "read" };
    let Some(grant) = s.grants.stores.get(store).cloned() else {
        return Err(s.deny(
            "stores",
            format!("{verb} {store}:{key}: store `{store}` is not granted"),
        ));
    };
    if need == Need::Write && grant.access != StoreAccess::Write {
        return Err(s.deny(
            "stores",
            format!("write {store}:{key}: store `{store}` is granted read only"),
        ));
    }
    if need == Need::Write && s.read_only() {
        return Err(s.deny(
            "stores",
            format!("write {store}:{key}: the plan phase is read-only"),
        ));
    }
    if let Some(prefix) = &grant.prefix
        && !key.starts_with(prefix.as_str())
    {
        return Err(s.deny(
            "stores",
            format!("{verb} {store}:{key}: outside the granted prefix `{prefix}`"),
        ));
    }
    if key.split('/').any(|seg| seg == "..") {
        return Err(s.deny(
            "stores",
            format!("{verb} {store}:{key}: `..` is not allowed in keys"),
        ));
    }
    s.run.stores.get(store).cloned().ok_or_else(|| {
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

pub async fn get(s: &mut StepState, store: &str, key: &str) -> Result<Vec<u8>, Failure> {
    let st = open(s, store, key, Need::Read)?;
    let path = object_path(key).map_err(from_data)?;
    let head = st.head(&path).await.map_err(|e| from_data(e.into()))?;
    if head.size > MAX_GET_BYTES {
        return Err(failure(
            FailureKind::InvalidInput,
            format!(
                "{store}:{key} is {} bytes; store-get returns at most {MAX_GET_BYTES}, use store-copy",
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

pub async fn put(s: &mut StepState, store: &str, key: &str, data: Vec<u8>) -> Result<(), Failure> {
    let st = open(s, store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    st.put(&path, PutPayload::from(data))
        .await
        .map(|_| ())
        .map_err(|e| from_data(e.into()))
}

pub async fn head(
    s: &mut StepState,
    store: &str,
    key: &str,
) -> Result<Option<ObjectMeta>, Failure> {
    let st = open(s, store, key, Need::Read)?;
    let path = object_path(key).map_err(from_data)?;
    match st.head(&path).await {
        Ok(m) => Ok(Some(meta(m))),
        Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(from_data(e.into())),
    }
}

pub async fn list(
    s: &mut StepState,
    store: &str,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, Failure> {
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

pub async fn delete(s: &mut StepState, store: &str, key: &str) -> Result<(), Failure> {
    let st = open(s, store, key, Need::Write)?;
    let path = object_path(key).map_err(from_data)?;
    match st.delete(&path).await {
        Ok(()) | Err(respawn_data::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(from_data(e.into())),
    }
}

pub async fn copy(
    s: &mut StepState,
    from: (&str, &str),
    to: (&str, &str),
    expected_sha256: Option<&str>,
) -> Result<CopyResult, Failure> {
    let src = open(s, from.0, from.1, Need::Read)?;
    let dst = open(s, to.0, to.1, Need::Write)?;
    let sink = s.run.progress.clone();
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
