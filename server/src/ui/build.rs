//! Finding MLflow's prebuilt web UI: the React build that ships inside the `mlflow` Python wheel
//! (`mlflow/server/js/build`). It is never part of this repository; the server takes it from
//! `--ui-dir` or from the `mlflow` package that the Python on PATH imports (docs/web-ui.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A UI build directory that holds an `index.html`.
#[derive(Debug, Clone)]
pub struct UiBuild {
    dir: PathBuf,
}

/// Why no UI is served; shown on `/` and logged at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoUi(pub String);

impl UiBuild {
    /// A build in `dir`, which must contain `index.html`.
    pub fn open(dir: &Path) -> Result<Self, NoUi> {
        if dir.join("index.html").is_file() {
            Ok(Self {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(NoUi(format!(
                "{} does not contain MLflow's UI build (no index.html)",
                dir.display()
            )))
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `mlflow` package version next to the build (`mlflow/version.py`), when readable.
    pub fn mlflow_version(&self) -> Option<String> {
        // build -> js -> server -> mlflow
        let version_py = self.dir.parent()?.parent()?.parent()?.join("version.py");
        let text = std::fs::read_to_string(version_py).ok()?;
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("VERSION")?.trim_start();
            let value = rest.strip_prefix('=')?.trim();
            Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
        })
    }
}

/// What the Python interpreter prints: the directory of the `mlflow` package, found without
/// importing it (importing MLflow takes seconds).
const FIND_MLFLOW: &str = "import importlib.util as u, os, sys\n\
s = u.find_spec('mlflow')\n\
sys.stdout.write(os.path.dirname(s.origin) if s and s.origin else '')";

/// Look for the build of the `mlflow` package installed for `python3` (then `python`) on PATH.
pub async fn discover() -> Result<UiBuild, NoUi> {
    let mut tried = Vec::new();
    for interpreter in ["python3", "python"] {
        match mlflow_package_dir(interpreter).await {
            Some(package) => {
                let build = package.join("server").join("js").join("build");
                match UiBuild::open(&build) {
                    Ok(found) => return Ok(found),
                    Err(NoUi(why)) => tried.push(format!("{interpreter}: {why}")),
                }
            }
            None => tried.push(format!("{interpreter}: no importable mlflow package")),
        }
    }
    Err(NoUi(format!(
        "MLflow's web UI was not found ({}); `pip install mlflow` for the python3 on PATH, or pass --ui-dir",
        tried.join("; ")
    )))
}

async fn mlflow_package_dir(interpreter: &str) -> Option<PathBuf> {
    let interpreter = interpreter.to_owned();
    let probe = tokio::task::spawn_blocking(move || {
        std::process::Command::new(interpreter)
            .args(["-c", FIND_MLFLOW])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(20), probe)
        .await
        .ok()?
        .ok()?
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn open_needs_an_index_and_reads_the_version() {
        let tmp = tempfile::tempdir().unwrap();
        let build = tmp.path().join("mlflow/server/js/build");
        std::fs::create_dir_all(&build).unwrap();
        assert!(UiBuild::open(&build).is_err());
        std::fs::write(build.join("index.html"), "<html></html>").unwrap();
        let ui = UiBuild::open(&build).unwrap();
        assert_eq!(ui.mlflow_version(), None);
        std::fs::write(
            tmp.path().join("mlflow/version.py"),
            "# c\nVERSION = \"3.17.2\"\n",
        )
        .unwrap();
        assert_eq!(ui.mlflow_version().as_deref(), Some("3.17.2"));
    }
}
