//! JT/T 808 gateway: the edge is the platform for vehicle terminals (2011, 2013, 2019) on
//! `jt808.listen`, over TCP or TLS.
//!
//! - [`session`]: the pure per-connection state machine (register, auth, heartbeat, logout, data
//!   messages, subpackage reassembly, downlink commands with retransmission).
//! - [`server`]: the connection task that performs the session's actions: commits before replies,
//!   registration and authentication against the terminals table, the registry of live phones,
//!   command outcomes to the command plane.
//! - [`terminals`]: the `jt808_terminals` table (auth codes, provisioned terminals).
//! - [`provisioning`]: the service behind `jt808.provision` / `jt808.deprovision` and the web
//!   page's provisioning (which terminals may register under `jt808.auth: registry`).
//!
//! Publishes on `jt808/{phone}/{phone}/up` in EMQX's `{"header","body"}` shape plus the `edge`
//! envelope; commands arrive on `jt808/{phone}/{phone}/dn` through the command plane. A 0x0704
//! batch is published as one record, as EMQX publishes it. Must not parse bytes itself (the codec
//! in `protocol::jt808` does).

pub mod provisioning;
pub mod server;
pub mod session;
pub mod terminals;

use std::sync::Arc;
use std::time::Duration;

pub use provisioning::Provisioning;
pub use server::{spawn, spawn_with, ServerSettings};
pub use session::{Action, Commit, Now, Session, Settings};

use crate::config::{Jt808Config, TextEncoding};
use crate::limits::ByteBudget;
use crate::protocol::jt808::{ReassemblyLimits, TextEncoding as CodecText};

impl ServerSettings {
    /// Settings from the `jt808` configuration section (TLS files are read here).
    pub fn from_config(config: &Jt808Config) -> Result<ServerSettings, crate::tls::TlsError> {
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(crate::tls::server_config(
                &t.cert_file,
                &t.key_file,
                t.client_ca_file.as_deref(),
                t.allow_plain,
            )?)),
            None => None,
        };
        let idle = config.server.idle_timeout;
        let session = Settings {
            text: match config.encoding {
                TextEncoding::Gbk => CodecText::Gbk,
                TextEncoding::Utf8 => CodecText::Utf8,
            },
            idle_timeout_ms: duration_ms(idle),
            // A terminal authenticates right after connecting (S2013 §5); a silent one is not kept
            // longer than a minute, nor longer than the idle timeout.
            auth_timeout_ms: duration_ms(idle.min(Duration::from_secs(60))),
            reassembly_budget: Arc::new(ByteBudget::new(config.max_reassembly_bytes)),
            ..Settings::default()
        };
        let session = Settings {
            reassembly: ReassemblyLimits {
                timeout_ms: duration_ms(config.reassembly_timeout),
                ..session.reassembly
            },
            ..session
        };
        Ok(ServerSettings {
            session,
            auth: config.auth,
            tls,
            max_connections: config.server.max_connections,
            bind_identity: config.server.tls.as_ref().is_some_and(|t| t.bind_identity),
            allow_plain: config.server.tls.as_ref().is_some_and(|t| t.allow_plain),
            max_terminals: config.max_terminals,
            buffered: Arc::new(ByteBudget::new(config.server.max_buffered_bytes)),
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
