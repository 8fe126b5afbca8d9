//! Waiting on many receivers at once, of any message types, with epoll.

use std::fmt;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::error::{Error, Result};
use crate::transport::poll_timeout;

/// The most events one wait collects; more ready sources show at the next.
const EVENTS_MAX: usize = 1024;

/// A set of receivers (or connections, listeners, any descriptor) to wait
/// on together, each under a token of the caller's choosing.
///
/// A source is ready while a message is queued or its peer is gone, so the
/// matching `try_recv` then returns a message or `Disconnected`, never
/// `Empty` (unless another thread took the message first). The cost of a
/// wait does not grow with the number of sources registered.
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
    registered: usize,
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
            registered: 0,
        })
    }

    /// Adds `source` under `token`. The set does not own it: drop it, or
    /// [`deregister`](Select::deregister) it, and it leaves the set.
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
    pub fn register(&mut self, source: &impl AsFd, token: usize) -> Result<()> {
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token as u64);
        self.epoll
            .add(source.as_fd(), event)
            .map_err(|e| Error::io("epoll_ctl(ADD)", e))?;
        self.registered += 1;
        let want = self.registered.min(EVENTS_MAX);
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
    pub fn deregister(&mut self, source: &impl AsFd) -> Result<()> {
        self.epoll
            .delete(source.as_fd())
            .map_err(|e| Error::io("epoll_ctl(DEL)", e))?;
        self.registered = self.registered.saturating_sub(1);
        Ok(())
    }

    /// How many sources are registered (counting those dropped without
    /// being deregistered).
    pub fn len(&self) -> usize {
        self.registered
    }

    /// Whether no source is registered.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
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
        let count = loop {
            let limit = match deadline {
                Some(deadline) => poll_timeout(deadline.saturating_duration_since(Instant::now())),
                None => EpollTimeout::NONE,
            };
            match self.epoll.wait(&mut self.events, limit) {
                Ok(0) if deadline.is_some() => return Err(Error::Timeout),
                Ok(0) => continue,
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::io("epoll_wait", e)),
            }
        };
        self.ready.clear();
        self.ready
            .extend(self.events[..count].iter().map(|e| e.data() as usize));
        Ok(&self.ready)
    }
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("epoll", &self.epoll.0)
            .field("registered", &self.registered)
            .finish()
    }
}
