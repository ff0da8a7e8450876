//! The benchmark harness in smoke mode (one round of 1 s loads, no installed peers), so it cannot
//! rot. It asserts that every step ran and reported, never anything about the figures.

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
        // One alternating round per workload, with the per-round ratio against native hyper and
        // the summary rows and Targets table built from them.
        "### hello\n",
        "| round | load start → end | order | rustcorn | native hyper | ÷ native hyper |",
        "| 1 | ",
        "| **median** |",
        "median of the per-round ratios",
        // CPU per request per server, and how rustcorn's CPU split over its workers.
        "| round | rustcorn µs | native hyper µs | ÷ native hyper | rustcorn busiest worker |",
        "ticks) |",
        // The machine line names what the pool's slot reset can use.
        "PAGEMAP_SCAN ",
        "userfaultfd async write-protect ",
        "### echo-64k\n",
        "### python-app GET /\n",
        "### js-app GET /\n",
        "## Targets",
        "| hello req/s, rustcorn ÷ native hyper (no wasm: the ceiling) | **",
        "| hello | rustcorn https (h1) |",
        "Cold start",
        "Respawn",
        "Memory",
    ] {
        assert!(report.contains(row), "the report lacks {row:?}:\n{report}");
    }
}
