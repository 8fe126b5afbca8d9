//! What a receiver accepts in one message.

/// The most descriptors and bytes a receiver accepts in one message.
///
/// Limits belong to the receiver, so a hostile peer can flood neither its
/// descriptor table nor its memory. A message over a limit is refused with
/// an error, every descriptor that came with it closed, and the channel
/// stays usable. The defaults let every ordinary message through: 253
/// descriptors (the kernel's `SCM_MAX_FD`) and bodies up to 2 GiB.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Error, Limits};
///
/// let (tx, mut rx) = channel::<Vec<u8>>()?;
/// rx.set_limits(Limits::default().with_max_bytes(1024));
/// tx.send(vec![0; 4096])?;
/// assert!(matches!(rx.recv(), Err(Error::TooLarge { .. })));
/// tx.send(vec![0; 16])?;
/// assert_eq!(rx.recv()?.len(), 16);
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_descriptors: usize,
    max_bytes: u64,
}

impl Limits {
    /// The most descriptors one datagram can carry (`SCM_MAX_FD`).
    pub const MAX_DESCRIPTORS: usize = crate::sys::socket::MAX_FDS;

    /// The default body limit: 2 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

    /// Accept at most `n` descriptors per message (capped at
    /// [`Limits::MAX_DESCRIPTORS`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = ipc_core::Limits::default().with_max_descriptors(4);
    /// assert_eq!(limits.max_descriptors(), 4);
    /// ```
    pub fn with_max_descriptors(mut self, n: usize) -> Self {
        self.max_descriptors = n.min(Self::MAX_DESCRIPTORS);
        self
    }

    /// Accept bodies of at most `n` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = ipc_core::Limits::default().with_max_bytes(1 << 20);
    /// assert_eq!(limits.max_bytes(), 1 << 20);
    /// ```
    pub fn with_max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// The most descriptors accepted per message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_descriptors(), 253);
    /// ```
    pub fn max_descriptors(&self) -> usize {
        self.max_descriptors
    }

    /// The most body bytes accepted per message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_bytes(), 2 << 30);
    /// ```
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_descriptors: Self::MAX_DESCRIPTORS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}
