//! Signal delivery for the arbiter: the async-signal-safe handler writes the signal's number into a
//! self-pipe, so the main loop reads every delivery in order (three TTINs are three bytes) and
//! handles them outside the handler. Workers write a 0 byte to the same pipe to wake the loop.
//! Every fork goes through [`fork`], which blocks signals across it: a child never runs the
//! arbiter's handler (which would write a group-wide signal into the arbiter's pipe a second time).
use anyhow::{Context, Result};
use nix::sys::signal::{pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
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

/// The arbiter's control signals: they mean nothing to any other process of ours, so a forked
/// child ignores them (a signal sent to the whole process group must not stop a worker, which
/// TTIN/TTOU would by default, nor kill it, which HUP would).
const CONTROL_SIGNALS: [Signal; 5] =
    [Signal::SIGHUP, Signal::SIGTTIN, Signal::SIGTTOU, Signal::SIGUSR2, Signal::SIGWINCH];

extern "C" fn record_signal(signo: libc::c_int) {
    // The interrupted code may be between a failing call and its read of errno: keep it intact.
    let saved_errno = nix::errno::Errno::last_raw();
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking so a full pipe is fine.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
    nix::errno::Errno::set_raw(saved_errno);
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

/// What [`fork`] returned.
pub enum Forked {
    Parent(nix::unistd::Pid),
    Child(BlockedInChild),
}

/// In a child just forked by [`fork`]: every signal is blocked until the child says which
/// dispositions it runs with. A signal that arrived meanwhile stays pending and is delivered
/// under those dispositions, never to the arbiter's handler.
#[must_use = "signals stay blocked in the child until `reset` or `restore`"]
pub struct BlockedInChild {
    previous: SigSet,
}

impl BlockedInChild {
    /// For a child that is not the arbiter (a worker, the compiler, the program a USR2 executes):
    /// forgets the arbiter's pipe, resets the dispositions, then unblocks every signal. The
    /// arbiter's control signals are ignored (see `CONTROL_SIGNALS`); USR1 (reopen logs) is
    /// ignored rather than fatal until a worker installs its own handler, so a logrotate during a
    /// worker's boot cannot kill it; TERM, INT, QUIT and CHLD get their default action.
    pub fn reset(self) {
        ARBITER_WAKE_FD.store(WAKE_FD.swap(-1, Ordering::SeqCst), Ordering::SeqCst);
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        for signal in ARBITER_SIGNALS.iter().chain([Signal::SIGCHLD].iter()) {
            let ignored = *signal == Signal::SIGUSR1 || CONTROL_SIGNALS.contains(signal);
            // SAFETY: restoring the default disposition (or ignoring), no handler involved.
            let _ = unsafe { sigaction(*signal, if ignored { &ignore } else { &default }) };
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    }

    /// For a child that goes on as the same program with the same handlers (the `--daemon`
    /// detach): the signal mask it had before the fork.
    pub fn restore(self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// fork(2) with every signal blocked across it. The parent's mask is restored before this
/// returns; the child starts with every signal blocked and must call [`BlockedInChild::reset`]
/// or [`BlockedInChild::restore`].
///
/// # Safety
/// As [`nix::unistd::fork`]: in a multi-threaded process the child may only make
/// async-signal-safe calls (the arbiter is single-threaded, so its children may do anything).
pub unsafe fn fork() -> nix::Result<Forked> {
    let mut previous = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut previous))?;
    // SAFETY: forwarded to the caller.
    let forked = unsafe { nix::unistd::fork() };
    if !matches!(forked, Ok(nix::unistd::ForkResult::Child)) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    Ok(match forked? {
        nix::unistd::ForkResult::Parent { child } => Forked::Parent(child),
        nix::unistd::ForkResult::Child => Forked::Child(BlockedInChild { previous }),
    })
}

/// In a forked worker: the arbiter's wake pipe (write end), which the worker keeps open.
pub fn arbiter_wake_fd() -> Option<std::os::fd::RawFd> {
    Some(ARBITER_WAKE_FD.load(Ordering::SeqCst)).filter(|fd| *fd >= 0)
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
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

    /// The handlers and the wake pipe are process-wide: one test at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serialized() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn deliveries_come_out_in_order_and_uncoalesced() {
        let _one = serialized();
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

    #[test]
    fn the_handler_leaves_errno_as_it_found_it() {
        let _one = serialized();
        let pipe = SignalPipe::install().unwrap();
        // A full pipe: the handler's write(2) fails with EAGAIN, which would overwrite errno.
        let filler = [0u8; 4096];
        while nix::unistd::write(&pipe._write, &filler).is_ok() {}
        assert_eq!(nix::errno::Errno::last(), nix::errno::Errno::EAGAIN, "the pipe is full");
        nix::errno::Errno::set_raw(libc::ENOTTY);
        // SAFETY: raise(3) runs our handler on this thread before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGTTIN) }, 0);
        assert_eq!(nix::errno::Errno::last_raw(), libc::ENOTTY, "errno after a handled signal");
        pipe.take();
    }

    #[test]
    fn a_child_never_runs_the_arbiters_handler_and_ignores_control_signals() {
        let _one = serialized();
        let pipe = SignalPipe::install().unwrap();
        let mut mask_before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask_before)).unwrap();
        // SAFETY: the child makes only async-signal-safe calls (raise, sigaction, sigprocmask, _exit).
        match unsafe { fork() }.unwrap() {
            Forked::Child(blocked) => {
                let mut mask = SigSet::empty();
                let all_blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask)).is_ok()
                    && ARBITER_SIGNALS.iter().all(|signal| mask.contains(*signal));
                // SAFETY: raise/_exit in the child.
                unsafe {
                    // Pending while blocked, as a group-wide TTIN sent right after fork would be.
                    libc::raise(libc::SIGTTIN);
                    blocked.reset();
                    // A worker ignores the arbiter's control signals: neither stopped nor killed.
                    libc::raise(libc::SIGTTIN);
                    libc::raise(libc::SIGHUP);
                    libc::_exit(if all_blocked { 0 } else { 2 })
                }
            }
            Forked::Parent(child) => {
                let status = waitpid(child, Some(WaitPidFlag::WUNTRACED)).unwrap();
                if matches!(status, WaitStatus::Stopped(..)) {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                }
                assert_eq!(status, WaitStatus::Exited(child, 0), "0: every signal was blocked at fork, then ignored");
            }
        }
        // Only the parent's own SIGCHLD for the exited child may be there.
        let delivered: Vec<Signal> = pipe.take().into_iter().filter(|s| *s != Signal::SIGCHLD).collect();
        assert!(delivered.is_empty(), "the child wrote {delivered:?} into the arbiter's pipe");
        let mut mask_after = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask_after)).unwrap();
        assert_eq!(mask_after, mask_before, "the parent's mask is restored after the fork");
    }
}
