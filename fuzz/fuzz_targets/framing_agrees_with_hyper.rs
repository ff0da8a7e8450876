//! Differential: the same client bytes to rustcorn's framing check and to plain hyper with our
//! HTTP/1 settings (`http::dry_run::split_by_both`). Wherever the framing check judges the stream
//! and hyper reads all of it, both must find the same number of requests: a disagreement is a
//! request that could reach the guest past the checks run on the framing check's view.
//! Seeds: `host/tests/fuzz-seeds/framing_agrees_with_hyper/` (tracked, and replayed on stable by the
//! unit tests); run with `cargo fuzz run framing_agrees_with_hyper ../host/tests/fuzz-seeds/framing_agrees_with_hyper`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = rustcorn::fuzzing::with_default_settings(|settings| rustcorn::fuzzing::split_by_both(data, settings));
    if let Some((framing, hyper)) = split {
        assert_eq!(framing, hyper, "the framing check found {framing} requests, hyper {hyper}");
    }
});
