//! One conformance suite for the `Store` trait, run on every engine: SQLite (always), PostgreSQL
//! and MariaDB (ignored by default; `scripts/test-all` starts private servers, sets
//! MLKUBE_TEST_POSTGRES_URL and MLKUBE_TEST_MYSQL_URL and runs ignored tests). Each test gets a
//! fresh database.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use std::sync::Arc;

use mlkube_server::search::{
    parse_model_version_filter, parse_registered_model_filter, parse_run_filter, parse_run_order_by,
};
use mlkube_server::store::registry::{NewModelVersion, RegistrySearch};
use mlkube_server::store::{
    self, BulkIntervalQuery, Dataset, DatasetInput, ExperimentSearch, LifecycleStage, LoggedModelSearch,
    Metric, NewLoggedModel, NewRun, RunSearch, RunStatus, RunUpdate, Store, StoreError, Tag, ViewType,
};

/// Keeps the SQLite temp dir alive for the test's duration.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("conformance.db").display());
    let store = store::open(&uri, "mlflow-artifacts:/").await.unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn postgres_store() -> Fixture {
    let uri = common::fresh_postgres_uri().await;
    let store = store::open(&uri, "mlflow-artifacts:/").await.unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

async fn mysql_store() -> Fixture {
    let uri = common::fresh_mysql_uri().await;
    let store = store::open(&uri, "mlflow-artifacts:/").await.unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> Metric {
    Metric::new(key, value, timestamp, step)
}

async fn new_run(store: &dyn Store, experiment_id: &str, name: &str, start_time: i64) -> String {
    let run = store
        .create_run(NewRun {
            experiment_id: experiment_id.into(),
            user_id: "tester".into(),
            run_name: name.into(),
            start_time,
            tags: vec![Tag::new("mlflow.runName", name)],
        })
        .await
        .unwrap();
    run.info.run_id
}

mod cases {
    use super::*;

    pub async fn experiments(store: &dyn Store) {
        let default = store.get_experiment("0").await.unwrap();
        assert_eq!(
            (default.name.as_str(), default.artifact_location.as_str()),
            ("Default", "mlflow-artifacts:/0")
        );
        let id = store
            .create_experiment("e", None, &[Tag::new("a", "1")])
            .await
            .unwrap();
        assert!(matches!(
            store.create_experiment("e", None, &[]).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let custom = store
            .create_experiment("custom", Some("s3://bucket/x"), &[])
            .await
            .unwrap();
        assert_eq!(
            store.get_experiment(&custom).await.unwrap().artifact_location,
            "s3://bucket/x"
        );
        let e = store.get_experiment(&id).await.unwrap();
        assert_eq!(e.tags, vec![Tag::new("a", "1")]);
        assert_eq!(e.artifact_location, format!("mlflow-artifacts:/{id}"));
        store.rename_experiment(&id, "e2").await.unwrap();
        assert!(store.get_experiment_by_name("e").await.unwrap().is_none());
        assert_eq!(
            store
                .get_experiment_by_name("e2")
                .await
                .unwrap()
                .unwrap()
                .experiment_id,
            id
        );
        assert!(matches!(
            store.rename_experiment(&id, "custom").await,
            Err(StoreError::AlreadyExists(_))
        ));
        store.set_experiment_tag(&id, &Tag::new("a", "2")).await.unwrap();
        store.delete_experiment_tag(&id, "a").await.unwrap();
        assert!(matches!(
            store.delete_experiment_tag(&id, "a").await,
            Err(StoreError::NotFound(_))
        ));
        store
            .set_experiment_lifecycle(&id, LifecycleStage::Deleted)
            .await
            .unwrap();
        let search = |view| ExperimentSearch {
            filter: vec![],
            view,
            order_by: vec![],
            max_results: 100,
            offset: 0,
        };
        let active = store
            .search_experiments(&search(ViewType::ActiveOnly))
            .await
            .unwrap();
        assert_eq!(active.items.len(), 2, "Default and custom");
        let deleted = store
            .search_experiments(&search(ViewType::DeletedOnly))
            .await
            .unwrap();
        assert_eq!(
            deleted.items.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["e2"]
        );
        assert!(matches!(
            store.get_experiment("12345").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.set_experiment_lifecycle("0", LifecycleStage::Deleted).await,
            Err(StoreError::Invalid(_))
        ));
    }

    pub async fn batch_is_atomic_and_params_write_once(store: &dyn Store) {
        let run = new_run(store, "0", "r", 1).await;
        store
            .log_batch(&run, &[metric("m", 1.0, 1, 0)], &[Tag::new("p", "a")], &[])
            .await
            .unwrap();
        store
            .log_batch(&run, &[], &[Tag::new("p", "a")], &[])
            .await
            .unwrap();
        let err = store
            .log_batch(
                &run,
                &[metric("x", 1.0, 1, 0)],
                &[Tag::new("p", "b")],
                &[Tag::new("t", "v")],
            )
            .await;
        assert!(
            matches!(err, Err(StoreError::Invalid(ref m)) if m.contains("Changing param values")),
            "{err:?}"
        );
        let err = store
            .log_batch(&run, &[], &[Tag::new("q", "1"), Tag::new("q", "2")], &[])
            .await;
        assert!(matches!(err, Err(StoreError::Invalid(_))));
        let data = store.get_run(&run).await.unwrap().data;
        assert_eq!(
            data.metrics.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["m"],
            "nothing partial"
        );
        assert!(data.tags.iter().all(|t| t.key != "t"));
        assert!(data.params.iter().all(|p| p.key != "q"));
        // Duplicate metric rows (client retries) are ignored.
        store
            .log_batch(&run, &[metric("m", 1.0, 1, 0), metric("m", 1.0, 1, 0)], &[], &[])
            .await
            .unwrap();
        assert_eq!(
            store
                .get_metric_history(&run, "m", 0, 100)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        assert!(matches!(
            store.log_batch("missing", &[], &[], &[]).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn latest_metric_rule_and_special_values(store: &dyn Store) {
        let run = new_run(store, "0", "r", 1).await;
        store
            .log_batch(&run, &[metric("m", 5.0, 100, 5)], &[], &[])
            .await
            .unwrap();
        store
            .log_batch(&run, &[metric("m", 9.0, 200, 3)], &[], &[])
            .await
            .unwrap();
        store
            .log_batch(
                &run,
                &[metric("m", 4.0, 100, 5), metric("m", 6.0, 100, 5)],
                &[],
                &[],
            )
            .await
            .unwrap();
        store
            .log_batch(
                &run,
                &[
                    metric("nan", f64::NAN, 1, 0),
                    metric("pinf", f64::INFINITY, 1, 0),
                    metric("ninf", f64::NEG_INFINITY, 1, 0),
                ],
                &[],
                &[],
            )
            .await
            .unwrap();
        let data = store.get_run(&run).await.unwrap().data;
        let get = |k: &str| data.metrics.iter().find(|m| m.key == k).unwrap().clone();
        assert_eq!(
            get("m"),
            metric("m", 6.0, 100, 5),
            "max (step, timestamp, value) wins"
        );
        assert!(get("nan").value.is_nan());
        assert_eq!(get("pinf").value, f64::INFINITY);
        assert_eq!(get("ninf").value, f64::NEG_INFINITY);
        let history = store.get_metric_history(&run, "m", 0, 100).await.unwrap().items;
        assert_eq!(history.len(), 4);
        assert_eq!(history[0].step, 3);

        // Values that need all 17 digits, the extremes and a subnormal come back bit for bit,
        // and text with quotes, backslashes, control characters and any script comes back as
        // written, in a run read alone or in a search page.
        let exact = [
            0.1 + 0.2,
            1.0 / 3.0,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            -1.234_567_890_123_456_7e-300,
            123_456_789.123_456_79,
            -0.0,
        ];
        let points: Vec<Metric> = exact
            .iter()
            .enumerate()
            .map(|(i, v)| metric(&format!("exact{i}"), *v, 1, 0))
            .collect();
        let text = "say \"hi\"\\ back\\slash\n\ttab \u{1} ünïcödé 😀 '; --";
        store
            .log_batch(
                &run,
                &points,
                &[Tag::new("text", text)],
                &[
                    Tag::new("text", text),
                    Tag::new("Zeta", "z"),
                    Tag::new("alpha", "a"),
                ],
            )
            .await
            .unwrap();
        let alone = store.get_run(&run).await.unwrap();
        let search = RunSearch {
            experiment_ids: vec!["0".into()],
            filter: vec![],
            view: ViewType::ActiveOnly,
            order_by: vec![],
            max_results: 100,
            offset: 0,
        };
        let page = store.search_runs(&search).await.unwrap().items;
        let found = page.into_iter().find(|r| r.info.run_id == run).unwrap();
        for data in [&alone.data, &found.data] {
            for (i, v) in exact.iter().enumerate() {
                let m = data
                    .metrics
                    .iter()
                    .find(|m| m.key == format!("exact{i}"))
                    .unwrap();
                // -0.0 may come back as 0.0 (equal as numbers); every other value is exact.
                assert!(
                    m.value.to_bits() == v.to_bits() || (*v == 0.0 && m.value == 0.0),
                    "exact{i}: {v:e} read as {:e}",
                    m.value
                );
            }
            assert_eq!(data.params.iter().find(|p| p.key == "text").unwrap().value, text);
            assert_eq!(data.tags.iter().find(|t| t.key == "text").unwrap().value, text);
            let keys: Vec<&str> = data.tags.iter().map(|t| t.key.as_str()).collect();
            let mut by_bytes = keys.clone();
            by_bytes.sort_unstable();
            assert_eq!(keys, by_bytes, "tags in key order by bytes");
        }

        // A run whose params pass 1 MiB (MariaDB's default cap on a JSON aggregate) comes back
        // whole.
        let big = new_run(store, "0", "big", 2).await;
        let params: Vec<Tag> = (0..200)
            .map(|i| {
                Tag::new(
                    format!("p{i:03}"),
                    format!("{i}").repeat(6000 / format!("{i}").len()),
                )
            })
            .collect();
        for chunk in params.chunks(100) {
            store.log_batch(&big, &[], chunk, &[]).await.unwrap();
        }
        let read = store.get_run(&big).await.unwrap().data.params;
        assert_eq!(read, params, "all 200 params of ~6000 bytes, in key order");
    }

    pub async fn run_lifecycle_and_update(store: &dyn Store) {
        let run = new_run(store, "0", "first", 10).await;
        let info = store
            .update_run(
                &run,
                RunUpdate {
                    status: Some(RunStatus::Finished),
                    end_time: Some(20),
                    run_name: Some("second".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (info.status.as_str(), info.end_time, info.run_name.as_str()),
            ("FINISHED", Some(20), "second")
        );
        let full = store.get_run(&run).await.unwrap();
        assert!(full.data.tags.contains(&Tag::new("mlflow.runName", "second")));
        store
            .set_run_lifecycle(&run, LifecycleStage::Deleted)
            .await
            .unwrap();
        assert!(matches!(
            store.log_batch(&run, &[metric("m", 1.0, 1, 0)], &[], &[]).await,
            Err(StoreError::Invalid(_))
        ));
        store
            .set_run_lifecycle(&run, LifecycleStage::Active)
            .await
            .unwrap();
        store.delete_run_tag(&run, "mlflow.runName").await.unwrap();
        assert!(matches!(
            store.delete_run_tag(&run, "mlflow.runName").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get_run("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn search_runs(store: &dyn Store) {
        let exp = store.create_experiment("search", None, &[]).await.unwrap();
        for i in 0..12i64 {
            let run = new_run(store, &exp, &format!("run-{i:02}"), 1000 + i).await;
            let metrics = if i % 4 == 3 {
                vec![]
            } else {
                vec![metric("loss", (12 - i) as f64, 1, 0)]
            };
            let params = [Tag::new("depth", (i % 3).to_string())];
            let tags = [Tag::new("team", if i < 6 { "Red" } else { "blue" })];
            store.log_batch(&run, &metrics, &params, &tags).await.unwrap();
        }
        let run_search = |filter: &str, order: &[&str], max_results: u64, offset: u64| RunSearch {
            experiment_ids: vec![exp.clone()],
            filter: parse_run_filter(filter).unwrap(),
            view: ViewType::ActiveOnly,
            order_by: order.iter().map(|o| parse_run_order_by(o).unwrap()).collect(),
            max_results,
            offset,
        };
        let names = |runs: &[mlkube_server::store::Run]| {
            runs.iter().map(|r| r.info.run_name.clone()).collect::<Vec<_>>()
        };

        let page = store
            .search_runs(&run_search(
                "metrics.loss <= 8 and params.depth = '1' and tags.team = 'blue'",
                &[],
                100,
                0,
            ))
            .await
            .unwrap();
        assert_eq!(names(&page.items), ["run-10"]);
        let page = store
            .search_runs(&run_search(
                "tags.team ILIKE 'red' and params.depth != '0'",
                &["attributes.start_time ASC"],
                100,
                0,
            ))
            .await
            .unwrap();
        assert_eq!(names(&page.items), ["run-01", "run-02", "run-04", "run-05"]);
        let page = store
            .search_runs(&run_search("tags.team LIKE 'red'", &[], 100, 0))
            .await
            .unwrap();
        assert!(page.items.is_empty(), "LIKE is case-sensitive on every engine");
        let page = store
            .search_runs(&run_search("", &["metrics.loss ASC"], 100, 0))
            .await
            .unwrap();
        let all = names(&page.items);
        assert_eq!(all.len(), 12);
        assert_eq!(&all[..2], ["run-10", "run-09"], "ascending loss");
        assert_eq!(
            &all[9..],
            ["run-11", "run-07", "run-03"],
            "runs without the metric sort last, then start_time DESC"
        );

        // Pages cover every run once, in order.
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let page = store
                .search_runs(&run_search("", &["params.depth DESC", "run_name"], 5, offset))
                .await
                .unwrap();
            paged.extend(names(&page.items));
            match page.next_offset {
                Some(next) => offset = next,
                None => break,
            }
        }
        let mut sorted = paged.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((paged.len(), sorted.len()), (12, 12));
        assert_eq!(&paged[..4], ["run-02", "run-05", "run-08", "run-11"]);
    }

    /// A search led by a metric, param or tag key answers from that key's index first and then
    /// the runs without the key: every page size and offset must give one consistent order.
    pub async fn search_runs_paged_across_missing_keys(store: &dyn Store) {
        let exp = store.create_experiment("paged", None, &[]).await.unwrap();
        for i in 0..15i64 {
            let run = new_run(store, &exp, &format!("run-{i:02}"), 1000 + i % 4).await;
            // Every third run lacks the metric; ties in value (i % 4) and in start_time.
            let metrics = if i % 3 == 0 {
                vec![]
            } else if i == 7 {
                vec![metric("loss", f64::NAN, 1, 0)]
            } else {
                vec![metric("loss", (i % 4) as f64, 1, 0)]
            };
            let tags = if i % 5 == 0 {
                vec![]
            } else {
                vec![Tag::new("team", format!("t{}", i % 2))]
            };
            store.log_batch(&run, &metrics, &[], &tags).await.unwrap();
        }
        let names = |runs: &[mlkube_server::store::Run]| {
            runs.iter().map(|r| r.info.run_name.clone()).collect::<Vec<_>>()
        };
        for (filter, order) in [
            ("", vec!["metrics.loss DESC"]),
            ("", vec!["metrics.loss ASC", "run_name DESC"]),
            ("metrics.loss < 3", vec!["metrics.loss DESC"]),
            (
                "metrics.loss >= 1 and metrics.loss <= 2",
                vec!["metrics.loss ASC"],
            ),
            ("", vec!["tags.team DESC", "metrics.loss DESC"]),
            ("attributes.start_time > 1000", vec!["tags.team ASC"]),
        ] {
            let search = |max_results: u64, offset: u64| RunSearch {
                experiment_ids: vec![exp.clone()],
                filter: parse_run_filter(filter).unwrap(),
                view: ViewType::ActiveOnly,
                order_by: order.iter().map(|o| parse_run_order_by(o).unwrap()).collect(),
                max_results,
                offset,
            };
            let whole = names(&store.search_runs(&search(100, 0)).await.unwrap().items);
            assert!(!whole.is_empty(), "{filter} {order:?}");
            for size in 1..=6u64 {
                let mut paged = Vec::new();
                let mut offset = 0;
                loop {
                    let page = store.search_runs(&search(size, offset)).await.unwrap();
                    assert!(page.items.len() as u64 <= size);
                    paged.extend(names(&page.items));
                    match page.next_offset {
                        Some(next) => offset = next,
                        None => break,
                    }
                }
                assert_eq!(paged, whole, "{filter} {order:?} in pages of {size}");
            }
            // An offset past every run is an empty last page.
            let past = store.search_runs(&search(5, 100)).await.unwrap();
            assert!(past.items.is_empty() && past.next_offset.is_none());
        }

        // The order itself: runs with the metric by value (ties: start_time DESC, run_id), NaN as
        // stored, runs without it last by start_time DESC.
        let search = RunSearch {
            experiment_ids: vec![exp.clone()],
            filter: parse_run_filter("metrics.loss < 3").unwrap(),
            view: ViewType::ActiveOnly,
            order_by: vec![parse_run_order_by("metrics.loss DESC").unwrap()],
            max_results: 100,
            offset: 0,
        };
        let found = store.search_runs(&search).await.unwrap().items;
        let losses: Vec<f64> = found
            .iter()
            .map(|r| r.data.metrics.iter().find(|m| m.key == "loss").unwrap().value)
            .collect();
        assert!(losses.iter().all(|v| *v < 3.0), "{losses:?}");
        assert!(losses.windows(2).all(|w| w[0] >= w[1]), "{losses:?}");
        assert_eq!(
            found.len(),
            8,
            "runs 1,2,5,10,13,14 hold 1 or 2, runs 4 and 8 hold 0: {losses:?}"
        );
    }

    pub async fn metric_history_paging_and_bulk_interval(store: &dyn Store) {
        let run = new_run(store, "0", "h", 1).await;
        let metrics: Vec<Metric> = (0..500).map(|i| metric("acc", i as f64, i, i)).collect();
        for chunk in metrics.chunks(250) {
            store.log_batch(&run, chunk, &[], &[]).await.unwrap();
        }
        let first = store.get_metric_history(&run, "acc", 0, 200).await.unwrap();
        assert_eq!((first.items.len(), first.next_offset), (200, Some(200)));
        let last = store.get_metric_history(&run, "acc", 400, 200).await.unwrap();
        assert_eq!((last.items.len(), last.next_offset), (100, None));
        assert_eq!(last.items[99].step, 499);
        let bulk = store
            .get_metric_history_bulk_interval(&BulkIntervalQuery {
                run_ids: vec![run.clone()],
                key: "acc".into(),
                start_step: Some(10),
                end_step: None,
                max_results: 7,
            })
            .await
            .unwrap();
        let steps: Vec<i64> = bulk.iter().map(|m| m.step).collect();
        assert_eq!(steps.len(), 7);
        assert_eq!((steps[0], steps[6]), (10, 499));
    }

    pub async fn concurrent_writers(store: &dyn Store) {
        let run = new_run(store, "0", "c", 1).await;
        let run = run.as_str();
        let writers = (0..16i64).map(|w| async move {
            for i in 0..10 {
                store
                    .log_batch(
                        run,
                        &[metric("m", (w * 100 + i) as f64, i, w * 100 + i)],
                        &[],
                        &[],
                    )
                    .await
                    .unwrap();
            }
        });
        futures_util::future::join_all(writers).await;
        let history = store.get_metric_history(run, "m", 0, 1000).await.unwrap();
        assert_eq!(history.items.len(), 160);
        let latest = store.get_run(run).await.unwrap().data.metrics;
        assert_eq!(latest[0].step, 1509, "latest is the max step across all writers");
    }

    /// Concurrent log-batches may share one transaction on SQLite: a batch that fails must fail
    /// alone, with its own error, and leave nothing behind, while the others are all written.
    pub async fn concurrent_batches_fail_alone(store: &dyn Store) {
        let good: Vec<String> = {
            let mut runs = Vec::new();
            for i in 0..8 {
                runs.push(new_run(store, "0", &format!("good-{i}"), 1).await);
            }
            runs
        };
        let fixed = new_run(store, "0", "fixed", 1).await;
        store
            .log_batch(&fixed, &[], &[Tag::new("lr", "0.1")], &[])
            .await
            .unwrap();
        let deleted = new_run(store, "0", "deleted", 1).await;
        store
            .set_run_lifecycle(&deleted, LifecycleStage::Deleted)
            .await
            .unwrap();

        let batch = |i: i64| -> Vec<Metric> {
            (0..50)
                .map(|k| metric(&format!("k{k}"), (i * 100 + k) as f64, i, i))
                .collect()
        };
        let goods = good.iter().enumerate().map(|(i, run)| {
            let metrics = batch(i as i64);
            async move {
                store
                    .log_batch(run, &metrics, &[Tag::new("p", "v")], &[Tag::new("t", "x")])
                    .await
            }
        });
        let changed_param = async {
            store
                .log_batch(
                    &fixed,
                    &batch(99),
                    &[Tag::new("lr", "0.2")],
                    &[Tag::new("t", "x")],
                )
                .await
        };
        let unknown_run = async { store.log_batch("0123456789abcdef", &batch(98), &[], &[]).await };
        let deleted_run = async { store.log_batch(&deleted, &batch(97), &[], &[]).await };
        let (goods, changed, unknown, gone) = tokio::join!(
            futures_util::future::join_all(goods),
            changed_param,
            unknown_run,
            deleted_run
        );
        for r in goods {
            r.unwrap();
        }
        assert!(
            matches!(changed, Err(StoreError::Invalid(ref m)) if m.contains("Changing param values")),
            "{changed:?}"
        );
        assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
        assert!(matches!(gone, Err(StoreError::Invalid(_))), "{gone:?}");

        for (i, run) in good.iter().enumerate() {
            let data = store.get_run(run).await.unwrap().data;
            assert_eq!(data.metrics.len(), 50, "run {i}");
            assert_eq!((data.params.len(), data.params[0].value.as_str()), (1, "v"));
            assert!(data.tags.iter().any(|t| t.key == "t"));
        }
        // The failed batch left nothing: no metrics, no tag, the param unchanged.
        let data = store.get_run(&fixed).await.unwrap().data;
        assert!(data.metrics.is_empty(), "{:?}", data.metrics);
        assert!(!data.tags.iter().any(|t| t.key == "t"));
        assert_eq!(data.params[0].value, "0.1");
        assert!(store.get_run(&deleted).await.unwrap().data.metrics.is_empty());
    }

    pub async fn registry(store: &dyn Store) {
        let run = new_run(store, "0", "reg", 1).await;
        store
            .create_registered_model("m", Some("d"), &[Tag::new("t", "1")], None)
            .await
            .unwrap();
        assert!(matches!(
            store.create_registered_model("m", None, &[], None).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let new_version = |source: &str| NewModelVersion {
            name: "m".into(),
            source: source.into(),
            storage_location: source.into(),
            run_id: Some(run.clone()),
            run_link: None,
            model_id: None,
            description: None,
            user_id: None,
            tags: vec![Tag::new("v", "1")],
        };
        for i in 1..=3 {
            let v = store
                .create_model_version(new_version(&format!("s3://b/{i}")))
                .await
                .unwrap();
            assert_eq!(v.version, i.to_string());
        }
        store
            .transition_model_version_stage("m", "1", "Production", false)
            .await
            .unwrap();
        store
            .transition_model_version_stage("m", "2", "production", true)
            .await
            .unwrap();
        assert_eq!(
            store.get_model_version("m", "1").await.unwrap().current_stage,
            "Archived"
        );
        store.set_alias("m", "champion", "3").await.unwrap();
        store.set_alias("m", "champion", "2").await.unwrap();
        assert_eq!(
            store.get_version_by_alias("m", "champion").await.unwrap().version,
            "2"
        );

        // A rename carries versions, tags and aliases along.
        store.rename_registered_model("m", "renamed").await.unwrap();
        let model = store.get_registered_model("renamed").await.unwrap();
        assert_eq!(model.tags, vec![Tag::new("t", "1")]);
        assert_eq!(model.aliases.len(), 1);
        let stages: Vec<(String, String)> = model
            .latest_versions
            .iter()
            .map(|v| (v.current_stage.clone(), v.version.clone()))
            .collect();
        assert_eq!(
            stages,
            [("Archived", "1"), ("Production", "2"), ("None", "3")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .to_vec()
        );
        assert_eq!(
            store.get_model_version("renamed", "2").await.unwrap().tags,
            vec![Tag::new("v", "1")]
        );
        let latest = store
            .get_latest_versions("renamed", &["Production".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            latest.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
            ["2"]
        );

        store.delete_model_version("renamed", "2").await.unwrap();
        assert!(matches!(
            store.get_version_by_alias("renamed", "champion").await,
            Err(StoreError::Invalid(message)) if message == "Registered model alias champion not found."
        ));
        let search = |filter: &str| RegistrySearch {
            filter: parse_model_version_filter(filter).unwrap(),
            order_by: vec![],
            max_results: 10,
            offset: 0,
        };
        let found = store
            .search_model_versions(&search("name = 'renamed'"))
            .await
            .unwrap();
        assert_eq!(
            found.items.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
            ["3", "1"]
        );
        let found = store
            .search_model_versions(&search("version_number >= 3"))
            .await
            .unwrap();
        assert_eq!(found.items.len(), 1);
        let next = store
            .create_model_version(NewModelVersion {
                name: "renamed".into(),
                ..new_version("s3://b/4")
            })
            .await
            .unwrap();
        assert_eq!(next.version, "4", "deleted version numbers are not reused");
        let models = store
            .search_registered_models(&RegistrySearch {
                filter: parse_registered_model_filter("name ILIKE 'REN%'").unwrap(),
                order_by: vec![],
                max_results: 10,
                offset: 0,
            })
            .await
            .unwrap();
        assert_eq!(models.items.len(), 1);
        store.delete_registered_model("renamed").await.unwrap();
        assert!(matches!(
            store.get_model_version("renamed", "1").await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn inputs_and_logged_models(store: &dyn Store) {
        let run = new_run(store, "0", "io", 1).await;
        let input = DatasetInput {
            tags: vec![Tag::new("mlflow.data.context", "train")],
            dataset: Dataset {
                name: "iris".into(),
                digest: "d1".into(),
                source_type: "local".into(),
                source: "{}".into(),
                schema: None,
                profile: Some("{\"rows\": 3}".into()),
            },
        };
        store
            .log_inputs(&run, &[input.clone(), input.clone()], &[])
            .await
            .unwrap();
        let inputs = store.get_run(&run).await.unwrap().inputs.dataset_inputs;
        assert_eq!(inputs, vec![input]);

        let model = store
            .create_logged_model(NewLoggedModel {
                experiment_id: "0".into(),
                name: "model".into(),
                model_type: None,
                source_run_id: Some(run.clone()),
                params: vec![Tag::new("C", "1")],
                tags: vec![],
            })
            .await
            .unwrap();
        let id = model.info.model_id.clone();
        assert_eq!(
            store
                .finalize_logged_model(&id, "LOGGED_MODEL_READY")
                .await
                .unwrap()
                .info
                .status,
            "LOGGED_MODEL_READY"
        );
        // Metrics logged for the model (MLflow 3's log_model re-logs the run's metrics with
        // model_id) are kept with it; a batch naming an unknown model writes nothing.
        let mut linked = metric("rmse", 0.25, 10, 0);
        linked.model = Some(mlkube_server::store::ModelLink {
            model_id: id.clone(),
            dataset_name: Some("eval".into()),
            dataset_digest: Some("d1".into()),
        });
        let mut plain_nan = metric("loss", f64::NAN, 11, 0);
        plain_nan.model = Some(mlkube_server::store::ModelLink {
            model_id: id.clone(),
            ..Default::default()
        });
        store
            .log_batch(&run, &[linked, plain_nan], &[], &[])
            .await
            .unwrap();
        let got = store.get_logged_model(&id).await.unwrap().data.metrics;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].key.as_str(), got[0].value), ("rmse", 0.25));
        assert_eq!(got[0].dataset_name.as_deref(), Some("eval"));
        assert_eq!(got[0].dataset_digest.as_deref(), Some("d1"));
        assert_eq!(
            (got[0].model_id.as_str(), got[0].run_id.as_str()),
            (id.as_str(), run.as_str())
        );
        assert!(got[1].value.is_nan() && got[1].dataset_name.is_none());
        let mut orphan = metric("never", 1.0, 12, 0);
        orphan.model = Some(mlkube_server::store::ModelLink {
            model_id: "m-unknown".into(),
            ..Default::default()
        });
        assert!(matches!(
            store
                .log_batch(&run, &[metric("also_never", 1.0, 12, 0), orphan], &[], &[])
                .await,
            Err(StoreError::NotFound(_))
        ));
        let run_metrics = store.get_run(&run).await.unwrap().data.metrics;
        assert!(
            run_metrics
                .iter()
                .all(|m| m.key != "also_never" && m.key != "never")
        );
        assert!(
            run_metrics.iter().any(|m| m.key == "rmse"),
            "the run keeps its own copy"
        );
        store
            .set_logged_model_tags(&id, &[Tag::new("k", "v")])
            .await
            .unwrap();
        let found = store
            .search_logged_models(&LoggedModelSearch {
                experiment_ids: vec!["0".into()],
                filter: mlkube_server::search::parse_logged_model_filter(&format!(
                    "source_run_id = '{run}' AND name = 'model'"
                ))
                .unwrap(),
                datasets: vec![],
                order_by: vec![],
                max_results: 10,
                offset: 0,
            })
            .await
            .unwrap();
        assert_eq!(found.items.len(), 1);
        assert_eq!(found.items[0].info.tags, vec![Tag::new("k", "v")]);
        store.delete_logged_model(&id).await.unwrap();
        assert!(matches!(
            store.get_logged_model(&id).await,
            Err(StoreError::NotFound(_))
        ));
    }
    /// Logged-model search as MLflow 3 offers it: metric/param/tag/attribute filters, metric filters
    /// and orderings restricted to datasets, metric ordering with models lacking it last, and
    /// invalid experiment ids refused.
    pub async fn logged_model_search(store: &dyn Store) {
        use mlkube_server::search::{parse_logged_model_filter, parse_logged_model_order_field};
        use mlkube_server::store::{DatasetRef, LoggedModelOrder, ModelLink};
        let exp = store.create_experiment("lm-search", None, &[]).await.unwrap();
        let run = new_run(store, &exp, "r", 1).await;
        let mut ids = Vec::new();
        for (i, (rmse_eval, rmse_test, c)) in [(0.3, 0.9, "1"), (0.1, 0.2, "2"), (0.2, 0.05, "1")]
            .into_iter()
            .enumerate()
        {
            let model = store
                .create_logged_model(NewLoggedModel {
                    experiment_id: exp.clone(),
                    name: format!("m{i}"),
                    model_type: None,
                    source_run_id: Some(run.clone()),
                    params: vec![Tag::new("C", c)],
                    tags: vec![Tag::new("team", if i == 1 { "b" } else { "a" })],
                })
                .await
                .unwrap();
            let id = model.info.model_id;
            let on = |dataset: &str, value: f64, ts: i64| {
                let mut m = metric("rmse", value, ts, 0);
                m.model = Some(ModelLink {
                    model_id: id.clone(),
                    dataset_name: Some(dataset.into()),
                    dataset_digest: Some(format!("{dataset}-d")),
                });
                m
            };
            store
                .log_batch(
                    &run,
                    &[
                        on("eval", rmse_eval, 10 + i as i64),
                        on("test", rmse_test, 20 + i as i64),
                    ],
                    &[],
                    &[],
                )
                .await
                .unwrap();
            ids.push(id);
        }
        // A fourth model without the metric.
        let bare = store
            .create_logged_model(NewLoggedModel {
                experiment_id: exp.clone(),
                name: "bare".into(),
                model_type: None,
                source_run_id: None,
                params: vec![],
                tags: vec![],
            })
            .await
            .unwrap()
            .info
            .model_id;
        let search =
            |filter: &str, datasets: Vec<DatasetRef>, order_by: Vec<LoggedModelOrder>| LoggedModelSearch {
                experiment_ids: vec![exp.clone()],
                filter: parse_logged_model_filter(filter).unwrap(),
                datasets,
                order_by,
                max_results: 10,
                offset: 0,
            };
        let names = |page: mlkube_server::store::Page<mlkube_server::store::LoggedModel>| -> Vec<String> {
            page.items.into_iter().map(|m| m.info.name).collect()
        };
        // Models created within one millisecond tie on the default order: compare those as sets.
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let eval = || {
            vec![DatasetRef {
                name: "eval".into(),
                digest: Some("eval-d".into()),
            }]
        };
        // rmse < 0.25 on any dataset: m1 (0.1 / 0.2) and m2 (0.05 on test).
        let got = names(
            store
                .search_logged_models(&search("metrics.rmse < 0.25", vec![], vec![]))
                .await
                .unwrap(),
        );
        assert_eq!(sorted(got), vec!["m1", "m2"]);
        // Only on eval: m1 (0.1) and m2 (0.2).
        let got = names(
            store
                .search_logged_models(&search("metrics.rmse < 0.25", eval(), vec![]))
                .await
                .unwrap(),
        );
        assert_eq!(sorted(got), vec!["m1", "m2"]);
        let got = names(
            store
                .search_logged_models(&search("metrics.rmse < 0.15", eval(), vec![]))
                .await
                .unwrap(),
        );
        assert_eq!(got, vec!["m1"]);
        // Params, tags and attributes.
        let got = names(
            store
                .search_logged_models(&search("params.C = '1' AND tags.team = 'a'", vec![], vec![]))
                .await
                .unwrap(),
        );
        assert_eq!(sorted(got), vec!["m0", "m2"]);
        let got = names(
            store
                .search_logged_models(&search("name LIKE 'm%' AND name != 'm0'", vec![], vec![]))
                .await
                .unwrap(),
        );
        assert_eq!(sorted(got), vec!["m1", "m2"]);
        // Ordered by rmse on eval, ascending; the model without it comes last.
        let order = |field: &str, ascending: bool, dataset: Option<DatasetRef>| LoggedModelOrder {
            field: parse_logged_model_order_field(field).unwrap(),
            ascending,
            dataset,
        };
        let by_eval = vec![order(
            "metrics.rmse",
            true,
            Some(DatasetRef {
                name: "eval".into(),
                digest: None,
            }),
        )];
        let got = names(
            store
                .search_logged_models(&search("", vec![], by_eval))
                .await
                .unwrap(),
        );
        assert_eq!(got, vec!["m1", "m2", "m0", "bare"]);
        let by_test_desc = vec![order(
            "metrics.rmse",
            false,
            Some(DatasetRef {
                name: "test".into(),
                digest: Some("test-d".into()),
            }),
        )];
        let got = names(
            store
                .search_logged_models(&search("", vec![], by_test_desc))
                .await
                .unwrap(),
        );
        assert_eq!(got, vec!["m0", "m1", "m2", "bare"]);
        let got = names(
            store
                .search_logged_models(&search("", vec![], vec![order("name", false, None)]))
                .await
                .unwrap(),
        );
        assert_eq!(got, vec!["m2", "m1", "m0", "bare"]);
        assert!(!bare.is_empty() && ids.len() == 3);
        // Invalid experiment ids are an error, not "every experiment".
        let mut bad = search("", vec![], vec![]);
        bad.experiment_ids = vec!["not-a-number".into()];
        assert!(matches!(
            store.search_logged_models(&bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = super::sqlite_store().await;
                    super::cases::$case(fixture.store.as_ref()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL: scripts/test-all starts one, sets MLKUBE_TEST_POSTGRES_URL and runs ignored tests"]
                async fn $case() {
                    let fixture = super::postgres_store().await;
                    super::cases::$case(fixture.store.as_ref()).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test]
                #[ignore = "needs MariaDB: scripts/test-all starts one, sets MLKUBE_TEST_MYSQL_URL and runs ignored tests"]
                async fn $case() {
                    let fixture = super::mysql_store().await;
                    super::cases::$case(fixture.store.as_ref()).await;
                }
            )*
        }
    };
}

conformance!(
    experiments,
    batch_is_atomic_and_params_write_once,
    latest_metric_rule_and_special_values,
    run_lifecycle_and_update,
    search_runs,
    search_runs_paged_across_missing_keys,
    metric_history_paging_and_bulk_interval,
    concurrent_writers,
    concurrent_batches_fail_alone,
    inputs_and_logged_models,
    logged_model_search,
    registry,
);

/// MySQL sizes its string columns (VARCHAR, by the API's limits): a longer value the API does not
/// bound itself is refused whole as "too long" (answered 400 by the API), and nothing of the
/// request is written.
#[tokio::test]
#[ignore = "needs MariaDB: scripts/test-all starts one, sets MLKUBE_TEST_MYSQL_URL and runs ignored tests"]
async fn mysql_refuses_an_oversized_value_whole() {
    let fixture = mysql_store().await;
    let store = fixture.store.as_ref();
    let location = format!("s3://bucket/{}", "x".repeat(3000));
    let err = store
        .create_experiment("too-long", Some(&location), &[Tag::new("a", "b")])
        .await
        .unwrap_err();
    match &err {
        StoreError::Database(db) => assert!(mlkube_server::db::is_value_too_long(db), "{db:?}"),
        other => panic!("expected a database refusal, got {other:?}"),
    }
    assert!(store.get_experiment_by_name("too-long").await.unwrap().is_none());
    // Infinities round-trip although MySQL cannot store them (see `stored_value`).
    let id = store.create_experiment("inf", None, &[]).await.unwrap();
    let run = new_run(store, &id, "r", 1).await;
    store
        .log_batch(
            &run,
            &[
                metric("up", f64::INFINITY, 1, 0),
                metric("down", f64::NEG_INFINITY, 1, 0),
            ],
            &[],
            &[],
        )
        .await
        .unwrap();
    let history = store.get_metric_history(&run, "up", 0, 10).await.unwrap().items;
    assert_eq!(history[0].value, f64::INFINITY);
    let history = store.get_metric_history(&run, "down", 0, 10).await.unwrap().items;
    assert_eq!(history[0].value, f64::NEG_INFINITY);
}
