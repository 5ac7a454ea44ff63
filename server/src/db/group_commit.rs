//! Group commit for SQLite: an acknowledged write is on disk, and concurrent writers share one
//! fsync (docs/architecture.md, "Durability").
//!
//! Connections run `PRAGMA synchronous = NORMAL` in WAL mode: a commit appends its frames to the
//! `-wal` file without waiting for the disk, which survives a killed process but not a power loss.
//! Before a write request is answered, [`GroupCommit::sync`] makes everything committed so far
//! durable with one `fdatasync` of the WAL file — the guarantee of `synchronous = FULL`, whose cost
//! (one fsync per commit, inside the single-writer lock) is paid here once per group of concurrent
//! commits, outside the lock.
//!
//! Why this is enough: every commit counted in [`GroupCommit::committed`] has written its frames to
//! the WAL before it was counted, and `fdatasync` on any descriptor of a file flushes all its dirty
//! pages. If the WAL file is gone, SQLite checkpointed it into the database file, which it syncs at
//! every checkpoint under `NORMAL`. A WAL file seen for the first time (new inode) also gets its
//! directory synced, so its name survives too.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

/// The durability state of one SQLite file.
#[derive(Debug)]
pub struct GroupCommit {
    wal: PathBuf,
    dir: PathBuf,
    /// Write transactions finished so far (counted when the writer lock is released).
    committed: AtomicU64,
    /// fsyncs done, for the metrics and the tests.
    fsyncs: AtomicU64,
    /// One fsync at a time; the waiters queue here and most find their commit already covered.
    synced: Mutex<Synced>,
}

#[derive(Debug, Default)]
struct Synced {
    /// Every commit numbered up to this one is on disk.
    through: u64,
    /// The WAL file's inode at the last fsync (its directory was synced when it changed).
    wal_inode: Option<u64>,
}

impl GroupCommit {
    /// Group commit for the database file at `path`.
    pub fn new(path: &Path) -> Self {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            wal: PathBuf::from(wal),
            dir,
            committed: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            synced: Mutex::new(Synced::default()),
        }
    }

    /// A write transaction has finished (committed or rolled back: counting a rollback only
    /// costs an fsync that was not needed).
    pub fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    /// How many fsyncs made commits durable so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// How many write transactions finished so far.
    pub fn commits(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Return once every commit finished before this call is on disk.
    pub async fn sync(&self) -> io::Result<()> {
        let target = self.committed.load(Ordering::SeqCst);
        let mut synced = self.synced.lock().await;
        if synced.through >= target {
            return Ok(());
        }
        // Everything counted by now has written its frames: this fsync covers all of it.
        let through = self.committed.load(Ordering::SeqCst);
        let (wal, dir, known) = (self.wal.clone(), self.dir.clone(), synced.wal_inode);
        let inode = tokio::task::spawn_blocking(move || sync_wal(&wal, &dir, known))
            .await
            .map_err(io::Error::other)??;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        synced.through = through;
        synced.wal_inode = inode;
        Ok(())
    }
}

/// fdatasync the WAL file (and its directory when the file is new); its inode, or `None` when
/// SQLite has checkpointed and removed it.
fn sync_wal(wal: &Path, dir: &Path, known_inode: Option<u64>) -> io::Result<Option<u64>> {
    let file = match std::fs::File::open(wal) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    file.sync_data()?;
    let inode = file.metadata()?.ino();
    if known_inode != Some(inode) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(Some(inode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn nothing_committed_needs_no_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(&dir.path().join("x.db"));
        g.sync().await.unwrap();
        assert_eq!(g.fsyncs(), 0);
    }

    #[tokio::test]
    async fn a_missing_wal_counts_as_synced() {
        let dir = tempfile::tempdir().unwrap();
        let g = GroupCommit::new(&dir.path().join("x.db"));
        g.committed();
        g.sync().await.unwrap();
        assert_eq!(g.fsyncs(), 1);
        // Covered now: a second caller with nothing new returns at once.
        g.sync().await.unwrap();
        assert_eq!(g.fsyncs(), 1);
    }

    #[tokio::test]
    async fn concurrent_commits_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").unwrap();
        let g = Arc::new(GroupCommit::new(&db));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let g = g.clone();
            tasks.push(tokio::spawn(async move {
                g.committed();
                g.sync().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(g.commits(), 64);
        // Every commit is covered, by at least one and at most one fsync per commit.
        assert!(g.fsyncs() >= 1 && g.fsyncs() <= 64, "{}", g.fsyncs());
        assert_eq!(g.synced.lock().await.through, 64);
    }
}
