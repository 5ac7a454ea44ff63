//! Failed-login limits: after `max_failures` wrong passwords within `window` for one username, or
//! from one client address, further attempts are refused with 429 and `Retry-After` until the
//! window that started with the first failure ends — before any password is checked, so a guessing
//! client costs no hashing. Unknown usernames count like known ones (nothing to learn by probing).
//! A success clears the username's count. Memory is bounded: at most `MAX_TRACKED` keys, expired
//! ones dropped first. Client addresses are the TCP peer (a proxy in front makes them its own; the
//! per-username limit still holds). Documented in README.md, "Basic auth".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most (usernames and addresses together).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures allowed per window (0 turns limiting off).
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
pub struct FailedLogins {
    limits: LoginLimits,
    windows: Mutex<HashMap<Key, Window>>,
}

impl FailedLogins {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `username` or `addr` used up its failures in the current window.
    pub fn check(&self, username: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        if self.limits.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for key in keys(username, addr) {
            if let Some(w) = windows.get(&key) {
                let ends = w.started + self.limits.window;
                if w.failures >= self.limits.max_failures && ends > now {
                    wait = wait.max(ends - now);
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        if self.limits.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let window = self.limits.window;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.started + window > now);
            if windows.len() >= MAX_TRACKED {
                // Still full of live windows: forget the oldest half rather than grow.
                let mut starts: Vec<Instant> = windows.values().map(|w| w.started).collect();
                starts.sort();
                let cutoff = starts[starts.len() / 2];
                windows.retain(|_, w| w.started > cutoff);
            }
        }
        for key in keys(username, addr) {
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if w.started + window <= now {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    pub fn succeeded(&self, username: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.remove(&Key::User(username.to_owned()));
    }
}

fn keys(username: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
    std::iter::once(Key::User(username.to_owned())).chain(addr.map(Key::Addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_per_user_and_per_address() {
        let limits = LoginLimits {
            max_failures: 3,
            window: Duration::from_secs(60),
        };
        let f = FailedLogins::new(limits);
        let here: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check("bob", None).is_ok());
            f.failed("bob", None);
        }
        let wait = f.check("bob", None).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(f.check("alice", None).is_ok(), "other users are unaffected");
        f.succeeded("bob");
        assert!(f.check("bob", None).is_ok(), "a success clears the username");
        // One address guessing many usernames.
        for user in ["u1", "u2", "u3"] {
            f.failed(user, Some(here));
        }
        assert!(f.check("u4", Some(here)).is_err());
        assert!(f.check("u4", Some("10.9.9.9".parse().unwrap())).is_ok());
        let off = FailedLogins::new(LoginLimits {
            max_failures: 0,
            window: Duration::from_secs(60),
        });
        for _ in 0..100 {
            off.failed("bob", Some(here));
        }
        assert!(off.check("bob", Some(here)).is_ok());
    }

    #[test]
    fn windows_expire() {
        let f = FailedLogins::new(LoginLimits {
            max_failures: 1,
            window: Duration::from_millis(20),
        });
        f.failed("bob", None);
        assert!(f.check("bob", None).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(f.check("bob", None).is_ok());
    }
}
