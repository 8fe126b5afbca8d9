//! What the benches share: pinning to a core, forking a peer process, and
//! raw `SOCK_SEQPACKET` calls to compare against.
#![allow(dead_code)]

mod versus;
pub use versus::versus;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// Runs `trip` `n` times, keeping each result from being optimized away.
pub fn repeat<R>(n: u64, mut trip: impl FnMut() -> R) {
    for _ in 0..n {
        std::hint::black_box(trip());
    }
}

/// Pins the calling thread (and a child forked from it) to one core.
pub fn pin(core: usize) {
    let mut set = CpuSet::new();
    set.set(core).expect("core number");
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// Lets the calling thread run on every core again.
pub fn unpin() {
    let mut set = CpuSet::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for core in 0..cores {
        set.set(core).expect("core number");
    }
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// A forked peer, killed and reaped when dropped.
pub struct Peer(Pid);

/// Forks a peer that runs `body` on core `core` and never returns.
pub fn fork_peer(core: usize, body: impl FnOnce()) -> Peer {
    // SAFETY: the benches fork from criterion's single thread; the child
    // runs `body` (a loop of syscalls) and leaves through `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => Peer(child),
        ForkResult::Child => {
            pin(core);
            body();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { nix::libc::_exit(0) }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

/// A raw connected `SOCK_SEQPACKET` pair.
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// A raw connected `SOCK_STREAM` pair.
pub fn stream_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

pub fn write(fd: &OwnedFd, bytes: &[u8]) -> usize {
    nix::unistd::write(fd, bytes).unwrap()
}

pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    nix::unistd::read(fd, buf).unwrap()
}

/// Reads without waiting, spinning until a datagram is there, or `None`
/// once `idle` has passed without one.
pub fn read_spinning(fd: &OwnedFd, buf: &mut [u8], idle: Duration) -> Option<usize> {
    let start = Instant::now();
    loop {
        match nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Some(n),
            Err(nix::errno::Errno::EAGAIN) if start.elapsed() < idle => std::hint::spin_loop(),
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends `bytes` with `fds` attached, as raw `sendmsg`.
pub fn send_fds(socket: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
}

/// Receives a datagram and its descriptors, as raw `recvmsg` (nix's, which
/// allocates its control buffer: the simple way, as most code does it).
pub fn recv_fds(socket: &OwnedFd, buf: &mut [u8], cmsg: &mut [u8]) -> Vec<OwnedFd> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    fds
}

pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}
