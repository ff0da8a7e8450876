//! Arbitrary bytes from a client, through a real hyper connection with rustcorn's socket guard,
//! HTTP/1 settings and request checks, up to where the guest would run (`http::dry_run`).
//! Any panic is a finding; so is a connection that neither answers nor closes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustcorn::config::settings::Settings;
use std::sync::{Arc, OnceLock};

fn settings() -> Arc<Settings> {
    static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| Arc::new(rustcorn::fuzzing::default_settings().expect("default settings"))).clone()
}

fuzz_target!(|data: &[u8]| {
    // Paused time: the header timeout and keep-alive bound fire as soon as all is idle.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let out = runtime.block_on(rustcorn::fuzzing::exchange(data, settings()));
    assert!(out.is_some(), "the connection neither answered nor closed");
});
