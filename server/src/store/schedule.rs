//! Background jobs that run once per interval across every replica sharing a database
//! (docs/architecture.md, "Several replicas").
//!
//! Each job has a row in `mlkube_schedules` with the time it is next due. Every replica polls a
//! few times per interval; the one whose conditional UPDATE moves `next_due` forward has the turn
//! and runs the job — the database decides, so exactly one replica wins each interval. A replica
//! that dies holds nothing: the next due time passes and whichever replica polls next takes the
//! turn, at most one poll period late. Due times advance by whole intervals from the first one, so
//! the cadence does not drift with the polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Row;

use super::query::Sql;
use crate::db::Database;

/// The longest wait between two polls: how late a turn can be taken after it is due.
const MAX_POLL: Duration = Duration::from_secs(5);

/// One job's schedule, as seen from this replica.
#[derive(Debug)]
pub struct Schedule {
    db: Database,
    job: &'static str,
    replica: String,
    interval_ms: i64,
    row_exists: AtomicBool,
}

impl Schedule {
    /// `replica` names this process among the replicas (see [`replica_id`]).
    pub fn new(db: Database, job: &'static str, interval: Duration, replica: String) -> Self {
        Self {
            db,
            job,
            replica,
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX).max(1),
            row_exists: AtomicBool::new(false),
        }
    }

    /// How often to poll for the turn: a quarter of the interval, at most [`MAX_POLL`].
    pub fn poll_period(&self) -> Duration {
        let interval = Duration::from_millis(u64::try_from(self.interval_ms).unwrap_or(u64::MAX));
        (interval / 4).clamp(Duration::from_millis(10), MAX_POLL)
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica has the turn at `now_ms` (and takes it): `true` for exactly one
    /// replica per interval. The first poll on a new database finds the job due at once.
    pub async fn claim(&self, now_ms: i64) -> Result<bool, sqlx::Error> {
        let engine = self.db.engine();
        if !self.row_exists.load(Ordering::Relaxed) {
            let mut insert = Sql::new("INSERT INTO mlkube_schedules (job, next_due) VALUES (");
            insert
                .bind_str(self.job)
                .push(", ")
                .bind_i64(now_ms)
                .push(")")
                .on_conflict_do_nothing("job");
            let _guard = self.db.write_guard().await;
            insert.query(engine).execute(self.db.writer()).await?;
            self.row_exists.store(true, Ordering::Relaxed);
        }
        let next = now_ms.saturating_add(self.interval_ms);
        // The next due time keeps the cadence (due + interval) unless the job fell a whole
        // interval behind (no replica was up), then it restarts from now.
        let mut claim = Sql::new("UPDATE mlkube_schedules SET next_due = CASE WHEN next_due + ");
        claim
            .bind_i64(self.interval_ms)
            .push(" > ")
            .bind_i64(now_ms)
            .push(" THEN next_due + ")
            .bind_i64(self.interval_ms)
            .push(" ELSE ")
            .bind_i64(next)
            .push(" END, holder = ")
            .bind_str(&self.replica)
            .push(", claimed_at = ")
            .bind_i64(now_ms)
            .push(" WHERE job = ")
            .bind_str(self.job)
            .push(" AND next_due <= ")
            .bind_i64(now_ms);
        let _guard = self.db.write_guard().await;
        Ok(claim
            .query(engine)
            .execute(self.db.writer())
            .await?
            .rows_affected()
            == 1)
    }

    /// The replica that took the last turn (`None` before any).
    pub async fn last_holder(&self) -> Result<Option<String>, sqlx::Error> {
        let mut q = Sql::new("SELECT holder FROM mlkube_schedules WHERE job = ");
        q.bind_str(self.job);
        let row = q.query(self.db.engine()).fetch_optional(self.db.pool()).await?;
        let holder: Option<String> = row.map(|r| r.try_get("holder")).transpose()?;
        Ok(holder.filter(|h| !h.is_empty()))
    }
}

/// This process's name among the replicas: the pod name (`HOSTNAME`) and a random suffix, so a
/// restarted pod is a new replica.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mlkube-server".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}
