//! Who is at the other end of a connection.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt};

use crate::error::{Error, Result};
use crate::sys::socket::peer_pidfd;

/// The process at the other end of a connection, as the kernel vouches for
/// it: its pid, effective uid and gid, and a pidfd of it where the kernel
/// has one.
///
/// What the kernel guarantees depends on how the connection was made:
///
/// - **Accepted by a [`Listener`](crate::Listener)**: the process that
///   called `connect`, recorded by the kernel at that moment
///   (`SO_PEERCRED`), with a pidfd of it (`SO_PEERPIDFD`, Linux 6.5).
/// - **Made by [`Connection::connect`](crate::Connection::connect)**: the
///   process that made the listening socket, as it was when it called
///   `listen`.
/// - **The parent's end of [`process::spawn`](crate::process::spawn)**: the
///   process that greeted on the child's end, with the credentials the
///   kernel attached to that greeting as it was sent (`SCM_CREDENTIALS`),
///   so a child that dropped privileges first is seen with its new uid.
///   The kernel's record of the socket pair would name the parent itself,
///   who made the pair. The pidfd is one the kernel attached to the
///   greeting (`SCM_PIDFD`, Linux 6.5) or, for the spawned child's own pid,
///   one opened for it before anything could reap it.
/// - **The child's end ([`process::parent`](crate::process::parent))**: the
///   parent that spawned it.
/// - **An end made by [`Connection::pair`](crate::Connection::pair), or that
///   came inside a message**: not known. The kernel records whoever made
///   the pair, not who holds the other end now, so
///   [`peer_credentials`](crate::Connection::peer_credentials) refuses with
///   [`Error::UnknownPeer`](crate::Error::UnknownPeer) rather than name a
///   process a peer could have passed its end to.
///
/// A pid is taken by a new process once the one it named has exited and
/// been reaped, so a check by pid (`kill`, `/proc/<pid>`) can reach the
/// wrong process; the pidfd always names the process the kernel vouched
/// for, or tells that it has exited: signal, wait for, or inspect the peer
/// through it.
///
/// # Examples
///
/// ```
/// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
/// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
/// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
/// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
/// #     let conn = listener.accept()?;
/// #     client.join().unwrap()?;
/// #     Ok(conn)
/// # }
/// // A connection a Listener accepted (here from this very process).
/// let conn = accepted()?;
/// let peer = conn.peer_credentials()?;
/// assert_eq!(peer.pid(), std::process::id() as i32);
/// assert_eq!(peer.uid(), nix::unistd::geteuid().as_raw());
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
    pub(crate) fn new(pid: i32, uid: u32, gid: u32, pidfd: Option<OwnedFd>) -> Self {
        PeerCredentials {
            pid,
            uid,
            gid,
            pidfd,
        }
    }

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
    /// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
    /// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
    /// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// #     let conn = listener.accept()?;
    /// #     client.join().unwrap()?;
    /// #     Ok(conn)
    /// # }
    /// let a = accepted()?;
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
    /// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
    /// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
    /// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// #     let conn = listener.accept()?;
    /// #     client.join().unwrap()?;
    /// #     Ok(conn)
    /// # }
    /// let a = accepted()?;
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
    /// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
    /// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
    /// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// #     let conn = listener.accept()?;
    /// #     client.join().unwrap()?;
    /// #     Ok(conn)
    /// # }
    /// let a = accepted()?;
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
    /// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
    /// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
    /// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// #     let conn = listener.accept()?;
    /// #     client.join().unwrap()?;
    /// #     Ok(conn)
    /// # }
    /// let a = accepted()?;
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
    /// # fn accepted() -> ipc_core::Result<ipc_core::Connection<(), ()>> {
    /// #     let name = format!("@ipc-core-credentials-doc-{}-{:?}", std::process::id(), std::thread::current().id());
    /// #     let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// #     let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// #     let conn = listener.accept()?;
    /// #     client.join().unwrap()?;
    /// #     Ok(conn)
    /// # }
    /// let a = accepted()?;
    /// let _pidfd: Option<std::os::fd::OwnedFd> = a.peer_credentials()?.into_pidfd();
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn into_pidfd(self) -> Option<OwnedFd> {
        self.pidfd
    }
}
