//! Artifacts in an object store (S3, GCS, Azure) through the `object_store` crate, streamed both
//! ways: a download is the store's response body passed on chunk by chunk, an upload goes out as
//! one PUT when it fits in [`PART_SIZE`] and as a multipart upload of at most
//! [`PARTS_IN_FLIGHT`] parts in memory otherwise — memory stays bounded whatever the artifact's
//! size, and an object appears under its name only when the whole upload completed
//! (docs/architecture.md, "Artifacts").

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use super::http_client::HyperConnector;
use super::{ArtifactFile, Destination, FileInfo, UploadStream, joined};
use crate::error::{ApiError, ErrorCode};

/// Size of each part of a multipart upload (S3's minimum is 5 MiB), and the largest upload sent
/// as a single PUT.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once: with [`PART_SIZE`], at most ~24 MiB of an upload is in memory
/// (the part being filled and two uploading), which keeps the server under 64 MB during a transfer.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Retries of a failed request to the store, and the time after which the store counts as down:
/// a client waits at most this long before its 503.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    }
}

/// An object-store destination: the store and the key prefix everything lives under.
#[derive(Debug)]
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is S3: MLflow's proxied multipart upload hands clients presigned
    /// part URLs, which only S3 gives here.
    s3: Option<Arc<object_store::aws::AmazonS3>>,
    prefix: String,
    uri: String,
}

/// A multipart upload a client was handed: its id and one presigned URL per part.
#[derive(Debug, Clone, PartialEq)]
pub struct MultipartCreated {
    pub upload_id: String,
    /// `(part_number, url)`, part numbers from 1.
    pub parts: Vec<(u32, String)>,
}

/// How long a presigned part URL stays valid.
const PART_URL_VALIDITY: Duration = Duration::from_secs(3600);
/// S3's limit on parts per upload.
pub const MAX_PARTS: u32 = 10_000;

impl ObjectRoot {
    /// Connect to `destination` with credentials from the environment (nothing is contacted
    /// yet: a wrong key shows on the first request).
    pub fn connect(destination: &Destination) -> Result<Self, String> {
        let mut s3: Option<Arc<object_store::aws::AmazonS3>> = None;
        let store: Arc<dyn ObjectStore> = match destination {
            Destination::S3 { bucket, .. } => {
                let mut b = s3_builder(object_store::aws::AmazonS3Builder::from_env(), bucket);
                // MLflow's name for a custom endpoint (MinIO, Ceph, a test server).
                let endpoint = std::env::var("MLFLOW_S3_ENDPOINT_URL")
                    .ok()
                    .filter(|e| !e.is_empty());
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                    b = b.with_region("us-east-1");
                }
                let built = Arc::new(
                    b.build()
                        .map_err(|e| format!("S3 destination {destination}: {e}"))?,
                );
                s3 = Some(built.clone());
                built
            }
            Destination::Gcs { bucket, .. } => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_http_connector(HyperConnector)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| format!("GCS destination {destination}: {e}"))?,
            ),
            Destination::Azure {
                account, container, ..
            } => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_account(account)
                    .with_container_name(container)
                    .with_http_connector(HyperConnector)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| format!("Azure destination {destination}: {e}"))?,
            ),
            Destination::Local(_) => return Err("a local directory is not an object store".to_owned()),
        };
        let mut root = Self::with_store(store, destination.prefix(), destination.to_string());
        root.s3 = s3;
        Ok(root)
    }

    /// Any object store under `prefix` (tests use object_store's in-memory store).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, uri: String) -> Self {
        Self {
            store,
            s3: None,
            prefix: prefix.trim_matches('/').to_owned(),
            uri,
        }
    }

    pub fn describe(&self) -> &str {
        &self.uri
    }

    /// The key of a cleaned relative path (empty: the prefix itself).
    fn key(&self, clean: &str) -> Key {
        match (self.prefix.is_empty(), clean.is_empty()) {
            (true, _) => Key::from(clean),
            (false, true) => Key::from(self.prefix.as_str()),
            (false, false) => Key::from(format!("{}/{clean}", self.prefix)),
        }
    }

    pub(super) async fn read(&self, clean: &str, shown: &str) -> Result<ArtifactFile, ApiError> {
        let key = self.key(clean);
        match self.store.get(&key).await {
            Ok(got) => Ok(ArtifactFile {
                size: got.meta.size,
                body: Box::pin(got.into_stream().map_err(std::io::Error::other)),
            }),
            Err(object_store::Error::NotFound { .. }) => {
                if self.has_children(&key).await? {
                    Err(ApiError::invalid(format!(
                        "Artifact path refers to a directory, not a file: '{shown}'"
                    )))
                } else {
                    Err(ApiError::not_found(format!("Artifact '{shown}' does not exist.")))
                }
            }
            Err(err) => Err(store_error(&self.uri, err)),
        }
    }

    pub(super) async fn write(&self, clean: &str, mut body: UploadStream) -> Result<(), ApiError> {
        let key = self.key(clean);
        let failed = |e: std::io::Error| {
            ApiError::new(ErrorCode::BadRequest, format!("Upload of '{clean}' failed: {e}"))
        };
        // Small artifacts (most of them) go up in one PUT.
        let mut first = BytesMut::new();
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(failed)?),
                None => {
                    self.store
                        .put(&key, PutPayload::from(first.freeze()))
                        .await
                        .map_err(|e| store_error(&self.uri, e))?;
                    return Ok(());
                }
            }
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| store_error(&self.uri, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let streamed = async {
            writer.put(first.freeze());
            while let Some(chunk) = body.next().await {
                let chunk: Bytes = chunk.map_err(failed)?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| store_error(&self.uri, e))?;
                writer.put(chunk);
            }
            Ok::<(), ApiError>(())
        }
        .await;
        match streamed {
            Ok(()) => {
                writer.finish().await.map_err(|e| store_error(&self.uri, e))?;
                Ok(())
            }
            Err(err) => {
                // The parts uploaded so far are discarded: no orphaned parts, nothing visible.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "could not abort a failed multipart upload");
                }
                Err(err)
            }
        }
    }

    pub(super) async fn delete(&self, clean: &str) -> Result<(), ApiError> {
        let key = self.key(clean);
        let is_file = !clean.is_empty() && self.exists(&key).await?;
        if is_file {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(store_error(&self.uri, err)),
            }
        }
        // MLflow deletes a directory with everything under it.
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let below: Vec<Key> = self
            .store
            .list(prefix)
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| store_error(&self.uri, e))?;
        if !is_file && below.is_empty() && !clean.is_empty() {
            return Err(ApiError::not_found(format!("Artifact '{clean}' does not exist.")));
        }
        for location in below {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(store_error(&self.uri, err)),
            }
        }
        Ok(())
    }

    pub(super) async fn list(&self, clean: &str, relative_to: &str) -> Result<Vec<FileInfo>, ApiError> {
        let key = self.key(clean);
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let listed = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| store_error(&self.uri, e))?;
        let name_of = |location: &Key| location.filename().map(str::to_owned);
        let mut out: Vec<FileInfo> = listed
            .common_prefixes
            .iter()
            .filter_map(name_of)
            .map(|name| FileInfo {
                path: joined(relative_to, &name),
                is_dir: true,
                file_size: None,
            })
            .chain(listed.objects.iter().filter_map(|meta| {
                name_of(&meta.location).map(|name| FileInfo {
                    path: joined(relative_to, &name),
                    is_dir: false,
                    file_size: Some(i64::try_from(meta.size).unwrap_or(i64::MAX)),
                })
            }))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Whether clients may upload parts straight to the store (S3).
    pub fn supports_multipart(&self) -> bool {
        self.s3.is_some()
    }

    fn s3(&self) -> Result<&object_store::aws::AmazonS3, ApiError> {
        self.s3.as_deref().ok_or_else(super::multipart_unsupported)
    }

    /// Start a multipart upload of `num_parts` parts to `clean` and presign a PUT URL for each.
    pub async fn create_multipart(&self, clean: &str, num_parts: u32) -> Result<MultipartCreated, ApiError> {
        use object_store::multipart::MultipartStore;
        use object_store::signer::{SignedUrlOptions, Signer};
        let s3 = self.s3()?;
        let key = self.key(clean);
        let upload_id = s3
            .create_multipart(&key)
            .await
            .map_err(|e| store_error(&self.uri, e))?;
        let mut parts = Vec::with_capacity(num_parts as usize);
        for part in 1..=num_parts {
            let number = part.to_string();
            let options = SignedUrlOptions::default()
                .with_query([("partNumber", number.as_str()), ("uploadId", upload_id.as_str())]);
            let url = s3
                .signed_url_opts(axum::http::Method::PUT, &key, PART_URL_VALIDITY, &options)
                .await
                .map_err(|e| store_error(&self.uri, e))?;
            parts.push((part, url.to_string()));
        }
        Ok(MultipartCreated { upload_id, parts })
    }

    /// Complete a multipart upload from the parts' ETags (any order; numbered 1..n).
    pub async fn complete_multipart(
        &self,
        clean: &str,
        upload_id: &str,
        mut parts: Vec<(u32, String)>,
    ) -> Result<(), ApiError> {
        use object_store::multipart::{MultipartStore, PartId};
        let s3 = self.s3()?;
        parts.sort_by_key(|p| p.0);
        if parts.iter().enumerate().any(|(i, p)| p.0 as usize != i + 1) {
            return Err(ApiError::invalid(
                "Invalid value for parameter 'parts': part numbers must run from 1 without gaps.",
            ));
        }
        let ids = parts
            .into_iter()
            .map(|(_, etag)| PartId { content_id: etag })
            .collect();
        s3.complete_multipart(&self.key(clean), &upload_id.to_owned(), ids)
            .await
            .map_err(|e| store_error(&self.uri, e))?;
        Ok(())
    }

    /// Abort a multipart upload: the store drops the parts uploaded so far.
    pub async fn abort_multipart(&self, clean: &str, upload_id: &str) -> Result<(), ApiError> {
        use object_store::multipart::MultipartStore;
        self.s3()?
            .abort_multipart(&self.key(clean), &upload_id.to_owned())
            .await
            .map_err(|e| store_error(&self.uri, e))
    }

    async fn has_children(&self, key: &Key) -> Result<bool, ApiError> {
        let mut below = self.store.list(Some(key));
        match below.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(err)) => Err(store_error(&self.uri, err)),
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool, ApiError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(store_error(&self.uri, err)),
        }
    }
}

/// The settings every S3 client of the server shares: our HTTP stack, our retry bounds.
fn s3_builder(
    builder: object_store::aws::AmazonS3Builder,
    bucket: &str,
) -> object_store::aws::AmazonS3Builder {
    builder
        .with_bucket_name(bucket)
        .with_http_connector(HyperConnector)
        .with_retry(retry_config())
}

/// A store failure in MLflow's error shape: the store could not be reached, timed out or refused
/// the server's credentials → 503 (retry later; the message names the store, never a client
/// problem); anything else the store said → 500 with its message, no stack trace.
fn store_error(uri: &str, err: object_store::Error) -> ApiError {
    tracing::warn!(store = uri, error = %err, "artifact store request failed");
    match err {
        object_store::Error::NotFound { path, .. } => {
            ApiError::not_found(format!("Artifact '{path}' does not exist."))
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            ApiError::new(
                ErrorCode::TemporarilyUnavailable,
                format!("The artifact store {uri} refused this server's credentials."),
            )
        }
        other => ApiError::new(
            ErrorCode::TemporarilyUnavailable,
            format!("The artifact store {uri} is unavailable; retry shortly ({other})."),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::stream;

    fn memory_root(prefix: &str) -> (ObjectRoot, Arc<object_store::memory::InMemory>) {
        let mem = Arc::new(object_store::memory::InMemory::new());
        (
            ObjectRoot::with_store(mem.clone(), prefix, "memory://test".into()),
            mem,
        )
    }

    fn body(chunks: Vec<std::io::Result<Bytes>>) -> UploadStream {
        Box::pin(stream::iter(chunks))
    }

    async fn read_all(root: &ObjectRoot, clean: &str) -> Vec<u8> {
        let file = root.read(clean, clean).await.unwrap();
        let bytes: Vec<Bytes> = file.body.try_collect().await.unwrap();
        let all = bytes.concat();
        assert_eq!(all.len() as u64, file.size);
        all
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_round_trip_under_the_prefix() {
        let (root, mem) = memory_root("team/mlflow");
        root.write(
            "1/abc/artifacts/model/MLmodel",
            body(vec![Ok(Bytes::from("flavors: {}"))]),
        )
        .await
        .unwrap();
        // Three parts and a tail, sent in odd-sized chunks.
        let big: Vec<u8> = (0..(PART_SIZE * 3 + 12_345)).map(|i| (i % 251) as u8).collect();
        let chunks = big
            .chunks(1_000_003)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        root.write("1/abc/artifacts/model/weights.bin", body(chunks))
            .await
            .unwrap();
        assert_eq!(
            read_all(&root, "1/abc/artifacts/model/MLmodel").await,
            b"flavors: {}"
        );
        assert_eq!(read_all(&root, "1/abc/artifacts/model/weights.bin").await, big);
        // Keys live under the prefix.
        let keys: Vec<String> = mem
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert!(
            keys.iter().all(|k| k.starts_with("team/mlflow/1/abc/")),
            "{keys:?}"
        );
    }

    #[tokio::test]
    async fn listing_shows_directories_and_sizes_relative_to_the_request() {
        let (root, _) = memory_root("");
        for (path, text) in [("r/a.txt", "a"), ("r/sub/b.txt", "bb"), ("r/sub/deeper/c", "ccc")] {
            root.write(path, body(vec![Ok(Bytes::from(text))])).await.unwrap();
        }
        let listed = root.list("r", "").await.unwrap();
        assert_eq!(
            listed,
            vec![
                FileInfo {
                    path: "a.txt".into(),
                    is_dir: false,
                    file_size: Some(1)
                },
                FileInfo {
                    path: "sub".into(),
                    is_dir: true,
                    file_size: None
                },
            ]
        );
        let nested = root.list("r/sub", "sub").await.unwrap();
        assert_eq!(nested[0].path, "sub/b.txt");
        assert_eq!(nested[1].path, "sub/deeper");
        assert!(root.list("missing", "").await.unwrap().is_empty());
        assert!(
            root.list("r/a.txt", "").await.unwrap().is_empty(),
            "a file lists as empty"
        );
    }

    #[tokio::test]
    async fn reads_and_deletes_say_what_is_wrong() {
        let (root, _) = memory_root("p");
        root.write("d/x", body(vec![Ok(Bytes::from("x"))])).await.unwrap();
        root.write("d/y/z", body(vec![Ok(Bytes::from("z"))]))
            .await
            .unwrap();
        let dir = root.read("d", "d").await.err().unwrap();
        assert_eq!(dir.code(), ErrorCode::InvalidParameterValue);
        let missing = root.read("nope", "nope").await.err().unwrap();
        assert_eq!(missing.code(), ErrorCode::ResourceDoesNotExist);
        // A directory goes with everything under it.
        root.delete("d").await.unwrap();
        assert!(root.list("d", "").await.unwrap().is_empty());
        let gone = root.delete("d").await.err().unwrap();
        assert_eq!(gone.code(), ErrorCode::ResourceDoesNotExist);
    }

    #[tokio::test]
    async fn a_store_that_is_down_is_a_quick_503() {
        // Nothing listens on the port: every request fails to connect, retries give up.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = s3_builder(object_store::aws::AmazonS3Builder::new(), "down")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .build()
            .unwrap();
        let root = ObjectRoot::with_store(Arc::new(store), "p", "s3://down/p".into());
        let started = std::time::Instant::now();
        let read = root.read("a/b", "a/b").await.err().unwrap();
        let write = root
            .write("a/b", body(vec![Ok(Bytes::from("x"))]))
            .await
            .err()
            .unwrap();
        let list = root.list("a", "").await.err().unwrap();
        for err in [read, write, list] {
            assert_eq!(err.code(), ErrorCode::TemporarilyUnavailable, "{err:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_upload_cut_short_leaves_nothing_under_its_name() {
        let (root, mem) = memory_root("");
        // Small: the stream fails before the end.
        let cut = body(vec![
            Ok(Bytes::from("partial")),
            Err(std::io::Error::other("client went away")),
        ]);
        let err = root.write("f/small.bin", cut).await.err().unwrap();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        // Large: two parts went up before the failure; the multipart upload is aborted.
        let mut chunks: Vec<std::io::Result<Bytes>> =
            (0..3).map(|_| Ok(Bytes::from(vec![7u8; PART_SIZE]))).collect();
        chunks.push(Err(std::io::Error::other("reset")));
        assert!(root.write("f/large.bin", body(chunks)).await.is_err());
        let keys: Vec<_> = mem.list(None).try_collect().await.unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}
