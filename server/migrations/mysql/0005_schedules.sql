-- Background jobs that run once per interval across every replica on this database (monitor
-- evaluation and pruning, statistics): the replica whose UPDATE moves next_due forward runs the job
-- (docs/architecture.md, "Several replicas").
CREATE TABLE mlkube_schedules (
    job VARCHAR(128) NOT NULL PRIMARY KEY,
    next_due BIGINT NOT NULL,
    holder VARCHAR(256) NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
