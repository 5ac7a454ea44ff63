//! Import progress on stderr: a bar redrawn in place on a terminal, otherwise a line every few
//! seconds and one per finished table (what a log collector keeps).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const LINE_EVERY: Duration = Duration::from_secs(5);
const BAR_EVERY: Duration = Duration::from_millis(200);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    tty: bool,
    table: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            tty: std::io::stderr().is_terminal(),
            table: "",
            total: 0,
            done: 0,
            started: now,
            last: now,
        }
    }

    pub fn start(&mut self, table: &'static str, total: u64) {
        self.table = table;
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.last = self.started;
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        let every = if self.tty { BAR_EVERY } else { LINE_EVERY };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print(false);
        }
    }

    /// The table's last line; returns its rows per second.
    pub fn finish(&mut self) -> f64 {
        self.print(true);
        self.rate()
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let done = self.done as f64;
        if secs > 0.0 { done / secs } else { done }
    }

    fn print(&self, last: bool) {
        let mut err = std::io::stderr().lock();
        let rate = self.rate();
        if self.tty {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let filled = if self.total == 0 {
                BAR_WIDTH
            } else {
                ((self.done as f64 / self.total as f64) * BAR_WIDTH as f64).min(BAR_WIDTH as f64) as usize
            };
            let _ = write!(
                err,
                "\r{:<24} [{}{}] {}/{} rows, {:.0} rows/s{}",
                self.table,
                "#".repeat(filled),
                " ".repeat(BAR_WIDTH - filled),
                self.done,
                self.total,
                rate,
                if last { "\n" } else { "" }
            );
        } else {
            let _ = writeln!(
                err,
                "import: {} {}/{} rows, {:.0} rows/s{}",
                self.table,
                self.done,
                self.total,
                rate,
                if last { " (done)" } else { "" }
            );
        }
        let _ = err.flush();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
