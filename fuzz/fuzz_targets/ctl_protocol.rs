//! The ctl request decoder on arbitrary bytes: never panics; what it accepts encodes
//! back to the same request.
#![no_main]

use gaoler::ipc::{decode_request, RequestFrame, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(request) = decode_request(line) {
        let again = serde_json::to_vec(&RequestFrame {
            v: PROTOCOL_VERSION,
            request: request.clone(),
        })
        .expect("encodes");
        assert_eq!(decode_request(&again), Ok(request));
    }
});
