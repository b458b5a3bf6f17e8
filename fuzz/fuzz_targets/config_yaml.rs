//! Fuzz target over the YAML configuration (the file at start, `check-config`, `config.set` and
//! the page's config apply all parse through `Config::parse`). Nothing may panic; a text that is
//! refused says why with at least one error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roadedge::config::{Config, FileCheck};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = Config::parse(text, FileCheck::Skip) {
        assert!(!errors.0.is_empty(), "a refused configuration says why");
    }
});
