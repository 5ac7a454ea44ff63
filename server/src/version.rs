//! The MLflow version this server speaks for: reported by `/version`, server-info and the
//! `mlflow_info` metric.

pub const MLFLOW_COMPAT_VERSION: &str = "2.17.2";
