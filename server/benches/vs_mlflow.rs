//! mlkube-server against upstream `mlflow server`, side by side on 127.0.0.1, same SQLite setup.
//!
//! Run: `cargo bench -p mlkube-server --bench vs_mlflow` (optimised build). It needs an MLflow
//! virtualenv; `scripts/bench-server` creates one and passes it in `MLKUBE_BENCH_MLFLOW`
//! (default `.cache/venvs/mlflow-3.17.2/bin/mlflow`). Knobs: `MLKUBE_BENCH_SECONDS` (per workload,
//! default 5), `MLKUBE_BENCH_MLFLOW_WORKERS` (default 2 = this machine's cores).
//!
//! Workloads (throughput over a fixed time, every loop bounded by time and count):
//!  - log-batch of 1000 metrics, 4 concurrent clients
//!  - single log-metric, 16 concurrent clients
//!  - search over 1000 runs with a metric + param + tag filter and an order_by, 4 clients
//!  - get-history of a 5000-point metric, 4 clients
//!  - idle RSS of the whole server process tree
//!
//! Prints a table with each server's requests/s and p50 latency and the mlkube/MLflow ratio.
//! Timing is reported, never asserted.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Server {
    name: &'static str,
    base: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // mlflow runs uvicorn workers under a supervisor; stop the whole tree, politely first.
        let tree = descendants(self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", &format!("-{}", self.child.id())])
            .status();
        for pid in &tree {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_secs(2));
        for pid in &tree {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every descendant of `root` (children first found through /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_in_own_group(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// mlkube-server with `--sqlite-synchronous sync` (`full`, the default: answered once on disk;
/// `normal`: answered before the disk has it).
fn start_mlkube(sync: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_in_own_group(
        Command::new(env!("CARGO_BIN_EXE_mlkube-server"))
            .arg("--sqlite-synchronous")
            .arg(sync)
            .arg("--port")
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlkube.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .env("MLKUBE_LOG", "warn"),
    );
    Server {
        name: if sync == "full" {
            "mlkube"
        } else {
            "mlkube (normal)"
        },
        base: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    }
}

fn start_mlflow(mlflow: &str, workers: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_in_own_group(
        Command::new(mlflow)
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                workers,
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    );
    Server {
        name: "mlflow",
        base: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    }
}

async fn call(client: &HttpClient, method: &str, url: &str, body: Option<&Value>) -> (u16, Bytes) {
    let mut req = Request::builder().method(method).uri(url);
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let resp = client.request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

async fn post(client: &HttpClient, base: &str, path: &str, body: Value) -> Value {
    let (status, bytes) = call(
        client,
        "POST",
        &format!("{base}/api/2.0/mlflow/{path}"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

async fn wait_healthy(client: &HttpClient, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let req = Request::get(format!("{base}/health"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(resp) = client.request(req).await
            && resp.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{base} did not become healthy");
}

/// RSS in MB of a process and all its descendants.
fn tree_rss_mb(root: u32) -> f64 {
    let mut total_kb = 0u64;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(kb) = line.strip_prefix("VmRSS:") {
                    total_kb += kb
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            stack.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    total_kb as f64 / 1024.0
}

struct Measured {
    rps: f64,
    p50_ms: f64,
    requests: usize,
}

/// Run `make_request` from `clients` concurrent tasks for `seconds` (bounded by time and count).
async fn drive<F, Fut>(clients: usize, seconds: f64, make_request: F) -> Measured
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let make_request = Arc::new(make_request);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let make_request = make_request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline && i < 1_000_000 {
                let t = Instant::now();
                make_request(c, i).await;
                latencies.push(t.elapsed().as_secs_f64());
                i += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let p50 = all.get(all.len() / 2).copied().unwrap_or(f64::NAN) * 1000.0;
    Measured {
        rps: all.len() as f64 / elapsed,
        p50_ms: p50,
        requests: all.len(),
    }
}

struct Fixture {
    run_for_writes: String,
    history_run: String,
    search_experiment: String,
}

/// Create what the workloads read: 1000 runs with a metric, param and tag; a 5000-point history.
async fn setup(client: &HttpClient, base: &str) -> Fixture {
    let exp = post(
        client,
        base,
        "experiments/create",
        json!({ "name": "bench-search" }),
    )
    .await["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let create_run = |exp: String| {
        let client = client.clone();
        let base = base.to_owned();
        async move {
            post(
                &client,
                &base,
                "runs/create",
                json!({ "experiment_id": exp, "start_time": 1 }),
            )
            .await["run"]["info"]["run_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut handles = Vec::new();
    for i in 0..1000 {
        let client = client.clone();
        let base = base.to_owned();
        let create = create_run(exp.clone());
        handles.push(async move {
            let run = create.await;
            post(
                &client,
                &base,
                "runs/log-batch",
                json!({ "run_id": run,
                        "metrics": [{ "key": "rmse", "value": (i % 100) as f64 / 100.0, "timestamp": 1, "step": 0 }],
                        "params": [{ "key": "lr", "value": if i % 2 == 0 { "0.1" } else { "0.01" } }],
                        "tags": [{ "key": "team", "value": if i % 3 == 0 { "vision" } else { "nlp" } }] }),
            )
            .await;
        });
        if handles.len() == 8 {
            futures_util::future::join_all(handles.drain(..)).await;
        }
    }
    futures_util::future::join_all(handles).await;

    let history_run = create_run("0".to_owned()).await;
    for chunk in 0..5 {
        let metrics: Vec<Value> = (0..1000)
            .map(|i| json!({ "key": "loss", "value": i as f64, "timestamp": chunk * 1000 + i, "step": chunk * 1000 + i }))
            .collect();
        post(
            client,
            base,
            "runs/log-batch",
            json!({ "run_id": history_run, "metrics": metrics }),
        )
        .await;
    }
    let run_for_writes = create_run("0".to_owned()).await;
    Fixture {
        run_for_writes,
        history_run,
        search_experiment: exp,
    }
}

struct Row {
    workload: &'static str,
    results: Vec<Measured>,
}

async fn bench_server(client: &HttpClient, server: &Server, seconds: f64) -> Vec<(&'static str, Measured)> {
    wait_healthy(client, &server.base).await;
    eprintln!("[{}] setting up fixtures…", server.name);
    let fixture = setup(client, &server.base).await;
    let mut out = Vec::new();

    eprintln!("[{}] log-batch of 1000 metrics, 4 clients", server.name);
    let (c, base, run) = (
        client.clone(),
        server.base.clone(),
        fixture.run_for_writes.clone(),
    );
    out.push((
        "log-batch 1000 metrics, 4 clients",
        drive(4, seconds, move |client_no, i| {
            let (c, base, run) = (c.clone(), base.clone(), run.clone());
            async move {
                let ts = (client_no * 1_000_000 + i) as i64;
                let metrics: Vec<Value> = (0..1000)
                    .map(
                        |k| json!({ "key": format!("m{k}"), "value": k as f64, "timestamp": ts, "step": ts }),
                    )
                    .collect();
                post(
                    &c,
                    &base,
                    "runs/log-batch",
                    json!({ "run_id": run, "metrics": metrics }),
                )
                .await;
            }
        })
        .await,
    ));

    eprintln!("[{}] log-metric, 16 clients", server.name);
    let (c, base, run) = (
        client.clone(),
        server.base.clone(),
        fixture.run_for_writes.clone(),
    );
    out.push((
        "log-metric, 16 clients",
        drive(16, seconds, move |client_no, i| {
            let (c, base, run) = (c.clone(), base.clone(), run.clone());
            async move {
                let ts = (client_no * 1_000_000 + i) as i64;
                post(
                    &c,
                    &base,
                    "runs/log-metric",
                    json!({ "run_id": run, "key": "single", "value": 1.0, "timestamp": ts, "step": ts }),
                )
                .await;
            }
        })
        .await,
    ));

    eprintln!("[{}] search 1000 runs, 4 clients", server.name);
    let (c, base, exp) = (
        client.clone(),
        server.base.clone(),
        fixture.search_experiment.clone(),
    );
    out.push((
        "search 1000 runs (metric+param+tag, order), 4 clients",
        drive(4, seconds, move |_, _| {
            let (c, base, exp) = (c.clone(), base.clone(), exp.clone());
            async move {
                let body = json!({ "experiment_ids": [exp], "max_results": 1000,
                    "filter": "metrics.rmse < 0.5 and params.lr = '0.1' and tags.team = 'nlp'",
                    "order_by": ["metrics.rmse DESC"] });
                let found = post(&c, &base, "runs/search", body).await;
                // Runs i in 0..1000 with i % 100 < 50, i even and i % 3 != 0: both servers must agree.
                let expected = (0..1000)
                    .filter(|i| i % 100 < 50 && i % 2 == 0 && i % 3 != 0)
                    .count();
                assert_eq!(
                    found["runs"].as_array().map(Vec::len),
                    Some(expected),
                    "search result size"
                );
            }
        })
        .await,
    ));

    eprintln!("[{}] get-history of 5000 points, 4 clients", server.name);
    let (c, base, run) = (client.clone(), server.base.clone(), fixture.history_run.clone());
    out.push((
        "get-history 5000 points, 4 clients",
        drive(4, seconds, move |_, _| {
            let (c, base, run) = (c.clone(), base.clone(), run.clone());
            async move {
                let url = format!(
                    "{base}/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=loss&max_results=25000"
                );
                let (status, bytes) = call(&c, "GET", &url, None).await;
                assert_eq!(status, 200);
                assert!(bytes.len() > 100_000, "history body looks too small");
            }
        })
        .await,
    ));
    out
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::var("MLKUBE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let mlflow = std::env::var("MLKUBE_BENCH_MLFLOW").unwrap_or_else(|_| {
        format!(
            "{}/../.cache/venvs/mlflow-3.17.2/bin/mlflow",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let workers = std::env::var("MLKUBE_BENCH_MLFLOW_WORKERS").unwrap_or_else(|_| "2".to_owned());
    if !std::path::Path::new(&mlflow).exists() {
        panic!("no mlflow at {mlflow}: run scripts/bench-server, which installs it");
    }
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(32)
        .build_http();

    // One server at a time, so they never compete for the two cores.
    let mut rows: Vec<Row> = Vec::new();
    let mut rss = Vec::new();
    for which in ["mlkube", "mlkube-normal", "mlflow"] {
        let server = match which {
            "mlkube" => start_mlkube("full"),
            "mlkube-normal" => start_mlkube("normal"),
            _ => start_mlflow(&mlflow, &workers),
        };
        wait_healthy(&client, &server.base).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(tree_rss_mb(server.child.id()));
        let results = bench_server(&client, &server, seconds).await;
        for (i, (workload, m)) in results.into_iter().enumerate() {
            if rows.len() <= i {
                rows.push(Row {
                    workload,
                    results: Vec::new(),
                });
            }
            rows[i].results.push(m);
        }
        drop(server);
    }

    println!();
    println!(
        "mlkube-server vs mlflow server ({mlflow}, --workers {workers}), {seconds} s per workload, SQLite"
    );
    println!(
        "{:<55} {:>12} {:>8} {:>12} {:>12} {:>8} {:>9} {:>11}",
        "workload", "mlkube req/s", "p50 ms", "normal req/s", "mlflow req/s", "p50 ms", "ratio", "full costs"
    );
    // `full` (the default) answers a write once it is on disk; `normal` before: the last column is
    // what that durability costs in throughput (docs/architecture.md, "Durability").
    for row in &rows {
        let (a, n, b) = (&row.results[0], &row.results[1], &row.results[2]);
        println!(
            "{:<55} {:>12.1} {:>8.2} {:>12.1} {:>12.1} {:>8.2} {:>8.1}x {:>10.0}%   ({} / {} / {} requests)",
            row.workload,
            a.rps,
            a.p50_ms,
            n.rps,
            b.rps,
            b.p50_ms,
            a.rps / b.rps,
            (1.0 - a.rps / n.rps) * 100.0,
            a.requests,
            n.requests,
            b.requests
        );
    }
    println!(
        "{:<55} {:>12.1} {:>8} {:>12.1} {:>12.1} {:>8} {:>8.1}x smaller",
        "idle RSS (MB, process tree)",
        rss[0],
        "",
        rss[1],
        rss[2],
        "",
        rss[2] / rss[0]
    );
}
