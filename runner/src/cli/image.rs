//! `respawn image pack` and `respawn image verify`: thin wrappers over `respawn::data::oci`. The layout sits at
//! the root of the store URL; relative `file://` URLs are relative to the working directory.

use std::path::Path;
use std::sync::Arc;

use respawn::data::DataError;
use respawn::data::object_store::ObjectStore;
use respawn::data::oci::{self, OciError};
use respawn::data::stores::{local_root, open_store_with};

use super::{Compression, ImageCommand, Usage, exit, setup};

pub fn run(command: ImageCommand) -> anyhow::Result<u8> {
    match command {
        ImageCommand::Pack {
            dir,
            to,
            tag,
            compression,
        } => pack(&dir, &to, &tag, compression),
        ImageCommand::Verify { store_url } => verify(&store_url),
    }
}

fn open(url: &str, create: bool) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let cwd = std::env::current_dir()?;
    open_store_with(url, &cwd, create).map_err(|e| match e {
        DataError::BadUrl { .. } => Usage(e.to_string()).into(),
        other => other.into(),
    })
}

fn pack(dir: &Path, url: &str, tag: &str, compression: Compression) -> anyhow::Result<u8> {
    if !dir.is_dir() {
        return Err(Usage(format!("{}: not a directory", dir.display())).into());
    }
    let store = open(url, true)?;
    let compression = match compression {
        Compression::Zstd => oci::LayerCompression::Zstd,
        Compression::Gzip => oci::LayerCompression::Gzip,
    };
    let options = oci::PackOptions {
        compression,
        ..oci::PackOptions::default()
    };
    let local = local_root(url, &std::env::current_dir()?);
    let packed = setup::runtime()?.block_on(oci::pack_with(
        store.as_ref(),
        local.as_deref(),
        "",
        dir,
        tag,
        options,
    ));
    let report = match packed {
        Ok(report) => report,
        Err(e @ OciError::BadTag { .. }) => return Err(Usage(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    for path in &report.skipped {
        eprintln!(
            "warning: {}: sockets, FIFOs and devices are not packed",
            path.display()
        );
    }
    out!("tag:      {}", report.tag);
    out!("manifest: {}", report.manifest_digest);
    for layer in &report.layers {
        out!(
            "layer:    {} ({} bytes, {} entries)",
            layer.digest,
            layer.size,
            layer.entries
        );
    }
    out!("created:  {}", report.created);
    Ok(exit::OK)
}

fn verify(url: &str) -> anyhow::Result<u8> {
    let store = open(url, false)?;
    let checked = setup::runtime()?.block_on(oci::verify(store.as_ref(), ""));
    let report = match checked {
        Ok(report) => report,
        Err(e) if e.is_layout_problem() => {
            eprintln!("error: {url}: {e}");
            return Ok(exit::INVALID);
        }
        Err(e) => return Err(e.into()),
    };
    for p in &report.problems {
        out!("BAD {}: expected {}, got {}", p.digest, p.expected, p.got);
    }
    for (tag, digest) in &report.tagged {
        out!("image {} {digest}", tag.as_deref().unwrap_or("-"));
    }
    out!(
        "{} blobs ({} bytes) re-hashed, {} manifests checked: {}",
        report.blobs,
        report.bytes,
        report.manifests,
        if report.ok() {
            "all good".to_string()
        } else {
            format!("{} bad", report.problems.len())
        }
    );
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}
