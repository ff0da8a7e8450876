//! `-D/--daemon`: once the app is compiled and the sockets are bound, detach (fork, setsid, fork)
//! and redirect stdio to /dev/null. The process started from the shell stays in the foreground
//! until the daemon is ready, prints its readiness line and exits 0 (1 if the daemon died first),
//! so scripts and `Type=forking` units see startup errors and know when it serves.
use crate::sys::signals::{self, Forked};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;

/// The daemon's end of the pipe to the foreground process.
pub struct ReadyPipe(std::fs::File);

impl ReadyPipe {
    /// Hands the readiness line to the foreground process, which prints it and exits.
    pub fn send_ready(mut self, line: &str) {
        let _ = self.0.write_all(format!("{line}\n").as_bytes());
    }
}

/// Detaches. Returns in the daemon; the calling process waits for the daemon and exits.
pub fn daemonize() -> Result<ReadyPipe> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("--daemon: cannot create a pipe")?;
    // SAFETY: the arbiter is single-threaded here (no runtime, no workers yet).
    match unsafe { signals::fork() }.context("--daemon: cannot fork")? {
        Forked::Parent(child) => {
            drop(write_end);
            let _ = nix::sys::wait::waitpid(child, None);
            std::process::exit(wait_for_daemon(read_end));
        }
        // The daemon goes on as the arbiter: the signal mask it had, no handler reset.
        Forked::Child(blocked) => blocked.restore(),
    }
    drop(read_end);
    nix::unistd::setsid().context("--daemon: setsid failed")?;
    // A second fork: the daemon is not a session leader, so it can never acquire a terminal.
    // SAFETY: still single-threaded.
    match unsafe { signals::fork() }.context("--daemon: cannot fork")? {
        // SAFETY: leave at once without running any destructor of the parent's state.
        Forked::Parent(_) => unsafe { libc::_exit(0) },
        Forked::Child(blocked) => blocked.restore(),
    }
    let mut pipe = std::fs::File::from(write_end);
    let _ = pipe.write_all(format!("pid {}\n", std::process::id()).as_bytes());
    Ok(ReadyPipe(pipe))
}

/// In the foreground process: relay the daemon's readiness line; the exit status.
fn wait_for_daemon(read_end: OwnedFd) -> i32 {
    let mut daemon_pid = String::from("?");
    for line in BufReader::new(std::fs::File::from(read_end)).lines() {
        let Ok(line) = line else { break };
        if let Some(pid) = line.strip_prefix("pid ") {
            daemon_pid = pid.to_string();
        } else {
            println!("{line}");
            return 0;
        }
    }
    eprintln!("rustcorn: error: the daemon (pid {daemon_pid}) exited before it was ready; see the error log");
    1
}

/// In the daemon, once startup can no longer fail on the terminal: stdin, stdout and stderr
/// become /dev/null (log to files with --error-logfile / --access-logfile).
pub fn detach_stdio() -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").context("cannot open /dev/null")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot redirect stdio to /dev/null");
        }
    }
    Ok(())
}
