//! The supervisor's answers to signals (in delivery order).
use super::{Action, Actions, ChildSignal, Sig, Supervisor, KILL_GRACE};
use crate::arbiter::lifecycle::{LeaveReason, Lifecycle, Phase, Upgrade};
use crate::log::Level;

impl<P> Supervisor<P> {
    pub(super) fn on_signal(&mut self, sig: Sig, out: &mut Actions<P>) {
        let draining = self.lifecycle.is_draining();
        match sig {
            Sig::Term => self.begin_shutdown(true, out),
            Sig::Int | Sig::Quit => self.begin_shutdown(false, out),
            _ if draining => out.log(Level::Info, format!("{sig:?} ignored while shutting down")),
            Sig::Hup => {
                out.log(Level::Info, "Handling signal: hup; reloading settings and the app".into());
                self.preparing_reload = true;
                out.0.push(Action::PrepareReload);
            }
            Sig::Ttin => {
                self.current.target += 1;
                out.log(Level::Info, format!("TTIN: now {} workers", self.current.target));
            }
            Sig::Ttou if self.current.target > 1 => {
                self.current.target -= 1;
                out.log(Level::Info, format!("TTOU: now {} workers", self.current.target));
            }
            Sig::Ttou => out.log(Level::Info, format!("TTOU ignored: already at {} worker(s)", self.current.target)),
            Sig::Usr1 => {
                out.log(Level::Info, "Handling signal: usr1; reopening the log files".into());
                out.0.push(Action::ReopenLogs);
                for worker in self.workers.iter().filter(|w| w.phase != Phase::Killed) {
                    out.0.push(Action::Signal(worker.pid, ChildSignal::Usr1));
                }
            }
            Sig::Usr2 => match self.upgrade {
                Upgrade::Child(pid) => out.log(
                    Level::Warning,
                    format!("USR2 ignored: the new arbiter (pid {pid}) from the last USR2 is still running"),
                ),
                Upgrade::Parent(pid) => out.log(
                    Level::Warning,
                    format!("USR2 ignored: the old arbiter (pid {pid}) is still running; stop it first"),
                ),
                Upgrade::None => {
                    out.log(
                        Level::Info,
                        "Handling signal: usr2; starting a new arbiter with the same command line".into(),
                    );
                    out.0.push(Action::StartUpgrade);
                }
            },
            Sig::Winch => {
                out.log(
                    Level::Info,
                    "Handling signal: winch; stopping all workers (the arbiter stays; HUP or TTIN starts them again)"
                        .into(),
                );
                self.current.target = 0;
                for index in 0..self.workers.len() {
                    if self.workers[index].is_up() {
                        self.retire(index, LeaveReason::Removed, out);
                    }
                }
            }
        }
    }

    /// TERM: graceful (workers finish in-flight requests); INT/QUIT: quick.
    pub(super) fn begin_shutdown(&mut self, graceful: bool, out: &mut Actions<P>) {
        let now = self.now;
        if let Lifecycle::Draining { graceful: was_graceful, .. } = self.lifecycle {
            if graceful || !was_graceful {
                return;
            }
            out.log(Level::Info, "Quick shutdown requested while draining".into());
        } else {
            out.log(Level::Info, format!("Handling signal: {}", if graceful { "term" } else { "quick shutdown" }));
            // After a USR2 the new arbiter is the service now: our exit is not its stop.
            if !matches!(self.upgrade, Upgrade::Child(_)) {
                out.0.push(Action::NotifyStopping);
            }
            out.0.push(Action::CloseListeners);
            if std::mem::take(&mut self.preparing_reload) {
                out.0.push(Action::CancelReload);
            }
        }
        let previous = std::mem::replace(&mut self.lifecycle, Lifecycle::Stopped);
        if let Lifecycle::Reloading { previous } = previous {
            out.0.push(Action::Release(previous));
        }
        let deadline = now + if graceful { self.current.timing.graceful } else { KILL_GRACE };
        self.lifecycle = Lifecycle::Draining { deadline, graceful };
        out.log(Level::Info, "arbiter -> draining".into());
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            if graceful && worker.is_up() {
                self.retire(index, LeaveReason::Removed, out);
            } else if !graceful && worker.phase != Phase::Killed {
                worker.phase = Phase::Stopping(now);
                worker.leave_reason.get_or_insert(LeaveReason::Removed);
                out.0.push(Action::Signal(worker.pid, ChildSignal::Quit));
            }
        }
    }
}
