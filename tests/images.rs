//! OCI images: `respawn image pack` / `verify` through the binary, and `unpack` through the library, including
//! hand-made hostile layers.

mod common;

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

// ---- hand-made layouts ----

enum E<'a> {
    File(&'a str, &'a str),
    /// A regular file with the given mode bits.
    Mode(&'a str, &'a str, u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A tar whose names are written raw, so `..` and absolute paths get in.
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, body, kind, mode) = match e {
            E::File(n, body) => (*n, "", body.as_bytes(), tar::EntryType::Regular, 0o640),
            E::Mode(n, body, mode) => (*n, "", body.as_bytes(), tar::EntryType::Regular, *mode),
            E::Dir(n) => (*n, "", &b""[..], tar::EntryType::Directory, 0o755),
            E::Symlink(n, t) => (*n, *t, &b""[..], tar::EntryType::Symlink, 0o777),
            E::Hardlink(n, t) => (*n, *t, &b""[..], tar::EntryType::Link, 0o644),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn put_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = format!("{:x}", Sha256::digest(bytes));
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

#[derive(Clone, Copy)]
enum Z {
    Tar,
    Gzip,
    /// zstd in two frames, as `zstd:chunked` layers are.
    Zstd,
}

/// An OCI layout as skopeo writes one: layers given as tars and how to compress them, tagged `latest`.
fn layout(layers: &[(Vec<u8>, Z)]) -> PathBuf {
    let dir = tmp("layout");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, z) in layers {
        diff_ids.push(format!("sha256:{:x}", Sha256::digest(tar)));
        let (media, body) = match z {
            Z::Gzip => (oci::MEDIA_LAYER_GZIP, gzip(tar)),
            Z::Tar => (oci::MEDIA_LAYER_TAR, tar.clone()),
            Z::Zstd => {
                let (a, b) = tar.split_at(tar.len() / 2);
                let mut body = zstd::encode_all(a, 1).unwrap();
                body.extend(zstd::encode_all(b, 1).unwrap());
                (oci::MEDIA_LAYER_ZSTD, body)
            }
        };
        let (digest, size) = put_blob(&dir, &body);
        descs.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({
        "created": "2024-05-01T10:00:00.5+02:00", "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    let (cd, cs) = put_blob(&dir, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::MEDIA_MANIFEST,
        "config": {"mediaType": oci::MEDIA_CONFIG, "digest": cd, "size": cs},
        "layers": descs
    });
    let (md, ms) = put_blob(&dir, manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": oci::MEDIA_MANIFEST, "digest": md, "size": ms,
        "annotations": {oci::REF_NAME: "latest"}
    }]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

/// Unpacks a one-layer image of `entries` into `<tmp>/dest`; returns the error and the scratch dir.
async fn hostile(entries: &[E<'_>]) -> (OciError, PathBuf) {
    let st = layout(&[(tar_of(entries), Z::Gzip)]);
    let scratch = tmp("scratch");
    let dest = scratch.join("dest");
    let err = unpack(store(&st).as_ref(), "", "latest", &dest)
        .await
        .expect_err("hostile layer must be refused");
    (err, scratch)
}

/// Only `dest` (and its spool files, since removed) may exist in the scratch dir.
fn nothing_outside(scratch: &Path) {
    let names: Vec<String> = fs::read_dir(scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["dest"], "written outside dest");
}

fn refused(err: &OciError, entry: &str, why: &str) {
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unsafe { .. }), "{msg}");
    assert!(msg.contains(&format!("entry `{entry}` refused")), "{msg}");
    assert!(msg.contains(why), "{msg}");
}

#[tokio::test]
async fn unpack_refuses_traversal_and_symlink_escapes() {
    let (err, s) = hostile(&[E::File("ok", "fine"), E::File("../evil", "x")]).await;
    refused(&err, "../evil", "`..`");
    nothing_outside(&s);

    let abs = tmp("abs-target").join("planted");
    let abs_name = abs.to_str().unwrap().to_string();
    let (err, s) = hostile(&[E::File(&abs_name, "x")]).await;
    refused(&err, &abs_name, "absolute path");
    assert!(!abs.exists());
    nothing_outside(&s);

    let (err, s) = hostile(&[E::Symlink("link", "/etc"), E::File("link/passwd", "x")]).await;
    refused(&err, "link", "absolute");
    nothing_outside(&s);

    let outside = tmp("outside");
    let outside_name = outside.to_str().unwrap().to_string();
    let (err, s) = hostile(&[
        E::Symlink("link", &outside_name),
        E::File("link/planted", "x"),
    ])
    .await;
    refused(&err, "link", "absolute");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    nothing_outside(&s);

    let (err, s) = hostile(&[E::Symlink("up", "../../outside")]).await;
    refused(&err, "up", "leaves the destination");
    nothing_outside(&s);

    // An inside symlink is fine, but writing through it is not.
    let (err, s) = hostile(&[
        E::Dir("sub"),
        E::Symlink("alias", "sub"),
        E::File("alias/x", "x"),
    ])
    .await;
    refused(&err, "alias/x", "is a symlink");
    assert!(!s.join("dest/sub/x").exists());

    // Escapes that only show when following the symlinks already there.
    let (err, s) = hostile(&[E::Symlink("here", "."), E::Symlink("t", "here/..")]).await;
    refused(&err, "t", "resolves outside");
    nothing_outside(&s);

    let (err, s) = hostile(&[E::Hardlink("hl", "../outside/secret")]).await;
    refused(&err, "hl", "`..`");
    nothing_outside(&s);
    let (err, _) = hostile(&[E::Hardlink("hl", "/etc/passwd")]).await;
    refused(&err, "hl", "absolute");
    let (err, _) = hostile(&[E::Symlink("l", "x"), E::Hardlink("hl", "l")]).await;
    refused(&err, "hl", "not a regular file");
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_apply_across_layers() {
    let lower = tar_of(&[
        E::Dir("a"),
        E::File("a/x", "x"),
        E::File("a/y", "y"),
        E::Dir("b"),
        E::File("b/z", "z"),
        E::Dir("c"),
        E::File("c/old", "old"),
        E::Dir("c/sub"),
        E::File("c/sub/older", "older"),
        E::File("keep.txt", "keep"),
        E::File("orig", "orig"),
    ]);
    let upper = tar_of(&[
        E::File("a/.wh.x", ""),
        E::File(".wh.b", ""),
        E::File("c/new", "new"),
        E::Dir("c/sub"),
        E::File("c/.wh..wh..opq", ""),
        E::Hardlink("orig-link", "orig"),
    ]);
    let top = tar_of(&[E::File("a/top", "top"), E::Dir("b")]);
    // gzip, then plain tar, then zstd, as layouts from other tools may mix them.
    let st = layout(&[(lower, Z::Gzip), (upper, Z::Tar), (top, Z::Zstd)]);
    let dest = tmp("dest");
    let store = store(&st);
    let report = unpack(store.as_ref(), "", "latest", &dest).await.unwrap();
    assert_eq!(report.layers, 3);
    assert_eq!(fs::read_to_string(dest.join("a/top")).unwrap(), "top");
    assert!(!dest.join("a/x").exists());
    assert_eq!(fs::read_to_string(dest.join("a/y")).unwrap(), "y");
    assert!(dest.join("b").is_dir(), "recreated by the top layer");
    assert!(!dest.join("b/z").exists());
    assert_eq!(fs::read_to_string(dest.join("c/new")).unwrap(), "new");
    assert!(!dest.join("c/old").exists());
    assert!(dest.join("c/sub").is_dir());
    assert!(!dest.join("c/sub/older").exists());
    assert_eq!(fs::read_to_string(dest.join("keep.txt")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(dest.join("orig-link")).unwrap(), "orig");
    assert!(!dest.join("a/.wh.x").exists() && !dest.join("c/.wh..wh..opq").exists());
    assert_eq!(
        fs::metadata(dest.join("a/y")).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let want = oci::parse_rfc3339("2024-05-01T08:00:00.5Z");
    assert_eq!(report.created, want);
    assert_eq!(oci::image_created(store.as_ref(), "", "latest").await, want);

    // The layout verifies too.
    let out = respawn(&["image", "verify", &url(&st)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A restored file never gets setuid or setgid: an image is untrusted input, and a restore must not plant a
/// program that runs with its owner's rights.
#[tokio::test]
async fn unpack_drops_setuid_and_setgid_bits() {
    let layer = tar_of(&[
        E::Mode("suid", "x", 0o4755),
        E::Mode("sgid", "x", 0o2750),
        E::Mode("plain", "x", 0o755),
    ]);
    let st = layout(&[(layer, Z::Tar)]);
    let dest = tmp("dest-suid");
    let store = store(&st);
    unpack(store.as_ref(), "", "latest", &dest).await.unwrap();
    for (name, mode) in [("suid", 0o755), ("sgid", 0o750), ("plain", 0o755)] {
        let got = fs::metadata(dest.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode, "{name}: {got:o}");
    }
}

/// `image-compare` walks layers with the same checks as unpack: every entry unpack refuses, compare refuses
/// too, with the same reason (it used to drop `..` parts and skip symlinks, and compared anyway).
#[tokio::test]
async fn compare_refuses_what_unpack_refuses() {
    let cases: &[(&[E], &str, &str)] = &[
        (
            &[E::File("ok", "fine"), E::File("../evil", "x")],
            "../evil",
            "`..`",
        ),
        (
            &[E::File("/abs/planted", "x")],
            "/abs/planted",
            "absolute path",
        ),
        (&[E::Symlink("link", "/etc")], "link", "absolute"),
        (
            &[E::Symlink("up", "../../outside")],
            "up",
            "leaves the destination",
        ),
        (
            &[
                E::Dir("sub"),
                E::Symlink("alias", "sub"),
                E::File("alias/x", "x"),
            ],
            "alias/x",
            "is a symlink",
        ),
        (
            &[E::Symlink("here", "."), E::Symlink("t", "here/..")],
            "t",
            "resolves outside",
        ),
        (&[E::Hardlink("hl", "../outside/secret")], "hl", "`..`"),
        (
            &[E::Symlink("l", "x"), E::Hardlink("hl", "l")],
            "hl",
            "not a regular file",
        ),
    ];
    for (entries, entry, why) in cases {
        let (unpacked, _) = hostile(entries).await;
        refused(&unpacked, entry, why);
        let st = layout(&[(tar_of(entries), Z::Gzip)]);
        let dest = tmp("compare-hostile");
        let compared = oci::compare::compare(store(&st).as_ref(), "", "latest", &dest)
            .await
            .expect_err("compare must refuse what unpack refuses");
        refused(&compared, entry, why);
    }
}

/// Compare never reads through a symlink in the restored tree: a directory replaced by a link to a copy
/// elsewhere does not match, even when the copy holds the same bytes.
#[tokio::test]
async fn compare_does_not_follow_symlinks_in_the_restored_tree() {
    let st = layout(&[(
        tar_of(&[E::Dir("sub"), E::File("sub/x", "same"), E::File("top", "t")]),
        Z::Tar,
    )]);
    let dest = tmp("compare-links");
    let elsewhere = tmp("compare-elsewhere");
    fs::write(elsewhere.join("x"), "same").unwrap();
    symlink(&elsewhere, dest.join("sub")).unwrap();
    fs::write(elsewhere.join("top"), "t").unwrap();
    symlink(elsewhere.join("top"), dest.join("top")).unwrap();
    let report = oci::compare::compare(store(&st).as_ref(), "", "latest", &dest)
        .await
        .unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.mismatches, ["sub/x", "top"]);
    // The same tree restored for real matches.
    let real = tmp("compare-real");
    unpack(store(&st).as_ref(), "", "latest", &real)
        .await
        .unwrap();
    let report = oci::compare::compare(store(&st).as_ref(), "", "latest", &real)
        .await
        .unwrap();
    assert!(report.mismatches.is_empty(), "{report:?}");
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
