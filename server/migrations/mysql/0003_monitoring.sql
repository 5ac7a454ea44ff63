-- Model quality monitoring (MySQL / MariaDB): logged predictions, ground truth joined by request
-- id, drift references and monitors with their alert state. Names, versions and request ids are at
-- most 256 characters (the API refuses longer). InnoDB appends the primary key (request_id) to
-- every secondary index, so the window indexes cover it without naming it (which would pass
-- InnoDB's 3072-byte key limit).
CREATE TABLE mlkube_predictions (
    request_id VARCHAR(256) NOT NULL PRIMARY KEY,
    model_name VARCHAR(256) NOT NULL,
    model_version VARCHAR(256) NOT NULL,
    timestamp BIGINT NOT NULL,
    inputs MEDIUMTEXT NOT NULL,
    outputs MEDIUMTEXT NOT NULL,
    -- The default score (the output if a number, else its first number), extracted once at ingestion.
    score DOUBLE,
    logged_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX mlkube_predictions_version_time ON mlkube_predictions (model_name, model_version, timestamp, score);
CREATE INDEX mlkube_predictions_model_time ON mlkube_predictions (model_name, timestamp, score);
CREATE INDEX mlkube_predictions_time ON mlkube_predictions (timestamp);

CREATE TABLE mlkube_ground_truth (
    request_id VARCHAR(256) NOT NULL PRIMARY KEY,
    actual MEDIUMTEXT NOT NULL,
    actual_number DOUBLE,
    timestamp BIGINT NOT NULL,
    logged_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX mlkube_ground_truth_time ON mlkube_ground_truth (timestamp);

CREATE TABLE mlkube_drift_references (
    model_name VARCHAR(256) NOT NULL,
    -- '' is the reference for all versions of the model together.
    model_version VARCHAR(256) NOT NULL,
    source VARCHAR(2048) NOT NULL,
    row_count BIGINT NOT NULL,
    features LONGTEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (model_name, model_version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE mlkube_monitors (
    monitor_id VARCHAR(64) NOT NULL PRIMARY KEY,
    name VARCHAR(256) NOT NULL,
    model_name VARCHAR(256) NOT NULL,
    model_version VARCHAR(256),
    metric VARCHAR(64) NOT NULL,
    window_spec VARCHAR(256) NOT NULL,
    threshold DOUBLE NOT NULL,
    direction VARCHAR(16) NOT NULL,
    score_field VARCHAR(2048),
    positive_label VARCHAR(1024),
    decision_threshold DOUBLE,
    min_samples BIGINT NOT NULL,
    webhook_url VARCHAR(2048),
    state VARCHAR(32) NOT NULL,
    state_since BIGINT NOT NULL,
    last_value DOUBLE,
    last_evaluated BIGINT,
    revision BIGINT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    CONSTRAINT mlkube_monitors_name_key UNIQUE (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX mlkube_monitors_model ON mlkube_monitors (model_name, creation_time);
