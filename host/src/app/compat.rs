//! Why a `.cwasm` does not load here, in one line that says how to rebuild it: wasmtime's
//! compatibility check names the mismatch (architecture, OS, CPU features, engine settings or
//! version); this turns it into advice.

/// The target triple `rustcorn compile --target` takes for this machine.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// One line for a precompiled `app` that wasmtime refused with `reason` (its error chain).
pub fn explain(app: &std::path::Path, reason: &str) -> String {
    let app = app.display();
    let host = host_triple();
    let rebuild = format!("rebuild it from the .wasm with `rustcorn compile APP.wasm -o {app}`");
    let quoted = |prefix: &str| {
        reason.find(prefix).map(|at| {
            let rest = &reason[at + prefix.len()..];
            rest.split('\'').next().unwrap_or(rest).to_string()
        })
    };
    if let Some(arch) = quoted("compiled for architecture '") {
        return format!(
            "cannot load precompiled app {app}: it was compiled for {arch}, this machine is {}; {rebuild} here, \
             or with `--target {host}` on the build machine",
            std::env::consts::ARCH
        );
    }
    if let Some(os) = quoted("compiled for operating system '") {
        return format!(
            "cannot load precompiled app {app}: it was compiled for {os}, this machine runs Linux; {rebuild}"
        );
    }
    if reason.contains("is enabled, but not available on the host") {
        return format!(
            "cannot load precompiled app {app}: it was compiled for CPU features this machine lacks ({}); \
             {rebuild} here, or with `--target {host}` (the architecture's baseline) on the build machine",
            reason.rsplit(": ").next().unwrap_or(reason)
        );
    }
    format!(
        "cannot load precompiled app {app}: it was compiled by another rustcorn version or engine configuration \
         ({reason}); {rebuild} with this rustcorn"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn another_architecture_names_both_and_the_target_flag() {
        let line = explain(Path::new("app.cwasm"), "Module was compiled for architecture 'aarch64'");
        assert!(line.contains("compiled for aarch64"), "{line}");
        assert!(line.contains(&format!("this machine is {}", std::env::consts::ARCH)), "{line}");
        assert!(line.contains("rustcorn compile APP.wasm -o app.cwasm"), "{line}");
        assert!(line.contains(&format!("--target {}", host_triple())), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn cpu_features_point_at_the_baseline_target() {
        let reason = "compilation settings of module incompatible with native host: \
                      compilation setting \"has_avx512f\" is enabled, but not available on the host";
        let line = explain(Path::new("a.cwasm"), reason);
        assert!(line.contains("CPU features this machine lacks"), "{line}");
        assert!(line.contains("has_avx512f"), "{line}");
    }

    #[test]
    fn engine_settings_or_version_say_rebuild_with_this_rustcorn() {
        let line = explain(Path::new("a.cwasm"), "Module was compiled with incompatible version '47.0.0'");
        assert!(line.contains("another rustcorn version or engine configuration"), "{line}");
        assert!(line.contains("47.0.0") && line.contains("with this rustcorn"), "{line}");
        let line = explain(
            Path::new("a.cwasm"),
            "Module was compiled without epoch interruption but it is enabled for the host",
        );
        assert!(line.contains("engine configuration") && line.contains("epoch"), "{line}");
        // A shared (non-CPU) Cranelift setting has the same context line as the CPU features.
        let reason = "compilation settings of module incompatible with native host: \
                      setting \"preserve_frame_pointers\" is configured to Bool(true) which is not supported";
        let line = explain(Path::new("a.cwasm"), reason);
        assert!(line.contains("engine configuration") && !line.contains("CPU features"), "{line}");
    }
}
