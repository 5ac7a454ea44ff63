//! Command line of `mlkube-sidecar` (every flag also reads `MLKUBE_<FLAG>`), validated once at startup
//! into a [`Config`] with every default resolved.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::telemetry::LogFormat;

/// Path of the tracking server's prediction log endpoint, appended to `--tracking-uri`.
pub const PREDICTIONS_LOG_BATCH_PATH: &str = "/api/2.0/mlkube/predictions/log-batch";

/// `mlkube-sidecar`: a streaming proxy in front of a model server that exports per-version
/// Prometheus metrics and samples payloads for model-quality monitoring.
#[derive(Clone, Parser)]
#[command(name = "mlkube-sidecar", version, about, long_about = None)]
pub struct Args {
    /// Address that serves traffic; every request is forwarded to --upstream.
    #[arg(
        long,
        env = "MLKUBE_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8000"
    )]
    pub listen: SocketAddr,

    /// Address that serves /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "MLKUBE_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8001"
    )]
    pub metrics_listen: SocketAddr,

    /// Base URL of the model server (plain http, no path).
    #[arg(
        long,
        env = "MLKUBE_UPSTREAM",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub upstream: String,

    /// Registered model name: the `model_name` label of every metric (required).
    #[arg(long, env = "MLKUBE_MODEL_NAME", value_name = "NAME")]
    pub model_name: Option<String>,

    /// Model version: the `model_version` label of every metric (required).
    #[arg(long, env = "MLKUBE_MODEL_VERSION", value_name = "VERSION")]
    pub model_version: Option<String>,

    /// MLflow run that produced the model, exported as `run_id` on mlflow_model_info.
    #[arg(long, env = "MLKUBE_RUN_ID", value_name = "RUN_ID")]
    pub run_id: Option<String>,

    /// Path on the upstream that answers 2xx when the model is loaded; /readyz follows it.
    #[arg(
        long,
        env = "MLKUBE_UPSTREAM_HEALTH_PATH",
        value_name = "PATH",
        default_value = "/ping"
    )]
    pub upstream_health_path: String,

    /// Seconds between two checks of the upstream health path.
    #[arg(
        long,
        env = "MLKUBE_UPSTREAM_HEALTH_INTERVAL",
        value_name = "SECS",
        default_value_t = 2.0
    )]
    pub upstream_health_interval: f64,

    /// Seconds to wait for the upstream's response headers before answering 504.
    #[arg(
        long,
        env = "MLKUBE_REQUEST_TIMEOUT",
        value_name = "SECS",
        default_value_t = 60.0
    )]
    pub request_timeout: f64,

    /// Largest request body accepted; larger ones are answered 413.
    #[arg(long, env = "MLKUBE_MAX_REQUEST_BODY_BYTES", value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: u64,

    /// Seconds a client has to send a complete request head, from its first byte or from the
    /// previous response on the connection; a connection that sends nothing for this long (a new
    /// one, or an idle keep-alive one) is closed.
    #[arg(
        long,
        env = "MLKUBE_HEADER_READ_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    pub header_read_timeout: f64,

    /// Seconds a client may keep the sidecar waiting for its request body (time spent waiting for
    /// the model server to read it does not count); then 408. Time waiting for the client does not
    /// count against --request-timeout.
    #[arg(
        long,
        env = "MLKUBE_REQUEST_BODY_TIMEOUT",
        value_name = "SECS",
        default_value_t = 60.0
    )]
    pub request_body_timeout: f64,

    /// Client connections open at once; further ones are answered 503 and closed.
    #[arg(
        long,
        env = "MLKUBE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 16384
    )]
    pub max_connections: usize,

    /// Seconds that in-flight requests get to finish after SIGTERM before they are cut off.
    #[arg(
        long,
        env = "MLKUBE_SHUTDOWN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 20.0
    )]
    pub shutdown_timeout: f64,

    /// Threads serving traffic, each with its own event loop and upstream pool; 0 means one per
    /// CPU the process may use.
    #[arg(long, env = "MLKUBE_WORKER_THREADS", value_name = "N", default_value_t = 0)]
    pub worker_threads: usize,

    /// Tracking server that receives captured predictions: http, or https verified against the
    /// system CA certificates (`SSL_CERT_FILE` or `SSL_CERT_DIR` replace them, e.g. with a private
    /// CA's bundle).
    #[arg(long, env = "MLKUBE_TRACKING_URI", value_name = "URL")]
    pub tracking_uri: Option<String>,

    /// Basic-auth user for the tracking server.
    #[arg(long, env = "MLKUBE_TRACKING_USERNAME", value_name = "USER")]
    pub tracking_username: Option<String>,

    /// Basic-auth password for the tracking server (prefer the environment variable).
    #[arg(
        long,
        env = "MLKUBE_TRACKING_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub tracking_password: Option<String>,

    /// Fraction of requests whose payloads are captured, 0 (off) to 1 (all); needs --tracking-uri.
    #[arg(
        long,
        env = "MLKUBE_CAPTURE_SAMPLE_RATE",
        value_name = "F",
        default_value_t = 0.0
    )]
    pub capture_sample_rate: f64,

    /// Requests or responses larger than this are not captured.
    #[arg(long, env = "MLKUBE_CAPTURE_MAX_PAYLOAD_BYTES", value_name = "N", default_value_t = 64 * 1024)]
    pub capture_max_payload_bytes: usize,

    /// Captured pairs waiting for upload; when full, new ones are dropped and counted.
    #[arg(
        long,
        env = "MLKUBE_CAPTURE_QUEUE_SIZE",
        value_name = "N",
        default_value_t = 1024
    )]
    pub capture_queue_size: usize,

    /// Payload bytes the capture queue may hold; beyond it new pairs are dropped and counted.
    #[arg(
        long,
        env = "MLKUBE_CAPTURE_MAX_QUEUE_BYTES",
        value_name = "BYTES",
        default_value_t = 4 * 1024 * 1024
    )]
    pub capture_max_queue_bytes: usize,

    /// Captured pairs per upload request.
    #[arg(
        long,
        env = "MLKUBE_CAPTURE_BATCH_SIZE",
        value_name = "N",
        default_value_t = 100
    )]
    pub capture_batch_size: usize,

    /// Seconds a partly filled batch waits before it is uploaded anyway.
    #[arg(
        long,
        env = "MLKUBE_CAPTURE_FLUSH_INTERVAL",
        value_name = "SECS",
        default_value_t = 5.0
    )]
    pub capture_flush_interval: f64,

    /// Log line format.
    #[arg(long, env = "MLKUBE_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A configuration the sidecar refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} ({env}) is required: {why}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        why: &'static str,
    },
    #[error("invalid {flag} ({env}) {value:?}: {why}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        value: String,
        why: String,
    },
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub upstream: Upstream,
    pub model: ModelIdentity,
    pub request_timeout: Duration,
    pub max_request_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub request_body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    pub worker_threads: NonZeroUsize,
    /// `None` when capture is off (sample rate 0).
    pub capture: Option<CaptureConfig>,
    pub log_format: LogFormat,
}

/// Where requests go and how its health is checked.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub authority: Authority,
    pub health_uri: Uri,
    pub health_interval: Duration,
}

/// The labels of every metric, fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub run_id: Option<String>,
}

/// Payload capture settings; present only when the sample rate is above 0.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// `{tracking_uri}/api/2.0/mlkube/predictions/log-batch`.
    pub endpoint: Uri,
    pub authorization: Option<Secret>,
    /// In (0, 1].
    pub sample_rate: f64,
    pub max_payload_bytes: usize,
    pub queue_size: usize,
    /// At least two payloads' worth.
    pub max_queue_bytes: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
}

/// A header value that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(pub HeaderValue);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// === impl Args ===

impl Args {
    /// Checks every flag and resolves defaults; the error names the flag and its variable.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let Args {
            listen,
            metrics_listen,
            upstream,
            model_name,
            model_version,
            run_id,
            upstream_health_path,
            upstream_health_interval,
            request_timeout,
            max_request_body_bytes,
            header_read_timeout,
            request_body_timeout,
            max_connections,
            shutdown_timeout,
            worker_threads,
            tracking_uri,
            tracking_username,
            tracking_password,
            capture_sample_rate,
            capture_max_payload_bytes,
            capture_queue_size,
            capture_max_queue_bytes,
            capture_batch_size,
            capture_flush_interval,
            log_format,
        } = self;

        if listen == metrics_listen && listen.port() != 0 {
            return Err(invalid(
                "--metrics-listen",
                "MLKUBE_METRICS_LISTEN",
                metrics_listen.to_string(),
                "must differ from --listen",
            ));
        }
        let upstream_authority = parse_upstream(&upstream)?;
        let health_path = parse_health_path(&upstream_health_path)?;
        let health_uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(upstream_authority.clone())
            .path_and_query(health_path)
            .build()
            .map_err(|err| {
                invalid(
                    "--upstream-health-path",
                    "MLKUBE_UPSTREAM_HEALTH_PATH",
                    upstream_health_path.clone(),
                    err.to_string(),
                )
            })?;
        let model = ModelIdentity {
            name: required(
                model_name,
                "--model-name",
                "MLKUBE_MODEL_NAME",
                "the registered model's name",
            )?,
            version: required(
                model_version,
                "--model-version",
                "MLKUBE_MODEL_VERSION",
                "the served model version",
            )?,
            run_id: run_id.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()),
        };
        let upstream = Upstream {
            authority: upstream_authority,
            health_uri,
            health_interval: seconds(
                upstream_health_interval,
                "--upstream-health-interval",
                "MLKUBE_UPSTREAM_HEALTH_INTERVAL",
                false,
            )?,
        };
        let request_timeout = seconds(
            request_timeout,
            "--request-timeout",
            "MLKUBE_REQUEST_TIMEOUT",
            false,
        )?;
        if max_request_body_bytes == 0 {
            return Err(invalid(
                "--max-request-body-bytes",
                "MLKUBE_MAX_REQUEST_BODY_BYTES",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        let header_read_timeout = seconds(
            header_read_timeout,
            "--header-read-timeout",
            "MLKUBE_HEADER_READ_TIMEOUT",
            false,
        )?;
        let request_body_timeout = seconds(
            request_body_timeout,
            "--request-body-timeout",
            "MLKUBE_REQUEST_BODY_TIMEOUT",
            false,
        )?;
        if max_connections == 0 {
            return Err(invalid(
                "--max-connections",
                "MLKUBE_MAX_CONNECTIONS",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        let shutdown_timeout = seconds(
            shutdown_timeout,
            "--shutdown-timeout",
            "MLKUBE_SHUTDOWN_TIMEOUT",
            true,
        )?;
        let worker_threads = NonZeroUsize::new(worker_threads)
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN);

        let capture = validate_capture(CaptureArgs {
            tracking_uri,
            tracking_username,
            tracking_password,
            sample_rate: capture_sample_rate,
            max_payload_bytes: capture_max_payload_bytes,
            queue_size: capture_queue_size,
            max_queue_bytes: capture_max_queue_bytes,
            batch_size: capture_batch_size,
            flush_interval: capture_flush_interval,
        })?;

        Ok(Config {
            listen,
            metrics_listen,
            upstream,
            model,
            request_timeout,
            max_request_body_bytes,
            header_read_timeout,
            request_body_timeout,
            max_connections,
            shutdown_timeout,
            worker_threads,
            capture,
            log_format,
        })
    }
}

struct CaptureArgs {
    tracking_uri: Option<String>,
    tracking_username: Option<String>,
    tracking_password: Option<String>,
    sample_rate: f64,
    max_payload_bytes: usize,
    queue_size: usize,
    max_queue_bytes: usize,
    batch_size: usize,
    flush_interval: f64,
}

fn validate_capture(args: CaptureArgs) -> Result<Option<CaptureConfig>, ConfigError> {
    const RATE: (&str, &str) = ("--capture-sample-rate", "MLKUBE_CAPTURE_SAMPLE_RATE");
    let CaptureArgs {
        tracking_uri,
        tracking_username,
        tracking_password,
        sample_rate,
        max_payload_bytes,
        queue_size,
        max_queue_bytes,
        batch_size,
        flush_interval,
    } = args;
    if !(0.0..=1.0).contains(&sample_rate) {
        return Err(invalid(
            RATE.0,
            RATE.1,
            sample_rate.to_string(),
            "must be between 0 and 1",
        ));
    }
    let endpoint = tracking_uri
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(parse_tracking_uri)
        .transpose()?;
    let authorization = match (tracking_username, tracking_password) {
        (None, None) => None,
        (Some(user), password) => Some(basic_auth(&user, password.as_deref().unwrap_or(""))?),
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                flag: "--tracking-username",
                env: "MLKUBE_TRACKING_USERNAME",
                why: "a tracking password was given without a user",
            });
        }
    };
    for (value, flag, env) in [
        (
            max_payload_bytes,
            "--capture-max-payload-bytes",
            "MLKUBE_CAPTURE_MAX_PAYLOAD_BYTES",
        ),
        (queue_size, "--capture-queue-size", "MLKUBE_CAPTURE_QUEUE_SIZE"),
        (batch_size, "--capture-batch-size", "MLKUBE_CAPTURE_BATCH_SIZE"),
    ] {
        if value == 0 {
            return Err(invalid(flag, env, "0".to_owned(), "must be at least 1"));
        }
    }
    if max_queue_bytes < max_payload_bytes.saturating_mul(2) {
        return Err(invalid(
            "--capture-max-queue-bytes",
            "MLKUBE_CAPTURE_MAX_QUEUE_BYTES",
            max_queue_bytes.to_string(),
            "must hold at least one request/response pair (2 x --capture-max-payload-bytes)",
        ));
    }
    let flush_interval = seconds(
        flush_interval,
        "--capture-flush-interval",
        "MLKUBE_CAPTURE_FLUSH_INTERVAL",
        false,
    )?;
    if sample_rate == 0.0 {
        return Ok(None);
    }
    let Some(endpoint) = endpoint else {
        return Err(ConfigError::Missing {
            flag: "--tracking-uri",
            env: "MLKUBE_TRACKING_URI",
            why: "payload capture (--capture-sample-rate above 0) posts to the tracking server",
        });
    };
    Ok(Some(CaptureConfig {
        endpoint,
        authorization,
        sample_rate,
        max_payload_bytes,
        queue_size,
        max_queue_bytes,
        batch_size,
        flush_interval,
    }))
}

fn invalid(flag: &'static str, env: &'static str, value: String, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        env,
        value,
        why: why.into(),
    }
}

fn required(
    value: Option<String>,
    flag: &'static str,
    env: &'static str,
    why: &'static str,
) -> Result<String, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(ConfigError::Missing { flag, env, why }),
    }
}

fn seconds(
    value: f64,
    flag: &'static str,
    env: &'static str,
    zero_ok: bool,
) -> Result<Duration, ConfigError> {
    let ok = value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0));
    let duration = Duration::try_from_secs_f64(value).ok().filter(|_| ok);
    duration.ok_or_else(|| {
        let why = if zero_ok {
            "must be a number of seconds, 0 or more"
        } else {
            "must be a number of seconds above 0"
        };
        invalid(flag, env, value.to_string(), why)
    })
}

/// `http://host[:port]`, nothing else: the model server sits on the pod's loopback.
fn parse_upstream(raw: &str) -> Result<Authority, ConfigError> {
    const FLAG: (&str, &str) = ("--upstream", "MLKUBE_UPSTREAM");
    let bad = |why: &str| invalid(FLAG.0, FLAG.1, raw.to_owned(), why);
    let uri: Uri = raw.trim().parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(bad("must start with http://"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    if path != "/" && !path.is_empty() {
        return Err(bad(
            "must not have a path or query; request paths are forwarded as they are",
        ));
    }
    Ok(authority)
}

fn parse_health_path(raw: &str) -> Result<PathAndQuery, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "--upstream-health-path",
            "MLKUBE_UPSTREAM_HEALTH_PATH",
            raw.to_owned(),
            why,
        )
    };
    if !raw.starts_with('/') {
        return Err(bad("must start with /"));
    }
    raw.parse().map_err(|_| bad("not a valid path"))
}

/// `http(s)://host[:port][/prefix]` plus the prediction log path.
fn parse_tracking_uri(raw: &str) -> Result<Uri, ConfigError> {
    const FLAG: (&str, &str) = ("--tracking-uri", "MLKUBE_TRACKING_URI");
    let bad = |why: &str| invalid(FLAG.0, FLAG.1, raw.to_owned(), why);
    let uri: Uri = raw.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => return Err(bad("must start with http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "must not carry credentials; use --tracking-username/--tracking-password",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    let path = format!("{prefix}{PREDICTIONS_LOG_BATCH_PATH}");
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|err| bad(&err.to_string()))
}

fn basic_auth(user: &str, password: &str) -> Result<Secret, ConfigError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
        invalid(
            "--tracking-username",
            "MLKUBE_TRACKING_USERNAME",
            user.to_owned(),
            "cannot be sent in a header",
        )
    })?;
    value.set_sensitive(true);
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["mlkube-sidecar", "--model-name", "iris", "--model-version", "3"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
            .expect("clap accepts the flags")
            .validate()
    }

    fn invalid_flag(result: Result<Config, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { flag, .. } | ConfigError::Missing { flag, .. }) => flag,
            Ok(config) => panic!("expected an error, got {config:?}"),
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(config.metrics_listen, "0.0.0.0:8001".parse().unwrap());
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:8080");
        assert_eq!(
            config.upstream.health_uri.to_string(),
            "http://127.0.0.1:8080/ping"
        );
        assert_eq!(
            config.model,
            ModelIdentity {
                name: "iris".into(),
                version: "3".into(),
                run_id: None
            }
        );
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        assert_eq!(config.header_read_timeout, Duration::from_secs(30));
        assert_eq!(config.request_body_timeout, Duration::from_secs(60));
        assert_eq!(config.max_connections, 16384);
        assert!(
            config.capture.is_none(),
            "capture is off unless a sample rate is given"
        );
    }

    #[test]
    fn every_documented_flag_parses() {
        let config = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--metrics-listen",
            "127.0.0.1:9001",
            "--upstream",
            "http://localhost:5001/",
            "--run-id",
            "abc123",
            "--upstream-health-path",
            "/health?full=1",
            "--tracking-uri",
            "http://mlkube-server.ml.svc:5000/mlflow/",
            "--capture-sample-rate",
            "0.25",
            "--capture-max-payload-bytes",
            "1000",
            "--request-timeout",
            "2.5",
            "--max-request-body-bytes",
            "4096",
            "--shutdown-timeout",
            "0",
            "--tracking-username",
            "svc",
            "--tracking-password",
            "hunter2",
            "--log-format",
            "json",
            "--worker-threads",
            "3",
            "--header-read-timeout",
            "5",
            "--request-body-timeout",
            "7.5",
            "--max-connections",
            "100",
        ])
        .unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.request_body_timeout, Duration::from_millis(7500));
        assert_eq!(config.max_connections, 100);
        assert_eq!(config.upstream.authority.as_str(), "localhost:5001");
        assert_eq!(
            config.upstream.health_uri.to_string(),
            "http://localhost:5001/health?full=1"
        );
        assert_eq!(config.model.run_id.as_deref(), Some("abc123"));
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.max_request_body_bytes, 4096);
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.worker_threads.get(), 3);
        let capture = config.capture.unwrap();
        assert_eq!(
            capture.endpoint.to_string(),
            "http://mlkube-server.ml.svc:5000/mlflow/api/2.0/mlkube/predictions/log-batch"
        );
        assert_eq!(capture.sample_rate, 0.25);
        assert_eq!(capture.max_payload_bytes, 1000);
        let auth = capture.authorization.unwrap();
        assert_eq!(auth.0, "Basic c3ZjOmh1bnRlcjI=");
        assert_eq!(format!("{auth:?}"), "<redacted>");
    }

    #[test]
    fn model_name_and_version_are_required() {
        let err = Args::try_parse_from(["mlkube-sidecar", "--model-version", "1"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--model-name (MLKUBE_MODEL_NAME) is required: the registered model's name"
        );
        let err = Args::try_parse_from(["mlkube-sidecar", "--model-name", "m", "--model-version", " "])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--model-version (MLKUBE_MODEL_VERSION) is required")
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(invalid_flag(parse(&["--upstream", "https://x:1"])), "--upstream");
        assert_eq!(
            invalid_flag(parse(&["--upstream", "http://x:1/v1"])),
            "--upstream"
        );
        assert_eq!(
            invalid_flag(parse(&["--upstream", "127.0.0.1:8080"])),
            "--upstream"
        );
        assert_eq!(
            invalid_flag(parse(&["--upstream-health-path", "ping"])),
            "--upstream-health-path"
        );
        assert_eq!(
            invalid_flag(parse(&["--request-timeout", "0"])),
            "--request-timeout"
        );
        assert_eq!(
            invalid_flag(parse(&["--request-timeout", "NaN"])),
            "--request-timeout"
        );
        assert_eq!(
            invalid_flag(parse(&["--shutdown-timeout=-1"])),
            "--shutdown-timeout"
        );
        assert_eq!(
            invalid_flag(parse(&["--max-request-body-bytes", "0"])),
            "--max-request-body-bytes"
        );
        assert_eq!(
            invalid_flag(parse(&["--header-read-timeout", "0"])),
            "--header-read-timeout"
        );
        assert_eq!(
            invalid_flag(parse(&["--request-body-timeout", "inf"])),
            "--request-body-timeout"
        );
        assert_eq!(
            invalid_flag(parse(&["--max-connections", "0"])),
            "--max-connections"
        );
        assert_eq!(
            invalid_flag(parse(&["--capture-sample-rate", "1.5"])),
            "--capture-sample-rate"
        );
        assert_eq!(
            invalid_flag(parse(&["--capture-sample-rate", "0.5"])),
            "--tracking-uri"
        );
        assert_eq!(
            invalid_flag(parse(&[
                "--tracking-uri",
                "ftp://t",
                "--capture-sample-rate",
                "1"
            ])),
            "--tracking-uri"
        );
        // https is spoken (see capture::CaptureClient), and kept in the endpoint.
        let https = parse(&[
            "--tracking-uri",
            "https://mlflow.example.com/",
            "--capture-sample-rate",
            "1",
        ])
        .unwrap();
        assert_eq!(
            https.capture.unwrap().endpoint.to_string(),
            "https://mlflow.example.com/api/2.0/mlkube/predictions/log-batch"
        );
        assert_eq!(
            invalid_flag(parse(&[
                "--listen",
                "0.0.0.0:8000",
                "--metrics-listen",
                "0.0.0.0:8000"
            ])),
            "--metrics-listen"
        );
        assert_eq!(
            invalid_flag(parse(&[
                "--tracking-uri",
                "http://t",
                "--capture-batch-size",
                "0"
            ])),
            "--capture-batch-size"
        );
        assert_eq!(
            invalid_flag(parse(&[
                "--capture-max-payload-bytes=1000",
                "--capture-max-queue-bytes=1999"
            ])),
            "--capture-max-queue-bytes"
        );
        let message = parse(&["--capture-sample-rate", "2"]).unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid --capture-sample-rate (MLKUBE_CAPTURE_SAMPLE_RATE) \"2\": must be between 0 and 1"
        );
    }

    #[test]
    fn a_tracking_uri_without_a_sample_rate_leaves_capture_off() {
        let config = parse(&["--tracking-uri", "http://t:5000"]).unwrap();
        assert!(config.capture.is_none());
    }

    #[test]
    fn every_flag_has_an_mlkube_env_variable() {
        use clap::CommandFactory;
        let command = Args::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let expected = format!("MLKUBE_{}", id.to_uppercase());
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, expected, "flag --{id}");
        }
    }
}
