//! Architecture rules that the compiler cannot check: the protocol codecs stay pure.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn protocol_codecs_do_no_io_and_never_import_tokio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty());
    let forbidden = [
        "tokio",
        "std::net",
        "std::fs",
        "std::time::SystemTime",
        "std::thread",
        "Instant::now",
        "rusqlite",
        "rumqttc",
    ];
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "src/protocol must stay pure:\n{}",
        offences.join("\n")
    );
}

/// The part of a source file the product runs: everything before its inline test module.
fn product_code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests").map_or(text, |at| &text[..at])
}

#[test]
fn sessions_and_engines_are_pure_state_machines() {
    // Time comes in as an argument and effects go out as returned actions, so these are tested
    // without a runtime, a socket or a file, and replayed exactly.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![
        src.join("gateway/gbt32960/session.rs"),
        src.join("gateway/jt808/session.rs"),
        src.join("reader/rules.rs"),
        src.join("fusion/engine.rs"),
        src.join("fusion/geo.rs"),
        src.join("fusion/plate.rs"),
        src.join("uplink/window.rs"),
        src.join("link/backoff.rs"),
        // The simulated reader's device model: the simulator's shell does its I/O.
        src.join("sim/reader/device.rs"),
    ];
    rust_files(&src.join("reader/session"), &mut files);
    files.retain(|f| !f.ends_with("tests.rs"));
    let forbidden = [
        "tokio",
        "std::net",
        "std::fs",
        "std::thread",
        "SystemTime::now",
        "Instant::now",
        "rusqlite",
        "rumqttc",
        "warp",
    ];
    let mut offences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (i, line) in product_code(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "sessions must stay pure:\n{}", offences.join("\n"));
}

/// (file relative to src/, line number, line) of every product line under `dir` naming `word`.
fn product_lines_naming(dir: &str, word: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(dir), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in product_code(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(word) {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                found.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_the_command_line_and_the_demo_use_the_simulators_and_the_cli() {
    // The appliance never starts a simulator of its own: sources are injected by the caller.
    let mut offences = Vec::new();
    for word in ["crate::sim", "crate::cli", "crate::demo"] {
        offences.extend(
            product_lines_naming("", word)
                .into_iter()
                .filter(|l| !["sim/", "demo/", "cli.rs", "main.rs"].iter().any(|p| l.starts_with(p))),
        );
    }
    assert!(offences.is_empty(), "imports that point up:\n{}", offences.join("\n"));
}

#[test]
fn the_link_layer_knows_no_protocol_gateway_or_plane() {
    // One connection layer under three protocols: it may use metrics, limits, TLS and time, and
    // nothing that sits on top of it.
    let mut offences = Vec::new();
    for word in [
        "crate::protocol",
        "crate::gateway",
        "crate::reader",
        "crate::command",
        "crate::uplink",
        "crate::store",
        "crate::fusion",
        "crate::web",
        "crate::ops",
        "crate::app",
    ] {
        offences.extend(product_lines_naming("link", word));
    }
    assert!(
        offences.is_empty(),
        "link imports from above it:\n{}",
        offences.join("\n")
    );
}
