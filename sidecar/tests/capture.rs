//! Payload capture against an in-process tracking server: sampling, the size cap, batching, drop
//! counting when the queue is full or the server is down, and the flush on shutdown.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};

fn capture_flags<'a>(tracker: &'a str, rate: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--tracking-uri", tracker, "--capture-sample-rate", rate];
    flags.extend_from_slice(extra);
    flags
}

fn predictions(batch: &Value) -> &Vec<Value> {
    batch["predictions"].as_array().unwrap()
}

#[tokio::test]
async fn rate_one_captures_every_pair_in_batches_and_flushes_on_shutdown() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Accept).await;
    let url = tracker.url();
    let flags = capture_flags(
        &url,
        "1",
        &["--capture-batch-size", "2", "--capture-flush-interval", "3600"],
    );
    let sidecar = start_sidecar(&upstream.url(), &flags).await;

    let mut ids = Vec::new();
    for n in 0..5 {
        let answer = post(
            sidecar.proxy_addr(),
            "/invocations",
            format!(r#"{{"inputs":[[{n}, 1.5]]}}"#),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        ids.push(answer.request_id().to_owned());
    }
    let first = tracker.next_batch().await;
    let second = tracker.next_batch().await;
    assert_eq!(predictions(&first).len(), 2);
    assert_eq!(predictions(&second).len(), 2);
    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlkube_capture_enqueued_total", &[]), 5.0);
    eventually("4 sent", || async {
        scrape(&sidecar).await.value("mlkube_capture_sent_total", &[]) == 4.0
    })
    .await;

    // The fifth waits for a full batch or the interval; shutdown flushes it.
    sidecar.shutdown().await;
    let last = tracker.next_batch().await;
    assert_eq!(predictions(&last).len(), 1);

    let rows: Vec<&Value> = [&first, &second, &last]
        .into_iter()
        .flat_map(predictions)
        .collect();
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row["request_id"], ids[n].as_str());
        assert_eq!(row["model_name"], MODEL_NAME);
        assert_eq!(row["model_version"], MODEL_VERSION);
        assert!(
            row["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
            "milliseconds: {row}"
        );
        assert_eq!(row["inputs"], json!({"inputs": [[n, 1.5]]}));
        assert_eq!(
            row["outputs"],
            json!({"predictions": [0.75], "received_bytes": 21})
        );
    }
}

#[tokio::test]
async fn rate_zero_captures_nothing() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Accept).await;
    let url = tracker.url();
    let sidecar = start_sidecar(&upstream.url(), &capture_flags(&url, "0", &[])).await;
    for _ in 0..10 {
        assert_eq!(
            post(sidecar.proxy_addr(), "/invocations", "{}").await.status,
            StatusCode::OK
        );
    }
    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 10.0);
    assert_eq!(metrics.value("mlkube_capture_enqueued_total", &[]), 0.0);
    sidecar.shutdown().await;
    assert!(tracker.batches.try_recv().is_err(), "nothing was posted");
}

#[tokio::test]
async fn payloads_over_the_cap_and_failed_requests_are_not_captured() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Accept).await;
    let url = tracker.url();
    let flags = capture_flags(&url, "1", &["--capture-max-payload-bytes", "100"]);
    let sidecar = start_sidecar(&upstream.url(), &flags).await;
    let addr = sidecar.proxy_addr();

    assert_eq!(
        post(addr, "/invocations", r#"{"small":true}"#).await.status,
        StatusCode::OK
    );
    // A request over the cap, declared by Content-Length.
    let big_request = format!(r#"{{"inputs":"{}"}}"#, "x".repeat(200));
    assert_eq!(
        post(addr, "/invocations", big_request).await.status,
        StatusCode::OK
    );
    // A response over the cap.
    assert_eq!(post(addr, "/big", "{}").await.status, StatusCode::OK);
    // Not a prediction.
    assert_eq!(
        post(addr, "/status/500", "{}").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let metrics = scrape(&sidecar).await;
    assert_eq!(
        metrics.value("mlkube_capture_skipped_total", &[("reason", "too_large")]),
        2.0
    );
    assert_eq!(metrics.value("mlkube_capture_enqueued_total", &[]), 1.0);
    sidecar.shutdown().await;
    let batch = tracker.next_batch().await;
    assert_eq!(predictions(&batch).len(), 1);
    assert_eq!(predictions(&batch)[0]["inputs"], json!({"small": true}));
    assert!(tracker.batches.try_recv().is_err());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking_requests() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Hold).await;
    let url = tracker.url();
    let flags = capture_flags(
        &url,
        "1",
        &["--capture-queue-size", "1", "--capture-batch-size", "1"],
    );
    let sidecar = start_sidecar(&upstream.url(), &flags).await;
    let addr = sidecar.proxy_addr();

    // The first pair is taken off the queue and its upload hangs in the tracking server.
    assert_eq!(post(addr, "/invocations", "[1]").await.status, StatusCode::OK);
    tracker.entered.recv().await.unwrap();
    // The second fills the queue; the next three find it full. None of them waits.
    for n in 2..=5 {
        assert_eq!(
            post(addr, "/invocations", format!("[{n}]")).await.status,
            StatusCode::OK
        );
    }
    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlkube_capture_enqueued_total", &[]), 2.0);
    assert_eq!(
        metrics.value("mlkube_capture_dropped_total", &[("reason", "queue_full")]),
        3.0
    );
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 5.0);

    tracker.hold.add_permits(2);
    assert_eq!(predictions(&tracker.next_batch().await)[0]["inputs"], json!([1]));
    assert_eq!(predictions(&tracker.next_batch().await)[0]["inputs"], json!([2]));
    eventually("2 sent", || async {
        scrape(&sidecar).await.value("mlkube_capture_sent_total", &[]) == 2.0
    })
    .await;
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_down_tracking_server_drops_and_counts_without_failing_requests() {
    let upstream = Upstream::start().await;
    let url = format!("http://{}", closed_port().await);
    let flags = capture_flags(&url, "1", &["--capture-batch-size", "1"]);
    let sidecar = start_sidecar(&upstream.url(), &flags).await;
    for _ in 0..3 {
        assert_eq!(
            post(sidecar.proxy_addr(), "/invocations", "{}").await.status,
            StatusCode::OK
        );
    }
    eventually("3 dropped", || async {
        scrape(&sidecar)
            .await
            .value("mlkube_capture_dropped_total", &[("reason", "send_failed")])
            == 3.0
    })
    .await;
    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlkube_capture_sent_total", &[]), 0.0);
    assert_eq!(metrics.error("upstream_unavailable"), 0.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn text_payloads_are_sent_as_json_strings() {
    let upstream = Upstream::start().await;
    let mut tracker = Tracker::start(TrackerMode::Accept).await;
    let url = tracker.url();
    let sidecar = start_sidecar(&upstream.url(), &capture_flags(&url, "1", &[])).await;
    let answer = post(sidecar.proxy_addr(), "/invocations", "x,y\n1,2\n").await;
    assert_eq!(answer.status, StatusCode::OK);
    sidecar.shutdown().await;
    let batch = tracker.next_batch().await;
    assert_eq!(predictions(&batch)[0]["inputs"], "x,y\n1,2\n");
}
