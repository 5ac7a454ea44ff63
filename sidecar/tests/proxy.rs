//! The proxy against an in-process fake model server: forwarding, headers, limits, streaming, upstream
//! failures, metrics after known traffic, readiness and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn proxies_requests_and_counts_them_by_outcome() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--run-id", "run-42"]).await;
    let addr = sidecar.proxy_addr();

    for n in 0..3 {
        let answer = post(addr, "/invocations?n=1", format!(r#"{{"inputs":[[{n}]]}}"#)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["predictions"][0], 0.75);
        assert_eq!(answer.headers["content-type"], "application/json");
    }
    assert_eq!(
        post(addr, "/status/500", "{}").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        post(addr, "/status/503", "{}").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        post(addr, "/status/404", "{}").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(addr, "/status/302").await.status, StatusCode::FOUND);

    let seen = upstream.seen();
    assert_eq!(seen[0].path, "/invocations");
    assert_eq!(seen[0].body, Bytes::from_static(br#"{"inputs":[[0]]}"#));

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 7.0);
    assert_eq!(metrics.error("upstream_5xx"), 2.0);
    assert_eq!(metrics.error("client_4xx"), 1.0);
    assert_eq!(metrics.error("timeout"), 0.0);
    assert_eq!(metrics.error("upstream_unavailable"), 0.0);
    assert_eq!(metrics.value("mlflow_inference_in_flight", &[]), 0.0);
    assert_eq!(metrics.value("mlflow_inference_latency_seconds_count", &[]), 7.0);
    assert_eq!(
        metrics.value("mlflow_inference_latency_seconds_bucket", &[("le", "+Inf")]),
        7.0
    );
    assert_eq!(
        metrics.value("mlflow_inference_request_size_bytes_count", &[]),
        7.0
    );
    // Three 16-byte bodies and four 2-byte ones.
    assert_eq!(
        metrics.value("mlflow_inference_request_size_bytes_sum", &[]),
        3.0 * 16.0 + 3.0 * 2.0
    );
    assert_eq!(
        metrics.value("mlflow_inference_response_size_bytes_count", &[]),
        7.0
    );
    assert_eq!(metrics.value("mlflow_model_info", &[("run_id", "run-42")]), 1.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--upstream-health-interval", "3600"]).await;
    let admin = sidecar.metrics_addr();
    eventually("ready", || async {
        get(admin, "/readyz").await.status == StatusCode::OK
    })
    .await;
    let before = upstream.connections.load(Ordering::SeqCst);
    let client = client();
    for _ in 0..20 {
        let uri = format!("http://{}/invocations", sidecar.proxy_addr());
        let response = client
            .request(Request::post(uri).body(full("{}")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    // Sequential requests on one client connection share one upstream connection.
    assert_eq!(upstream.connections.load(Ordering::SeqCst) - before, 1);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_honoured_or_generated_and_returned() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let addr = sidecar.proxy_addr();

    let generated = post(addr, "/invocations", "{}").await;
    let id = generated.request_id().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(upstream.seen()[0].headers["x-request-id"], id.as_str());

    let request = Request::post("/invocations")
        .header("x-request-id", "client-chosen-17")
        .body(full("{}"))
        .unwrap();
    let honoured = send(addr, request).await;
    assert_eq!(honoured.request_id(), "client-chosen-17");
    assert_eq!(upstream.seen()[1].headers["x-request-id"], "client-chosen-17");

    // Errors made by the sidecar carry it too.
    let unreachable = start_sidecar(&format!("http://{}", closed_port().await), &[]).await;
    let request = Request::post("/invocations")
        .header("x-request-id", "abc")
        .body(full("{}"))
        .unwrap();
    assert_eq!(send(unreachable.proxy_addr(), request).await.request_id(), "abc");
    unreachable.shutdown().await;
    sidecar.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let request = Request::post("/invocations")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(full("{}"))
        .unwrap();
    assert_eq!(send(sidecar.proxy_addr(), request).await.status, StatusCode::OK);
    let headers = &upstream.seen()[0].headers;
    for dropped in ["x-hop-secret", "proxy-authorization", "te"] {
        assert!(
            !headers.contains_key(dropped),
            "{dropped} was forwarded: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["content-length"], "2");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_without_reaching_the_upstream() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--max-request-body-bytes", "1024"]).await;
    let addr = sidecar.proxy_addr();

    // Declared too large: refused before the upstream is called.
    let answer = post(addr, "/invocations", vec![b'1'; 1025]).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["error_code"], "REQUEST_TOO_LARGE");
    assert!(!answer.request_id().is_empty());
    assert!(upstream.seen().is_empty());

    // Chunked, no length: cut off once the limit is crossed.
    let (feed, body) = channel_body();
    feed.send(Ok(Bytes::from(vec![b'1'; 1000]))).unwrap();
    feed.send(Ok(Bytes::from(vec![b'1'; 1000]))).unwrap();
    drop(feed);
    let answer = send(addr, Request::post("/upload").body(body).unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Exactly at the limit is fine.
    assert_eq!(
        post(addr, "/invocations", vec![b'1'; 1024]).await.status,
        StatusCode::OK
    );

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 3.0);
    assert_eq!(metrics.error("client_4xx"), 2.0);
    assert_eq!(metrics.error("upstream_unavailable"), 0.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream() {
    let upstream = Upstream::start().await;
    let mut entered = upstream.on_enter();
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let (feed, body) = channel_body();
    let call = tokio::spawn(send(
        sidecar.proxy_addr(),
        Request::post("/upload").body(body).unwrap(),
    ));

    feed.send(Ok(Bytes::from_static(b"first chunk"))).unwrap();
    // The upstream holds the first chunk while the client has not sent the rest: nothing buffered it.
    assert_eq!(entered.recv().await.unwrap(), Bytes::from_static(b"first chunk"));
    feed.send(Ok(Bytes::from_static(b", second"))).unwrap();
    drop(feed);

    let answer = call.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["received_bytes"], 19);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn response_bodies_stream_to_the_client() {
    let upstream = Upstream::start().await;
    let feed = upstream.stream_feed();
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let uri = format!("http://{}/stream", sidecar.proxy_addr());
    let response = client()
        .request(Request::get(uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();

    feed.send(Ok(Bytes::from_static(b"token-1 "))).unwrap();
    // The client reads the first chunk while the upstream has not produced the second.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"token-1 "));
    assert_eq!(
        scrape(&sidecar).await.value("mlflow_inference_in_flight", &[]),
        1.0
    );

    feed.send(Ok(Bytes::from_static(b"token-2"))).unwrap();
    drop(feed);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"token-2"));

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_inference_in_flight", &[]), 0.0);
    assert_eq!(metrics.value("mlflow_inference_latency_seconds_count", &[]), 1.0);
    assert_eq!(
        metrics.value("mlflow_inference_response_size_bytes_sum", &[]),
        15.0
    );
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_stopped_upstream_gives_502_and_counts_upstream_unavailable() {
    let sidecar = start_sidecar(&format!("http://{}", closed_port().await), &[]).await;
    let answer = post(sidecar.proxy_addr(), "/invocations", "{}").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error_code"], "UPSTREAM_UNAVAILABLE");

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 1.0);
    assert_eq!(metrics.error("upstream_unavailable"), 1.0);
    assert_eq!(metrics.value("mlflow_inference_latency_seconds_count", &[]), 1.0);
    assert_eq!(
        get(sidecar.metrics_addr(), "/healthz").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(sidecar.metrics_addr(), "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let upstream = Upstream::start().await;
    let mut entered = upstream.on_enter();
    let sidecar = start_sidecar(&upstream.url(), &["--request-timeout", "0.2"]).await;
    let answer = post(sidecar.proxy_addr(), "/hold", "{}").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["error_code"], "UPSTREAM_TIMEOUT");
    assert!(entered.recv().await.is_some(), "the request reached the upstream");

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.error("timeout"), 1.0);
    assert_eq!(metrics.error("upstream_unavailable"), 0.0);
    assert_eq!(metrics.value("mlflow_inference_in_flight", &[]), 0.0);
    upstream.state.hold.add_permits(1);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn an_upstream_dying_mid_response_counts_as_unavailable() {
    let upstream = Upstream::start().await;
    let feed = upstream.stream_feed();
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    feed.send(Ok(Bytes::from_static(b"partial"))).unwrap();
    let uri = format!("http://{}/stream", sidecar.proxy_addr());
    let response = client()
        .request(Request::get(uri).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "partial"
    );
    feed.send(Err("model server crashed".into())).unwrap();
    assert!(body.collect().await.is_err(), "the client sees the cut");

    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.value("mlflow_predictions_total", &[]), 1.0);
    assert_eq!(metrics.error("upstream_unavailable"), 1.0);
    assert_eq!(metrics.value("mlflow_inference_in_flight", &[]), 0.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn readyz_follows_the_upstream_health_path() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let admin = sidecar.metrics_addr();
    eventually("ready", || async {
        get(admin, "/readyz").await.status == StatusCode::OK
    })
    .await;
    assert!(upstream.health_checks() > 0);

    upstream.state.unhealthy.store(true, Ordering::SeqCst);
    eventually("not ready", || async {
        get(admin, "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    upstream.state.unhealthy.store(false, Ordering::SeqCst);
    eventually("ready again", || async {
        get(admin, "/readyz").await.status == StatusCode::OK
    })
    .await;
    assert!(sidecar.readiness().is_ready());
    assert_eq!(get(admin, "/nope").await.status, StatusCode::NOT_FOUND);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_or_prometheus_text() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &[]).await;
    let request = Request::get("/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .body(empty())
        .unwrap();
    let openmetrics = send(sidecar.metrics_addr(), request).await;
    assert!(
        openmetrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let text = String::from_utf8(openmetrics.body.to_vec()).unwrap();
    assert!(text.contains("# TYPE mlflow_predictions counter\n"));
    assert!(text.ends_with("# EOF\n"));

    let plain = get(sidecar.metrics_addr(), "/metrics").await;
    assert_eq!(
        plain.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(plain.body.to_vec()).unwrap();
    assert!(text.contains("# TYPE mlflow_predictions_total counter\n"));
    assert!(!text.contains("# EOF"));
    sidecar.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones() {
    let upstream = Upstream::start().await;
    let mut entered = upstream.on_enter();
    let sidecar = start_sidecar(&upstream.url(), &["--shutdown-timeout", "30"]).await;
    let addr = sidecar.proxy_addr();
    let admin = sidecar.metrics_addr();
    eventually("ready", || async {
        get(admin, "/readyz").await.status == StatusCode::OK
    })
    .await;

    let in_flight = tokio::spawn(post(addr, "/hold", "{}"));
    entered.recv().await.unwrap();
    assert_eq!(
        scrape(&sidecar).await.value("mlflow_inference_in_flight", &[]),
        1.0
    );

    let shutdown = tokio::spawn(sidecar.shutdown());
    eventually("not ready while draining", || async {
        get(admin, "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    eventually("new connections refused", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the request in flight"
    );

    upstream.state.hold.add_permits(1);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["held"], true);
    let report = shutdown.await.unwrap();
    assert!(report.proxy.is_clean(), "{report:?}");
}

#[tokio::test]
async fn shutdown_cuts_off_requests_still_running_at_the_deadline() {
    let upstream = Upstream::start().await;
    let mut entered = upstream.on_enter();
    let sidecar = start_sidecar(&upstream.url(), &["--shutdown-timeout", "0.2"]).await;
    let addr = sidecar.proxy_addr();
    let uri = format!("http://{addr}/hold");
    let in_flight = tokio::spawn(client().request(Request::post(uri).body(full("{}")).unwrap()));
    entered.recv().await.unwrap();

    let report = sidecar.shutdown().await;
    assert_eq!(report.proxy.aborted_connections, 1);
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut-off client sees an error"
    );
    upstream.state.hold.add_permits(1);
}
