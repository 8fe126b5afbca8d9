//! Waiting on many receivers at once, of any message types, with epoll.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::error::{Error, Result};
use crate::sys;
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
    /// Shared with the sockets registered, which leave it as they close.
    epoll: Arc<Epoll>,
    events: Vec<EpollEvent>,
    ready: Vec<usize>,
    /// What is registered, by slot. epoll's data for a source is its slot
    /// and the slot's generation (see [`Slot::key`]).
    slots: Vec<Option<Slot>>,
    /// The generation of each slot, counted up each time it is freed: an
    /// event epoll reports under a freed slot's old key names no source.
    generations: Vec<u32>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// The slot of each registered descriptor number.
    by_fd: HashMap<RawFd, usize>,
    /// How many slots there are when `register` next frees the slots of
    /// dropped sources: twice as many as it left, so the sweeps cost a
    /// constant per registration.
    sweep_at: usize,
}

/// The fewest slots before `register` sweeps.
const SWEEP_MIN: usize = 64;

/// One registered source.
struct Slot {
    token: usize,
    /// The number it was registered under.
    fd: RawFd,
    /// The socket of a receiver or connection, which says whether it holds
    /// a message; a weak handle, so that the set keeps no socket open. The
    /// socket takes itself out of the epoll set before it closes (see
    /// [`Memberships`]), so a dead handle has no entry left, whoever else
    /// holds the same open file.
    socket: Option<Weak<Socket>>,
}

impl Slot {
    /// Whether the source is gone: a socket dropped or given up.
    fn is_dead(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| s.strong_count() == 0)
    }
}

/// epoll's data for slot `slot` in generation `generation`.
fn key(slot: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | slot as u64
}

/// The `Select`s a socket is registered with, kept by the socket.
///
/// epoll keeps an entry for as long as the open file lives, in this process
/// or any other (a peer that kept a copy of a socket it handed over, a
/// forked child, an `OwnedFd` taken out of the receiver), not as long as
/// the descriptor number that was registered. So the socket takes itself
/// out of each set while its number still names it: as it is dropped, or
/// as it is given up as an `OwnedFd`. Otherwise the entry would go on
/// reporting the file, level-triggered, to a set that can no longer name
/// it to epoll to remove it.
#[derive(Debug)]
pub(crate) struct Memberships {
    /// The socket's descriptor number, open for as long as this value
    /// lives (the socket drops this first).
    fd: RawFd,
    sets: Mutex<Vec<Weak<Epoll>>>,
}

impl Memberships {
    pub(crate) fn new(fd: BorrowedFd<'_>) -> Self {
        Memberships {
            fd: fd.as_raw_fd(),
            sets: Mutex::new(Vec::new()),
        }
    }

    fn sets(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Epoll>>> {
        self.sets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that the socket is in `epoll`.
    fn join(&self, epoll: &Arc<Epoll>) {
        let mut sets = self.sets();
        sets.retain(|set| set.strong_count() > 0);
        if !sets
            .iter()
            .any(|set| std::ptr::eq(set.as_ptr(), Arc::as_ptr(epoll)))
        {
            sets.push(Arc::downgrade(epoll));
        }
    }

    /// Notes that the socket left `epoll`.
    fn leave(&self, epoll: &Arc<Epoll>) {
        self.sets().retain(|set| {
            set.strong_count() > 0 && !std::ptr::eq(set.as_ptr(), Arc::as_ptr(epoll))
        });
    }
}

impl Drop for Memberships {
    fn drop(&mut self) {
        for set in self.sets().drain(..) {
            if let Some(epoll) = set.upgrade() {
                // ENOENT: the set's own deregister came first. Nothing else
                // can fail while the number is open.
                let _ = sys::epoll::forget(epoll.0.as_fd(), self.fd);
            }
        }
    }
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
    use std::sync::Arc;

    use crate::transport::Socket;

    /// How a source is registered: its descriptor, and its socket where it
    /// speaks this protocol.
    #[derive(Debug)]
    pub struct Entry<'a> {
        pub(crate) fd: BorrowedFd<'a>,
        pub(crate) socket: Option<&'a Arc<Socket>>,
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
            epoll: Arc::new(epoll),
            events: Vec::new(),
            ready: Vec::new(),
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_fd: HashMap::new(),
            sweep_at: SWEEP_MIN,
        })
    }

    /// Adds `source` under `token`. The set does not own it, nor keeps it
    /// open: drop it, or [`deregister`](Select::deregister) it, and it
    /// leaves the set.
    ///
    /// A receiver or connection leaves the set the moment it is dropped or
    /// turned into its `OwnedFd`, whoever else holds a copy of its socket
    /// (a peer, a forked child): it is never reported after, and its token
    /// is never reported for another source. Any other descriptor is
    /// epoll's to track, and epoll tracks the open file, not the number: if
    /// a copy of the file lives on (`dup`, `fork`, passed to another
    /// process), deregister the descriptor before closing it, or the set
    /// goes on waking for it.
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
        // A number mapped to a dead socket: its socket left epoll as it
        // closed, and this is another one under the same number.
        if let Some(&old) = self.by_fd.get(&fd.as_raw_fd()) {
            if self.slots[old].as_ref().is_some_and(Slot::is_dead) {
                self.release(fd.as_raw_fd());
            }
        }
        if self.free.is_empty() && self.slots.len() >= self.sweep_at {
            self.sweep();
        }
        let slot = self.free.pop().unwrap_or(self.slots.len());
        if slot == self.slots.len() {
            self.slots.push(None);
            self.generations.push(0);
        }
        let data = key(slot, self.generations[slot]);
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, data);
        if let Err(e) = self.epoll.add(fd, event) {
            self.free.push(slot);
            return Err(Error::io("epoll_ctl(ADD)", e));
        }
        if let Some(socket) = socket {
            socket.selects().join(&self.epoll);
        }
        // A number still mapped now is a descriptor of no socket that was
        // closed unregistered (epoll forgot it when its file closed): its
        // slot is free.
        self.release(fd.as_raw_fd());
        self.slots[slot] = Some(Slot {
            token,
            fd: fd.as_raw_fd(),
            socket: socket.map(Arc::downgrade),
        });
        self.by_fd.insert(fd.as_raw_fd(), slot);
        let want = self.len().min(EVENTS_MAX);
        if self.events.len() < want {
            self.events.resize(want, EpollEvent::empty());
            self.ready.reserve(want);
        }
        Ok(())
    }

    /// Frees the slots of sources dropped or given up.
    fn sweep(&mut self) {
        let dead: Vec<RawFd> = self
            .slots
            .iter()
            .flatten()
            .filter(|slot| slot.is_dead())
            .map(|slot| slot.fd)
            .collect();
        for fd in dead {
            self.release(fd);
        }
        self.sweep_at = (2 * self.len()).max(SWEEP_MIN);
    }

    /// Frees the slot of descriptor number `fd`, if it has one, under a new
    /// generation.
    fn release(&mut self, fd: RawFd) {
        if let Some(slot) = self.by_fd.remove(&fd) {
            self.slots[slot] = None;
            self.generations[slot] = self.generations[slot].wrapping_add(1);
            self.free.push(slot);
        }
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
        let sealed::Entry { fd, socket } = sealed::Sealed::entry(source);
        self.epoll
            .delete(fd)
            .map_err(|e| Error::io("epoll_ctl(DEL)", e))?;
        if let Some(socket) = socket {
            socket.selects().leave(&self.epoll);
        }
        self.release(fd.as_raw_fd());
        Ok(())
    }

    /// How many sources are registered: counting those dropped without
    /// being deregistered until the set notices, as it registers another
    /// source or sees the dropped one's last event.
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
                let with_records = slot.socket.as_ref().is_some_and(|socket| {
                    Socket::lend(socket, |s| s.has_rings() && s.arm()).unwrap_or(false)
                });
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
            let mut gone = None;
            for event in &self.events[..count] {
                let data = event.data();
                let index = (data & u64::from(u32::MAX)) as usize;
                let Some(Some(slot)) = self.slots.get(index) else {
                    continue;
                };
                // An entry of a slot since freed, reported before it left;
                // or a source whose ring was found with records already.
                if key(index, self.generations[index]) != data || self.ready.contains(&slot.token) {
                    continue;
                }
                let ready = match &slot.socket {
                    None => true,
                    // Dropped or given up: it left epoll as it went.
                    Some(socket) => {
                        Socket::lend(socket, Socket::has_message).unwrap_or_else(|| {
                            gone = Some(slot.fd);
                            false
                        })
                    }
                };
                if ready {
                    self.ready.push(slot.token);
                }
            }
            if let Some(fd) = gone {
                self.release(fd);
            }
            if !self.ready.is_empty() {
                return Ok(&self.ready);
            }
            if let Some(fd) = gone {
                self.release(fd);
            }
            if !self.ready.is_empty() {
                return Ok(&self.ready);
            }
            // Readable for what is no message, or a source gone: wait on.
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
