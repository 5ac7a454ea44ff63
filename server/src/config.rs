//! Command line and environment. Flags carry MLflow's names; each reads `MLKUBE_<FLAG>` and, where
//! MLflow has one, MLflow's own server variable as a fallback (`MLFLOW_HOST`, `MLFLOW_PORT`, …).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// mlkube-server: an MLflow-compatible tracking server and model registry.
#[derive(Debug, Clone, Parser)]
#[command(name = "mlkube-server", version, about)]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1; env MLFLOW_HOST also read].
    #[arg(long, env = "MLKUBE_HOST")]
    pub host: Option<String>,
    /// Port to listen on [default: 5000; env MLFLOW_PORT also read].
    #[arg(long, short = 'p', env = "MLKUBE_PORT")]
    pub port: Option<u16>,
    /// Where runs, experiments and models are stored: sqlite:///PATH (relative), sqlite:////ABS,
    /// or postgresql://USER:PASSWORD@HOST:PORT/DB [default: sqlite:///mlkube.db].
    #[arg(long, env = "MLKUBE_BACKEND_STORE_URI")]
    pub backend_store_uri: Option<String>,
    /// Artifact root recorded for new experiments [default: mlflow-artifacts:/ when serving
    /// artifacts, else ./mlartifacts].
    #[arg(long, env = "MLKUBE_DEFAULT_ARTIFACT_ROOT")]
    pub default_artifact_root: Option<String>,
    /// Where the artifact proxy keeps artifacts: a local directory, `s3://bucket[/prefix]`,
    /// `gs://bucket[/prefix]`, `abfss://container@account.dfs.core.windows.net[/prefix]` or
    /// `wasbs://container@account.blob.core.windows.net[/prefix]`, with the cloud's usual
    /// credentials from the environment [default: ./mlartifacts].
    #[arg(long, env = "MLKUBE_ARTIFACTS_DESTINATION", value_name = "DIR|URI")]
    pub artifacts_destination: Option<String>,
    /// Serve the mlflow-artifacts proxy (on by default).
    #[arg(long, env = "MLKUBE_SERVE_ARTIFACTS", overrides_with = "no_serve_artifacts")]
    pub serve_artifacts: bool,
    /// Do not serve the mlflow-artifacts proxy.
    #[arg(long, env = "MLKUBE_NO_SERVE_ARTIFACTS")]
    pub no_serve_artifacts: bool,
    /// Serve only the mlflow-artifacts proxy (with /health, /version and /metrics), as `mlflow
    /// server --artifacts-only`: no tracking or registry API, no web UI, no backend store, so
    /// artifact traffic can run and scale on its own [env MLFLOW_ARTIFACTS_ONLY also read].
    #[arg(long, env = "MLKUBE_ARTIFACTS_ONLY")]
    pub artifacts_only: bool,
    /// Accepted for compatibility with `mlflow server`; one async process serves all requests.
    #[arg(long, short = 'w', env = "MLKUBE_WORKERS")]
    pub workers: Option<u32>,
    /// Serve Prometheus metrics on /metrics. Takes MLflow's optional directory argument (unused:
    /// one process needs no multiprocess directory).
    #[arg(long, env = "MLKUBE_EXPOSE_PROMETHEUS", num_args = 0..=1, default_missing_value = "", value_name = "DIR")]
    pub expose_prometheus: Option<String>,
    /// Export usage statistics (experiment, run, model, version, user and dataset counts) on
    /// /metrics; needs --expose-prometheus.
    #[arg(long, env = "MLKUBE_ENABLE_STATISTICS")]
    pub enable_statistics: bool,
    /// Seconds between statistics refreshes.
    #[arg(long, env = "MLKUBE_STATISTICS_UPDATE_INTERVAL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub statistics_update_interval: u64,
    /// Largest JSON request body in bytes (artifact uploads stream and are not limited by this).
    #[arg(long, env = "MLKUBE_MAX_REQUEST_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Log format: text or json.
    #[arg(long, env = "MLKUBE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// `basic-auth`: MLflow's basic auth (users, per-experiment and per-model permissions) in front
    /// of every route, configured by the INI file named by MLFLOW_AUTH_CONFIG_PATH, with the admin
    /// credentials overridable by MLKUBE_ADMIN_USERNAME / MLKUBE_ADMIN_PASSWORD.
    #[arg(long, env = "MLKUBE_APP_NAME", value_name = "NAME")]
    pub app_name: Option<String>,
    /// Directory of MLflow's prebuilt web UI (`mlflow/server/js/build` inside the `mlflow` Python
    /// package) [default: the build of the `mlflow` package that `python3` on PATH imports].
    #[arg(long, env = "MLKUBE_UI_DIR", value_name = "DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Do not serve the web UI (the API is unaffected).
    #[arg(long, env = "MLKUBE_NO_UI")]
    pub no_ui: bool,
    /// Serve everything (UI, API, artifacts, health) also under this path prefix, e.g. `/mlflow`
    /// behind an Ingress; must start and not end with `/` [env _MLFLOW_STATIC_PREFIX also read].
    #[arg(long, env = "MLKUBE_STATIC_PREFIX", value_name = "PREFIX")]
    pub static_prefix: Option<String>,
    /// When a SQLite write is answered: `full` once it is on disk, so it survives a power loss
    /// (concurrent writers share one fsync); `normal` once SQLite has it, which survives a killed
    /// process but may lose the last writes on a power loss, for a little more speed.
    #[arg(long, env = "MLKUBE_SQLITE_SYNCHRONOUS", default_value = "full", value_parser = ["full", "normal"])]
    pub sqlite_synchronous: String,
    #[command(flatten)]
    pub monitoring: crate::quality::MonitoringArgs,
    /// Without a command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `mlkube-server` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Copy an upstream MLflow database (SQLite or PostgreSQL, MLflow 2.4 to 3.17.2) into this
    /// server's backend store, ids unchanged; run again to resume an interrupted import.
    Import(crate::import::ImportArgs),
}

/// Where the web UI comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiSource {
    /// Not served (`--no-ui`).
    Off,
    /// This build directory (`--ui-dir`).
    Dir(PathBuf),
    /// Look for the `mlflow` package of the Python on PATH at startup.
    Discover,
}

/// Settings with every default resolved.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub backend_store_uri: String,
    pub default_artifact_root: String,
    pub artifacts_destination: Option<crate::artifacts::Destination>,
    pub max_request_body_bytes: usize,
    pub log_format: String,
    /// Serve /metrics.
    pub expose_prometheus: bool,
    /// Refresh statistics this often (None: statistics off).
    pub statistics_interval: Option<std::time::Duration>,
    /// Basic auth (`--app-name basic-auth`); `None` when off.
    pub auth: Option<crate::auth::AuthConfig>,
    /// Model quality monitoring (`--monitoring-*`).
    pub monitoring: crate::quality::MonitoringSettings,
    /// The web UI build (`--ui-dir`, `--no-ui`).
    pub ui: UiSource,
    /// `--static-prefix`, validated (`/mlflow`), or `None`.
    pub static_prefix: Option<String>,
    /// `--sqlite-synchronous`.
    pub sqlite_sync: crate::db::SqliteSync,
    /// `--artifacts-only`: the artifact proxy alone (the backend store is an in-memory placeholder).
    pub artifacts_only: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field(
                "backend_store_uri",
                &crate::store::redact_uri(&self.backend_store_uri),
            )
            .field("default_artifact_root", &self.default_artifact_root)
            .field("artifacts_destination", &self.artifacts_destination)
            .field("max_request_body_bytes", &self.max_request_body_bytes)
            .field("expose_prometheus", &self.expose_prometheus)
            .field("statistics_interval", &self.statistics_interval)
            .field("auth", &self.auth)
            .field("monitoring", &self.monitoring)
            .field("ui", &self.ui)
            .field("static_prefix", &self.static_prefix)
            .field("artifacts_only", &self.artifacts_only)
            .finish()
    }
}

pub use crate::error::ConfigError;

impl Args {
    /// Resolve defaults, reading MLflow's variables through `env` (so tests need not touch the
    /// process environment).
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let Args {
            host,
            port,
            backend_store_uri,
            default_artifact_root,
            artifacts_destination,
            serve_artifacts: _,
            no_serve_artifacts,
            artifacts_only,
            workers,
            max_request_body_bytes,
            log_format,
            expose_prometheus,
            enable_statistics,
            statistics_update_interval,
            app_name,
            ui_dir,
            no_ui,
            static_prefix,
            sqlite_synchronous,
            monitoring,
            command: _,
        } = self;
        let sqlite_sync = crate::db::SqliteSync::parse(&sqlite_synchronous).ok_or_else(|| {
            ConfigError(format!(
                "--sqlite-synchronous must be full or normal, got {sqlite_synchronous:?}"
            ))
        })?;
        let monitoring = monitoring.resolve().map_err(ConfigError)?;
        let auth = match app_name.as_deref() {
            None | Some("") => None,
            Some("basic-auth") => Some(crate::auth::AuthConfig::resolve(&env)?),
            Some(other) => {
                return Err(ConfigError(format!(
                    "--app-name must be basic-auth (the only app), got {other:?}"
                )));
            }
        };
        let expose_prometheus = expose_prometheus.is_some() || env("MLFLOW_EXPOSE_PROMETHEUS").is_some();
        if enable_statistics && !expose_prometheus {
            return Err(ConfigError(
                "--enable-statistics needs --expose-prometheus".to_owned(),
            ));
        }
        let host = host
            .or_else(|| env("MLFLOW_HOST"))
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = match port {
            Some(p) => p,
            None => match env("MLFLOW_PORT") {
                Some(p) => p
                    .parse()
                    .map_err(|_| ConfigError(format!("MLFLOW_PORT is not a port number: {p:?}")))?,
                None => 5000,
            },
        };
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse()
                .map_err(|_| ConfigError(format!("--host must be an IP address, got {host:?}")))?
        };
        let backend_store_uri = backend_store_uri
            .or_else(|| env("MLFLOW_BACKEND_STORE_URI"))
            .unwrap_or_else(|| "sqlite:///mlkube.db".to_owned());
        let artifacts_only = artifacts_only || env("MLFLOW_ARTIFACTS_ONLY").is_some_and(|v| truthy(&v));
        if artifacts_only && no_serve_artifacts {
            return Err(ConfigError(
                "--artifacts-only serves the artifact proxy: it cannot go with --no-serve-artifacts"
                    .to_owned(),
            ));
        }
        // The backend store is not opened at all: nothing here reads or writes it.
        let backend_store_uri = if artifacts_only {
            "sqlite:///:memory:".to_owned()
        } else {
            backend_store_uri
        };
        let serve = !no_serve_artifacts;
        let destination = crate::artifacts::Destination::parse(
            &artifacts_destination
                .or_else(|| env("MLFLOW_ARTIFACTS_DESTINATION"))
                .unwrap_or_else(|| "mlartifacts".to_owned()),
        )
        .map_err(ConfigError)?;
        let default_artifact_root = default_artifact_root
            .or_else(|| env("MLFLOW_DEFAULT_ARTIFACT_ROOT"))
            .unwrap_or_else(|| {
                if serve {
                    "mlflow-artifacts:/".to_owned()
                } else {
                    destination.to_string()
                }
            });
        if max_request_body_bytes < 1024 {
            return Err(ConfigError(
                "--max-request-body-bytes must be at least 1024".to_owned(),
            ));
        }
        if let Some(w) = workers {
            tracing::debug!(
                workers = w,
                "--workers accepted for compatibility; one async process serves all"
            );
        }
        let ui = match (no_ui, ui_dir) {
            (true, _) => UiSource::Off,
            (false, Some(dir)) => UiSource::Dir(dir),
            (false, None) => UiSource::Discover,
        };
        let static_prefix = match static_prefix.or_else(|| env("_MLFLOW_STATIC_PREFIX")) {
            None => None,
            Some(p) if p.is_empty() => None,
            Some(p) => Some(validate_static_prefix(&p)?),
        };
        Ok(Settings {
            listen: SocketAddr::new(ip, port),
            backend_store_uri,
            default_artifact_root,
            artifacts_destination: serve.then_some(destination),
            max_request_body_bytes,
            log_format,
            expose_prometheus,
            statistics_interval: enable_statistics
                .then(|| std::time::Duration::from_secs(statistics_update_interval)),
            auth,
            monitoring,
            ui,
            static_prefix,
            sqlite_sync,
            artifacts_only,
        })
    }
}

/// MLflow's boolean environment values.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// MLflow's rule for `--static-prefix`: starts with `/`, does not end with one; we also refuse
/// characters that would need encoding in a URL path.
fn validate_static_prefix(prefix: &str) -> Result<String, ConfigError> {
    let well_formed = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains("//")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
        && !prefix.split('/').any(|seg| seg == "." || seg == "..");
    if well_formed {
        Ok(prefix.to_owned())
    } else {
        Err(ConfigError(format!(
            "--static-prefix must start with '/', not end with '/', and hold only letters, digits and -_.~ (got {prefix:?})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn command_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Args::try_parse_from(["mlkube-server"])
            .unwrap()
            .resolve(no_env)
            .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(s.backend_store_uri, "sqlite:///mlkube.db");
        assert_eq!(s.default_artifact_root, "mlflow-artifacts:/");
        assert_eq!(
            s.artifacts_destination,
            Some(crate::artifacts::Destination::Local(PathBuf::from("mlartifacts")))
        );
    }

    #[test]
    fn mlflow_names_and_env_fallbacks() {
        let args = Args::try_parse_from([
            "mlkube-server",
            "--host",
            "0.0.0.0",
            "--backend-store-uri",
            "postgresql://u:p@db/mlflow",
            "--workers",
            "4",
            "--no-serve-artifacts",
        ])
        .unwrap();
        let s = args
            .resolve(|k| (k == "MLFLOW_PORT").then(|| "6000".to_owned()))
            .unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:6000");
        assert!(s.artifacts_destination.is_none());
        assert!(!format!("{s:?}").contains(":p@"), "password must be redacted");
    }

    #[test]
    fn prometheus_flags_take_mlflow_forms() {
        let bare =
            Args::try_parse_from(["mlkube-server", "--expose-prometheus", "--enable-statistics"]).unwrap();
        let s = bare.resolve(no_env).unwrap();
        assert!(s.expose_prometheus);
        assert_eq!(s.statistics_interval, Some(std::time::Duration::from_secs(3600)));
        let with_dir = Args::try_parse_from([
            "mlkube-server",
            "--expose-prometheus",
            "/tmp/prom",
            "--statistics-update-interval",
            "5",
        ])
        .unwrap();
        let s = with_dir.resolve(no_env).unwrap();
        assert!(s.expose_prometheus && s.statistics_interval.is_none());
        let off = Args::try_parse_from(["mlkube-server"])
            .unwrap()
            .resolve(no_env)
            .unwrap();
        assert!(!off.expose_prometheus);
        let stats_alone = Args::try_parse_from(["mlkube-server", "--enable-statistics"]).unwrap();
        assert!(stats_alone.resolve(no_env).is_err());
        assert!(Args::try_parse_from(["mlkube-server", "--statistics-update-interval", "0"]).is_err());
    }

    #[test]
    fn basic_auth_app() {
        let off = Args::try_parse_from(["mlkube-server"])
            .unwrap()
            .resolve(no_env)
            .unwrap();
        assert!(off.auth.is_none());
        let args = Args::try_parse_from(["mlkube-server", "--app-name", "basic-auth"]).unwrap();
        let on = args
            .clone()
            .resolve(|k| (k == "MLKUBE_ADMIN_PASSWORD").then(|| "a-strong-secret-value".to_owned()))
            .unwrap();
        let auth = on.auth.as_ref().unwrap();
        assert_eq!(auth.admin_username, "admin");
        assert!(
            !format!("{on:?}").contains("a-strong-secret-value"),
            "password in Debug"
        );
        // No admin password, a weak one, or another app: refused (exit 64 in main).
        assert!(args.clone().resolve(no_env).is_err());
        assert!(
            args.resolve(|k| (k == "MLKUBE_ADMIN_PASSWORD").then(|| "short".to_owned()))
                .is_err()
        );
        let other = Args::try_parse_from(["mlkube-server", "--app-name", "oidc-auth"]).unwrap();
        assert!(other.resolve(no_env).is_err());
    }

    #[test]
    fn ui_and_static_prefix() {
        let s = Args::try_parse_from(["mlkube-server"])
            .unwrap()
            .resolve(no_env)
            .unwrap();
        assert_eq!(s.ui, UiSource::Discover);
        assert_eq!(s.static_prefix, None);
        let s = Args::try_parse_from(["mlkube-server", "--ui-dir", "/ui", "--static-prefix", "/mlflow"])
            .unwrap()
            .resolve(no_env)
            .unwrap();
        assert_eq!(s.ui, UiSource::Dir(PathBuf::from("/ui")));
        assert_eq!(s.static_prefix.as_deref(), Some("/mlflow"));
        let s = Args::try_parse_from(["mlkube-server", "--ui-dir", "/ui", "--no-ui"])
            .unwrap()
            .resolve(|k| (k == "_MLFLOW_STATIC_PREFIX").then(|| "/a/b".to_owned()))
            .unwrap();
        assert_eq!(s.ui, UiSource::Off);
        assert_eq!(s.static_prefix.as_deref(), Some("/a/b"));
        for bad in ["mlflow", "/mlflow/", "/", "/a//b", "/a/../b", "/a b", "/a?b"] {
            let args = Args::try_parse_from(["mlkube-server", "--static-prefix", bad]).unwrap();
            assert!(args.resolve(no_env).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Args::try_parse_from(["mlkube-server", "--port", "99999"]).is_err());
        let bad_host = Args::try_parse_from(["mlkube-server", "--host", "not an ip"]).unwrap();
        assert!(bad_host.resolve(no_env).is_err());
        let bad_env = Args::try_parse_from(["mlkube-server"]).unwrap();
        assert!(
            bad_env
                .resolve(|k| (k == "MLFLOW_PORT").then(|| "x".to_owned()))
                .is_err()
        );
    }

    #[test]
    fn artifacts_only_needs_no_store_and_serves_artifacts() {
        let s = Args::try_parse_from([
            "mlkube-server",
            "--artifacts-only",
            "--backend-store-uri",
            "postgresql://db/x",
        ])
        .unwrap()
        .resolve(no_env)
        .unwrap();
        assert!(s.artifacts_only);
        assert_eq!(
            s.backend_store_uri, "sqlite:///:memory:",
            "the configured store is never opened"
        );
        assert!(s.artifacts_destination.is_some());
        let from_env = Args::try_parse_from(["mlkube-server"])
            .unwrap()
            .resolve(|k| (k == "MLFLOW_ARTIFACTS_ONLY").then(|| "true".to_owned()))
            .unwrap();
        assert!(from_env.artifacts_only);
        let both =
            Args::try_parse_from(["mlkube-server", "--artifacts-only", "--no-serve-artifacts"]).unwrap();
        assert!(
            both.resolve(no_env)
                .unwrap_err()
                .to_string()
                .contains("--no-serve-artifacts")
        );
        let import = Args::try_parse_from(["mlkube-server", "import", "--from", "sqlite:///m.db"]).unwrap();
        assert!(
            matches!(import.command, Some(Command::Import(ref a)) if a.from == "sqlite:///m.db" && a.to.is_none())
        );
    }
}
