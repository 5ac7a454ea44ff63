-- Metrics linked to a logged model (MLflow 3: a log-batch metric with model_id, and optionally the
-- dataset it was computed on). The run keeps its own copy in metrics; this table feeds
-- LoggedModel.data.metrics.
CREATE TABLE logged_model_metrics (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    run_uuid TEXT NOT NULL,
    dataset_name TEXT NOT NULL DEFAULT '',
    dataset_digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, key, step, timestamp, run_uuid, dataset_name, dataset_digest)
);
