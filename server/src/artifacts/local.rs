//! Artifacts in a local directory (or a volume mounted there): written to a temporary name,
//! fsynced and renamed into place, so a killed upload leaves nothing under its final name and an
//! acknowledged one survives a power loss (docs/architecture.md, "Durability").

use std::io;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, StreamReader};

use super::{ArtifactFile, FileInfo, UploadStream, joined};
use crate::error::{ApiError, ErrorCode};

/// Temporary files of uploads in progress start with this; listings never show them.
const UPLOAD_PREFIX: &str = ".mlkube-upload-";

/// The artifact directory served by the proxy.
#[derive(Debug, Clone)]
pub struct LocalRoot {
    root: PathBuf,
}

impl LocalRoot {
    /// Create the directory if needed and remember its canonical path.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            root: dir.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve a checked relative path under the root, refusing symlink escapes: the deepest
    /// existing ancestor, with links resolved, must lie under the root.
    pub fn resolve(&self, clean: &str) -> Result<PathBuf, ApiError> {
        let path = if clean.is_empty() {
            self.root.clone()
        } else {
            self.root.join(clean)
        };
        let mut probe = path.as_path();
        loop {
            match probe.canonicalize() {
                Ok(real) => {
                    if !real.starts_with(&self.root) {
                        return Err(ApiError::invalid(format!(
                            "Invalid artifact path '{clean}': it resolves outside the artifact root."
                        )));
                    }
                    break;
                }
                Err(_) => match probe.parent() {
                    Some(parent) if parent.starts_with(&self.root) => probe = parent,
                    _ => break,
                },
            }
        }
        Ok(path)
    }

    pub(super) async fn read(&self, clean: &str, shown: &str) -> Result<ArtifactFile, ApiError> {
        let path = self.resolve(clean)?;
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) => meta,
            Err(_) => return Err(ApiError::not_found(format!("Artifact '{shown}' does not exist."))),
        };
        if meta.is_dir() {
            return Err(ApiError::invalid(format!(
                "Artifact path refers to a directory, not a file: '{shown}'"
            )));
        }
        if meta.file_type().is_symlink() {
            return Err(ApiError::invalid(format!(
                "Artifact '{shown}' is a symbolic link and is not served."
            )));
        }
        let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
        Ok(ArtifactFile {
            size: meta.len(),
            body: Box::pin(ReaderStream::new(file)),
        })
    }

    pub(super) async fn write(&self, clean: &str, body: UploadStream) -> Result<(), ApiError> {
        let path = self.resolve(clean)?;
        if tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| m.is_dir() || m.file_type().is_symlink())
        {
            return Err(ApiError::invalid(format!(
                "Artifact '{clean}' exists and is not a regular file."
            )));
        }
        let parent = path
            .parent()
            .ok_or_else(|| ApiError::invalid("An artifact path is required."))?;
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ApiError::invalid(format!("Cannot create the directory for '{clean}': {e}")))?;
        // Re-check after creating directories, then write to a temporary file and rename it into
        // place, so a failed upload never leaves a partial artifact.
        let path = self.resolve(clean)?;
        let tmp = parent.join(format!("{UPLOAD_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(ApiError::internal)?;
            let mut reader = StreamReader::new(body);
            tokio::io::copy(&mut reader, &mut file).await.map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("Upload of '{clean}' failed: {e}"))
            })?;
            // On disk before it gets its name, and the name on disk before the upload is
            // answered: an acknowledged artifact survives a power loss.
            file.flush().await.map_err(ApiError::internal)?;
            file.sync_all().await.map_err(ApiError::internal)?;
            tokio::fs::rename(&tmp, &path).await.map_err(ApiError::internal)?;
            sync_dir(parent).await.map_err(ApiError::internal)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    pub(super) async fn delete(&self, clean: &str) -> Result<(), ApiError> {
        let path = self.resolve(clean)?;
        let meta = tokio::fs::symlink_metadata(&path)
            .await
            .map_err(|_| ApiError::not_found(format!("Artifact '{clean}' does not exist.")))?;
        let removed = if meta.is_dir() {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        removed.map_err(|err| match err.kind() {
            // Deleted by a concurrent request since we looked.
            io::ErrorKind::NotFound => ApiError::not_found(format!("Artifact '{clean}' does not exist.")),
            _ => ApiError::internal(err),
        })
    }

    pub(super) async fn list(&self, clean: &str, relative_to: &str) -> Result<Vec<FileInfo>, ApiError> {
        let dir = self.resolve(clean)?;
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) if matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(out);
            }
            Err(err) => return Err(ApiError::internal(err)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(ApiError::internal)? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(UPLOAD_PREFIX) {
                continue;
            }
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                // Deleted by a concurrent request while we list.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(ApiError::internal(err)),
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            out.push(FileInfo {
                path: joined(relative_to, &name),
                is_dir: meta.is_dir(),
                file_size: (!meta.is_dir()).then_some(meta.len() as i64),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// fsync a directory, so the names created in it are on disk.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// Map a stream of request-body chunks to the I/O errors the writers expect.
pub fn io_stream<S, E>(stream: S) -> super::UploadStream
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    Box::pin(stream.map_err(io::Error::other))
}
