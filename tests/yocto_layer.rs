//! The Yocto layer (yocto/meta-roadedge) against the rest of the repository: the crate list
//! fetches exactly what Cargo.lock locks, the license checksum still matches, every file a recipe
//! or the disk layout names exists, the image's default configuration is valid, the kas file
//! builds this layer, and the development keys script makes keys RAUC accepts. (The layer itself
//! cannot be built here: the upstream layers need the network. scripts/test lints it.)

mod common;
#[path = "common/rauc.rs"]
mod rauc_world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layer() -> PathBuf {
    repo().join("yocto/meta-roadedge")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (name, version) -> checksum of every crates.io package in Cargo.lock.
fn locked_crates() -> BTreeMap<(String, String), String> {
    let lock = read(&repo().join("Cargo.lock"));
    let mut crates = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|rest| rest.strip_suffix('"'))
                    .map(str::to_string)
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            panic!("a Cargo.lock package without name or version: {block}");
        };
        match (field("source"), field("checksum")) {
            (Some(source), Some(checksum)) => {
                assert_eq!(
                    source, "registry+https://github.com/rust-lang/crates.io-index",
                    "{name} {version} comes from elsewhere than crates.io: the recipe cannot fetch it as crate://"
                );
                crates.insert((name, version), checksum);
            }
            (None, None) => assert_eq!(name, "roadedge", "only the workspace crate has no source"),
            _ => panic!("{name} {version}: source and checksum must come together"),
        }
    }
    crates
}

#[test]
fn the_recipe_crate_list_fetches_exactly_the_crates_cargo_lock_locks_with_their_checksums() {
    let locked = locked_crates();
    assert!(locked.len() > 100, "Cargo.lock parsed: {} crates", locked.len());
    let inc = read(&layer().join("recipes-roadedge/roadedge/roadedge-crates.inc"));
    let mut uris = BTreeMap::new();
    let mut sums = BTreeMap::new();
    for line in inc.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("crate://crates.io/") {
            let rest = rest.trim_end_matches('\\').trim();
            let (name, version) = rest.split_once('/').unwrap_or_else(|| panic!("bad crate uri: {line}"));
            assert!(
                uris.insert((name.to_string(), version.to_string()), ()).is_none(),
                "listed twice: {line}"
            );
        } else if let Some(rest) = line.strip_prefix("SRC_URI[") {
            let (key, value) = rest
                .split_once("] = \"")
                .unwrap_or_else(|| panic!("bad checksum line: {line}"));
            let key = key
                .strip_suffix(".sha256sum")
                .unwrap_or_else(|| panic!("not a sha256sum: {line}"));
            let value = value.trim_end_matches('"');
            assert!(
                sums.insert(key.to_string(), value.to_string()).is_none(),
                "twice: {line}"
            );
        }
    }
    let listed: Vec<_> = uris.keys().cloned().collect();
    let expected: Vec<_> = locked.keys().cloned().collect();
    let missing: Vec<_> = expected.iter().filter(|k| !uris.contains_key(*k)).collect();
    let extra: Vec<_> = listed.iter().filter(|k| !locked.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "run scripts/yocto-crates: missing {missing:?}, not locked {extra:?}"
    );
    for ((name, version), checksum) in &locked {
        assert_eq!(
            sums.get(&format!("{name}-{version}")),
            Some(checksum),
            "checksum of {name} {version} (run scripts/yocto-crates)"
        );
    }
    assert_eq!(sums.len(), locked.len(), "no checksum for a crate that is not fetched");
}

#[test]
fn the_license_checksum_of_the_recipe_matches_the_lines_of_cargo_toml_it_names() {
    let recipe = read(&layer().join("recipes-roadedge/roadedge/roadedge_git.bb"));
    let line = recipe
        .lines()
        .find(|l| l.starts_with("LIC_FILES_CHKSUM"))
        .expect("LIC_FILES_CHKSUM");
    let spec = line.split('"').nth(1).unwrap();
    let mut parts = spec.split(';');
    let file = parts.next().unwrap().strip_prefix("file://").unwrap();
    let params: BTreeMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
    let begin: usize = params["beginline"].parse().unwrap();
    let end: usize = params["endline"].parse().unwrap();
    let text = read(&repo().join(file));
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let excerpt = lines[begin - 1..end].concat();
    assert!(excerpt.contains("license = \"Apache-2.0\""), "{excerpt}");
    assert!(recipe.contains("LICENSE = \"Apache-2.0\""));
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(excerpt.as_bytes())?;
            child.wait_with_output()
        })
        .expect("md5sum");
    let md5 = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        md5.split_whitespace().next(),
        Some(params["md5"]),
        "update LIC_FILES_CHKSUM's md5"
    );
}

#[test]
fn every_file_the_layer_names_exists_and_the_default_configuration_is_valid() {
    let recipe_dir = layer().join("recipes-roadedge/roadedge");
    let recipe = read(&recipe_dir.join("roadedge_git.bb"));
    for name in recipe.split("file://").skip(1).map(|r| {
        r.split(|c: char| c.is_whitespace() || c == ';' || c == '"')
            .next()
            .unwrap()
    }) {
        if name == "Cargo.toml" {
            continue;
        }
        assert!(
            recipe_dir.join("files").join(name).is_file(),
            "SRC_URI names a missing file: {name}"
        );
    }
    for path in ["systemd/roadedge.service", "README.md", "config/roadedge.example.yaml"] {
        assert!(recipe.contains(&format!("${{S}}/{path}")), "{path}");
        assert!(repo().join(path).is_file(), "{path}");
    }
    assert!(
        recipe.contains("--no-default-features"),
        "the cabinet build leaves the demo broker out"
    );
    assert!(recipe.contains("CONFFILES:${PN} = \"${sysconfdir}/roadedge/roadedge.yaml\""));

    let default_config = recipe_dir.join("files/roadedge.yaml");
    roadedge::config::Config::load(&default_config, roadedge::config::FileCheck::Skip)
        .unwrap_or_else(|e| panic!("the image's default configuration: {e}"));

    let wks = read(&layer().join("wic/roadedge-ab.wks.in"));
    let grub_cfg = wks
        .split("--configfile=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the disk layout names its GRUB configuration");
    assert!(layer().join("wic").join(grub_cfg).is_file(), "{grub_cfg}");
    // The slots RAUC writes are the partitions the disk layout makes and GRUB boots.
    let system_conf = read(&layer().join("dynamic-layers/rauc/recipes-core/rauc/files/system.conf"));
    let grub = read(&layer().join("wic").join(grub_cfg));
    for (label, bootname) in [("rootfs_a", "A"), ("rootfs_b", "B")] {
        assert!(wks.contains(&format!("--part-name {label}")), "{label} in the wks");
        assert!(
            system_conf.contains(&format!(
                "device=/dev/disk/by-partlabel/{label}\ntype=ext4\nbootname={bootname}"
            )),
            "{label} in system.conf"
        );
        assert!(
            grub.contains(&format!("root=PARTLABEL={label} rootwait rauc.slot={bootname}")),
            "{label} in grub.cfg"
        );
    }
    assert!(system_conf.contains("bootloader=grub") && system_conf.contains("grubenv=/boot/EFI/BOOT/grubenv"));
    let image = read(&layer().join("dynamic-layers/rauc/recipes-core/images/roadedge-image.bb"));
    assert!(image.contains("grubenv;EFI/BOOT/grubenv") && image.contains("WKS_FILE = \"roadedge-ab.wks.in\""));
}

#[test]
fn the_kas_file_builds_this_layer_with_rauc_for_an_arm64_machine() {
    let kas: serde_yaml::Value = serde_yaml::from_str(&read(&repo().join("yocto/kas/roadedge-arm64.yml"))).unwrap();
    assert_eq!(kas["machine"], "genericarm64");
    assert_eq!(kas["distro"], "roadedge");
    assert!(layer().join("conf/distro/roadedge.conf").is_file());
    let targets: Vec<&str> = kas["target"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(targets, ["roadedge-image", "roadedge-bundle"]);
    for recipe in [
        "dynamic-layers/rauc/recipes-core/images/roadedge-image.bb",
        "dynamic-layers/rauc/recipes-core/bundles/roadedge-bundle_1.0.bb",
    ] {
        assert!(layer().join(recipe).is_file(), "{recipe}");
    }
    let own = kas["repos"]["roadedge"]["layers"].as_mapping().unwrap();
    for (path, _) in own {
        let path = path.as_str().unwrap();
        assert!(repo().join(path).join("conf/layer.conf").is_file(), "{path}");
    }
    assert!(kas["repos"]["meta-rauc"]["url"].as_str().unwrap().contains("meta-rauc"));
    let layer_conf = read(&layer().join("conf/layer.conf"));
    let series = layer_conf
        .lines()
        .find_map(|l| l.strip_prefix("LAYERSERIES_COMPAT_roadedge = \""))
        .unwrap();
    for repo_name in ["openembedded-core", "meta-yocto", "meta-rauc"] {
        let branch = kas["repos"][repo_name]["branch"].as_str().unwrap();
        assert!(
            series.contains(branch),
            "{repo_name} on {branch}, the layer supports {series}"
        );
    }
}

#[test]
fn the_development_keys_script_makes_a_keyring_and_signer_that_rauc_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/rauc-dev-keys"))
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exports = String::from_utf8(out.stdout).unwrap();
    let var = |name: &str| {
        exports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{name} in {exports}"))
    };
    let keys = rauc_world::SigningKeys {
        keyring: var("RAUC_KEYRING_FILE"),
        signer: roadedge::sim::pki::CertFiles {
            cert: var("RAUC_CERT_FILE"),
            key: var("RAUC_KEY_FILE"),
        },
    };
    let mut image = b"development image".to_vec();
    image.extend((0..16 * 1024).map(|_| rand::random::<u8>()));
    let bundle = rauc_world::build_bundle(dir.path(), &keys, "roadedge-cabinet-genericarm64", "0.1.0", &image);
    let info = rauc_world::rauc_info(&bundle, &keys.keyring).expect("rauc info verifies the bundle");
    assert_eq!(info["compatible"], "roadedge-cabinet-genericarm64");

    let again = Command::new(repo().join("scripts/rauc-dev-keys"))
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert!(!again.status.success(), "the script does not overwrite existing keys");
}
