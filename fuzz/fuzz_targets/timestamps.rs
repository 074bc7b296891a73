//! The timestamp and syslog-header splitter on arbitrary bytes, with automatic
//! detection and with explicit date patterns: never panics, and the message is a part
//! of the line. (A time in the future is possible when the line says so; the jail
//! takes it as now.)
#![no_main]

use gaoler::filter::{split_line, DatePattern, Framer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("time");
    let framed = split_line(line, now);
    check(line, framed.message);
    for pattern in ["%Y-%m-%d %H:%M:%S", "%d/%b/%Y:%H:%M:%S %z", "epoch"] {
        let framer = Framer {
            pattern: DatePattern::parse(pattern).ok(),
            ..Framer::default()
        };
        let framed = framer.split(line, now);
        check(line, framed.message);
    }
});

fn check(line: &[u8], message: &[u8]) {
    let (start, end) = (line.as_ptr() as usize, line.as_ptr() as usize + line.len());
    let m = message.as_ptr() as usize;
    assert!(message.is_empty() || (m >= start && m + message.len() <= end));
}
