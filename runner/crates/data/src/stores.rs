//! Named stores of a run and the host-native blob copy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use super::faults::{FaultInjectingStore, Faults};
use super::retry::{RetryPolicy, RetryingStore};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("store URL `{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("digest mismatch for {key}: expected sha256:{expected}, got sha256:{actual}")]
    DigestMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("invalid key `{key}`: {why}")]
    BadKey { key: String, why: String },
    #[error("store error: {0}")]
    Store(#[from] object_store::Error),
}

impl DataError {
    /// True when trying again may succeed (network trouble, throttling), false for definite answers.
    pub fn is_transient(&self) -> bool {
        matches!(self, DataError::Store(e) if super::retry::is_transient(e))
    }
}

/// Environment variable that makes every store a workflow declares misbehave, for fault-injection tests and
/// game days: a [`Faults`] spec such as `transient=0.1,seed=7` or `corrupt=blobs`. Unset in normal runs.
pub const FAULTS_ENV: &str = "RESPAWN_FAULTS";

/// Opens a store URL. Relative `file://` paths are resolved against `base_dir` (the workflow's directory) and
/// created if missing. Calls that fail transiently are retried (see [`RetryingStore`]).
pub fn open_store(url: &str, base_dir: &Path) -> Result<Arc<dyn ObjectStore>, DataError> {
    open_store_with(url, base_dir, true)
}

/// Like [`open_store`]; with `create` false, a missing `file://` directory is not created and reads as an empty
/// store (what `plan` needs: it must change nothing).
pub fn open_store_with(
    url: &str,
    base_dir: &Path,
    create: bool,
) -> Result<Arc<dyn ObjectStore>, DataError> {
    let store = open_raw(url, base_dir, create, false)?;
    Ok(Arc::new(RetryingStore::new(store, retry_policy(url))))
}

/// Like [`open_store`], and a `file://` store fsyncs each object it writes, and its directory, before the write
/// returns: what an archive needs, since PostgreSQL recycles a WAL segment as soon as `archive_command` succeeds.
/// (Cloud stores acknowledge a write only once it is durable.)
pub fn open_store_synced(url: &str, base_dir: &Path) -> Result<Arc<dyn ObjectStore>, DataError> {
    let store = open_raw(url, base_dir, true, true)?;
    Ok(Arc::new(RetryingStore::new(store, retry_policy(url))))
}

/// Like [`open_store_with`], with the faults of [`FAULTS_ENV`] injected beneath the retries when it is set.
pub fn open_workflow_store(
    url: &str,
    base_dir: &Path,
    create: bool,
) -> Result<Arc<dyn ObjectStore>, DataError> {
    let store = open_raw(url, base_dir, create, false)?;
    let store = match std::env::var(FAULTS_ENV) {
        Ok(spec) if !spec.trim().is_empty() => {
            let faults = Faults::parse(&spec).map_err(|why| DataError::BadUrl {
                url: format!("{FAULTS_ENV}={spec}"),
                why,
            })?;
            tracing::warn!(store = url, %faults, "injecting faults ({FAULTS_ENV})");
            Arc::new(FaultInjectingStore::new(store, faults)) as Arc<dyn ObjectStore>
        }
        _ => store,
    };
    Ok(Arc::new(RetryingStore::new(store, retry_policy(url))))
}

/// Whole-call retries for a store URL. A cloud client has already retried each HTTP request (see
/// [`cloud_request_retries`]), so one more whole call is enough there; the local stores get the full default.
fn retry_policy(url: &str) -> RetryPolicy {
    if url.starts_with("file://") || url.starts_with("memory://") {
        RetryPolicy::default()
    } else {
        RetryPolicy {
            attempts: 2,
            ..RetryPolicy::default()
        }
    }
}

/// Per-request retries inside object_store's cloud clients: 5 retries within 30 s, backoff from 100 ms
/// (object_store's own default is 10 within 3 minutes). Stacked under [`RetryingStore`], that default made a
/// dead or mistyped endpoint take minutes to report; with this it fails within seconds, and a longer outage is
/// the step's own `retry` policy's to ride out (a store failure fails the step retryably).
fn cloud_request_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
        backoff: Default::default(),
    }
}

/// The directory a `file://` store URL names (relative paths against `base_dir`, as [`open_store`] resolves
/// them), for writers that can put a large object in place by renaming a file they built beside it. `None` for
/// every other store.
pub fn local_root(url: &str, base_dir: &Path) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("file://").filter(|r| !r.is_empty())?;
    let dir = if Path::new(rest).is_absolute() {
        Path::new(rest).to_path_buf()
    } else {
        base_dir.join(rest)
    };
    // The same path object_store's local store resolves keys against.
    dir.canonicalize().ok()
}

fn open_raw(
    url: &str,
    base_dir: &Path,
    create: bool,
    fsync: bool,
) -> Result<Arc<dyn ObjectStore>, DataError> {
    let bad = |why: &str| DataError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    if let Some(rest) = url.strip_prefix("file://") {
        if rest.is_empty() {
            return Err(bad("empty path"));
        }
        let dir = if Path::new(rest).is_absolute() {
            Path::new(rest).to_path_buf()
        } else {
            base_dir.join(rest)
        };
        if !create && !dir.exists() {
            return Ok(Arc::new(InMemory::new()));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| bad(&format!("cannot create {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(&e.to_string()))?;
        return Ok(Arc::new(fs.with_automatic_cleanup(true).with_fsync(fsync)));
    }
    if url.starts_with("memory://") {
        return Ok(Arc::new(InMemory::new()));
    }
    open_cloud(url)
}

/// A store URL's query may set only options that are not secrets: workflow files end up in reports and the
/// journal. Credentials, token sources, encryption keys, proxies (whose URL may carry a password) and TLS
/// verification come from the environment only. An allow-list, so an option object_store adds later is refused
/// until someone decides it is safe.
mod allowed {
    use object_store::ClientConfigKey as C;
    use object_store::aws::AmazonS3ConfigKey as S3;
    use object_store::azure::AzureConfigKey as Az;
    use object_store::gcp::GoogleConfigKey as Gs;

    pub fn client(key: &C) -> bool {
        matches!(
            key,
            C::AllowHttp
                | C::ConnectTimeout
                | C::DefaultContentType
                | C::Http1Only
                | C::Http2KeepAliveInterval
                | C::Http2KeepAliveTimeout
                | C::Http2KeepAliveWhileIdle
                | C::Http2MaxFrameSize
                | C::Http2Only
                | C::PoolIdleTimeout
                | C::PoolMaxIdlePerHost
                | C::RandomizeAddresses
                | C::ReadTimeout
                | C::Timeout
                | C::UserAgent
        )
    }

    pub fn s3(key: &S3) -> bool {
        match key {
            S3::Client(c) => client(c),
            S3::Region
            | S3::DefaultRegion
            | S3::Bucket
            | S3::Endpoint
            | S3::S3Endpoint
            | S3::ImdsV1Fallback
            | S3::VirtualHostedStyleRequest
            | S3::UnsignedPayload
            | S3::Checksum
            | S3::MetadataEndpoint
            | S3::StsEndpoint
            | S3::RoleArn
            | S3::RoleSessionName
            | S3::CopyIfNotExists
            | S3::ConditionalPut
            | S3::SkipSignature
            | S3::DisableTagging
            | S3::DisableBulkDelete
            | S3::S3Express
            | S3::RequestPayer => true,
            _ => false,
        }
    }

    pub fn azure(key: &Az) -> bool {
        match key {
            Az::Client(c) => client(c),
            Az::AccountName
            | Az::ContainerName
            | Az::UseEmulator
            | Az::Endpoint
            | Az::UseFabricEndpoint
            | Az::SkipSignature
            | Az::DisableTagging
            | Az::AuthorityId
            | Az::AuthorityHost
            | Az::ClientId
            | Az::ObjectId
            | Az::MsiEndpoint
            | Az::MsiResourceId
            | Az::UseAzureCli => true,
            _ => false,
        }
    }

    pub fn gcs(key: &Gs) -> bool {
        match key {
            Gs::Client(c) => client(c),
            Gs::Bucket | Gs::BaseUrl | Gs::SkipSignature => true,
            _ => false,
        }
    }
}

/// `s3://bucket/prefix?endpoint=…&allow_http=true`, `az://container/prefix`, `gs://bucket/prefix`. Credentials
/// come from the standard environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`); query parameters set any
/// other option the provider's builder knows (`endpoint`, `region`, `allow_http`, …).
fn open_cloud(url: &str) -> Result<Arc<dyn ObjectStore>, DataError> {
    let bad = |why: String| DataError::BadUrl {
        url: url.to_string(),
        why,
    };
    // reqwest is built without a default TLS crypto provider (see Cargo.toml); choose ring once per process.
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let scheme = parsed.scheme().to_string();
    let Some(bucket) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad(format!(
            "expected {scheme}://BUCKET/PREFIX with a bucket or container name"
        )));
    };
    let root = format!("{scheme}://{bucket}");
    let options: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    // A refused value may be a secret (or a misspelt one): the URL in the message shows every value as `***`.
    let masked = {
        let mut m = parsed.clone();
        let pairs: Vec<(String, String)> = options
            .iter()
            .map(|(k, _)| (k.clone(), "***".into()))
            .collect();
        m.query_pairs_mut().clear().extend_pairs(pairs);
        m.to_string()
    };
    let unknown = |key: &str| DataError::BadUrl {
        url: masked.clone(),
        why: format!("unknown option `{key}` for {scheme}:// stores"),
    };
    let secret = |key: &str| DataError::BadUrl {
        url: masked.clone(),
        why: format!(
            "`{key}` may not be set in a store URL: workflow files end up in reports and the journal. Credentials, \
             token sources, encryption keys, proxies and TLS settings come from the environment (AWS_*, AZURE_*, \
             GOOGLE_*)"
        ),
    };
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env()
                .with_url(&root)
                .with_retry(cloud_request_retries());
            for (k, v) in options {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(&k))?;
                if !allowed::s3(&key) {
                    return Err(secret(&k));
                }
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(&root)
                .with_retry(cloud_request_retries());
            for (k, v) in options {
                let key: AzureConfigKey = k.parse().map_err(|_| unknown(&k))?;
                if !allowed::azure(&key) {
                    return Err(secret(&k));
                }
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(&root)
                .with_retry(cloud_request_retries());
            for (k, v) in options {
                let key: GoogleConfigKey = k.parse().map_err(|_| unknown(&k))?;
                if !allowed::gcs(&key) {
                    return Err(secret(&k));
                }
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        other => {
            return Err(bad(format!(
                "unknown scheme `{other}`; expected file://, memory://, s3://, az:// or gs://"
            )));
        }
    };
    let prefix = parsed.path().trim_matches('/');
    if prefix.is_empty() {
        return Ok(store);
    }
    let prefix = object_path(prefix)?;
    Ok(Arc::new(object_store::prefix::PrefixStore::new(
        store, prefix,
    )))
}

/// Parses an object key, refusing `..`, empty segments and absolute keys.
pub fn object_path(key: &str) -> Result<ObjectPath, DataError> {
    let bad = |why: &str| DataError::BadKey {
        key: key.to_string(),
        why: why.to_string(),
    };
    if key.starts_with('/') {
        return Err(bad("keys are relative"));
    }
    ObjectPath::parse(key).map_err(|e| bad(&e.to_string()))
}

/// The stores a run declared, opened once.
#[derive(Default, Clone)]
pub struct StoreSet {
    stores: BTreeMap<String, Arc<dyn ObjectStore>>,
}

impl StoreSet {
    pub fn open(urls: &BTreeMap<String, String>, base_dir: &Path) -> Result<StoreSet, DataError> {
        StoreSet::open_with(urls, base_dir, true)
    }

    /// Opens every store; with `create` false nothing is created on disk (see [`open_store_with`]).
    pub fn open_with(
        urls: &BTreeMap<String, String>,
        base_dir: &Path,
        create: bool,
    ) -> Result<StoreSet, DataError> {
        let mut stores = BTreeMap::new();
        for (name, url) in urls {
            stores.insert(name.clone(), open_workflow_store(url, base_dir, create)?);
        }
        Ok(StoreSet { stores })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ObjectStore>> {
        self.stores.get(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResult {
    pub bytes: u64,
    pub sha256: String,
}

/// Streams `from_key` into `to_key`, hashing as the bytes flow. Memory stays bounded by the multipart chunk
/// size. With `expected_sha256`, a mismatch aborts the upload, so no object is left at `to_key`. Progress (bytes,
/// the object's size, `what`) goes to `progress` and, when stderr is not a terminal, to the log every few seconds.
pub async fn copy_blob(
    from: &dyn ObjectStore,
    from_key: &str,
    to: &dyn ObjectStore,
    to_key: &str,
    expected_sha256: Option<&str>,
    what: &str,
    progress: Option<crate::progress::ProgressFn>,
) -> Result<CopyResult, DataError> {
    let src = object_path(from_key)?;
    let dst = object_path(to_key)?;
    let got = from.get(&src).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => DataError::NotFound {
            key: from_key.to_string(),
        },
        other => DataError::Store(other),
    })?;
    let meter = crate::progress::Meter::new(what, Some(got.meta.size), progress);
    let mut stream = crate::body_stream(got);
    let mut writer = WriteMultipart::new(to.put_multipart(&dst).await?);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e.into());
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        meter.add(chunk.len() as u64);
        // Backpressure: at most a few parts in flight.
        if let Err(e) = writer.wait_for_capacity(4).await {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        writer.write(&chunk);
    }
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = expected_sha256 {
        let expected = expected.strip_prefix("sha256:").unwrap_or(expected);
        if !expected.eq_ignore_ascii_case(&actual) {
            let _ = writer.abort().await;
            return Err(DataError::DigestMismatch {
                key: from_key.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    writer.finish().await?;
    Ok(CopyResult {
        bytes,
        sha256: actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;

    /// Only options known not to be secrets may sit in a store URL; a credential, a token source, an encryption
    /// key, a proxy or a TLS switch is refused with the way to set it instead, before any connection.
    #[test]
    fn store_urls_take_only_options_that_are_not_secrets() {
        for ok in [
            "s3://b/p?endpoint=http://127.0.0.1:5055&allow_http=true&region=eu-west-1",
            "az://c/p?use_emulator=true&account_name=devstoreaccount1",
            "gs://b/p?base_url=http://127.0.0.1:4443",
        ] {
            assert!(open_store(ok, Path::new("/")).is_ok(), "{ok}");
        }
        for (url, key) in [
            ("s3://b/p?aws_secret_access_key=x", "aws_secret_access_key"),
            ("s3://b/p?aws_session_token=x", "aws_session_token"),
            (
                "s3://b/p?aws_web_identity_token_file=/tmp/t",
                "aws_web_identity_token_file",
            ),
            ("s3://b/p?proxy_url=http://u:p@proxy", "proxy_url"),
            (
                "s3://b/p?allow_invalid_certificates=true",
                "allow_invalid_certificates",
            ),
            ("az://c/p?azure_storage_sas_key=x", "azure_storage_sas_key"),
            (
                "az://c/p?azure_storage_account_key=x",
                "azure_storage_account_key",
            ),
            (
                "gs://b/p?google_service_account_key=x",
                "google_service_account_key",
            ),
        ] {
            let err = open_store(url, Path::new("/"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(&format!("`{key}` may not be set")),
                "{url}: {err}"
            );
            assert!(!err.contains("=x"), "the value is not echoed: {err}");
        }
        // A misspelt secret is unknown, and its value is not echoed either.
        let err = open_store("s3://b/p?aws_secret_acess_key=x", Path::new("/"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown option `aws_secret_acess_key`"),
            "{err}"
        );
        assert!(!err.contains("=x"), "the value is not echoed: {err}");
    }

    #[tokio::test]
    async fn copy_checks_the_digest_and_leaves_nothing_on_mismatch() {
        let src = InMemory::new();
        let dst = InMemory::new();
        src.put(
            &object_path("a/blob").unwrap(),
            PutPayload::from_static(b"hello"),
        )
        .await
        .unwrap();
        let ok = copy_blob(&src, "a/blob", &dst, "b/blob", None, "copy", None)
            .await
            .unwrap();
        assert_eq!(ok.bytes, 5);
        assert_eq!(
            ok.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let err = copy_blob(
            &src,
            "a/blob",
            &dst,
            "c/blob",
            Some("sha256:00"),
            "copy",
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DataError::DigestMismatch { .. }), "{err}");
        assert!(
            dst.head(&object_path("c/blob").unwrap()).await.is_err(),
            "mismatched blob must not be left"
        );
    }

    #[test]
    fn keys_cannot_escape() {
        assert!(object_path("../etc/passwd").is_err());
        assert!(object_path("/abs").is_err());
        assert!(object_path("images/site/blobs/sha256/ab").is_ok());
    }
}
