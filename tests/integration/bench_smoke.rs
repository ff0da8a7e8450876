//! The benchmark harness in smoke mode (1 s loads, no peers), so it cannot rot. It asserts that
//! every step ran and reported, never anything about the figures.

use crate::support::*;
use std::process::Command;

#[test]
fn benchmark_harness_smoke_mode_runs() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bench/run.sh");
    // The harness would build a missing native-hello with cargo, which would wait forever on the
    // build lock this `cargo test` holds: `.ci/run` builds the workspace's binaries first.
    let native = std::path::Path::new(rustcorn_bin()).with_file_name("native-hello");
    assert!(native.exists(), "{} is missing: run `cargo build --release --workspace` first", native.display());
    let output = Command::new("bash")
        .arg(&script)
        .arg("--smoke")
        .env("RUSTCORN_BIN", rustcorn_bin())
        .env("BENCH_GUESTS", guests_dir())
        .output()
        .expect("run tests/bench/run.sh");
    let report = String::from_utf8_lossy(&output.stdout);
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smoke run failed:\n{report}\n{progress}");
    for row in [
        "| hello | rustcorn |",
        "| hello | native hyper |",
        "| echo-64k | rustcorn |",
        "Cold start",
        "Respawn",
        "Memory",
    ] {
        assert!(report.contains(row), "the report lacks {row:?}:\n{report}");
    }
}
