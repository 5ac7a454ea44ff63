//! The limits against idle and slow clients, over raw TCP: the header read timeout (connections that
//! send nothing, slow request heads, idle keep-alive connections), the request body timeout (408,
//! and time spent waiting for the client left out of the request timeout) and the connection cap
//! (503 over it). tests/reliability/sidecar_abuse.py runs the same against the binary at scale.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: these tests check that a limit acts, not how precisely, on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// Reads until the sidecar closes the connection: what it sent, and when it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Instant) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), Instant::now()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_elapsed) => panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Reads one response whose body is `Content-Length` long; the connection stays open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(SLACK, stream.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            if body.len() >= len {
                return text;
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--header-read-timeout", "0.3"]).await;
    let opened = Instant::now();
    let mut idle = connect(sidecar.proxy_addr()).await;
    let (sent, closed) = read_until_closed(&mut idle, SLACK).await;
    assert_eq!(sent, "", "closed without an answer: there was no request");
    assert!(
        closed - opened >= Duration::from_millis(250),
        "{:?}",
        closed - opened
    );
    // The sidecar still serves.
    assert_eq!(post(sidecar.proxy_addr(), "/invocations", "{}").await.status, 200);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--header-read-timeout", "0.5"]).await;
    let stream = connect(sidecar.proxy_addr()).await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 2\r\n\r\n{}" {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(SLACK, reader.read_to_end(&mut buf)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "not cut off within {SLACK:?}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "cut off after {took:?}"
    );
    assert!(upstream.seen().is_empty(), "the half-sent request went nowhere");
    trickle.abort();
    sidecar.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--header-read-timeout", "0.3"]).await;
    let mut stream = connect(sidecar.proxy_addr()).await;
    // Sent at once, so that the first request is not the one timed out.
    stream
        .write_all(b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answered = Instant::now();
    let (more, closed) = read_until_closed(&mut stream, SLACK).await;
    assert_eq!(more, "");
    assert!(
        closed - answered >= Duration::from_millis(250),
        "{:?}",
        closed - answered
    );
    sidecar.shutdown().await;
}

#[tokio::test]
async fn a_request_body_that_stops_coming_is_answered_408() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--request-body-timeout", "0.3"]).await;
    let mut stream = connect(sidecar.proxy_addr()).await;
    stream
        .write_all(b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 10\r\n\r\n{\"")
        .await
        .unwrap();
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, SLACK).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error_code":"REQUEST_TIMEOUT""#), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-request-id: "), "{answer}");
    assert!(closed - sent >= Duration::from_millis(250), "{:?}", closed - sent);

    // The client's fault, not the model's.
    let metrics = scrape(&sidecar).await;
    assert_eq!(metrics.error("client_4xx"), 1.0);
    assert_eq!(metrics.error("timeout"), 0.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn waiting_for_a_slow_client_does_not_count_against_the_request_timeout() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(
        &upstream.url(),
        &["--request-timeout", "0.4", "--request-body-timeout", "10"],
    )
    .await;
    let mut stream = connect(sidecar.proxy_addr()).await;
    stream
        .write_all(b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 12\r\n\r\n")
        .await
        .unwrap();
    // 0.9 s for the body, over twice the request timeout, in pauses shorter than it.
    for chunk in [&b"{\"in"[..], b"puts\"", b":[]}"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""received_bytes":12"#), "{answer}");
    sidecar.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_until_one_closes() {
    let upstream = Upstream::start().await;
    let sidecar = start_sidecar(&upstream.url(), &["--max-connections", "2"]).await;
    let addr = sidecar.proxy_addr();
    let first = connect(addr).await;
    let _second = connect(addr).await;

    // Accepting is asynchronous: the third connection is refused once the first two are counted.
    let mut refusal = String::new();
    for _ in 0..100 {
        let mut third = connect(addr).await;
        third
            .write_all(b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .await
            .unwrap();
        let (answer, _) = read_until_closed(&mut third, SLACK).await;
        if answer.starts_with("HTTP/1.1 503") {
            refusal = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refusal.contains("retry-after: 1"), "{refusal}");
    let (_, body) = refusal.split_once("\r\n\r\n").unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error_code"], "TOO_MANY_CONNECTIONS");

    drop(first);
    eventually("a connection is accepted again", || async {
        let mut stream = connect(addr).await;
        let request =
            b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        if stream.write_all(request).await.is_err() {
            return false;
        }
        let (answer, _) = read_until_closed(&mut stream, SLACK).await;
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
    sidecar.shutdown().await;
}
