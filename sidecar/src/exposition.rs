//! The Prometheus text format both binaries serve: prometheus-client writes OpenMetrics, while
//! node-exporter-style scrapers and `promtool check metrics` expect the classic 0.0.4 text.

use std::fmt::Write as _;

/// OpenMetrics (what prometheus-client writes) to Prometheus' classic text format (what
/// node-exporter serves and `promtool check metrics` checks): counter families are named like their
/// `_total` samples, and there is no `# EOF` nor `# UNIT`. Families without samples (GPU series on a
/// node without GPUs) are left out entirely.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let sampled: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            Some((prefix, name, rest))
        });
        match meta {
            Some((prefix, name, rest)) if counters.contains(&name) => {
                let total = format!("{name}_total");
                if sampled.contains(total.as_str()) {
                    let _ = writeln!(out, "{prefix}{total} {rest}");
                }
            }
            Some((_, name, _)) if !has_samples(&sampled, name) => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Whether a family has any sample: its own name, or a histogram/summary/info suffix of it.
fn has_samples(sampled: &std::collections::HashSet<&str>, family: &str) -> bool {
    sampled.contains(family)
        || ["_bucket", "_sum", "_count", "_info", "_created"]
            .iter()
            .any(|suffix| sampled.contains(format!("{family}{suffix}").as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_renamed_empty_families_dropped_histograms_kept() {
        let om = "# HELP c Requests.\n# TYPE c counter\nc_total 3\n\
                  # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0.5\nh_count 1\n\
                  # HELP g Absent.\n# TYPE g gauge\n# UNIT g seconds\n# EOF\n";
        let text = to_prometheus_text(om);
        assert!(
            text.contains("# HELP c_total Requests.\n# TYPE c_total counter\nc_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE h histogram\nh_bucket"), "{text}");
        assert!(
            !text.contains("# TYPE g") && !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
