//! Endpoints that unrelated processes connect to: `Listener` and
//! `Connection::connect`.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::handshake::{self, Types};
use crate::message::IpcMessage;
use crate::transport::{Socket, Wait};

/// How long `accept` waits for a connecting peer's greeting, which an
/// ipc-core peer sends as soon as it is connected.
pub(crate) const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a listener is: a filesystem path, or `@name` in Linux's abstract
/// namespace (no file, gone with the last socket).
enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Address {
    fn parse(addr: &Path) -> Address {
        match addr.as_os_str().as_bytes() {
            [b'@', name @ ..] => Address::Abstract(name.to_vec()),
            _ => Address::Path(addr.to_path_buf()),
        }
    }

    fn unix(&self) -> Result<UnixAddr> {
        match self {
            Address::Path(path) => UnixAddr::new(path.as_path()),
            Address::Abstract(name) => UnixAddr::new_abstract(name),
        }
        .map_err(|e| Error::io("socket address", e))
    }
}

fn seqpacket_socket() -> Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socket", e))
}

/// A socket that unrelated processes connect to; each accepted connection
/// sends `Out` and receives `In`.
///
/// # Examples
///
/// ```
/// use ipc_core::{Connection, Listener};
///
/// let name = format!("@ipc-core-doc-{}", std::process::id());
/// let listener = Listener::<String, u32>::bind(&name)?;
/// let client = std::thread::spawn(move || -> ipc_core::Result<String> {
///     let server = Connection::<u32, String>::connect(&name)?;
///     server.send(7)?;
///     server.recv()
/// });
/// let client_conn = listener.accept()?;
/// let n = client_conn.recv()?;
/// client_conn.send(format!("got {n}"))?;
/// assert_eq!(client.join().unwrap()?, "got 7");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Listener<Out, In> {
    fd: OwnedFd,
    /// The socket file this listener made, to remove when it is dropped
    /// (if it is still ours: same device and inode).
    file: Option<(PathBuf, u64, u64)>,
    types: Types,
    _messages: PhantomData<fn(Out) -> In>,
}

impl<Out: IpcMessage, In: IpcMessage> Listener<Out, In> {
    /// Listens at `addr`: a filesystem path, or `@name` for Linux's abstract
    /// namespace.
    ///
    /// A socket file left behind by a process that is gone is replaced; one
    /// that a live process listens on is an error, as is any other kind of
    /// file. The file gets the permissions the umask allows; restrict the
    /// directory, or check [`Connection::peer_credentials`], to choose who
    /// may connect. The file is removed when the listener is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with `EADDRINUSE` when a live listener or another kind
    /// of file is at `addr`, and for any other refusal of `bind`.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("ipc-core-bind-{}.sock", std::process::id()));
    /// let listener = ipc_core::Listener::<(), ()>::bind(&path)?;
    /// assert!(path.exists());
    /// drop(listener);
    /// assert!(!path.exists());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn bind(addr: impl AsRef<Path>) -> Result<Self> {
        let address = Address::parse(addr.as_ref());
        let unix = address.unix()?;
        let fd = seqpacket_socket()?;
        match socket::bind(fd.as_raw_fd(), &unix) {
            Ok(()) => {}
            Err(Errno::EADDRINUSE) => match &address {
                Address::Path(path) if is_stale(path, &unix) => {
                    std::fs::remove_file(path).map_err(|source| Error::Io {
                        op: "remove stale socket",
                        source,
                    })?;
                    socket::bind(fd.as_raw_fd(), &unix).map_err(|e| Error::io("bind", e))?;
                }
                _ => return Err(Error::io("bind", Errno::EADDRINUSE)),
            },
            Err(e) => return Err(Error::io("bind", e)),
        }
        socket::listen(
            &fd,
            socket::Backlog::new(128).unwrap_or(socket::Backlog::MAXCONN),
        )
        .map_err(|e| Error::io("listen", e))?;
        let file = match address {
            Address::Path(path) => std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| (path, m.st_dev(), m.st_ino())),
            Address::Abstract(_) => None,
        };
        Ok(Listener {
            fd,
            file,
            types: Types::of::<Out, In>(),
            _messages: PhantomData,
        })
    }

    /// Waits for a process to connect and greets it.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when the peer speaks other message types,
    /// [`Error::Timeout`] when it sends no greeting within 10 seconds (it is
    /// not an ipc-core peer), [`Error::Io`] when `accept` fails. The
    /// listener stays usable after any of them. A peer that connects and
    /// closes before greeting is no error: `accept` goes on to the next.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{Connection, Listener};
    ///
    /// let name = format!("@ipc-core-accept-{}", std::process::id());
    /// let listener = Listener::<(), ()>::bind(&name)?;
    /// let t = std::thread::spawn(move || Connection::<(), ()>::connect(&name).map(drop));
    /// let conn = listener.accept()?;
    /// assert_eq!(conn.peer_credentials()?.pid(), std::process::id() as i32);
    /// t.join().unwrap()?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn accept(&self) -> Result<Connection<Out, In>> {
        loop {
            let Some(socket) = self.accept_socket()? else {
                // Only a listener made non-blocking (by the async face, then
                // given back) gets here: wait for the next connection.
                crate::transport::wait_readable(self.fd.as_fd(), None)?;
                continue;
            };
            let greeted = handshake::greet(&socket, &self.types).and_then(|()| {
                handshake::expect(&socket, &self.types, Wait::timeout(GREETING_TIMEOUT))
            });
            match greeted {
                Ok(()) => return Ok(Connection::from_socket(socket)),
                // Gone before it greeted: a probe (`bind`'s own check for
                // a stale socket, a health check), not a peer to hand out.
                Err(Error::Disconnected) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl<Out, In> Listener<Out, In> {
    /// Accepts one pending connection, without the greeting; `None` when the
    /// listener is non-blocking and nothing is pending.
    pub(crate) fn accept_socket(&self) -> Result<Option<Socket>> {
        loop {
            match socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(raw) => return Ok(Some(Socket::new(crate::sys::socket::own_accepted(raw)))),
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(Error::io("accept", e)),
            }
        }
    }

    /// What this listener's connections send and receive.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn types(&self) -> &Types {
        &self.types
    }
}

/// Whether the socket file at `path` has no listener behind it any more.
fn is_stale(path: &Path, unix: &UnixAddr) -> bool {
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return false;
    }
    let Ok(probe) = seqpacket_socket() else {
        return false;
    };
    matches!(
        socket::connect(probe.as_raw_fd(), unix),
        Err(Errno::ECONNREFUSED)
    )
}

impl<Out, In> Drop for Listener<Out, In> {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.file {
            let ours = std::fs::symlink_metadata(path)
                .map(|m| (m.st_dev(), m.st_ino()) == (*dev, *ino))
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl<Out, In> AsFd for Listener<Out, In> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<Out, In> fmt::Debug for Listener<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.fd)
            .field("path", &self.file.as_ref().map(|(p, _, _)| p))
            .finish()
    }
}

impl<Out: IpcMessage, In: IpcMessage> Connection<Out, In> {
    /// Connects to the [`Listener`] at `addr` (a path, or `@name` in the
    /// abstract namespace) and exchanges greetings with it, waiting until
    /// it accepts.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`ENOENT`, `ECONNREFUSED`) when nothing listens there,
    /// [`Error::TypeMismatch`] when the listener speaks other message types,
    /// [`Error::Disconnected`] when it closes the connection instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ipc_core::Connection::<(), ()>::connect("@nobody-listens-here").unwrap_err();
    /// assert!(matches!(err, ipc_core::Error::Io { op: "connect", .. }));
    /// ```
    pub fn connect(addr: impl AsRef<Path>) -> Result<Self> {
        let (socket, types) = connect_socket::<Out, In>(addr.as_ref())?;
        handshake::expect(&socket, &types, Wait::Forever)?;
        Ok(Connection::from_socket(socket))
    }
}

/// Connects to `addr` and sends this end's greeting; the caller reads the
/// listener's.
pub(crate) fn connect_socket<Out: IpcMessage, In: IpcMessage>(
    addr: &Path,
) -> Result<(Socket, Types)> {
    let unix = Address::parse(addr).unix()?;
    let fd = seqpacket_socket()?;
    socket::connect(fd.as_raw_fd(), &unix).map_err(|e| Error::io("connect", e))?;
    let socket = Socket::new(fd);
    let types = Types::of::<Out, In>();
    handshake::greet(&socket, &types)?;
    Ok((socket, types))
}
