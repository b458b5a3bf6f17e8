//! GB/T 32960 gateway (server, sessions, downstream commands).
