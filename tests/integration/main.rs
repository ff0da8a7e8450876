//! Integration tests: the real rustcorn binary, real sockets, real signals.
