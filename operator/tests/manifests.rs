//! Schema checks of the generated manifests with external tools. They are ignored by default
//! because a fresh machine lacks the tools; `scripts/validate-manifests.sh` installs them and runs
//! these tests with `--ignored`. Run by hand without the tools they fail, never pass.
//!
//! Tools are looked up on `PATH`, after `$MLKUBE_VALIDATE_VENV/bin` when that is set.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> PathBuf {
    if let Ok(venv) = std::env::var("MLKUBE_VALIDATE_VENV") {
        // A relative venv path is relative to the repository root, not to the test's directory.
        let candidate = root().join(venv).join("bin").join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH; scripts/validate-manifests.sh installs it"))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {dir}");
    files
}

fn run(mut command: Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI); scripts/validate-manifests.sh installs it and runs ignored tests"]
fn rendered_objects_pass_kubernetes_validate_strict() {
    let mut command = Command::new(tool("kubernetes-validate"));
    command.args(["--strict", "--kubernetes-version", "1.33.0"]);
    command.args(yaml_files("deploy/rendered"));
    let text = run(command);
    for kind in [
        "deployment/",
        "service/",
        "persistentvolumeclaim/",
        "daemonset/",
        "poddisruptionbudget/",
        "horizontalpodautoscaler/",
        "ingress/",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "no {kind} validated:\n{text}"
        );
    }
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
#[ignore = "needs python3 with jsonschema and pyyaml; scripts/validate-manifests.sh installs them and runs ignored tests"]
fn examples_and_monitoring_objects_match_their_schemas() {
    let mut command = Command::new(tool("python3"));
    command.arg(root().join("operator/tests/validate_manifests.py"));
    command.arg(root().join("crds"));
    command.args(yaml_files("deploy/examples"));
    command.args(yaml_files("deploy/rendered"));
    let text = run(command);
    assert!(text.contains(", 0 problems"), "{text}");
}

#[test]
#[ignore = "needs promtool (Debian prometheus); scripts/validate-manifests.sh installs it and runs ignored tests"]
fn alert_rules_pass_promtool_check() {
    let mut command = Command::new(tool("promtool"));
    command.args(["check", "rules"]);
    command.arg(root().join("deploy/rules/modeldeployment-rules.yaml"));
    let text = run(command);
    assert!(text.contains("SUCCESS"), "{text}");
}
