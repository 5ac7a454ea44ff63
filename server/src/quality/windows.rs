//! Time windows: `30m`, `1h`, `24h`, `7d` … parsed into milliseconds, and the bounds of a window
//! that ends at a given instant. Pure.
//!
//! A window of length `w` ending at `end` holds the predictions whose timestamp `t` satisfies
//! `end - w < t <= end`.

use std::fmt;

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// The shortest window a quality query or monitor may use.
pub const MIN_WINDOW_MS: i64 = MINUTE_MS;
/// The longest window a quality query or monitor may use.
pub const MAX_WINDOW_MS: i64 = 365 * DAY_MS;

/// Why a window or duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "Invalid window '{0}': use a whole number followed by s, m, h, d or w (for example 30m, 1h, 24h, 7d)"
    )]
    Syntax(String),
    #[error("Invalid window '{0}': windows must be between 1m and 365d")]
    OutOfRange(String),
}

impl WindowError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "syntax",
            Self::OutOfRange(_) => "out_of_range",
        }
    }
}

/// A parsed window: its length, and the spelling it was given in (normalised: no spaces, no
/// leading zeros, lower-case unit), which is what responses and metric labels show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    millis: i64,
    label: String,
}

impl Window {
    /// Parse a window such as `30m`, `1h`, `24h`, `7d` (1m ≤ window ≤ 365d).
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let (millis, label) = parse_duration(text).ok_or_else(|| WindowError::Syntax(text.to_owned()))?;
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&millis) {
            return Err(WindowError::OutOfRange(text.to_owned()));
        }
        Ok(Self { millis, label })
    }

    pub fn millis(&self) -> i64 {
        self.millis
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `(start, end)` of the window ending at `end`: it holds timestamps `t` with
    /// `start < t <= end`.
    pub fn bounds(&self, end: i64) -> (i64, i64) {
        (end.saturating_sub(self.millis), end)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Parse `<whole number><unit>` (units `s`, `m`, `h`, `d`, `w`) into milliseconds and the
/// normalised spelling. `None` on bad syntax or overflow.
pub fn parse_duration(text: &str) -> Option<(i64, String)> {
    let trimmed = text.trim();
    let unit_at = trimmed.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = trimmed.split_at(unit_at);
    if digits.is_empty() {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let scale = match unit.as_str() {
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => WEEK_MS,
        _ => return None,
    };
    let millis = n.checked_mul(scale)?;
    Some((millis, format!("{n}{unit}")))
}

/// A retention age: `0` (keep forever) or a duration like `30d`. Returns milliseconds, `None`
/// for "forever".
pub fn parse_retention(text: &str) -> Result<Option<i64>, String> {
    if text.trim() == "0" {
        return Ok(None);
    }
    match parse_duration(text) {
        Some((ms, _)) if ms >= MINUTE_MS => Ok(Some(ms)),
        Some(_) => Err(format!("retention age '{text}' is shorter than one minute")),
        None => Err(format!(
            "retention age '{text}' is not a duration such as 12h, 30d or 0 (keep forever)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_windows() {
        let cases = [
            ("30m", 30 * MINUTE_MS, "30m"),
            ("1h", HOUR_MS, "1h"),
            ("24h", 24 * HOUR_MS, "24h"),
            ("7d", 7 * DAY_MS, "7d"),
            ("2w", 14 * DAY_MS, "2w"),
            ("90s", 90 * SECOND_MS, "90s"),
            (" 01H ", HOUR_MS, "1h"),
            ("365d", MAX_WINDOW_MS, "365d"),
        ];
        for (text, millis, label) in cases {
            let w = Window::parse(text).unwrap();
            assert_eq!((w.millis(), w.label()), (millis, label), "{text}");
        }
    }

    #[test]
    fn refuses_bad_windows() {
        for text in [
            "",
            "h",
            "1",
            "1x",
            "-1h",
            "1.5h",
            "1h30m",
            "abc",
            "99999999999999999999d",
        ] {
            assert!(
                matches!(Window::parse(text), Err(WindowError::Syntax(_))),
                "{text:?} should be a syntax error"
            );
        }
        for text in ["0m", "59s", "366d", "53w"] {
            assert!(
                matches!(Window::parse(text), Err(WindowError::OutOfRange(_))),
                "{text:?} should be out of range"
            );
        }
    }

    #[test]
    fn bounds_end_at_the_given_instant() {
        let w = Window::parse("1h").unwrap();
        assert_eq!(w.bounds(10 * HOUR_MS), (9 * HOUR_MS, 10 * HOUR_MS));
        assert_eq!(w.bounds(0), (-HOUR_MS, 0));
    }

    #[test]
    fn retention_ages() {
        assert_eq!(parse_retention("0"), Ok(None));
        assert_eq!(parse_retention("30d"), Ok(Some(30 * DAY_MS)));
        assert!(parse_retention("10s").is_err());
        assert!(parse_retention("soon").is_err());
    }
}
