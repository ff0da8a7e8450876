//! Signal delivery for the arbiter: the async-signal-safe handler writes the signal's number into a
//! self-pipe, so the main loop reads every delivery in order (three TTINs are three bytes) and
//! handles them outside the handler. Workers write a 0 byte to the same pipe to wake the loop.
use anyhow::{Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Signals the arbiter acts on.
pub const ARBITER_SIGNALS: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// In a worker: the arbiter's self-pipe, inherited through fork, to wake it on news.
static ARBITER_WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn record_signal(signo: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking so a full pipe is fine.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// The arbiter's self-pipe and installed handlers.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    /// Installs handlers for the arbiter's signals and SIGCHLD; ignores SIGPIPE.
    pub fn install() -> Result<SignalPipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot create the signal pipe")?;
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        let action = SigAction::new(SigHandler::Handler(record_signal), SaFlags::SA_RESTART, SigSet::empty());
        for signal in ARBITER_SIGNALS.iter().chain([Signal::SIGCHLD].iter()) {
            // SAFETY: the handler only touches atomics and calls write(2).
            unsafe { sigaction(*signal, &action) }.with_context(|| format!("cannot install a {signal} handler"))?;
        }
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: ignoring SIGPIPE has no handler.
        unsafe { sigaction(Signal::SIGPIPE, &ignore) }.context("cannot ignore SIGPIPE")?;
        Ok(SignalPipe { read, _write: write })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe and returns the signals delivered since the last call, in delivery order
    /// (worker wake-ups, 0 bytes, are dropped).
    pub fn take(&self) -> Vec<Signal> {
        let mut delivered = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            delivered.extend(buf[..n].iter().filter(|b| **b != 0).filter_map(|b| Signal::try_from(i32::from(*b)).ok()));
        }
        delivered
    }
}

/// In a freshly forked child: restore default dispositions and forget the arbiter's pipe. USR1
/// (reopen logs) is ignored rather than fatal until the worker installs its own handler, so a
/// logrotate during a worker's boot cannot kill it.
pub fn reset_in_child() {
    ARBITER_WAKE_FD.store(WAKE_FD.swap(-1, Ordering::SeqCst), Ordering::SeqCst);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for signal in ARBITER_SIGNALS.iter().chain([Signal::SIGCHLD].iter()) {
        let action = if *signal == Signal::SIGUSR1 { &ignore } else { &default };
        // SAFETY: restoring the default disposition (or ignoring), no handler involved.
        let _ = unsafe { sigaction(*signal, action) };
    }
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// From a worker: wake the arbiter's main loop now (the worker wrote news to its heartbeat page).
pub fn wake_arbiter() {
    let fd = ARBITER_WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 0u8;
        // SAFETY: a one-byte write to the inherited non-blocking pipe.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// True when this process is in the foreground process group of its controlling terminal: there
/// the kernel sends WINCH whenever the window is resized, so WINCH cannot mean "stop workers".
pub fn in_terminal_foreground() -> bool {
    // SAFETY: open/tcgetpgrp/close on a descriptor we own; O_NOCTTY never acquires a terminal.
    unsafe {
        let fd = libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let foreground = libc::tcgetpgrp(fd);
        libc::close(fd);
        foreground >= 0 && foreground == libc::getpgrp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_come_out_in_order_and_uncoalesced() {
        let pipe = SignalPipe::install().unwrap();
        // raise(3) runs the handler before it returns, so each is a distinct delivery.
        for signal in [Signal::SIGTTOU, Signal::SIGTTIN, Signal::SIGTTIN, Signal::SIGTTIN, Signal::SIGHUP] {
            nix::sys::signal::raise(signal).unwrap();
        }
        wake_arbiter();
        let expected = [Signal::SIGTTOU, Signal::SIGTTIN, Signal::SIGTTIN, Signal::SIGTTIN, Signal::SIGHUP];
        assert_eq!(pipe.take(), expected);
        assert!(pipe.take().is_empty());
    }
}
