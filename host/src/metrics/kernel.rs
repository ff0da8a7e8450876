//! Figures read from the kernel at scrape time: a listening TCP socket's accept-queue depth and
//! backlog (`TCP_INFO`), and a process's RSS/PSS (`/proc/PID/smaps_rollup`).
use crate::sys::binds::Listener;
use std::os::fd::AsRawFd;

/// One listener's accept queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenQueue {
    pub listener: String,
    /// Connections the kernel has completed and no worker has accepted yet.
    pub length: u64,
    /// The backlog the kernel enforces (`--backlog`, capped by net.core.somaxconn).
    pub limit: u64,
}

/// The accept queues of the TCP listeners this process holds listening. Unix sockets are
/// skipped: Linux exposes their queue only through sock_diag netlink (`ss -xl`), not a socket
/// option; `--reuse-port` sockets belong to the workers (the arbiter's copy does not listen).
pub fn listen_queues(listeners: &[&Listener]) -> Vec<ListenQueue> {
    listeners
        .iter()
        .filter_map(|listener| match listener {
            Listener::Tcp(socket) => {
                let (length, limit) = tcp_accept_queue(socket.as_raw_fd())?;
                Some(ListenQueue { listener: listener.display_address(), length, limit })
            }
            Listener::Unix(..) => None,
        })
        .collect()
}

/// `TCP_LISTEN` in the kernel's tcp_states.h (not exported by libc).
const TCP_LISTEN: u8 = 10;

/// For a socket in LISTEN state, Linux reports the accept-queue length in `tcpi_unacked` and
/// the backlog in `tcpi_sacked` (see `tcp_get_info`).
fn tcp_accept_queue(fd: i32) -> Option<(u64, u64)> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    if rc != 0 || info.tcpi_state != TCP_LISTEN {
        return None;
    }
    Some((u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

/// Resident and proportional set size of a process in bytes, if it still exists.
pub fn process_memory(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_smaps_rollup(&text))
}

fn parse_smaps_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("Rss:"), field("Pss:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_fields_are_read_in_bytes() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:               14084 kB\nPss:                5337 kB\nPss_Anon:           3000 kB\n";
        assert_eq!(parse_smaps_rollup(text), (14084 * 1024, 5337 * 1024));
    }

    #[test]
    fn a_listening_socket_reports_its_queue_and_backlog() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        socket.listen(7).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let listener = Listener::Tcp(listener);
        let listeners = [&listener];
        let queues = listen_queues(&listeners);
        assert_eq!(queues.len(), 1);
        assert_eq!((queues[0].length, queues[0].limit), (0, 7));
        // The handshakes complete in the kernel; nobody accepts.
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(listen_queues(&listeners)[0].length, 2);
    }
}
