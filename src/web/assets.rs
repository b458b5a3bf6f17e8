//! The page's files, embedded in the binary (nothing is fetched at run time, nothing read from
//! disk): hand-written HTML, CSS and JavaScript in `src/web/static/`, gzipped at build time by
//! `build.rs` and served as they are to browsers that accept gzip. Each file has an ETag so a
//! reload costs a 304.
//!
//! Owns: the table of files. Must not: serve anything not in the table (no file-system paths).

use std::sync::OnceLock;

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub raw: &'static [u8],
    pub gzip: &'static [u8],
}

impl Asset {
    /// A strong ETag of the content.
    pub fn etag(&self) -> &'static str {
        static TAGS: OnceLock<Vec<String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{:016x}\"", fnv1a(a.raw))).collect());
        ASSETS
            .iter()
            .position(|a| a.path == self.path)
            .and_then(|i| tags.get(i))
            .map(String::as_str)
            .unwrap_or("\"0\"")
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            raw: include_bytes!(concat!("static/", $file)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".gz")),
        }
    };
}

/// Every file the page consists of.
pub static ASSETS: [Asset; 4] = [
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// The file served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// Bytes a first visit transfers (gzipped files), for the benchmark figures.
pub fn total_gzip_bytes() -> usize {
    ASSETS.iter().map(|a| a.gzip.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_embedded_files_are_found_and_each_has_its_own_etag() {
        assert!(find("/").is_some());
        assert!(find("/index.html").is_some());
        assert!(find("/app.js").is_some());
        for bad in [
            "/../Cargo.toml",
            "/static/app.js",
            "/app.js/",
            "//etc/passwd",
            "/src/web/static/app.js",
        ] {
            assert!(find(bad).is_none(), "{bad}");
        }
        let tags: std::collections::HashSet<_> = ASSETS.iter().map(Asset::etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }

    #[test]
    fn the_gzipped_files_are_smaller_than_the_originals() {
        for a in &ASSETS {
            assert!(a.gzip.len() < a.raw.len() || a.raw.len() < 200, "{}", a.path);
            assert_eq!(&a.gzip[..2], &[0x1f, 0x8b], "{} is gzip", a.path);
        }
    }
}
