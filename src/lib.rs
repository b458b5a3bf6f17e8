//! roadedge: a roadside edge appliance. See README.md and docs/ARCHITECTURE.md.

pub mod app;
pub mod cli;
pub mod command;
pub mod config;
pub mod demo;
pub mod fusion;
pub mod gateway;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod reader;
pub mod sim;
pub mod store;
pub mod time;
pub mod tls;
pub mod topics;
pub mod uplink;
pub mod web;
