//! The management page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by `scripts/test`), driven over WebDriver: log in with the keyboard, watch the
//! dashboard's charts take new points, add and start a select rule on a simulated reader and see
//! its reports arrive, send a vehicle a command and see the answer, provision and remove a JT/T 808
//! terminal, add a vehicle to the identity
//! registry, read the live log, upload a signed update and see its progress and the result, log
//! out; and on the Configuration page: an error marked at its line, fixed, applied, confirmed
//! within the countdown, and a change that loses the uplink reverted by itself.
//! A screenshot of every page is saved to `target/screenshots/` (not committed) at 1366x768.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::World;
use fantoccini::{Client, ClientBuilder, Locator};
use roadedge::protocol::gbt37987::Dialect;
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "cabinet-42";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    let binary = chromedriver().expect("chromedriver is not installed (scripts/test installs chromium-driver)");
    let port = common::free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1366,768",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = tokio::time::timeout(
        LIMIT,
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("a WebDriver session within the limit")
    .expect("a WebDriver session");
    (driver, client)
}

fn shots_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    // Let charts and live tables settle.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let png = tokio::time::timeout(LIMIT, c.screenshot()).await.unwrap().unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the script returns true.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = tokio::time::timeout(LIMIT, c.execute(script, vec![])).await.unwrap();
        if v.ok().and_then(|v| v.as_bool()) == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(c: &Client, css: &str) {
    let el = tokio::time::timeout(LIMIT, c.wait().at_most(LIMIT).for_element(Locator::Css(css)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.click().await.unwrap();
}

async fn go(c: &Client, url: &str) {
    tokio::time::timeout(LIMIT, c.goto(url)).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_technician_logs_in_watches_the_dashboard_starts_a_rule_commands_a_vehicle_and_logs_out() {
    roadedge::ops::logging::init("info,rumqttc=warn");
    let (dir, pki, broker, _cloud) = World::start("browser").await.into_parts();
    let stop = CancellationToken::new();
    let mut options = SimReaderOptions::new(
        *b"BROWSER1",
        Dialect::Gbt37987_2019,
        SimMode::Listen("127.0.0.1:0".parse().unwrap()),
    );
    options.report_interval = Duration::from_millis(400);
    let reader = SimReader::spawn(options, stop.clone()).await.unwrap();
    let jt808_port = common::free_port();
    let config = common::write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    // OTA: a release key, and an update file signed with it (this build, so not newer: the page
    // shows the upload's progress and the appliance's refusal).
    let signing = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let ota_key = dir.path().join("ota.pub");
    {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
        use ed25519_dalek::Signer;
        use sha2::Digest;
        std::fs::write(
            &ota_key,
            signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let update = dir.path().join("roadedge-update.bin");
        std::fs::copy(env!("CARGO_BIN_EXE_roadedge"), &update).unwrap();
        let digest = sha2::Sha256::digest(std::fs::read(&update).unwrap());
        std::fs::write(
            dir.path().join("roadedge-update.bin.sig"),
            signing.sign(&digest).to_bytes(),
        )
        .unwrap();
    }
    let mut text = std::fs::read_to_string(&config).unwrap().replace(
        "edge: {id: cab-1}",
        "edge: {id: cab-1, site: {name: G15 K123+400, latitude: 31.2304, longitude: 121.4737}}",
    );
    text.push_str("fusion: {window: 1s, merge_window: 500ms}\n");
    text.push_str(&format!(
        "jt808: {{listen: '127.0.0.1:{jt808_port}'}}\nreaders:\n  keepalive_interval: 1s\n  devices:\n    - {{id: gantry-north, tcp: '{}'}}\n\
         web:\n  listen: 127.0.0.1:0\n  users: [{{name: admin, role: admin, password_hash: '{}'}}]\n\
         ota: {{public_key_file: {}, binary_path: {}, installer: binary}}\n",
        reader.local_addr.unwrap(),
        roadedge::web::auth::hash_password(PASSWORD).unwrap(),
        ota_key.display(),
        dir.path().join("bin/roadedge").display(),
    ));
    std::fs::write(&config, text).unwrap();
    let app = common::start_appliance(&config).await;
    let url = format!("http://{}/", app.web.unwrap());
    tokio::spawn(roadedge::sim::jt808::run(
        roadedge::sim::jt808::SimOptions {
            server: format!("127.0.0.1:{jt808_port}"),
            terminals: 2,
            rate: 2.0,
            ..Default::default()
        },
        Arc::new(roadedge::sim::jt808::SimStats::default()),
        stop.clone(),
    ));

    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;

    // Log in with the keyboard only: type, Enter.
    go(&c, &url).await;
    until(&c, "the login form", "return !!document.querySelector('#login-pass')").await;
    screenshot(&c, "01-login").await;
    let pass = c.find(Locator::Css("#login-pass")).await.unwrap();
    pass.send_keys("wrong-password\u{E007}").await.unwrap();
    until(&c, "the login error", "return !!document.querySelector('.notice.bad')").await;
    let error = c.find(Locator::Css(".notice.bad")).await.unwrap().text().await.unwrap();
    assert!(
        error.contains("Wrong user name or password") && error.contains("What to do"),
        "{error}"
    );
    screenshot(&c, "02-login-failed").await;
    let pass = c.find(Locator::Css("#login-pass")).await.unwrap();
    pass.clear().await.unwrap();
    pass.send_keys(&format!("{PASSWORD}\u{E007}")).await.unwrap();

    // Dashboard: live tiles and charts that take new points.
    until(
        &c,
        "the dashboard with the uplink connected",
        "const t = document.querySelector('#tile-uplink .value'); return !!t && t.textContent === 'Connected'",
    )
    .await;
    until(&c, "the chart history", "return !!(S.history && S.history.t)").await;
    let first: u64 = c
        .execute("return S.history.t.length", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    until(
        &c,
        "a new chart point from the live stream",
        &format!("return S.history.t.length > {first}"),
    )
    .await;
    screenshot(&c, "03-dashboard").await;
    // A reload keeps the charts' hour (the appliance keeps it).
    c.refresh().await.unwrap();
    until(
        &c,
        "the charts after a reload",
        &format!("return !!(S.history && S.history.t && S.history.t.length > {first})"),
    )
    .await;

    // Readers: the list, then the reader; add rule 10 and start it; its reports arrive.
    click(&c, "nav a[data-view=readers]").await;
    until(
        &c,
        "the reader list",
        "return document.body.innerText.includes('gantry-north')",
    )
    .await;
    screenshot(&c, "04-readers").await;
    go(&c, &format!("{url}#/readers/gantry-north")).await;
    until(&c, "the reader page", "return !!document.querySelector('#rule-add')").await;
    let id = c.find(Locator::Css("#rule-id")).await.unwrap();
    id.clear().await.unwrap();
    id.send_keys("10").await.unwrap();
    let antennas = c.find(Locator::Css("#rule-antennas")).await.unwrap();
    antennas.clear().await.unwrap();
    antennas.send_keys("1").await.unwrap();
    click(&c, "#rule-add").await;
    until(
        &c,
        "rule 10 active in the table",
        "const r = document.querySelector('#rules tr[data-rule=\"10\"]'); return !!r && r.innerText.includes('active')",
    )
    .await;
    until(
        &c,
        "tag reports of rule 10",
        "return [...document.querySelectorAll('#tags tbody tr')].some(r => r.lastChild.textContent === '10')",
    )
    .await;
    assert_eq!(
        reader.select_specs().get(&10),
        Some(&roadedge::reader::rules::SpecState::Active)
    );
    screenshot(&c, "05-reader").await;
    // The reset asks first; Cancel leaves the reader alone.
    click(&c, "#reader-reset").await;
    until(
        &c,
        "the confirmation",
        "return !!document.querySelector('dialog[open]')",
    )
    .await;
    screenshot(&c, "06-reader-reset-confirm").await;
    click(&c, "dialog[open] button").await;
    assert_eq!(reader.resets(), 0);

    // Vehicles: a terminal's last data; send it a location query and see the answer.
    click(&c, "nav a[data-view=vehicles]").await;
    until(
        &c,
        "an online terminal",
        "return [...document.querySelectorAll('button')].some(b => b.textContent.startsWith('Command'))",
    )
    .await;
    c.execute(
        "[...document.querySelectorAll('button')].find(b => b.textContent.startsWith('Command')).click()",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "#cmd-send").await;
    until(
        &c,
        "the command's answer",
        "const j = document.querySelector('#vehicle-command .job'); return !!j && j.innerText.includes('done')",
    )
    .await;
    screenshot(&c, "07-vehicles").await;

    // Vehicles, JT/T 808 provisioning: a bad phone is refused with the reason; a terminal is
    // added with its plate and colour, listed, and removed after a confirmation.
    until(
        &c,
        "the provisioning form",
        "return !!document.querySelector('#prov-phone')",
    )
    .await;
    c.find(Locator::Css("#prov-phone"))
        .await
        .unwrap()
        .send_keys("1390000x")
        .await
        .unwrap();
    click(&c, "#prov-add").await;
    until(
        &c,
        "the phone's error",
        "const f = document.querySelector('#prov-form'); return !!f && f.innerText.includes('1 to 20 digits')",
    )
    .await;
    c.execute("document.querySelector('#prov-phone').value = ''", vec![])
        .await
        .unwrap();
    c.find(Locator::Css("#prov-phone"))
        .await
        .unwrap()
        .send_keys("13900000071")
        .await
        .unwrap();
    c.find(Locator::Css("#prov-plate"))
        .await
        .unwrap()
        .send_keys("沪A00071")
        .await
        .unwrap();
    c.execute("document.querySelector('#prov-color').value = '2'", vec![])
        .await
        .unwrap();
    click(&c, "#prov-add").await;
    until(
        &c,
        "the provisioned terminal in the list",
        "const t = document.querySelector('#jt808-provisioned'); return !!t && t.innerText.includes('013900000071') && t.innerText.includes('yellow')",
    )
    .await;
    c.execute("document.querySelector('#jt808-provisioning').scrollIntoView()", vec![])
        .await
        .unwrap();
    screenshot(&c, "07b-jt808-provisioning").await;
    c.execute(
        "[...document.querySelectorAll('#jt808-provisioned button')].find(b => b.textContent === 'Remove').click()",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "dialog button.danger").await;
    until(
        &c,
        "the terminal gone from the list",
        "const p = document.querySelector('#jt808-provisioning'); return !!p && p.innerText.includes('No terminal is provisioned')",
    )
    .await;

    // Registry: add a vehicle by hand and find it.
    click(&c, "nav a[data-view=registry]").await;
    until(&c, "the registry form", "return !!document.querySelector('#reg-plate')").await;
    c.find(Locator::Css("#reg-plate"))
        .await
        .unwrap()
        .send_keys("京A12345")
        .await
        .unwrap();
    c.find(Locator::Css("#reg-vin"))
        .await
        .unwrap()
        .send_keys("LVIN0000000000001")
        .await
        .unwrap();
    click(&c, "#reg-save").await;
    until(
        &c,
        "the vehicle in the registry table",
        "const t = document.querySelector('#registry'); return !!t && t.innerText.includes('LVIN0000000000001')",
    )
    .await;
    screenshot(&c, "08-registry").await;

    // Passages: a committed tag report of a registered plate becomes a passage; filter by it.
    let report = serde_json::json!({"msg": "TagSelectAccessReport", "code": 500, "seq": 1, "body": {"tags": [
        {"tid": "e2805b0000000001", "antenna": 2, "rssi": -38, "first_seen": roadedge::time::now_rfc3339(), "seen_count": 3,
         "tag_data": {"raw": {"FPDH": "0100", "HPHMXH": "001b1c1d1e1f", "HPZL": "02"}}}]}});
    app.store
        .append(roadedge::store::Record::new(
            "gbt37987/gantry-north",
            "gbt37987/gantry-north/up/report",
            roadedge::store::RecordClass::Telemetry,
            &report,
        ))
        .await
        .unwrap();
    click(&c, "nav a[data-view=passages]").await;
    until(
        &c,
        "the passage in the passages table",
        "const t = document.querySelector('#passages'); return !!t && t.innerText.includes('e2805b0000000001')",
    )
    .await;
    c.find(Locator::Css("#pass-search"))
        .await
        .unwrap()
        .send_keys("e2805b")
        .await
        .unwrap();
    until(
        &c,
        "only the matching passage",
        "const t = document.querySelector('#passages'); return !!t && t.querySelectorAll('tbody tr').length === 1 && document.querySelector('#passage-counts') !== null",
    )
    .await;
    screenshot(&c, "08b-passages").await;

    // Logs: recent lines, filtered, live.
    click(&c, "nav a[data-view=logs]").await;
    until(
        &c,
        "log lines",
        "return document.querySelectorAll('.log div').length > 3",
    )
    .await;
    screenshot(&c, "09-logs").await;

    // Update: upload a signed update and its .sig, see the upload's progress and the result.
    click(&c, "nav a[data-view=update]").await;
    until(
        &c,
        "the update page",
        "const v = document.querySelector('#ota-current'); return !!v && v.textContent === '0.1.0'",
    )
    .await;
    screenshot(&c, "10-update").await;
    c.find(Locator::Css("#ota-file"))
        .await
        .unwrap()
        .send_keys(&dir.path().join("roadedge-update.bin").display().to_string())
        .await
        .unwrap();
    c.find(Locator::Css("#ota-sig"))
        .await
        .unwrap()
        .send_keys(&dir.path().join("roadedge-update.bin.sig").display().to_string())
        .await
        .unwrap();
    // Record every upload percentage the page shows.
    c.execute(
        "window.__seen = []; new MutationObserver(() => { const t = document.querySelector('#ota-jobs .job .t'); if (t) window.__seen.push(t.textContent); }).observe(document.querySelector('#ota-jobs'), {subtree: true, childList: true, characterData: true});",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "#ota-install").await;
    until(
        &c,
        "the install's result",
        "const j = document.querySelector('#ota-jobs .job'); return !!j && j.innerText.includes('rejected')",
    )
    .await;
    let seen: Vec<String> = serde_json::from_value(c.execute("return window.__seen", vec![]).await.unwrap()).unwrap();
    println!(
        "upload progress shown: {:?}",
        seen.iter().step_by(seen.len().max(8) / 8).collect::<Vec<_>>()
    );
    assert!(
        seen.iter().any(|t| t.contains("roadedge-update.bin: 100 %")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|t| t.ends_with(" %") && !t.ends_with("100 %") && !t.ends_with(" 0 %")),
        "progress between 0 and 100: {seen:?}"
    );
    let job = c.find(Locator::Css("#ota-jobs")).await.unwrap().text().await.unwrap();
    assert!(job.contains("not newer than the running 0.1.0"), "{job}");
    until(
        &c,
        "the last result",
        "const l = document.querySelector('#ota-last'); return !!l && l.innerText.includes('replay')",
    )
    .await;
    screenshot(&c, "11-update-result").await;
    assert!(!dir.path().join("bin/roadedge").exists(), "nothing was installed");

    // Activity: what was done from the page.
    click(&c, "nav a[data-view=activity]").await;
    until(
        &c,
        "the activity list",
        "return document.body.innerText.includes('gantry-north: start_rule')",
    )
    .await;
    screenshot(&c, "12-activity").await;

    // Log out: back at the login form, and the session is gone.
    click(&c, "#logout").await;
    until(
        &c,
        "the login form after logout",
        "return !!document.querySelector('#login-pass')",
    )
    .await;
    let status: serde_json::Value = c
        .execute_async(
            "const done = arguments[0]; fetch('/api/status').then(r => done(r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(401));

    c.close().await.unwrap();
    stop.cancel();
    app.stop().await;
}

#[tokio::test]
async fn an_admin_fixes_a_configuration_error_at_its_line_applies_confirms_and_sees_a_change_that_loses_the_uplink_revert_by_itself(
) {
    roadedge::ops::logging::init("info,rumqttc=warn");
    let (dir, pki, broker, _cloud) = World::start("browser-config").await.into_parts();
    let config = common::write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let port = common::free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    // A fixed port: the page's server comes back there after each restart of the core.
    text.push_str(&format!(
        "web:\n  listen: 127.0.0.1:{port}\n  confirm_within: 12s\n  users: [{{name: admin, role: admin, password_hash: '{}'}}]\n",
        roadedge::web::auth::hash_password(PASSWORD).unwrap(),
    ));
    std::fs::write(&config, &text).unwrap();
    let shutdown = CancellationToken::new();
    let (p, token) = (config.clone(), shutdown.clone());
    let (tx, mut starts) = tokio::sync::watch::channel(0usize);
    let task = tokio::spawn(async move {
        roadedge::app::run_from_file(&p, roadedge::app::RunOptions::default(), token, move |_| {
            tx.send_modify(|n| *n += 1)
        })
        .await
    });
    tokio::time::timeout(LIMIT, starts.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/#/config");
    let line = text.lines().position(|l| l.contains("metrics_interval")).unwrap() + 1;

    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;
    go(&c, &url).await;
    until(&c, "the login form", "return !!document.querySelector('#login-pass')").await;
    let pass = c.find(Locator::Css("#login-pass")).await.unwrap();
    pass.send_keys(&format!("{PASSWORD}\u{E007}")).await.unwrap();
    click(&c, "nav a[data-view=config]").await;
    until(
        &c,
        "the file in the editor",
        "const t = document.querySelector('#cfg-text'); return !!t && t.value.includes('metrics_interval: 1s')",
    )
    .await;

    // Introduce an error as a person would edit, validate: it is marked at its line.
    let edit = |from: &str, to: &str| {
        format!(
            "const t = document.querySelector('#cfg-text'); t.value = t.value.replace('{from}', '{to}'); t.dispatchEvent(new Event('input'));"
        )
    };
    c.execute(&edit("metrics_interval: 1s", "metrics_interval: soon"), vec![])
        .await
        .unwrap();
    click(&c, "#cfg-validate").await;
    until(
        &c,
        "the error at its line",
        &format!(
            "const l = document.querySelector('#cfg-lines .ln.err[data-line=\"{line}\"]'); const e = document.querySelector('#cfg-errors'); \
             return !!l && l.title.includes('uplink.metrics_interval') && e.innerText.includes('Line {line}') && e.innerText.includes('uplink.metrics_interval')"
        ),
    )
    .await;
    screenshot(&c, "13-configuration-error").await;
    // Apply refuses while it has errors; nothing changes on disk.
    click(&c, "#cfg-apply").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // Fix it, validate, see the change, apply.
    c.execute(&edit("metrics_interval: soon", "metrics_interval: 2s"), vec![])
        .await
        .unwrap();
    click(&c, "#cfg-validate").await;
    until(&c, "valid", "return !!document.querySelector('#cfg-valid')").await;
    click(&c, "#cfg-show-diff").await;
    until(
        &c,
        "the diff",
        "return [...document.querySelectorAll('#cfg-diff .add')].some(d => d.textContent.includes('metrics_interval: 2s')) && [...document.querySelectorAll('#cfg-diff .del')].some(d => d.textContent.includes('metrics_interval: 1s'))",
    )
    .await;
    click(&c, "#cfg-apply").await;
    click(&c, "dialog button.danger").await;
    until(
        &c,
        "the countdown",
        "const c = document.querySelector('#cfg-countdown'); return !!c && /^0:(0\\d|1[0-2])$/.test(c.textContent)",
    )
    .await;
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("metrics_interval: 2s"));
    until(
        &c,
        "the uplink back with the new file",
        "const p = document.querySelector('#cfg-pending'); return !!p && p.innerText.includes('uplink is back')",
    )
    .await;
    until(
        &c,
        "the page's live stream back after the restart",
        "const u = document.querySelector('#top-uplink'); return !!u && u.innerText.includes('cloud uplink connected')",
    )
    .await;
    screenshot(&c, "14-configuration-countdown").await;
    click(&c, "#cfg-confirm").await;
    until(
        &c,
        "the confirmation",
        "return !!document.querySelector('#cfg-confirmed')",
    )
    .await;

    // A change that loses the uplink (the broker's address mistyped): the uplink does not come
    // back, nobody can confirm it from the cloud, and the page shows it revert by itself.
    let good_url = broker.url();
    let dead_url = format!("mqtts://127.0.0.1:{}", common::free_port());
    c.execute(&edit(&good_url, &dead_url), vec![]).await.unwrap();
    click(&c, "#cfg-apply").await;
    click(&c, "dialog button.danger").await;
    until(
        &c,
        "the second countdown",
        "return !!document.querySelector('#cfg-countdown')",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let reverted = c
            .execute("return !!document.querySelector('#cfg-reverted')", vec![])
            .await
            .unwrap();
        if reverted == json!(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the page did not show the revert");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    until(
        &c,
        "the restored file in the editor",
        &format!("const t = document.querySelector('#cfg-text'); return t.value.includes('{good_url}')"),
    )
    .await;
    let notice = c
        .find(Locator::Css("#cfg-reverted"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        notice.contains("reverted") && notice.contains("uplink did not come back"),
        "{notice}"
    );
    until(
        &c,
        "the page's live stream back after the restart",
        "const u = document.querySelector('#top-uplink'); return !!u && u.innerText.includes('cloud uplink connected')",
    )
    .await;
    screenshot(&c, "15-configuration-reverted").await;
    assert!(std::fs::read_to_string(&config).unwrap().contains(&good_url));

    c.close().await.unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
