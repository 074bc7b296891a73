//! `gaoler test-filter`: runs one filter over a log, like fail2ban-regex, and reports
//! hits per regex, matched / ignored / missed lines, and the time taken.

use std::io::Read;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::config::DEFAULT_MAX_LINE;
use crate::filter::{Filter, Framer, LogTz, Sessions, TrustedProxies, Verdict};

/// Matches shown in the human summary.
const SAMPLE: usize = 10;

/// One matched line.
#[derive(Serialize, Debug)]
pub struct Match {
    pub line: usize,
    pub host: String,
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The trusted proxy the line was logged for, when `host` came from its
    /// X-Forwarded-For.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Failures this line settles when more than one: a session's held or waiting
    /// failures counted at this line.
    #[serde(skip_serializing_if = "is_one")]
    pub failures: u32,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Everything `test-filter` found; the JSON shape is stable (see the README).
#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub lines: usize,
    pub matched: usize,
    pub ignored: usize,
    pub missed: usize,
    /// Lines a filter with sessions matched that settled no failure themselves
    /// (an address noted, a failure held or waiting for an address, a success, an end).
    #[serde(skip_serializing_if = "is_zero")]
    pub in_sessions: usize,
    /// Failures that name no client (logged for a trusted proxy, or with
    /// `trusted_proxies_only`, without one in X-Forwarded-For): never counted.
    pub no_client: usize,
    /// Lines a look-around regex gave up on at its backtracking limit: skipped.
    #[serde(skip_serializing_if = "is_zero")]
    pub over_limit: usize,
    /// Lines longer than the cap (64 KiB): never matched, since what is left of
    /// them may carry a forged address where the server's was cut off.
    pub cut: usize,
    /// Every match with `all_matches`, else the first few.
    pub matches: Vec<Match>,
    pub regex_hits: Vec<usize>,
    /// Failures counted: a line of a session filter may settle several (or none).
    pub failures: u64,
    pub seconds: f64,
    #[serde(skip)]
    pub missed_lines: Vec<(usize, String)>,
}

/// What to collect besides the counts, and the jail's trusted proxies.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Record every match (for `--json`); otherwise only the first few.
    pub all_matches: bool,
    /// Record the lines no failregex matched (`--show-missed`).
    pub missed: bool,
    /// Peers whose failures belong to the client in X-Forwarded-For.
    pub proxies: TrustedProxies,
}

/// Runs `filter` over every line of `input`, reading offset-less timestamps in `tz`.
/// Lines longer than the cap are counted as `cut` and never matched, as the daemon
/// does.
pub fn run(
    filter: &Filter,
    tz: LogTz,
    mut input: impl Read,
    opts: &Options,
) -> std::io::Result<Report> {
    let mut scan = Scan::new(filter, tz, opts);
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut skipping = false;
    loop {
        let n = input.read(&mut buf[filled..])?;
        let eof = n == 0;
        filled += n;
        let mut from = 0;
        while let Some(pos) = memchr::memchr(b'\n', &buf[from..filled]) {
            let line = &buf[from..from + pos];
            from += pos + 1;
            if std::mem::take(&mut skipping) {
                continue; // the rest of a cut line, counted already
            }
            scan.line(line);
        }
        if eof {
            if from < filled && !skipping {
                scan.line(&buf[from..filled]);
            }
            break;
        }
        // Keep the partial line; cut it when it outgrows the cap.
        buf.copy_within(from..filled, 0);
        filled -= from;
        if filled > DEFAULT_MAX_LINE {
            if !skipping {
                scan.report.cut_line();
            }
            filled = 0;
            skipping = true;
        }
    }
    Ok(scan.finish())
}

/// [`run`] over a file. A regular file is read through a memory map (as ripgrep
/// does): no copy of each page into a buffer. Like ripgrep, the process may then be
/// stopped by SIGBUS if the file is truncated while it is read; anything else is
/// read as a stream.
pub fn run_file(
    filter: &Filter,
    tz: LogTz,
    file: std::fs::File,
    opts: &Options,
) -> std::io::Result<Report> {
    if !file.metadata()?.is_file() {
        return run(filter, tz, file, opts);
    }
    // SAFETY: the map is only read, and lives only in this call. Another process
    // truncating the file meanwhile is the documented risk above.
    let map = match unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
        Ok(map) => map,
        Err(_) => return run(filter, tz, file, opts),
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    let mut scan = Scan::new(filter, tz, opts);
    let mut rest: &[u8] = &map;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(pos) => (&rest[..pos], &rest[pos + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        scan.line(line);
        rest = next;
    }
    Ok(scan.finish())
}

/// One pass of a filter over lines, and what it found.
struct Scan<'a> {
    filter: &'a Filter,
    framer: Framer,
    opts: &'a Options,
    now: chrono::DateTime<Utc>,
    sessions: Option<Sessions>,
    report: Report,
    start: Instant,
}

impl<'a> Scan<'a> {
    fn new(filter: &'a Filter, tz: LogTz, opts: &'a Options) -> Scan<'a> {
        Scan {
            filter,
            framer: Framer {
                tz,
                pattern: filter.datepattern().cloned(),
            },
            opts,
            now: Utc::now(),
            sessions: filter.session().map(|spec| spec.sessions()),
            report: Report {
                regex_hits: vec![0; filter.failregex_count()],
                ..Report::default()
            },
            start: Instant::now(),
        }
    }

    /// One line (without its newline); over the cap it is counted as cut.
    fn line(&mut self, line: &[u8]) {
        if line.len() > DEFAULT_MAX_LINE {
            self.report.cut_line();
            return;
        }
        examine(
            self.filter,
            &self.framer,
            line,
            self.now,
            self.opts,
            &mut self.sessions,
            &mut self.report,
        );
    }

    fn finish(mut self) -> Report {
        self.report.seconds = self.start.elapsed().as_secs_f64();
        self.report
    }
}

impl Report {
    fn cut_line(&mut self) {
        self.lines += 1;
        self.cut += 1;
    }
}

fn examine(
    filter: &Filter,
    framer: &Framer,
    line: &[u8],
    now: chrono::DateTime<Utc>,
    opts: &Options,
    sessions: &mut Option<Sessions>,
    report: &mut Report,
) {
    report.lines += 1;
    let framed = framer.split(line, now);
    let at = framed.time.unwrap_or(now);
    let verdict = match (filter.session(), sessions.as_ref()) {
        (Some(spec), Some(open)) => {
            let mut is_open = || open.is_open(spec.key(line, framed.process), at);
            filter.examine_for_session(framed.message, &opts.proxies, &mut is_open)
        }
        _ => filter.examine_behind(framed.message, &opts.proxies, false),
    };
    let (found, count) = match verdict {
        Verdict::Failure(found) => ((found.host, found.regex, found.via), 1),
        Verdict::Mark(mark) => {
            report.regex_hits[mark.regex] += 1;
            let spec = filter.session();
            let settled = match (spec, sessions.as_mut()) {
                (Some(spec), Some(open)) => {
                    let key = spec.key(line, framed.process);
                    open.observe(key, &mark, at)
                }
                _ => None,
            };
            match settled {
                Some(s) => ((s.host, mark.regex, mark.via), s.count),
                None => return report.in_sessions += 1,
            }
        }
        Verdict::Ignored(_) => return report.ignored += 1,
        Verdict::NoClient(_) => return report.no_client += 1,
        Verdict::Limited => return report.over_limit += 1,
        Verdict::Miss => {
            report.missed += 1;
            if opts.missed {
                let text = String::from_utf8_lossy(line).trim_end().to_string();
                report.missed_lines.push((report.lines, text));
            }
            return;
        }
    };
    let (host, regex, via) = found;
    report.matched += 1;
    report.failures += u64::from(count);
    if count == 1 && filter.session().is_none() {
        report.regex_hits[regex] += 1;
    }
    if opts.all_matches || report.matches.len() < SAMPLE {
        let user = match filter.examine_behind(framed.message, &opts.proxies, true) {
            Verdict::Failure(f) => f.user,
            Verdict::Mark(m) => m.user,
            _ => None,
        };
        report.matches.push(Match {
            line: report.lines,
            host: host.to_string(),
            time: framed
                .time
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            user,
            via: via.map(|ip| ip.to_string()),
            failures: count,
        });
    }
}

/// The human summary.
pub fn render(report: &Report, filter: &Filter) -> String {
    let mut out = format!(
        "Filter {}: {} lines, {} matched, {} ignored, {} missed\n",
        filter.name(),
        report.lines,
        report.matched,
        report.ignored,
        report.missed
    );
    if report.in_sessions > 0 {
        out.push_str(&format!(
            "  {} lines belong to sessions without settling a failure themselves ({} failures counted in all)\n",
            report.in_sessions, report.failures
        ));
    }
    if report.cut > 0 {
        out.push_str(&format!(
            "  {} lines longer than 64 KiB were cut and not matched\n",
            report.cut
        ));
    }
    if report.over_limit > 0 {
        out.push_str(&format!(
            "  {} lines made a look-around regex give up at its backtracking limit: skipped\n",
            report.over_limit
        ));
    }
    if report.no_client > 0 {
        out.push_str(&format!(
            "  {} matched lines name no client (logged for a trusted proxy, or with trusted_proxies_only, without a client in X-Forwarded-For): not counted\n",
            report.no_client
        ));
    }
    out.push_str("Failregex hits:\n");
    for (i, hits) in report.regex_hits.iter().enumerate() {
        out.push_str(&format!("  #{i}: {hits}\n"));
    }
    if !report.matches.is_empty() {
        out.push_str(&format!("First matches (of {}):\n", report.matched));
        for m in &report.matches {
            let user = m
                .user
                .as_deref()
                .map(|u| format!(" user={u}"))
                .unwrap_or_default();
            let time = m.time.as_deref().unwrap_or("no time");
            let via = m
                .via
                .as_deref()
                .map(|p| format!(" (via proxy {p})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  line {}: {} at {time}{user}{via}\n",
                m.line, m.host
            ));
        }
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
    if !report.missed_lines.is_empty() {
        out.push_str("Missed lines:\n");
        for (n, line) in &report.missed_lines {
            out.push_str(&format!("  {n}: {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sshd_like() -> Filter {
        Filter::new(
            "t",
            &[r"^Failed for <USER> from <HOST>$".to_string()],
            &[],
            None,
        )
        .expect("filter")
    }

    #[test]
    fn counts_every_line_and_cuts_overlong_ones() {
        let mut input = b"Nov 21 08:13:46 h a[1]: Failed for root from 192.0.2.7\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * DEFAULT_MAX_LINE));
        input.extend(b"\nnothing\nFailed for bob from 2001:db8::1");
        let opts = Options {
            all_matches: true,
            missed: true,
            ..Options::default()
        };
        let r = run(&sshd_like(), LogTz::Local, &input[..], &opts).expect("run");
        assert_eq!((r.lines, r.matched, r.missed, r.cut), (4, 2, 1, 1));
        assert_eq!(r.matches[0].user.as_deref(), Some("root"));
        assert_eq!(r.matches[1].host, "2001:db8::1");
        assert!(r.matches[0].time.is_some() && r.matches[1].time.is_none());
        assert_eq!(r.missed_lines[0].1, "nothing");
    }

    #[test]
    fn a_cut_line_never_yields_the_forged_address_at_its_end() {
        // A user name padded so that a forged tail ends right at the cap, and the
        // server's own ` from <real> port` is cut off; in one read and across reads.
        let forged = " from 203.0.113.66";
        let head = "Failed for ";
        let pad = DEFAULT_MAX_LINE - head.len() - forged.len();
        let line = format!("{head}{}{forged} from 192.0.2.7\n", "u".repeat(pad));
        let whole = &line[..DEFAULT_MAX_LINE];
        assert!(
            matches!(sshd_like().examine(whole.as_bytes()), Verdict::Failure(_)),
            "the head alone would match the forged address"
        );
        let r = run(
            &sshd_like(),
            LogTz::Local,
            line.as_bytes(),
            &Options::default(),
        )
        .expect("run");
        assert_eq!((r.lines, r.matched, r.cut), (1, 0, 1));
        // Read a few bytes at a time, the cut happens while the line is incomplete.
        let r = run(
            &sshd_like(),
            LogTz::Local,
            Trickle(line.as_bytes()),
            &Options::default(),
        )
        .expect("run");
        assert_eq!((r.lines, r.matched, r.cut), (1, 0, 1));
    }

    #[test]
    fn a_mapped_file_reads_like_a_stream() {
        // Cut lines, a last line without its newline, and a line the probe answers.
        let mut input = b"Nov 21 08:13:46 h a[1]: Failed for root from 192.0.2.7\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * DEFAULT_MAX_LINE));
        input.extend(b"\nnothing\n\n");
        input.extend(std::iter::repeat_n(b'y', DEFAULT_MAX_LINE + 1));
        input.extend(b"\nFailed for bob from 2001:db8::1");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        std::fs::write(&path, &input).expect("write");
        let opts = Options {
            all_matches: true,
            missed: true,
            ..Options::default()
        };
        let f = sshd_like();
        let streamed = run(&f, LogTz::Local, &input[..], &opts).expect("run");
        let file = std::fs::File::open(&path).expect("open");
        let mapped = run_file(&f, LogTz::Local, file, &opts).expect("run_file");
        let key = |r: &Report| {
            let hosts: Vec<String> = r.matches.iter().map(|m| m.host.clone()).collect();
            (
                r.lines,
                r.matched,
                r.missed,
                r.cut,
                hosts,
                r.missed_lines.clone(),
            )
        };
        assert_eq!(key(&mapped), key(&streamed));
        assert_eq!((mapped.lines, mapped.matched, mapped.cut), (6, 2, 2));
    }

    /// A reader that hands out 4,096 bytes at a time.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(4096).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_summary_keeps_only_a_sample_of_matches() {
        let input = "Failed for a from 192.0.2.7\n".repeat(50);
        let r = run(
            &sshd_like(),
            LogTz::Local,
            input.as_bytes(),
            &Options::default(),
        )
        .expect("run");
        assert_eq!(r.matched, 50);
        assert_eq!(r.matches.len(), SAMPLE);
        assert!(render(&r, &sshd_like()).contains("First matches (of 50)"));
    }
}
