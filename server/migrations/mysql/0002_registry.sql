-- Model registry (MySQL / MariaDB). Names cascade on rename; deleted versions stay as
-- 'Deleted_Internal' so their numbers are never reused. Model names are at most 256 bytes.
CREATE TABLE registered_models (
    name VARCHAR(256) NOT NULL PRIMARY KEY,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description MEDIUMTEXT,
    user_id VARCHAR(256)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE registered_model_tags (
    name VARCHAR(256) NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(5000) NOT NULL,
    PRIMARY KEY (name, `key`),
    FOREIGN KEY (name) REFERENCES registered_models (name) ON UPDATE CASCADE ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE model_versions (
    name VARCHAR(256) NOT NULL,
    version BIGINT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description MEDIUMTEXT,
    user_id VARCHAR(256),
    current_stage VARCHAR(32) NOT NULL,
    source VARCHAR(4000) NOT NULL,
    storage_location VARCHAR(4000) NOT NULL,
    run_id VARCHAR(32),
    run_link VARCHAR(2048),
    model_id VARCHAR(64),
    status VARCHAR(32) NOT NULL,
    status_message VARCHAR(2000),
    PRIMARY KEY (name, version),
    FOREIGN KEY (name) REFERENCES registered_models (name) ON UPDATE CASCADE ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX model_versions_run ON model_versions (run_id);
CREATE INDEX model_versions_stage ON model_versions (name, current_stage, version);
CREATE TABLE model_version_tags (
    name VARCHAR(256) NOT NULL,
    version BIGINT NOT NULL,
    `key` VARCHAR(250) NOT NULL,
    value VARCHAR(5000) NOT NULL,
    PRIMARY KEY (name, version, `key`),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON UPDATE CASCADE ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE registered_model_aliases (
    name VARCHAR(256) NOT NULL,
    alias VARCHAR(256) NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name) REFERENCES registered_models (name) ON UPDATE CASCADE ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
