-- Metrics linked to a logged model (MLflow 3: a log-batch metric with model_id, and optionally the
-- dataset it was computed on). The run keeps its own copy in metrics; this table feeds
-- LoggedModel.data.metrics. Dataset names in the key are cut to 250 characters' room by InnoDB's
-- 3072-byte key limit.
CREATE TABLE logged_model_metrics (
    model_id VARCHAR(64) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    run_uuid VARCHAR(32) NOT NULL,
    dataset_name VARCHAR(250) NOT NULL DEFAULT '',
    dataset_digest VARCHAR(128) NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, `key`, step, timestamp, run_uuid, dataset_name, dataset_digest),
    FOREIGN KEY (model_id) REFERENCES logged_models (model_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
