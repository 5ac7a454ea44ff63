//! Command line of `mlkube-node-sampler` (every flag also reads `MLKUBE_<FLAG>`), validated once at
//! startup into a [`Config`] with every default resolved.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::{ArgAction, Parser};
use http::HeaderValue;
use http::uri::{Scheme, Uri};

use super::gpu::GpuConfig;
use mlkube_sidecar::telemetry::LogFormat;

/// Where the DaemonSet mounts the host's `/sys` and `/` (operator/src/build/daemonset.rs).
pub const HOST_SYS_MOUNT: &str = "/host/sys";
pub const HOST_ROOT_MOUNT: &str = "/host/root";

/// MLflow's defaults for system metrics (`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`,
/// `MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING`).
pub const MLFLOW_SAMPLING_INTERVAL: Duration = Duration::from_secs(10);
pub const MLFLOW_SAMPLES_BEFORE_LOGGING: u32 = 1;

/// `mlkube-node-sampler`: host and GPU metrics of one node on /metrics (MLflow's system metric
/// names), GPU memory per pod, and MLflow system metrics logged into the runs of the pods on it.
#[derive(Clone, Parser)]
#[command(name = "mlkube-node-sampler", version, about, long_about = None)]
pub struct Args {
    /// Address that serves /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "MLKUBE_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9400"
    )]
    pub listen: SocketAddr,

    /// Seconds between two samples of the node; /metrics serves the latest (a scrape never samples).
    #[arg(long, env = "MLKUBE_INTERVAL", value_name = "SECS", default_value_t = 10.0)]
    pub interval: f64,

    /// Name of this node: the `node` label, and the pods watched (`spec.nodeName`). Default: the
    /// host name.
    #[arg(long, env = "MLKUBE_NODE_NAME", value_name = "N")]
    pub node_name: Option<String>,

    /// Tracking server for pods that name a run (annotation `mlkube.io/run-id` or env
    /// `MLFLOW_RUN_ID`) but no server (annotation `mlkube.io/tracking-uri` or env
    /// `MLFLOW_TRACKING_URI`).
    #[arg(long, env = "MLKUBE_TRACKING_URI_DEFAULT", value_name = "URL")]
    pub tracking_uri_default: Option<String>,

    /// Basic-auth user for the tracking servers.
    #[arg(long, env = "MLKUBE_TRACKING_USERNAME", value_name = "USER")]
    pub tracking_username: Option<String>,

    /// Basic-auth password for the tracking servers (prefer the environment variable).
    #[arg(
        long,
        env = "MLKUBE_TRACKING_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub tracking_password: Option<String>,

    /// The host's procfs (run with hostPID so that it shows the host's processes).
    #[arg(long, env = "MLKUBE_PROC_ROOT", value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,

    /// The host's sysfs: network interfaces and, below fs/cgroup, the cgroup tree. Default:
    /// /host/sys when it exists (the DaemonSet's mount), else /sys.
    #[arg(long, env = "MLKUBE_SYS_ROOT", value_name = "DIR")]
    pub sys_root: Option<PathBuf>,

    /// The cgroup mount. Default: <sys-root>/fs/cgroup.
    #[arg(long, env = "MLKUBE_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// A directory on the filesystem whose usage is the disk metrics. Default: /host/root when it
    /// exists (the DaemonSet's mount of the host's /), else /.
    #[arg(long, env = "MLKUBE_ROOT_FS", value_name = "DIR")]
    pub root_fs: Option<PathBuf>,

    /// The NVML library to load. Default: libnvidia-ml.so.1, then libnvidia-ml.so.
    #[arg(long, env = "MLKUBE_NVML_LIBRARY", value_name = "PATH")]
    pub nvml_library: Option<PathBuf>,

    /// Do not look for GPUs.
    #[arg(long, env = "MLKUBE_DISABLE_GPU", action = ArgAction::SetTrue)]
    pub disable_gpu: bool,

    /// Kubeconfig for the pod watch. Default: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, env = "MLKUBE_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Do not watch pods: per-pod GPU series carry the pod UID instead of its name, and no run
    /// is logged to.
    #[arg(long, env = "MLKUBE_DISABLE_POD_WATCH", action = ArgAction::SetTrue)]
    pub disable_pod_watch: bool,

    /// Log line format.
    #[arg(long, env = "MLKUBE_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A configuration the sampler refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {flag} ({env}) {value:?}: {why}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "--tracking-username and --tracking-password (MLKUBE_TRACKING_USERNAME, MLKUBE_TRACKING_PASSWORD) go together"
    )]
    HalfCredentials,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub interval: Duration,
    pub node_name: String,
    pub tracking_uri_default: Option<String>,
    /// `Authorization` header value for the tracking servers.
    pub tracking_auth: Option<HeaderValue>,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub root_fs: PathBuf,
    pub gpu: GpuConfig,
    pub pod_watch: PodWatch,
    /// MLflow's sampling defaults for runs whose pods do not set their own.
    pub run_sampling_interval: Duration,
    pub run_samples_before_logging: u32,
}

/// Where pod names and runs come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodWatch {
    /// In-cluster service account, else the usual kubeconfig.
    Infer,
    Kubeconfig(PathBuf),
    Disabled,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("interval", &self.interval)
            .field("node_name", &self.node_name)
            .field("tracking_uri_default", &self.tracking_uri_default)
            .field(
                "tracking_auth",
                &self.tracking_auth.as_ref().map(|_| "<redacted>"),
            )
            .field("proc_root", &self.proc_root)
            .field("sys_root", &self.sys_root)
            .field("cgroup_root", &self.cgroup_root)
            .field("root_fs", &self.root_fs)
            .field("gpu", &self.gpu)
            .field("pod_watch", &self.pod_watch)
            .finish()
    }
}

impl Args {
    /// Resolves defaults and checks every value.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let Args {
            listen,
            interval,
            node_name,
            tracking_uri_default,
            tracking_username,
            tracking_password,
            proc_root,
            sys_root,
            cgroup_root,
            root_fs,
            nvml_library,
            disable_gpu,
            kubeconfig,
            disable_pod_watch,
            log_format: _,
        } = self;
        let interval = Duration::try_from_secs_f64(interval)
            .ok()
            .filter(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_secs(3600))
            .ok_or_else(|| ConfigError::Invalid {
                flag: "--interval",
                env: "MLKUBE_INTERVAL",
                value: interval.to_string(),
                why: "must be between 0.01 and 3600 seconds".to_owned(),
            })?;
        let node_name = match node_name.map(|n| n.trim().to_owned()) {
            Some(name) if !name.is_empty() => name,
            Some(name) => {
                return Err(ConfigError::Invalid {
                    flag: "--node-name",
                    env: "MLKUBE_NODE_NAME",
                    value: name,
                    why: "must not be empty".to_owned(),
                });
            }
            None => sysinfo::System::host_name().unwrap_or_else(|_| "localhost".to_owned()),
        };
        let tracking_uri_default = tracking_uri_default
            .map(|uri| {
                validate_tracking_uri(&uri)
                    .map(|()| uri.trim_end_matches('/').to_owned())
                    .map_err(|why| ConfigError::Invalid {
                        flag: "--tracking-uri-default",
                        env: "MLKUBE_TRACKING_URI_DEFAULT",
                        value: uri,
                        why,
                    })
            })
            .transpose()?;
        let tracking_auth = match (tracking_username, tracking_password) {
            (Some(user), Some(password)) => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| ConfigError::HalfCredentials)?;
                value.set_sensitive(true);
                Some(value)
            }
            (None, None) => None,
            _ => return Err(ConfigError::HalfCredentials),
        };
        let default_mount = |mount: &str, fallback: &str| {
            if Path::new(mount).is_dir() {
                PathBuf::from(mount)
            } else {
                PathBuf::from(fallback)
            }
        };
        let sys_root = sys_root.unwrap_or_else(|| default_mount(HOST_SYS_MOUNT, "/sys"));
        let cgroup_root = cgroup_root.unwrap_or_else(|| sys_root.join("fs/cgroup"));
        let root_fs = root_fs.unwrap_or_else(|| default_mount(HOST_ROOT_MOUNT, "/"));
        let gpu = match (disable_gpu, nvml_library) {
            (true, _) => GpuConfig::Disabled,
            (false, Some(path)) => GpuConfig::NvmlLibrary(path),
            (false, None) => GpuConfig::Nvml,
        };
        let pod_watch = match (disable_pod_watch, kubeconfig) {
            (true, _) => PodWatch::Disabled,
            (false, Some(path)) => PodWatch::Kubeconfig(path),
            (false, None) => PodWatch::Infer,
        };
        Ok(Config {
            listen,
            interval,
            node_name,
            tracking_uri_default,
            tracking_auth,
            proc_root,
            sys_root,
            cgroup_root,
            root_fs,
            gpu,
            pod_watch,
            run_sampling_interval: MLFLOW_SAMPLING_INTERVAL,
            run_samples_before_logging: MLFLOW_SAMPLES_BEFORE_LOGGING,
        })
    }
}

/// An http(s) URL with a host; the reason otherwise.
pub fn validate_tracking_uri(uri: &str) -> Result<(), String> {
    let parsed: Uri = uri
        .parse()
        .map_err(|err: http::uri::InvalidUri| err.to_string())?;
    let scheme_ok = parsed.scheme() == Some(&Scheme::HTTP) || parsed.scheme() == Some(&Scheme::HTTPS);
    if !scheme_ok || parsed.authority().is_none() {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    if parsed.query().is_some() {
        return Err("must not have a query".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("mlkube-node-sampler").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn the_design_command_line() {
        let config = parse(&[
            "--listen",
            "0.0.0.0:9400",
            "--interval",
            "15",
            "--node-name",
            "gpu-node-1",
            "--tracking-uri-default",
            "http://mlflow.ml.svc:5000/",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9400".parse().unwrap());
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.node_name, "gpu-node-1");
        assert_eq!(
            config.tracking_uri_default.as_deref(),
            Some("http://mlflow.ml.svc:5000")
        );
        assert_eq!(config.pod_watch, PodWatch::Infer);
        assert_eq!(config.gpu, GpuConfig::Nvml);
        assert_eq!(config.run_sampling_interval, Duration::from_secs(10));
        assert_eq!(config.run_samples_before_logging, 1);
    }

    #[test]
    fn defaults_run_with_no_flags() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9400".parse().unwrap());
        assert_eq!(config.interval, Duration::from_secs(10));
        assert!(!config.node_name.is_empty());
        assert_eq!(config.proc_root, PathBuf::from("/proc"));
        assert_eq!(config.cgroup_root, config.sys_root.join("fs/cgroup"));
        assert!(config.tracking_auth.is_none());
    }

    #[test]
    fn host_mounts_and_switches() {
        let config = parse(&[
            "--sys-root",
            "/h/sys",
            "--root-fs",
            "/h/root",
            "--proc-root",
            "/h/proc",
            "--disable-gpu",
            "--disable-pod-watch",
        ])
        .unwrap();
        assert_eq!(config.cgroup_root, PathBuf::from("/h/sys/fs/cgroup"));
        assert_eq!(config.root_fs, PathBuf::from("/h/root"));
        assert_eq!(config.proc_root, PathBuf::from("/h/proc"));
        assert_eq!(config.gpu, GpuConfig::Disabled);
        assert_eq!(config.pod_watch, PodWatch::Disabled);
        let config = parse(&["--kubeconfig", "/k", "--nvml-library", "/lib/x.so"]).unwrap();
        assert_eq!(config.pod_watch, PodWatch::Kubeconfig(PathBuf::from("/k")));
        assert_eq!(config.gpu, GpuConfig::NvmlLibrary(PathBuf::from("/lib/x.so")));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_and_env_named() {
        for (args, expected) in [
            (vec!["--interval", "0"], "invalid --interval (MLKUBE_INTERVAL)"),
            (vec!["--interval=-1"], "invalid --interval (MLKUBE_INTERVAL)"),
            (vec!["--node-name", " "], "invalid --node-name (MLKUBE_NODE_NAME)"),
            (
                vec!["--tracking-uri-default", "file:///tmp/mlruns"],
                "invalid --tracking-uri-default (MLKUBE_TRACKING_URI_DEFAULT)",
            ),
            (vec!["--tracking-username", "u"], "go together"),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        let config = parse(&["--tracking-username", "u", "--tracking-password", "secret"]).unwrap();
        assert_eq!(config.tracking_auth.as_ref().unwrap(), "Basic dTpzZWNyZXQ=");
        assert!(!format!("{config:?}").contains("dTpzZWNyZXQ"));
    }
}
