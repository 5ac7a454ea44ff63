//! How mlkube-server's read paths cost as the data grows, on SQLite and PostgreSQL
//! (docs/architecture.md, "Performance").
//!
//! Run: `scripts/bench-server` (after the side-by-side benchmark; it starts the PostgreSQL cluster
//! and passes `MLKUBE_BENCH_POSTGRES_URL`). Knobs: `MLKUBE_BENCH_SECONDS` (per measurement, default
//! 3), `MLKUBE_BENCH_SCALE_POINTS` (default "10000 100000 1000000"), `MLKUBE_BENCH_SCALE_RUNS`
//! (default "1000 10000 100000"), `MLKUBE_BENCH_ENGINES`.
//!
//! Everything is written through the HTTP API, as clients would:
//!  - one run's metric grows to each point count (log-batches of 1000); at each size: reading the
//!    latest value (runs/get) and the first 25 000-point page of its history (get-history);
//!  - one experiment grows to each run count (each run with a metric, a param and a tag); at each
//!    size: a search with a metric + param + tag filter ordered by the metric, page size 100.
//!
//! One client at a time; p50 and p99 per size and the growth of p50 from the smallest size.
//! Timing is reported, never asserted.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use common::*;
use serde_json::{Value, json};

fn sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

struct Point {
    size: usize,
    what: &'static str,
    m: Measured,
}

/// Grow one metric to each size in `points`; measure the latest value and a 25 000-point page.
async fn metric_points(client: &HttpClient, base: &str, points: &[usize], seconds: f64) -> Vec<Point> {
    let run = create_run(client, base, "0").await;
    let mut written = 0usize;
    let mut out = Vec::new();
    for &target in points {
        let started = std::time::Instant::now();
        while written < target {
            let n = 1000.min(target - written);
            let metrics: Vec<Value> = (written..written + n)
                .map(|i| json!({ "key": "loss", "value": 1.0 / (1.0 + i as f64), "timestamp": i, "step": i }))
                .collect();
            post(
                client,
                base,
                "runs/log-batch",
                json!({ "run_id": run, "metrics": metrics }),
            )
            .await;
            written += n;
        }
        eprintln!(
            "  {target} points written ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let (c, b, r) = (client.clone(), base.to_owned(), run.clone());
        let latest = drive(1, seconds, move |_, _| {
            let (c, b, r) = (c.clone(), b.clone(), r.clone());
            async move {
                let run: Value =
                    serde_json::from_slice(&get(&c, &b, &format!("runs/get?run_id={r}")).await).unwrap();
                let step = run["run"]["data"]["metrics"][0]["step"].as_i64();
                assert_eq!(step, Some(target as i64 - 1), "latest value");
            }
        })
        .await;
        out.push(Point {
            size: target,
            what: "latest value (runs/get)",
            m: latest,
        });
        let (c, b, r) = (client.clone(), base.to_owned(), run.clone());
        let page = drive(1, seconds, move |_, _| {
            let (c, b, r) = (c.clone(), b.clone(), r.clone());
            async move {
                let body = get(
                    &c,
                    &b,
                    &format!("metrics/get-history?run_id={r}&metric_key=loss&max_results=25000"),
                )
                .await;
                // Count the points without parsing 2 MB of JSON into a tree: the client's parse
                // is not the server's latency.
                let points = body.windows(7).filter(|w| w == b"\"step\":").count();
                assert_eq!(points, target.min(25_000), "history page size");
            }
        })
        .await;
        out.push(Point {
            size: target,
            what: "get-history page of 25 000",
            m: page,
        });
    }
    out
}

/// Grow one experiment to each size in `runs`; measure a filtered, ordered search (100 per page).
async fn experiment_runs(client: &HttpClient, base: &str, runs: &[usize], seconds: f64) -> Vec<Point> {
    let exp = post(
        client,
        base,
        "experiments/create",
        json!({ "name": "bench-scale" }),
    )
    .await["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut written = 0usize;
    let mut out = Vec::new();
    for &target in runs {
        let started = std::time::Instant::now();
        while written < target {
            let n = 16.min(target - written);
            let jobs = (written..written + n).map(|i| {
                let (client, base, exp) = (client.clone(), base.to_owned(), exp.clone());
                async move {
                    let run = create_run(&client, &base, &exp).await;
                    post(
                        &client,
                        &base,
                        "runs/log-batch",
                        json!({ "run_id": run,
                                "metrics": [{ "key": "rmse", "value": (i % 1000) as f64 / 1000.0, "timestamp": 1, "step": 0 }],
                                "params": [{ "key": "lr", "value": if i % 2 == 0 { "0.1" } else { "0.01" } }],
                                "tags": [{ "key": "team", "value": if i % 3 == 0 { "vision" } else { "nlp" } }] }),
                    )
                    .await;
                }
            });
            futures_util::future::join_all(jobs).await;
            written += n;
        }
        eprintln!(
            "  {target} runs written ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let (c, b, e) = (client.clone(), base.to_owned(), exp.clone());
        let search = drive(1, seconds, move |_, _| {
            let (c, b, e) = (c.clone(), b.clone(), e.clone());
            async move {
                let body = json!({ "experiment_ids": [e], "max_results": 100,
                    "filter": "metrics.rmse < 0.5 and params.lr = '0.1' and tags.team = 'nlp'",
                    "order_by": ["metrics.rmse DESC"] });
                let found = post(&c, &b, "runs/search", body).await;
                let page = found["runs"].as_array().map_or(0, Vec::len);
                assert_eq!(page, 100, "search page size");
                let values: Vec<f64> = found["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["data"]["metrics"][0]["value"].as_f64().unwrap())
                    .collect();
                assert!(values.windows(2).all(|w| w[0] >= w[1]), "ordered by rmse desc");
                assert!(values.iter().all(|v| *v < 0.5), "filtered on rmse");
            }
        })
        .await;
        out.push(Point {
            size: target,
            what: "search (filter + order, 100 per page)",
            m: search,
        });
    }
    out
}

fn print_curve(engine: &str, title: &str, points: &[Point]) {
    let mut whats: Vec<&str> = points.iter().map(|p| p.what).collect();
    whats.dedup();
    whats.sort();
    whats.dedup();
    for what in whats {
        println!();
        println!("## {engine}: {what}, {title}");
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>12}",
            "size", "p50 ms", "p99 ms", "req/s", "p50 growth"
        );
        let series: Vec<&Point> = points.iter().filter(|p| p.what == what).collect();
        let first = series.first().map_or(f64::NAN, |p| p.m.p50_ms);
        for p in series {
            println!(
                "{:>10} {:>10.3} {:>10.3} {:>10.1} {:>11.2}x",
                p.size,
                p.m.p50_ms,
                p.m.p99_ms,
                p.m.rps,
                p.m.p50_ms / first
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let seconds: f64 = knob("MLKUBE_BENCH_SECONDS", 3.0);
    let points = sizes("MLKUBE_BENCH_SCALE_POINTS", "10000 100000 1000000");
    let runs = sizes("MLKUBE_BENCH_SCALE_RUNS", "1000 10000 100000");
    let client = http_client();
    for engine in Engine::from_env() {
        let server = start_mlkube(&engine, "bench_scale").await;
        wait_healthy(&client, &server).await;
        eprintln!("[{}] metric points", engine.name());
        let curve = metric_points(&client, &server.base, &points, seconds).await;
        print_curve(engine.name(), "one run's metric grows", &curve);
        eprintln!("[{}] runs", engine.name());
        let curve = experiment_runs(&client, &server.base, &runs, seconds).await;
        print_curve(engine.name(), "one experiment grows", &curve);
        println!(
            "RSS of mlkube-server after the growth: {:.1} MB",
            tree_rss_mb(server.child.id())
        );
    }
}
