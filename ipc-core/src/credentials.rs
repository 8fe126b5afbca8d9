//! Who is at the other end of a connection.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt};

use crate::error::{Error, Result};
use crate::sys::process::{pidfd_alive, pidfd_ids, EffectiveIds};
use crate::sys::socket::peer_pidfd;

/// The process at the other end of a connection, as the kernel vouches for
/// it: its pid, effective uid and gid, and a pidfd of it where the kernel
/// has one.
///
/// The uid and gid are the peer's effective ids **when
/// [`peer_credentials`](crate::Connection::peer_credentials) is called**,
/// read from the process itself through its pidfd: asked of the kernel
/// (`PIDFD_GET_INFO`, Linux 6.13), or on older kernels read from
/// `/proc/<pid>/status` and kept only if the pidfd shows the process was
/// not reaped meanwhile, so that a reused pid cannot answer for it. Where
/// there is no pidfd, or the peer has exited and been reaped, they are the
/// ids the kernel recorded, as listed below. Effective ids are what the
/// kernel checks permissions against; a process whose real or saved uid
/// differs can switch its effective uid to either at any time, so a peer
/// seen as an unprivileged uid is unprivileged only if it dropped all
/// three.
///
/// What the kernel guarantees depends on how the connection was made:
///
/// - **Accepted by a [`Listener`](crate::Listener)**: the process that
///   called `connect` (`SO_PEERCRED`), with a pidfd of it (`SO_PEERPIDFD`,
///   Linux 6.5). Without the pidfd, the ids are its effective ids at the
///   moment it connected.
/// - **Made by [`Connection::connect`](crate::Connection::connect)**: the
///   process that made the listening socket; without a pidfd, its
///   effective ids when it called `listen`.
/// - **The parent's end of [`process::spawn`](crate::process::spawn)**: the
///   process that greeted on the child's end, named by the credentials the
///   kernel attached to that greeting (`SCM_CREDENTIALS`), so never the
///   parent itself, whom the kernel's record of the socket pair names. The
///   pidfd is one the kernel attached to the greeting (`SCM_PIDFD`, Linux
///   6.5) or, for the spawned child's own pid, the one opened for it at
///   spawn, before anything could reap it (Linux 5.3), so a child that
///   dropped privileges is seen with the effective ids it has. Without a
///   pidfd, the ids are those of the greeting: the child's real ids by
///   default, or whichever of its real, effective and saved ids it chose
///   to attach, which do not tell what it may do.
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
    /// The peer `pid`, with the ids the kernel recorded for it (at
    /// connect, or on its greeting), replaced by the ids it has now where
    /// `pidfd` lets them be read from the process itself.
    pub(crate) fn new(pid: i32, uid: u32, gid: u32, pidfd: Option<OwnedFd>) -> Self {
        let recorded = EffectiveIds { uid, gid };
        let ids = pidfd
            .as_ref()
            .and_then(|pidfd| current_ids(pid, pidfd.as_fd()))
            .unwrap_or(recorded);
        PeerCredentials {
            pid,
            uid: ids.uid,
            gid: ids.gid,
            pidfd,
        }
    }

    pub(crate) fn of(socket: BorrowedFd<'_>) -> Result<Self> {
        let creds = getsockopt(&socket, sockopt::PeerCredentials)
            .map_err(|e| Error::io("getsockopt(SO_PEERCRED)", e))?;
        let pidfd = peer_pidfd(socket).map_err(|e| Error::io("getsockopt(SO_PEERPIDFD)", e))?;
        Ok(PeerCredentials::new(
            creds.pid(),
            creds.uid(),
            creds.gid(),
            pidfd,
        ))
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

    /// The peer's effective user id, read from the process when
    /// [`peer_credentials`](crate::Connection::peer_credentials) was called
    /// where a pidfd of it allows (see [`PeerCredentials`] for when it is
    /// the id the kernel recorded instead).
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

    /// The peer's effective group id, read as [`uid`](Self::uid) is.
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

/// The effective ids of process `pid`, which `pidfd` names, now: asked of
/// the pidfd (Linux 6.13), or else read from `/proc/<pid>/status` and
/// kept only if the pidfd's process is still there after the read, so
/// that a pid reused by another process cannot answer for it. `None` when
/// neither works: the process has been reaped, or `/proc` is not there.
fn current_ids(pid: i32, pidfd: BorrowedFd<'_>) -> Option<EffectiveIds> {
    match pidfd_ids(pidfd) {
        Ok(Some(ids)) => Some(ids),
        Ok(None) => proc_ids(pid, pidfd),
        Err(_) => None,
    }
}

/// The effective ids of process `pid` read from `/proc/<pid>/status`, if
/// the process `pidfd` names is still there once they are read.
fn proc_ids(pid: i32, pidfd: BorrowedFd<'_>) -> Option<EffectiveIds> {
    if pid <= 0 {
        // Not in this pid namespace: no /proc entry names it.
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = effective_ids(&status)?;
    // Not reaped after the read: the pid named this process throughout.
    pidfd_alive(pidfd).then_some(ids)
}

/// The effective ids of a `/proc/<pid>/status`: the second number of its
/// `Uid:` and `Gid:` lines (real, effective, saved, filesystem).
fn effective_ids(status: &str) -> Option<EffectiveIds> {
    let second = |key: &str| -> Option<u32> {
        let line = status.lines().find_map(|line| line.strip_prefix(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(EffectiveIds {
        uid: second("Uid:")?,
        gid: second("Gid:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_ids_are_the_second_of_each_line() {
        let status = "Name:\tcat\nUid:\t65534\t0\t0\t0\nGid:\t65534\t7\t0\t0\n";
        assert_eq!(effective_ids(status), Some(EffectiveIds { uid: 0, gid: 7 }));
        assert_eq!(effective_ids("Uid:\t1\nGid:\t2\t3\n"), None);
        assert_eq!(effective_ids(""), None);
    }

    #[test]
    fn this_process_reads_its_own_ids() {
        let pid = std::process::id();
        let pidfd = crate::sys::process::pidfd_open(pid).expect("pidfd_open (Linux 5.3)");
        let ids = current_ids(pid as i32, pidfd.as_fd()).expect("ids of this process");
        assert_eq!(ids.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(ids.gid, nix::unistd::getegid().as_raw());
        // The fallback of kernels before 6.13 reads the same.
        assert_eq!(proc_ids(pid as i32, pidfd.as_fd()), Some(ids));
    }

    #[test]
    fn the_ids_of_a_reaped_process_are_not_read_by_its_pid() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let pidfd = crate::sys::process::pidfd_open(pid).expect("pidfd_open (Linux 5.3)");
        child.wait().unwrap();
        // Its pid may name another process by now: neither way answers.
        assert_eq!(current_ids(pid as i32, pidfd.as_fd()), None);
        assert_eq!(proc_ids(pid as i32, pidfd.as_fd()), None);
    }
}
