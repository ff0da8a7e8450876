//! Differential: the same client bytes to rustcorn's framing check and to plain hyper with our
//! HTTP/1 settings (`http::dry_run::split_by_both`). Wherever the framing check judges the stream
//! and hyper reads all of it, both must find the same number of requests: a disagreement is a
//! request that could reach the guest past the checks run on the framing check's view.
//! Corpus: `fuzz/corpus/framing_agrees_with_hyper/` (replayed on stable by the unit tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = rustcorn::fuzzing::with_default_settings(|settings| rustcorn::fuzzing::split_by_both(data, settings));
    if let Some((framing, hyper)) = split {
        assert_eq!(framing, hyper, "the framing check found {framing} requests, hyper {hyper}");
    }
});
