//! The server binary runs with mimalloc's purge delay set (docs/architecture.md, "Performance"):
//! started without `MIMALLOC_PURGE_DELAY` it replaces itself, same pid, with a process that has
//! it; a value the operator set is kept.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start the server on a free port over a fresh SQLite file, with `purge_delay` in its
/// environment when given.
fn start(dir: &std::path::Path, purge_delay: Option<&str>) -> Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mlkube-server"));
    command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("m.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .env_remove("MIMALLOC_PURGE_DELAY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(value) = purge_delay {
        command.env("MIMALLOC_PURGE_DELAY", value);
    }
    command.spawn().unwrap()
}

/// `MIMALLOC_PURGE_DELAY` in the environment of process `pid`, once it has one (or after 10 s).
fn purge_delay_of(pid: u32) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let found = environ
            .split(|b| *b == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| entry.strip_prefix("MIMALLOC_PURGE_DELAY=").map(str::to_owned));
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn started_without_the_setting_the_same_process_runs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), None);
    let seen = purge_delay_of(child.id());
    // Still running as the pid that was started: the process replaced itself, it did not fork.
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen.as_deref(), Some("2"));
    assert!(running, "the server exited");
}

#[test]
fn a_purge_delay_the_operator_set_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), Some("7"));
    let seen = purge_delay_of(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen.as_deref(), Some("7"));
}
