-- Tracking schema (MySQL 8 / MariaDB 10.5+, InnoDB, utf8mb4 with binary collation so names and LIKE
-- are case-sensitive as on the other engines). Columns that are keyed are VARCHAR sized by the
-- API's limits (keys 250, experiment names 500, tag values 8000, param values 6000). Strings are
-- VARCHAR wherever a row's declared sizes fit MySQL's 64 KiB row limit: sqlx reads TEXT columns as
-- bytes, so only the few unbounded ones (dataset schemas and profiles, descriptions, payloads) are
-- MEDIUMTEXT, and the store reads those through `crate::db::text`. `key` is a reserved word here.
CREATE TABLE experiments (
    experiment_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(500) NOT NULL,
    artifact_location VARCHAR(2048) NOT NULL,
    lifecycle_stage VARCHAR(32) NOT NULL DEFAULT 'active',
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    CONSTRAINT experiments_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(5000) NOT NULL,
    PRIMARY KEY (experiment_id, `key`),
    FOREIGN KEY (experiment_id) REFERENCES experiments (experiment_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE runs (
    run_uuid VARCHAR(32) NOT NULL PRIMARY KEY,
    name VARCHAR(250) NOT NULL,
    experiment_id BIGINT NOT NULL,
    user_id VARCHAR(256) NOT NULL,
    status VARCHAR(20) NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    artifact_uri VARCHAR(2048) NOT NULL,
    lifecycle_stage VARCHAR(32) NOT NULL DEFAULT 'active',
    FOREIGN KEY (experiment_id) REFERENCES experiments (experiment_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX runs_experiment_start ON runs (experiment_id, start_time DESC, run_uuid);
CREATE TABLE run_tags (
    run_uuid VARCHAR(32) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(8000) NOT NULL,
    PRIMARY KEY (run_uuid, `key`),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX run_tags_key_value ON run_tags (`key`, value(250));
CREATE TABLE params (
    run_uuid VARCHAR(32) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(6000) NOT NULL,
    PRIMARY KEY (run_uuid, `key`),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX params_key_value ON params (`key`, value(250));
CREATE TABLE metrics (
    run_uuid VARCHAR(32) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_uuid, `key`, step, timestamp, value, is_nan),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE latest_metrics (
    run_uuid VARCHAR(32) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_uuid, `key`),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX latest_metrics_key_value ON latest_metrics (`key`, value);
CREATE TABLE run_dataset_inputs (
    run_uuid VARCHAR(32) NOT NULL,
    name VARCHAR(500) NOT NULL,
    digest VARCHAR(128) NOT NULL,
    source_type VARCHAR(128) NOT NULL,
    source MEDIUMTEXT NOT NULL,
    dataset_schema MEDIUMTEXT,
    profile MEDIUMTEXT,
    context VARCHAR(250),
    tags_json MEDIUMTEXT NOT NULL DEFAULT ('[]'),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_uuid, name, digest),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX run_dataset_inputs_name ON run_dataset_inputs (name, digest);
CREATE TABLE run_model_io (
    run_uuid VARCHAR(32) NOT NULL,
    direction VARCHAR(16) NOT NULL,
    model_id VARCHAR(64) NOT NULL,
    step BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_uuid, direction, model_id),
    FOREIGN KEY (run_uuid) REFERENCES runs (run_uuid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE logged_models (
    model_id VARCHAR(64) NOT NULL PRIMARY KEY,
    experiment_id BIGINT NOT NULL,
    name VARCHAR(500) NOT NULL,
    artifact_location VARCHAR(2048) NOT NULL,
    creation_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL,
    status VARCHAR(32) NOT NULL,
    model_type VARCHAR(500),
    source_run_id VARCHAR(32),
    status_message VARCHAR(2000),
    lifecycle_stage VARCHAR(32) NOT NULL DEFAULT 'active',
    FOREIGN KEY (experiment_id) REFERENCES experiments (experiment_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX logged_models_experiment ON logged_models (experiment_id, creation_timestamp DESC);
CREATE INDEX logged_models_run ON logged_models (source_run_id, name);
CREATE TABLE logged_model_tags (
    model_id VARCHAR(64) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(8000) NOT NULL,
    PRIMARY KEY (model_id, `key`),
    FOREIGN KEY (model_id) REFERENCES logged_models (model_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE logged_model_params (
    model_id VARCHAR(64) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(8000) NOT NULL,
    PRIMARY KEY (model_id, `key`),
    FOREIGN KEY (model_id) REFERENCES logged_models (model_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
