//! Integration tests: the real `rustcorn` binary on ephemeral loopback ports, real sockets,
//! real signals. Guests are built from source once per run (see `support::guests_dir`).

mod status;
mod support;

mod balance;
mod bench_smoke;
mod binds_ops;
mod config;
mod corpus;
mod deploy;
mod docs;
mod faults;
mod fd_hygiene;
mod group_signals;
mod h2_memory;
mod hostile;
mod hygiene;
mod instance_reuse;
mod keep_alive;
mod keyvalue;
mod keyvalue_redis;
mod lifecycle;
mod logs;
mod memory_reset;
mod memory_trim;
mod metrics;
mod ops_signals;
mod outbound;
mod p3;
mod reload_state;
mod serving;
mod slow_bodies;
mod startup;
mod redis_server;
mod supervision;
mod swap_reset;
mod tls;
mod upgrade;
