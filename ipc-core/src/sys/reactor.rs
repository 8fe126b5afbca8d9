//! Registering a socket with tokio's reactor (feature `tokio`).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A descriptor number registered with the reactor. It owns nothing: each
/// async type keeps it beside the blocking value that owns the descriptor,
/// declared first so that it is dropped first, and drops it before handing
/// the blocking value back.
pub(crate) struct Registration(RawFd);

impl AsRawFd for Registration {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registers `fd` for readability and writability with the current runtime.
///
/// # Panics
///
/// Outside a tokio runtime, as tokio's own registrations do.
pub(crate) fn register(fd: BorrowedFd<'_>) -> std::io::Result<AsyncFd<Registration>> {
    let interest = Interest::READABLE | Interest::WRITABLE;
    // SAFETY: `fd` is open now, and its owner (the blocking value beside the
    // registration, see `Registration`) keeps it open and never replaces it
    // until the registration has been dropped, so the number names the same
    // open file description for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(Registration(fd.as_raw_fd()), interest) }
        .map_err(std::io::Error::from)
}

/// Registers an owned descriptor for writability alone: a watch on its
/// socket's close (the kernel reports a hang-up to every registration,
/// whatever it asked for).
pub(crate) fn register_owned_writable(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd` and drops it only after deregistering,
    // so the number stays open and names the same file for its whole life.
    unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }.map_err(std::io::Error::from)
}

/// Whether the registered socket has room for a datagram now: when a send
/// was refused as full and it has, what is full is the ring this process
/// writes, which no readiness of the socket reports.
pub(crate) fn writable_now(registration: &Registration) -> bool {
    let mut fd = libc::pollfd {
        fd: registration.0,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd, writable for the call, naming a
    // descriptor its owner keeps open (see `Registration`); a zero timeout
    // never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & libc::POLLOUT != 0
}
