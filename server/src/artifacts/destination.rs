//! `--artifacts-destination`: a local directory or an object-store URI, as MLflow names them.

use std::fmt;
use std::path::PathBuf;

/// Where the artifact proxy keeps artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory (or a volume mounted there); `file://` URIs too.
    Local(PathBuf),
    /// `s3://bucket[/prefix]`: AWS S3 or an S3-compatible store (`MLFLOW_S3_ENDPOINT_URL`).
    S3 { bucket: String, prefix: String },
    /// `gs://bucket[/prefix]`: Google Cloud Storage.
    Gcs { bucket: String, prefix: String },
    /// `abfss://container@account.dfs.core.windows.net[/prefix]` (ADLS Gen2) or
    /// `wasbs://container@account.blob.core.windows.net[/prefix]` (Blob Storage).
    Azure {
        account: String,
        container: String,
        prefix: String,
        /// Named through the `dfs` endpoint (`abfss://`) rather than `blob` (`wasbs://`).
        dfs: bool,
    },
}

impl Destination {
    /// Parse a destination; the message says what was wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("--artifacts-destination is empty".to_owned());
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, p.trim_matches('/').to_owned()),
            None => (rest, String::new()),
        };
        if prefix.split('/').any(|p| p == "..") {
            return Err(format!("{text}: the prefix may not contain '..'"));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(Self::Local(PathBuf::from(format!(
                "/{}",
                rest.trim_start_matches('/')
            )))),
            "s3" => Ok(Self::S3 {
                bucket: bucket(text, authority, "S3")?,
                prefix,
            }),
            "gs" => Ok(Self::Gcs {
                bucket: bucket(text, authority, "GCS")?,
                prefix,
            }),
            s @ ("abfss" | "wasbs") => {
                let dfs = s == "abfss";
                let service = if dfs { "dfs" } else { "blob" };
                let (container, host) = authority.split_once('@').ok_or_else(|| {
                    format!(
                        "{text}: expected {s}://<container>@<account>.{service}.core.windows.net[/prefix]"
                    )
                })?;
                let account = host
                    .strip_suffix(&format!(".{service}.core.windows.net"))
                    .filter(|a| valid_azure_account(a))
                    .ok_or_else(|| {
                        format!("{text}: the host must be <account>.{service}.core.windows.net (3-24 lowercase letters and digits)")
                    })?;
                if container.len() < 3
                    || container.len() > 63
                    || !container
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(format!(
                        "{text}: the container name must be 3-63 lowercase letters, digits and '-'"
                    ));
                }
                Ok(Self::Azure {
                    account: account.to_owned(),
                    container: container.to_owned(),
                    prefix,
                    dfs,
                })
            }
            other => Err(format!(
                "{text}: unsupported scheme '{other}://' (use a directory, s3://, gs://, abfss:// or wasbs://)"
            )),
        }
    }

    /// The key prefix inside the bucket or container (empty for the root).
    pub fn prefix(&self) -> &str {
        match self {
            Self::Local(_) => "",
            Self::S3 { prefix, .. } | Self::Gcs { prefix, .. } | Self::Azure { prefix, .. } => prefix,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_prefix = |f: &mut fmt::Formatter<'_>, base: String, prefix: &str| {
            if prefix.is_empty() {
                f.write_str(&base)
            } else {
                write!(f, "{base}/{prefix}")
            }
        };
        match self {
            Self::Local(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } => with_prefix(f, format!("s3://{bucket}"), prefix),
            Self::Gcs { bucket, prefix } => with_prefix(f, format!("gs://{bucket}"), prefix),
            Self::Azure {
                account,
                container,
                prefix,
                dfs,
            } => {
                let base = if *dfs {
                    format!("abfss://{container}@{account}.dfs.core.windows.net")
                } else {
                    format!("wasbs://{container}@{account}.blob.core.windows.net")
                };
                with_prefix(f, base, prefix)
            }
        }
    }
}

/// S3 and GCS bucket names: 3-63 characters of lowercase letters, digits, `.`, `-` (and `_` on
/// GCS), starting and ending with a letter or digit.
fn bucket(text: &str, name: &str, store: &str) -> Result<String, String> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if (3..=63).contains(&name.len())
        && name.bytes().all(ok_char)
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
    {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{text}: '{name}' is not a valid {store} bucket name (3-63 lowercase letters, digits, '.', '-')"
        ))
    }
}

fn valid_azure_account(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_destination_form() {
        let cases = [
            ("mlartifacts", Destination::Local("mlartifacts".into())),
            ("/srv/artifacts", Destination::Local("/srv/artifacts".into())),
            ("file:///srv/a", Destination::Local("/srv/a".into())),
            (
                "s3://my-bucket",
                Destination::S3 {
                    bucket: "my-bucket".into(),
                    prefix: "".into(),
                },
            ),
            (
                "s3://my-bucket/team/mlflow/",
                Destination::S3 {
                    bucket: "my-bucket".into(),
                    prefix: "team/mlflow".into(),
                },
            ),
            (
                "gs://models.example/p",
                Destination::Gcs {
                    bucket: "models.example".into(),
                    prefix: "p".into(),
                },
            ),
            (
                "abfss://artifacts@acct01.dfs.core.windows.net/mlflow",
                Destination::Azure {
                    account: "acct01".into(),
                    container: "artifacts".into(),
                    prefix: "mlflow".into(),
                    dfs: true,
                },
            ),
            (
                "wasbs://artifacts@acct01.blob.core.windows.net",
                Destination::Azure {
                    account: "acct01".into(),
                    container: "artifacts".into(),
                    prefix: "".into(),
                    dfs: false,
                },
            ),
        ];
        for (text, want) in cases {
            let got = Destination::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            if !matches!(got, Destination::Local(_)) {
                assert_eq!(got.to_string(), text.trim_end_matches('/'), "display of {text}");
            }
        }
    }

    #[test]
    fn bad_destinations_say_why() {
        for (text, needle) in [
            ("", "empty"),
            ("s3://", "bucket name"),
            ("s3://Upper", "bucket name"),
            ("s3://ab", "bucket name"),
            ("s3://b-/x", "bucket name"),
            ("s3://bucket/../x", "'..'"),
            ("gs://-x-", "bucket name"),
            ("abfss://acct.dfs.core.windows.net/x", "expected abfss://"),
            ("abfss://c@acct.blob.core.windows.net", "dfs.core.windows.net"),
            ("wasbs://Container@acct.blob.core.windows.net", "container name"),
            ("hdfs://namenode/x", "unsupported scheme"),
        ] {
            let err = Destination::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
