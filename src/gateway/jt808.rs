//! JT/T 808 gateway (server, sessions, subpackages, downstream commands).
