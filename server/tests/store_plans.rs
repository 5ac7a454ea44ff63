//! The engines' plans for run searches: the common filters (metric, param and tag equality and
//! ranges, attributes) and an order by a metric must be answered through indexes, never by
//! scanning a whole table of metrics, params, tags or runs (docs/architecture.md, "Performance").
//! SQLite always; PostgreSQL ignored by default (`scripts/test-all` starts a private cluster, sets
//! MLKUBE_TEST_POSTGRES_URL and runs ignored tests), planned with sequential scans priced out so
//! that an empty table still shows which index a statement can use.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use mlkube_server::search::{parse_run_filter, parse_run_order_by};
use mlkube_server::store::sql::SqlStore;
use mlkube_server::store::{self, ExperimentStore, RunSearch, ViewType};

/// (filter, order_by) of the searches a UI or client sends most.
const SEARCHES: &[(&str, &[&str])] = &[
    ("metrics.rmse = 0.25", &[]),
    ("metrics.rmse < 0.5", &[]),
    (
        "metrics.rmse >= 0.1 and metrics.rmse < 0.5",
        &["metrics.rmse DESC"],
    ),
    ("params.lr = '0.1'", &[]),
    ("params.lr != '0.1'", &[]),
    ("tags.team = 'nlp'", &[]),
    ("tags.team LIKE 'nl%'", &[]),
    ("attributes.status = 'FINISHED'", &[]),
    ("attributes.start_time > 1000", &["attributes.start_time ASC"]),
    ("attributes.run_name LIKE 'sweep-%'", &[]),
    (
        "metrics.rmse < 0.5 and params.lr = '0.1' and tags.team = 'nlp'",
        &["metrics.rmse DESC"],
    ),
    ("", &["metrics.rmse ASC"]),
    ("", &["params.lr DESC", "metrics.rmse ASC"]),
    ("", &["tags.team ASC"]),
    ("", &[]),
];

async fn plans(store: &SqlStore, experiment_id: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (filter, order) in SEARCHES {
        let search = RunSearch {
            experiment_ids: vec![experiment_id.to_owned()],
            filter: parse_run_filter(filter).unwrap(),
            view: ViewType::ActiveOnly,
            order_by: order.iter().map(|o| parse_run_order_by(o).unwrap()).collect(),
            max_results: 100,
            offset: 0,
        };
        let plan = store.explain_run_search(&search).await.unwrap();
        out.push((format!("filter {filter:?} order {order:?}"), plan));
    }
    out
}

/// The tables a search must never read whole.
const BIG_TABLES: &[&str] = &["runs", "latest_metrics", "metrics", "params", "run_tags"];

#[tokio::test]
async fn sqlite_searches_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("plans.db").display());
    let store = store::open(&uri, "mlflow-artifacts:/").await.unwrap();
    let exp = store.create_experiment("plans", None, &[]).await.unwrap();
    for (search, plan) in plans(&store, &exp).await {
        let text = plan.join("\n");
        for line in &plan {
            // SQLite writes `SCAN <table or alias>` for a full scan and `SEARCH … USING …` for an
            // index; aliases: r (runs), f (filters), o0.. (order keys), x (absent leading key).
            let scanned = line
                .strip_prefix("SCAN ")
                .map(|rest| rest.split_whitespace().next().unwrap_or(""));
            if let Some(what) = scanned {
                assert!(
                    !BIG_TABLES.contains(&what) && !["r", "f", "x"].contains(&what) && !what.starts_with('o'),
                    "{search}: full scan `{line}` in\n{text}"
                );
            }
        }
        assert!(
            text.contains("SEARCH r USING"),
            "{search}: runs not found by index:\n{text}"
        );
        if search.contains("order [\"metrics.rmse") {
            // Led by the metric: its (key, value) index gives the order, no sort of the whole result.
            assert!(
                text.contains("SEARCH o0 USING INDEX latest_metrics_key_value"),
                "{search}: not driven by the metric's index:\n{text}"
            );
            let with_key = text.split("-- CountWithKey").next().unwrap_or("");
            assert!(
                !with_key.contains("USE TEMP B-TREE FOR ORDER BY"),
                "{search}: the whole result is sorted:\n{text}"
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test-all starts one, sets MLKUBE_TEST_POSTGRES_URL and runs ignored tests"]
async fn postgres_searches_use_indexes() {
    let uri = common::fresh_postgres_uri().await;
    let store = store::open(&uri, "mlflow-artifacts:/").await.unwrap();
    let exp = store.create_experiment("plans", None, &[]).await.unwrap();
    for (search, plan) in plans(&store, &exp).await {
        let text = plan.join("\n");
        for table in BIG_TABLES {
            assert!(
                !text.contains(&format!("Seq Scan on {table} ")),
                "{search}: sequential scan of {table}:\n{text}"
            );
        }
        if search.contains("order [\"metrics.rmse") {
            assert!(
                text.contains("latest_metrics_key_value"),
                "{search}: not driven by the metric's index:\n{text}"
            );
        }
    }
}
