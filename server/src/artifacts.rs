//! Proxied artifact storage on a local directory (`--artifacts-destination`), with the path checks
//! that MLflow's CVE history asks for: every path is percent-decoded until it stops changing, then
//! refused if it holds `..`, is absolute, or contains `\`, `;`, `#`, `?` or NUL; finally the real
//! location (symlinks resolved) must stay under the root.

use std::io;
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// Decode `%XX` escapes repeatedly (double/triple encoding) until the text is stable.
/// `None` when it never settles or is not UTF-8.
pub fn fully_decode(input: &str) -> Option<String> {
    let mut current = input.to_owned();
    for _ in 0..8 {
        let next = percent_decode_str(&current).decode_utf8().ok()?.into_owned();
        if next == current {
            return Some(current);
        }
        current = next;
    }
    None
}

/// Check a client-supplied relative artifact path and return its clean form (`a/b/c`, or empty for
/// the root).
pub fn clean_relative_path(raw: &str) -> Result<String, ApiError> {
    let bad =
        |why: &str| ApiError::invalid(format!("Invalid artifact path '{}': {why}", raw.escape_default()));
    let decoded = fully_decode(raw).ok_or_else(|| bad("it could not be decoded"))?;
    if decoded.contains(['\\', ';', '#', '?', '\0']) {
        return Err(bad("it may not contain '\\', ';', '#', '?' or NUL"));
    }
    if decoded.starts_with('/') || decoded.starts_with('~') || Path::new(&decoded).has_root() {
        return Err(bad("absolute paths are not allowed"));
    }
    let mut parts = Vec::new();
    for component in Path::new(&decoded).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(|| bad("it is not UTF-8"))?),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("absolute paths are not allowed")),
        }
    }
    if parts
        .first()
        .is_some_and(|p| p.len() >= 2 && p.as_bytes()[1] == b':')
    {
        return Err(bad("drive letters are not allowed"));
    }
    Ok(parts.join("/"))
}

/// One entry of a directory listing.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<i64>,
}

/// The artifact root served by the proxy.
#[derive(Debug, Clone)]
pub struct ArtifactRoot {
    root: PathBuf,
}

impl ArtifactRoot {
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

    /// List a directory (sorted by name); a missing directory lists as empty.
    pub async fn list(&self, clean: &str, relative_to: &str) -> Result<Vec<FileInfo>, ApiError> {
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
            if name.starts_with(".mlkube-upload-") {
                continue;
            }
            let meta = entry.metadata().await.map_err(ApiError::internal)?;
            if meta.file_type().is_symlink() {
                continue;
            }
            let path = if relative_to.is_empty() {
                name
            } else {
                format!("{relative_to}/{name}")
            };
            out.push(FileInfo {
                path,
                is_dir: meta.is_dir(),
                file_size: (!meta.is_dir()).then_some(meta.len() as i64),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// The proxied part of an `mlflow-artifacts:` URI (`mlflow-artifacts:/0/abc/artifacts` →
/// `0/abc/artifacts`; a `//host:port` authority is skipped). `None` for other schemes.
pub fn proxied_path(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    Some(rest.trim_start_matches('/'))
}

const PROXY_PREFIX: &str = "/mlflow-artifacts/artifacts/";

/// The still-encoded artifact path after the proxy prefix, checked and cleaned. Basic auth reads
/// the experiment from this same function, so the path authorised is the path served.
pub fn path_from_uri(uri: &axum::http::Uri) -> Result<String, ApiError> {
    let raw = uri.path();
    let rest = raw
        .find(PROXY_PREFIX)
        .map(|i| &raw[i + PROXY_PREFIX.len()..])
        .unwrap_or("");
    let clean = clean_relative_path(rest)?;
    if clean.is_empty() {
        return Err(ApiError::invalid("An artifact path is required."));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_repeatedly() {
        assert_eq!(fully_decode("%252e%252e").as_deref(), Some(".."));
        assert_eq!(fully_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(fully_decode("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn rejects_the_cve_shapes() {
        for bad in [
            "..",
            "../etc/passwd",
            "a/../../b",
            "%2e%2e/x",
            "%252e%252e/x",
            "%25252e%25252e/x",
            "/etc/passwd",
            "%2Fetc%2Fpasswd",
            "a\\..\\b",
            "a;b/../c",
            "a#/../b",
            "a?x=1",
            "a%00b",
            "C:/windows",
            "~/x",
        ] {
            assert!(clean_relative_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            clean_relative_path("0/abc/artifacts/model/MLmodel").unwrap(),
            "0/abc/artifacts/model/MLmodel"
        );
        assert_eq!(clean_relative_path("./a//b/").unwrap(), "a/b");
        assert_eq!(clean_relative_path("").unwrap(), "");
    }

    #[test]
    fn proxied_uris() {
        assert_eq!(
            proxied_path("mlflow-artifacts:/0/r/artifacts"),
            Some("0/r/artifacts")
        );
        assert_eq!(
            proxied_path("mlflow-artifacts://host:5000/0/r/artifacts"),
            Some("0/r/artifacts")
        );
        assert_eq!(proxied_path("s3://b/0"), None);
    }

    #[test]
    fn symlink_escape_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = ArtifactRoot::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(root.resolve("link/secret").is_err());
        assert!(root.resolve("link").is_err());
        assert!(root.resolve("fine/new/file").is_ok());
    }
}
