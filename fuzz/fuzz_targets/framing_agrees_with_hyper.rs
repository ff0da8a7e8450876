//! Differential: the same client bytes to rustcorn's framing check and to plain hyper with our
//! HTTP/1 settings (`http::dry_run::split_by_both`). Wherever the framing check judges the stream
//! and hyper reads all of it, both must find the same number of requests: a disagreement is a
//! request that could reach the guest past the checks run on the framing check's view.
//! Corpus: `fuzz/corpus/framing_agrees_with_hyper/` (replayed on stable by the unit tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustcorn::config::settings::Settings;
use std::sync::{Arc, OnceLock};

fn settings() -> Arc<Settings> {
    static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| Arc::new(rustcorn::fuzzing::default_settings().expect("default settings"))).clone()
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    if let Some((framing, hyper)) = runtime.block_on(rustcorn::fuzzing::split_by_both(data, settings())) {
        assert_eq!(framing, hyper, "the framing check found {framing} requests, hyper {hyper}");
    }
});
