//! The NVML source on a real NVIDIA GPU. Needs the driver (libnvidia-ml.so.1) and at least one GPU,
//! so it only builds with `--features nvml-hardware`:
//!
//! ```text
//! cargo test -p mlkube-node-sampler --features nvml-hardware --test nvml -- --nocapture
//! ```
//!
//! Keep a GPU busy meanwhile (e.g. a matrix-multiply loop) to see utilisation, power and per-process
//! memory move; the readings are printed.
#![cfg(feature = "nvml-hardware")]
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

use std::sync::Arc;
use std::time::Duration;

use mlkube_node_sampler::gpu::{GpuSource, NvmlGpuSource};
use mlkube_node_sampler::{Args, NodeSampler, PodIndex};

use clap::Parser;

#[test]
fn nvml_reads_every_gpu() {
    let source = NvmlGpuSource::open(None).expect("NVML must load on a machine with an NVIDIA GPU");
    println!("{}", source.describe());
    assert!(source.device_count() >= 1);
    let readings = source.sample().unwrap();
    assert_eq!(readings.len(), source.device_count());
    for (i, gpu) in readings.iter().enumerate() {
        println!("{gpu:?}");
        assert_eq!(gpu.index as usize, i);
        assert!(
            gpu.uuid.starts_with("GPU-") || gpu.uuid.starts_with("MIG-"),
            "{}",
            gpu.uuid
        );
        assert!(!gpu.model.is_empty());
        assert!(gpu.memory_total_bytes.unwrap() > 0);
        assert!(gpu.memory_used_bytes.unwrap() <= gpu.memory_total_bytes.unwrap());
        assert!(gpu.utilization_percent.is_some());
        assert!(gpu.temperature_celsius.is_some());
    }
}

#[tokio::test]
async fn the_sampler_exports_the_real_gpus() {
    let source = Arc::new(NvmlGpuSource::open(None).unwrap());
    let count = source.device_count();
    let config = Args::try_parse_from([
        "mlkube-node-sampler",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "0.5",
        "--node-name",
        "gpu-test",
        "--disable-pod-watch",
    ])
    .unwrap()
    .validate()
    .unwrap();
    let gpu: Arc<dyn GpuSource> = source;
    let sampler = NodeSampler::start(config, Some(gpu), PodIndex::new())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sampler.samples() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no samples");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = tokio::net::TcpStream::connect(sampler.local_addr())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let response = send
        .send_request(
            http::Request::get("/metrics")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    println!(
        "{}",
        text.lines()
            .filter(|l| l.contains("gpu"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let utilization = text
        .lines()
        .filter(|l| l.starts_with("mlflow_system_gpu_utilization_percentage{"))
        .count();
    assert_eq!(utilization, count);
    sampler.shutdown().await;
}
