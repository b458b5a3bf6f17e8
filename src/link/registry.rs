//! Who is connected: one live connection per device id. A new connection with the same id
//! replaces the old one (which is told to close). Downstream commands reach a connection through
//! its bounded channel; the registry is the [`DeviceGateway`] the command plane delivers to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::command::{DeviceCommand, DeviceGateway};

/// Commands a connection may have queued.
const COMMAND_QUEUE: usize = 64;

struct Entry {
    connection: u64,
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
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let replaced = CancellationToken::new();
        let entry = Entry {
            connection,
            commands: tx,
            replaced: replaced.clone(),
        };
        if let Ok(mut e) = self.entries.lock() {
            if let Some(old) = e.insert(device.to_string(), entry) {
                if old.connection != connection {
                    tracing::info!(device, "a new connection replaces the previous one");
                    old.replaced.cancel();
                }
            }
        }
        Claim {
            connection,
            commands: rx,
            replaced,
        }
    }

    /// Forgets `device` if `connection` still holds it.
    pub fn release(&self, device: &str, connection: u64) {
        if let Ok(mut e) = self.entries.lock() {
            if e.get(device).is_some_and(|x| x.connection == connection) {
                e.remove(device);
            }
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
}
