//! Benchmark, not a test: the same load on 127.0.0.1 through (a) direct calls to a model server,
//! (b) `mlkube-sidecar`, (c) nginx as a reverse proxy, and (d) `mlkube-sidecar` capturing every
//! payload; prints the latency each proxy adds (p50/p99), throughput ratios and the sidecar's RSS.
//!
//! ```text
//! cargo bench -p mlkube-sidecar --bench proxy [-- --rounds 7 --requests 10000 --connections 32 --seconds 2 --workers N]
//! ```
//!
//! The sidecar binary is the release-profile build next to this bench (`MLKUBE_SIDECAR_BIN` picks
//! another); nginx is Debian's (`apt-get install -y nginx`), started here with a private config.
//! Targets are measured in interleaved rounds so that a noisy neighbour hurts them alike.
#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark may fail loudly

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// An MLflow scoring request and answer of typical size.
const REQUEST_BODY: &[u8] =
    br#"{"dataframe_split":{"columns":["sepal_length","sepal_width","petal_length","petal_width"],"data":[[5.1,3.5,1.4,0.2]]}}"#;
const RESPONSE_BODY: &[u8] = br#"{"predictions":[0]}"#;
const WARMUP_REQUESTS: usize = 2_000;

struct Options {
    rounds: usize,
    requests: usize,
    connections: usize,
    seconds: f64,
    /// Worker threads of the sidecar and worker processes of nginx; `None`: both pick one per CPU.
    workers: Option<usize>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            rounds: 7,
            requests: 10_000,
            connections: 32,
            seconds: 2.0,
            workers: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = || {
                iter.next()
                    .unwrap_or_else(|| panic!("{arg} needs a value"))
                    .clone()
            };
            match arg.as_str() {
                "--rounds" => options.rounds = value().parse().unwrap(),
                "--requests" => options.requests = value().parse().unwrap(),
                "--connections" => options.connections = value().parse().unwrap(),
                "--seconds" => options.seconds = value().parse().unwrap(),
                "--workers" => options.workers = Some(value().parse().unwrap()),
                "--bench" => {}
                other => panic!("unknown option {other}; see the doc comment of benches/proxy.rs"),
            }
        }
        options
    }
}

// === the fake model server ===

/// Runs the model server on its own thread and single-threaded runtime, like a small model server.
fn start_model_server() -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut response = Response::new(Full::new(Bytes::from_static(RESPONSE_BODY)));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

// === processes under test ===

/// A child process stopped with SIGTERM when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn wait_for_port(addr: SocketAddr, what: &str) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not open {addr}");
}

fn sidecar_bin() -> PathBuf {
    std::env::var_os("MLKUBE_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mlkube-sidecar")))
}

async fn start_sidecar(upstream: SocketAddr, capture: bool, workers: Option<usize>) -> (Proc, SocketAddr) {
    let listen = free_addr();
    let metrics = free_addr();
    let mut command = Command::new(sidecar_bin());
    command
        .args([
            "--listen",
            &listen.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
        ])
        .args(["--upstream", &format!("http://{upstream}")])
        .args(["--model-name", "bench", "--model-version", "1"])
        .args(["--worker-threads", &workers.unwrap_or(0).to_string()])
        .env("MLKUBE_LOG", "warn")
        .stdout(Stdio::null());
    if capture {
        // The model server answers 200 to the upload too; only the sidecar's own cost matters here.
        command.args([
            "--tracking-uri",
            &format!("http://{upstream}"),
            "--capture-sample-rate",
            "1",
        ]);
    }
    let child = command.spawn().unwrap();
    wait_for_port(listen, "mlkube-sidecar").await;
    (Proc { child }, listen)
}

fn nginx_version() -> Option<String> {
    let output = Command::new("nginx").arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Some(text.trim_start_matches("nginx version: ").to_owned())
}

async fn start_nginx(upstream: SocketAddr, dir: &Path, workers: Option<usize>) -> (Proc, SocketAddr) {
    let listen = free_addr();
    let d = dir.display();
    let workers = workers.map_or("auto".to_owned(), |n| n.to_string());
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 upstream model {{ server {upstream}; keepalive 64; keepalive_requests 10000000; }}\n\
         \x20 server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://model;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(listen, "nginx").await;
    (Proc { child }, listen)
}

/// (VmRSS, VmHWM) in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) used so far by `pid` and its direct children (nginx's workers).
fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let read = |pid: &str| -> Option<(u32, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name: state ppid ... utime(14) stime(15).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((ppid, (utime + stime) / ticks_per_second))
    };
    let mut total = read(&pid.to_string()).map_or(0.0, |(_, cpu)| cpu);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            if let Some((_, cpu)) = read(name).filter(|(ppid, _)| *ppid == pid) {
                total += cpu;
            }
        }
    }
    total
}

// === load ===

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn call(sender: &mut SendRequest<Full<Bytes>>, host: &str) -> Duration {
    sender.ready().await.unwrap();
    let request = Request::post("/invocations")
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REQUEST_BODY)))
        .unwrap();
    let start = Instant::now();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let elapsed = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, RESPONSE_BODY);
    elapsed
}

/// Sequential requests on one keep-alive connection: the latency a proxy adds when it is not loaded.
async fn latency_run(addr: SocketAddr, requests: usize, samples: &mut Vec<Duration>) {
    let host = addr.to_string();
    let mut sender = connect(addr).await;
    for _ in 0..WARMUP_REQUESTS {
        call(&mut sender, &host).await;
    }
    for _ in 0..requests {
        samples.push(call(&mut sender, &host).await);
    }
}

/// `connections` closed-loop clients for `seconds`: requests per second.
async fn throughput_run(addr: SocketAddr, connections: usize, seconds: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let host = addr.to_string();
            let mut sender = connect(addr).await;
            let mut done = 0u64;
            while Instant::now() < deadline {
                call(&mut sender, &host).await;
                done += 1;
            }
            done
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}..{max:.2}")
}

/// One target's figures in one round.
#[derive(Clone, Copy)]
struct Round {
    p50: f64,
    p99: f64,
    rps: f64,
    /// CPU µs the proxy process spent per request in the throughput run.
    cpu_us: Option<f64>,
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// The proxy's process, for CPU accounting (none for direct calls).
    pid: Option<u32>,
    rounds: Vec<Round>,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            name,
            addr,
            pid,
            rounds: Vec::new(),
        }
    }

    fn median_of(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(f).collect())
    }

    /// Per round, `f(self) - f(other)`.
    fn minus(&self, other: &Target, f: impl Fn(&Round) -> f64) -> Vec<f64> {
        self.rounds
            .iter()
            .zip(&other.rounds)
            .map(|(a, b)| f(a) - f(b))
            .collect()
    }

    /// Per round, `f(self) / f(other)`.
    fn ratio(&self, other: &Target, f: impl Fn(&Round) -> f64) -> Vec<f64> {
        self.rounds
            .iter()
            .zip(&other.rounds)
            .map(|(a, b)| f(a) / f(b))
            .collect()
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(options));
}

async fn bench(options: Options) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("mlkube-sidecar proxy benchmark on 127.0.0.1");
    println!("  machine: {cpus} CPUs, load average at start {}", load_average());
    println!("  sidecar: {}", sidecar_bin().display());
    match options.workers {
        Some(n) => println!("  workers: {n} sidecar worker threads, {n} nginx worker processes"),
        None => println!(
            "  workers: one per CPU for both (sidecar --worker-threads 0, nginx worker_processes auto)"
        ),
    }
    let nginx = nginx_version();
    match &nginx {
        Some(version) => println!("  nginx:   {version}, upstream keepalive 64"),
        None => println!("  nginx:   not installed (apt-get install -y nginx); its rows are skipped"),
    }
    println!(
        "  load:    POST /invocations, {} B in / {} B out; latency = 1 connection x {} sequential requests; \
         throughput = {} connections x {} s; {} interleaved rounds",
        REQUEST_BODY.len(),
        RESPONSE_BODY.len(),
        options.requests,
        options.connections,
        options.seconds,
        options.rounds
    );

    let upstream = start_model_server();
    wait_for_port(upstream, "model server").await;
    let (sidecar, sidecar_addr) = start_sidecar(upstream, false, options.workers).await;
    let (capturing, capturing_addr) = start_sidecar(upstream, true, options.workers).await;
    let nginx_dir = std::env::temp_dir().join(format!("mlkube-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx_proc = match nginx {
        Some(_) => Some(start_nginx(upstream, &nginx_dir, options.workers).await),
        None => None,
    };

    let mut targets = vec![
        Target::new("direct", upstream, None),
        Target::new("mlkube-sidecar", sidecar_addr, Some(sidecar.child.id())),
    ];
    if let Some((proc, addr)) = &nginx_proc {
        targets.push(Target::new("nginx", *addr, Some(proc.child.id())));
    }
    targets.push(Target::new(
        "sidecar+capture",
        capturing_addr,
        Some(capturing.child.id()),
    ));

    for round in 1..=options.rounds {
        // Each round starts with a different target so that none always follows the same one.
        let order: Vec<usize> = (0..targets.len()).map(|i| (i + round) % targets.len()).collect();
        let mut latencies = vec![(0.0, 0.0); targets.len()];
        for &i in &order {
            let mut samples = Vec::with_capacity(options.requests);
            latency_run(targets[i].addr, options.requests, &mut samples).await;
            samples.sort_unstable();
            latencies[i] = (percentile(&samples, 0.50), percentile(&samples, 0.99));
        }
        for &i in &order {
            let target = &mut targets[i];
            let (p50, p99) = latencies[i];
            let cpu_before = target.pid.map(cpu_seconds);
            let rps = throughput_run(target.addr, options.connections, options.seconds).await;
            let cpu_us = target
                .pid
                .zip(cpu_before)
                .map(|(pid, before)| (cpu_seconds(pid) - before) / (rps * options.seconds) * 1e6);
            target.rounds.push(Round {
                p50,
                p99,
                rps,
                cpu_us,
            });
        }
        println!(
            "  round {round}/{} done (load average {})",
            options.rounds,
            load_average()
        );
    }
    let (rss, hwm) = rss_kb(sidecar.child.id());
    let (capture_rss, capture_hwm) = rss_kb(capturing.child.id());

    let direct = &targets[0];
    let nginx_target = targets.iter().find(|t| t.name == "nginx");
    println!();
    println!(
        "medians over {} rounds; +p50/+p99 = latency added to a direct call, per round",
        options.rounds
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "target", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs", "req/s", "vs direct", "vs nginx", "CPU µs/req"
    );
    for target in &targets {
        let vs_nginx = nginx_target.map_or("-".to_owned(), |n| {
            format!("{:.2}", median(target.ratio(n, |r| r.rps)))
        });
        let cpu = target
            .rounds
            .iter()
            .map(|r| r.cpu_us)
            .collect::<Option<Vec<f64>>>()
            .map_or("-".to_owned(), |v| format!("{:.1}", median(v)));
        println!(
            "{:<16} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>9.2} {:>9} {:>10}",
            target.name,
            target.median_of(|r| r.p50),
            target.median_of(|r| r.p99),
            median(target.minus(direct, |r| r.p50)),
            median(target.minus(direct, |r| r.p99)),
            target.median_of(|r| r.rps),
            median(target.ratio(direct, |r| r.rps)),
            vs_nginx,
            cpu
        );
    }
    println!();
    println!(
        "mlkube-sidecar RSS after the load: {:.1} MB (peak {:.1} MB); with capture on: {:.1} MB (peak {:.1} MB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        capture_rss as f64 / 1024.0,
        capture_hwm as f64 / 1024.0
    );

    let sidecar_target = &targets[1];
    let added_p50 = sidecar_target.minus(direct, |r| r.p50);
    let added_p99 = sidecar_target.minus(direct, |r| r.p99);
    let vs_nginx = nginx_target.map(|n| sidecar_target.ratio(n, |r| r.rps));
    println!(
        "spread over rounds (min..max): sidecar +p50 {} µs, +p99 {} µs, throughput vs nginx {}",
        spread(&added_p50),
        spread(&added_p99),
        vs_nginx.as_deref().map_or("n/a".to_owned(), spread)
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let (added_p50, added_p99) = (median(added_p50), median(added_p99));
    println!(
        "goals: added p50 <= 50 µs: {} ({added_p50:.1}); added p99 <= 250 µs: {} ({added_p99:.1}); \
         throughput >= nginx: {}; RSS <= 15 MB: {} ({:.1})",
        verdict(added_p50 <= 50.0),
        verdict(added_p99 <= 250.0),
        vs_nginx.map_or("n/a (no nginx)".to_owned(), |v| {
            let ratio = median(v);
            format!("{} ({ratio:.2}x)", verdict(ratio >= 1.0))
        }),
        verdict(hwm <= 15 * 1024),
        hwm as f64 / 1024.0
    );

    drop(nginx_proc);
    drop(capturing);
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&nginx_dir);
}
