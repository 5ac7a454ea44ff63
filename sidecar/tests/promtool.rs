//! `promtool check metrics` (Prometheus' own linter) accepts what `/metrics` serves.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test]
#[ignore = "needs promtool from Debian's prometheus package; scripts/test-all installs it and runs ignored tests"]
async fn promtool_accepts_the_metrics_after_traffic() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Accept).await;
    let url = tracker.url();
    let sidecar = start_sidecar(
        &upstream.url(),
        &[
            "--run-id",
            "r1",
            "--tracking-uri",
            &url,
            "--capture-sample-rate",
            "1",
            "--capture-batch-size",
            "1",
        ],
    )
    .await;
    let addr = sidecar.proxy_addr();
    post(addr, "/invocations", "{}").await;
    post(addr, "/status/500", "{}").await;
    post(addr, "/status/400", "{}").await;
    tracker.next_batch().await;
    let text = scrape(&sidecar).await.text;
    sidecar.shutdown().await;

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: apt-get install -y --no-install-recommends prometheus");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed ({:?}):\n{}{}\non:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
