//! The compiler child's answer to the arbiter: one message on a `SOCK_SEQPACKET` pair, carrying
//! the open file the child validated (SCM_RIGHTS), so the arbiter uses that very open file
//! instead of looking the path up again and re-hashing it.
use anyhow::{Context, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Longest answer text (error messages are one line; longer ones are cut).
const MAX_ANSWER: usize = 16 * 1024;

/// A connected pair: the child sends on one end, the arbiter receives on the other.
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .context("cannot create a socket pair for the compiler")
}

/// Sends `text` and, if given, a duplicate of `fd`.
pub fn send(socket: &OwnedFd, text: &str, fd: Option<RawFd>) -> Result<()> {
    let mut end = text.len().min(MAX_ANSWER);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let iov = [IoSlice::new(&text.as_bytes()[..end])];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsgs: Vec<ControlMessage<'_>> =
        if fds.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&fds)] };
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).context("cannot send the answer")?;
    Ok(())
}

/// Receives one answer: its text and the file sent with it, if any. Empty text: the child ended
/// without answering.
pub fn receive(socket: &OwnedFd) -> Result<(String, Option<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_ANSWER];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("cannot read the compiler's answer")?;
        let mut fd = None;
        for cmsg in msg.cmsgs().context("cannot read the compiler's answer")? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; only we own it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        (msg.bytes, fd)
    };
    Ok((String::from_utf8_lossy(&buf[..len]).into_owned(), fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_carries_its_open_file() {
        use std::io::{Read, Seek};
        let (child, parent) = pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"compiled").unwrap();
        send(&child, "ok", Some(file.as_raw_fd())).unwrap();
        let (text, fd) = receive(&parent).unwrap();
        assert_eq!(text, "ok");
        let mut received = std::fs::File::from(fd.unwrap());
        received.rewind().unwrap();
        let mut content = String::new();
        received.read_to_string(&mut content).unwrap();
        assert_eq!(content, "compiled");
        send(&child, "err\nno file", None).unwrap();
        let (text, fd) = receive(&parent).unwrap();
        assert_eq!(text, "err\nno file");
        assert!(fd.is_none());
    }
}
