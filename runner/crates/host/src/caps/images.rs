//! The images capability: restore a stored OCI image into a granted directory, and compare a directory with an
//! image. Both run inside the host, so image bytes never pass through guest memory. Reading needs the store's
//! grant; restoring needs a `files` grant `rw` covering the target directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use respawn_data::StoreSet;
use respawn_data::object_store::ObjectStore;
use respawn_data::oci::OciError;
use respawn_engine::StepCall;
use respawn_engine::recovery::RestoredImage;
use respawn_sandbox::Denial;
use respawn_sandbox::stores::{Need, StoreGrant};
use wasmtime_wasi::WasiCtxBuilder;

use super::super::bindings::abi::images::{self as api, CompareResult, UnpackResult};
use super::super::bindings::abi::types::{Failure, FailureKind};
use super::super::context::{RunResources, StepContext};
use super::files::{self, GrantedDir};
use super::{Answer, Capability, failure, stores};

pub struct Images;

/// The images a run restored, with the steps that restored them.
pub type RestoredImages = std::sync::Arc<std::sync::Mutex<Vec<RestoredImage>>>;

impl Capability for Images {
    /// The images this run restored: a step's newest is its recovery point unless it outputs one.
    type Run = RestoredImages;

    fn configure(_: &RunResources) -> RestoredImages {
        RestoredImages::default()
    }

    /// Images need nothing of their own per attempt: they use the step's `stores` and `files` grants.
    type Step = ();

    fn prepare(_: &StepCall, _: &RunResources, _: &mut WasiCtxBuilder) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the images interface touches of an attempt: the `stores` it reads and the `files` directories it
/// restores into, besides its own record of restored images.
pub struct ImagesView<'a> {
    pub ctx: &'a mut StepContext,
    pub stores_grant: &'a BTreeMap<String, StoreGrant>,
    pub stores: &'a StoreSet,
    pub dirs: &'a [GrantedDir],
    pub restored: &'a RestoredImages,
    /// The step's `exec` grant: the users it runs programs as are the users restored files may belong to.
    pub exec_grant: &'a [respawn_sandbox::exec::ExecGrant],
}

linked_through!(ImagesView, api);

impl api::Host for ImagesView<'_> {
    async fn unpack(
        &mut self,
        store: String,
        prefix: String,
        tag: String,
        dir: String,
    ) -> Answer<UnpackResult> {
        Ok(unpack(self, &store, &prefix, &tag, &dir).await)
    }

    async fn unpack_as(
        &mut self,
        store: String,
        prefix: String,
        tag: String,
        dir: String,
        user: String,
    ) -> Answer<UnpackResult> {
        Ok(unpack_as(self, &store, &prefix, &tag, &dir, &user).await)
    }

    async fn compare(
        &mut self,
        store: String,
        prefix: String,
        tag: String,
        dir: String,
    ) -> Answer<CompareResult> {
        Ok(compare(self, &store, &prefix, &tag, &dir).await)
    }
}

impl ImagesView<'_> {
    fn open(&mut self, store: &str, prefix: &str) -> Result<Arc<dyn ObjectStore>, Failure> {
        stores::open(
            self.ctx,
            (self.stores_grant, self.stores),
            store,
            prefix,
            Need::Read,
        )
    }
}

fn from_oci(e: OciError) -> Failure {
    let kind = match &e {
        OciError::DigestMismatch { .. }
        | OciError::SizeMismatch { .. }
        | OciError::BadBlob { .. }
        | OciError::Unsafe { .. }
        | OciError::Layer { .. } => FailureKind::VerificationFailed,
        OciError::NoLayout { .. } | OciError::TagNotFound { .. } | OciError::MissingBlob { .. } => {
            FailureKind::NotFound
        }
        OciError::BadTag { .. } | OciError::InvalidLayout { .. } => FailureKind::InvalidInput,
        OciError::Data(d) if d.is_transient() => FailureKind::Unavailable,
        OciError::Store(_) => FailureKind::Unavailable,
        _ => FailureKind::Internal,
    };
    failure(kind, e.to_string())
}

/// A data move's bytes, total and throughput for the step's progress bar, as a plugin's own reports go there.
fn to_bar(v: &ImagesView<'_>) -> Option<respawn_data::progress::ProgressFn> {
    v.ctx.run.progress.clone().map(|sink| {
        let step = v.ctx.step_id.clone();
        let to_bar: respawn_data::progress::ProgressFn =
            std::sync::Arc::new(move |done, total, what: &str| sink(&step, done, total, what));
        to_bar
    })
}

async fn unpack(
    v: &mut ImagesView<'_>,
    store: &str,
    prefix: &str,
    tag: &str,
    dir: &str,
) -> Result<UnpackResult, Failure> {
    if v.ctx.read_only() {
        return Err(v.ctx.deny(Denial::new(
            "files",
            format!("restore into {dir}: the plan phase is read-only"),
        )));
    }
    v.ctx.still_owner()?;
    let st = v.open(store, prefix)?;
    let target = files::host_path(&v.ctx.run.base_dir, dir);
    if !files::inside_rw(v.dirs, &target) {
        return Err(v.ctx.deny(Denial::new(
            "files",
            format!("restore into {dir}: not inside a directory granted rw"),
        )));
    }
    let progress = to_bar(v);
    let report = respawn_data::oci::unpack::unpack_with_progress(
        st.as_ref(),
        prefix,
        tag,
        &target,
        progress,
    )
    .await
    .map_err(from_oci)?;
    if let Some(created) = report.created {
        v.restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RestoredImage {
                step: v.ctx.step_id.clone(),
                created,
            });
    }
    // Every restored image is an artifact of the run, by digest, whether or not it has a `created` time.
    if let Some(journal) = v.ctx.run.journal.clone() {
        let restored = respawn_journal::EventBody::ImageRestored {
            step: v.ctx.step_id.clone(),
            created: report
                .created
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            store: Some(store.to_string()),
            prefix: Some(prefix.to_string()),
            tag: Some(tag.to_string()),
            manifest_digest: Some(report.manifest_digest.clone()),
        };
        if let Err(e) = journal.append(restored).await {
            tracing::error!(step = %v.ctx.step_id, "{e}");
        }
    }
    let created = report
        .created
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    Ok(UnpackResult {
        manifest_digest: report.manifest_digest,
        files: report.files,
        bytes: report.bytes,
        created,
    })
}

async fn unpack_as(
    v: &mut ImagesView<'_>,
    store: &str,
    prefix: &str,
    tag: &str,
    dir: &str,
    user: &str,
) -> Result<UnpackResult, Failure> {
    if let Err(denial) = respawn_sandbox::exec::check_user(v.exec_grant, user, v.ctx.read_only()) {
        return Err(v.ctx.deny(denial));
    }
    let owner = super::process::RunAs::lookup(user)
        .map_err(|e| failure(FailureKind::InvalidInput, e.to_string()))?;
    let result = unpack(v, store, prefix, tag, dir).await?;
    let target = files::host_path(&v.ctx.run.base_dir, dir);
    let chowned = tokio::task::spawn_blocking(move || give_away(&target, owner.uid, owner.gid))
        .await
        .map_err(|e| failure(FailureKind::Internal, e.to_string()))?;
    chowned.map_err(|e| {
        failure(
            FailureKind::Internal,
            format!("giving {dir} to user `{user}`: {e}"),
        )
    })?;
    Ok(result)
}

/// Makes `uid:gid` own everything under `root` (links themselves, never what they point at) and `root` private.
fn give_away(root: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}

async fn compare(
    v: &mut ImagesView<'_>,
    store: &str,
    prefix: &str,
    tag: &str,
    dir: &str,
) -> Result<CompareResult, Failure> {
    let st = v.open(store, prefix)?;
    let target = files::host_path(&v.ctx.run.base_dir, dir);
    if !files::inside_any(v.dirs, &target) {
        return Err(v.ctx.deny(Denial::new(
            "files",
            format!("compare {dir}: not inside a granted directory"),
        )));
    }
    let progress = to_bar(v);
    let report = respawn_data::oci::compare::compare_with_progress(
        st.as_ref(),
        prefix,
        tag,
        &target,
        progress,
    )
    .await
    .map_err(from_oci)?;
    Ok(CompareResult {
        checked: report.checked,
        mismatches: report.mismatches,
    })
}
