-- Basic auth (SQLite): users and their per-experiment / per-registered-model permissions, the tables
-- of MLflow's basic-auth app. Passwords are Argon2id PHC strings. Permissions go with their user.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE experiment_permissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    UNIQUE (experiment_id, user_id)
);
CREATE INDEX experiment_permissions_user ON experiment_permissions (user_id);
CREATE TABLE registered_model_permissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    UNIQUE (name, user_id)
);
CREATE INDEX registered_model_permissions_user ON registered_model_permissions (user_id);
