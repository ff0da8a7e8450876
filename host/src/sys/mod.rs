//! Thin wrappers over the operating system, shared by the arbiter and the workers.
pub mod binds;
pub mod daemon;
pub mod fds;
pub mod heartbeat;
pub mod pidfile;
pub mod privileges;
pub mod process_name;
pub mod sd_notify;
pub mod signals;
