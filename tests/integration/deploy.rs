//! The shipped deployment files (`deploy/`) held to the binary's real behaviour: the systemd
//! units, the container image's command line as PID 1, the Kubernetes manifests, and the
//! `.cwasm` artifacts cross-compiled for edge nodes.

mod container;
mod edge;
mod kubernetes;
mod systemd;

use std::path::PathBuf;

/// `deploy/NAME` in the repository.
pub fn deploy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name)
}

pub fn read_deploy_file(name: &str) -> String {
    let path = deploy_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// True when the binary under test has the admin endpoints (`--admin-bind`, issue 9). The probe
/// tests need them; they are skipped, saying so, only when `serve --help` lacks the flag.
pub fn has_admin_bind() -> bool {
    let output = std::process::Command::new(crate::support::rustcorn_bin())
        .args(["serve", "--help"])
        .output()
        .expect("run rustcorn serve --help");
    String::from_utf8_lossy(&output.stdout).contains("--admin-bind")
}

pub use crate::support::skip;

/// `rustcorn compile APP -o OUT [--target T]`; returns (success, stdout + stderr).
pub fn compile(app: &std::path::Path, out: &std::path::Path, target: Option<&str>) -> (bool, String) {
    let mut command = std::process::Command::new(crate::support::rustcorn_bin());
    command.arg("compile").arg(app).arg("-o").arg(out);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    let output = command.output().expect("run rustcorn compile");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}
