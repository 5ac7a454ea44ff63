-- Model quality monitoring (PostgreSQL): logged predictions, ground truth joined by request id,
-- drift references and monitors with their alert state.
CREATE TABLE mlkube_predictions (
    request_id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    timestamp BIGINT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    -- The default score (the output if a number, else its first number), extracted once at ingestion.
    score DOUBLE PRECISION,
    logged_at BIGINT NOT NULL
);
-- Covering indexes: a window is read from the index alone, never from the wide rows.
CREATE INDEX mlkube_predictions_version_time ON mlkube_predictions (model_name, model_version, timestamp, score, request_id);
CREATE INDEX mlkube_predictions_model_time ON mlkube_predictions (model_name, timestamp, score, request_id);
CREATE INDEX mlkube_predictions_time ON mlkube_predictions (timestamp);

CREATE TABLE mlkube_ground_truth (
    request_id TEXT PRIMARY KEY,
    actual TEXT NOT NULL,
    actual_number DOUBLE PRECISION,
    timestamp BIGINT NOT NULL,
    logged_at BIGINT NOT NULL
);
CREATE INDEX mlkube_ground_truth_time ON mlkube_ground_truth (timestamp);

CREATE TABLE mlkube_drift_references (
    model_name TEXT NOT NULL,
    -- '' is the reference for all versions of the model together.
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    row_count BIGINT NOT NULL,
    features TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (model_name, model_version)
);

CREATE TABLE mlkube_monitors (
    monitor_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT,
    metric TEXT NOT NULL,
    window_spec TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    direction TEXT NOT NULL,
    score_field TEXT,
    positive_label TEXT,
    decision_threshold DOUBLE PRECISION,
    min_samples BIGINT NOT NULL,
    webhook_url TEXT,
    state TEXT NOT NULL,
    state_since BIGINT NOT NULL,
    last_value DOUBLE PRECISION,
    last_evaluated BIGINT,
    revision BIGINT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    CONSTRAINT mlkube_monitors_name_key UNIQUE (name)
);
CREATE INDEX mlkube_monitors_model ON mlkube_monitors (model_name, creation_time);
