//! Jobs that run once per interval across replicas (`store::schedule`), on SQLite and (ignored
//! unless MLKUBE_TEST_POSTGRES_URL is set, as `scripts/test-all` does) PostgreSQL: the database
//! gives each interval's turn to exactly one replica, whoever polls.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use mlkube_server::db::Database;
use mlkube_server::store::schedule::Schedule;

const INTERVAL: Duration = Duration::from_millis(1000);
const T0: i64 = 1_700_000_000_000;

async fn sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}", dir.path().join("s.db").display());
    let store = mlkube_server::store::open(&uri, "mlflow-artifacts:/")
        .await
        .unwrap();
    (store.database(), dir)
}

async fn postgres() -> Database {
    let uri = common::fresh_postgres_uri().await;
    let store = mlkube_server::store::open(&uri, "mlflow-artifacts:/")
        .await
        .unwrap();
    store.database()
}

fn replicas(db: &Database, n: usize) -> Vec<Schedule> {
    (0..n)
        .map(|i| Schedule::new(db.clone(), "job", INTERVAL, format!("replica-{i}")))
        .collect()
}

async fn turns_go_to_one_replica_per_interval(db: Database) {
    let r = replicas(&db, 2);
    assert!(r[0].claim(T0).await.unwrap(), "a new job is due at once");
    assert!(!r[1].claim(T0).await.unwrap(), "taken for this interval");
    assert!(!r[0].claim(T0 + 500).await.unwrap());
    assert!(!r[1].claim(T0 + 999).await.unwrap());
    // Whoever polls first after the due time gets it: here the other replica.
    assert!(r[1].claim(T0 + 1003).await.unwrap());
    assert!(!r[0].claim(T0 + 1010).await.unwrap());
    assert_eq!(r[0].last_holder().await.unwrap().as_deref(), Some("replica-1"));
    // The cadence holds: next due at T0 + 2000, not 1003 + 1000.
    assert!(!r[0].claim(T0 + 1999).await.unwrap());
    assert!(r[0].claim(T0 + 2000).await.unwrap());
    // Nobody polled for several intervals (every replica was down): one turn, then the cadence
    // restarts from then.
    assert!(r[1].claim(T0 + 9500).await.unwrap());
    assert!(!r[0].claim(T0 + 9600).await.unwrap());
    assert!(r[0].claim(T0 + 10_500).await.unwrap());
}

async fn concurrent_polls_give_one_turn(db: Database) {
    let r = replicas(&db, 8);
    // Create the row first so the race is on the claim itself.
    assert!(r[0].claim(T0).await.unwrap());
    for round in 1..=5 {
        let now = T0 + round * 1000;
        let wins = futures_util::future::join_all(r.iter().map(|s| s.claim(now))).await;
        let won = wins.into_iter().filter(|w| *w.as_ref().unwrap()).count();
        assert_eq!(won, 1, "round {round}");
    }
}

#[tokio::test]
async fn sqlite_turns_go_to_one_replica_per_interval() {
    let (db, _dir) = sqlite().await;
    turns_go_to_one_replica_per_interval(db).await;
}

#[tokio::test]
async fn sqlite_concurrent_polls_give_one_turn() {
    let (db, _dir) = sqlite().await;
    concurrent_polls_give_one_turn(db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: MLKUBE_TEST_POSTGRES_URL"]
async fn postgres_turns_go_to_one_replica_per_interval() {
    turns_go_to_one_replica_per_interval(postgres().await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: MLKUBE_TEST_POSTGRES_URL"]
async fn postgres_concurrent_polls_give_one_turn() {
    concurrent_polls_give_one_turn(postgres().await).await;
}

#[test]
fn polls_a_quarter_interval_at_most_five_seconds() {
    let (db_less, _dir) = tokio::runtime::Runtime::new().unwrap().block_on(sqlite());
    let s = |ms| Schedule::new(db_less.clone(), "job", Duration::from_millis(ms), "r".into());
    assert_eq!(s(1000).poll_period(), Duration::from_millis(250));
    assert_eq!(s(60_000).poll_period(), Duration::from_secs(5));
    assert_eq!(s(1).poll_period(), Duration::from_millis(10));
}
