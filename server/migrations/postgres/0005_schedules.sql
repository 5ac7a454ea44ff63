-- Background jobs that run once per interval across every replica on this database (monitor
-- evaluation and pruning, statistics): the replica whose UPDATE moves next_due forward runs the job
-- (docs/architecture.md, "Several replicas").
CREATE TABLE mlkube_schedules (
    job TEXT PRIMARY KEY,
    next_due BIGINT NOT NULL,
    holder TEXT NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0
);
