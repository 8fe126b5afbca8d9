//! Endpoints that unrelated processes connect to: `Listener` and
//! `Connection::connect`.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::greetings::{self, Greetings};
use crate::handshake::{self, Types, GREETING_TIMEOUT};
use crate::message::IpcMessage;
use crate::sys;
use crate::transport::{poll_timeout, Socket, Wait};

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

fn seqpacket_socket(flags: SockFlag) -> Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | flags,
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
    /// Non-blocking: `accept` waits in `poll`, over it and the greetings.
    fd: OwnedFd,
    /// The socket file this listener made, to remove when it is dropped
    /// (if it is still ours: same device and inode).
    file: Option<(PathBuf, u64, u64)>,
    types: Types,
    /// Peers accepted and greeted that have yet to greet back.
    greetings: Mutex<Greetings<()>>,
    _messages: PhantomData<fn(Out) -> In>,
}

/// How many peers may wait to greet at once by default.
pub(crate) const MAX_PENDING: usize = 128;

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
        let fd = seqpacket_socket(SockFlag::SOCK_NONBLOCK)?;
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
            greetings: Mutex::new(Greetings::new(GREETING_TIMEOUT, MAX_PENDING)),
            _messages: PhantomData,
        })
    }

    /// Waits for a process to connect and greet, and returns the
    /// connection to it.
    ///
    /// Greetings proceed together: each peer that connects is greeted at
    /// once and has its own deadline ([`set_greeting_timeout`], 10 s by
    /// default) to greet back, while `accept` goes on serving the others.
    /// A peer that connects and stays silent, or answers slowly, costs a
    /// descriptor and a place among the [`set_max_pending`] waiting peers
    /// (128 by default; past that the one nearest its deadline is dropped),
    /// never the time of an honest one: ipc-core peers greet as they
    /// connect and are served as soon as they are accepted. Threads may
    /// call `accept` on one listener at once; each connection goes to one.
    ///
    /// [`set_greeting_timeout`]: Listener::set_greeting_timeout
    /// [`set_max_pending`]: Listener::set_max_pending
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when a peer greets with other message types,
    /// [`Error::GreetingTimeout`] when one has not greeted by its deadline
    /// (it is dropped), [`Error::Io`] when `accept` or `poll` fails. Each
    /// names one peer; the listener stays usable, so a server logs it and
    /// calls `accept` again. A peer that connects and leaves before
    /// greeting (a probe, a health check) is no error: it is skipped.
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
        let mut greetings = self
            .greetings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            // Peers the kernel has queued, each greeted and tried at once.
            while let Some(socket) = self.accept_socket()? {
                if let Some(outcome) = greetings.admit(socket, (), &self.types) {
                    return greetings::into_result(outcome)
                        .map(|(s, ())| Connection::from_socket(s));
                }
            }
            // Peers whose greeting has come since.
            if let Some(outcome) = greetings.advance(&self.types) {
                return greetings::into_result(outcome).map(|(s, ())| Connection::from_socket(s));
            }
            let now = Instant::now();
            if let Some(outcome) = greetings.expire(now) {
                return greetings::into_result(outcome).map(|(s, ())| Connection::from_socket(s));
            }
            self.wait(&mut greetings, now)?;
        }
    }

    /// Sets how long a peer has to greet once it is accepted (10 s by
    /// default) for peers that connect from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{Error, Listener};
    /// use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    /// use std::os::fd::AsRawFd;
    /// use std::time::Duration;
    ///
    /// let name = format!("ipc-core-greeting-timeout-{}", std::process::id());
    /// let mut listener = Listener::<(), ()>::bind(format!("@{name}"))?;
    /// listener.set_greeting_timeout(Duration::from_millis(50));
    /// // A peer that connects and never greets.
    /// let silent = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::empty(), None)?;
    /// connect(silent.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
    /// assert!(matches!(listener.accept(), Err(Error::GreetingTimeout { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_greeting_timeout(&mut self, timeout: Duration) {
        self.greetings_mut().timeout = timeout;
    }

    /// Sets how many accepted peers may wait to greet at once (128 by
    /// default); past that, the one nearest its deadline is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let name = format!("@ipc-core-max-pending-{}", std::process::id());
    /// let mut listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// listener.set_max_pending(16);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_max_pending(&mut self, max: usize) {
        self.greetings_mut().max = max;
    }

    /// Waits in one `poll` until the listening socket or a waiting peer's
    /// socket is readable, or the nearest deadline; marks the readable ones.
    fn wait(&self, greetings: &mut Greetings<()>, now: Instant) -> Result<()> {
        let timeout = match greetings.next_deadline() {
            Some(deadline) => poll_timeout(deadline.saturating_duration_since(now)),
            None => PollTimeout::NONE,
        };
        let waiting = greetings.waiting_mut();
        let mut fds = Vec::with_capacity(1 + waiting.len());
        fds.push(PollFd::new(self.fd.as_fd(), PollFlags::POLLIN));
        fds.extend(
            waiting
                .iter()
                .map(|w| PollFd::new(w.socket.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::io("poll", e)),
        }
        let ready: Vec<bool> = fds[1..]
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        for (waiting, ready) in waiting.iter_mut().zip(ready) {
            waiting.ready = ready;
        }
        Ok(())
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

    fn greetings_mut(&mut self) -> &mut Greetings<()> {
        self.greetings
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The peers waiting to greet, and the settings of the wait, for the
    /// async face to take over; an empty set with the same settings stays.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn take_greetings(&mut self) -> Greetings<()> {
        let greetings = self.greetings_mut();
        let empty = Greetings::new(greetings.timeout, greetings.max);
        std::mem::replace(greetings, empty)
    }

    /// Gives waiting peers back, from the async face.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn put_greetings(&mut self, greetings: Greetings<()>) {
        *self.greetings_mut() = greetings;
    }
}

/// Whether the socket file at `path` has no listener behind it any more.
/// The probe never waits: a live listener whose backlog is full refuses it
/// with `EAGAIN` at once, which says it is live.
fn is_stale(path: &Path, unix: &UnixAddr) -> bool {
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return false;
    }
    let Ok(probe) = seqpacket_socket(SockFlag::SOCK_NONBLOCK) else {
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
    /// abstract namespace) and exchanges greetings with it, waiting up to
    /// 10 seconds for it to accept; see
    /// [`connect_timeout`](Connection::connect_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`ENOENT`, `ECONNREFUSED`) when nothing listens there,
    /// [`Error::TypeMismatch`] when the listener speaks other message types,
    /// [`Error::Disconnected`] when it closes the connection instead,
    /// [`Error::GreetingTimeout`] when it does not accept in time.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = ipc_core::Connection::<(), ()>::connect("@nobody-listens-here").unwrap_err();
    /// assert!(matches!(err, ipc_core::Error::Io { op: "connect", .. }));
    /// ```
    pub fn connect(addr: impl AsRef<Path>) -> Result<Self> {
        Self::connect_timeout(addr, GREETING_TIMEOUT)
    }

    /// Connects to the [`Listener`] at `addr` and exchanges greetings with
    /// it, waiting at most `timeout` in all: for room in a listener's full
    /// backlog, then for it to accept and greet.
    ///
    /// # Errors
    ///
    /// As [`connect`](Connection::connect); [`Error::GreetingTimeout`] when
    /// `timeout` passes first.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{Connection, Error, Listener};
    /// use std::time::Duration;
    ///
    /// let name = format!("@ipc-core-connect-timeout-{}", std::process::id());
    /// // A listener that never accepts.
    /// let _listener = Listener::<(), ()>::bind(&name)?;
    /// let got = Connection::<(), ()>::connect_timeout(&name, Duration::from_millis(50));
    /// assert!(matches!(got, Err(Error::GreetingTimeout { .. })));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn connect_timeout(addr: impl AsRef<Path>, timeout: Duration) -> Result<Self> {
        let deadline = Wait::timeout(timeout);
        let (socket, types) = connect_socket::<Out, In>(addr.as_ref(), Some(timeout))?;
        match handshake::expect(&socket, &types, deadline) {
            Err(Error::Timeout) => Err(Error::GreetingTimeout { waited: timeout }),
            result => result.map(|()| Connection::from_socket(socket)),
        }
    }
}

/// Connects to `addr` and sends this end's greeting; the caller reads the
/// listener's. A listener whose backlog is full is waited for `wait` at
/// most (then [`Error::GreetingTimeout`]); with no `wait`, not at all
/// (then [`Error::Full`]).
pub(crate) fn connect_socket<Out: IpcMessage, In: IpcMessage>(
    addr: &Path,
    wait: Option<Duration>,
) -> Result<(Socket, Types)> {
    let unix = Address::parse(addr).unix()?;
    let fd = match wait {
        Some(timeout) => {
            let fd = seqpacket_socket(SockFlag::empty())?;
            // A connect waits for room in a full backlog as a send waits
            // for room: SO_SNDTIMEO bounds both. Zero would mean no bound.
            let bound = timeout.max(Duration::from_micros(1));
            sys::socket::set_send_timeout(fd.as_fd(), bound)
                .map_err(|e| Error::io("setsockopt(SO_SNDTIMEO)", e))?;
            fd
        }
        None => seqpacket_socket(SockFlag::SOCK_NONBLOCK)?,
    };
    match socket::connect(fd.as_raw_fd(), &unix) {
        Ok(()) => {}
        Err(Errno::EAGAIN) => {
            return Err(match wait {
                Some(waited) => Error::GreetingTimeout { waited },
                None => Error::Full,
            })
        }
        Err(e) => return Err(Error::io("connect", e)),
    }
    match wait {
        Some(_) => sys::socket::set_send_timeout(fd.as_fd(), Duration::ZERO)
            .map_err(|e| Error::io("setsockopt(SO_SNDTIMEO)", e))?,
        None => {
            sys::socket::set_blocking(fd.as_fd()).map_err(|e| Error::io("fcntl(F_SETFL)", e))?
        }
    }
    let socket = Socket::new(fd);
    let types = Types::of::<Out, In>();
    handshake::greet(&socket, &types)?;
    Ok((socket, types))
}
