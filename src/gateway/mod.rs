//! Vehicle gateways: the edge is the server for GB/T 32960 and JT/T 808 terminals. Each gateway
//! is a listener (from `link`), a pure per-connection session, and the glue that performs the
//! session's actions (store, replies after commit, command plane).

pub mod gbt32960;
pub mod jt808;
