//! Benchmark, not a test: what the node sampler costs next to Debian's `prometheus-node-exporter`,
//! both on 127.0.0.1 in one run. Prints CPU time per scrape, scrape latency, resident memory, and
//! the sampler's background cost at a 1 s interval, with the ratios and the issue's goals.
//!
//! ```text
//! apt-get install -y --no-install-recommends prometheus-node-exporter
//! cargo bench -p mlkube-node-sampler --bench vs_node_exporter [-- --rounds 3 --seconds 5 --idle 30]
//! ```
//!
//! Targets: `mlkube-node-sampler --interval 1` (the release-profile build next to this bench;
//! `MLKUBE_NODE_SAMPLER_BIN` picks another), node-exporter with its default collectors, and
//! node-exporter with only the collectors that cover the sampler's series (cpu, meminfo,
//! filesystem, netdev). Each round scrapes each target back to back over one keep-alive connection
//! for `--seconds` (plain text: no gzip for either), in turn, so a noisy neighbour hurts all alike.
//! CPU comes from `/proc/<pid>/stat` (user + system ticks); a target's idle rate, measured first
//! with no scrapes, is subtracted from its scrape windows. The sampler's sampling cost is also timed
//! in-process (one sample + encoding, averaged over many), which resolves far below a tick.
#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark may fail loudly

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mlkube_node_sampler::PodIndex;
use mlkube_node_sampler::host::HostSampler;
use mlkube_node_sampler::metrics::NodeMetrics;
use mlkube_node_sampler::sampler::Sampler;
use tokio::net::TcpStream;

struct Options {
    rounds: usize,
    seconds: f64,
    idle: f64,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            rounds: 3,
            seconds: 5.0,
            idle: 30.0,
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
                "--seconds" => options.seconds = value().parse().unwrap(),
                "--idle" => options.idle = value().parse().unwrap(),
                "--bench" => {}
                other => panic!("unknown option {other}; see the doc comment of benches/node_sampler.rs"),
            }
        }
        options
    }
}

// === processes ===

/// A target process, killed when dropped.
struct Target {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    idle_cpu_per_sec: f64,
    cpu_seconds: f64,
    wall_seconds: f64,
    scrapes: usize,
    latencies_us: Vec<f64>,
    body_bytes: usize,
    series: usize,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of `pid` (all its threads, live and exited).
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / ticks
}

/// `VmRSS` and `VmHWM` of `pid`, MB (10^6 bytes).
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kb("VmRSS:") * 1024.0 / 1e6, kb("VmHWM:") * 1024.0 / 1e6)
}

fn sampler_bin() -> PathBuf {
    std::env::var_os("MLKUBE_NODE_SAMPLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mlkube-node-sampler")))
}

fn node_exporter_bin() -> PathBuf {
    let bin = std::env::var_os("MLKUBE_NODE_EXPORTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus-node-exporter"));
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{} not found: apt-get install -y --no-install-recommends prometheus-node-exporter (or set MLKUBE_NODE_EXPORTER_BIN)",
        bin.display()
    );
    bin
}

fn spawn(name: &'static str, mut command: Command, addr: SocketAddr) -> Target {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Target {
        name,
        child,
        addr,
        idle_cpu_per_sec: 0.0,
        cpu_seconds: 0.0,
        wall_seconds: 0.0,
        scrapes: 0,
        latencies_us: Vec::new(),
        body_bytes: 0,
        series: 0,
    }
}

// === scraping ===

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            stream.set_nodelay(true).unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            return send;
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One scrape: (status, body).
async fn scrape(send: &mut SendRequest<Empty<Bytes>>) -> (StatusCode, Bytes) {
    send.ready().await.unwrap();
    let request = Request::get("/metrics")
        .header(http::header::HOST, "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

async fn wait_ready(target: &Target) -> SendRequest<Empty<Bytes>> {
    let mut send = connect(target.addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = scrape(&mut send).await;
        if status == StatusCode::OK {
            assert!(!body.is_empty(), "{}: empty /metrics", target.name);
            return send;
        }
        assert!(Instant::now() < deadline, "{} never served /metrics", target.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// === in-process sampling cost ===

/// Mean wall time of one sample plus its encoding, as the sampler's background task does it.
fn time_sampling(iterations: u32) -> Duration {
    let host = HostSampler::new(PathBuf::from("/sys"), PathBuf::from("/")).unwrap();
    let mut sampler = Sampler::new(host, None, PathBuf::from("/proc"), PodIndex::new());
    let mut metrics = NodeMetrics::new("bench");
    for _ in 0..10 {
        metrics.update(&sampler.sample());
    }
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..iterations {
        let snapshot = sampler.sample();
        metrics.update(&snapshot);
        bytes += metrics.encode().unwrap().len();
    }
    assert!(bytes > 0);
    started.elapsed() / iterations
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
    let ticks = clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let exporter = node_exporter_bin();
    let exporter_version = Command::new(&exporter)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().to_owned()
        })
        .unwrap_or_default();
    println!("mlkube-node-sampler vs prometheus-node-exporter on 127.0.0.1");
    println!("  machine:  {cpus} CPUs, {ticks} clock ticks/s");
    println!(
        "  sampler:  {} --interval 1 (no pod watch; GPUs if NVML loads)",
        sampler_bin().display()
    );
    println!("  exporter: {exporter_version}");
    println!(
        "  method:   idle {} s each (no scrapes), then {} rounds x {} s of back-to-back scrapes per target, \
         one keep-alive connection, no gzip",
        options.idle, options.rounds, options.seconds
    );

    let sampler_addr = free_addr();
    let mut sampler_cmd = Command::new(sampler_bin());
    sampler_cmd.args([
        "--listen",
        &sampler_addr.to_string(),
        "--interval",
        "1",
        "--node-name",
        "bench",
        "--disable-pod-watch",
    ]);
    let full_addr = free_addr();
    let mut full_cmd = Command::new(&exporter);
    full_cmd.arg(format!("--web.listen-address={full_addr}"));
    let narrow_addr = free_addr();
    let mut narrow_cmd = Command::new(&exporter);
    narrow_cmd.args([
        format!("--web.listen-address={narrow_addr}"),
        "--collector.disable-defaults".to_owned(),
        "--collector.cpu".to_owned(),
        "--collector.meminfo".to_owned(),
        "--collector.filesystem".to_owned(),
        "--collector.netdev".to_owned(),
    ]);
    let mut targets = [
        spawn("mlkube-node-sampler", sampler_cmd, sampler_addr),
        spawn("node-exporter (defaults)", full_cmd, full_addr),
        spawn("node-exporter (4 collectors)", narrow_cmd, narrow_addr),
    ];
    let mut connections = Vec::new();
    for target in &mut targets {
        let mut send = wait_ready(target).await;
        for _ in 0..20 {
            let (_, body) = scrape(&mut send).await;
            target.body_bytes = body.len();
            target.series = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty() && l[0] != b'#')
                .count();
        }
        connections.push(send);
    }

    // Idle: all targets at once, nothing scraping (the sampler keeps sampling every second).
    let pids: Vec<u32> = targets.iter().map(|t| t.child.id()).collect();
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid, ticks)).collect();
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(options.idle)).await;
    let idle_wall = idle_started.elapsed().as_secs_f64();
    for (i, target) in targets.iter_mut().enumerate() {
        target.idle_cpu_per_sec = (cpu_seconds(pids[i], ticks) - before[i]).max(0.0) / idle_wall;
    }

    for _ in 0..options.rounds {
        for (i, target) in targets.iter_mut().enumerate() {
            let send = &mut connections[i];
            let cpu_before = cpu_seconds(pids[i], ticks);
            let started = Instant::now();
            let window = Duration::from_secs_f64(options.seconds);
            while started.elapsed() < window {
                let t = Instant::now();
                let (status, _) = scrape(send).await;
                assert_eq!(status, StatusCode::OK, "{}", target.name);
                target.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
                target.scrapes += 1;
            }
            target.wall_seconds += started.elapsed().as_secs_f64();
            target.cpu_seconds += cpu_seconds(pids[i], ticks) - cpu_before;
        }
    }

    let sample_cost = time_sampling(2_000);

    println!();
    println!(
        "{:<30} {:>9} {:>15} {:>12} {:>12} {:>9} {:>7} {:>9} {:>10} {:>12}",
        "target",
        "scrapes",
        "CPU/scrape µs",
        "p50 lat µs",
        "p99 lat µs",
        "body KB",
        "series",
        "RSS MB",
        "peak MB",
        "idle % core"
    );
    let mut per_scrape = Vec::new();
    let mut rss = Vec::new();
    for target in &mut targets {
        target.latencies_us.sort_by(f64::total_cmp);
        let busy = (target.cpu_seconds - target.idle_cpu_per_sec * target.wall_seconds).max(0.0);
        let cpu_us = busy / target.scrapes.max(1) as f64 * 1e6;
        let (now, peak) = rss_mb(target.child.id());
        per_scrape.push(cpu_us);
        rss.push(now);
        println!(
            "{:<30} {:>9} {:>15.1} {:>12.0} {:>12.0} {:>9.1} {:>7} {:>9.1} {:>10.1} {:>12.3}",
            target.name,
            target.scrapes,
            cpu_us,
            percentile(&target.latencies_us, 0.5),
            percentile(&target.latencies_us, 0.99),
            target.body_bytes as f64 / 1000.0,
            target.series,
            now,
            peak,
            target.idle_cpu_per_sec * 100.0
        );
    }
    // One clock tick over the idle window, in percent of a core.
    let idle_resolution = 100.0 / ticks / idle_wall;
    println!();
    println!(
        "  sampling cost in-process: {:.0} µs per sample + encoding = {:.3} % of one core at a 1 s interval \
         (idle row above: ±{:.3} % tick resolution)",
        sample_cost.as_secs_f64() * 1e6,
        sample_cost.as_secs_f64() * 100.0,
        idle_resolution
    );
    println!(
        "  CPU per scrape, sampler / node-exporter: {:.4} (defaults), {:.4} (4 collectors)",
        per_scrape[0] / per_scrape[1],
        per_scrape[0] / per_scrape[2]
    );
    println!(
        "  RSS, sampler / node-exporter: {:.2} (defaults), {:.2} (4 collectors)",
        rss[0] / rss[1],
        rss[0] / rss[2]
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  goals: CPU per scrape <= node-exporter's: {}; RSS <= 15 MB: {} ({:.1} MB); <= 0.5 % of a core at 1 s: {} ({:.3} % idle, {:.3} % in-process)",
        verdict(per_scrape[0] <= per_scrape[1].min(per_scrape[2])),
        verdict(rss[0] <= 15.0),
        rss[0],
        verdict(targets[0].idle_cpu_per_sec * 100.0 <= 0.5 && sample_cost.as_secs_f64() * 100.0 <= 0.5),
        targets[0].idle_cpu_per_sec * 100.0,
        sample_cost.as_secs_f64() * 100.0
    );
}
