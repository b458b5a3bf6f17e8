//! The web page's costs on the appliance: what a first visit of the dashboard transfers, how long
//! headless Chromium takes to its first render and to a filled dashboard, the API's latency under
//! 1,000 parallel requests while 1,000 JT/T 808 terminals report (and what that load does to the
//! terminals' acknowledgements), and the appliance's RSS with the page open.
//! `roadedge run` (release) is a child process publishing to a loopback mosquitto with mutual
//! TLS; terminals, HTTP clients and the browser run beside it on the same cores.
//! Run: `cargo bench --bench web` (needs mosquitto, chromium and chromium-driver, see scripts/test;
//! figures in docs/BENCHMARKS.md).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::web::Client;
use common::{free_port, write_config, Mosquitto, Pki};
use roadedge::sim::jt808::{run, SimEdition, SimOptions, SimStats};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "bench-password";

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

struct Edge(Child);

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Bytes (headers and body) one GET transfers.
async fn transfer(c: &Client, path: &str, gzip: bool) -> usize {
    let extra: &[(&str, &str)] = if gzip { &[("Accept-Encoding", "gzip")] } else { &[] };
    let r = c.send("GET", path, None, extra).await;
    assert_eq!(r.status, 200, "{path}");
    let head: usize = r.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 19;
    head + r.body.len()
}

/// Acknowledged locations per second over `window`.
async fn ack_rate(stats: &SimStats, window: Duration) -> f64 {
    let (a0, t0) = (stats.acked.load(Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    (stats.acked.load(Relaxed) - a0) as f64 / t0.elapsed().as_secs_f64()
}

async fn browser_figures(url: &str, pid: u32) -> Option<(f64, f64, f64, f64)> {
    let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port();
    let mut driver = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().ok()?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1366,768", format!("--user-data-dir={}", profile.path().display())]}),
    );
    let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    let rss_before = rss_mib(pid);
    // First render of the page (the login form): First Contentful Paint of a cold load.
    client.goto(url).await.ok()?;
    let wait = |script: &'static str| {
        let c = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if c.execute(script, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    wait("return !!document.querySelector('#login-pass')").await;
    let fcp = client
        .execute(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null",
            vec![],
        )
        .await
        .ok()?
        .as_f64()
        .unwrap_or(f64::NAN);
    // Logged in, a reload of the dashboard: until its tiles hold live figures.
    client
        .execute_async(
            &format!("const done = arguments[0]; fetch('/api/login', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{username: 'admin', password: '{PASSWORD}'}})}}).then(() => done(true))"),
            vec![],
        )
        .await
        .ok()?;
    // A hash change alone is no navigation: load the dashboard as a new document, so its
    // `performance.now()` counts from that navigation.
    client.goto(&format!("{url}#/dashboard")).await.ok()?;
    client.refresh().await.ok()?;
    let reached =
        wait("const t = document.querySelector('#tile-backlog .value'); return !!t && t.textContent !== '\u{2013}'")
            .await;
    let filled = if reached {
        client
            .execute("return performance.now()", vec![])
            .await
            .ok()?
            .as_f64()
            .unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    // The page open for 30 s (live events every 2 s, charts redrawn).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_open = rss_mib(pid);
    let _ = client.close().await;
    let _ = driver.kill();
    let _ = driver.wait();
    Some((fcp, filled, rss_before, rss_open))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target".into())).unwrap();
        let pki = Pki::new(dir.path());
        let broker = Mosquitto::start(dir.path(), &pki);
        let config = write_config(dir.path(), &pki, &broker.url(), "", "4GiB");
        let (jt808_port, web_port) = (free_port(), free_port());
        let text = std::fs::read_to_string(&config).unwrap().replace("level: info", "level: warn");
        std::fs::write(
            &config,
            format!(
                "{text}jt808: {{listen: '127.0.0.1:{jt808_port}'}}\nweb:\n  listen: 127.0.0.1:{web_port}\n  users: [{{name: admin, role: admin, password_hash: '{}'}}]\n",
                roadedge::web::auth::hash_password(PASSWORD).unwrap()
            ),
        )
        .unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 20000 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" run -c \"$1\"")
            .arg(env!("CARGO_BIN_EXE_roadedge"))
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("edge.log")).unwrap())
            .spawn()
            .unwrap();
        let edge = Edge(child);
        let web: std::net::SocketAddr = format!("127.0.0.1:{web_port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(web).is_err() {
            assert!(Instant::now() < deadline, "the web page did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut admin = Client::new(web);
        assert_eq!(admin.login("admin", PASSWORD).await.status, 200);
        println!("Web page (`roadedge run` child, release):");

        // 1. What a first visit of the dashboard transfers.
        let files = ["/", "/app.css", "/app.js", "/favicon.svg"];
        let mut gz = 0;
        let mut raw = 0;
        for f in files {
            gz += transfer(&admin, f, true).await;
            raw += transfer(&admin, f, false).await;
        }
        let mut api = 0;
        for p in ["/api/session", "/api/edge/actions", "/api/history", "/api/overview"] {
            api += transfer(&admin, p, false).await;
        }
        println!(
            "  first visit of the dashboard: {:.1} KiB with gzip ({:.1} KiB of files, {:.1} KiB of API), {:.1} KiB of files without gzip; then {:.1} KiB per live update",
            (gz + api) as f64 / 1024.0,
            gz as f64 / 1024.0,
            api as f64 / 1024.0,
            raw as f64 / 1024.0,
            transfer(&admin, "/api/overview", false).await as f64 / 1024.0 / 1.0,
        );

        // 2. 1,000 terminals report; then 1,000 parallel API requests on top.
        let stats = Arc::new(SimStats::default());
        let stop = CancellationToken::new();
        let sim = tokio::spawn(run(
            SimOptions {
                server: format!("127.0.0.1:{jt808_port}"),
                terminals: 1000,
                edition: SimEdition::Mixed,
                rate: 0.0,
                connect_rate: 2000.0,
                ..SimOptions::default()
            },
            stats.clone(),
            stop.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(90);
        while stats.online.load(Relaxed) < 1000 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let quiet = ack_rate(&stats, Duration::from_secs(10)).await;
        let api_stop = CancellationToken::new();
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..1000 {
            // From 16 loopback addresses, so the global limit (256 connections) binds, not the
            // per-address one (64).
            let c = Client { from: Some(format!("127.0.0.{}", 10 + i % 16).parse().unwrap()), ..admin.clone() };
            let stop = api_stop.clone();
            clients.spawn(async move {
                let mut latencies = Vec::new();
                let mut refused = 0u32;
                while !stop.is_cancelled() {
                    let t = Instant::now();
                    let r = c.get(if i % 2 == 0 { "/api/status" } else { "/api/overview" }).await;
                    match r.status {
                        200 => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                        _ => refused += 1,
                    }
                }
                (latencies, refused)
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded = ack_rate(&stats, Duration::from_secs(10)).await;
        api_stop.cancel();
        let mut all = Vec::new();
        let mut refused = 0;
        while let Some(r) = clients.join_next().await {
            let (l, n) = r.unwrap();
            all.extend(l);
            refused += n;
        }
        all.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  1,000 parallel API clients (GET /api/status and /api/overview, new connection each) while 1,000 terminals report: \
             {} answered ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, {refused} refused (503)",
            all.len(),
            all.len() as f64 / 12.0,
            percentile(&all, 0.50),
            percentile(&all, 0.99),
        );
        println!(
            "  terminals' acknowledged locations/s: {quiet:.0} without API load, {loaded:.0} with it ({:.0}%); \
             mean ack latency by Little's law {:.1} ms -> {:.1} ms",
            100.0 * loaded / quiet.max(1.0),
            1000.0 * 1000.0 / quiet.max(1.0),
            1000.0 * 1000.0 / loaded.max(1.0),
        );
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), sim).await;

        // 3. The browser: first render, filled dashboard, RSS with the page open.
        match browser_figures(&format!("http://{web}/"), edge.0.id()).await {
            Some((fcp, filled, before, open)) => println!(
                "  headless Chromium: first contentful paint {fcp:.0} ms (cold load of the login page); dashboard filled \
                 with live figures {filled:.0} ms after navigation; appliance RSS {before:.1} MiB -> {open:.1} MiB with the dashboard open 30 s"
            ),
            None => println!("  headless Chromium not available (scripts/test installs chromium and chromium-driver)"),
        }
    });
}
