//! systemd's readiness protocol: when `NOTIFY_SOCKET` is set, the arbiter sends `READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `MAINPID=` and `STATUS=` datagrams to it. A no-op otherwise.
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends one notification (newline-separated `KEY=VALUE` assignments). Failures are logged at
/// debug level only: a missing or full notify socket must never stop the server.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        crate::log_debug!("sd_notify {state:?} to {target:?} failed: {e}");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    let addr = match bytes.first() {
        // Linux abstract namespace: systemd writes it with a leading '@'.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(target)?,
        _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a unix socket path")),
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// `READY=1`, naming this process as the service's main pid (it may have replaced an older
/// arbiter after USR2; systemd accepts a MAINPID from a non-main process with `NotifyAccess=all`).
pub fn ready(status: &str) {
    notify(&format!("READY=1\nMAINPID={}\nSTATUS={status}", std::process::id()));
}

/// `RELOADING=1` with the timestamp `Type=notify-reload` expects, and this process as main pid.
pub fn reloading() {
    let usec = crate::sys::heartbeat::monotonic_ms() * 1000;
    notify(&format!("RELOADING=1\nMAINPID={}\nMONOTONIC_USEC={usec}\nSTATUS=reloading", std::process::id()));
}

pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}
