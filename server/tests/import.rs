//! `mlkube-server import` on MLflow-shaped SQLite databases built here (the MLflow 2.x tables the
//! importer reads, with MLflow's column names): every entity arrives with its id, a corrupt row
//! stops the import naming its table and key, an interrupted import resumes and ends identical to
//! an uninterrupted one, an unknown schema and a non-empty target are refused. The real upstream
//! databases (MLflow 2.17.2 and 3.17.2 servers, SQLite and PostgreSQL) are imported by
//! tests/migrate/run.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

use sqlx::{AnyPool, Row};

use mlkube_server::import::{self, ImportArgs, ImportError};
use mlkube_server::store::registry::Registry;
use mlkube_server::store::{self, ExperimentStore, RunStore};

const MLFLOW_TABLES: &str = "
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256) NOT NULL UNIQUE,
    artifact_location VARCHAR(256), lifecycle_stage VARCHAR(32), creation_time BIGINT, last_update_time BIGINT);
CREATE TABLE experiment_tags (key VARCHAR(250), value VARCHAR(5000), experiment_id INTEGER,
    PRIMARY KEY (key, experiment_id));
CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name VARCHAR(250), source_type VARCHAR(20),
    source_name VARCHAR(500), entry_point_name VARCHAR(50), user_id VARCHAR(256), status VARCHAR(9),
    start_time BIGINT, end_time BIGINT, source_version VARCHAR(50), lifecycle_stage VARCHAR(20),
    artifact_uri VARCHAR(200), experiment_id INTEGER, deleted_time BIGINT);
CREATE TABLE tags (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE params (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE metrics (key VARCHAR(250), value FLOAT, timestamp BIGINT, run_uuid VARCHAR(32), step BIGINT,
    is_nan BOOLEAN, PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan));
CREATE TABLE latest_metrics (key VARCHAR(250), value FLOAT, timestamp BIGINT, step BIGINT, is_nan BOOLEAN,
    run_uuid VARCHAR(32), PRIMARY KEY (key, run_uuid));
CREATE TABLE datasets (dataset_uuid VARCHAR(36), experiment_id INTEGER, name VARCHAR(500), digest VARCHAR(36),
    dataset_source_type VARCHAR(36), dataset_source TEXT, dataset_schema TEXT, dataset_profile TEXT,
    PRIMARY KEY (experiment_id, name, digest));
CREATE TABLE inputs (input_uuid VARCHAR(36), source_type VARCHAR(36), source_id VARCHAR(36),
    destination_type VARCHAR(36), destination_id VARCHAR(36),
    PRIMARY KEY (source_type, source_id, destination_type, destination_id));
CREATE TABLE input_tags (input_uuid VARCHAR(36), name VARCHAR(255), value VARCHAR(500), PRIMARY KEY (input_uuid, name));
CREATE TABLE registered_models (name VARCHAR(256) PRIMARY KEY, creation_time BIGINT, last_updated_time BIGINT,
    description VARCHAR(5000));
CREATE TABLE registered_model_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256), PRIMARY KEY (key, name));
CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, creation_time BIGINT, last_updated_time BIGINT,
    description VARCHAR(5000), user_id VARCHAR(256), current_stage VARCHAR(20), source VARCHAR(500),
    run_id VARCHAR(32), status VARCHAR(20), status_message VARCHAR(500), run_link VARCHAR(500),
    storage_location VARCHAR(500), PRIMARY KEY (name, version));
CREATE TABLE model_version_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256), version INTEGER,
    PRIMARY KEY (key, name, version));
CREATE TABLE registered_model_aliases (alias VARCHAR(256), version INTEGER, name VARCHAR(256), PRIMARY KEY (name, alias));
";

const RUN: &str = "5f1e0c0ffee000000000000000000001";
const OTHER_RUN: &str = "5f1e0c0ffee000000000000000000002";

/// An MLflow 2.x database (storage_location added, no logged models) with one of everything.
async fn mlflow_db(path: &std::path::Path, revision: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(MLFLOW_TABLES).execute(&pool).await.unwrap();
    let fill = format!(
        "INSERT INTO alembic_version VALUES ('{revision}');
         INSERT INTO experiments VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active', 1000, 1000);
         INSERT INTO experiments VALUES (7, 'churn', 'mlflow-artifacts:/7', 'active', 2000, 2500);
         INSERT INTO experiments VALUES (9, 'old', 'mlflow-artifacts:/9', 'deleted', 3000, NULL);
         INSERT INTO experiment_tags VALUES ('team', 'growth', 7);
         INSERT INTO runs VALUES ('{RUN}', 'brave-fox', 'LOCAL', 'train.py', '', 'ana', 'FINISHED', 5000, 9000,
             '', 'active', 'mlflow-artifacts:/7/{RUN}/artifacts', 7, NULL);
         INSERT INTO runs VALUES ('{OTHER_RUN}', NULL, 'LOCAL', '', '', NULL, 'RUNNING', 6000, NULL, '',
             'deleted', 'mlflow-artifacts:/7/{OTHER_RUN}/artifacts', 7, 7000);
         INSERT INTO tags VALUES ('mlflow.runName', 'brave-fox', '{RUN}');
         INSERT INTO params VALUES ('lr', '0.01', '{RUN}');
         INSERT INTO params VALUES ('depth', '6', '{RUN}');
         INSERT INTO metrics VALUES ('loss', 0.9, 5100, '{RUN}', 0, 0);
         INSERT INTO metrics VALUES ('loss', 0.5, 5200, '{RUN}', 1, 0);
         INSERT INTO metrics VALUES ('loss', 0, 5300, '{RUN}', 2, 1);
         INSERT INTO metrics VALUES ('auc', 0.8, 5300, '{OTHER_RUN}', 0, 0);
         INSERT INTO latest_metrics VALUES ('loss', 0, 5300, 2, 1, '{RUN}');
         INSERT INTO latest_metrics VALUES ('auc', 0.8, 5300, 0, 0, '{OTHER_RUN}');
         INSERT INTO datasets VALUES ('d1', 7, 'train', 'abc123', 'local', '{{\"uri\": \"/data\"}}', '{{}}', '{{}}');
         INSERT INTO inputs VALUES ('i1', 'DATASET', 'd1', 'RUN', '{RUN}');
         INSERT INTO input_tags VALUES ('i1', 'mlflow.data.context', 'training');
         INSERT INTO registered_models VALUES ('churn-model', 10000, 12000, 'predicts churn');
         INSERT INTO registered_model_tags VALUES ('owner', 'growth', 'churn-model');
         INSERT INTO model_versions VALUES ('churn-model', 1, 10000, 10000, NULL, 'ana', 'Archived',
             'mlflow-artifacts:/7/{RUN}/artifacts/model', '{RUN}', 'READY', NULL, '', NULL);
         INSERT INTO model_versions VALUES ('churn-model', 2, 11000, 12000, 'better', 'ana', 'Production',
             'mlflow-artifacts:/7/{RUN}/artifacts/model', '{RUN}', 'READY', NULL, '',
             'mlflow-artifacts:/7/{RUN}/artifacts/model');
         INSERT INTO model_version_tags VALUES ('validated', 'yes', 'churn-model', 2);
         INSERT INTO registered_model_aliases VALUES ('champion', 2, 'churn-model');"
    );
    sqlx::raw_sql(&fill).execute(&pool).await.unwrap();
    pool
}

fn args(from: &std::path::Path) -> ImportArgs {
    ImportArgs {
        from: format!("sqlite:///{}", from.display()),
        to: None,
        merge: false,
        auth_from: None,
        auth_to: None,
        row_by_row: false,
        batch_rows: 20_000,
    }
}

fn uri(path: &std::path::Path) -> String {
    format!("sqlite:///{}", path.display())
}

/// Every row of our tables (but the import's own bookkeeping), as text, sorted.
async fn dump(target: &std::path::Path) -> Vec<String> {
    let pool = AnyPool::connect(&format!("sqlite://{}?mode=ro", target.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx%' AND name <> 'mlkube_imports' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("quote(\"{}\")", r.get::<String, _>(0)))
            .collect();
        let sql = format!(
            "SELECT '{table}: ' || {} FROM \"{table}\" ORDER BY 1",
            columns.join(" || '|' || ")
        );
        for row in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
            out.push(row.get::<String, _>(0));
        }
    }
    out
}

#[tokio::test]
async fn copies_experiments_runs_metrics_and_the_registry_with_ids_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mlflow.db");
    mlflow_db(&source, "acf3f17fdcc7").await;
    let target = dir.path().join("mlkube.db");
    let summary = import::run(&args(&source), &uri(&target), "mlflow-artifacts:/")
        .await
        .unwrap();
    let written = |table: &str| summary.tables.iter().find(|t| t.table == table).unwrap().written;
    assert_eq!(
        (
            written("experiments"),
            written("runs"),
            written("metrics"),
            written("params")
        ),
        (3, 2, 4, 2)
    );
    assert!(!summary.resumed);
    assert!(summary.render().contains("acf3f17fdcc7"));

    let store = store::open(&uri(&target), "mlflow-artifacts:/").await.unwrap();
    let default = store.get_experiment("0").await.unwrap();
    assert_eq!(
        default.artifact_location, "mlflow-artifacts:/0",
        "the upstream Default replaces ours"
    );
    let churn = store.get_experiment("7").await.unwrap();
    assert_eq!(churn.name, "churn");
    assert_eq!(churn.tags.len(), 1);
    assert_eq!(
        store
            .get_experiment("9")
            .await
            .unwrap()
            .lifecycle_stage
            .to_string(),
        "deleted"
    );

    let run = store.get_run(RUN).await.unwrap();
    assert_eq!(run.info.run_name, "brave-fox");
    assert_eq!(run.info.experiment_id, "7");
    assert_eq!(
        run.info.artifact_uri,
        format!("mlflow-artifacts:/7/{RUN}/artifacts")
    );
    assert_eq!(run.data.params.len(), 2);
    assert_eq!(run.data.metrics.len(), 1);
    assert!(run.data.metrics[0].value.is_nan(), "the latest loss is NaN");
    assert_eq!(run.inputs.dataset_inputs.len(), 1);
    assert_eq!(run.inputs.dataset_inputs[0].dataset.name, "train");
    let history = store.get_metric_history(RUN, "loss", 0, 100).await.unwrap();
    let values: Vec<String> = history
        .items
        .iter()
        .map(|m| format!("{}@{}", m.value, m.step))
        .collect();
    assert_eq!(values, ["0.9@0", "0.5@1", "NaN@2"]);
    let other = store.get_run(OTHER_RUN).await.unwrap();
    assert_eq!(other.info.lifecycle_stage.to_string(), "deleted");

    let model = store.get_registered_model("churn-model").await.unwrap();
    assert_eq!(model.description.as_deref(), Some("predicts churn"));
    assert_eq!(model.aliases.len(), 1);
    assert_eq!(
        (model.aliases[0].alias.as_str(), model.aliases[0].version.as_str()),
        ("champion", "2")
    );
    let v2 = store.get_model_version("churn-model", "2").await.unwrap();
    assert_eq!(v2.current_stage, "Production");
    assert_eq!(v2.tags.len(), 1);
    let v1 = store.get_model_version("churn-model", "1").await.unwrap();
    assert_eq!(
        v1.storage_location, v1.source,
        "a NULL storage_location is the source"
    );

    // New ids continue after the imported ones.
    let next = store.create_experiment("after-import", None, &[]).await.unwrap();
    assert_eq!(next, "10");
}

#[tokio::test]
async fn an_unknown_schema_and_a_non_empty_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.db");
    mlflow_db(&newer, "ffffffffffff").await;
    let target = dir.path().join("mlkube.db");
    let err = import::run(&args(&newer), &uri(&target), "mlflow-artifacts:/")
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::UnknownSchema(_)), "{err}");
    assert!(err.to_string().contains("ffffffffffff"), "{err}");

    let missing = import::run(
        &args(&dir.path().join("absent.db")),
        &uri(&target),
        "mlflow-artifacts:/",
    )
    .await
    .unwrap_err();
    assert!(
        missing.to_string().contains("no such SQLite database file"),
        "{missing}"
    );

    // A target with data of its own.
    let source = dir.path().join("mlflow.db");
    mlflow_db(&source, "dc11669786a5").await;
    let store = store::open(&uri(&target), "mlflow-artifacts:/").await.unwrap();
    store.create_experiment("mine", None, &[]).await.unwrap();
    drop(store);
    let err = import::run(&args(&source), &uri(&target), "mlflow-artifacts:/")
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::NotEmpty("experiments")), "{err}");
    assert!(err.to_string().contains("--merge"), "{err}");
    // --merge imports, keeping what was there (its experiment 1 is not replaced).
    let merge = ImportArgs {
        merge: true,
        ..args(&source)
    };
    let conflict = import::run(&merge, &uri(&target), "mlflow-artifacts:/").await;
    assert!(conflict.is_ok(), "{conflict:?}");
    let store = store::open(&uri(&target), "mlflow-artifacts:/").await.unwrap();
    assert_eq!(store.get_experiment("1").await.unwrap().name, "mine");
    assert_eq!(store.get_experiment("7").await.unwrap().name, "churn");
}

#[tokio::test]
async fn a_corrupt_row_stops_the_import_and_a_second_run_finishes_it_identically() {
    // Both copies: SQLite reading the attached MLflow file, and rows through the driver.
    for row_by_row in [false, true] {
        corrupt_row_then_resume(row_by_row).await;
    }
}

async fn corrupt_row_then_resume(row_by_row: bool) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mlflow.db");
    let pool = mlflow_db(&source, "acf3f17fdcc7").await;
    // A param of a run that does not exist.
    sqlx::query("INSERT INTO params VALUES ('ghost', '1', 'ffffffffffffffffffffffffffffffff')")
        .execute(&pool)
        .await
        .unwrap();
    let target = dir.path().join("interrupted.db");
    // One row per transaction, so the tables before params are committed when it stops.
    let small = ImportArgs {
        batch_rows: 1,
        row_by_row,
        ..args(&source)
    };
    let err = import::run(&small, &uri(&target), "mlflow-artifacts:/")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, ImportError::Row { table: "params", .. })
            && text.contains("ffffffffffffffffffffffffffffffff"),
        "{text}"
    );

    // The half-imported database: the server would refuse it.
    let store = store::open(&uri(&target), "mlflow-artifacts:/").await.unwrap();
    let unfinished = import::unfinished(store.pool()).await.unwrap();
    assert!(unfinished.is_some_and(|s| s.ends_with("mlflow.db")));
    drop(store);

    // Fixed at the source, the same import resumes: finished tables are skipped, nothing doubles.
    sqlx::query("DELETE FROM params WHERE key = 'ghost'")
        .execute(&pool)
        .await
        .unwrap();
    let summary = import::run(&small, &uri(&target), "mlflow-artifacts:/")
        .await
        .unwrap();
    assert!(summary.resumed);
    let skipped: Vec<&str> = summary
        .tables
        .iter()
        .filter(|t| t.skipped)
        .map(|t| t.table)
        .collect();
    assert_eq!(skipped, ["experiments", "experiment_tags", "runs", "run_tags"]);
    let store = store::open(&uri(&target), "mlflow-artifacts:/").await.unwrap();
    assert_eq!(import::unfinished(store.pool()).await.unwrap(), None);
    drop(store);

    let clean = dir.path().join("uninterrupted.db");
    let uninterrupted = ImportArgs {
        row_by_row,
        ..args(&source)
    };
    import::run(&uninterrupted, &uri(&clean), "mlflow-artifacts:/")
        .await
        .unwrap();
    let (a, b) = (dump(&target).await, dump(&clean).await);
    assert!(a.len() > 20, "{a:?}");
    assert_eq!(a, b);

    // Run again when finished: a no-op that writes nothing new.
    let again = import::run(&args(&source), &uri(&clean), "mlflow-artifacts:/")
        .await
        .unwrap();
    assert!(
        again
            .tables
            .iter()
            .all(|t| t.written == 0 || t.table == "experiments"),
        "{again:?}"
    );
    assert_eq!(dump(&clean).await, b);
}

/// werkzeug's generate_password_hash("imported-password-1") (scrypt, MLflow's default).
const MLFLOW_HASH: &str = "scrypt:32768:8:1$vfKXRKsSgEDMwVgI$837bdfb01e57100cf32281ecfd142fbd0fd6ebbe371b9ed31e7f192d7880eb405401eb3ee5964f7c0957f21fd21ebb631a1dcd07538b72d41c0260e8752a5411";

async fn auth_db(path: &std::path::Path, roles: bool) {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    let mut sql = format!(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(255) UNIQUE, password_hash VARCHAR(255),
             is_admin BOOLEAN);
         INSERT INTO users VALUES (1, 'admin', '{MLFLOW_HASH}', 1);
         INSERT INTO users VALUES (5, 'carol', '{MLFLOW_HASH}', 0);"
    );
    if roles {
        sql.push_str(
            "CREATE TABLE roles (id INTEGER PRIMARY KEY, name VARCHAR(255), workspace VARCHAR(63));
             CREATE TABLE role_permissions (id INTEGER PRIMARY KEY, role_id INTEGER, resource_type VARCHAR(64),
                 resource_pattern VARCHAR(255), permission VARCHAR(255));
             CREATE TABLE user_role_assignments (id INTEGER PRIMARY KEY, user_id INTEGER, role_id INTEGER);
             INSERT INTO roles VALUES (1, 'carol-direct', 'default');
             INSERT INTO role_permissions VALUES (1, 1, 'experiment', '7', 'MANAGE');
             INSERT INTO role_permissions VALUES (2, 1, 'registered_model', 'churn-model', 'READ');
             INSERT INTO role_permissions VALUES (3, 1, 'experiment', '*', 'EDIT');
             INSERT INTO role_permissions VALUES (4, 1, 'workspace', '*', 'USE');
             INSERT INTO user_role_assignments VALUES (1, 5, 1);",
        );
    } else {
        sql.push_str(
            "CREATE TABLE experiment_permissions (id INTEGER PRIMARY KEY, experiment_id VARCHAR(255), user_id INTEGER,
                 permission VARCHAR(255));
             CREATE TABLE registered_model_permissions (id INTEGER PRIMARY KEY, name VARCHAR(255), user_id INTEGER,
                 permission VARCHAR(255));
             INSERT INTO experiment_permissions VALUES (1, '7', 5, 'MANAGE');
             INSERT INTO registered_model_permissions VALUES (1, 'churn-model', 5, 'READ');",
        );
    }
    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
}

/// Users keep their MLflow (werkzeug) password, which signs in once and is then re-hashed with
/// Argon2id; per-user grants of MLflow 2.x and 3.x roles become our permissions; a user already
/// here is kept; wildcard and workspace grants are counted as skipped.
#[tokio::test]
async fn auth_users_and_permissions_are_imported_and_mlflow_passwords_sign_in() {
    use mlkube_server::auth::store::{AuthStore, Resource};
    use mlkube_server::auth::{Auth, AuthConfig, Permission};

    for roles in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("basic_auth_mlflow.db");
        auth_db(&source, roles).await;
        let ours = uri(&dir.path().join("basic_auth.db"));
        let tracking = std::sync::Arc::new(
            store::open(&uri(&dir.path().join("t.db")), "mlflow-artifacts:/")
                .await
                .unwrap(),
        );
        // Our admin exists before the import (the server creates it at startup) and is kept.
        let config = AuthConfig::new(ours.clone(), "admin", "our-admin-password", Permission::Read).unwrap();
        let auth = Auth::open(&config, tracking.clone()).await.unwrap();
        drop(auth);

        let summary = import::auth::run(&uri(&source), &ours).await.unwrap();
        assert_eq!(
            (
                summary.users_created,
                summary.users_kept,
                summary.permissions,
                summary.skipped
            ),
            (1, 1, 2, if roles { 2 } else { 0 }),
            "roles: {roles}"
        );
        let store_ = AuthStore::open(&ours).await.unwrap();
        let carol = store_.get_user("carol").await.unwrap().unwrap();
        assert_eq!(carol.password_hash, MLFLOW_HASH);
        assert_eq!(
            store_
                .get_permission(Resource::Experiment, "7", carol.id)
                .await
                .unwrap(),
            Some(Permission::Manage)
        );
        assert_eq!(
            store_
                .get_permission(Resource::RegisteredModel, "churn-model", carol.id)
                .await
                .unwrap(),
            Some(Permission::Read)
        );

        let auth = Auth::open(&config, tracking).await.unwrap();
        assert!(
            auth.authenticate("carol", "wrong-password")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            auth.authenticate("carol", "imported-password-1")
                .await
                .unwrap()
                .is_some()
        );
        let rehashed = store_.get_user("carol").await.unwrap().unwrap().password_hash;
        assert!(rehashed.starts_with("$argon2id$"), "{rehashed}");
        auth.forget_credentials("carol");
        assert!(
            auth.authenticate("carol", "imported-password-1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            auth.authenticate("admin", "our-admin-password")
                .await
                .unwrap()
                .is_some(),
            "ours kept"
        );

        // Again: nothing new.
        let again = import::auth::run(&uri(&source), &ours).await.unwrap();
        assert_eq!((again.users_created, again.users_kept), (0, 2));
    }
}
