//! What `ps` and `top` show for rustcorn's processes (`-n/--name`): the kernel's 15-byte task
//! name, `rustcorn:NAME` for the arbiter and `rcw:NAME` for each worker.
use std::ffi::CString;

/// Linux keeps this many bytes of a task name (plus the terminating NUL).
const TASK_NAME_BYTES: usize = 15;

#[derive(Debug, Clone, Copy)]
pub enum Role {
    Arbiter,
    Worker,
}

/// Renames the calling process; a failure only loses a cosmetic name, so it is ignored.
pub fn set(role: Role, name: &str) {
    let prefix = match role {
        Role::Arbiter => "rustcorn:",
        Role::Worker => "rcw:",
    };
    let mut title: Vec<u8> = format!("{prefix}{name}").into_bytes();
    title.retain(|&b| b != 0);
    title.truncate(TASK_NAME_BYTES);
    if let Ok(title) = CString::new(title) {
        let _ = nix::sys::prctl::set_name(&title);
    }
}
