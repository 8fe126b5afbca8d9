//! What a receiver accepts in one message.

/// The most a receiver accepts in one message: descriptors, body bytes,
/// nesting depth, stack taken by the decode, and elements that take no
/// bytes.
///
/// Limits belong to the receiver, so a hostile peer can flood neither its
/// descriptor table nor its memory, overflow its stack with a deeply nested
/// value, nor keep it busy decoding a `Vec<()>` of 2^64 elements. A message
/// over a limit is refused with an error, every descriptor that came with
/// it closed, and the channel stays usable. The defaults let every ordinary
/// message through: 253 descriptors (the kernel's `SCM_MAX_FD`), bodies up
/// to 2 GiB, 128 levels of nesting, 512 KiB of stack for the decode,
/// 65,536 zero-sized elements.
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
    max_depth: usize,
    max_stack: usize,
    max_zero_sized: usize,
    max_rings: usize,
}

impl Limits {
    /// The most descriptors one datagram can carry (`SCM_MAX_FD`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Error, Fd, Limits};
    /// use std::fs::File;
    ///
    /// let (tx, _rx) = channel::<Vec<Fd<File>>>()?;
    /// let files = (0..=Limits::MAX_DESCRIPTORS)
    ///     .map(|_| File::open("/dev/null").map(Fd::new))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let refused = tx.send(files).unwrap_err();
    /// assert!(matches!(refused.error(), Error::TooManyDescriptors { max: 253, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const MAX_DESCRIPTORS: usize = 253;

    /// The default body limit: 2 GiB.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Limits;
    /// assert_eq!(Limits::default().max_bytes(), Limits::DEFAULT_MAX_BYTES);
    /// // Halved for a receiver with less memory to spare:
    /// let tighter = Limits::default().with_max_bytes(Limits::DEFAULT_MAX_BYTES / 2);
    /// assert_eq!(tighter.max_bytes(), 1 << 30);
    /// ```
    pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

    /// The default nesting limit: 128 levels, deeper than any hand-written
    /// type. The stack a level takes grows with the size of the value at
    /// that level, so the count alone does not bound the stack: a type
    /// whose levels hold 4 KiB arrays would overflow a 2 MiB stack in
    /// fewer levels. [`Limits::DEFAULT_MAX_STACK`] bounds that.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Limits;
    /// assert_eq!(Limits::default().max_depth(), Limits::DEFAULT_MAX_DEPTH);
    /// ```
    pub const DEFAULT_MAX_DEPTH: usize = 128;

    /// The default number of rings a receiving end reads: 16.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Limits;
    /// assert_eq!(Limits::default().max_rings(), Limits::DEFAULT_MAX_RINGS);
    /// ```
    pub const DEFAULT_MAX_RINGS: usize = 16;

    /// The default stack budget of one decode: 512 KiB.
    ///
    /// With it, a receive on a thread with a stack of 2 MiB (a spawned
    /// thread's and a tokio worker's default) survives any message, in
    /// debug and release builds, leaving the rest for the caller's frames
    /// and for the one level a decode may enter past the budget. Ordinary
    /// messages take a few KiB at most: 128 levels of a small recursive
    /// type take well under the budget.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Limits;
    /// assert_eq!(Limits::default().max_stack(), Limits::DEFAULT_MAX_STACK);
    /// assert_eq!(Limits::DEFAULT_MAX_STACK, 512 << 10);
    /// ```
    pub const DEFAULT_MAX_STACK: usize = 512 << 10;

    /// The default limit on elements that take no bytes: 65,536.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Limits;
    /// assert_eq!(Limits::default().max_zero_sized(), Limits::DEFAULT_MAX_ZERO_SIZED);
    /// ```
    pub const DEFAULT_MAX_ZERO_SIZED: usize = 1 << 16;

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

    /// Accept values nested at most `n` levels deep.
    ///
    /// Each struct, tuple, enum variant, `Option`, sequence and map inside
    /// the message takes a level: `Vec<Option<(u8, String)>>` takes three
    /// (`String` and numbers take none). A message type that recurses
    /// (`enum Tree { Leaf(u8), Node(Box<Tree>) }`) takes a level per node,
    /// so this bounds how deep the decoder recurses: raise it only as far
    /// as the receiving thread's stack allows.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Error, Limits};
    ///
    /// let (tx, mut rx) = channel::<Option<Option<Option<u8>>>>()?;
    /// rx.set_limits(Limits::default().with_max_depth(2));
    /// tx.send(Some(Some(Some(1))))?;
    /// assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    /// tx.send(Some(None))?;
    /// assert_eq!(rx.recv()?, Some(None));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn with_max_depth(mut self, n: usize) -> Self {
        self.max_depth = n;
        self
    }

    /// Let the decode of one message take at most `bytes` of stack before
    /// it refuses to nest further.
    ///
    /// The decoder recurses once per level of nesting, and each level's
    /// frames hold the value being built at that level, so a recursive
    /// type whose levels hold large values (`[u8; 4096]`) takes tens of
    /// KiB per level: a peer could overflow the receiving thread's stack
    /// with a small body well within [`with_max_depth`](Self::with_max_depth).
    /// The decode measures the stack it has taken where each level begins
    /// and refuses past `bytes` with [`Error::Decode`](crate::Error::Decode),
    /// like a message too deep. One level more than the budget may be
    /// entered, and the receive's own frames come on top: keep `bytes` well
    /// under the receiving thread's stack (a quarter of it, as the default
    /// does for 2 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Error, Limits};
    ///
    /// #[derive(ipc_core::IpcMessage, Debug)]
    /// enum Command {
    ///     Write([u8; 4096]),
    ///     Batch(Vec<Command>),
    /// }
    ///
    /// let (tx, mut rx) = channel::<Command>()?;
    /// // A budget too small for a level that holds 4 KiB.
    /// rx.set_limits(Limits::default().with_max_stack(1024));
    /// tx.send(Command::Batch(vec![Command::Write([7; 4096])]))?;
    /// assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    /// rx.set_limits(Limits::default());
    /// tx.send(Command::Batch(vec![Command::Write([7; 4096])]))?;
    /// assert!(matches!(rx.recv()?, Command::Batch(..)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn with_max_stack(mut self, bytes: usize) -> Self {
        self.max_stack = bytes;
        self
    }

    /// Accept at most `n` sequence elements and map entries that take no
    /// bytes of the body, such as the `()` of a `Vec<()>`, in one message.
    ///
    /// Every other element takes at least one byte, so the body's length
    /// bounds them; these would let a peer announce 2^64 of them in a few
    /// bytes and keep the receiver decoding for ever.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Error, Limits};
    ///
    /// let (tx, mut rx) = channel::<Vec<()>>()?;
    /// rx.set_limits(Limits::default().with_max_zero_sized(10));
    /// tx.send(vec![(); 11])?;
    /// assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    /// tx.send(vec![(); 10])?;
    /// assert_eq!(rx.recv()?.len(), 10);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn with_max_zero_sized(mut self, n: usize) -> Self {
        self.max_zero_sized = n;
        self
    }

    /// Read at most `n` rings: one per sending process that offers one
    /// (the ring lane; see the crate's docs). Each costs a mapping of 260
    /// KiB and two descriptors. Past `n`, the rings of senders that are
    /// gone make room, or an offer is refused and that sender goes on with
    /// the socket lane alone. `0` keeps this receiver on the socket lane.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Limits};
    ///
    /// let (tx, mut rx) = channel::<u32>()?;
    /// rx.set_limits(Limits::default().with_max_rings(0));
    /// for i in 0..100 {
    ///     tx.send(i)?;
    ///     assert_eq!(rx.recv()?, i);
    /// }
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn with_max_rings(mut self, n: usize) -> Self {
        self.max_rings = n;
        self
    }

    /// The most rings read.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_rings(), 16);
    /// ```
    pub fn max_rings(&self) -> usize {
        self.max_rings
    }

    /// The deepest nesting accepted per message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_depth(), 128);
    /// ```
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The most stack one decode takes before it refuses to nest further.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_stack(), 512 * 1024);
    /// ```
    pub fn max_stack(&self) -> usize {
        self.max_stack
    }

    /// The most zero-sized elements accepted per message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::Limits::default().max_zero_sized(), 65_536);
    /// ```
    pub fn max_zero_sized(&self) -> usize {
        self.max_zero_sized
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

// The kernel's SCM_MAX_FD, as the socket layer knows it.
const _: () = assert!(Limits::MAX_DESCRIPTORS == crate::sys::socket::MAX_FDS);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_descriptors: Self::MAX_DESCRIPTORS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_stack: Self::DEFAULT_MAX_STACK,
            max_zero_sized: Self::DEFAULT_MAX_ZERO_SIZED,
            max_rings: Self::DEFAULT_MAX_RINGS,
        }
    }
}
