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

use super::http_client::{HyperConnector, Timeouts};
use super::{ArtifactFile, Destination, FileInfo, UploadStream, joined};
use crate::error::{ApiError, ErrorCode};

/// Size of each part of a multipart upload (S3's minimum is 5 MiB), and the largest upload sent
/// as a single PUT.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once: with [`PART_SIZE`], at most ~24 MiB of an upload is in memory
/// (the part being filled and two uploading), which keeps the server under 64 MB during a transfer.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Retries of a failed request to the store: at most three, and none once `timeouts.retry` has
/// passed since the first try, so a store that refuses connections answers within a second and
/// one that stalls within one `response` or `body_idle` timeout ([`Timeouts`]).
fn retry_config(timeouts: Timeouts) -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: timeouts.retry,
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
        let timeouts = Timeouts::SERVER;
        let mut s3: Option<Arc<object_store::aws::AmazonS3>> = None;
        let store: Arc<dyn ObjectStore> = match destination {
            Destination::S3 { bucket, .. } => {
                let mut b = s3_builder(object_store::aws::AmazonS3Builder::from_env(), bucket, timeouts);
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
                    .with_http_connector(HyperConnector::new(timeouts))
                    .with_retry(retry_config(timeouts))
                    .build()
                    .map_err(|e| format!("GCS destination {destination}: {e}"))?,
            ),
            Destination::Azure {
                account, container, ..
            } => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_account(account)
                    .with_container_name(container)
                    .with_http_connector(HyperConnector::new(timeouts))
                    .with_retry(retry_config(timeouts))
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
            Ok(got) => {
                let size = got.meta.size;
                let mut body = got.into_stream();
                // Wait for the first bytes before answering: a store that sent its headers and
                // then stalls is still a 503 here, where later it could only cut the response.
                let first = match body.next().await {
                    None => None,
                    Some(Ok(chunk)) => Some(chunk),
                    Some(Err(err)) => return Err(store_error(&self.uri, err)),
                };
                let body = futures_util::stream::iter(first.map(Ok)).chain(body);
                Ok(ArtifactFile {
                    size,
                    body: Box::pin(body.map_err(std::io::Error::other)),
                })
            }
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
    timeouts: Timeouts,
) -> object_store::aws::AmazonS3Builder {
    builder
        .with_bucket_name(bucket)
        .with_http_connector(HyperConnector::new(timeouts))
        .with_retry(retry_config(timeouts))
}

/// A store failure in MLflow's error shape, never a 500 or a stack trace: a missing object → 404
/// `RESOURCE_DOES_NOT_EXIST`; the store stalled past a [`Timeouts`] bound → 504
/// `DEADLINE_EXCEEDED`; anything else (the store could not be reached, refused the server's
/// credentials or answered an error) → 503 `TEMPORARILY_UNAVAILABLE` naming the store and what it
/// said. MLflow's client retries 503 and 504 alike.
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
        other if timed_out(&other) => ApiError::new(
            ErrorCode::DeadlineExceeded,
            format!("The artifact store {uri} did not answer in time; retry shortly ({other})."),
        ),
        other => ApiError::new(
            ErrorCode::TemporarilyUnavailable,
            format!("The artifact store {uri} is unavailable; retry shortly ({other})."),
        ),
    }
}

/// Whether `err` comes from one of our [`Timeouts`] (the HTTP client's timeout error is somewhere in
/// its chain of sources).
fn timed_out(err: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = next {
        if cause
            .downcast_ref::<object_store::client::HttpError>()
            .is_some_and(|http| http.kind() == object_store::client::HttpErrorKind::Timeout)
        {
            return true;
        }
        next = cause.source();
    }
    false
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

    /// An S3 store at `endpoint` with `timeouts`.
    fn s3_root(endpoint: &str, timeouts: Timeouts) -> ObjectRoot {
        let store = s3_builder(object_store::aws::AmazonS3Builder::new(), "b", timeouts)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .build()
            .unwrap();
        ObjectRoot::with_store(Arc::new(store), "p", "s3://b/p".into())
    }

    /// Short timeouts, so that the stalled-store tests take a second, not the server's 30 s; the
    /// retry budget is shorter than one timeout, as in [`Timeouts::SERVER`].
    const QUICK: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
        body_idle: Duration::from_secs(1),
        retry: Duration::from_millis(250),
    };

    /// Slack on a timeout for scheduling on a busy machine: less than one more try would take.
    const SLACK: Duration = Duration::from_millis(800);

    /// A fake store on 127.0.0.1 that accepts every connection, reads the request head, sends
    /// `reply` (nothing when empty) and then holds the connection open without another byte.
    async fn stalled_store(reply: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    if !reply.is_empty() {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        socket.write_all(reply).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(socket);
                });
            }
        });
        format!("http://{addr}")
    }

    /// Run `op`, returning its result and how long it took.
    async fn timed<T>(op: impl std::future::Future<Output = T>) -> (T, Duration) {
        let started = std::time::Instant::now();
        let out = op.await;
        (out, started.elapsed())
    }

    /// `err` is MLflow's 504 `DEADLINE_EXCEEDED`, and came after `limit` but before one more try.
    fn assert_deadline(what: &str, err: &ApiError, took: Duration, limit: Duration) {
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{what}: {err:?}");
        assert_eq!(err.code().status(), axum::http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.code().as_str(), "DEADLINE_EXCEEDED");
        assert!(
            took >= limit && took < limit + SLACK,
            "{what}: answered after {took:?}, the bound is {limit:?}"
        );
    }

    #[tokio::test]
    async fn a_store_that_is_down_is_a_quick_503() {
        // Nothing listens on the port: every request fails to connect, and the server's own
        // retries (three, 0.1 + 0.2 + 0.4 s of backoff at most) give up within a second.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = s3_root(&format!("http://127.0.0.1:{port}"), Timeouts::SERVER);
        let (read, read_took) = timed(root.read("a/b", "a/b")).await;
        let (write, write_took) = timed(root.write("a/b", body(vec![Ok(Bytes::from("x"))]))).await;
        let (list, list_took) = timed(root.list("a", "")).await;
        for (what, err, took) in [
            ("read", read.err().unwrap(), read_took),
            ("write", write.err().unwrap(), write_took),
            ("list", list.err().unwrap(), list_took),
        ] {
            assert_eq!(err.code(), ErrorCode::TemporarilyUnavailable, "{what}: {err:?}");
            assert_eq!(err.code().status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
            assert!(took < Duration::from_millis(1500), "{what}: {took:?}");
        }
    }

    #[tokio::test]
    async fn a_store_that_accepts_and_never_answers_is_a_504_after_the_response_timeout() {
        let root = s3_root(&stalled_store(b"").await, QUICK);
        // All at once: each waits out its own response timeout, tried once.
        let (read, write, list, delete) = tokio::join!(
            timed(root.read("a/b", "a/b")),
            timed(root.write("a/b", body(vec![Ok(Bytes::from("x"))]))),
            timed(root.list("a", "")),
            timed(root.delete("a/b")),
        );
        assert_deadline("read", &read.0.err().unwrap(), read.1, QUICK.response);
        assert_deadline("write", &write.0.err().unwrap(), write.1, QUICK.response);
        assert_deadline("list", &list.0.err().unwrap(), list.1, QUICK.response);
        assert_deadline("delete", &delete.0.err().unwrap(), delete.1, QUICK.response);
    }

    #[tokio::test]
    async fn a_store_that_stalls_its_body_is_a_504_or_a_cut_download_after_the_idle_timeout() {
        const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Length: 64\r\nETag: \"e\"\r\n\
                            Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        // Headers, then nothing: still before the download's own headers, so a 504.
        let silent = s3_root(&stalled_store(HEAD.as_bytes()).await, QUICK);
        let (read, list) = tokio::join!(timed(silent.read("a/b", "a/b")), timed(silent.list("a", "")));
        assert_deadline("read", &read.0.err().unwrap(), read.1, QUICK.body_idle);
        assert_deadline("list", &list.0.err().unwrap(), list.1, QUICK.body_idle);
        // Headers and the first bytes, then nothing: the download has started, so it is cut
        // (the client sees a short body) once the store has been idle that long, not left hanging.
        let reply: &'static [u8] = format!("{HEAD}0123456789").leak().as_bytes();
        let partial = s3_root(&stalled_store(reply).await, QUICK);
        let (file, took) = timed(partial.read("a/b", "a/b")).await;
        assert!(took < SLACK, "{took:?}");
        let mut file = file.unwrap();
        assert_eq!(file.size, 64);
        assert_eq!(
            file.body.next().await.unwrap().unwrap(),
            Bytes::from("0123456789")
        );
        let (rest, took) = timed(file.body.next()).await;
        let err = rest.unwrap().err().unwrap();
        assert!(
            took >= QUICK.body_idle && took < QUICK.body_idle + SLACK,
            "cut after {took:?}: {err}"
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
