//! The generic connection layer shared by every device protocol: TCP/TLS listening with limits,
//! buffered frame I/O with idle timeouts, the registry of live device connections, and the
//! reconnect backoff of outgoing links.
//! Contains no protocol logic: protocols bring a pure decoder and a session.

pub mod backoff;
pub mod command;
pub mod framed;
pub mod listener;
pub mod registry;

pub use framed::{FrameDecoder, FramedIo, LinkError, Read};
pub use listener::{bind, serve, Accepted, Binding, ByteStream, ListenerSettings, PeerIdentity};
pub use registry::{Claim, Registry};
