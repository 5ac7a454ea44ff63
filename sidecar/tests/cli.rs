//! The real `mlkube-sidecar` binary: configuration errors, environment fallbacks and SIGTERM.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use common::*;
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_mlkube-sidecar");

fn sidecar(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().args(args).envs(env.iter().copied());
    command
}

/// Runs a command that must refuse to start, returning its stderr.
fn refused(mut command: Command) -> String {
    let Output { status, stderr, .. } = command.output().unwrap();
    let stderr = String::from_utf8(stderr).unwrap();
    assert_eq!(status.code(), Some(64), "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_owned()
}

#[test]
fn a_missing_model_name_is_refused_with_exit_64_and_one_line() {
    let line = refused(sidecar(&["--model-version", "1"], &[]));
    assert!(
        line.contains("invalid configuration: --model-name (MLKUBE_MODEL_NAME) is required"),
        "{line}"
    );
}

#[test]
fn an_unparsable_flag_is_refused_with_exit_64_and_one_line() {
    let line = refused(sidecar(
        &[
            "--listen",
            "not-an-address",
            "--model-name",
            "m",
            "--model-version",
            "1",
        ],
        &[],
    ));
    assert!(line.contains("--listen"), "{line}");
    let line = refused(sidecar(&["--no-such-flag"], &[]));
    assert!(line.contains("--no-such-flag"), "{line}");
}

#[test]
fn a_bad_environment_value_is_refused_naming_its_variable() {
    let env = [
        ("MLKUBE_MODEL_NAME", "m"),
        ("MLKUBE_MODEL_VERSION", "1"),
        ("MLKUBE_CAPTURE_SAMPLE_RATE", "2"),
    ];
    let line = refused(sidecar(&[], &env));
    assert!(line.contains("MLKUBE_CAPTURE_SAMPLE_RATE"), "{line}");
}

#[test]
fn help_lists_the_flags_and_exits_0() {
    let output = sidecar(&["--help"], &[]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--metrics-listen",
        "--upstream",
        "--model-name",
        "--model-version",
        "--run-id",
        "--upstream-health-path",
        "--tracking-uri",
        "--capture-sample-rate",
        "--capture-max-payload-bytes",
        "--request-timeout",
        "--max-request-body-bytes",
        "--shutdown-timeout",
        "[env: MLKUBE_MODEL_NAME=]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

async fn free_port() -> SocketAddr {
    closed_port().await
}

#[tokio::test]
async fn the_binary_runs_from_environment_alone_and_stops_cleanly_on_sigterm() {
    let upstream = Upstream::start().await;
    let listen = free_port().await.to_string();
    let metrics = free_port().await.to_string();
    let upstream_url = upstream.url();
    let mut child = sidecar(
        &[],
        &[
            ("MLKUBE_LISTEN", listen.as_str()),
            ("MLKUBE_METRICS_LISTEN", metrics.as_str()),
            ("MLKUBE_UPSTREAM", upstream_url.as_str()),
            ("MLKUBE_MODEL_NAME", MODEL_NAME),
            ("MLKUBE_MODEL_VERSION", MODEL_VERSION),
            ("MLKUBE_RUN_ID", "run-from-env"),
            ("MLKUBE_UPSTREAM_HEALTH_INTERVAL", "0.05"),
            ("MLKUBE_LOG_FORMAT", "json"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let metrics_addr: SocketAddr = metrics.parse().unwrap();
    eventually("the sidecar is ready", || async {
        let Ok(client_answer) = client()
            .request(
                http::Request::get(format!("http://{metrics_addr}/readyz"))
                    .body(empty())
                    .unwrap(),
            )
            .await
        else {
            return false;
        };
        client_answer.status() == StatusCode::OK
    })
    .await;
    let answer = post(listen.parse().unwrap(), "/invocations", "{}").await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8(get(metrics_addr, "/metrics").await.body.to_vec()).unwrap();
    let scrape = Scrape::parse(text);
    assert_eq!(scrape.value("mlflow_predictions_total", &[]), 1.0);
    assert_eq!(
        scrape.value("mlflow_model_info", &[("run_id", "run-from-env")]),
        1.0
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    let (status, stderr) = output;
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    for line in stderr.lines() {
        let _: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
    }
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("in-flight requests drained"), "{stderr}");
}
