-- Basic auth (MySQL / MariaDB): users and their per-experiment / per-registered-model permissions,
-- the tables of MLflow's basic-auth app. Passwords are Argon2id PHC strings. Permissions go with
-- their user.
CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(255) NOT NULL UNIQUE,
    password_hash VARCHAR(1024) NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE experiment_permissions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    experiment_id VARCHAR(64) NOT NULL,
    user_id BIGINT NOT NULL,
    permission VARCHAR(32) NOT NULL,
    UNIQUE (experiment_id, user_id),
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX experiment_permissions_user ON experiment_permissions (user_id);
CREATE TABLE registered_model_permissions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(256) NOT NULL,
    user_id BIGINT NOT NULL,
    permission VARCHAR(32) NOT NULL,
    UNIQUE (name, user_id),
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX registered_model_permissions_user ON registered_model_permissions (user_id);
