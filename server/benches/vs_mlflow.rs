//! mlkube-server against upstream `mlflow server`, side by side on 127.0.0.1, on SQLite and on
//! PostgreSQL (docs/architecture.md, "Performance").
//!
//! Run: `scripts/bench-server` (optimised build; it installs the MLflow virtualenv, starts a private
//! PostgreSQL cluster and passes `MLKUBE_BENCH_MLFLOW` and `MLKUBE_BENCH_POSTGRES_URL`). Knobs:
//! `MLKUBE_BENCH_SECONDS` (per workload and round, default 3), `MLKUBE_BENCH_ROUNDS` (default 3),
//! `MLKUBE_BENCH_MLFLOW_WORKERS` (default 2 = this machine's cores), `MLKUBE_BENCH_ENGINES`,
//! `MLKUBE_BENCH_WORKLOADS` (e.g. "search history"; default all four), `MLKUBE_BENCH_PERF=<dir>`
//! (records `perf` call graphs of the whole machine during each of mlkube-server's measurements
//! into `<dir>/<engine>-<workload>-r<round>.data`, to see where the time goes: the server, the
//! database engine, the benchmark's own client, idle).
//!
//! Per engine both servers run at once on their own databases (the same PostgreSQL cluster for
//! both), each filled with the same fixture; then the workloads run in alternating rounds (ours,
//! upstream, upstream, ours, …) so that a busy moment on this shared machine hits both. Printed
//! per workload: requests/s, p50 and p99 of each server, and the median ratio with its spread over
//! the rounds.
//!  - log-batch of 1000 metrics, 4 concurrent clients
//!  - single log-metric, 16 concurrent clients
//!  - search over 1000 runs with a metric + param + tag filter and an order_by, 4 clients
//!  - get-history of a 5000-point metric, 4 clients
//!
//! Then the write path against the engine itself: one log-batch of 1000 metrics at a time through
//! mlkube-server, against the same rows (1000 metric points and the 1000 latest-value upserts)
//! inserted straight through the native sqlx driver into the server's own database — same schema,
//! indexes and durability (SQLite `synchronous=FULL`, PostgreSQL as configured) — as a multiple of
//! that raw cost. And the resident memory of each server idle and its peak under the load.
//! Timing is reported, never asserted.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use serde_json::{Value, json};
use sqlx::Connection;

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    LogBatch,
    LogMetric,
    Search,
    History,
}

const WORKLOADS: [Workload; 4] = [
    Workload::LogBatch,
    Workload::LogMetric,
    Workload::Search,
    Workload::History,
];

impl Workload {
    /// Whether `MLKUBE_BENCH_WORKLOADS` (slugs, space-separated; default all) names this one.
    fn selected(self) -> bool {
        std::env::var("MLKUBE_BENCH_WORKLOADS")
            .map_or(true, |names| names.split_whitespace().any(|n| n == self.slug()))
    }

    fn slug(self) -> &'static str {
        match self {
            Workload::LogBatch => "log-batch",
            Workload::LogMetric => "log-metric",
            Workload::Search => "search",
            Workload::History => "history",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Workload::LogBatch => "log-batch 1000 metrics, 4 clients",
            Workload::LogMetric => "log-metric, 16 clients",
            Workload::Search => "search 1000 runs (metric+param+tag, order), 4 clients",
            Workload::History => "get-history 5000 points, 4 clients",
        }
    }

    fn clients(self) -> usize {
        match self {
            Workload::LogMetric => 16,
            _ => 4,
        }
    }
}

#[derive(Clone)]
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
    let mut handles = Vec::new();
    for i in 0..1000 {
        let (client, base, exp) = (client.clone(), base.to_owned(), exp.clone());
        handles.push(async move {
            let run = create_run(&client, &base, &exp).await;
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

    let history_run = create_run(client, base, "0").await;
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
    Fixture {
        run_for_writes: create_run(client, base, "0").await,
        history_run,
        search_experiment: exp,
    }
}

/// A log-batch body of 1000 metrics at step `step` (keys m0..m999).
fn batch_body(run: &str, step: i64) -> Value {
    let metrics: Vec<Value> = (0..1000)
        .map(|k| json!({ "key": format!("m{k}"), "value": k as f64 + 0.25, "timestamp": step, "step": step }))
        .collect();
    json!({ "run_id": run, "metrics": metrics })
}

async fn measure(
    workload: Workload,
    client: &HttpClient,
    base: &str,
    fixture: &Fixture,
    seconds: f64,
    round: usize,
) -> Measured {
    let (c, base, fx) = (client.clone(), base.to_owned(), fixture.clone());
    match workload {
        Workload::LogBatch => {
            drive(workload.clients(), seconds, move |client_no, i| {
                let (c, base, run) = (c.clone(), base.clone(), fx.run_for_writes.clone());
                async move {
                    let step = (round * 100_000_000 + client_no * 1_000_000 + i) as i64;
                    post(&c, &base, "runs/log-batch", batch_body(&run, step)).await;
                }
            })
            .await
        }
        Workload::LogMetric => {
            drive(workload.clients(), seconds, move |client_no, i| {
                let (c, base, run) = (c.clone(), base.clone(), fx.run_for_writes.clone());
                async move {
                    let ts = (round * 100_000_000 + client_no * 1_000_000 + i) as i64;
                    post(
                        &c,
                        &base,
                        "runs/log-metric",
                        json!({ "run_id": run, "key": "single", "value": 1.0, "timestamp": ts, "step": ts }),
                    )
                    .await;
                }
            })
            .await
        }
        Workload::Search => {
            drive(workload.clients(), seconds, move |_, _| {
                let (c, base, exp) = (c.clone(), base.clone(), fx.search_experiment.clone());
                async move {
                    let body = json!({ "experiment_ids": [exp], "max_results": 1000,
                        "filter": "metrics.rmse < 0.5 and params.lr = '0.1' and tags.team = 'nlp'",
                        "order_by": ["metrics.rmse DESC"] });
                    let found = post(&c, &base, "runs/search", body).await;
                    // Runs i in 0..1000 with i % 100 < 50, i even and i % 3 != 0: both must agree.
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
            .await
        }
        Workload::History => {
            drive(workload.clients(), seconds, move |_, _| {
                let (c, base, run) = (c.clone(), base.clone(), fx.history_run.clone());
                async move {
                    let bytes = get(
                        &c,
                        &base,
                        &format!("metrics/get-history?run_id={run}&metric_key=loss&max_results=25000"),
                    )
                    .await;
                    assert!(bytes.len() > 100_000, "history body looks too small");
                }
            })
            .await
        }
    }
}

/// Milliseconds per batch of inserting 1000 metric points and upserting their 1000 latest values
/// straight through the native driver (one transaction, two prepared multi-row statements), median
/// of `batches` after `warmup` untimed ones have given each key a history several pages long. The
/// database is a fresh one migrated by mlkube-server's own store (same schema, same indexes), not
/// the running server's: a second process writing into a live SQLite file is not what is measured.
/// The log-batch's two statements (head, tail) as the server writes them on SQLite and PostgreSQL.
const PORTABLE_STATEMENTS: [(&str, &str); 2] = [
    (
        "INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ",
        " ON CONFLICT DO NOTHING",
    ),
    (
        "INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ",
        " ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, \
         timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan",
    ),
];
/// The same on MySQL (docs/architecture.md, "Inside mlkube-server").
const MYSQL_STATEMENTS: [(&str, &str); 2] = [
    (
        "INSERT IGNORE INTO metrics (run_uuid, `key`, step, timestamp, value, is_nan) VALUES ",
        "",
    ),
    (
        "INSERT INTO latest_metrics (run_uuid, `key`, step, timestamp, value, is_nan) VALUES ",
        " ON DUPLICATE KEY UPDATE step = VALUES(step), timestamp = VALUES(timestamp), \
         value = VALUES(value), is_nan = VALUES(is_nan)",
    ),
];

async fn raw_insert_ms(engine: &Engine, warmup: usize, batches: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let backend_uri = engine.fresh_database(dir.path(), "bench_raw").await;
    let run_id = {
        use mlkube_server::store::{self, RunStore};
        let store = store::open(&backend_uri, "mlflow-artifacts:/").await.unwrap();
        let run = store
            .create_run(store::NewRun {
                experiment_id: "0".into(),
                user_id: "bench".into(),
                run_name: "raw".into(),
                start_time: 1,
                tags: Vec::new(),
            })
            .await
            .unwrap();
        run.info.run_id
    };
    let run_id = run_id.as_str();
    let url = Engine::sqlx_url(&backend_uri);
    let mut times = Vec::new();
    macro_rules! insert_batches {
        ($conn:expr, $ph:expr, $statements:expr) => {
            for b in 0..warmup + batches {
                let started = Instant::now();
                let mut tx = $conn.begin().await.unwrap();
                let step = 1_000_000_000 + b as i64;
                let values = |head: &str, tail: &str| {
                    let mut sql = head.to_owned();
                    for k in 0..1000 {
                        let p = k * 6;
                        if k > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!(
                            "({}, {}, {}, {}, {}, {})",
                            $ph(p + 1),
                            $ph(p + 2),
                            $ph(p + 3),
                            $ph(p + 4),
                            $ph(p + 5),
                            $ph(p + 6)
                        ));
                    }
                    sql.push_str(tail);
                    sql
                };
                for (head, tail) in $statements {
                    let sql = values(head, tail);
                    let mut q = sqlx::query(&sql);
                    for k in 0..1000 {
                        q = q
                            .bind(run_id)
                            .bind(format!("m{k}"))
                            .bind(step)
                            .bind(step)
                            .bind(k as f64 + 0.25)
                            .bind(0i64);
                    }
                    q.execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
                if b >= warmup {
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        };
    }
    match engine {
        Engine::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut conn)
                .await
                .unwrap();
            // Plain `?`: SQLite binds numbered placeholders through a linear search (O(n²)).
            insert_batches!(conn, |_: usize| "?".to_owned(), PORTABLE_STATEMENTS);
        }
        Engine::Postgres { .. } => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            insert_batches!(conn, |i: usize| format!("${i}"), PORTABLE_STATEMENTS);
        }
        Engine::MySql { .. } => {
            let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
            insert_batches!(conn, |_: usize| "?".to_owned(), MYSQL_STATEMENTS);
        }
    }
    spread(&times).0
}

struct EngineReport {
    engine: &'static str,
    /// Per workload, per round: (ours, upstream).
    rounds: Vec<Vec<(Measured, Measured)>>,
    idle_rss: (f64, f64),
    load_rss: (f64, f64),
    /// Our peak RSS per workload, MB.
    peaks: Vec<f64>,
    ours_batch_ms: f64,
    raw_batch_ms: f64,
    upstream_batch_ms: f64,
}

async fn bench_engine(
    engine: &Engine,
    mlflow: &str,
    workers: &str,
    seconds: f64,
    rounds: usize,
) -> EngineReport {
    // The engine's own cost of the rows a log-batch writes, first, on a quiet machine.
    eprintln!("[{}] raw driver insert of log-batch rows", engine.name());
    let raw_batch_ms = raw_insert_ms(engine, 200, 50).await;
    eprintln!("[{}] raw driver: {raw_batch_ms:.2} ms per batch", engine.name());
    let client = http_client();
    let ours = start_mlkube(engine, "bench_mlkube").await;
    let theirs = start_mlflow(mlflow, workers, engine, "bench_mlflow").await;
    wait_healthy(&client, &ours).await;
    wait_healthy(&client, &theirs).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle_rss = (tree_rss_mb(ours.child.id()), tree_rss_mb(theirs.child.id()));
    eprintln!("[{}] filling both servers…", engine.name());
    let fx_ours = setup(&client, &ours.base).await;
    let fx_theirs = setup(&client, &theirs.base).await;

    let peak_theirs = PeakRss::start(theirs.child.id());
    let mut table: Vec<Vec<(Measured, Measured)>> = vec![Vec::new(); WORKLOADS.len()];
    // Our resident memory is sampled per workload, to show which one needs it.
    let mut peaks = vec![0.0f64; WORKLOADS.len()];
    for round in 0..rounds {
        for (w, workload) in WORKLOADS.iter().enumerate() {
            if !workload.selected() {
                continue;
            }
            eprintln!("[{}] round {} {}", engine.name(), round + 1, workload.label());
            // Alternate who goes first, so neither always gets the quieter moment.
            let ours_first = (round + w) % 2 == 0;
            let mut b = None;
            if !ours_first {
                b = Some(measure(*workload, &client, &theirs.base, &fx_theirs, seconds, round).await);
            }
            let sampler = PeakRss::start(ours.child.id());
            let profile = PerfRecord::start(&format!("{}-{}-r{round}", engine.name(), workload.slug()));
            let a = measure(*workload, &client, &ours.base, &fx_ours, seconds, round).await;
            drop(profile);
            peaks[w] = peaks[w].max(sampler.finish());
            if ours_first {
                b = Some(measure(*workload, &client, &theirs.base, &fx_theirs, seconds, round).await);
            }
            table[w].push((a, b.unwrap()));
        }
    }
    let load_rss = (peaks.iter().copied().fold(0.0, f64::max), peak_theirs.finish());

    // One batch at a time: our time per batch against the engine's own cost of the same rows.
    eprintln!(
        "[{}] one log-batch at a time, and the raw driver insert",
        engine.name()
    );
    let one = |base: String, run: String| {
        let c = client.clone();
        drive(1, seconds, move |_, i| {
            let (c, base, run) = (c.clone(), base.clone(), run.clone());
            async move {
                post(
                    &c,
                    &base,
                    "runs/log-batch",
                    batch_body(&run, 500_000_000 + i as i64),
                )
                .await;
            }
        })
    };
    eprintln!("[{}] … ours", engine.name());
    let ours_batch_ms = one(ours.base.clone(), fx_ours.run_for_writes.clone())
        .await
        .p50_ms;
    eprintln!("[{}] … mlflow", engine.name());
    let upstream_batch_ms = one(theirs.base.clone(), fx_theirs.run_for_writes.clone())
        .await
        .p50_ms;
    EngineReport {
        engine: engine.name(),
        rounds: table,
        idle_rss,
        load_rss,
        peaks,
        ours_batch_ms,
        raw_batch_ms,
        upstream_batch_ms,
    }
}

fn print_report(r: &EngineReport, workers: &str, seconds: f64) {
    println!();
    println!(
        "## {}: mlkube-server vs mlflow server 3.x (--workers {workers}), {} rounds × {seconds} s per workload",
        r.engine,
        r.rounds.iter().map(Vec::len).max().unwrap_or(0)
    );
    println!(
        "{:<55} {:>10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>16} {:>9}",
        "workload",
        "ours req/s",
        "p50 ms",
        "p99 ms",
        "mlflow r/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "(min–max)",
        "ours RSS"
    );
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let rows = &r.rounds[w];
        if rows.is_empty() {
            continue;
        }
        let med =
            |f: &dyn Fn(&(Measured, Measured)) -> f64| spread(&rows.iter().map(f).collect::<Vec<_>>()).0;
        let (ratio, lo, hi) = spread(&rows.iter().map(|(a, b)| a.rps / b.rps).collect::<Vec<_>>());
        println!(
            "{:<55} {:>10.1} {:>8.2} {:>8.2} {:>10.1} {:>8.2} {:>8.2} {:>7.1}x {:>16} {:>6.1} MB",
            workload.label(),
            med(&|(a, _)| a.rps),
            med(&|(a, _)| a.p50_ms),
            med(&|(a, _)| a.p99_ms),
            med(&|(_, b)| b.rps),
            med(&|(_, b)| b.p50_ms),
            med(&|(_, b)| b.p99_ms),
            ratio,
            format!("({lo:.1}–{hi:.1}x)"),
            r.peaks[w]
        );
    }
    println!(
        "one log-batch of 1000 metrics at a time: ours {:.2} ms, raw driver insert of the same rows {:.2} ms \
         ({:.2}x raw), mlflow {:.1} ms",
        r.ours_batch_ms,
        r.raw_batch_ms,
        r.ours_batch_ms / r.raw_batch_ms,
        r.upstream_batch_ms
    );
    println!(
        "RSS (MB, process tree): ours idle {:.1}, peak under load {:.1}; mlflow idle {:.1}, peak {:.1}",
        r.idle_rss.0, r.load_rss.0, r.idle_rss.1, r.load_rss.1
    );
}

#[tokio::main]
async fn main() {
    let seconds: f64 = knob("MLKUBE_BENCH_SECONDS", 3.0);
    let rounds: usize = knob("MLKUBE_BENCH_ROUNDS", 3);
    let workers = std::env::var("MLKUBE_BENCH_MLFLOW_WORKERS").unwrap_or_else(|_| "2".to_owned());
    let mlflow = mlflow_executable();
    for engine in Engine::from_env() {
        let report = bench_engine(&engine, &mlflow, &workers, seconds, rounds).await;
        print_report(&report, &workers, seconds);
    }
}
