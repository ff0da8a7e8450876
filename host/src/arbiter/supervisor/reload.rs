//! The supervisor's answer to a prepared reload: the new generation boots beside the serving one
//! (or replaces a reload still booting).
use super::{Action, Actions, Supervisor};
use crate::arbiter::lifecycle::{Generation, LeaveReason, Lifecycle, Timing};
use crate::log::Level;

impl<P> Supervisor<P> {
    pub(super) fn on_reload_prepared(&mut self, payload: P, target: usize, timing: Timing, out: &mut Actions<P>) {
        let id = self.next_generation;
        let generation = Generation { id, target, timing, payload };
        if self.lifecycle.is_draining() || !std::mem::take(&mut self.preparing_reload) {
            out.0.push(Action::Release(generation));
            return;
        }
        self.next_generation += 1;
        let booting = std::mem::replace(&mut self.current, generation);
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Stopped) {
            Lifecycle::Reloading { previous } => {
                // A newer reload replaces the one still booting; `previous` keeps serving.
                for index in 0..self.workers.len() {
                    if self.workers[index].generation == booting.id && self.workers[index].is_up() {
                        self.retire(index, LeaveReason::Removed, out);
                    }
                }
                out.0.push(Action::Release(booting));
                self.lifecycle = Lifecycle::Reloading { previous };
            }
            _ => self.lifecycle = Lifecycle::Reloading { previous: booting },
        }
        self.quick_deaths = 0;
        self.next_spawn_at = self.now;
        out.log(Level::Info, format!("reload: starting generation {id}"));
    }
}
