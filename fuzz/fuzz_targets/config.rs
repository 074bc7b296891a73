//! The config loader on arbitrary gaoler.toml and jail files: never panics; either a
//! configuration or errors that each name a file, line and column.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("jails")).expect("jails");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    // The first half is gaoler.toml, the rest one jail file.
    let cut = data.len() / 2;
    let d = dir().path();
    std::fs::write(d.join("gaoler.toml"), &data[..cut]).expect("write");
    std::fs::write(d.join("jails/fuzz.toml"), &data[cut..]).expect("write");
    if let Err(errors) = gaoler::config::load(d) {
        for e in &errors.0 {
            let text = e.to_string();
            assert!(text.contains(".toml"), "{text}");
        }
    }
});
