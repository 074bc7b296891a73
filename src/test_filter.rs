//! `gaoler test-filter`: runs one filter over a log, like fail2ban-regex, and reports
//! hits per regex, matched / ignored / missed lines, and the time taken.

use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::config::DEFAULT_MAX_LINE;
use crate::filter::{Filter, Framer, LogTz, Verdict};

/// One matched line.
#[derive(Serialize, Debug)]
pub struct Match {
    pub line: usize,
    pub host: String,
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Everything `test-filter` found; the JSON shape is stable (see SPEC.md).
#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub lines: usize,
    pub matched: usize,
    pub ignored: usize,
    pub missed: usize,
    pub matches: Vec<Match>,
    pub regex_hits: Vec<usize>,
    pub seconds: f64,
    #[serde(skip)]
    pub missed_lines: Vec<(usize, String)>,
}

/// Runs `filter` over every line of `input`, reading offset-less timestamps in `tz`.
/// Lines longer than the cap are cut.
pub fn run(
    filter: &Filter,
    tz: LogTz,
    input: impl Read,
    keep_missed: bool,
) -> std::io::Result<Report> {
    let framer = Framer {
        tz,
        pattern: filter.datepattern().cloned(),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut report = Report {
        regex_hits: vec![0; filter.failregex_count()],
        ..Report::default()
    };
    let now = Utc::now();
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(DEFAULT_MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n == DEFAULT_MAX_LINE {
            // Cut: skip the rest of this overlong line.
            let mut sink = Vec::new();
            reader.read_until(b'\n', &mut sink)?;
        }
        report.lines += 1;
        let framed = framer.split(&buf, now);
        match filter.examine(framed.message) {
            Verdict::Failure(found) => {
                report.matched += 1;
                report.regex_hits[found.regex] += 1;
                report.matches.push(Match {
                    line: report.lines,
                    host: found.host.to_string(),
                    time: framed
                        .time
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                    user: found.user,
                });
            }
            Verdict::Ignored(_) => report.ignored += 1,
            Verdict::Miss => {
                report.missed += 1;
                if keep_missed {
                    let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                    report.missed_lines.push((report.lines, text));
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The human summary.
pub fn render(report: &Report, filter: &Filter, show_missed: bool) -> String {
    let mut out = format!(
        "Filter {}: {} lines, {} matched, {} ignored, {} missed\n",
        filter.name(),
        report.lines,
        report.matched,
        report.ignored,
        report.missed
    );
    out.push_str("Failregex hits:\n");
    for (i, hits) in report.regex_hits.iter().enumerate() {
        out.push_str(&format!("  #{i}: {hits}\n"));
    }
    let rate = if report.seconds > 0.0 {
        report.lines as f64 / report.seconds
    } else {
        0.0
    };
    out.push_str(&format!(
        "Time: {:.3} s ({:.0} lines/s)\n",
        report.seconds, rate
    ));
    if show_missed && !report.missed_lines.is_empty() {
        out.push_str("Missed lines:\n");
        for (n, line) in &report.missed_lines {
            out.push_str(&format!("  {n}: {line}\n"));
        }
    }
    out
}
