//! USR2 binary upgrade: the arbiter forks and re-executes its own command line with the listening
//! sockets left open (`RUSTCORN_FD=3,4`) and its pid (`RUSTCORN_PARENT_PID`); the new arbiter
//! adopts those sockets instead of binding, and takes over once the old arbiter has exited.
use crate::sys::binds::{self, Listener};
use anyhow::{Context, Result};
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Listening sockets passed from the old arbiter, as comma-separated fd numbers.
pub const FD_ENV: &str = "RUSTCORN_FD";
/// The old arbiter's pid, in the new arbiter's environment.
pub const PARENT_ENV: &str = "RUSTCORN_PARENT_PID";
/// Variables describing inherited sockets, never passed on as they are.
const SOCKET_ENV: [&str; 5] = [FD_ENV, PARENT_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// How this process was started, recorded before anything can change it (Gunicorn's START_CTX).
#[derive(Debug, Clone)]
pub struct StartContext {
    argv: Vec<OsString>,
    cwd: PathBuf,
}

impl StartContext {
    /// `launch_dir` is the working directory `rustcorn` was started in, before any `--chdir`.
    pub fn capture(launch_dir: PathBuf) -> StartContext {
        StartContext { argv: std::env::args_os().collect(), cwd: launch_dir }
    }

    /// The directory the arbiter started in.
    pub fn directory(&self) -> &std::path::Path {
        &self.cwd
    }

    /// The command line after `rustcorn serve`.
    pub fn serve_args(&self) -> &[OsString] {
        self.argv.get(2..).unwrap_or(&[])
    }
}

/// The sockets an upgrading arbiter passed us, or None if we were not started by USR2. With
/// `--reuse-port` the TCP sockets are reservations that do not listen.
pub fn inherited_listeners(reuse_port: bool) -> Result<Option<Vec<Listener>>> {
    let Some(list) = std::env::var_os(FD_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(FD_ENV);
    let list = list.to_string_lossy().into_owned();
    let fds = list
        .split(',')
        .map(|fd| fd.trim().parse::<i32>().ok().filter(|fd| *fd >= 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| format!("${FD_ENV}={list:?} is not a list of file descriptors"))?;
    // All checked (open, distinct, listening sockets) before any is adopted: never a double close.
    binds::adopt_fds(&fds, !reuse_port)
        .with_context(|| format!("${FD_ENV}={list:?}: sockets from the previous arbiter"))
        .map(Some)
}

/// The old arbiter's pid if we are the new arbiter of an upgrade and it is still our parent.
pub fn old_arbiter() -> Option<Pid> {
    let value = std::env::var(PARENT_ENV).ok();
    std::env::remove_var(PARENT_ENV);
    let pid = Pid::from_raw(value?.trim().parse().ok()?);
    (nix::unistd::getppid() == pid).then_some(pid)
}

/// Forks and re-executes the command line this arbiter was started with, passing `listeners`.
/// Returns the new arbiter's pid (our child). The program is `argv[0]` resolved as a shell would
/// (from the start directory, or `PATH`), so a binary replaced on disk is the one that runs;
/// `/proc/self/exe` (the running binary, even if deleted) is the fallback.
pub fn reexec(start: &StartContext, listeners: &[&Listener]) -> Result<Pid> {
    let fds: Vec<i32> = listeners.iter().map(|l| l.raw_fd()).collect();
    let fd_list = fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let cstring = |bytes: &[u8]| CString::new(bytes).context("an argument or variable contains a NUL byte");
    let argv = start.argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<Vec<_>>>()?;
    let program = argv.first().cloned().context("the command line has no program name")?;
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        if SOCKET_ENV.iter().any(|k| key == *k) {
            continue;
        }
        let mut pair = key.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        envp.push(cstring(&pair)?);
    }
    envp.push(cstring(format!("{FD_ENV}={fd_list}").as_bytes())?);
    envp.push(cstring(format!("{PARENT_ENV}={}", std::process::id()).as_bytes())?);
    let cwd = cstring(start.cwd.as_os_str().as_bytes())?;
    let self_exe = cstring(b"/proc/self/exe")?;
    // The new arbiter starts as this one did: not with the serving generation's --umask.
    let umask = super::generation::inherited_umask();

    // SAFETY: the arbiter is single-threaded, so the child may allocate; it then execs or _exits.
    match unsafe { crate::sys::signals::fork() }.context("USR2: cannot fork the new arbiter")? {
        crate::sys::signals::Forked::Parent(child) => Ok(child),
        crate::sys::signals::Forked::Child(blocked) => {
            blocked.reset();
            // Only stdio and the listening sockets cross the exec, whatever else is open.
            let _ = crate::sys::fds::keep_only(&fds);
            // SAFETY: umask(2) has no failure mode.
            unsafe { libc::umask(umask as libc::mode_t) };
            for fd in &fds {
                // SAFETY: clearing FD_CLOEXEC on our own listening sockets so they survive exec.
                unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
            }
            // SAFETY: chdir to a NUL-terminated path.
            unsafe { libc::chdir(cwd.as_ptr()) };
            let error = match nix::unistd::execvpe(&program, &argv, &envp) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let fallback = match nix::unistd::execve(&self_exe, &argv, &envp) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let message = format!(
                "rustcorn: error: USR2: cannot execute {program:?} ({error}) nor /proc/self/exe ({fallback})\n"
            );
            // SAFETY: write(2) of a buffer we own, then leave without running destructors.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(127)
            }
        }
    }
}
