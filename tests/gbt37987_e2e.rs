//! GB/T 37987 reader management end to end: the appliance (in process) against a real mosquitto
//! with mutual TLS, and simulated readers in both dialects — one the edge dials, one that dials
//! in, one on a serial pty pair (socat) — plus hostile readers that must not disturb the others.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use roadedge::protocol::gbt37987::model::hex_string;
use roadedge::protocol::gbt37987::Dialect;
use roadedge::reader::rules::{default_select_spec, read_access_spec, SpecState};
use roadedge::reader::ReaderService;
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

/// The appliance in this process and its reader service.
async fn start_edge(config: &Path) -> (RunningAppliance, Arc<ReaderService>) {
    let edge = start_appliance(config).await;
    let readers = edge
        .readers
        .clone()
        .expect("the readers section starts the reader service");
    (edge, readers)
}

/// A socat pty pair; killed on drop.
struct PtyPair {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    fn new(dir: &Path) -> PtyPair {
        let log = dir.join("socat.log");
        // Owned by the pair at once, so that every path out (a panic included) kills and reaps it.
        let mut pair = PtyPair {
            child: Command::new("socat")
                .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("socat is installed by scripts/test"),
            a: PathBuf::new(),
            b: PathBuf::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let ptys: Vec<PathBuf> = text
                .lines()
                .filter_map(|l| l.split("PTY is ").nth(1))
                .map(|p| PathBuf::from(p.trim()))
                .collect();
            if ptys.len() == 2 && text.contains("starting data transfer loop") {
                pair.a = ptys[0].clone();
                pair.b = ptys[1].clone();
                return pair;
            }
            assert!(Instant::now() < deadline, "socat did not report its ptys: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sim_options(sn: &[u8; 8], dialect: Dialect, mode: SimMode, plate: char) -> SimReaderOptions {
    let mut o = SimReaderOptions::new(*sn, dialect, mode);
    o.plate_prefix = plate;
    o.report_interval = Duration::from_millis(150);
    o.keepalive_interval = Some(Duration::from_millis(700));
    o.log_entries = 10;
    o.segment_size = 4;
    o
}

fn payloads(cloud: &Cloud, topic: &str) -> Vec<Value> {
    cloud.on_topic(topic).into_iter().map(|m| m.payload).collect()
}

async fn wait_topic(cloud: &Cloud, what: &str, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let topic_owned = topic.to_string();
    cloud
        .wait_for(what, LIMIT, |msgs| {
            msgs.iter().any(|m| m.topic == topic_owned && pred(&m.payload))
        })
        .await;
    payloads(cloud, topic).into_iter().rev().find(|p| pred(p)).unwrap()
}

fn status_count(cloud: &Cloud, reader: &str, link: &str) -> usize {
    payloads(cloud, &format!("gbt37987/{reader}/up/status"))
        .iter()
        .filter(|p| p["link"] == link)
        .count()
}

async fn wait_up_count(cloud: &Cloud, reader: &str, n: usize) {
    let topic = format!("gbt37987/{reader}/up/status");
    cloud
        .wait_for(&format!("{reader} up #{n}"), LIMIT, |msgs| {
            msgs.iter()
                .filter(|m| m.topic == topic && m.payload["link"] == "up")
                .count()
                >= n
        })
        .await;
}

/// Sends a command on `gbt37987/{reader}/dn` and returns its result.
async fn command(cloud: &Cloud, reader: &str, request_id: &str, mut payload: Value) -> Value {
    payload["request_id"] = json!(request_id);
    cloud.publish(&format!("gbt37987/{reader}/dn"), payload).await;
    wait_topic(
        cloud,
        &format!("result of {request_id}"),
        &format!("gbt37987/{reader}/up/response"),
        |p| p["request_id"] == request_id,
    )
    .await
}

fn plate_reports(cloud: &Cloud, reader: &str, cached: bool) -> Vec<String> {
    payloads(cloud, &format!("gbt37987/{reader}/up/report"))
        .iter()
        .filter(|p| p["cached"].as_bool().unwrap_or(false) == cached)
        .flat_map(|p| p["body"]["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["tag_data"]["plate"].as_str().map(str::to_string))
        .collect()
}

async fn wait_reports(cloud: &Cloud, reader: &str, sim: &SimReader, at_least: usize) {
    let plates = sim.plates();
    let topic = format!("gbt37987/{reader}/up/report");
    cloud
        .wait_for(&format!("{at_least} reports from {reader}"), LIMIT, |msgs| {
            msgs.iter()
                .filter(|m| m.topic == topic)
                .flat_map(|m| m.payload["body"]["tags"].as_array().cloned().unwrap_or_default())
                .filter(|t| {
                    t["tag_data"]["plate"]
                        .as_str()
                        .is_some_and(|p| plates.iter().any(|x| x == p))
                })
                .count()
                >= at_least
        })
        .await;
}

async fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rule(id: u32) -> Value {
    default_select_spec(id, SpecState::Active, 0, &[1, 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_in_both_dialects_over_tcp_dial_in_and_serial_are_managed_end_to_end() {
    init_logging();
    let (dir, pki, broker, cloud) = World::start("readers").await.into_parts();
    let sims_stop = CancellationToken::new();

    // north: hb-2017, the edge dials it.
    let north_sn = *b"BL000001";
    let north = SimReader::spawn(
        sim_options(
            &north_sn,
            Dialect::Hb2017,
            SimMode::Listen("127.0.0.1:0".parse().unwrap()),
            'N',
        ),
        sims_stop.clone(),
    )
    .await
    .unwrap();
    // east: gbt37987-2019, dials in and is configured by its SN.
    let listen_port = free_port();
    let east_sn = *b"BL000002";
    let east = SimReader::spawn(
        sim_options(
            &east_sn,
            Dialect::Gbt37987_2019,
            SimMode::Dial(format!("127.0.0.1:{listen_port}").parse().unwrap()),
            'E',
        ),
        sims_stop.clone(),
    )
    .await
    .unwrap();
    // south: gbt37987-2019 on a serial line (pty pair), bus address 3.
    let pty = PtyPair::new(dir.path());
    let south = SimReader::spawn(
        sim_options(
            b"BL000003",
            Dialect::Gbt37987_2019,
            SimMode::Serial {
                path: pty.b.clone(),
                baud: 19200,
                address: 3,
            },
            'S',
        ),
        sims_stop.clone(),
    )
    .await
    .unwrap();
    // An unconfigured reader dialling in (the section's default dialect): named by its SN in hex.
    let stray_sn = *b"ZZ000009";
    let mut stray_options = sim_options(
        &stray_sn,
        Dialect::Gbt37987_2019,
        SimMode::Dial(format!("127.0.0.1:{listen_port}").parse().unwrap()),
        'Z',
    );
    stray_options.keepalive_interval = None;
    let stray = SimReader::spawn(stray_options, sims_stop.clone()).await.unwrap();
    let stray_id = hex_string(&stray_sn);

    let config = EdgeConfig::new(dir.path(), &pki, &broker.url())
        .yaml(&format!(
        "readers:\n  listen: 127.0.0.1:{listen_port}\n  dialect: gbt37987-2019\n  keepalive_interval: 500ms\n  devices:\n    - {{id: north, tcp: '{}', dialect: hb-2017}}\n    - {{id: east, sn: {}}}\n    - {{id: south, serial: {{port: {}, baud: 19200, address: 3}}}}\n",
        north.local_addr.unwrap(),
        hex_string(&east_sn),
        pty.a.display()
    ))
        .write();
    let (edge, readers) = start_edge(&config).await;

    // Links come up, each with its dialect and serial number.
    for (reader, dialect, sn) in [
        ("north", "hb-2017", hex_string(&north_sn)),
        ("east", "gbt37987-2019", hex_string(&east_sn)),
        ("south", "gbt37987-2019", hex_string(b"BL000003")),
        (stray_id.as_str(), "gbt37987-2019", stray_id.clone()),
    ] {
        let status = wait_topic(
            &cloud,
            &format!("{reader} up"),
            &format!("gbt37987/{reader}/up/status"),
            |p| p["link"] == "up",
        )
        .await;
        assert_eq!(status["dialect"], dialect, "{reader}");
        assert_eq!(status["device_sn"], sn, "{reader}");
        assert_eq!(status["edge"]["id"], "cab-1");
    }
    let info = readers.reader(&stray_id).unwrap();
    assert!(!info.configured && info.transport == "tcp-listen");

    // Rules: stored per reader, reconciled at once, reports follow them with decoded plates.
    for (reader, id) in [("north", 7), ("east", 8), ("south", 9)] {
        let result = command(
            &cloud,
            reader,
            &format!("rules-{reader}"),
            json!({"action": "set_rules", "select_specs": [rule(id)]}),
        )
        .await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["answer"]["select_specs"], 1, "{result}");
    }
    for (reader, sim, id) in [("north", &north, 7), ("east", &east, 8), ("south", &south, 9)] {
        wait_reports(&cloud, reader, sim, 3).await;
        assert_eq!(sim.select_specs().get(&id), Some(&SpecState::Active), "{reader}");
    }
    let report = payloads(&cloud, "gbt37987/north/up/report").pop().unwrap();
    assert_eq!(report["msg"], "TagSelectAccessReport");
    assert_eq!(report["device_sn"], hex_string(&north_sn));
    let tag = &report["body"]["tags"][0];
    assert!(tag["first_seen"].as_str().unwrap().ends_with('Z'), "{tag}");
    for key in ["tid", "antenna", "rssi", "seen_count", "select_spec_id"] {
        assert!(tag.get(key).is_some(), "{key} in {tag}");
    }
    assert_eq!(tag["tag_data"]["plate_type"], 2);
    assert!(tag["tag_data"]["plate"].as_str().unwrap().starts_with('N'));

    // A rule the reader should not hold is deleted at the next reconciliation.
    let extra = command(
        &cloud,
        "north",
        "raw-add",
        json!({"msg": "AddSelectSpec", "body": {"SelectSpec": default_select_spec(99, SpecState::Disabled, 0, &[1])}}),
    )
    .await;
    assert_eq!(extra["answer"]["msg"], "AddSelectSpecAck", "{extra}");
    assert!(north.select_specs().contains_key(&99));
    let reconciled = command(&cloud, "north", "reconcile-1", json!({"action": "reconcile"})).await;
    assert_eq!(reconciled["ok"], true, "{reconciled}");
    assert!(!north.select_specs().contains_key(&99), "{reconciled}");

    // Forced reconnects where the reader lost its rules (a reboot): reconciled again.
    for (reader, sim, id) in [("north", &north, 7u32), ("east", &east, 8), ("south", &south, 9)] {
        let ups = status_count(&cloud, reader, "up");
        sim.wipe_rules();
        if reader == "south" {
            assert!(readers.disconnect(reader, "test: forced reconnect"));
        } else {
            sim.drop_link();
        }
        wait_up_count(&cloud, reader, ups + 1).await;
        wait_until(&format!("{reader} re-holds rule {id}"), || {
            sim.select_specs().get(&id) == Some(&SpecState::Active)
        })
        .await;
        let down = payloads(&cloud, &format!("gbt37987/{reader}/up/status"))
            .into_iter()
            .rev()
            .find(|p| p["link"] == "down")
            .unwrap();
        assert!(!down["reason"].as_str().unwrap().is_empty(), "{down}");
        wait_topic(&cloud, "reconcile event", &format!("gbt37987/{reader}/up/event"), |p| {
            p["msg"] == "RulesReconciled"
                && p["body"]["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x["step"] == format!("add select {id}")))
        })
        .await;
    }
    let before = plate_reports(&cloud, "north", false).len();
    wait_until("north reports after the reconnect", || {
        plate_reports(&cloud, "north", false).len() > before + 2
    })
    .await;

    // Access rule: read user memory of one tag, in the 2019 dialect.
    let tid = {
        let r = payloads(&cloud, "gbt37987/east/up/report").pop().unwrap();
        roadedge::protocol::gbt37987::model::parse_hex(r["body"]["tags"][0]["tid"].as_str().unwrap()).unwrap()
    };
    let added = command(
        &cloud,
        "east",
        "access-1",
        json!({"action": "add_rule", "access_spec": read_access_spec(30, 8, &tid, 2, 0, true)}),
    )
    .await;
    assert_eq!(added["ok"], true, "{added}");
    assert_eq!(east.access_specs().get(&30), Some(&true));
    wait_topic(&cloud, "an access read result", "gbt37987/east/up/report", |p| {
        p["body"]["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|t| t["extra"]["HbReadSpecResult"].is_array()))
    })
    .await;

    // Alarm raised and restored, with the active-alarm table and metrics following.
    let alarm_id = east.raise_alarm(1, 1, "reader over-temperature");
    let raised = wait_topic(&cloud, "alarm raised", "gbt37987/east/up/alarm", |p| {
        p["msg"] == "AlarmReport"
    })
    .await;
    assert_eq!(raised["body"]["AlarmID"], alarm_id);
    assert_eq!(raised["body"]["AlarmReportInfo"]["Level"], 1);
    let table = command(&cloud, "east", "alarms-1", json!({"action": "alarms"})).await;
    assert_eq!(table["answer"]["alarms"][0]["alarm_id"], alarm_id, "{table}");
    wait_until("alarms_active 1", || readers.reader("east").unwrap().alarms_active == 1).await;
    east.restore_alarm(alarm_id);
    wait_topic(&cloud, "alarm restored", "gbt37987/east/up/alarm", |p| {
        p["msg"] == "AlarmRestore"
    })
    .await;
    wait_until("alarms_active 0", || readers.reader("east").unwrap().alarms_active == 0).await;
    // An alarm that ended while the link was down is restored by the sync after the reconnect.
    let lost = north.raise_alarm(2, 2, "low temperature");
    wait_until("north alarm active", || {
        readers.reader("north").unwrap().alarms_active == 1
    })
    .await;
    let ups = status_count(&cloud, "north", "up");
    north.forget_alarm(lost);
    north.drop_link();
    wait_up_count(&cloud, "north", ups + 1).await;
    wait_topic(&cloud, "alarm restored by sync", "gbt37987/north/up/alarm", |p| {
        p["msg"] == "AlarmRestore" && p["body"]["AlarmID"] == lost && p["body"]["AlarmRestoreInfo"]["RestoreType"] == 1
    })
    .await;
    wait_until("north alarms_active 0", || {
        readers.reader("north").unwrap().alarms_active == 0
    })
    .await;

    // A log pulled in segments, each confirmed after its commit (10 entries, 4 per segment).
    let pulled = command(&cloud, "south", "log-1", json!({"action": "log_pull", "log": "device"})).await;
    assert_eq!(pulled["ok"], true, "{pulled}");
    assert_eq!(
        pulled["answer"],
        json!({"log": "device", "count": 10, "segments": 3, "entries": 10})
    );
    let segments = payloads(&cloud, "gbt37987/south/up/log");
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[2]["body"]["IsLastedFrame"], 1);
    assert_eq!(segments[0]["body"]["DeviceLog"].as_array().unwrap().len(), 4);
    let tag_log = command(&cloud, "north", "log-2", json!({"action": "log_pull", "log": "tag"})).await;
    assert_eq!(tag_log["answer"]["entries"], 10, "{tag_log}");

    // Firmware: served by the edge over TFTP, downloaded, activated, queried.
    let image = b"VERSION=2.0.0\nsimulated reader firmware image\n".repeat(40);
    std::fs::write(dir.path().join("firmware/reader-2.0.bin"), &image).unwrap();
    let downloaded = command(
        &cloud,
        "east",
        "fw-1",
        json!({"action": "firmware_download", "ver_type": 1, "file": "reader-2.0.bin"}),
    )
    .await;
    assert_eq!(downloaded["answer"]["msg"], "SetVersionAck", "{downloaded}");
    assert_eq!(downloaded["answer"]["body"]["Status"]["StatusCode"], 0, "{downloaded}");
    assert_eq!(east.firmware(1).unwrap().spare.as_deref(), Some("2.0.0"));
    let activated = command(
        &cloud,
        "east",
        "fw-2",
        json!({"action": "firmware_activate", "ver_type": 1}),
    )
    .await;
    assert_eq!(activated["answer"]["body"]["Status"]["StatusCode"], 0, "{activated}");
    assert_eq!(east.firmware(1).unwrap().running, "2.0.0");
    let query = command(
        &cloud,
        "east",
        "fw-3",
        json!({"action": "firmware_query", "ver_type": 1}),
    )
    .await;
    let versions = query["answer"]["body"]["VersionInfo"].as_array().unwrap();
    assert_eq!(versions[0]["VersionData"], hex_string(b"2.0.0"), "{query}");
    let missing = command(
        &cloud,
        "east",
        "fw-4",
        json!({"action": "firmware_download", "file": "nope.bin"}),
    )
    .await;
    assert_eq!(missing["result"], "rejected", "{missing}");

    // Management: capabilities, config, diagnostics (VSWR), time sync.
    let caps = command(&cloud, "south", "caps", json!({"action": "get_capabilities"})).await;
    assert_eq!(
        caps["answer"]["body"]["GenaralCapabilities"]["ManufacturerName"], "roadedge-sim",
        "{caps}"
    );
    let vswr = command(&cloud, "north", "diag", json!({"action": "diagnostics", "tests": [2]})).await;
    let items = &vswr["answer"]["body"]["DiagnosticTestResultItem"][0]["AntennaVswrResult"];
    assert_eq!(items.as_array().unwrap().len(), 4, "{vswr}");
    let synced = command(&cloud, "north", "time", json!({"action": "time_sync"})).await;
    assert_eq!(synced["answer"]["msg"], "SetDeviceConfigAck", "{synced}");
    assert!(north.time_set().unwrap() > 1_700_000_000);
    let config_answer = command(&cloud, "east", "cfg", json!({"action": "get_config"})).await;
    assert_eq!(
        config_answer["answer"]["body"]["Identification"], "simulated reader",
        "{config_answer}"
    );
    let set = command(
        &cloud,
        "east",
        "cfg-set",
        json!({"action": "set_config", "body": {"ResetToFactoryDefault": false, "Identification": "gantry east"}}),
    )
    .await;
    assert_eq!(set["answer"]["body"]["Status"]["StatusCode"], 0, "{set}");
    let count = command(&cloud, "south", "log-count", json!({"action": "log_count"})).await;
    assert_eq!(count["answer"]["body"]["LogCount"], 10, "{count}");
    let cleared = command(&cloud, "south", "log-clear", json!({"action": "log_clear"})).await;
    assert_eq!(cleared["answer"]["msg"], "ClearDeviceLogAck", "{cleared}");
    let count = command(&cloud, "south", "log-count-2", json!({"action": "log_count"})).await;
    assert_eq!(count["answer"]["body"]["LogCount"], 0, "{count}");
    let back = command(
        &cloud,
        "east",
        "fw-5",
        json!({"action": "firmware_deactivate", "ver_type": 1}),
    )
    .await;
    assert_eq!(back["answer"]["body"]["Status"]["StatusCode"], 0, "{back}");
    assert_eq!(east.firmware(1).unwrap().running, "sim-1.1.0");
    let bad = command(&cloud, "east", "bad", json!({"action": "launch"})).await;
    assert_eq!(bad["result"], "rejected");

    // 3 missed keepalive acks close the link; it comes back; reports cached meanwhile arrive.
    let ups = status_count(&cloud, "north", "up");
    north.answer_keepalives(false);
    let down = wait_topic(&cloud, "keepalive down", "gbt37987/north/up/status", |p| {
        p["link"] == "down" && p["reason"] == "3 keepalive acks missed"
    })
    .await;
    assert_eq!(down["dialect"], "hb-2017");
    north.answer_keepalives(true);
    wait_up_count(&cloud, "north", ups + 1).await;

    // Reports read while the reader was cut off are pulled after the reconnect, each segment
    // acknowledged only after its commit (the reader then drops it).
    let ups = status_count(&cloud, "north", "up");
    north.offline(true);
    wait_until("north caches reports", || north.cached() >= 6).await;
    north.offline(false);
    wait_up_count(&cloud, "north", ups + 1).await;
    wait_until("the cache drained", || north.cached() == 0).await;
    let cached = plate_reports(&cloud, "north", true);
    assert!(cached.len() >= 6, "{cached:?}");
    assert!(cached.iter().all(|p| p.starts_with('N')));

    // A reset loses the rules that are not persistent; they are re-applied, over TCP and serial.
    for (reader, sim, id) in [("east", &east, 8u32), ("south", &south, 9)] {
        let answer = command(&cloud, reader, &format!("reset-{reader}"), json!({"action": "reset"})).await;
        assert_eq!(answer["answer"]["msg"], "ResetDeviceAck", "{answer}");
        wait_until(&format!("{reader} reset"), || sim.resets() == 1).await;
        wait_until(&format!("{reader} re-holds rule {id} after its reset"), || {
            sim.select_specs().get(&id) == Some(&SpecState::Active)
        })
        .await;
    }
    wait_until("east re-holds its access rule", || {
        east.access_specs().get(&30) == Some(&true)
    })
    .await;

    // Commands for an offline reader wait for it.
    north.mute(true);
    let ups = status_count(&cloud, "north", "up");
    wait_until("north down", || readers.reader("north").unwrap().link == "down").await;
    cloud
        .publish(
            "gbt37987/north/dn",
            json!({"request_id": "queued", "msg": "GetSelectSpec"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    north.mute(false);
    wait_up_count(&cloud, "north", ups + 1).await;
    let queued = wait_topic(&cloud, "queued command", "gbt37987/north/up/response", |p| {
        p["request_id"] == "queued"
    })
    .await;
    assert_eq!(queued["answer"]["msg"], "GetSelectSpecAck", "{queued}");

    // Metrics name the readers.
    let m = edge.metrics.snapshot(0, json!({}));
    for reader in ["north", "east", "south"] {
        assert_eq!(m["readers"][reader]["link"], "up", "{m}");
        assert!(m["readers"][reader]["tag_reports_total"].as_u64().unwrap() > 0, "{m}");
    }
    assert!(stray.is_connected());

    edge.stop().await;
    sims_stop.cancel();
    drop(pty);
}

/// A TCP server the edge dials that answers with noise, forever.
async fn garbage_server(stop: CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((mut stream, _)) = accepted else { continue };
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n: u32 = 7;
                loop {
                    let chunk: Vec<u8> = (0..512)
                        .map(|_| {
                            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            (n >> 16) as u8
                        })
                        .collect();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        w = stream.write_all(&chunk) => if w.is_err() { return },
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sending_garbage_or_stalling_mid_segment_never_blocks_the_others() {
    init_logging();
    let (dir, pki, broker, cloud) = World::start("hostile").await.into_parts();
    let stop = CancellationToken::new();

    let good = SimReader::spawn(
        sim_options(
            b"GOOD0001",
            Dialect::Hb2017,
            SimMode::Listen("127.0.0.1:0".parse().unwrap()),
            'G',
        ),
        stop.clone(),
    )
    .await
    .unwrap();
    let mut staller_options = sim_options(
        b"STAL0001",
        Dialect::Gbt37987_2019,
        SimMode::Listen("127.0.0.1:0".parse().unwrap()),
        'T',
    );
    staller_options.log_entries = 40;
    let staller = SimReader::spawn(staller_options, stop.clone()).await.unwrap();
    staller.stall_uploads(true);
    let noise = garbage_server(stop.clone()).await;
    let listen_port = free_port();

    let config = EdgeConfig::new(dir.path(), &pki, &broker.url())
        .yaml(&format!(
        "readers:\n  listen: 127.0.0.1:{listen_port}\n  dialect: hb-2017\n  keepalive_interval: 500ms\n  devices:\n    - {{id: good, tcp: '{}'}}\n    - {{id: staller, tcp: '{}', dialect: gbt37987-2019}}\n    - {{id: noisy, tcp: '{noise}'}}\n",
        good.local_addr.unwrap(),
        staller.local_addr.unwrap(),
    ))
        .write();
    let edge = start_appliance(&config).await;
    wait_up_count(&cloud, "good", 1).await;
    wait_up_count(&cloud, "staller", 1).await;
    let set = command(
        &cloud,
        "good",
        "rules",
        json!({"action": "set_rules", "select_specs": [rule(1)]}),
    )
    .await;
    assert_eq!(set["ok"], true);
    wait_reports(&cloud, "good", &good, 2).await;

    // Garbage dialling in, too: a client that sends noise and one that sends half a header and stops.
    let flood_stop = stop.clone();
    let flood = tokio::spawn(async move {
        for round in 0..20u8 {
            if flood_stop.is_cancelled() {
                return;
            }
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", listen_port)).await {
                let _ = s.write_all(&vec![round ^ 0x5A; 4096]).await;
                let _ = s.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 1]).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    // The staller answers the first log segment, then stops; meanwhile the good reader's
    // reports keep flowing without a gap.
    let started = Instant::now();
    let before = plate_reports(&cloud, "good", false).len();
    let stalled = command(
        &cloud,
        "staller",
        "stall",
        json!({"action": "log_pull", "log": "device"}),
    )
    .await;
    assert_eq!(stalled["result"], "rejected", "{stalled}");
    assert!(
        stalled["error"].as_str().unwrap().contains("stopped after 1 segment"),
        "{stalled}"
    );
    let waited = started.elapsed();
    let during = plate_reports(&cloud, "good", false).len() - before;
    // 2 tags every 150 ms: over the ~10 s stall at least a third of that must have arrived.
    let expected = (waited.as_millis() / 150) as usize * 2;
    assert!(
        during * 3 >= expected,
        "{during} tags during {waited:?}, expected about {expected}"
    );
    // No gap in the good reader's reports while the staller held its upload (edge receive times).
    let times: Vec<i64> = payloads(&cloud, "gbt37987/good/up/report")
        .iter()
        .filter_map(|p| roadedge::time::parse_rfc3339_ms(p["edge"]["received_at"].as_str()?))
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < 2000, "the good reader's reports stopped for {gap} ms");
    assert_eq!(payloads(&cloud, "gbt37987/staller/up/log").len(), 1);

    // The other links stayed up the whole time; the noise was counted, not fatal.
    assert_eq!(status_count(&cloud, "good", "down"), 0);
    assert_eq!(status_count(&cloud, "staller", "down"), 0);
    assert_eq!(status_count(&cloud, "noisy", "up"), 0);
    assert!(
        edge.metrics
            .gbt37987
            .frames_bad
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // The staller still answers other commands.
    let caps = command(
        &cloud,
        "staller",
        "caps",
        json!({"action": "get_capabilities", "requested_data": 1}),
    )
    .await;
    assert_eq!(caps["ok"], true, "{caps}");
    let _ = flood.await;
    edge.stop().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_sync_the_clock_pull_logs_and_open_and_close_rule_windows() {
    init_logging();
    let (dir, pki, broker, cloud) = World::start("schedule").await.into_parts();
    let stop = CancellationToken::new();
    let sim = SimReader::spawn(
        sim_options(
            b"CRON0001",
            Dialect::Hb2017,
            SimMode::Listen("127.0.0.1:0".parse().unwrap()),
            'C',
        ),
        stop.clone(),
    )
    .await
    .unwrap();
    let config = EdgeConfig::new(dir.path(), &pki, &broker.url())
        .yaml(&format!(
            "readers:\n  keepalive_interval: 500ms\n  devices:\n    - {{id: gate, tcp: '{}', dialect: hb-2017}}\n",
            sim.local_addr.unwrap()
        ))
        .yaml(concat!(
            "schedule:\n",
            "  - {name: clock, cron: '* * * * * *', job: reader_time_sync}\n",
            "  - {name: logs, cron: '*/2 * * * * *', job: reader_log_pull, reader: gate}\n",
            "  - {name: window-off, cron: '* * * * * *', job: select_spec, reader: gate, spec_id: 4, action: stop}\n",
            "  - {name: extra-metrics, cron: '* * * * * *', job: metrics}\n",
            "  - {name: tidy, cron: '* * * * * *', job: retention}\n",
        ))
        .write();
    let (edge, readers) = start_edge(&config).await;
    wait_up_count(&cloud, "gate", 1).await;

    // A rule that the window job keeps closed: stored active, stopped by the schedule.
    let set = command(
        &cloud,
        "gate",
        "rules",
        json!({"action": "set_rules", "select_specs": [rule(4)]}),
    )
    .await;
    assert_eq!(set["ok"], true, "{set}");
    wait_until("the clock is set", || sim.time_set().is_some()).await;
    wait_until("the window job stops rule 4", || {
        sim.select_specs().get(&4) == Some(&SpecState::Inactive)
    })
    .await;
    let rules = readers.rules("gate").await.unwrap();
    assert_eq!(rules.to_json()["select_specs"][0]["CurrentState"], 1);
    // Device and tag logs pulled in segments by the job.
    cloud
        .wait_for("device and tag log segments", LIMIT, |msgs| {
            let logs: Vec<&str> = msgs
                .iter()
                .filter(|m| m.topic == "gbt37987/gate/up/log")
                .filter_map(|m| m.payload["msg"].as_str())
                .collect();
            logs.contains(&"UploadDeviceLogAck") && logs.contains(&"UploadTagLogAck")
        })
        .await;
    // The extra metrics record goes through the outbox.
    cloud
        .wait_for("a scheduled metrics record", LIMIT, |msgs| {
            msgs.iter()
                .any(|m| m.topic == "edge/cab-1/metrics" && m.payload["edge"]["seq"].is_number())
        })
        .await;
    edge.stop().await;
    stop.cancel();
}
