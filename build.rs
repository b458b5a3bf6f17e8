//! Records build information for `roadedge --version`, and gzips the web page's files (served
//! precompressed, so the cabinet spends no CPU compressing them).

use std::io::Write;

/// The page's files, in `src/web/static/`.
const WEB_FILES: [&str; 4] = ["index.html", "app.css", "app.js", "favicon.svg"];

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=ROADEDGE_BUILD_TARGET={target}");
    println!("cargo:rustc-env=ROADEDGE_BUILD_PROFILE={profile}");

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in WEB_FILES {
        let source = format!("src/web/static/{name}");
        println!("cargo:rerun-if-changed={source}");
        let bytes = std::fs::read(&source).unwrap_or_else(|e| panic!("reading {source}: {e}"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip in memory");
        let compressed = gz.finish().expect("gzip in memory");
        std::fs::write(out.join(format!("{name}.gz")), compressed).expect("writing OUT_DIR");
    }
}
