//! A 1 GiB artifact through mlkube-server's artifact proxy against the same transfer straight to
//! the S3 server, on 127.0.0.1 (docs/architecture.md, "Artifacts").
//!
//! Run: `scripts/bench-artifacts` (optimised build; it starts the moto S3 server from
//! `.cache/venvs/moto` and exports `MLFLOW_S3_ENDPOINT_URL` and test credentials). Knob:
//! `MLKUBE_BENCH_ARTIFACT_MIB` (default 1024).
//!
//! Direct: this process writes and reads the object with the same object_store client the server
//! uses (multipart upload, streamed download). Proxied: one streamed HTTP PUT and one GET through
//! mlkube-server, which does the same against the store. The ratio is the proxy's cost; the
//! server's resident memory is sampled during the proxied transfers (its bound is
//! `PART_SIZE` × `PARTS_IN_FLIGHT` of buffered parts plus the process itself). Timing is reported,
//! never asserted.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mlkube_server::artifacts::{ArtifactRoot, Destination};

const MIB: usize = 1024 * 1024;

/// A streamed request body.
type Streamed = StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;
const BUCKET: &str = "bench";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn wait_for(url: &str) {
    let client: Client<_, http_body_util::Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..300 {
        if let Ok(r) = client.get(url.parse().unwrap()).await
            && r.status().as_u16() < 500
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer");
}

/// `total` bytes as 1 MiB chunks of one pseudo-random block (rotated, so no two chunks match).
fn payload(block: &Bytes, total: usize) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let block = block.clone();
    stream::iter(0..total.div_ceil(MIB)).map(move |i| {
        let len = MIB.min(total - i * MIB);
        let start = i % 4096;
        let mut chunk = Vec::with_capacity(len);
        chunk.extend_from_slice(&block[start..]);
        chunk.extend_from_slice(&block[..start]);
        chunk.truncate(len);
        Bytes::from(chunk)
    })
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

/// Samples the server's RSS every 50 ms while `running`; the peak in MiB.
fn sample_rss(pid: u32, peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = (rss_mib(pid) * 1024.0) as u64;
            peak.fetch_max(now, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::main]
async fn main() {
    let size = std::env::var("MLKUBE_BENCH_ARTIFACT_MIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1024)
        * MIB;
    // scripts/bench-artifacts starts the S3 server and exports its endpoint and credentials, for
    // this process's client and the server alike.
    let endpoint = std::env::var("MLFLOW_S3_ENDPOINT_URL")
        .expect("MLFLOW_S3_ENDPOINT_URL is not set: run scripts/bench-artifacts, which starts the S3 server");
    let http: Client<_, Streamed> = Client::builder(TokioExecutor::new()).build_http();
    let make_bucket = Request::put(format!("{endpoint}/{BUCKET}"))
        .body(StreamBody::new(stream::empty().boxed()))
        .unwrap();
    assert!(http.request(make_bucket).await.unwrap().status().is_success());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Killed(
        Command::new(env!("CARGO_BIN_EXE_mlkube-server"))
            .args(["--port", &port.to_string(), "--no-ui"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("m.db").display()))
            .args(["--artifacts-destination", &format!("s3://{BUCKET}/proxied")])
            .env("MLKUBE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/health")).await;
    let pid = server.0.id();
    let idle_rss = rss_mib(pid);

    let block = Bytes::from((0..4 * MIB).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>());
    let direct =
        ArtifactRoot::connect(&Destination::parse(&format!("s3://{BUCKET}/direct")).unwrap()).unwrap();

    eprintln!("direct upload of {} MiB…", size / MIB);
    let t = Instant::now();
    direct
        .write("big.bin", payload(&block, size).map(Ok).boxed())
        .await
        .unwrap();
    let direct_up = t.elapsed();
    eprintln!("direct download…");
    let t = Instant::now();
    let file = direct.read("big.bin", "big.bin").await.unwrap();
    let got = file
        .body
        .fold(0usize, |n, c| async move { n + c.unwrap().len() })
        .await;
    assert_eq!(got, size);
    let direct_down = t.elapsed();

    let peak = Arc::new(AtomicU64::new(0));
    let sampler = sample_rss(pid, peak.clone());
    eprintln!("proxied upload…");
    let url = format!("{base}/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/big.bin");
    let body = payload(&block, size)
        .map(|c| Ok::<_, std::io::Error>(Frame::data(c)))
        .boxed();
    let t = Instant::now();
    let resp = http
        .request(Request::put(url.as_str()).body(StreamBody::new(body)).unwrap())
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let proxy_up = t.elapsed();
    eprintln!("proxied download…");
    let t = Instant::now();
    let resp = http
        .request(
            Request::get(url.as_str())
                .body(StreamBody::new(stream::empty().boxed()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len();
        }
    }
    assert_eq!(got, size);
    let proxy_down = t.elapsed();
    sampler.abort();
    let peak_rss = peak.load(Ordering::Relaxed) as f64 / 1024.0;

    println!();
    println!(
        "{} MiB artifact, S3 API (moto) on 127.0.0.1, optimised mlkube-server",
        size / MIB
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "", "direct MiB/s", "proxied MiB/s", "ratio"
    );
    for (what, d, p) in [
        ("upload", direct_up, proxy_up),
        ("download", direct_down, proxy_down),
    ] {
        println!(
            "{:<10} {:>14.1} {:>14.1} {:>7.2}x",
            what,
            mb_per_s(size, d),
            mb_per_s(size, p),
            d.as_secs_f64() / p.as_secs_f64()
        );
    }
    println!("server RSS: {idle_rss:.1} MiB idle, {peak_rss:.1} MiB peak during the proxied transfers");
}
