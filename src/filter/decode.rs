//! URL decoding of a message before a filter's regexes see it (`decode = "url"`), so
//! `%2e%2e%2f`, `%252e` (encoded twice) and `%55NION` read as `../` and `UNION`.
//! Bytes that give a log line its structure are never produced: `%22` stays `%22`
//! (a quote would end a field early), as do `%5C` and control bytes, so decoding
//! cannot move an address between the fields the regexes anchor on.

use std::borrow::Cow;

/// Passes over the message: two undo double encoding (`%252e`).
const PASSES: usize = 2;

/// The message with `%XX` escapes decoded (twice), or the message itself when it has none.
pub fn url(message: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'%', message).is_none() {
        return Cow::Borrowed(message);
    }
    let mut text = Cow::Borrowed(message);
    for _ in 0..PASSES {
        match pass(&text) {
            Some(decoded) => text = Cow::Owned(decoded),
            None => break,
        }
    }
    text
}

/// One pass; `None` when nothing was decoded.
fn pass(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                let byte = h << 4 | l;
                if keeps_structure(byte) {
                    out.push(byte);
                    changed = true;
                    i += 3;
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// Whether decoding to `byte` is safe: not a quote, a backslash or a control byte.
fn keeps_structure(byte: u8) -> bool {
    !(byte == b'"' || byte == b'\\' || byte < 0x20 || byte == 0x7f)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        String::from_utf8_lossy(&url(s.as_bytes())).into_owned()
    }

    #[test]
    fn escapes_are_decoded_once_and_twice() {
        assert_eq!(d("/%2e%2E%2f%2e%2e/etc"), "/../../etc");
        assert_eq!(d("/%252e%252e%252fetc"), "/../etc");
        assert_eq!(d("?q=%3Cscript%3E"), "?q=<script>");
        assert_eq!(d("id=1%20%55NION%20select"), "id=1 UNION select");
        assert_eq!(d("no escapes"), "no escapes");
    }

    #[test]
    fn quotes_backslashes_and_control_bytes_stay_encoded() {
        assert_eq!(d("a%22b%5Cc%0Ad%00e%7f"), "a%22b%5Cc%0Ad%00e%7f");
        assert_eq!(d("a%2522b"), "a%22b");
    }

    proptest::proptest! {
        /// Whatever the input, decoding never adds a quote, a backslash or a
        /// control byte, and never makes a line longer.
        #[test]
        fn decoding_never_creates_structure(input in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"%2522aAfF09\\\"x ".to_vec()),
                proptest::num::u8::ANY,
            ],
            0..64,
        )) {
            let out = url(&input);
            let count = |bytes: &[u8], pred: fn(u8) -> bool| bytes.iter().filter(|&&b| pred(b)).count();
            let structural = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f;
            proptest::prop_assert_eq!(count(&out, structural), count(&input, structural));
            proptest::prop_assert!(out.len() <= input.len());
        }
    }

    #[test]
    fn broken_escapes_are_left_alone() {
        assert_eq!(d("100%"), "100%");
        assert_eq!(d("%4"), "%4");
        assert_eq!(d("%zz%4g"), "%zz%4g");
        assert_eq!(d("%%41"), "%A");
    }
}
