//! The supervisor's rules, driven with synthetic events and clocks: no processes, no sleeps.
use super::*;
use crate::worker::EXIT_BOOT_ERROR;

const TIMING: Timing = Timing { watchdog: Duration::from_secs(30), graceful: Duration::from_secs(10) };

/// A generation payload that names its settings, so a test can see which one a worker runs.
type Payload = &'static str;

struct Harness {
    sup: Supervisor<Payload>,
    now: Instant,
    next_pid: i32,
}

impl Harness {
    fn new(workers: usize) -> Harness {
        let now = Instant::now();
        Harness { sup: Supervisor::new("v1", workers, TIMING, Upgrade::None, now), now, next_pid: 100 }
    }

    fn at(&mut self, after: Duration) -> &mut Self {
        self.now += after;
        self
    }

    fn event(&mut self, event: Event<Payload>) -> Vec<Action<Payload>> {
        let actions = self.sup.handle(event, self.now);
        // Spawns are carried out at once, as the shell does.
        let mut all = Vec::new();
        for action in actions {
            if let Action::Spawn(count) = action {
                for _ in 0..count {
                    self.next_pid += 1;
                    all.extend(self.sup.handle(Event::Spawned { pid: self.next_pid }, self.now));
                }
                all.push(Action::Spawn(count));
            } else {
                all.push(action);
            }
        }
        all
    }

    /// A tick in which every live worker beats and reports `ready`.
    fn tick_all_ready(&mut self) -> Vec<Action<Payload>> {
        let beats = self.sup.workers.iter().map(|w| beat(w.pid, true, false, 0)).collect();
        self.event(Event::Tick { beats })
    }

    fn boot(&mut self) {
        self.event(Event::Tick { beats: vec![] });
        let actions = self.tick_all_ready();
        assert!(actions.iter().any(|a| matches!(a, Action::AnnounceReady)));
        assert_eq!(self.sup.lifecycle.name(), "running");
    }

    fn pids_of(&self, generation: u64) -> Vec<i32> {
        self.sup.workers.iter().filter(|w| w.generation == generation).map(|w| w.pid).collect()
    }

    fn up_pids_of(&self, generation: u64) -> Vec<i32> {
        self.sup.workers.iter().filter(|w| w.generation == generation && w.is_up()).map(|w| w.pid).collect()
    }
}

fn beat(pid: i32, ready: bool, wants_retirement: bool, silence_ms: u64) -> Beat {
    Beat { pid, ready, wants_retirement, silence: Duration::from_millis(silence_ms) }
}

fn signals_to(actions: &[Action<Payload>], pid: i32) -> Vec<ChildSignal> {
    actions.iter().filter_map(|a| if let Action::Signal(p, k) = a { (*p == pid).then_some(*k) } else { None }).collect()
}

fn spawned(actions: &[Action<Payload>]) -> usize {
    actions.iter().map(|a| if let Action::Spawn(n) = a { *n } else { 0 }).sum()
}

#[test]
fn boots_the_target_and_announces_once() {
    let mut h = Harness::new(3);
    let first = h.event(Event::Tick { beats: vec![] });
    assert_eq!(spawned(&first), 3);
    assert_eq!(h.sup.lifecycle.name(), "booting");
    h.tick_all_ready();
    assert_eq!(h.sup.ready_in_current(), 3);
    let again = h.tick_all_ready();
    assert!(!again.iter().any(|a| matches!(a, Action::AnnounceReady)), "announced once");
}

#[test]
fn quick_deaths_back_off_exponentially_up_to_the_cap() {
    let mut h = Harness::new(1);
    h.boot();
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        let pid = h.sup.workers[0].pid;
        h.at(Duration::from_millis(10));
        h.event(Event::Exited { pid, exit: Exit::Signal(11, "SIGSEGV") });
        backoffs.push(h.sup.next_spawn_at() - h.now);
        // Nothing is spawned before the backoff ends; one worker is after it.
        assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 0);
        let wait = h.sup.next_spawn_at() - h.now;
        h.at(wait);
        assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 1);
    }
    let ms: Vec<u128> = backoffs.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    assert_eq!(h.sup.restarts.get("crash"), Some(&8));
}

#[test]
fn a_worker_that_lived_long_resets_the_backoff() {
    let mut h = Harness::new(1);
    h.boot();
    let pid = h.sup.workers[0].pid;
    h.at(Duration::from_millis(10));
    h.event(Event::Exited { pid, exit: Exit::Code(1) });
    h.at(Duration::from_secs(1));
    h.event(Event::Tick { beats: vec![] });
    let pid = h.sup.workers[0].pid;
    h.at(Duration::from_secs(5));
    h.event(Event::Exited { pid, exit: Exit::Code(1) });
    assert_eq!(h.sup.next_spawn_at().saturating_duration_since(h.now), Duration::ZERO);
    assert_eq!(h.sup.restarts.get("exit"), Some(&2));
}

#[test]
fn first_generation_boot_failure_exits_with_the_boot_error() {
    let mut h = Harness::new(2);
    h.event(Event::Tick { beats: vec![] });
    let pid = h.sup.workers[0].pid;
    let actions = h.event(Event::Exited { pid, exit: Exit::Code(EXIT_BOOT_ERROR) });
    assert_eq!(h.sup.exit_code, EXIT_BOOT_ERROR);
    assert_eq!(h.sup.lifecycle.name(), "draining");
    let other = h.sup.workers[0].pid;
    assert_eq!(signals_to(&actions, other), [ChildSignal::Quit]);
    h.event(Event::Exited { pid: other, exit: Exit::Code(0) });
    h.event(Event::Tick { beats: vec![] });
    assert!(h.sup.is_stopped());
}

#[test]
fn reload_boot_failure_rolls_back_to_the_previous_generation() {
    let mut h = Harness::new(2);
    h.boot();
    let old = h.pids_of(1);
    h.event(Event::Signal(Sig::Hup));
    h.event(Event::ReloadPrepared("v2", 3, TIMING));
    assert_eq!(h.sup.lifecycle.name(), "reloading");
    assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 3);
    let new = h.pids_of(2);
    let actions = h.event(Event::Exited { pid: new[0], exit: Exit::Code(EXIT_BOOT_ERROR) });
    assert!(actions.iter().any(|a| matches!(a, Action::RolledBack)));
    assert!(actions.iter().any(|a| matches!(a, Action::Release(g) if g.payload == "v2")));
    for pid in &new[1..] {
        assert_eq!(signals_to(&actions, *pid), [ChildSignal::Kill]);
    }
    assert_eq!((h.sup.current.id, h.sup.current.payload, h.sup.current.target), (1, "v1", 2));
    assert_eq!(h.sup.lifecycle.name(), "running");
    // An old worker that dies now is replaced from the previous generation's settings, never
    // from the rejected ones, and the worker count is the old one.
    h.at(Duration::from_secs(5));
    h.event(Event::Exited { pid: old[0], exit: Exit::Signal(9, "SIGKILL") });
    for pid in &new[1..] {
        h.event(Event::Exited { pid: *pid, exit: Exit::Signal(9, "SIGKILL") });
    }
    assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 1);
    assert_eq!(h.pids_of(1).len(), 2);
    assert!(h.pids_of(2).is_empty());
    assert_eq!(h.sup.failed_reloads, 1);
}

#[test]
fn reload_retires_the_old_generation_only_once_the_new_one_serves() {
    let mut h = Harness::new(2);
    h.boot();
    let old = h.pids_of(1);
    h.event(Event::Signal(Sig::Hup));
    h.event(Event::ReloadPrepared("v2", 2, TIMING));
    h.event(Event::Tick { beats: vec![] });
    let new = h.pids_of(2);
    let one_ready = vec![beat(new[0], true, false, 0), beat(new[1], false, false, 0)];
    let actions = h.event(Event::Tick { beats: one_ready });
    assert!(old.iter().all(|pid| signals_to(&actions, *pid).is_empty()));
    let actions = h.tick_all_ready();
    for pid in &old {
        assert_eq!(signals_to(&actions, *pid), [ChildSignal::Term]);
    }
    assert!(actions.iter().any(|a| matches!(a, Action::Release(g) if g.payload == "v1")));
    assert_eq!(h.sup.lifecycle.name(), "running");
    for pid in old {
        h.event(Event::Exited { pid, exit: Exit::Code(0) });
    }
    assert_eq!(h.sup.restarts.get("reload"), Some(&2));
}

#[test]
fn ttin_and_ttou_are_counted_per_delivery_and_ttou_retires_the_oldest() {
    let mut h = Harness::new(2);
    h.boot();
    for _ in 0..3 {
        h.event(Event::Signal(Sig::Ttin));
    }
    assert_eq!(h.sup.current.target, 5);
    assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 3);
    h.tick_all_ready();
    let oldest = h.sup.workers.iter().min_by_key(|w| (w.spawned_at, w.pid)).map(|w| w.pid).unwrap();
    h.at(Duration::from_millis(1));
    for _ in 0..4 {
        h.event(Event::Signal(Sig::Ttou));
    }
    assert_eq!(h.sup.current.target, 1);
    let actions = h.event(Event::Tick { beats: vec![] });
    assert_eq!(signals_to(&actions, oldest), [ChildSignal::Term]);
    assert_eq!(h.up_pids_of(1).len(), 1);
    let ignored = h.event(Event::Signal(Sig::Ttou));
    assert!(ignored.iter().any(|a| matches!(a, Action::Log(_, m) if m.contains("TTOU ignored"))));
    assert_eq!(h.sup.current.target, 1);
}

#[test]
fn max_requests_starts_the_replacement_first_and_retires_once_it_serves() {
    let mut h = Harness::new(1);
    h.boot();
    let tired = h.sup.workers[0].pid;
    let actions = h.event(Event::Tick { beats: vec![beat(tired, true, true, 0)] });
    assert_eq!(spawned(&actions), 1, "replacement started while the tired worker still serves");
    assert!(signals_to(&actions, tired).is_empty());
    let fresh = h.sup.workers.iter().find(|w| w.pid != tired).unwrap().pid;
    let actions = h.event(Event::Tick { beats: vec![beat(tired, true, true, 0), beat(fresh, false, false, 0)] });
    assert!(signals_to(&actions, tired).is_empty(), "not before the replacement serves");
    let actions = h.event(Event::Tick { beats: vec![beat(tired, true, true, 0), beat(fresh, true, false, 0)] });
    assert_eq!(signals_to(&actions, tired), [ChildSignal::Term]);
    h.event(Event::Exited { pid: tired, exit: Exit::Code(0) });
    assert_eq!(h.sup.restarts.get("max_requests"), Some(&1));
}

#[test]
fn watchdog_sends_abrt_then_kill_after_the_grace() {
    let mut h = Harness::new(1);
    h.boot();
    let pid = h.sup.workers[0].pid;
    let quiet = beat(pid, true, false, 31_000);
    let actions = h.event(Event::Tick { beats: vec![quiet] });
    assert_eq!(signals_to(&actions, pid), [ChildSignal::Abrt]);
    h.at(Duration::from_millis(500));
    assert!(signals_to(&h.event(Event::Tick { beats: vec![quiet] }), pid).is_empty());
    h.at(Duration::from_millis(600));
    assert_eq!(signals_to(&h.event(Event::Tick { beats: vec![quiet] }), pid), [ChildSignal::Kill]);
    assert!(signals_to(&h.event(Event::Tick { beats: vec![quiet] }), pid).is_empty(), "killed once");
    h.event(Event::Exited { pid, exit: Exit::Signal(9, "SIGKILL") });
    assert_eq!(h.sup.restarts.get("watchdog"), Some(&1));
}

#[test]
fn graceful_drain_kills_what_is_left_at_the_deadline_then_stops() {
    let mut h = Harness::new(2);
    h.boot();
    let pids = h.pids_of(1);
    let actions = h.event(Event::Signal(Sig::Term));
    assert!(actions.iter().any(|a| matches!(a, Action::CloseListeners)));
    for pid in &pids {
        assert_eq!(signals_to(&actions, *pid), [ChildSignal::Term]);
    }
    h.event(Event::Exited { pid: pids[0], exit: Exit::Code(0) });
    h.at(Duration::from_secs(9));
    assert!(signals_to(&h.event(Event::Tick { beats: vec![] }), pids[1]).is_empty());
    h.at(Duration::from_secs(2));
    assert_eq!(signals_to(&h.event(Event::Tick { beats: vec![] }), pids[1]), [ChildSignal::Kill]);
    h.event(Event::Exited { pid: pids[1], exit: Exit::Signal(9, "SIGKILL") });
    assert_eq!(spawned(&h.event(Event::Tick { beats: vec![] })), 0, "nothing respawns while draining");
    assert!(h.sup.is_stopped());
    assert_eq!(h.sup.exit_code, 0);
}

#[test]
fn hup_during_a_drain_and_a_late_reload_are_ignored() {
    let mut h = Harness::new(1);
    h.boot();
    h.event(Event::Signal(Sig::Hup));
    let actions = h.event(Event::Signal(Sig::Term));
    assert!(actions.iter().any(|a| matches!(a, Action::CancelReload)));
    assert!(h.event(Event::Signal(Sig::Hup)).iter().all(|a| !matches!(a, Action::PrepareReload)));
    let late = h.event(Event::ReloadPrepared("v2", 1, TIMING));
    assert!(late.iter().any(|a| matches!(a, Action::Release(g) if g.payload == "v2")));
    assert_eq!(h.sup.current.payload, "v1");
}

#[test]
fn usr2_is_refused_while_another_arbiter_of_an_upgrade_runs() {
    let mut h = Harness::new(1);
    h.boot();
    assert!(h.event(Event::Signal(Sig::Usr2)).iter().any(|a| matches!(a, Action::StartUpgrade)));
    h.event(Event::UpgradeStarted { pid: 999 });
    assert!(!h.event(Event::Signal(Sig::Usr2)).iter().any(|a| matches!(a, Action::StartUpgrade)));
    let actions = h.event(Event::Exited { pid: 999, exit: Exit::Code(0) });
    assert!(actions.iter().any(|a| matches!(a, Action::NotifyMainPid)));
    assert_eq!(h.sup.upgrade, Upgrade::None);
}
