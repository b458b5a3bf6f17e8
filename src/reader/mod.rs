//! GB/T 37987 reader management (placeholder header, completed below).

pub mod db;
pub mod records;
pub mod request;
pub mod rules;
pub mod session;
