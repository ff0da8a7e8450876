//! Where a log line goes, and the one way every log line is written: whole, in one write, or not
//! at all, and never waiting on a reader. A line the sink cannot take now is refused (the caller
//! counts it as dropped). How a write avoids waiting depends on what the descriptor is, and it
//! never sets a file status flag on a description other processes share (O_NONBLOCK on an
//! inherited pipe would reach the shell or the container runtime that holds the same pipe):
//! - a regular file, or a device such as /dev/null or /dev/full: write(2); it does not wait on a
//!   reader, and a full disk answers ENOSPC at once;
//! - a socket (journald's stdout stream): send(2) with MSG_DONTWAIT;
//! - an inherited pipe (stdout/stderr under a container runtime, `| less`): pwritev2(2) with
//!   RWF_NOWAIT, a per-call flag (Linux 6.18 measured: EAGAIN on a full pipe, the pipe's own flags
//!   untouched);
//! - a FIFO named as a log file: the description is ours (opened here), so it is made O_NONBLOCK;
//! - a terminal, or a pipe where the kernel refuses RWF_NOWAIT: poll(2) for room, then write(2).
//!   This is the one case that can still wait: another process may fill the pipe in between.
//!
//! Whole lines: the kernel writes up to PIPE_BUF (4096) bytes to a pipe atomically, all or
//! nothing, with or without O_NONBLOCK; a unix stream socket takes a line of that size as one
//! buffer, also all or nothing. So a line longer than PIPE_BUF, newline included, is cut to fit
//! (with a marker) before it goes to anything but a regular file; O_APPEND writes to a regular
//! file are whole at any size, bounded here at 64 KiB.
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

/// The longest line written to a pipe, FIFO, socket or terminal, newline included.
pub const STREAM_LINE_LIMIT: usize = libc::PIPE_BUF;
/// The longest line written to a regular file or a device.
pub const FILE_LINE_LIMIT: usize = 64 * 1024;
/// What replaces the end of a line that was cut to its limit.
const CUT_MARKER: &[u8] = b" [line cut]\n";

/// Why a sink did not take a line: an errno, or [`PARTIAL_WRITE`].
pub type Refusal = i32;
/// The sink took part of the line only (a nearly full disk): the rest is lost.
pub const PARTIAL_WRITE: Refusal = 0;

/// How this sink writes without waiting (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Way {
    /// write(2) to a regular file or a device.
    File = 0,
    /// write(2) to a FIFO whose description we opened O_NONBLOCK.
    OwnNonblocking,
    /// send(2) with MSG_DONTWAIT.
    Socket,
    /// pwritev2(2) with RWF_NOWAIT.
    NoWait,
    /// poll(2) for POLLOUT, then write(2).
    PollFirst,
}

impl Way {
    fn from_u8(value: u8) -> Way {
        [Way::File, Way::OwnNonblocking, Way::Socket, Way::NoWait, Way::PollFirst]
            .get(usize::from(value))
            .copied()
            .unwrap_or(Way::PollFirst)
    }

    fn line_limit(self) -> usize {
        match self {
            Way::File => FILE_LINE_LIMIT,
            _ => STREAM_LINE_LIMIT,
        }
    }

    /// The way for `fd`; `own` when this process opened the description itself.
    fn of(fd: RawFd, own: bool) -> Way {
        // SAFETY: fstat fills the struct we pass; isatty only reads the descriptor.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut stat) } != 0 {
            return Way::PollFirst;
        }
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Way::File,
            libc::S_IFSOCK => Way::Socket,
            libc::S_IFIFO if own => Way::OwnNonblocking,
            libc::S_IFIFO => Way::NoWait,
            libc::S_IFCHR if unsafe { libc::isatty(fd) } == 0 => Way::File,
            _ => Way::PollFirst,
        }
    }
}

/// An open log destination.
#[derive(Debug)]
pub struct LogSink {
    /// The file this sink owns (none for stdout and stderr, which belong to the process).
    file: Option<File>,
    fd: RawFd,
    way: AtomicU8,
    /// A partial write left a line without its newline: the next write starts with one.
    torn: AtomicBool,
}

impl LogSink {
    pub fn stdout() -> LogSink {
        LogSink::of(None, libc::STDOUT_FILENO)
    }

    pub fn stderr() -> LogSink {
        LogSink::of(None, libc::STDERR_FILENO)
    }

    /// Opens `path` for appending whole lines.
    pub fn open_file(path: &Path) -> std::io::Result<LogSink> {
        let file = open_for_append(path)?;
        let fd = file.as_raw_fd();
        Ok(LogSink::of(Some(file), fd))
    }

    /// The descriptor of the file this sink owns (none for stdout and stderr).
    pub fn owned_fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(|file| file.as_raw_fd())
    }

    fn of(file: Option<File>, fd: RawFd) -> LogSink {
        let way = Way::of(fd, file.is_some());
        LogSink { file, fd, way: AtomicU8::new(way as u8), torn: AtomicBool::new(false) }
    }

    /// Reopens a file sink at `path` (after logrotate renamed it): the new file takes over the
    /// same descriptor number with dup3(2), so every holder of this sink writes there from now on
    /// and a line is never written to a closed descriptor. Standard streams are left alone.
    pub fn reopen_path(&self, path: &Path) -> std::io::Result<()> {
        let Some(current) = &self.file else { return Ok(()) };
        let fresh = open_for_append(path)?;
        // SAFETY: dup3 onto a descriptor this sink owns; O_CLOEXEC as std opened it.
        if unsafe { libc::dup3(fresh.as_raw_fd(), current.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.way.store(Way::of(self.fd, true) as u8, Relaxed);
        Ok(())
    }

    /// Whether a pipe, socket or terminal has room for a line now. False for a file or device:
    /// only a write can tell whether a full disk has space again.
    pub fn has_room(&self) -> bool {
        if Way::from_u8(self.way.load(Relaxed)) == Way::File {
            return false;
        }
        let mut pollfd = libc::pollfd { fd: self.fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd, no waiting.
        unsafe { libc::poll(&mut pollfd, 1, 0) == 1 && pollfd.revents & libc::POLLOUT != 0 }
    }

    /// Writes `line` (ending in a newline) whole, or refuses it without waiting.
    pub fn write_line(&self, line: &[u8]) -> Result<(), Refusal> {
        let limit = Way::from_u8(self.way.load(Relaxed)).line_limit();
        let cut;
        let line = if line.len() > limit {
            cut = cut_to(line, limit);
            &cut[..]
        } else {
            line
        };
        if self.torn.load(Relaxed) {
            match self.write_once(b"\n") {
                Ok(1) => self.torn.store(false, Relaxed),
                Ok(_) => return Err(PARTIAL_WRITE),
                Err(errno) => return Err(errno),
            }
        }
        match self.write_once(line)? {
            n if n == line.len() => Ok(()),
            0 => Err(libc::EAGAIN),
            _ => {
                self.torn.store(true, Relaxed);
                Err(PARTIAL_WRITE)
            }
        }
    }

    /// One attempt, retried only when a signal interrupted it.
    fn write_once(&self, bytes: &[u8]) -> Result<usize, Refusal> {
        loop {
            let way = Way::from_u8(self.way.load(Relaxed));
            match self.syscall(way, bytes) {
                Ok(n) => return Ok(n),
                Err(libc::EINTR) => continue,
                Err(libc::EOPNOTSUPP | libc::ENOTSOCK) if matches!(way, Way::NoWait | Way::Socket) => {
                    // The descriptor is not what it was (`--daemon` put /dev/null on stdio), or
                    // the kernel refuses RWF_NOWAIT for this pipe: look again, else poll first.
                    let now = Way::of(self.fd, self.file.is_some());
                    self.way.store(if now == way { Way::PollFirst } else { now } as u8, Relaxed);
                }
                Err(errno) => return Err(errno),
            }
        }
    }

    fn syscall(&self, way: Way, bytes: &[u8]) -> Result<usize, Refusal> {
        let (fd, data, len) = (self.fd, bytes.as_ptr().cast::<libc::c_void>(), bytes.len());
        // SAFETY: plain syscalls on a descriptor this process holds, reading `bytes` only.
        let written = unsafe {
            match way {
                Way::File | Way::OwnNonblocking => libc::write(fd, data, len),
                Way::Socket => libc::send(fd, data, len, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
                Way::NoWait => {
                    let iov = libc::iovec { iov_base: data.cast_mut(), iov_len: len };
                    libc::pwritev2(fd, &iov, 1, -1, libc::RWF_NOWAIT)
                }
                Way::PollFirst => {
                    let mut pollfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    if libc::poll(&mut pollfd, 1, 0) != 1 || pollfd.revents & libc::POLLOUT == 0 {
                        return Err(libc::EAGAIN);
                    }
                    libc::write(fd, data, len)
                }
            }
        };
        usize::try_from(written).map_err(|_| std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Opens a log file for appending; a FIFO's description (ours alone) is made non-blocking.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if Way::of(file.as_raw_fd(), true) == Way::OwnNonblocking {
        // SAFETY: fcntl on the description we just opened.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// `line` cut to `limit` bytes, ending with [`CUT_MARKER`] (never inside a UTF-8 sequence).
fn cut_to(line: &[u8], limit: usize) -> Vec<u8> {
    let mut keep = limit.saturating_sub(CUT_MARKER.len());
    while keep > 0 && line.get(keep).is_some_and(|b| b & 0xC0 == 0x80) {
        keep -= 1;
    }
    let mut cut = Vec::with_capacity(limit);
    cut.extend_from_slice(&line[..keep.min(line.len())]);
    cut.extend_from_slice(CUT_MARKER);
    cut
}

/// A human reason for a refusal, for the dropped-lines note.
pub fn refusal_text(refusal: Refusal) -> String {
    match refusal {
        PARTIAL_WRITE => "only part of a line could be written".into(),
        libc::EAGAIN => "the log's reader is not keeping up".into(),
        libc::EPIPE => "the log's reader has gone".into(),
        libc::ENOSPC => "no space left on the log's device".into(),
        errno => std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn inherited(file: &File) -> LogSink {
        LogSink::of(None, file.as_raw_fd())
    }

    fn blocking(file: &File) -> bool {
        // SAFETY: F_GETFL reads the flags.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) & libc::O_NONBLOCK == 0 }
    }

    #[test]
    fn a_full_pipe_refuses_lines_at_once_and_takes_them_again_once_read() {
        let (mut reader, writer) = pipe();
        let sink = inherited(&writer);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let mut taken = 0;
        let refusal = loop {
            match sink.write_line(&line) {
                Ok(()) => taken += 1,
                Err(refusal) => break refusal,
            }
            assert!(taken < 100_000, "the pipe never filled");
        };
        assert_eq!(refusal, libc::EAGAIN);
        assert!(blocking(&writer), "the shared description is left blocking");
        let mut drained = vec![0u8; taken * line.len()];
        std::io::Read::read_exact(&mut reader, &mut drained).unwrap();
        assert!(drained.chunks(line.len()).all(|chunk| chunk == &line[..]), "every line came out whole");
        assert_eq!(sink.write_line(&line), Ok(()));
    }

    #[test]
    fn lines_longer_than_pipe_buf_are_cut_to_one_atomic_write() {
        let (mut reader, writer) = pipe();
        let sink = inherited(&writer);
        let long = "é".repeat(5000) + "\n";
        sink.write_line(long.as_bytes()).unwrap();
        drop(sink);
        drop(writer);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
        assert!(out.len() <= STREAM_LINE_LIMIT && out.ends_with(CUT_MARKER), "{} bytes", out.len());
        assert!(String::from_utf8(out).is_ok(), "not cut inside a character");
    }

    #[test]
    fn a_closed_reader_and_a_full_device_are_refusals() {
        let (reader, writer) = pipe();
        drop(reader);
        // SIGPIPE is ignored by the Rust runtime in tests as in the binary.
        assert_eq!(inherited(&writer).write_line(b"x\n"), Err(libc::EPIPE));
        let full = LogSink::open_file(Path::new("/dev/full")).unwrap();
        assert_eq!(full.write_line(b"x\n"), Err(libc::ENOSPC));
    }

    #[test]
    fn a_descriptor_refusing_rwf_nowait_falls_back_to_poll_then_write() {
        // Linux 6.18 refuses RWF_NOWAIT on a FIFO opened by path (EOPNOTSUPP); inherited, it is
        // written after a poll instead.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in our own temporary directory.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        use std::os::unix::fs::OpenOptionsExt;
        let mut reader = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        let writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        let sink = inherited(&writer);
        assert_eq!(sink.write_line(b"first\n"), Ok(()));
        let mut out = [0u8; 6];
        std::io::Read::read_exact(&mut reader, &mut out).unwrap();
        assert_eq!(&out, b"first\n");
        assert!(blocking(&writer), "the description is left blocking");
    }

    #[test]
    fn a_socket_replaced_by_dev_null_is_looked_at_again() {
        // What `--daemon` does to stdio after the logs were opened: dup2 of /dev/null over them.
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ours = File::from(std::os::fd::OwnedFd::from(ours));
        let sink = inherited(&ours);
        assert_eq!(Way::from_u8(sink.way.load(Relaxed)), Way::Socket);
        let null = File::options().write(true).open("/dev/null").unwrap();
        // SAFETY: dup2 onto a descriptor this test owns.
        assert!(unsafe { libc::dup2(null.as_raw_fd(), ours.as_raw_fd()) } >= 0);
        assert_eq!(sink.write_line(b"into /dev/null\n"), Ok(()), "written, not dropped");
        assert_eq!(Way::from_u8(sink.way.load(Relaxed)), Way::File);
    }

    #[test]
    fn a_stalled_socket_refuses_without_waiting() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ours = File::from(std::os::fd::OwnedFd::from(ours));
        let sink = inherited(&ours);
        let line = [b'y'; 1000];
        let refused = (0..100_000).find_map(|_| sink.write_line(&line).err());
        assert_eq!(refused, Some(libc::EAGAIN));
    }
}
