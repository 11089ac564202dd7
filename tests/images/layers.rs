//! Unpacking hand-made layouts: hostile layers (traversal, symlink escapes, setuid bits), whiteouts and opaque
//! directories across layers, and compare refusing what unpack refuses.

use super::*;

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
