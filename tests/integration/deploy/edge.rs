//! Edge artifacts: `rustcorn compile --target TRIPLE` cross-compiles a `.cwasm` for another
//! architecture, and `check` / `serve` on the wrong machine refuse it with one line saying which
//! architecture it is for and how to rebuild it.

use super::compile;
use crate::support::*;
use std::process::Command;

/// ELF `e_machine` of a file (offset 18, little-endian on both targets).
fn elf_machine(path: &std::path::Path) -> u16 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is an ELF file", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The other architecture than this machine's, with its ELF machine number.
fn foreign_target() -> (&'static str, &'static str, u16) {
    if std::env::consts::ARCH == "aarch64" {
        ("x86_64-unknown-linux-gnu", "x86_64", EM_X86_64)
    } else {
        ("aarch64-unknown-linux-gnu", "aarch64", EM_AARCH64)
    }
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("rustcorn: error:")).collect()
}

#[test]
fn compile_for_another_architecture_then_check_and_serve_refuse_it_in_one_line() {
    let (target, arch, machine) = foreign_target();
    let dir = scratch_dir("edge");
    let cwasm = dir.path().join("hello-foreign.cwasm");
    let (ok, output) = compile(&guest("hello"), &cwasm, Some(target));
    assert!(ok, "rustcorn compile --target {target}: {output}");
    assert!(output.contains(&format!("for {target}")), "{output}");
    assert_eq!(elf_machine(&cwasm), machine, "the artifact is {arch} code");

    let check = Command::new(rustcorn_bin()).arg("check").arg(&cwasm).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(lines[0].contains(&format!("compiled for {arch}")), "says which architecture: {}", lines[0]);
    assert!(lines[0].contains("rustcorn compile"), "says how to rebuild: {}", lines[0]);

    let (status, _, stderr) = ServerCommand::new(&cwasm).args(["-w", "1"]).run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(
        lines[0].contains(&format!("compiled for {arch}")) && lines[0].contains("rustcorn compile"),
        "{}",
        lines[0]
    );
}

#[test]
fn compile_for_this_architecture_by_triple_gives_a_portable_artifact_that_serves() {
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let dir = scratch_dir("edge-host");
    let cwasm = dir.path().join("hello.cwasm");
    let (ok, output) = compile(&guest("hello"), &cwasm, Some(&host));
    assert!(ok, "{output}");
    let check = Command::new(rustcorn_bin()).arg("check").arg(&cwasm).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let server = ServerCommand::new(&cwasm).args(["-w", "1"]).start();
    assert_eq!(server.get("/").text(), "Hello, world!\n");
}

#[test]
fn compile_for_an_unsupported_target_fails_with_one_line() {
    let dir = scratch_dir("edge-bad");
    for (target, expect) in [("riscv64gc-unknown-linux-gnu", "supported:"), ("not-a-triple-at-all", "--target")] {
        let (ok, output) = compile(&guest("hello"), &dir.path().join("x.cwasm"), Some(target));
        assert!(!ok, "--target {target} should fail: {output}");
        let lines = error_lines(&output);
        assert_eq!(lines.len(), 1, "{output}");
        assert!(lines[0].contains(target) && lines[0].contains(expect), "{}", lines[0]);
        assert!(!dir.path().join("x.cwasm").exists());
    }
}

/// The bytes of ELF section `name` of `file`: (offset, size).
fn elf_section(file: &[u8], name: &str) -> (usize, usize) {
    let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
    let (table, entry, count, names) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C), u16_at(0x3E));
    let header = |i: usize| table + i * entry;
    let names_offset = u64_at(header(names) + 0x18);
    (0..count)
        .map(header)
        .find(|&h| {
            let start = names_offset + u32_at(h);
            file[start..].split(|&b| b == 0).next() == Some(name.as_bytes())
        })
        .map(|h| (u64_at(h + 0x18), u64_at(h + 0x20)))
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// A `.cwasm` from another wasmtime version (what an older or newer rustcorn writes): the version
/// recorded in its `.wasmtime.engine` section is changed, nothing else.
#[test]
fn a_cwasm_from_another_engine_version_is_refused_in_one_line() {
    let dir = scratch_dir("edge-version");
    let cwasm = dir.path().join("hello.cwasm");
    let (ok, output) = compile(&guest("hello"), &cwasm, None);
    assert!(ok, "{output}");
    let mut bytes = std::fs::read(&cwasm).unwrap();
    let (offset, size) = elf_section(&bytes, ".wasmtime.engine");
    // Layout: format version byte, version string length, version string.
    let length = bytes[offset + 1] as usize;
    assert!(length > 0 && 2 + length <= size);
    let last = offset + 1 + length;
    let original = String::from_utf8_lossy(&bytes[offset + 2..=last]).into_owned();
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    std::fs::write(&cwasm, &bytes).unwrap();

    let check = Command::new(rustcorn_bin()).arg("check").arg(&cwasm).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(lines[0].contains("another rustcorn version or engine configuration"), "{} (was {original})", lines[0]);
    assert!(lines[0].contains("rustcorn compile"), "{}", lines[0]);
}
