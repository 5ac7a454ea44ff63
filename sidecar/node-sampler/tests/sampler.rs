//! The node sampler against a fake host, fake GPUs and a fake tracking server: exact series and
//! labels, the no-GPU path, scrapes served from the last sample, run logging with MLflow's keys and
//! aggregation, the real binary, and promtool on the exposition.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fixtures::*;
use http::StatusCode;
use mlkube_node_sampler::cgroup::Cgroups;
use mlkube_node_sampler::metrics::EXPOSED_NAMES;
use mlkube_node_sampler::runs::{self, Outcome, PodResources, RunSettings, TrackingClient};
use mlkube_node_sampler::{
    FakeGpuSource, GpuProcess, GpuReading, GpuSource, NodeSampler, PodIndex, PodInfo, RunTarget,
};
use tokio_util::sync::CancellationToken;

const POD_A: &str = "1b2c3d4e-5f6a-7b8c-9d0e-f1a2b3c4d5e6";
const POD_B: &str = "99999999-8888-7777-6666-555555555555";
const GB: u64 = 1_000_000_000;
const MODEL: &str = "NVIDIA H100 80GB HBM3";

/// GPU 0: the trainer's two processes and a host process; GPU 1: pod A's sidecar and pod B (whose
/// name the index does not know). GPU 1 reports no power.
fn gpus() -> Vec<GpuReading> {
    vec![
        GpuReading {
            index: 0,
            uuid: "GPU-aaaa".to_owned(),
            model: MODEL.to_owned(),
            utilization_percent: Some(87.0),
            memory_used_bytes: Some(40 * GB),
            memory_total_bytes: Some(80 * GB),
            power_milliwatts: Some(350_000),
            power_limit_milliwatts: Some(700_000),
            temperature_celsius: Some(64.0),
            processes: vec![
                GpuProcess {
                    pid: 101,
                    used_memory_bytes: Some(30 * GB),
                },
                GpuProcess {
                    pid: 102,
                    used_memory_bytes: Some(2 * GB),
                },
                GpuProcess {
                    pid: 900,
                    used_memory_bytes: Some(GB),
                },
            ],
        },
        GpuReading {
            index: 1,
            uuid: "GPU-bbbb".to_owned(),
            model: MODEL.to_owned(),
            utilization_percent: Some(0.0),
            memory_used_bytes: Some(GB),
            memory_total_bytes: Some(80 * GB),
            power_milliwatts: None,
            power_limit_milliwatts: None,
            temperature_celsius: Some(40.0),
            processes: vec![
                GpuProcess {
                    pid: 103,
                    used_memory_bytes: Some(GB / 10),
                },
                GpuProcess {
                    pid: 201,
                    used_memory_bytes: Some(GB / 2),
                },
            ],
        },
    ]
}

/// Pod A (train-0 in ml) and pod B on the fake host, and a host process on GPU 0.
fn host_with_pods() -> FakeHost {
    let host = FakeHost::new();
    host.add_pod(
        POD_A,
        &[(&container_id(1), &[101, 102]), (&container_id(2), &[103])],
    );
    host.add_pod(POD_B, &[(&container_id(3), &[201])]);
    host.add_host_process(900);
    host
}

fn pod_a(run: Option<RunTarget>) -> PodInfo {
    PodInfo {
        uid: POD_A.to_owned(),
        namespace: "ml".to_owned(),
        name: "train-0".to_owned(),
        phase: "Running".to_owned(),
        containers: [(container_id(1), "trainer"), (container_id(2), "sidecar")]
            .into_iter()
            .map(|(id, name)| (id, name.to_owned()))
            .collect(),
        run,
    }
}

async fn scrape(sampler: &NodeSampler) -> (String, BTreeMap<String, f64>) {
    let (status, text) = get(sampler.local_addr(), "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let series = parse_exposition(&text);
    (text, series)
}

async fn started(
    host: &FakeHost,
    gpu: Option<Arc<dyn GpuSource>>,
    pods: PodIndex,
    extra: &[&str],
) -> NodeSampler {
    let sampler = NodeSampler::start(host.config(extra), gpu, pods).await.unwrap();
    eventually("the first sample", Duration::from_secs(10), || {
        sampler.samples() >= 1
    })
    .await;
    sampler
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    pairs.sort();
    pairs.join(",")
}

fn gpu_labels(gpu: &str, uuid: &str) -> String {
    labels(&[("node", NODE), ("gpu", gpu), ("uuid", uuid), ("gpu_model", MODEL)])
}

fn exact(pairs: &[(String, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().cloned().collect()
}

// === /metrics ===

#[tokio::test]
async fn gpu_and_per_pod_series_carry_exact_labels() {
    let host = host_with_pods();
    let pods = PodIndex::new();
    pods.apply(pod_a(None));
    let gpu: Arc<dyn GpuSource> = FakeGpuSource::new(gpus());
    let sampler = started(&host, Some(gpu), pods, &["--interval", "0.05"]).await;
    let (_, series) = scrape(&sampler).await;

    let (g0, g1) = (gpu_labels("0", "GPU-aaaa"), gpu_labels("1", "GPU-bbbb"));
    assert_eq!(
        family(&series, "mlflow_system_gpu_utilization_percentage"),
        exact(&[(g0.clone(), 87.0), (g1.clone(), 0.0)])
    );
    assert_eq!(
        family(&series, "mlflow_system_gpu_memory_usage_megabytes"),
        exact(&[(g0.clone(), 40_000.0), (g1.clone(), 1_000.0)])
    );
    assert_eq!(
        family(&series, "mlflow_system_gpu_memory_usage_percentage"),
        exact(&[(g0.clone(), 50.0), (g1.clone(), 1.25)])
    );
    // GPU 1 reports no power: its power series are absent, not zero.
    assert_eq!(
        family(&series, "mlflow_system_gpu_power_usage_watts"),
        exact(&[(g0.clone(), 350.0)])
    );
    assert_eq!(
        family(&series, "mlflow_system_gpu_power_usage_percentage"),
        exact(&[(g0.clone(), 50.0)])
    );
    assert_eq!(
        family(&series, "mlflow_system_gpu_temperature_celsius"),
        exact(&[(g0, 64.0), (g1, 40.0)])
    );

    // Per container: the trainer's two processes summed; the host process left out; pod B, whose
    // name is not known, by its UID.
    let pod = |namespace: &str, pod: &str, container: &str, gpu: &str| {
        labels(&[
            ("namespace", namespace),
            ("pod", pod),
            ("container", container),
            ("gpu", gpu),
            ("node", NODE),
        ])
    };
    assert_eq!(
        family(&series, "mlflow_system_gpu_pod_memory_usage_megabytes"),
        exact(&[
            (pod("ml", "train-0", "trainer", "0"), 32_000.0),
            (pod("ml", "train-0", "sidecar", "1"), 100.0),
            (pod("", POD_B, "", "1"), 500.0),
        ])
    );

    // Host series: one each, labelled with the node.
    let node = labels(&[("node", NODE)]);
    for name in [
        "mlflow_system_cpu_utilization_percentage",
        "mlflow_system_memory_usage_megabytes",
        "mlflow_system_memory_usage_percentage",
        "mlflow_system_disk_usage_megabytes",
        "mlflow_system_disk_available_megabytes",
    ] {
        let found = family(&series, name);
        assert_eq!(found.keys().collect::<Vec<_>>(), [&node], "{name}");
        assert!(found[&node] >= 0.0, "{name}");
    }
    assert!(family(&series, "mlflow_system_cpu_utilization_percentage")[&node] <= 100.0);
    assert!(family(&series, "mlflow_system_memory_usage_percentage")[&node] <= 100.0);
    // Every name the contract promises is here, and nothing else.
    let names: BTreeSet<&str> = series.keys().map(|k| k.split('{').next().unwrap()).collect();
    assert_eq!(names, EXPOSED_NAMES.into_iter().collect());
    sampler.shutdown().await;
}

#[tokio::test]
async fn network_bytes_are_counters_of_the_physical_interfaces() {
    let host = host_with_pods();
    let sampler = started(&host, None, PodIndex::new(), &["--interval", "0.05"]).await;
    let node = labels(&[("node", NODE)]);
    let (text, series) = scrape(&sampler).await;
    assert!(
        text.contains("# TYPE mlflow_system_network_receive_bytes_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE mlflow_system_network_transmit_bytes_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE mlflow_system_cpu_utilization_percentage gauge"),
        "{text}"
    );
    // eth0 only: the veth and loopback are not counted.
    assert_eq!(
        family(&series, "mlflow_system_network_receive_bytes_total"),
        exact(&[(node.clone(), 123_456_789.0)])
    );
    assert_eq!(
        family(&series, "mlflow_system_network_transmit_bytes_total"),
        exact(&[(node.clone(), 987_654_321.0)])
    );

    // Traffic moves on, then the driver is reloaded (counters restart): the counter only grows.
    host.set_nic("eth0", true, 123_457_789, 987_655_321);
    let mut last = 0.0;
    for _ in 0..500 {
        last = family(
            &scrape(&sampler).await.1,
            "mlflow_system_network_receive_bytes_total",
        )[&node];
        if last == 123_457_789.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last, 123_457_789.0);
    host.set_nic("eth0", true, 10, 20);
    let before = sampler.samples();
    eventually("two more samples", Duration::from_secs(10), || {
        sampler.samples() >= before + 2
    })
    .await;
    let series = scrape(&sampler).await.1;
    assert_eq!(
        family(&series, "mlflow_system_network_receive_bytes_total")[&node],
        123_457_789.0 + 10.0
    );
    assert_eq!(
        family(&series, "mlflow_system_network_transmit_bytes_total")[&node],
        987_655_321.0 + 20.0
    );
    sampler.shutdown().await;
}

#[tokio::test]
async fn without_gpus_the_gpu_series_are_absent_and_the_rest_is_there() {
    let host = host_with_pods();
    let sampler = started(&host, None, PodIndex::new(), &["--interval", "0.05"]).await;
    let (text, series) = scrape(&sampler).await;
    assert!(
        !text.contains("gpu"),
        "no GPU series nor their HELP lines:\n{text}"
    );
    let names: BTreeSet<&str> = series.keys().map(|k| k.split('{').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "mlflow_system_cpu_utilization_percentage",
            "mlflow_system_disk_available_megabytes",
            "mlflow_system_disk_usage_megabytes",
            "mlflow_system_memory_usage_megabytes",
            "mlflow_system_memory_usage_percentage",
            "mlflow_system_network_receive_bytes_total",
            "mlflow_system_network_transmit_bytes_total",
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(get(sampler.local_addr(), "/readyz").await.0, StatusCode::OK);
    assert_eq!(get(sampler.local_addr(), "/healthz").await.0, StatusCode::OK);
    sampler.shutdown().await;
}

#[tokio::test]
async fn when_the_gpus_cannot_be_read_their_series_go_and_come_back() {
    let host = host_with_pods();
    let fake = FakeGpuSource::new(gpus());
    let gpu: Arc<dyn GpuSource> = fake.clone();
    let sampler = started(&host, Some(gpu), PodIndex::new(), &["--interval", "0.05"]).await;
    let has_gpus = |series: &BTreeMap<String, f64>| {
        !family(series, "mlflow_system_gpu_utilization_percentage").is_empty()
    };
    assert!(has_gpus(&scrape(&sampler).await.1));

    fake.fail("GPU is lost");
    let before = sampler.samples();
    eventually("two more samples", Duration::from_secs(10), || {
        sampler.samples() >= before + 2
    })
    .await;
    let series = scrape(&sampler).await.1;
    assert!(!has_gpus(&series));
    assert!(family(&series, "mlflow_system_gpu_pod_memory_usage_megabytes").is_empty());
    assert!(!family(&series, "mlflow_system_cpu_utilization_percentage").is_empty());

    fake.set(gpus());
    let before = sampler.samples();
    eventually("two more samples", Duration::from_secs(10), || {
        sampler.samples() >= before + 2
    })
    .await;
    assert!(has_gpus(&scrape(&sampler).await.1));
    sampler.shutdown().await;
}

#[tokio::test]
async fn a_scrape_serves_the_last_sample_and_never_samples() {
    let host = host_with_pods();
    let fake = FakeGpuSource::new(gpus());
    let gpu: Arc<dyn GpuSource> = fake.clone();
    // One sample soon after start, the next in an hour.
    let sampler = started(&host, Some(gpu), PodIndex::new(), &["--interval", "3600"]).await;
    let first = scrape(&sampler).await.0;
    for _ in 0..50 {
        assert_eq!(scrape(&sampler).await.0, first);
    }
    assert_eq!(sampler.samples(), 1);
    assert_eq!(fake.calls(), 1);
    assert_eq!(sampler.scrapes(), 51);
    sampler.shutdown().await;
}

// === runs ===

fn resources(host: &FakeHost, gpu: Arc<dyn GpuSource>) -> Arc<PodResources> {
    Arc::new(PodResources {
        proc_root: host.proc_root(),
        cgroups: Cgroups::detect(&host.cgroup_root()),
        gpu: Some(gpu),
        root_fs: host.root_fs(),
        node_cpus: 4,
        node_memory_bytes: 4 * GB,
    })
}

fn settings(default_tracking_uri: Option<String>) -> RunSettings {
    RunSettings {
        default_tracking_uri,
        sampling_interval: Duration::from_secs(10),
        samples_before_logging: 1,
    }
}

/// The pod's trainer (pid 101) on NVML GPU 1, whose utilisation alternates 80, 90, 80, …; GPU 0
/// is used by a host process only.
fn alternating_gpus() -> Arc<FakeGpuSource> {
    let at = |utilization: f64| {
        let mut readings = gpus();
        readings[0].processes = vec![GpuProcess {
            pid: 900,
            used_memory_bytes: Some(GB),
        }];
        readings[1] = GpuReading {
            utilization_percent: Some(utilization),
            memory_used_bytes: Some(40 * GB),
            power_milliwatts: Some(350_000),
            power_limit_milliwatts: Some(700_000),
            processes: vec![GpuProcess {
                pid: 101,
                used_memory_bytes: Some(39 * GB),
            }],
            ..readings[1].clone()
        };
        readings
    };
    FakeGpuSource::cycle(vec![at(80.0), at(90.0)])
}

#[tokio::test]
async fn a_run_gets_mlflow_system_metrics_averaged_until_it_finishes() {
    let host = host_with_pods();
    let tracker = Tracker::start("0a1b2c3d4e5f").await;
    let proc_root = host.proc_root();
    {
        let mut state = tracker.state.lock().unwrap();
        // A sampler before this one logged up to step 4: this one goes on at 5.
        state.existing_system_step = Some(4);
        state.finish_after = Some(3);
        // After the first batch the pod receives 5 MB and sends 1 MB.
        state.on_batch = Some(Box::new(move |n| {
            if n == 1 {
                write_net_dev(&proc_root, 101, 10_000_000, 3_000_000);
            }
        }));
    }
    let target = RunTarget {
        run_id: "0a1b2c3d4e5f".to_owned(),
        tracking_uri: None,
        sampling_interval: Some(Duration::from_millis(50)),
        samples_before_logging: Some(2),
        node_id: None,
    };
    let gpu: Arc<dyn GpuSource> = alternating_gpus();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        runs::monitor(
            pod_a(Some(target.clone())),
            target,
            resources(&host, gpu),
            settings(Some(tracker.url())),
            TrackingClient::new(None),
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Finished("FINISHED".to_owned()));

    let batches = tracker.batches();
    assert_eq!(
        batches.len(),
        3,
        "the run finished after the third batch: {batches:#?}"
    );
    let expected_keys: BTreeSet<String> = [
        "cpu_utilization_percentage",
        "system_memory_usage_megabytes",
        "system_memory_usage_percentage",
        "disk_usage_percentage",
        "disk_usage_megabytes",
        "disk_available_megabytes",
        "network_receive_megabytes",
        "network_transmit_megabytes",
        "gpu_0_memory_usage_percentage",
        "gpu_0_memory_usage_megabytes",
        "gpu_0_utilization_percentage",
        "gpu_0_power_usage_watts",
        "gpu_0_power_usage_percentage",
    ]
    .iter()
    .map(|k| format!("system/{k}"))
    .collect();
    for (i, batch) in batches.iter().enumerate() {
        assert_eq!(batch["run_id"], "0a1b2c3d4e5f");
        let metrics = batch_metrics(batch);
        assert_eq!(
            metrics.keys().cloned().collect::<BTreeSet<_>>(),
            expected_keys,
            "batch {i}"
        );
        let step = 5 + i as i64;
        assert!(
            metrics.values().all(|(_, s)| *s == step),
            "batch {i} at step {step}: {metrics:?}"
        );
        let value = |key: &str| metrics[&format!("system/{key}")].0;
        // Two samples per batch, one at 80 % and one at 90 %: the mean.
        assert_eq!(value("gpu_0_utilization_percentage"), 85.0, "batch {i}");
        assert_eq!(value("gpu_0_memory_usage_megabytes"), 40_000.0);
        assert_eq!(value("gpu_0_memory_usage_percentage"), 50.0);
        assert_eq!(value("gpu_0_power_usage_watts"), 350.0);
        assert_eq!(value("gpu_0_power_usage_percentage"), 50.0);
        // The pod's own cgroup: 250 MB working set of a 1000 MB limit; no CPU time used.
        assert_eq!(value("system_memory_usage_megabytes"), 250.0);
        assert_eq!(value("system_memory_usage_percentage"), 25.0);
        assert_eq!(value("cpu_utilization_percentage"), 0.0);
        assert!((0.0..=100.0).contains(&value("disk_usage_percentage")));
        assert!(value("disk_usage_megabytes") > 0.0);
        // Network: MB since logging started, not averaged.
        let (rx, tx) = if i == 0 { (0.0, 0.0) } else { (5.0, 1.0) };
        assert_eq!(value("network_receive_megabytes"), rx, "batch {i}");
        assert_eq!(value("network_transmit_megabytes"), tx, "batch {i}");
        assert!(batch["metrics"][0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

#[tokio::test]
async fn cpu_is_a_share_of_the_pods_cpu_limit() {
    let host = host_with_pods();
    let tracker = Tracker::start("r1").await;
    tracker.state.lock().unwrap().finish_after = Some(1);
    let target = RunTarget {
        run_id: "r1".to_owned(),
        tracking_uri: Some(tracker.url()),
        sampling_interval: Some(Duration::from_millis(300)),
        samples_before_logging: Some(1),
        node_id: Some("node_1".to_owned()),
    };
    // The pod burns CPU time much faster than its 1.5-CPU limit allows: 100 % (clamped).
    let (uid, proc_host) = (POD_A, &host);
    let burner = async {
        for step in 1..=60u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            proc_host.set_pod_cpu_usec(uid, 2_500_000 + step * 1_000_000);
        }
    };
    let gpu: Arc<dyn GpuSource> = alternating_gpus();
    let monitor = runs::monitor(
        pod_a(Some(target.clone())),
        target,
        resources(&host, gpu),
        settings(None),
        TrackingClient::new(None),
        CancellationToken::new(),
    );
    let (outcome, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(20), monitor), burner);
    assert_eq!(outcome.unwrap(), Outcome::Finished("FINISHED".to_owned()));
    let metrics = batch_metrics(&tracker.batches()[0]);
    // MLFLOW_SYSTEM_METRICS_NODE_ID puts the node id in every key.
    assert_eq!(metrics["system/node_1/cpu_utilization_percentage"], (100.0, 0));
    assert!(
        metrics.keys().all(|k| k.starts_with("system/node_1/")),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn runs_that_cannot_be_logged_to() {
    let host = host_with_pods();
    let tracker = Tracker::start("known").await;
    let gpu: Arc<dyn GpuSource> = FakeGpuSource::new(gpus());
    let resources = resources(&host, gpu);
    let target = |run_id: &str, uri: Option<&str>| RunTarget {
        run_id: run_id.to_owned(),
        tracking_uri: uri.map(str::to_owned),
        sampling_interval: Some(Duration::from_millis(20)),
        samples_before_logging: None,
        node_id: None,
    };
    let run = |target: RunTarget, default: Option<String>| {
        runs::monitor(
            pod_a(Some(target.clone())),
            target,
            Arc::clone(&resources),
            settings(default),
            TrackingClient::new(None),
            CancellationToken::new(),
        )
    };
    let url = tracker.url();
    assert_eq!(run(target("unknown", Some(&url)), None).await, Outcome::NotFound);
    assert_eq!(run(target("known", None), None).await, Outcome::Misconfigured);
    assert_eq!(
        run(target("known", Some("file:///mlruns")), None).await,
        Outcome::Misconfigured
    );
    assert_eq!(
        run(target("a/b?c", Some(&url)), None).await,
        Outcome::Misconfigured
    );
    tracker.set_status("KILLED");
    assert_eq!(
        run(target("known", None), Some(url.clone())).await,
        Outcome::Finished("KILLED".to_owned())
    );
    assert!(tracker.batches().is_empty());
}

#[tokio::test]
async fn the_sampler_logs_into_the_runs_of_its_pods_and_stops_when_they_finish() {
    let host = host_with_pods();
    let tracker = Tracker::start("cafe01").await;
    let pods = PodIndex::new();
    let gpu: Arc<dyn GpuSource> = FakeGpuSource::new(gpus());
    let sampler = started(
        &host,
        Some(gpu),
        pods.clone(),
        &["--interval", "0.05", "--tracking-uri-default", &tracker.url()],
    )
    .await;
    // The pod appears (as the watch would add it) with annotations naming the run.
    pods.apply(pod_a(Some(RunTarget {
        run_id: "cafe01".to_owned(),
        tracking_uri: None,
        sampling_interval: Some(Duration::from_millis(50)),
        samples_before_logging: None,
        node_id: None,
    })));
    let batches = tracker.wait_for_batches(2, Duration::from_secs(20)).await;
    for (step, batch) in batches.iter().take(2).enumerate() {
        let metrics = batch_metrics(batch);
        assert!(metrics.values().all(|(_, s)| *s == step as i64), "{metrics:?}");
        // The trainer runs on NVML GPU 0 (and the sidecar on GPU 1): the pod sees gpu_0 and gpu_1.
        assert_eq!(metrics["system/gpu_0_utilization_percentage"].0, 87.0);
        assert_eq!(metrics["system/gpu_1_memory_usage_megabytes"].0, 1_000.0);
        assert!(!metrics.contains_key("system/gpu_1_power_usage_watts"));
        assert_eq!(metrics["system/system_memory_usage_megabytes"].0, 250.0);
    }

    tracker.set_status("FINISHED");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (batches, gets) = (tracker.batches().len(), tracker.gets());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tracker.batches().len(),
        batches,
        "no batch after the run finished"
    );
    assert_eq!(tracker.gets(), gets, "the finished run is not monitored again");
    sampler.shutdown().await;
}

// === the binary ===

const BIN: &str = env!("CARGO_BIN_EXE_mlkube-node-sampler");

#[tokio::test]
async fn the_binary_runs_without_a_gpu_says_so_once_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("MLKUBE_INTERVAL", "0.1")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-name",
            "smoke",
            "--disable-pod-watch",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..500 {
        if let Some((StatusCode::OK, _)) = try_get(addr, "/readyz").await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the binary never became ready");
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let series = parse_exposition(&text);
    assert!(
        !family(&series, "mlflow_system_cpu_utilization_percentage").is_empty(),
        "{text}"
    );
    assert!(
        !family(&series, "mlflow_system_memory_usage_megabytes").is_empty(),
        "{text}"
    );

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
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
    // Exactly one line about GPUs: why there are none, or which ones are read.
    let gpu_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("GPU")).collect();
    assert_eq!(gpu_lines.len(), 1, "{stderr}");
    if !gpu_lines[0].contains("reading GPUs through NVML") {
        assert!(gpu_lines[0].contains("no GPU metrics"), "{stderr}");
        assert!(family(&series, "mlflow_system_gpu_utilization_percentage").is_empty());
    }
}

#[test]
fn the_binary_refuses_a_bad_flag_with_exit_64_and_one_line() {
    let output = Command::new(BIN)
        .env_clear()
        .args(["--interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("invalid configuration"), "{stderr}");
}

// === promtool ===

#[tokio::test]
#[ignore = "needs promtool from Debian's prometheus package; scripts/test-all installs it and runs ignored tests"]
async fn promtool_accepts_the_exposition_with_gpus_and_pods() {
    let host = host_with_pods();
    let pods = PodIndex::new();
    pods.apply(pod_a(None));
    let gpu: Arc<dyn GpuSource> = FakeGpuSource::new(gpus());
    let sampler = started(&host, Some(gpu), pods, &["--interval", "0.05"]).await;
    let (text, _) = scrape(&sampler).await;
    sampler.shutdown().await;

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: apt-get install -y --no-install-recommends prometheus");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The names are MLflow's and fixed by docs/architecture.md, so the base-unit lint ("megabytes" rather than
    // "bytes", exit code 3) is expected for the *_megabytes gauges and nothing else is: a parse
    // error exits 1, and any other lint finding fails here.
    let megabyte_gauges = [
        "mlflow_system_memory_usage_megabytes",
        "mlflow_system_disk_usage_megabytes",
        "mlflow_system_disk_available_megabytes",
        "mlflow_system_gpu_memory_usage_megabytes",
        "mlflow_system_gpu_pod_memory_usage_megabytes",
    ];
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| {
            !megabyte_gauges
                .iter()
                .any(|name| *line == format!("{name} use base unit \"bytes\" instead of \"megabytes\""))
        })
        .collect();
    assert!(
        (output.status.success() || output.status.code() == Some(3)) && unexpected.is_empty(),
        "promtool check metrics failed ({:?}):\n{report}\non:\n{text}",
        output.status,
    );
}
