//! Property test of the header handling through the running proxy: requests with random end-to-end
//! headers, hop-by-hop headers in any case, a `Connection` header naming some of the others and
//! earlier `X-Forwarded-For` hops, sent as raw HTTP/1.1. What reaches the model server must have no
//! hop-by-hop header and none that `Connection` named, every other header unchanged, the client's
//! request id, and `X-Forwarded-For` with every earlier hop and then the client.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mlkube_sidecar::proxy::Sidecar;
use proptest::prelude::*;

const HOP_BY_HOP: [&str; 8] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "connection",
];

/// One model server and one sidecar for every case, on a runtime that outlives them.
struct Env {
    _runtime: tokio::runtime::Runtime,
    upstream: Upstream,
    sidecar: Sidecar,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (upstream, sidecar) = runtime.block_on(async {
            let upstream = Upstream::start().await;
            let sidecar = start_sidecar(&upstream.url(), &["--worker-threads", "1"]).await;
            (upstream, sidecar)
        });
        Env {
            _runtime: runtime,
            upstream,
            sidecar,
        }
    })
}

/// A header name as sent: each letter in either case.
fn any_case(name: String) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// A header value without leading or trailing whitespace (which HTTP/1.1 parsing drops).
fn value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,24}[!-~])?"
}

#[derive(Clone, Debug)]
struct Case {
    /// End-to-end headers (lower-case name, value), some repeated.
    extra: Vec<(String, String)>,
    /// Hop-by-hop headers as sent (name in any case, value).
    hop: Vec<(String, String)>,
    /// Which of `extra` the `Connection` header names.
    named: Vec<bool>,
    forwarded: Vec<String>,
}

fn case() -> impl Strategy<Value = Case> {
    let extra = proptest::collection::vec(("x-[a-z0-9-]{1,10}", value()), 0..8);
    let hop = proptest::collection::vec(
        (
            prop::sample::select(&HOP_BY_HOP[..7]).prop_flat_map(|n| any_case(n.to_owned())),
            value(),
        ),
        0..5,
    );
    let forwarded = proptest::collection::vec("10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}", 0..3);
    (extra, hop, forwarded).prop_flat_map(|(extra, hop, forwarded)| {
        let n = extra.len();
        (proptest::collection::vec(any::<bool>(), n)).prop_map(move |named| Case {
            extra: extra.clone(),
            hop: hop.clone(),
            named,
            forwarded: forwarded.clone(),
        })
    })
}

/// Sends the case with request id `id` and returns the response's status line.
fn send(case: &Case, id: &str) -> String {
    let mut connection: Vec<String> = vec!["close".to_owned()];
    for ((name, _), named) in case.extra.iter().zip(&case.named) {
        if *named {
            connection.push(name.to_ascii_uppercase());
        }
    }
    let mut request = format!(
        "POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Length: 2\r\nX-Request-ID: {id}\r\n\
         Connection: {}\r\n",
        connection.join(" ,\t")
    );
    for (name, value) in case.extra.iter().chain(&case.hop) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    for hop in &case.forwarded {
        request.push_str(&format!("X-Forwarded-For: {hop}\r\n"));
    }
    request.push_str("\r\n{}");
    let mut stream = std::net::TcpStream::connect(env().sidecar.proxy_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn only_end_to_end_headers_reach_the_model_server(case in case()) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!("headers-case-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let status = send(&case, &id);
        prop_assert_eq!(status.as_str(), "HTTP/1.1 200 OK");

        let seen = env().upstream.seen();
        let arrived = seen.iter().find(|s| s.headers["x-request-id"] == id.as_str()).unwrap();
        let headers = &arrived.headers;
        for name in HOP_BY_HOP {
            prop_assert!(!headers.contains_key(name), "{} forwarded", name);
        }
        for ((name, _), named) in case.extra.iter().zip(&case.named) {
            let sent: Vec<&str> = case.extra.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
            let got: Vec<&str> = headers.get_all(name.as_str()).iter().map(|v| v.to_str().unwrap()).collect();
            let named_anywhere = case.extra.iter().zip(&case.named).any(|((n, _), named)| n == name && *named);
            if named_anywhere {
                prop_assert!(got.is_empty(), "{} was named by Connection but forwarded", name);
            } else {
                prop_assert!(!named);
                prop_assert_eq!(got, sent, "{}", name);
            }
        }
        let mut hops = case.forwarded.clone();
        hops.push("127.0.0.1".to_owned());
        prop_assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        prop_assert_eq!(headers["x-forwarded-for"].to_str().unwrap(), hops.join(", "));
    }
}
