//! What a connection hands to and takes from the command plane: a command for its device, how
//! the command ended, and the gateway trait the plane delivers through. Kept here, below both the
//! plane (`crate::command`, which re-exports them) and the protocol gateways, so `link` needs
//! nothing above it.

use serde_json::Value;

/// A command handed to a device gateway.
#[derive(Debug, Clone)]
pub struct DeviceCommand {
    /// The command's row id; pass it back to the command plane (`CommandPlane::complete` or `CommandPlane::release`).
    pub id: i64,
    pub request_id: String,
    pub device: String,
    /// The command as the cloud sent it (protocol JSON).
    pub payload: Value,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The device answered; the value is the answer's JSON.
    Answer(Value),
    /// The device did not answer within the protocol's retries.
    Timeout,
    /// Not executed, with a reason.
    Rejected(String),
    /// The TTL passed while the device was offline (set by the plane itself).
    Expired,
    /// Executed and failed, with what happened (e.g. an update that was rolled back).
    Failed(String),
}

/// Implemented by each device gateway (GB/T 32960, JT/T 808, GB/T 37987).
pub trait DeviceGateway: Send + Sync {
    /// Hands the command to the device's live session. Returns it back when the device is not
    /// connected, so it stays queued.
    fn deliver(&self, command: DeviceCommand) -> Result<(), DeviceCommand>;

    /// Ids of the devices connected now (the web page's lists).
    fn online(&self) -> Vec<String> {
        Vec::new()
    }
}
