//! OCI images: `respawn image pack` / `verify` through the binary, and `unpack` through the library, including
//! hand-made hostile layers.

#[path = "../common/mod.rs"]
mod common;

mod layers;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::text;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use respawn::data::object_store::ObjectStore;
use respawn::data::oci::unpack::unpack;
use respawn::data::oci::{self, OciError};
use respawn::data::open_store;
use sha2::{Digest, Sha256};

/// A fresh directory under the temp dir, unique to this process and call.
fn tmp(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("respawn-images-{}-{n}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `respawn ARGS`; every path the tests pass is absolute.
fn respawn(args: &[&str]) -> Output {
    common::respawn(&std::env::temp_dir(), args)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn store(dir: &Path) -> Arc<dyn ObjectStore> {
    open_store(&url(dir), Path::new("/")).unwrap()
}

/// Packs through the binary and returns the manifest digest it printed.
fn pack(dir: &Path, to: &Path, tag: &str) -> String {
    let out = respawn(&[
        "image",
        "pack",
        dir.to_str().unwrap(),
        "--to",
        &url(to),
        "--tag",
        tag,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("manifest:"))
        .unwrap_or_else(|| panic!("no manifest line in {stdout}"))
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    digest
}

fn write(path: &Path, body: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small tree: files with two modes, nested dirs, an empty dir and two inside symlinks.
fn site() -> PathBuf {
    let dir = tmp("site");
    write(&dir.join("index.html"), "<h1>hello</h1>\n", 0o644);
    write(&dir.join("bin/start.sh"), "#!/bin/sh\necho up\n", 0o755);
    write(&dir.join("data/deep/rows.csv"), "a,b\n1,2\n", 0o600);
    fs::create_dir_all(dir.join("empty")).unwrap();
    symlink("index.html", dir.join("home.html")).unwrap();
    symlink("../../index.html", dir.join("data/deep/index.html")).unwrap();
    dir
}

fn blob_path(store_dir: &Path, digest: &str) -> PathBuf {
    store_dir
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

#[test]
fn pack_is_reproducible_and_follows_content() {
    let dir = site();
    let (one, two) = (tmp("store-one"), tmp("store-two"));
    let first = pack(&dir, &one, "v1");
    let second = pack(&dir, &two, "v1");
    assert_eq!(first, second, "same input, same manifest digest");
    assert_eq!(
        fs::read(blob_path(&one, &first)).unwrap(),
        fs::read(blob_path(&two, &second)).unwrap()
    );
    assert_eq!(
        fs::read_to_string(one.join("oci-layout")).unwrap().trim(),
        "{\n  \"imageLayoutVersion\": \"1.0.0\"\n}"
    );

    // A relative store URL resolves against the working directory.
    let rel_out = common::respawn(
        &tmp("cwd"),
        &[
            "image",
            "pack",
            dir.to_str().unwrap(),
            "--to",
            "file://rel-store",
            "--tag",
            "v1",
        ],
    );
    assert!(rel_out.status.success(), "{}", text(&rel_out));
    assert!(String::from_utf8_lossy(&rel_out.stdout).contains(&first));

    fs::write(dir.join("index.html"), "<h1>changed</h1>\n").unwrap();
    let changed = pack(&dir, &one, "v2");
    assert_ne!(first, changed, "a changed file changes the digest");

    // v1 and v2 both in index.json, sorted; repacking v1 replaces its entry.
    let again = pack(&dir, &one, "v1");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(one.join("index.json")).unwrap()).unwrap();
    let tags: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["annotations"][oci::REF_NAME].as_str().unwrap(),
                d["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tags, [("v1", again.as_str()), ("v2", changed.as_str())]);
    assert_eq!(again, changed);

    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&one, &changed)).unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], oci::MEDIA_MANIFEST);
    assert_eq!(manifest["layers"][0]["mediaType"], oci::MEDIA_LAYER_ZSTD);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&one, config_digest)).unwrap()).unwrap();
    assert!(oci::parse_rfc3339(config["created"].as_str().unwrap()).is_some());
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
}

#[test]
fn verify_names_a_corrupt_blob() {
    let dir = site();
    let st = tmp("store");
    let manifest = pack(&dir, &st, "v1");
    let ok = respawn(&["image", "verify", &url(&st)]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("all good"), "{}", text(&ok));

    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&st, &manifest)).unwrap()).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = blob_path(&st, &layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let bad = respawn(&["image", "verify", &url(&st)]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let out = text(&bad);
    assert!(out.contains(&format!("BAD {layer}")), "{out}");
    assert!(out.contains("1 bad"), "{out}");

    // Missing blob: named too.
    fs::remove_file(&path).unwrap();
    let missing = respawn(&["image", "verify", &url(&st)]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains(&layer), "{}", text(&missing));

    // No layout at all, or a broken index: exit 2, and nothing is created.
    let nowhere = st.join("nowhere");
    let none = respawn(&["image", "verify", &url(&nowhere)]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(!nowhere.exists());
    fs::write(st.join("index.json"), "{not json").unwrap();
    let broken = respawn(&["image", "verify", &url(&st)]);
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
}

#[tokio::test]
async fn unpack_round_trips_files_modes_and_symlinks() {
    let dir = site();
    let st = tmp("store");
    let digest = pack(&dir, &st, "site-1");
    let store = store(&st);
    let dest = tmp("dest").join("restored");
    let report = unpack(store.as_ref(), "", "site-1", &dest).await.unwrap();
    assert_eq!(report.manifest_digest, digest);
    assert_eq!(report.files, 3);
    assert_eq!(report.layers, 1);
    let newest = fs::symlink_metadata(dir.join("data/deep/index.html"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(report.created.is_some_and(|c| c <= newest));
    assert_eq!(
        oci::image_created(store.as_ref(), "", "site-1").await,
        report.created
    );
    for (rel, mode) in [
        ("index.html", 0o644),
        ("bin/start.sh", 0o755),
        ("data/deep/rows.csv", 0o600),
    ] {
        assert_eq!(
            fs::read(dest.join(rel)).unwrap(),
            fs::read(dir.join(rel)).unwrap()
        );
        let got = fs::metadata(dest.join(rel)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "{rel}");
    }
    assert_eq!(
        fs::read_link(dest.join("home.html")).unwrap(),
        Path::new("index.html")
    );
    assert_eq!(
        fs::read_link(dest.join("data/deep/index.html")).unwrap(),
        Path::new("../../index.html")
    );
    assert!(dest.join("empty").is_dir());

    // Tag lookup: unknown tags are named; an empty tag picks the only image.
    let err = unpack(store.as_ref(), "", "nope", &tmp("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::TagNotFound { .. }), "{err}");
    assert!(err.to_string().contains("site-1"), "{err}");
    unpack(store.as_ref(), "", "", &tmp("only")).await.unwrap();
}

#[tokio::test]
async fn unpack_refuses_a_corrupt_layer_and_extracts_nothing() {
    let dir = site();
    let st = tmp("store");
    let digest = pack(&dir, &st, "v1");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&st, &digest)).unwrap()).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = blob_path(&st, &layer);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    let dest = tmp("dest");
    let err = unpack(store(&st).as_ref(), "", "v1", &dest)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { digest, .. } if *digest == layer),
        "{err}"
    );
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing extracted");
}

/// A directory larger than the layer size is cut into several layers: still reproducible (the same digests
/// whether the layers were renamed into a local store or streamed to it), each layer extracts on its own (the
/// directories above its first entry come with it), and together they restore the tree.
#[tokio::test]
async fn a_large_directory_is_cut_into_reproducible_layers() {
    let dir = site();
    for i in 0..12u8 {
        let body: String = (0..20_000)
            .map(|n| char::from(b'a' + ((n * 7 + usize::from(i)) % 26) as u8))
            .collect();
        write(
            &dir.join(format!("data/d{}/f{i:02}.txt", i % 3)),
            &body,
            0o640,
        );
    }
    let options = oci::PackOptions {
        layer_bytes: 50_000,
        ..oci::PackOptions::default()
    };
    let (one, two) = (tmp("split-one"), tmp("split-two"));
    let local = one.canonicalize().unwrap();
    let renamed = oci::pack_with(store(&one).as_ref(), Some(&local), "", &dir, "v1", options)
        .await
        .unwrap();
    let streamed = oci::pack_with(store(&two).as_ref(), None, "", &dir, "v1", options)
        .await
        .unwrap();
    assert!(renamed.layers.len() >= 4, "{:?}", renamed.layers);
    assert_eq!(renamed.manifest_digest, streamed.manifest_digest);
    let digests = |r: &oci::PackReport| {
        r.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&renamed), digests(&streamed));
    assert_eq!(
        renamed.layers.iter().map(|l| l.entries).sum::<u64>(),
        renamed.entries
    );
    for layer in &renamed.layers {
        let mode = fs::metadata(blob_path(&one, &layer.digest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "a renamed layer is readable like any stored object"
        );
    }
    // Nothing of the build is left beside the layout.
    let stray: Vec<_> = fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".respawn-pack"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert!(respawn(&["image", "verify", &url(&one)]).status.success());

    let dest = tmp("split-dest").join("restored");
    let report = unpack(store(&one).as_ref(), "", "v1", &dest).await.unwrap();
    assert_eq!(report.layers, renamed.layers.len());
    for i in 0..12u8 {
        let rel = format!("data/d{}/f{i:02}.txt", i % 3);
        assert_eq!(
            fs::read(dest.join(&rel)).unwrap(),
            fs::read(dir.join(&rel)).unwrap()
        );
        let mode = fs::metadata(dest.join(&rel)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "{rel}");
    }
    assert_eq!(
        fs::read_link(dest.join("data/deep/index.html")).unwrap(),
        Path::new("../../index.html")
    );
    assert!(dest.join("empty").is_dir());

    // Each layer extracts on its own: every directory above an entry is in the same layer.
    for layer in &renamed.layers {
        let tar = zstd::decode_all(&fs::read(blob_path(&one, &layer.digest)).unwrap()[..]).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<PathBuf> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().components().collect())
            .collect();
        for name in &names {
            for above in name
                .ancestors()
                .skip(1)
                .filter(|p| !p.as_os_str().is_empty())
            {
                assert!(
                    names.iter().any(|n| n == above),
                    "{} is above {} but not in its layer: {names:?}",
                    above.display(),
                    name.display()
                );
            }
        }
    }
}
