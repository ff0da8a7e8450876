//! Startup: bad apps and bad settings fail fast with one clear line, before any worker forks;
//! `check` and `compile`; the compile cache.

use crate::support::*;
use std::path::Path;
use std::process::Command;

/// Starts `serve` expecting a startup failure; returns stderr after checking no worker booted.
fn serve_fails(app: &Path, args: &[&str]) -> String {
    let (status, stdout, stderr) = ServerCommand::new(app).args(args).run_to_exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stdout.is_empty(), "no readiness line: {stdout}");
    assert!(!stderr.contains("Booting worker"), "no worker may start:\n{stderr}");
    stderr
}

fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rustcorn: error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line:\n{stderr}");
    errors[0]
}

fn write_wat(dir: &Path, name: &str, wat_text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat_text).unwrap()).unwrap();
    path
}

#[test]
fn missing_app_file() {
    let stderr = serve_fails(Path::new("/nonexistent/app.wasm"), &[]);
    let line = error_line(&stderr);
    assert!(line.contains("/nonexistent/app.wasm") && line.contains("No such file"), "{line}");
}

#[test]
fn not_wasm_at_all() {
    let dir = scratch_dir("not-wasm");
    let app = dir.path().join("app.wasm");
    std::fs::write(&app, "print('hello')\n").unwrap();
    let line = error_line(&serve_fails(&app, &[])).to_string();
    assert!(line.contains("not a WebAssembly component"), "{line}");
}

#[test]
fn core_module_is_not_a_component() {
    let dir = scratch_dir("core-module");
    let app = write_wat(dir.path(), "core.wasm", "(module (func (export \"run\")))");
    let line = error_line(&serve_fails(&app, &[])).to_string();
    assert!(line.contains("core WebAssembly module, not a component"), "{line}");
}

#[test]
fn component_of_the_wrong_world() {
    let dir = scratch_dir("wrong-world");
    let app = write_wat(dir.path(), "cli.wasm", "(component (core module $m (func (export \"f\"))))");
    let line = error_line(&serve_fails(&app, &[])).to_string();
    // Both worlds rustcorn serves are named, with why each did not match.
    assert!(line.contains("not a servable wasi:http component"), "{line}");
    assert!(line.contains("incoming-handler@0.2") && line.contains("handler@0.3.0"), "{line}");
}

#[test]
fn component_with_an_import_the_host_cannot_satisfy() {
    let dir = scratch_dir("bad-import");
    let app = write_wat(
        dir.path(),
        "import.wasm",
        r#"(component (import "acme:db/query@1.0.0" (instance (export "run" (func)))))"#,
    );
    let line = error_line(&serve_fails(&app, &[])).to_string();
    assert!(line.contains("acme:db/query"), "names the import: {line}");
}

#[test]
fn bad_settings_name_the_flag() {
    let hello = guest("hello");
    for (args, flag) in [
        (&["-w", "0"][..], "--workers"),
        (&["-b", "not an address"][..], "--bind"),
        (&["--max-memory", "lots"][..], "--max-memory"),
        (&["--log-level", "loud"][..], "--log-level"),
        (&["--access-logformat", "%(zz)s"][..], "--access-logformat"),
    ] {
        let (status, _, stderr) = ServerCommand::new(&hello).args(args.iter().copied()).run_to_exit();
        assert_ne!(status.code(), Some(0), "{args:?} must fail");
        assert!(!stderr.contains("Booting worker"), "{stderr}");
        let first = stderr.lines().find(|l| l.contains("error")).unwrap_or_default();
        assert!(first.contains(flag), "{args:?}: the error names {flag}: {stderr}");
    }
}

#[test]
fn check_reports_imports_and_exports() {
    let output = Command::new(rustcorn_bin()).arg("check").arg(guest("hello")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("wasi:http/incoming-handler"), "{stdout}");
    assert!(stdout.contains("wasi:http/types"), "lists imports: {stdout}");

    let dir = scratch_dir("check-core");
    let core = write_wat(dir.path(), "core.wasm", "(module)");
    let output = Command::new(rustcorn_bin()).arg("check").arg(&core).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn compile_ahead_of_time_then_serve_the_cwasm() {
    let dir = scratch_dir("aot");
    let cwasm = dir.path().join("hello.cwasm");
    let status =
        Command::new(rustcorn_bin()).arg("compile").arg(guest("hello")).arg("-o").arg(&cwasm).status().unwrap();
    assert!(status.success());
    let server = Server::start(&cwasm, &["-w", "1"]);
    assert_eq!(server.get("/").text(), "Hello, world!\n");
    assert_eq!(server.log.count(&["ms; cached at"]), 0, "a .cwasm is served as is, never recompiled");
}

#[test]
fn a_restart_reuses_the_compile_cache() {
    let dir = scratch_dir("cache");
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    // Each start uses this test's own cache: the first compiles, the second must not.
    let first = Server::start(&guest("echo"), &["-w", "1", "--cache-dir", cache_arg]);
    first.log.wait_for(&["ms; cached at"], WAIT);
    drop(first);
    let second = Server::start(&guest("echo"), &["-w", "1", "--cache-dir", cache_arg]);
    second.log.wait_for(&["using the compiled app from the cache"], WAIT);
    assert_eq!(second.log.count(&["ms; cached at"]), 0);
    assert_eq!(second.post("/", b"cached").text(), "cached");
}
