//! Arbitrary bytes from a client, through a real hyper connection with rustcorn's socket guard,
//! HTTP/1 settings and request checks, up to where the guest would run (`http::dry_run`).
//! Any panic is a finding; so is a connection that neither answers nor closes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = rustcorn::fuzzing::with_default_settings(|settings| rustcorn::fuzzing::exchange(data, settings));
    assert!(out.is_some(), "the connection neither answered nor closed");
});
