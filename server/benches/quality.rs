//! Model-quality computation over 100,000 labelled predictions.
//!
//! Run: `cargo bench -p mlkube-server --bench quality` (optimised build). Knob:
//! `MLKUBE_BENCH_ROWS` (default 100000).
//!
//! Measures, each over several iterations (min / median / max):
//!  1. ROC AUC alone (one sort of the window's scores, ties included) — the issue's budget is
//!     "well under 100 ms" for 100k labelled predictions;
//!  2. every classification metric (confusion matrix, log loss, ROC AUC);
//!  3. a whole `quality/get` window end to end on SQLite: the indexed window query joining
//!     predictions to ground truth, and the metrics.
//!
//! Data are deterministic (a fixed linear congruential generator). Timing is reported, never
//! asserted.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlkube_server::quality::scores::{Scored, classification_metrics, roc_auc};
use mlkube_server::quality::store::{NewLabel, NewPrediction, Scope};
use mlkube_server::quality::windows::Window;
use mlkube_server::quality::{
    MonitoringSettings, QualityMonitoring, QualityQuery, ScoreSpec, Task, window_metrics,
};

/// Knuth's MMIX LCG: deterministic, dependency-free.
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Scores rounded to 3 decimals (so many ties), labels drawn with P(positive) = score.
fn samples(n: usize) -> Vec<Scored> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|_| {
            let score = (rng.next_f64() * 1000.0).round() / 1000.0;
            Scored {
                score,
                positive: rng.next_f64() < score,
            }
        })
        .collect()
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<48} min {:>8.2} ms   median {:>8.2} ms   max {:>8.2} ms   ({} runs)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
}

fn time_pure(rows: usize) {
    let data = samples(rows);
    let mut auc_times = Vec::new();
    let mut auc = 0.0;
    for _ in 0..30 {
        let mut copy = data.clone();
        let started = Instant::now();
        auc = roc_auc(&mut copy).unwrap();
        auc_times.push(started.elapsed());
    }
    report(&format!("roc_auc, {rows} labelled predictions"), auc_times);
    let mut all_times = Vec::new();
    for _ in 0..30 {
        let mut copy = data.clone();
        let started = Instant::now();
        let m = classification_metrics(&mut copy, 0.5);
        all_times.push(started.elapsed());
        assert_eq!(m["roc_auc"], auc);
    }
    report(&format!("all classification metrics, {rows}"), all_times);
    println!("  (roc_auc = {auc:.6})");
}

async fn time_window(rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("bench.db").display());
    let store = Arc::new(
        mlkube_server::store::open(&uri, "mlflow-artifacts:/")
            .await
            .unwrap(),
    );
    let monitoring = QualityMonitoring::new(store.database(), None, MonitoringSettings::default());
    let end = 10_000_000_000i64;
    let data = samples(rows);
    let started = Instant::now();
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let base = chunk_no * 1000;
        let predictions: Vec<NewPrediction> = chunk
            .iter()
            .enumerate()
            .map(|(i, s)| NewPrediction {
                request_id: format!("req-{}", base + i),
                model_name: "bench".into(),
                model_version: "1".into(),
                timestamp: end - 1 - (base + i) as i64,
                inputs: r#"{"dataframe_records": [{"x": 1.0}]}"#.into(),
                outputs: format!(r#"{{"predictions": [{}]}}"#, s.score),
                score: Some(s.score),
            })
            .collect();
        let labels: Vec<NewLabel> = chunk
            .iter()
            .enumerate()
            .map(|(i, s)| NewLabel {
                request_id: format!("req-{}", base + i),
                actual: if s.positive { "1" } else { "0" }.into(),
                actual_number: Some(if s.positive { 1.0 } else { 0.0 }),
                timestamp: end,
            })
            .collect();
        monitoring
            .store()
            .log_predictions(&predictions, end)
            .await
            .unwrap();
        monitoring.store().log_ground_truth(&labels, end).await.unwrap();
    }
    println!(
        "ingested {rows} predictions + {rows} labels in batches of 1000: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let query = QualityQuery {
        model_name: "bench".into(),
        model_version: Some("1".into()),
        window: Window::parse("1d").unwrap(),
        end_time: end,
        task: Task::Classification,
        score: ScoreSpec::new(None, None, None),
        quality: true,
        drift: false,
    };
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let r = monitoring.quality(&query).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(r.labelled, rows as i64);
    }
    report(&format!("quality/get window on SQLite, {rows} labelled"), times);

    // Where the time goes.
    let scope = Scope {
        model_name: "bench".into(),
        model_version: Some("1".into()),
    };
    let (start, end) = query.window.bounds(end);
    let store = monitoring.store();
    let mut fetch = Vec::new();
    let mut late = Vec::new();
    let mut math = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let window = store.window_rows(&scope, start, end, false).await.unwrap();
        fetch.push(started.elapsed());
        let started = Instant::now();
        store.late_labels(&scope, start, end).await.unwrap();
        late.push(started.elapsed());
        let started = Instant::now();
        let (_, n) = window_metrics(&window, Task::Classification, &query.score);
        math.push(started.elapsed());
        assert_eq!(n, rows as i64);
    }
    report("  of which: window query (join, decode)", fetch);
    report("  of which: late-label count", late);
    report("  of which: metrics (confusion, log loss, ROC AUC)", math);
}

fn main() {
    let rows: usize = std::env::var("MLKUBE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    time_pure(rows);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(time_window(rows));
}
