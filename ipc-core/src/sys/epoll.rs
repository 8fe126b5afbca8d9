//! Taking a descriptor out of an epoll set by its number.
//!
//! nix's `Epoll::delete` borrows the descriptor; a socket leaving its
//! `Select`s as it is dropped knows only its number by then (see
//! `select::Memberships`), so this call takes the number.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::libc;

/// Removes descriptor number `fd` from `epoll` (`EPOLL_CTL_DEL`).
///
/// The caller keeps `fd` open across the call; were it closed, the number
/// could name another file, and the call would remove that one's entry.
pub(crate) fn forget(epoll: BorrowedFd<'_>, fd: RawFd) -> Result<(), Errno> {
    // SAFETY: epoll_ctl reads no memory for EPOLL_CTL_DEL (the event may be
    // null since Linux 2.6.9); both numbers are plain integers to it, and a
    // wrong one makes it fail with EBADF or ENOENT, not misbehave.
    let rc = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
    Errno::result(rc).map(drop)
}
