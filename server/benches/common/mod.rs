//! What the server benchmarks share: starting mlkube-server and `mlflow server` as process trees
//! on 127.0.0.1, fresh databases on either engine, an HTTP client, a time-bounded load driver
//! with latency percentiles, and resident-memory sampling. Timing is reported, never asserted.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sqlx::Connection;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    // Idle connections are dropped before gunicorn's 2 s keep-alive closes them under us.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_millis(1500))
        .build_http()
}

/// The database engine a benchmark runs on.
#[derive(Clone, Debug)]
pub enum Engine {
    Sqlite,
    /// `admin` is a URL of the cluster's `postgres` database; each server gets its own database.
    Postgres {
        admin: String,
    },
    /// `admin` is a URL of the MariaDB server's `mysql` database; each server gets its own database.
    MySql {
        admin: String,
    },
}

impl Engine {
    /// The engines to run: SQLite always, PostgreSQL when `MLKUBE_BENCH_POSTGRES_URL` names a
    /// cluster (`scripts/bench-server` starts one); `MLKUBE_BENCH_ENGINES` narrows the list.
    pub fn from_env() -> Vec<Engine> {
        let wanted =
            std::env::var("MLKUBE_BENCH_ENGINES").unwrap_or_else(|_| "sqlite postgres mariadb".into());
        let mut out = Vec::new();
        if wanted.split_whitespace().any(|e| e == "sqlite") {
            out.push(Engine::Sqlite);
        }
        if wanted.split_whitespace().any(|e| e == "postgres") {
            match std::env::var("MLKUBE_BENCH_POSTGRES_URL") {
                Ok(admin) if !admin.is_empty() => out.push(Engine::Postgres { admin }),
                _ => eprintln!(
                    "MLKUBE_BENCH_POSTGRES_URL unset: PostgreSQL skipped (scripts/bench-server sets it)"
                ),
            }
        }
        if wanted.split_whitespace().any(|e| e == "mariadb") {
            match std::env::var("MLKUBE_BENCH_MYSQL_URL") {
                Ok(admin) if !admin.is_empty() => out.push(Engine::MySql { admin }),
                _ => {
                    eprintln!("MLKUBE_BENCH_MYSQL_URL unset: MariaDB skipped (scripts/bench-server sets it)")
                }
            }
        }
        out
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres { .. } => "PostgreSQL",
            Engine::MySql { .. } => "MariaDB",
        }
    }

    /// A fresh, empty database called `name` (a file under `dir` for SQLite): its URI.
    pub async fn fresh_database(&self, dir: &Path, name: &str) -> String {
        match self {
            Engine::Sqlite => format!("sqlite:///{}", dir.join(format!("{name}.db")).display()),
            Engine::Postgres { admin } => {
                let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
                let sql = recreate_sql(&format!("\"{name}\""), "");
                for statement in &sql {
                    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
                }
                beside(admin, name)
            }
            Engine::MySql { admin } => {
                let mut conn = sqlx::MySqlConnection::connect(admin).await.unwrap();
                let sql = recreate_sql(&format!("`{name}`"), " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
                for statement in &sql {
                    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
                }
                beside(admin, name)
            }
        }
    }

    /// The sqlx URL of a database URI made by [`Engine::fresh_database`].
    pub fn sqlx_url(uri: &str) -> String {
        match uri.strip_prefix("sqlite:///") {
            Some(path) => format!("sqlite://{path}"),
            None => uri.to_owned(),
        }
    }
}

/// `DROP DATABASE IF EXISTS <quoted>` and `CREATE DATABASE <quoted><options>`, to run one at a
/// time (PostgreSQL runs neither inside the implicit transaction of a multi-statement query).
fn recreate_sql(quoted: &str, options: &str) -> [String; 2] {
    [
        format!("DROP DATABASE IF EXISTS {quoted}"),
        format!("CREATE DATABASE {quoted}{options}"),
    ]
}

/// The URL of database `name` on the server `admin` names.
fn beside(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

/// A server's process tree, stopped (TERM, then KILL) when dropped.
pub struct Server {
    pub name: &'static str,
    pub base: String,
    pub backend_uri: String,
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // mlflow runs uvicorn workers under a supervisor; stop the whole tree, politely first.
        // Only the processes of this tree, each by its pid: no process-group or broad signal.
        let mut tree = descendants(self.child.id());
        tree.push(self.child.id());
        tree.retain(|pid| *pid > 1 && *pid != std::process::id());
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

/// Every descendant of `root` (found through /proc).
pub fn descendants(root: u32) -> Vec<u32> {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `cmd` in its own process group, its output in `log`.
fn spawn_in_own_group(cmd: &mut Command, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    cmd.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap()
}

/// mlkube-server on `engine` (SQLite answers writes once on disk: `--sqlite-synchronous full`,
/// the default).
pub async fn start_mlkube(engine: &Engine, db_name: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let backend_uri = engine.fresh_database(dir.path(), db_name).await;
    let port = free_port();
    let child = spawn_in_own_group(
        Command::new(env!("CARGO_BIN_EXE_mlkube-server"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(&backend_uri)
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .env("MLKUBE_LOG", "warn"),
        &dir.path().join("server.log"),
    );
    Server {
        name: "mlkube",
        base: format!("http://127.0.0.1:{port}"),
        backend_uri,
        child,
        dir,
    }
}

/// The `mlflow` executable: `MLKUBE_BENCH_MLFLOW`, else the 3.17.2 virtualenv under .cache/.
pub fn mlflow_executable() -> String {
    let mlflow = std::env::var("MLKUBE_BENCH_MLFLOW").unwrap_or_else(|_| {
        format!(
            "{}/../.cache/venvs/mlflow-3.17.2/bin/mlflow",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    if !Path::new(&mlflow).exists() {
        panic!("no mlflow at {mlflow}: run scripts/bench-server, which installs it");
    }
    mlflow
}

/// Upstream `mlflow server` with `workers` uvicorn workers on `engine`.
pub async fn start_mlflow(mlflow: &str, workers: &str, engine: &Engine, db_name: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let backend_uri = engine.fresh_database(dir.path(), db_name).await;
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
            // SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the venv has psycopg2.
            .arg(
                backend_uri
                    .replacen("postgresql://", "postgresql+psycopg2://", 1)
                    .replacen("mysql://", "mysql+pymysql://", 1),
            )
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        &dir.path().join("server.log"),
    );
    Server {
        name: "mlflow",
        base: format!("http://127.0.0.1:{port}"),
        backend_uri,
        child,
        dir,
    }
}

pub async fn call(client: &HttpClient, method: &str, url: &str, body: Option<&Value>) -> (u16, Bytes) {
    let body = body.map(|v| Bytes::from(v.to_string()));
    let request = || {
        let req = Request::builder().method(method).uri(url);
        match &body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Full::new(b.clone())),
            None => req.body(Full::new(Bytes::new())),
        }
        .unwrap()
    };
    // A pooled connection the server closed as it was reused is retried once on a new one.
    let resp = match client.request(request()).await {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("{method} {url}: {e}; retried once");
            client.request(request()).await.unwrap()
        }
    };
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// POST to `/api/2.0/mlflow/{path}`; anything but 200 stops the benchmark.
pub async fn post(client: &HttpClient, base: &str, path: &str, body: Value) -> Value {
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

/// A new run in experiment `exp`: its id.
pub async fn create_run(client: &HttpClient, base: &str, exp: &str) -> String {
    post(
        client,
        base,
        "runs/create",
        serde_json::json!({ "experiment_id": exp, "start_time": 1 }),
    )
    .await["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// GET `/api/2.0/mlflow/{path_and_query}`; anything but 200 stops the benchmark.
pub async fn get(client: &HttpClient, base: &str, path_and_query: &str) -> Bytes {
    let (status, bytes) = call(
        client,
        "GET",
        &format!("{base}/api/2.0/mlflow/{path_and_query}"),
        None,
    )
    .await;
    assert_eq!(
        status,
        200,
        "{path_and_query}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// Wait for `/health`; a server that does not come up stops the benchmark with its log.
pub async fn wait_healthy(client: &HttpClient, server: &Server) {
    let base = &server.base;
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
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{} at {base} did not become healthy:\n{}",
        server.name,
        tail.join("\n")
    );
}

/// RSS in MB of a process and all its descendants.
pub fn tree_rss_mb(root: u32) -> f64 {
    let mut total_kb = 0u64;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))
        {
            total_kb += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            stack.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    total_kb as f64 / 1024.0
}

/// Samples a process tree's RSS every 20 ms on its own thread and keeps the peak.
/// `perf record -a -g` of the whole machine while this value lives, when `MLKUBE_BENCH_PERF` names
/// a directory; nothing otherwise. `perf report -i <file> --sort comm` splits the time between the
/// server, the database engine's processes, the benchmark's own client and idle;
/// `--comm mlkube-server --sort sym` shows where the server's share goes.
pub struct PerfRecord(Option<Child>);

impl PerfRecord {
    pub fn start(name: &str) -> Self {
        let Ok(dir) = std::env::var("MLKUBE_BENCH_PERF") else {
            return Self(None);
        };
        let _ = std::fs::create_dir_all(&dir);
        let out = Path::new(&dir).join(format!("{name}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "-q", "-a", "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                // perf needs a moment to attach before the workload starts.
                std::thread::sleep(Duration::from_millis(300));
                Self(Some(child))
            }
            Err(e) => {
                eprintln!("MLKUBE_BENCH_PERF: perf could not start: {e}");
                Self(None)
            }
        }
    }
}

impl Drop for PerfRecord {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

pub struct PeakRss {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(root: u32) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kb.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max((tree_rss_mb(root) * 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop sampling: the peak in MB.
    pub fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: usize,
}

/// The `q` quantile (0..=1) of sorted seconds, in milliseconds.
pub fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] * 1000.0
}

/// Run `make_request(client_no, i)` from `clients` concurrent tasks for `seconds` (bounded by
/// time and by count).
pub async fn drive<F, Fut>(clients: usize, seconds: f64, make_request: F) -> Measured
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
    Measured {
        rps: all.len() as f64 / elapsed,
        p50_ms: quantile_ms(&all, 0.5),
        p99_ms: quantile_ms(&all, 0.99),
        requests: all.len(),
    }
}

/// Median, minimum and maximum of some numbers (NaN when empty).
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// An env knob parsed as `T`, or `default`.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
