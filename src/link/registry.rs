//! Who is connected: one live connection per device id. A new connection with the same id
//! replaces the old one (which is told to close). Downstream commands reach a connection through
//! its bounded channel; the registry is the [`DeviceGateway`] the command plane delivers to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{DeviceCommand, DeviceGateway};

/// Commands a connection may have queued.
const COMMAND_QUEUE: usize = 64;

struct Entry {
    connection: u64,
    /// The holder proved the id with its certificate.
    bound: bool,
    commands: mpsc::Sender<DeviceCommand>,
    replaced: CancellationToken,
}

/// The live connections of one protocol, by device id.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    next_connection: AtomicU64,
}

/// A connection's claim on a device id.
pub struct Claim {
    pub connection: u64,
    /// Downstream commands for this device.
    pub commands: mpsc::Receiver<DeviceCommand>,
    /// Cancelled when a newer connection claims the same id.
    pub replaced: CancellationToken,
}

impl Registry {
    /// A fresh connection number (to tell a device's successive connections apart).
    pub fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Relaxed)
    }

    /// Makes `connection` the live one for `device`, closing any previous holder.
    pub fn claim(&self, device: &str, connection: u64) -> Claim {
        self.claim_as(device, connection, false, true)
            .unwrap_or_else(|| unreachable_claim(connection))
    }

    /// Claims `device` for `connection` unless it may not replace the holder: a bound claim
    /// (identity proven by certificate) replaces anyone; an unbound one never replaces a bound
    /// holder, and replaces an unbound one only when `unbound_may_replace`. `None` when refused
    /// (the holder keeps the id).
    pub fn claim_as(&self, device: &str, connection: u64, bound: bool, unbound_may_replace: bool) -> Option<Claim> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let replaced = CancellationToken::new();
        let entry = Entry {
            connection,
            bound,
            commands: tx,
            replaced: replaced.clone(),
        };
        let mut e = self.entries.lock().ok()?;
        if let Some(old) = e.get(device).filter(|old| old.connection != connection) {
            let may = bound || (!old.bound && unbound_may_replace);
            if !may {
                tracing::warn!(
                    device,
                    holder_bound = old.bound,
                    "a new connection may not replace the one holding the id; refused"
                );
                return None;
            }
        }
        if let Some(old) = e.insert(device.to_string(), entry) {
            if old.connection != connection {
                tracing::info!(device, bound, "a new connection replaces the previous one");
                old.replaced.cancel();
            }
        }
        Some(Claim {
            connection,
            commands: rx,
            replaced,
        })
    }

    /// Forgets `device` if `connection` still holds it.
    pub fn release(&self, device: &str, connection: u64) {
        if let Ok(mut e) = self.entries.lock() {
            if e.get(device).is_some_and(|x| x.connection == connection) {
                e.remove(device);
            }
        }
    }

    /// Closes the live connection of `device`, if any (its access was revoked). Returns whether
    /// one was connected. The connection sees the same signal as a replacement and closes.
    pub fn disconnect(&self, device: &str) -> bool {
        let entry = self.entries.lock().ok().and_then(|mut e| e.remove(device));
        match entry {
            Some(old) => {
                old.replaced.cancel();
                true
            }
            None => false,
        }
    }

    pub fn is_online(&self, device: &str) -> bool {
        self.entries.lock().map(|e| e.contains_key(device)).unwrap_or(false)
    }

    /// Ids of the connected devices.
    pub fn online(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// `claim_as` with `bound` unset and replacement allowed never refuses; this keeps `claim`'s
/// signature total without a panic.
fn unreachable_claim(connection: u64) -> Claim {
    let (_, commands) = mpsc::channel(1);
    let replaced = CancellationToken::new();
    replaced.cancel();
    Claim {
        connection,
        commands,
        replaced,
    }
}

impl DeviceGateway for Registry {
    fn deliver(&self, command: DeviceCommand) -> Result<(), DeviceCommand> {
        let sender = match self.entries.lock() {
            Ok(e) => e.get(&command.device).map(|x| x.commands.clone()),
            Err(_) => None,
        };
        match sender {
            Some(tx) => tx.try_send(command).map_err(|e| e.into_inner()),
            None => Err(command),
        }
    }

    fn online(&self) -> Vec<String> {
        Registry::online(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(device: &str) -> DeviceCommand {
        DeviceCommand {
            id: 1,
            request_id: "r".into(),
            device: device.into(),
            payload: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn a_new_connection_replaces_the_old_one_and_gets_the_commands() {
        let r = Registry::default();
        let mut first = r.claim("VIN1", 1);
        let mut second = r.claim("VIN1", 2);
        assert!(first.replaced.is_cancelled());
        assert!(!second.replaced.is_cancelled());
        r.deliver(cmd("VIN1")).unwrap();
        assert!(second.commands.try_recv().is_ok());
        assert!(first.commands.try_recv().is_err());
        // The old connection's release does not unregister the new one.
        r.release("VIN1", 1);
        assert!(r.is_online("VIN1"));
        r.release("VIN1", 2);
        assert!(r.deliver(cmd("VIN1")).is_err());
    }

    #[test]
    fn an_unbound_claim_never_replaces_a_bound_holder_and_replaces_an_unbound_one_only_if_allowed() {
        let r = Registry::default();
        let bound = r.claim_as("VIN1", 1, true, true).unwrap();
        assert!(
            r.claim_as("VIN1", 2, false, true).is_none(),
            "unbound evicted a bound holder"
        );
        assert!(!bound.replaced.is_cancelled());
        let again = r.claim_as("VIN1", 3, true, false).unwrap();
        assert!(bound.replaced.is_cancelled(), "a bound claim replaces");
        r.release("VIN1", 3);
        drop(again);
        let unbound = r.claim_as("VIN2", 4, false, false).unwrap();
        assert!(r.claim_as("VIN2", 5, false, false).is_none());
        assert!(r.claim_as("VIN2", 6, false, true).is_some());
        assert!(unbound.replaced.is_cancelled());
    }
}
