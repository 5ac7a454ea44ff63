//! Proxied artifact storage (`--artifacts-destination`: a local directory, S3, GCS or Azure), with
//! the path checks that MLflow's CVE history asks for: every path is percent-decoded until it stops
//! changing, then refused if it holds `..`, is absolute, or contains `\`, `;`, `#`, `?` or NUL; on
//! a local directory the real location (symlinks resolved) must also stay under the root. Object
//! keys are the cleaned path under the destination's prefix, so they cannot leave it either.

mod destination;
mod http_client;
mod local;
mod object;

use std::io;
use std::path::{Component, Path};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

pub use destination::Destination;
pub use local::{LocalRoot, io_stream};
pub use object::{MAX_PARTS, MultipartCreated, ObjectRoot};

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

/// Longest file or directory name, and longest artifact path.
pub const MAX_NAME_BYTES: usize = 255;
pub const MAX_PATH_BYTES: usize = 4096;

/// Check a client-supplied relative artifact path and return its clean form (`a/b/c`, or empty for
/// the root).
pub fn clean_relative_path(raw: &str) -> Result<String, ApiError> {
    let bad =
        |why: &str| ApiError::invalid(format!("Invalid artifact path '{}': {why}", raw.escape_default()));
    let decoded = fully_decode(raw).ok_or_else(|| bad("it could not be decoded"))?;
    if decoded.contains(['\\', ';', '#', '?', '\0']) {
        return Err(bad("it may not contain '\\', ';', '#', '?' or NUL"));
    }
    if decoded.starts_with('/') || Path::new(&decoded).has_root() {
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
    // On the first component, not the raw text, so that `./~` is refused like `~` and the clean form
    // of an accepted path is accepted again.
    if parts.first().is_some_and(|p| p.starts_with('~')) {
        return Err(bad("absolute paths are not allowed"));
    }
    if parts
        .first()
        .is_some_and(|p| p.len() >= 2 && p.as_bytes()[1] == b':')
    {
        return Err(bad("drive letters are not allowed"));
    }
    // What a file system can name (Linux's NAME_MAX and PATH_MAX); past it every file operation
    // fails, so it is the client's mistake, not the server's.
    if parts.iter().any(|p| p.len() > MAX_NAME_BYTES) {
        return Err(ApiError::invalid(format!(
            "Invalid artifact path: a file or directory name is longer than {MAX_NAME_BYTES} bytes."
        )));
    }
    let clean = parts.join("/");
    if clean.len() > MAX_PATH_BYTES {
        return Err(ApiError::invalid(format!(
            "Invalid artifact path: it is longer than {MAX_PATH_BYTES} bytes."
        )));
    }
    Ok(clean)
}

/// One entry of a directory listing.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<i64>,
}

/// Where the proxy keeps artifacts (`--artifacts-destination`): a local directory or an object
/// store. Every handler goes through these methods, so the path rules above apply to both.
#[derive(Debug)]
pub enum ArtifactRoot {
    Local(LocalRoot),
    Object(ObjectRoot),
}

/// An artifact being read: its size and its bytes, streamed.
pub struct ArtifactFile {
    pub size: u64,
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

/// A request body being uploaded.
pub type UploadStream = BoxStream<'static, io::Result<Bytes>>;

impl ArtifactRoot {
    /// A local directory (created if needed).
    pub fn open(dir: &Path) -> io::Result<Self> {
        LocalRoot::open(dir).map(Self::Local)
    }

    /// The destination named by `--artifacts-destination`; object stores take their credentials
    /// from the environment (docs/architecture.md, "Artifacts").
    pub fn connect(destination: &Destination) -> Result<Self, String> {
        match destination {
            Destination::Local(dir) => {
                Self::open(dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))
            }
            other => ObjectRoot::connect(other).map(Self::Object),
        }
    }

    /// What the root is, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(l) => l.root().display().to_string(),
            Self::Object(o) => o.describe().to_owned(),
        }
    }

    /// Open the file at `clean` for reading; `shown` is the path named in errors.
    pub async fn read(&self, clean: &str, shown: &str) -> Result<ArtifactFile, ApiError> {
        match self {
            Self::Local(l) => l.read(clean, shown).await,
            Self::Object(o) => o.read(clean, shown).await,
        }
    }

    /// Store `body` at `clean`; nothing is visible under that name unless the whole body arrived.
    pub async fn write(&self, clean: &str, body: UploadStream) -> Result<(), ApiError> {
        match self {
            Self::Local(l) => l.write(clean, body).await,
            Self::Object(o) => o.write(clean, body).await,
        }
    }

    /// Delete the file, or everything under the directory, at `clean`.
    pub async fn delete(&self, clean: &str) -> Result<(), ApiError> {
        match self {
            Self::Local(l) => l.delete(clean).await,
            Self::Object(o) => o.delete(clean).await,
        }
    }

    /// List the directory at `clean` (sorted by name), paths relative to `relative_to`; a missing
    /// directory, or a file, lists as empty.
    pub async fn list(&self, clean: &str, relative_to: &str) -> Result<Vec<FileInfo>, ApiError> {
        match self {
            Self::Local(l) => l.list(clean, relative_to).await,
            Self::Object(o) => o.list(clean, relative_to).await,
        }
    }
}

/// What MLflow's client looks for to fall back from a proxied multipart upload to one PUT: the
/// message must start with exactly this.
pub const MULTIPART_UNSUPPORTED: &str =
    "Multipart upload is not supported for the current artifact repository";

/// The answer to a multipart request on a destination without it (a local directory, GCS,
/// Azure): the client then streams one PUT, which the proxy passes on without buffering.
pub fn multipart_unsupported() -> ApiError {
    ApiError::new(
        crate::error::ErrorCode::NotImplemented,
        format!("{MULTIPART_UNSUPPORTED}; upload the file with a single PUT."),
    )
}

impl ArtifactRoot {
    /// The object store behind the proxy, when it takes multipart uploads from clients.
    pub fn multipart(&self) -> Result<&ObjectRoot, ApiError> {
        match self {
            Self::Object(o) if o.supports_multipart() => Ok(o),
            _ => Err(multipart_unsupported()),
        }
    }
}

/// `relative_to/name`, or `name` at the top.
fn joined(relative_to: &str, name: &str) -> String {
    if relative_to.is_empty() {
        name.to_owned()
    } else {
        format!("{relative_to}/{name}")
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

const MPU_PREFIX: &str = "/mlflow-artifacts/mpu/";

/// The directory of a multipart-upload request: what follows `/mlflow-artifacts/mpu/<operation>/`,
/// checked and cleaned (basic auth authorises the same path).
pub fn mpu_path_from_uri(uri: &axum::http::Uri) -> Result<String, ApiError> {
    let raw = uri.path();
    let rest = raw
        .find(MPU_PREFIX)
        .map(|i| &raw[i + MPU_PREFIX.len()..])
        .unwrap_or("");
    let path = rest.split_once('/').map(|(_, path)| path).unwrap_or("");
    let clean = clean_relative_path(path)?;
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
            // Found by the property tests: the `~` check ran before `./` was dropped, so `./~`
            // was accepted as `~`, which is refused when cleaned again.
            "./~",
            "%2e/~/x",
            ".//./~",
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
    fn names_past_the_file_system_limits() {
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(clean_relative_path(&format!("0/{name}")).is_ok());
        assert!(clean_relative_path(&format!("0/{name}n")).is_err());
        let deep = vec!["d"; MAX_PATH_BYTES / 2].join("/");
        assert_eq!(clean_relative_path(&deep).unwrap().len(), MAX_PATH_BYTES - 1);
        assert!(clean_relative_path(&format!("{deep}/x")).is_err());
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
        let root = LocalRoot::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(root.resolve("link/secret").is_err());
        assert!(root.resolve("link").is_err());
        assert!(root.resolve("fine/new/file").is_ok());
    }
}

#[cfg(test)]
mod proptests {
    //! Properties of the artifact path checks: whatever a client sends (percent-encoded any number
    //! of times, backslashes, NUL, absolute paths, drive letters, unicode), an accepted path is
    //! relative, has no `.`/`..`/empty component, is already fully decoded, cleans to itself, and
    //! resolves under the root; every spelling of `..` is refused.

    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    /// Percent-encodes every byte of `text` (`..` becomes `%2E%2E`).
    fn encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    /// Encodes `text` `times` times over; later rounds only need to encode the `%`.
    fn encode_times(text: &str, times: usize, lower: bool) -> String {
        let mut out = if times == 0 {
            text.to_owned()
        } else {
            encode_all(text)
        };
        for _ in 1..times {
            out = out.replace('%', "%25");
        }
        if lower { out.to_lowercase() } else { out }
    }

    /// The pieces that path attacks are made of, so they meet often.
    fn path_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("//".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("./".to_owned()),
            Just("../".to_owned()),
            Just("\\".to_owned()),
            Just("\0".to_owned()),
            Just("~".to_owned()),
            Just("./~".to_owned()),
            Just("C:".to_owned()),
            Just("./C:".to_owned()),
            Just(";".to_owned()),
            Just("#".to_owned()),
            Just("?".to_owned()),
            Just("%".to_owned()),
            Just("%zz".to_owned()),
            Just("%ff".to_owned()),
            Just("%c3%a9".to_owned()),
            Just("é".to_owned()),
            Just("日本".to_owned()),
            Just("a".to_owned()),
            Just("model".to_owned()),
            Just("MLmodel".to_owned()),
            (
                prop::sample::select(vec!["..", ".", "/", "\\", "\0", "~", "%", "C:"]),
                0usize..10,
                any::<bool>()
            )
                .prop_map(|(text, times, lower)| encode_times(text, times, lower)),
            "[a-zA-Z0-9._-]{1,6}",
            ".{0,4}",
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), path_soup()]
    }

    /// Every promise about an accepted, cleaned path.
    fn check_clean(raw: &str, clean: &str, root: &LocalRoot) -> Result<(), TestCaseError> {
        let path = Path::new(clean);
        prop_assert!(path.is_relative() && !path.has_root(), "{raw:?} -> {clean:?}");
        prop_assert!(
            !clean.contains(['\\', ';', '#', '?', '\0']),
            "{raw:?} -> {clean:?}"
        );
        if !clean.is_empty() {
            for part in clean.split('/') {
                prop_assert!(!matches!(part, "" | "." | ".."), "{raw:?} -> {clean:?}");
            }
        }
        prop_assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "{raw:?} -> {clean:?}"
        );
        let decoded = fully_decode(clean);
        prop_assert_eq!(decoded.as_deref(), Some(clean), "not fully decoded");
        let again = clean_relative_path(clean);
        prop_assert_eq!(
            again.as_deref().ok(),
            Some(clean),
            "{:?} -> {:?} -> {:?}",
            raw,
            clean,
            again
        );
        let resolved = root.resolve(clean);
        prop_assert!(resolved.is_ok(), "{raw:?} -> {clean:?} does not resolve");
        if let Ok(resolved) = resolved {
            prop_assert!(resolved.starts_with(root.root()), "{resolved:?}");
            prop_assert_eq!(
                resolved.components().count(),
                root.root().components().count() + path.components().count()
            );
        }
        Ok(())
    }

    fn temp_root() -> (tempfile::TempDir, LocalRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = LocalRoot::open(dir.path()).unwrap();
        (dir, root)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn fully_decoded_text_is_stable(raw in any_path()) {
            if let Some(decoded) = fully_decode(&raw) {
                let again = percent_decode_str(&decoded).decode_utf8().map(|c| c.into_owned());
                prop_assert_eq!(again.ok(), Some(decoded));
            }
        }

        #[test]
        fn accepted_paths_are_clean_relative_and_under_the_root(raw in any_path()) {
            let (_dir, root) = temp_root();
            if let Ok(clean) = clean_relative_path(&raw) {
                check_clean(&raw, &clean, &root)?;
            }
        }

        #[test]
        fn every_encoding_of_dot_dot_is_refused(
            before in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
            after in "[a-z0-9]{1,8}",
            times in 0usize..12,
            lower in any::<bool>(),
            separator in prop::sample::select(vec!["/", "%2F", "%2f", "%252F"]),
            leading in any::<bool>(),
        ) {
            let dots = encode_times("..", times, lower);
            let raw = if leading {
                format!("{dots}{separator}{after}")
            } else {
                format!("{before}{separator}{dots}{separator}{after}")
            };
            prop_assert!(clean_relative_path(&raw).is_err(), "{raw:?} was accepted");
        }

        #[test]
        fn absolute_paths_are_refused(
            rest in "[a-z0-9/]{0,12}",
            times in 0usize..4,
            start in prop::sample::select(vec!["/", "\\", "~", "C:/", "c:\\", "D:"]),
        ) {
            let raw = encode_times(&format!("{start}{rest}"), times, false);
            prop_assert!(clean_relative_path(&raw).is_err(), "{raw:?} was accepted");
        }

        #[test]
        fn encoded_plain_paths_decode_to_their_segments(
            segments in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._ é-]{0,8}", 1..5),
            times in 0usize..5,
            dot_prefix in any::<bool>(),
        ) {
            let (_dir, root) = temp_root();
            let plain = segments.join("/");
            let raw = format!("{}{}", if dot_prefix { "./" } else { "" }, encode_times(&plain, times, false));
            let clean = clean_relative_path(&raw);
            prop_assert_eq!(clean.as_deref().ok(), Some(plain.as_str()), "{:?}", raw);
            check_clean(&raw, &plain, &root)?;
        }

        #[test]
        fn paths_through_a_link_out_of_the_root_never_resolve(raw in any_path()) {
            let (dir, root) = temp_root();
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), dir.path().join("a")).unwrap();
            if let Ok(clean) = clean_relative_path(&raw) {
                let through_link = clean == "a" || clean.starts_with("a/");
                prop_assert_eq!(root.resolve(&clean).is_err(), through_link, "{:?}", clean);
            }
        }
    }
}
