//! Arbitrary bytes from a client, through a real hyper connection with rustcorn's socket guard,
//! HTTP/1 settings and request checks, up to where the guest would run (`worker::dry_run`).
//! Any panic is a finding; so is a connection that neither answers nor closes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn settings() -> Arc<rustcorn::config::settings::Settings> {
    static SETTINGS: OnceLock<Arc<rustcorn::config::settings::Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| Arc::new(rustcorn::worker::dry_run::default_settings().expect("default settings"))).clone()
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let served = tokio::spawn(rustcorn::worker::dry_run::serve(server, settings()));
        let input = data.to_vec();
        let (mut read_half, mut write_half) = tokio::io::split(&mut client);
        let write = async move {
            let _ = write_half.write_all(&input).await;
            let _ = write_half.shutdown().await;
        };
        let read = async move {
            let mut out = Vec::new();
            let _ = read_half.read_to_end(&mut out).await;
            out
        };
        // Time is paused: the header timeout and keep-alive bound fire as soon as all is idle.
        let ended = tokio::time::timeout(Duration::from_secs(3600), async { tokio::join!(write, read) }).await;
        assert!(ended.is_ok(), "the connection neither answered nor closed");
        let _ = served.await;
    });
});
