//! The shared-memory load board: one seat per worker (is it accepting, its open connections, its
//! cap, how many it has accepted), mapped `MAP_SHARED | MAP_ANONYMOUS` by the arbiter before any
//! fork. A worker writes its own seat with relaxed atomics and reads its peers' the same way.
use super::rule::PeerLoad;
use anyhow::{Context, Result};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// One worker's seat; all-zero bytes are an empty, not-accepting seat. A cache line of its own,
/// so one worker's counting does not slow its peers' reads.
#[repr(C, align(64))]
pub struct Seat {
    accepting: AtomicU32,
    open: AtomicU32,
    capacity: AtomicU32,
    accepted: AtomicU64,
}

impl Seat {
    fn clear(&self) {
        self.accepting.store(0, Relaxed);
        self.open.store(0, Relaxed);
        self.capacity.store(0, Relaxed);
        self.accepted.store(0, Relaxed);
    }

    fn load(&self) -> PeerLoad {
        PeerLoad {
            accepting: self.accepting.load(Relaxed) != 0,
            open: self.open.load(Relaxed),
            capacity: self.capacity.load(Relaxed),
        }
    }
}

/// Which seat a worker sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatId(usize);

/// The board, owned by the arbiter. Never unmapped: forked workers hold `&'static` seats.
pub struct Board {
    seats: &'static [Seat],
    in_use: Vec<bool>,
}

// The board is only atomics in shared memory.
unsafe impl Send for Board {}

impl Board {
    /// Maps `seats` seats. Call before any fork.
    pub fn create(seats: usize) -> Result<Board> {
        let bytes = std::mem::size_of::<Seat>() * seats;
        let length = NonZeroUsize::new(bytes).context("load board: no seats")?;
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping, page-aligned; zero bytes are a valid Seat (atomics).
        let base =
            unsafe { mmap_anonymous(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
                .context("cannot map the shared load board")?;
        // SAFETY: `seats` seats fit the mapping, which lives until the process exits.
        let seats = unsafe { std::slice::from_raw_parts(base.cast::<Seat>().as_ptr(), seats) };
        Ok(Board { seats, in_use: vec![false; seats.len()] })
    }

    /// A free seat for a worker about to be forked, with the view that worker uses.
    pub fn claim(&mut self) -> Option<(SeatId, WorkerSeat)> {
        let index = self.in_use.iter().position(|used| !used)?;
        self.in_use[index] = true;
        self.seats[index].clear();
        Some((SeatId(index), WorkerSeat { seats: self.seats, me: index }))
    }

    /// At reap (or after a failed fork): the seat is empty and free again.
    pub fn release(&mut self, id: SeatId) {
        if let Some(used) = self.in_use.get_mut(id.0) {
            *used = false;
            self.seats[id.0].clear();
        }
    }
}

/// A worker's view of the board: its own seat and its peers'. Cheap to copy.
#[derive(Clone, Copy)]
pub struct WorkerSeat {
    seats: &'static [Seat],
    me: usize,
}

impl WorkerSeat {
    fn own(&self) -> &'static Seat {
        &self.seats[self.me]
    }

    /// The accept loops run, with room for `capacity` connections.
    pub fn start_accepting(&self, capacity: usize) {
        self.own().capacity.store(u32::try_from(capacity).unwrap_or(u32::MAX), Relaxed);
        self.own().accepting.store(1, Relaxed);
    }

    /// Draining: peers no longer leave connections to this worker.
    pub fn stop_accepting(&self) {
        self.own().accepting.store(0, Relaxed);
    }

    /// A connection was accepted; it counts as open until the returned guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.own().open.fetch_add(1, Relaxed);
        self.own().accepted.fetch_add(1, Relaxed);
        OpenConnection(*self)
    }

    pub fn open(&self) -> u32 {
        self.own().open.load(Relaxed)
    }

    /// The other seats' loads (empty seats read as not accepting).
    pub fn peers(&self) -> Vec<PeerLoad> {
        self.others().map(Seat::load).collect()
    }

    /// How many connections the peers have accepted, all together: moves while they take some.
    pub fn peers_progress(&self) -> u64 {
        self.others().map(|seat| seat.accepted.load(Relaxed)).fold(0, u64::wrapping_add)
    }

    fn others(&self) -> impl Iterator<Item = &'static Seat> + '_ {
        let me = self.me;
        self.seats.iter().enumerate().filter(move |(i, _)| *i != me).map(|(_, seat)| seat)
    }
}

/// One open connection on the board; closing it (dropping this) frees its place.
pub struct OpenConnection(WorkerSeat);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.0.own().open.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_sees_its_peers_and_not_itself() {
        let mut board = Board::create(3).unwrap();
        let (_, a) = board.claim().unwrap();
        let (b_id, b) = board.claim().unwrap();
        a.start_accepting(100);
        b.start_accepting(50);
        let conn = b.opened();
        let _other = b.opened();
        assert_eq!(b.open(), 2);
        let seen_by_a = a.peers();
        assert!(seen_by_a.contains(&PeerLoad { accepting: true, open: 2, capacity: 50 }));
        assert!(seen_by_a.contains(&PeerLoad { accepting: false, open: 0, capacity: 0 }), "the free seat");
        assert_eq!(a.peers_progress(), 2);
        let idle = PeerLoad { accepting: false, open: 0, capacity: 0 };
        assert_eq!(b.peers(), vec![PeerLoad { accepting: true, open: 0, capacity: 100 }, idle]);
        drop(conn);
        assert_eq!(b.open(), 1);
        b.stop_accepting();
        assert!(!a.peers().iter().any(|p| p.accepting));
        // A reaped worker's seat is empty for the next one.
        board.release(b_id);
        assert!(a.peers().iter().all(|p| *p == PeerLoad { accepting: false, open: 0, capacity: 0 }));
    }

    #[test]
    fn seats_run_out_and_come_back() {
        let mut board = Board::create(1).unwrap();
        let (id, _) = board.claim().unwrap();
        assert!(board.claim().is_none());
        board.release(id);
        assert!(board.claim().is_some());
    }
}
