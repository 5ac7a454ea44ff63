-- Imports from an upstream MLflow database (`mlkube-server import`, docs/migrating.md). A row with
-- finished_at NULL is an import under way or interrupted: the server refuses to start on the
-- database until the same import is run again and finishes. tables_done lists the tables already
-- copied in full, so a resumed import skips them.
CREATE TABLE mlkube_imports (
    source VARCHAR(700) NOT NULL PRIMARY KEY,
    schema_version VARCHAR(64) NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    tables_done VARCHAR(2000) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
