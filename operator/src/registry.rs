//! Model registry lookups: turn a ModelDeployment's model reference (version, `latest`, alias,
//! stage or URI) into a concrete version with its run id and source, using the tracking server's
//! MLflow REST API.

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::crd::conditions;
use crate::crd::model_deployment::{ModelRef, ResolvedModel};

/// What a spec asks for, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelReference {
    Version { name: String, version: String },
    Latest { name: String },
    Alias { name: String, alias: String },
    Stage { name: String, stage: String },
    Run { uri: String, run_id: String },
}

impl ModelReference {
    /// Normalise the spec's `model`. A `uri` wins (the schema allows only one of the three).
    pub fn from_spec(model: &ModelRef) -> Self {
        let name = model.name.clone();
        if let Some(uri) = &model.uri {
            if let Some(rest) = uri.strip_prefix("runs:/") {
                let run_id = rest.split('/').next().unwrap_or_default().to_owned();
                return Self::Run {
                    uri: uri.clone(),
                    run_id,
                };
            }
            if let Some(rest) = uri.strip_prefix("models:/") {
                if let Some((name, alias)) = rest.split_once('@') {
                    return Self::Alias {
                        name: name.to_owned(),
                        alias: alias.to_owned(),
                    };
                }
                if let Some((name, tail)) = rest.split_once('/') {
                    let name = name.to_owned();
                    return if tail == "latest" {
                        Self::Latest { name }
                    } else if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) {
                        Self::Version {
                            name,
                            version: tail.to_owned(),
                        }
                    } else {
                        Self::Stage {
                            name,
                            stage: tail.to_owned(),
                        }
                    };
                }
            }
        }
        match (&model.version, &model.alias) {
            (Some(v), _) if v == "latest" => Self::Latest { name },
            (Some(v), _) => Self::Version {
                name,
                version: v.clone(),
            },
            (None, Some(alias)) => Self::Alias {
                name,
                alias: alias.clone(),
            },
            (None, None) => Self::Latest { name },
        }
    }
}

impl fmt::Display for ModelReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version { name, version } => write!(f, "models:/{name}/{version}"),
            Self::Latest { name } => write!(f, "models:/{name}/latest"),
            Self::Alias { name, alias } => write!(f, "models:/{name}@{alias}"),
            Self::Stage { name, stage } => write!(f, "models:/{name}/{stage}"),
            Self::Run { uri, .. } => f.write_str(uri),
        }
    }
}

/// Why a model could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("tracking server {uri} is unreachable")]
    Unreachable {
        uri: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tracking server answered {status} for {what}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("model {0} not found in the registry")]
    NotFound(String),
    #[error("unexpected response for {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid tracking URI {0:?}")]
    InvalidUri(String),
    #[error("invalid trackingCaBundle: {0}")]
    InvalidCaBundle(String),
}

impl RegistryError {
    /// The condition reason: `ModelNotFound` (the registry answered, the model, version or alias
    /// is not there), `RegistryUnavailable` (unreachable, timed out, 5xx, 408, 429, or an answer
    /// that is not MLflow's), `RegistryRejected` (another 4xx: credentials, permissions, a name
    /// the registry refuses), `InvalidTrackingUri`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } | Self::Decode { .. } => conditions::REGISTRY_UNAVAILABLE,
            Self::Status { status, .. }
                if (400..500).contains(status) && *status != 408 && *status != 429 =>
            {
                conditions::REGISTRY_REJECTED
            }
            Self::Status { .. } => conditions::REGISTRY_UNAVAILABLE,
            Self::NotFound(_) => conditions::MODEL_NOT_FOUND,
            Self::InvalidUri(_) => conditions::INVALID_TRACKING_URI,
            Self::InvalidCaBundle(_) => conditions::INVALID_CA_BUNDLE,
        }
    }

    /// Whether retrying later may help (as opposed to a spec that names a missing model).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

/// Basic-auth credentials for the registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A tracking server as the registry client reaches it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Endpoint<'a> {
    /// `http://` or `https://` base URL.
    pub uri: &'a str,
    /// Basic-auth account.
    pub credentials: Option<&'a Credentials>,
    /// PEM CA certificates an `https://` server is verified with, instead of the system's.
    pub ca_bundle: Option<&'a [u8]>,
}

impl<'a> Endpoint<'a> {
    pub fn new(uri: &'a str) -> Self {
        Self {
            uri,
            credentials: None,
            ca_bundle: None,
        }
    }

    pub fn with_credentials(self, credentials: Option<&'a Credentials>) -> Self {
        Self { credentials, ..self }
    }

    pub fn with_ca_bundle(self, ca_bundle: Option<&'a [u8]>) -> Self {
        Self { ca_bundle, ..self }
    }
}

/// Resolves model references. The controller holds a `dyn ModelRegistry`, so tests can use a
/// fake and the operator the HTTP client.
#[async_trait::async_trait]
pub trait ModelRegistry: Send + Sync {
    async fn resolve(
        &self,
        endpoint: &Endpoint<'_>,
        reference: &ModelReference,
    ) -> Result<ResolvedModel, RegistryError>;

    /// Point registry alias `alias` of model `name` at `version` (a promoted canary).
    async fn set_alias(
        &self,
        endpoint: &Endpoint<'_>,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), RegistryError>;
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<bytes::Bytes>,
>;

/// Clients for private CA bundles kept at most (by bundle); more are built afresh.
const MAX_CA_CLIENTS: usize = 32;

/// The MLflow REST API client.
pub struct HttpRegistry {
    /// HTTP, and HTTPS verified against the system's CA certificates.
    client: HttpsClient,
    /// HTTPS clients that trust one CA bundle each, by the bundle's fingerprint.
    ca_clients: std::sync::Mutex<std::collections::HashMap<String, HttpsClient>>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ModelVersionWire {
    name: String,
    version: String,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
struct OneVersion {
    model_version: ModelVersionWire,
}

#[derive(Deserialize)]
struct ManyVersions {
    #[serde(default)]
    model_versions: Vec<ModelVersionWire>,
}

#[derive(Clone, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

fn enc(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

impl HttpRegistry {
    /// A client that speaks HTTP and HTTPS (system roots).
    pub fn new(timeout: Duration) -> Result<Self, std::io::Error> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            ca_clients: std::sync::Mutex::default(),
            timeout,
        })
    }

    /// The client for `endpoint`: the shared one, or one that trusts exactly its CA bundle.
    fn client_for(&self, endpoint: &Endpoint<'_>) -> Result<HttpsClient, RegistryError> {
        let Some(pem) = endpoint.ca_bundle else {
            return Ok(self.client.clone());
        };
        let key = crate::fingerprint::fingerprint(&String::from_utf8_lossy(pem));
        let mut clients = self.ca_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = ca_client(pem)?;
        if clients.len() >= MAX_CA_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &Endpoint<'_>,
        path_and_query: String,
        what: &str,
        alias: bool,
    ) -> Result<T, RegistryError> {
        self.send(endpoint, http::Method::GET, path_and_query, None, what, alias)
            .await
    }

    /// One JSON request to `endpoint` (its credentials and CA bundle), answered with JSON: the
    /// registry lookups, the alias a promotion sets, and the canary analysis's reads of the
    /// quality API and Prometheus's HTTP API.
    pub async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &Endpoint<'_>,
        method: http::Method,
        path_and_query: String,
        body: Option<serde_json::Value>,
        what: &str,
        alias: bool,
    ) -> Result<T, RegistryError> {
        let base = endpoint.uri;
        let client = self.client_for(endpoint)?;
        let url = format!("{}{}", base.trim_end_matches('/'), path_and_query);
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(c) = endpoint.credentials {
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
            request = request.header(http::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let payload = match body {
            Some(body) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(bytes::Bytes::from(body.to_string()))
            }
            None => Full::default(),
        };
        let request = request
            .body(payload)
            .map_err(|_| RegistryError::InvalidUri(base.to_owned()))?;
        let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Unreachable {
            uri: base.to_owned(),
            source,
        };
        let response = tokio::time::timeout(self.timeout, client.request(request))
            .await
            .map_err(|e| unreachable(Box::new(e)))?
            .map_err(|e| unreachable(Box::new(e)))?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|e| unreachable(Box::new(e)))?
            .map_err(|e| unreachable(Box::new(e)))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|source| RegistryError::Decode {
                what: what.to_owned(),
                source,
            });
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        Err(classify(status, error, what, alias))
    }
}

/// An HTTPS client that trusts exactly the certificates of a PEM bundle. kube's TLS setup builds
/// it (a `kube::Config` carries root certificates), so the operator needs no TLS crate of its own.
fn ca_client(pem: &[u8]) -> Result<HttpsClient, RegistryError> {
    use kube::client::ConfigExt;
    let certificates = pem_certificates(pem)?;
    let mut config = kube::Config::new(http::Uri::from_static("https://tracking-server.invalid"));
    config.root_cert = Some(certificates);
    let connector = config
        .rustls_https_connector()
        .map_err(|e| RegistryError::InvalidCaBundle(crate::cluster::api_message(&e)))?;
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The DER certificates of a PEM bundle (`-----BEGIN CERTIFICATE-----` blocks; anything else in
/// the text is ignored, as OpenSSL does).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, RegistryError> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| RegistryError::InvalidCaBundle("not PEM text".into()))?;
    let mut certificates = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body
            .find(END)
            .ok_or_else(|| RegistryError::InvalidCaBundle("a certificate has no END line".into()))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| RegistryError::InvalidCaBundle(format!("bad base64 in a certificate: {e}")))?;
        certificates.push(der);
        rest = &body[end + END.len()..];
    }
    if certificates.is_empty() {
        return Err(RegistryError::InvalidCaBundle("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// Turn an MLflow error answer into a [`RegistryError`]. "Not found" is any 404, any
/// `RESOURCE_DOES_NOT_EXIST`, and, for an alias lookup, upstream MLflow's answer for an unknown
/// alias: 400 `INVALID_PARAMETER_VALUE` "Registered model alias … not found." (MLflow 2.x also
/// answers so when the model itself is missing).
fn classify(status: http::StatusCode, error: Option<ErrorBody>, what: &str, alias: bool) -> RegistryError {
    let (code, message) = error.map(|e| (e.error_code, e.message)).unwrap_or_default();
    let unknown_alias = alias
        && status == http::StatusCode::BAD_REQUEST
        && code == "INVALID_PARAMETER_VALUE"
        && message.to_ascii_lowercase().contains("not found");
    if status == http::StatusCode::NOT_FOUND || code == "RESOURCE_DOES_NOT_EXIST" || unknown_alias {
        return RegistryError::NotFound(what.to_owned());
    }
    RegistryError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        message,
    }
}

fn resolved(reference: &ModelReference, v: ModelVersionWire) -> ResolvedModel {
    ResolvedModel {
        reference: reference.to_string(),
        name: v.name,
        version: v.version,
        run_id: v.run_id.filter(|r| !r.is_empty()),
        source: v.source.filter(|s| !s.is_empty()),
    }
}

fn highest(versions: Vec<ModelVersionWire>) -> Option<ModelVersionWire> {
    versions
        .into_iter()
        .max_by_key(|v| v.version.parse::<u64>().unwrap_or_default())
}

#[async_trait::async_trait]
impl ModelRegistry for HttpRegistry {
    async fn set_alias(
        &self,
        endpoint: &Endpoint<'_>,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), RegistryError> {
        if !(endpoint.uri.starts_with("http://") || endpoint.uri.starts_with("https://")) {
            return Err(RegistryError::InvalidUri(endpoint.uri.to_owned()));
        }
        let what = format!("models:/{name}@{alias} -> {version}");
        let body = serde_json::json!({"name": name, "alias": alias, "version": version});
        let _: serde_json::Value = self
            .send(
                endpoint,
                http::Method::POST,
                "/api/2.0/mlflow/registered-models/alias".to_owned(),
                Some(body),
                &what,
                false,
            )
            .await?;
        Ok(())
    }

    async fn resolve(
        &self,
        endpoint: &Endpoint<'_>,
        reference: &ModelReference,
    ) -> Result<ResolvedModel, RegistryError> {
        let tracking_uri = endpoint.uri;
        if !(tracking_uri.starts_with("http://") || tracking_uri.starts_with("https://")) {
            return Err(RegistryError::InvalidUri(tracking_uri.to_owned()));
        }
        let what = reference.to_string();
        match reference {
            ModelReference::Version { name, version } => {
                let path = format!(
                    "/api/2.0/mlflow/model-versions/get?name={}&version={}",
                    enc(name),
                    enc(version)
                );
                let one: OneVersion = self.get(endpoint, path, &what, false).await?;
                Ok(resolved(reference, one.model_version))
            }
            ModelReference::Alias { name, alias } => {
                let path = format!(
                    "/api/2.0/mlflow/registered-models/alias?name={}&alias={}",
                    enc(name),
                    enc(alias)
                );
                let one: OneVersion = self.get(endpoint, path, &what, true).await?;
                Ok(resolved(reference, one.model_version))
            }
            ModelReference::Latest { name } => {
                let path = format!(
                    "/api/2.0/mlflow/registered-models/get-latest-versions?name={}",
                    enc(name)
                );
                let many: ManyVersions = self.get(endpoint, path, &what, false).await?;
                let v = highest(many.model_versions).ok_or(RegistryError::NotFound(what))?;
                Ok(resolved(reference, v))
            }
            ModelReference::Stage { name, stage } => {
                let path = format!(
                    "/api/2.0/mlflow/registered-models/get-latest-versions?name={}&stages={}",
                    enc(name),
                    enc(stage)
                );
                let many: ManyVersions = self.get(endpoint, path, &what, false).await?;
                let v = highest(many.model_versions).ok_or(RegistryError::NotFound(what))?;
                Ok(resolved(reference, v))
            }
            ModelReference::Run { uri, run_id } => Ok(ResolvedModel {
                reference: uri.clone(),
                name: String::new(),
                version: format!("run-{}", run_id.chars().take(12).collect::<String>()),
                run_id: Some(run_id.clone()),
                source: Some(uri.clone()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(version: Option<&str>, alias: Option<&str>, uri: Option<&str>) -> ModelRef {
        ModelRef {
            name: "churn".into(),
            version: version.map(Into::into),
            alias: alias.map(Into::into),
            uri: uri.map(Into::into),
        }
    }

    #[test]
    fn references_normalise() {
        let cases = [
            (model(Some("3"), None, None), "models:/churn/3"),
            (model(Some("latest"), None, None), "models:/churn/latest"),
            (model(None, Some("champion"), None), "models:/churn@champion"),
            (
                model(None, None, Some("models:/other@prod")),
                "models:/other@prod",
            ),
            (model(None, None, Some("models:/other/7")), "models:/other/7"),
            (
                model(None, None, Some("models:/other/Production")),
                "models:/other/Production",
            ),
            (
                model(None, None, Some("runs:/abc123/model")),
                "runs:/abc123/model",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(ModelReference::from_spec(&spec).to_string(), want);
        }
        assert_eq!(
            ModelReference::from_spec(&model(None, None, Some("models:/other/Production"))),
            ModelReference::Stage {
                name: "other".into(),
                stage: "Production".into()
            }
        );
    }

    fn error(code: &str, message: &str) -> Option<ErrorBody> {
        Some(ErrorBody {
            error_code: code.into(),
            message: message.into(),
        })
    }

    #[test]
    fn not_found_is_told_from_unavailable_and_rejected() {
        use http::StatusCode as S;
        let reason = |status, body, alias| classify(status, body, "models:/churn@champion", alias).reason();
        // Upstream MLflow's unknown alias, and mlkube-server's before it matched upstream.
        let upstream = error(
            "INVALID_PARAMETER_VALUE",
            "Registered model alias champion not found.",
        );
        assert_eq!(reason(S::BAD_REQUEST, upstream.clone(), true), "ModelNotFound");
        assert_eq!(
            reason(S::NOT_FOUND, error("RESOURCE_DOES_NOT_EXIST", "no"), true),
            "ModelNotFound"
        );
        assert_eq!(reason(S::NOT_FOUND, None, false), "ModelNotFound");
        // The same 400 on another endpoint, or another 400, is not "not found".
        assert_eq!(reason(S::BAD_REQUEST, upstream, false), "RegistryRejected");
        assert_eq!(
            reason(
                S::BAD_REQUEST,
                error("INVALID_PARAMETER_VALUE", "Invalid alias name: 'a.b'."),
                true
            ),
            "RegistryRejected"
        );
        assert_eq!(reason(S::UNAUTHORIZED, None, true), "RegistryRejected");
        assert_eq!(reason(S::TOO_MANY_REQUESTS, None, true), "RegistryUnavailable");
        assert_eq!(reason(S::SERVICE_UNAVAILABLE, None, true), "RegistryUnavailable");
    }

    #[test]
    fn ca_bundles_are_read_as_pem() {
        let ca = include_bytes!("../tests/fixtures/tls/ca.crt");
        let other = include_bytes!("../tests/fixtures/tls/other-ca.crt");
        assert_eq!(pem_certificates(ca).unwrap().len(), 1);
        let both = [&ca[..], b"\nsome comment\n", &other[..]].concat();
        assert_eq!(pem_certificates(&both).unwrap().len(), 2);
        assert!(ca_client(ca).is_ok());
        for bad in [
            &b"not a certificate"[..],
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            let err = pem_certificates(bad).unwrap_err();
            assert_eq!(err.reason(), "InvalidCaBundle", "{err}");
        }
        // Base64 that is no certificate: refused when the client is built.
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(ca_client(junk).unwrap_err().reason(), "InvalidCaBundle");
    }

    #[test]
    fn credentials_are_redacted() {
        let c = Credentials {
            username: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
