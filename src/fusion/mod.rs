//! Vehicle data fusion (CONTRACT 4, issue 8): joins the tag reads of the site's GB/T 37987
//! readers with the telemetry of GB/T 32960 and JT/T 808 vehicles into passage events, and finds
//! the frauds electronic plates exist to catch (a cloned tag, a vehicle without its tag).
//!
//! Owns: the identity registry ([`registry`]), plate decoding ([`plate`]), the pure passage
//! engine ([`engine`]) and its geometry ([`geo`]), the reading of committed records
//! ([`input`]) and the service that runs it all after the store's commits ([`service`]).
//! Must not: delay the data path: fusion consumes committed records only, after their commit.

pub mod engine;
pub mod geo;
pub mod input;
pub mod plate;
pub mod registry;
pub mod service;

pub use registry::{Fact, Key, ListQuery, Registry, RegistryError, Vehicle, VehicleInput};
pub use service::{FusionService, FusionSettings, PassageQuery};
