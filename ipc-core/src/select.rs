//! Waiting on many receivers at once, of any message types, with epoll.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Weak;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::error::{Error, Result};
use crate::transport::{poll_timeout, Socket};

/// The most events one wait collects; more ready sources show at the next.
const EVENTS_MAX: usize = 1024;

/// A set of receivers (or connections, listeners, any descriptor) to wait
/// on together, each under a token of the caller's choosing.
///
/// A receiver or connection is reported ready only when its `try_recv`
/// then returns a message or an error (`Disconnected` once its peer is
/// gone), never `Empty`, unless another thread took the message first or
/// the peer sent something that is no message (an empty datagram). What
/// the protocol sends besides messages is dealt with inside `wait`: the
/// greeting of a spawned child, say, which makes its socket readable
/// before any message, is read and checked there. Any other descriptor is
/// reported as epoll sees it. A wait looks at each receiver's rings (the
/// ring lane: records there make no socket readable) before it sleeps in
/// epoll, one look per receiver, without a system call.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Select};
/// use std::time::Duration;
///
/// let (numbers_tx, numbers) = channel::<u32>()?;
/// let (words_tx, words) = channel::<String>()?;
/// let mut select = Select::new()?;
/// select.register(&numbers, 0)?;
/// select.register(&words, 1)?;
///
/// words_tx.send("hello".into())?;
/// let ready = select.wait(Some(Duration::from_secs(1)))?;
/// assert_eq!(ready, [1]);
/// assert_eq!(words.try_recv()?, "hello");
/// # drop(numbers_tx);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Select {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    ready: Vec<usize>,
    /// What is registered, by slot: epoll's data for a source is its slot.
    slots: Vec<Option<Slot>>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// The slot of each registered descriptor number.
    by_fd: HashMap<RawFd, usize>,
}

/// One registered source.
struct Slot {
    token: usize,
    /// The socket of a receiver or connection, which says whether it holds
    /// a message; a weak handle, so that the set keeps no socket open.
    socket: Option<Weak<Socket>>,
}

/// What a [`Select`] can wait on: a [`Receiver`](crate::Receiver), a
/// [`Connection`](crate::Connection), a [`Listener`](crate::Listener), or
/// any other descriptor as a `BorrowedFd` or `OwnedFd`.
///
/// # Examples
///
/// ```
/// use ipc_core::Select;
/// use std::io::Write;
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
///
/// let (_tx, rx) = ipc_core::channel::<u8>()?;
/// let (mut ours, theirs) = UnixStream::pair()?;
/// let mut select = Select::new()?;
/// select.register(&rx, 0)?;
/// select.register(&theirs.as_fd(), 1)?;
/// ours.write_all(b"x")?;
/// assert_eq!(select.wait(Some(Duration::from_secs(1)))?, [1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Source: sealed::Sealed {}

pub(crate) mod sealed {
    use std::os::fd::BorrowedFd;
    use std::sync::Weak;

    use crate::transport::Socket;

    /// How a source is registered: its descriptor, and its socket where it
    /// speaks this protocol.
    #[derive(Debug)]
    pub struct Entry<'a> {
        pub(crate) fd: BorrowedFd<'a>,
        pub(crate) socket: Option<Weak<Socket>>,
    }

    /// What makes a [`Source`](super::Source); implemented in this crate only.
    pub trait Sealed {
        /// How it is registered.
        fn entry(&self) -> Entry<'_>;
    }
}

impl Source for BorrowedFd<'_> {}
impl sealed::Sealed for BorrowedFd<'_> {
    fn entry(&self) -> sealed::Entry<'_> {
        sealed::Entry {
            fd: *self,
            socket: None,
        }
    }
}

impl Source for std::os::fd::OwnedFd {}
impl sealed::Sealed for std::os::fd::OwnedFd {
    fn entry(&self) -> sealed::Entry<'_> {
        sealed::Entry {
            fd: self.as_fd(),
            socket: None,
        }
    }
}

impl Select {
    /// An empty set.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the process is out of descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// let select = ipc_core::Select::new()?;
    /// assert!(select.is_empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create", e))?;
        Ok(Select {
            epoll,
            events: Vec::new(),
            ready: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_fd: HashMap::new(),
        })
    }

    /// Adds `source` under `token`. The set does not own it, nor keeps it
    /// open: drop it, or [`deregister`](Select::deregister) it, and it
    /// leaves the set.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`EEXIST`) when it is registered already.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut select = ipc_core::Select::new()?;
    /// select.register(&rx, 7)?;
    /// assert_eq!(select.len(), 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn register<S: Source + ?Sized>(&mut self, source: &S, token: usize) -> Result<()> {
        let sealed::Entry { fd, socket } = sealed::Sealed::entry(source);
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, slot as u64);
        if let Err(e) = self.epoll.add(fd, event) {
            if slot < self.slots.len() {
                self.free.push(slot);
            }
            return Err(Error::io("epoll_ctl(ADD)", e));
        }
        if slot == self.slots.len() {
            self.slots.push(None);
        }
        self.slots[slot] = Some(Slot { token, socket });
        // A number still mapped is one whose source was dropped unregistered
        // (epoll forgot it when it closed): its slot is free now.
        if let Some(stale) = self.by_fd.insert(fd.as_raw_fd(), slot) {
            self.slots[stale] = None;
            self.free.push(stale);
        }
        let want = self.len().min(EVENTS_MAX);
        if self.events.len() < want {
            self.events.resize(want, EpollEvent::empty());
            self.ready.reserve(want);
        }
        Ok(())
    }

    /// Removes `source` from the set.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`ENOENT`) when it is not registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut select = ipc_core::Select::new()?;
    /// select.register(&rx, 0)?;
    /// select.deregister(&rx)?;
    /// assert!(select.is_empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn deregister<S: Source + ?Sized>(&mut self, source: &S) -> Result<()> {
        let fd = sealed::Sealed::entry(source).fd;
        self.epoll
            .delete(fd)
            .map_err(|e| Error::io("epoll_ctl(DEL)", e))?;
        if let Some(slot) = self.by_fd.remove(&fd.as_raw_fd()) {
            self.slots[slot] = None;
            self.free.push(slot);
        }
        Ok(())
    }

    /// How many sources are registered (counting those dropped without
    /// being deregistered, until their number is registered again).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut select = ipc_core::Select::new()?;
    /// assert_eq!(select.len(), 0);
    /// select.register(&rx, 3)?;
    /// assert_eq!(select.len(), 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.by_fd.len()
    }

    /// Whether no source is registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut select = ipc_core::Select::new()?;
    /// assert!(select.is_empty());
    /// select.register(&rx, 3)?;
    /// assert!(!select.is_empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }

    /// Waits until at least one source is ready, or `timeout` passes
    /// (`None`: no limit), and returns the tokens of the ready ones.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when nothing was ready in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut select = ipc_core::Select::new()?;
    /// select.register(&rx, 0)?;
    /// let waited = select.wait(Some(Duration::from_millis(5)));
    /// assert!(matches!(waited, Err(ipc_core::Error::Timeout)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<&[usize]> {
        if self.events.is_empty() {
            self.events.push(EpollEvent::empty());
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // Records already in a ring make no socket readable: they are
            // looked for first, and the rings armed, so that the next
            // record rings the socket.
            self.ready.clear();
            for slot in self.slots.iter().flatten() {
                let with_records = slot
                    .socket
                    .as_ref()
                    .and_then(Weak::upgrade)
                    .is_some_and(|s| s.has_rings() && s.arm());
                if with_records {
                    self.ready.push(slot.token);
                }
            }
            let count = loop {
                let limit = match deadline {
                    // Only what else is ready now, beside the rings'.
                    _ if !self.ready.is_empty() => EpollTimeout::ZERO,
                    Some(deadline) => {
                        poll_timeout(deadline.saturating_duration_since(Instant::now()))
                    }
                    None => EpollTimeout::NONE,
                };
                match self.epoll.wait(&mut self.events, limit) {
                    Ok(0) if !self.ready.is_empty() => break 0,
                    Ok(0) if deadline.is_some() => return Err(Error::Timeout),
                    Ok(0) => continue,
                    Ok(n) => break n,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(Error::io("epoll_wait", e)),
                }
            };
            for event in &self.events[..count] {
                let Some(Some(slot)) = self.slots.get(event.data() as usize) else {
                    continue;
                };
                if self.ready.contains(&slot.token) {
                    continue;
                }
                let ready = match &slot.socket {
                    None => true,
                    // Dropped: its socket is gone from epoll too.
                    Some(socket) => socket.upgrade().is_some_and(|s| s.has_message()),
                };
                if ready {
                    self.ready.push(slot.token);
                }
            }
            if !self.ready.is_empty() {
                return Ok(&self.ready);
            }
            // Readable for what is no message: wait on.
        }
    }
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("epoll", &self.epoll.0)
            .field("registered", &self.len())
            .finish()
    }
}
