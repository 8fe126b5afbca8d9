//! Who is at the other end of a connection.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt};

use crate::error::{Error, Result};
use crate::sys::socket::peer_pidfd;

/// The process at the other end of a connection, as the kernel recorded it
/// when the connection was made (`SO_PEERCRED`), with a pidfd of it where
/// the kernel offers `SO_PEERPIDFD` (Linux 6.5 and later).
///
/// The pid may be reused once that process has exited; the pidfd cannot:
/// use it to signal or wait for the peer without racing against reuse.
///
/// # Examples
///
/// ```
/// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
/// let peer = a.peer_credentials()?;
/// assert_eq!(peer.pid(), std::process::id() as i32);
/// assert_eq!(peer.uid(), nix::unistd::getuid().as_raw());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug)]
pub struct PeerCredentials {
    pid: i32,
    uid: u32,
    gid: u32,
    pidfd: Option<OwnedFd>,
}

impl PeerCredentials {
    pub(crate) fn of(socket: BorrowedFd<'_>) -> Result<Self> {
        let creds = getsockopt(&socket, sockopt::PeerCredentials)
            .map_err(|e| Error::io("getsockopt(SO_PEERCRED)", e))?;
        let pidfd = peer_pidfd(socket).map_err(|e| Error::io("getsockopt(SO_PEERPIDFD)", e))?;
        Ok(PeerCredentials {
            pid: creds.pid(),
            uid: creds.uid(),
            gid: creds.gid(),
            pidfd,
        })
    }

    /// The peer's process id.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// assert!(a.peer_credentials()?.pid() > 0);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The peer's effective user id.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// let refuse_others = a.peer_credentials()?.uid() != nix::unistd::geteuid().as_raw();
    /// assert!(!refuse_others);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The peer's effective group id.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// assert_eq!(a.peer_credentials()?.gid(), nix::unistd::getegid().as_raw());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// A pidfd of the peer, where the kernel offers one.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// if let Some(pidfd) = a.peer_credentials()?.pidfd() {
    ///     let _ = pidfd; // poll it to learn when the peer exits
    /// }
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Takes the pidfd, where the kernel offered one.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// let _pidfd: Option<std::os::fd::OwnedFd> = a.peer_credentials()?.into_pidfd();
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn into_pidfd(self) -> Option<OwnedFd> {
        self.pidfd
    }
}
