//! The MQTT uplink: drains the outbox to the broker (QoS 1) and feeds downstream commands to the
//! command plane.
//!
//! A row leaves the backlog only when its PUBACK arrives. Every connection starts a fresh rumqttc
//! client, so rumqttc replays nothing of ours behind our back: after a reconnect the drain
//! restarts from the oldest unacknowledged row of each device, which keeps order per device and
//! sends every unacknowledged row again (duplicates are possible, loss is not).
//!
//! The broker session is persistent (clean session off, client id `roadedge-{edge_id}`): the broker
//! keeps the subscriptions and queues downstream commands while the edge is away, and sends again
//! those whose PUBACK it did not get. Those redeliveries carry the broker's packet ids, a space
//! apart from ours, so they never touch the publish-to-pkid bookkeeping below; a command is
//! acknowledged to the broker only once the command plane persisted or answered it, and the plane
//! recognises a request id it has seen, so each command still ends in exactly one result.
//!
//! The PUBACK bookkeeping (publish-to-pkid matching, collisions, the window's room, reconnects)
//! is the pure state machine in [`window`]; this file is the async shell that feeds it rumqttc's
//! events and carries out what it decides.
//!
//! Fairness: devices are drained round-robin a few rows at a time, so a large backlog of one
//! device (or an outage's backlog) does not hold back live data of the others.

mod drain;
pub mod window;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use crate::link::backoff::Backoff;
use drain::Drain;
use window::{Puback, Tracked, Window};

use crate::command::CommandPlane;
use crate::config::{BrokerUrl, TopicPrefix};
use crate::metrics::Metrics;
use crate::ops::system::SystemProbe;
use crate::store::Store;
use crate::time::{now_ms, now_rfc3339};
use crate::topics::{self, EdgeTopic};

/// Everything the uplink needs to know.
#[derive(Clone)]
pub struct UplinkSettings {
    pub url: BrokerUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub edge_id: String,
    pub version: String,
    pub prefix: TopicPrefix,
    pub keep_alive: Duration,
    pub max_inflight: u16,
    pub metrics_interval: Duration,
}

/// Largest MQTT packet in either direction.
const MAX_PACKET: usize = 4 << 20;
/// Rows fetched per device per round of the drain.
const ROWS_PER_DEVICE: usize = 32;

/// Runs the uplink until `shutdown`, reconnecting with jittered exponential backoff.
pub async fn run(
    settings: UplinkSettings,
    store: Store,
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut system = SystemProbe::new(store.path().to_path_buf());
    let mut window = Window::new(settings.max_inflight);
    loop {
        window.reconnect();
        let mut session = Session::new(&settings, &store, &plane, &metrics, &mut system, &mut window);
        let outcome = session.run(&shutdown, &mut backoff).await;
        metrics.uplink.connected.store(0, Relaxed);
        match outcome {
            Ok(()) => return,
            Err(e) => {
                metrics.uplink.reconnects_total.fetch_add(1, Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!("uplink to {}: {e}; reconnecting in {delay:?}", settings.url);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct Session<'a> {
    settings: &'a UplinkSettings,
    store: &'a Store,
    plane: &'a Arc<CommandPlane>,
    metrics: &'a Arc<Metrics>,
    system: &'a mut SystemProbe,
    window: &'a mut Window,
    ack_writes: Vec<tokio::task::JoinHandle<()>>,
    drain: Drain,
}

impl<'a> Session<'a> {
    fn new(
        settings: &'a UplinkSettings,
        store: &'a Store,
        plane: &'a Arc<CommandPlane>,
        metrics: &'a Arc<Metrics>,
        system: &'a mut SystemProbe,
        window: &'a mut Window,
    ) -> Self {
        Session {
            settings,
            store,
            plane,
            metrics,
            system,
            window,
            ack_writes: Vec::new(),
            drain: Drain::default(),
        }
    }

    fn topic(&self, suffix: &str) -> String {
        self.settings.prefix.apply(suffix)
    }

    fn status_payload(&self, state: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"state": state, "version": self.settings.version, "since": now_rfc3339()}))
            .unwrap_or_default()
    }

    fn options(&self) -> MqttOptions {
        let s = self.settings;
        let mut o = MqttOptions::new(format!("roadedge-{}", s.edge_id), s.url.host.clone(), s.url.port);
        // A persistent session under a stable client id: the broker keeps the edge's
        // subscriptions and queues its commands while it is away, and delivers them (again,
        // if their acknowledgement was lost with the connection) when it returns; the command
        // plane recognises a repeated request id.
        o.set_keep_alive(s.keep_alive)
            .set_clean_session(false)
            .set_inflight(s.max_inflight)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_request_channel_capacity(s.max_inflight as usize + 64)
            .set_last_will(LastWill::new(
                self.topic(&topics::edge(&s.edge_id, EdgeTopic::Status)),
                self.status_payload("offline"),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(tls) = &s.tls {
            o.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        o
    }

    async fn connect(&self, eventloop: &mut EventLoop) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => return Err("no CONNACK within 30s".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    return if ack.code == ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("broker refused the connection: {:?}", ack.code))
                    };
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken, backoff: &mut Backoff) -> Result<(), String> {
        let (client, mut eventloop) = AsyncClient::new(self.options(), self.settings.max_inflight as usize + 64);
        // Small QoS 1 publishes and their PUBACKs must not wait for Nagle's algorithm.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        tokio::select! {
            r = self.connect(&mut eventloop) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        }
        backoff.reset();
        self.metrics.uplink.connected.store(1, Relaxed);
        tracing::info!("uplink connected to {}", self.settings.url);

        self.publish_other(
            &client,
            &topics::edge(&self.settings.edge_id, EdgeTopic::Status),
            self.status_payload("online"),
            true,
        )?;
        for filter in self.plane.subscriptions() {
            client
                .try_subscribe(self.topic(&filter), QoS::AtLeastOnce)
                .map_err(|e| e.to_string())?;
        }

        let mut committed = self.store.committed_seq();
        let mut metrics_tick = tokio::time::interval(self.settings.metrics_interval);
        metrics_tick.tick().await;
        let mut ack_tick = tokio::time::interval(Duration::from_millis(50));
        let mut unseen_commits = true;
        loop {
            // Refill as soon as the window has room and rows may be waiting: freshly committed
            // ones, fetched ones, or more of devices whose last fetch was not empty.
            let rows_may_wait = unseen_commits || self.drain.has_buffered() || self.drain.may_have_more();
            // Refill in batches (a quarter of the window) rather than one read per PUBACK.
            if rows_may_wait && self.window.worth_a_read() {
                unseen_commits = false;
                let committed_seq = *committed.borrow_and_update();
                self.fill_window(&client, committed_seq).await?;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.shutdown(&client, &mut eventloop).await;
                    return Ok(());
                }
                event = eventloop.poll() => {
                    let event = event.map_err(|e| e.to_string())?;
                    self.on_event(&client, event)?;
                }
                changed = committed.changed() => {
                    if changed.is_err() {
                        return Err("store closed".into());
                    }
                    unseen_commits = true;
                }
                _ = ack_tick.tick() => self.flush_acks(),
                _ = metrics_tick.tick() => {
                    let body = self.metrics.snapshot(now_ms(), self.system.snapshot());
                    let topic = topics::edge(&self.settings.edge_id, EdgeTopic::Metrics);
                    self.publish_other(&client, &topic, serde_json::to_vec(&body).unwrap_or_default(), false)?;
                }
            }
        }
    }

    async fn fill_window(&mut self, client: &AsyncClient, committed_seq: i64) -> Result<(), String> {
        let room = self.window.room();
        if !self.drain.has_buffered() {
            let drain = std::mem::take(&mut self.drain);
            let result = self
                .store
                .read(move |conn| {
                    let mut drain = drain;
                    let r = drain.fetch(conn, committed_seq, room, ROWS_PER_DEVICE);
                    Ok((drain, r))
                })
                .await
                .map_err(|e| e.to_string())?;
            let (drain, fetched) = result;
            self.drain = drain;
            fetched.map_err(|e| e.to_string())?;
        }
        while self.window.room() > 0 {
            let Some(row) = self.drain.pop() else { break };
            let topic = self.topic(&row.topic);
            match client.try_publish(topic, QoS::AtLeastOnce, false, row.payload.clone()) {
                Ok(()) => self.window.sent(Tracked::Row {
                    seq: row.seq,
                    sent: Instant::now(),
                }),
                Err(e) => {
                    self.drain.push_front(row);
                    tracing::debug!("publish queue full: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    fn publish_other(
        &mut self,
        client: &AsyncClient,
        suffix: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        client
            .try_publish(self.topic(suffix), QoS::AtLeastOnce, retain, payload)
            .map_err(|e| e.to_string())?;
        self.window.sent(Tracked::Other);
        Ok(())
    }

    fn on_event(&mut self, client: &AsyncClient, event: Event) -> Result<(), String> {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => self.window.on_outgoing_publish(pkid),
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => self.window.on_await_ack(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                self.metrics.uplink.pubacks_total.fetch_add(1, Relaxed);
                if let Puback::Row { latency, flush, .. } = self.window.on_puback(ack.pkid, Instant::now()) {
                    self.metrics.uplink.record_puback_latency(latency.as_millis() as u64);
                    self.metrics.uplink.published_total.fetch_add(1, Relaxed);
                    if flush {
                        self.flush_acks();
                    }
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let plane = self.plane.clone();
                let client = client.clone();
                let prefix = self.settings.prefix.clone();
                tokio::spawn(async move {
                    let topic = prefix.strip(&publish.topic).unwrap_or(&publish.topic).to_string();
                    match plane.submit_topic(&topic, &publish.payload).await {
                        // Acknowledged to the broker only once persisted or answered.
                        Ok(()) => {
                            let _ = client.ack(&publish).await;
                        }
                        Err(e) => tracing::error!(topic, "downstream command not persisted: {e}"),
                    }
                });
            }
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                tracing::error!("broker refused a downstream subscription");
            }
            _ => {}
        }
        Ok(())
    }

    fn flush_acks(&mut self) {
        self.ack_writes.retain(|h| !h.is_finished());
        let seqs = self.window.take_acked();
        if seqs.is_empty() {
            return;
        }
        let store = self.store.clone();
        self.ack_writes.push(tokio::spawn(async move {
            if let Err(e) = store.acknowledge(seqs).await {
                // The rows stay and are sent again: a duplicate, never a loss.
                tracing::warn!("deleting acknowledged rows failed: {e}");
            }
        }));
    }

    async fn shutdown(&mut self, client: &AsyncClient, eventloop: &mut EventLoop) {
        let topic = topics::edge(&self.settings.edge_id, EdgeTopic::Status);
        let _ = self.publish_other(client, &topic, self.status_payload("offline"), true);
        let _ = client.try_disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
            let done = matches!(event, Event::Outgoing(Outgoing::Disconnect));
            let _ = self.on_event(client, event);
            if done {
                break;
            }
        }
        self.flush_acks();
        for h in self.ack_writes.drain(..) {
            let _ = h.await;
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Acks received before a disconnect still delete their rows (fewer duplicates later).
        self.flush_acks();
    }
}
