//! A freed instance slot is reset even when the pages its instance dirtied are in swap at that
//! moment (the isolation half of `patches/wasmtime-48.0.8-pagemap-resume.diff`; released wasmtime
//! 48 skips them, and the next instance in the slot reads them back from swap). The test enables a
//! swapfile of its own, has the `faults` guest mark 128 pages and wait, pages exactly those pages
//! out of the worker (`process_madvise(MADV_PAGEOUT)`), lets the request end, and asks the next
//! fresh instance in the same slot whether it sees any of them.

use crate::support::*;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

const TEST: &str = "dirty_pages_in_swap_when_a_slot_is_reset_never_reach_the_next_instance";
const PAGE: usize = 4096;
/// What the guest fills its hold pages with (`HOLD_MARKER` in `faults`), and how many it fills.
const MARKER: u8 = 0xE7;
const MARKED_PAGES: usize = 128;
/// Small: only the marked pages go there, and other tests run beside this one.
const SWAPFILE_BYTES: usize = 64 << 20;
/// How long the kernel gets to move every marked page to swap.
const SWAP_OUT_WITHIN: Duration = Duration::from_secs(10);
/// `/proc/PID/pagemap` entry bits.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;

/// A swapfile this test made and enabled: disabled and deleted when dropped, also on a panic.
struct Swapfile {
    path: CString,
    _dir: tempfile::TempDir,
}

impl Swapfile {
    /// Creates, formats and enables a swapfile under the test's tmp root, or says why it cannot.
    fn enable() -> Result<Swapfile, String> {
        let dir = scratch_dir("swapfile");
        // SAFETY: statfs is plain data; all-zero is a valid value that statfs(2) overwrites.
        let mut statfs: libc::statfs = unsafe { std::mem::zeroed() };
        let dir_c = CString::new(dir.path().as_os_str().as_bytes()).expect("a tmp path has no NUL");
        // SAFETY: a NUL-terminated path and a statfs buffer of the right type.
        if unsafe { libc::statfs(dir_c.as_ptr(), &mut statfs) } != 0 {
            return Err(format!("statfs {}: {}", dir.path().display(), std::io::Error::last_os_error()));
        }
        if statfs.f_type == libc::TMPFS_MAGIC {
            return Err(format!("{} is on tmpfs, which holds no swapfile", dir.path().display()));
        }
        let path = dir.path().join("swapfile");
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        let file = file.map_err(|e| format!("create {}: {e}", path.display()))?;
        // A swapfile must have no holes: allocate every block (set_len would leave it sparse).
        // SAFETY: fallocate on a file descriptor we own.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, SWAPFILE_BYTES as libc::off_t) } != 0 {
            return Err(format!("fallocate: {}", std::io::Error::last_os_error()));
        }
        file.write_all_at(&swap_header(SWAPFILE_BYTES / PAGE), 0).map_err(|e| format!("write the swap header: {e}"))?;
        file.sync_all().map_err(|e| format!("fsync the swapfile: {e}"))?;
        let path = CString::new(path.as_os_str().as_bytes()).expect("a tmp path has no NUL");
        // SAFETY: a NUL-terminated path to a formatted swapfile.
        if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
            return Err(format!("swapon: {} (filesystem magic {:#x})", std::io::Error::last_os_error(), statfs.f_type));
        }
        Ok(Swapfile { path, _dir: dir })
    }
}

impl Drop for Swapfile {
    fn drop(&mut self) {
        // SAFETY: the path this guard enabled. The TempDir then deletes the file.
        if unsafe { libc::swapoff(self.path.as_ptr()) } != 0 {
            eprintln!("swapoff {:?}: {}", self.path, std::io::Error::last_os_error());
        }
    }
}

/// The first page of a version-1 Linux swap area of `pages` pages (what mkswap writes): version,
/// last page and no bad pages at byte 1024, the signature at the end of the page.
fn swap_header(pages: usize) -> Vec<u8> {
    let mut header = vec![0u8; PAGE];
    header[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    header[1028..1032].copy_from_slice(&((pages - 1) as u32).to_ne_bytes());
    header[PAGE - 10..].copy_from_slice(b"SWAPSPACE2");
    header
}

/// Starts `/mark-and-hold` with its 1-byte body not sent yet; returns once the guest has marked
/// its pages and says so. The instance stays alive, waiting for the body.
fn hold_marked_instance(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let head = "POST /mark-and-hold HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let mut seen = Vec::new();
    while !seen.windows(7).any(|w| w == b"marked\n") {
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("the guest says `marked` within WAIT");
        assert!(n > 0, "closed before `marked`: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&seen));
    stream
}

/// Sends the held request's body; returns the rest of the response (the guest's `released`), after
/// which its instance is dropped.
fn release(mut stream: TcpStream) -> String {
    stream.write_all(b"x").unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut stream).unwrap()).into_owned()
}

/// `(start, end)` of every writable private mapping of `pid` (`rw-p` in `/proc/PID/maps`).
fn writable_private_ranges(pid: u32) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/PID/maps");
    maps.lines()
        .filter(|line| {
            line.split_whitespace().nth(1).is_some_and(|perms| perms.starts_with("rw") && perms.ends_with('p'))
        })
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?))
        })
        .collect()
}

/// The pagemap entry of each page of `pid` at `addresses`.
fn pagemap_entries(pid: u32, addresses: &[u64]) -> Vec<u64> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).expect("open /proc/PID/pagemap");
    addresses
        .iter()
        .map(|&address| {
            let mut entry = [0u8; 8];
            pagemap.read_exact_at(&mut entry, address / PAGE as u64 * 8).expect("read a pagemap entry");
            u64::from_ne_bytes(entry)
        })
        .collect()
}

/// Addresses of the present pages of `pid` that are full of `MARKER` (read through /proc/PID/mem).
fn find_marked_pages(pid: u32) -> Vec<u64> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).expect("open /proc/PID/pagemap");
    let mem = File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut marked = Vec::new();
    for (start, end) in writable_private_ranges(pid) {
        let pages = ((end - start) / PAGE as u64) as usize;
        let mut entries = vec![0u8; pages * 8];
        if pagemap.read_exact_at(&mut entries, start / PAGE as u64 * 8).is_err() {
            continue; // unmapped meanwhile
        }
        for (i, entry) in entries.chunks_exact(8).enumerate() {
            let address = start + (i * PAGE) as u64;
            let mut page = [0u8; PAGE];
            let present = u64::from_ne_bytes(entry.try_into().unwrap()) & PM_PRESENT != 0;
            if present && mem.read_exact_at(&mut page, address).is_ok() && page.iter().all(|&b| b == MARKER) {
                marked.push(address);
            }
        }
    }
    marked
}

/// Asks the kernel to page `pages` of `pid` out to swap (`process_madvise(MADV_PAGEOUT)`).
fn page_out(pid: u32, pages: &[u64]) -> Result<(), String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let iovecs: Vec<libc::iovec> =
        pages.iter().map(|&address| libc::iovec { iov_base: address as *mut libc::c_void, iov_len: PAGE }).collect();
    for batch in iovecs.chunks(libc::UIO_MAXIOV as usize) {
        // SAFETY: the iovecs name ranges of the other process; the kernel only reads the array.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd.as_raw_fd(),
                batch.as_ptr(),
                batch.len(),
                libc::MADV_PAGEOUT,
                0,
            )
        };
        if rc < 0 {
            return Err(format!("process_madvise(MADV_PAGEOUT): {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Pages `pages` of `pid` out until the pagemap shows every one in swap, or `SWAP_OUT_WITHIN`
/// passes (a page still in a CPU's LRU batch is skipped by one call); returns how many are.
fn swap_out(pid: u32, pages: &[u64]) -> Result<usize, String> {
    let deadline = Instant::now() + SWAP_OUT_WITHIN;
    loop {
        let entries = pagemap_entries(pid, pages);
        let resident: Vec<u64> =
            pages.iter().zip(&entries).filter(|(_, &entry)| entry & PM_SWAPPED == 0).map(|(&page, _)| page).collect();
        if resident.is_empty() || Instant::now() >= deadline {
            return Ok(pages.len() - resident.len());
        }
        page_out(pid, &resident)?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `VmSwap` of `/proc/PID/status`, in KiB.
fn vm_swap_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find_map(|line| line.strip_prefix("VmSwap:")).expect("a VmSwap line");
    line.trim().trim_end_matches("kB").trim().parse().expect("VmSwap in kB")
}

#[test]
fn dirty_pages_in_swap_when_a_slot_is_reset_never_reach_the_next_instance() {
    if !running_as_root(TEST) {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != PAGE as libc::c_long {
        return skip(TEST, "the guest marks 4 KiB pages; this host's pages are another size");
    }
    // Declared before the server, so it is dropped (swapoff) after the server is gone.
    let _swap = match Swapfile::enable() {
        Ok(swap) => swap,
        Err(why) => return skip(TEST, &format!("cannot enable a swapfile here: {why}")),
    };
    // One instance slot: every request's fresh instance lands in the same linear-memory slot. The
    // body streams to the guest (no read-ahead), so the instance lives until the body ends.
    let args = ["-w", "1", "--instance-slots", "1", "--body-buffer-size", "0", "--body-timeout", "0"];
    let server = Server::start(&guest("faults"), &args);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    let worker = workers[0];
    assert_eq!(server.get("/marked-pages").text(), "pristine\n", "a fresh instance before any marking");

    let held = hold_marked_instance(&server.addr);
    let marked = find_marked_pages(worker);
    assert_eq!(marked.len(), MARKED_PAGES, "the worker holds the guest's marked pages");
    let swap_before = vm_swap_kib(worker);
    let swapped = match swap_out(worker, &marked) {
        Ok(swapped) => swapped,
        Err(why) => return skip(TEST, &why),
    };
    let swap_after = vm_swap_kib(worker);
    eprintln!("{swapped} of {MARKED_PAGES} marked pages in swap; worker VmSwap {swap_before} -> {swap_after} kB");
    if swapped < MARKED_PAGES || swap_after < (MARKED_PAGES * PAGE / 1024) as u64 {
        let why = format!("the kernel moved {swapped} of {MARKED_PAGES} marked pages to swap (VmSwap {swap_after} kB)");
        return skip(TEST, &why);
    }

    // The instance ends while its marked pages are in swap: its slot is reset now.
    let released = release(held);
    assert!(released.contains("released\n"), "the rest of the held response: {released:?}");
    let reply = server.get("/marked-pages");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "pristine\n"),
        "the next instance in the slot read the previous instance's pages back from swap"
    );
}
