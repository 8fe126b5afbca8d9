//! One-way typed channels: `channel()`, `Sender<T>`, `Receiver<T>`.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SendError};
use crate::fd::{deserialize_end, deserialize_socket, serialize_end, serialize_fd};
use crate::limits::Limits;
use crate::transport::{Socket, Wait};

/// Creates a one-way channel for messages of type `T`.
///
/// Both ends are descriptors of one `AF_UNIX` `SOCK_SEQPACKET` socket pair:
/// they work within a process, survive `fork`, and travel inside messages to
/// other processes. Each message is one datagram, so senders on many threads
/// and in many processes never interleave.
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when the process is out of descriptors.
///
/// # Examples
///
/// ```
/// let (tx, rx) = ipc_core::channel::<(u32, String)>()?;
/// tx.send((7, "seven".to_string()))?;
/// assert_eq!(rx.recv()?, (7, "seven".to_string()));
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn channel<T>() -> Result<(Sender<T>, Receiver<T>)> {
    let (a, b) = Socket::pair()?;
    Ok((
        Sender::from_socket(Arc::new(a)),
        Receiver::from_socket(Arc::new(b)),
    ))
}

/// The sending end of a channel of `T`.
///
/// `Clone`, `Send` and `Sync`: clones share one socket, and every clone, in
/// this process or another one it was sent to, must be dropped before the
/// receiver sees [`Error::Disconnected`](crate::Error::Disconnected).
///
/// # Examples
///
/// ```
/// let (tx, rx) = ipc_core::channel::<u32>()?;
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let tx = tx.clone();
///         std::thread::spawn(move || tx.send(i).unwrap())
///     })
///     .collect();
/// drop(tx);
/// for w in workers {
///     w.join().unwrap();
/// }
/// let mut got: Vec<u32> = rx.iter().collect::<Result<_, _>>()?;
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Sender<T> {
    socket: Arc<Socket>,
    _message: PhantomData<fn(T)>,
}

impl<T> Sender<T> {
    pub(crate) fn from_socket(socket: Arc<Socket>) -> Self {
        Sender {
            socket,
            _message: PhantomData,
        }
    }
}

impl<T: Serialize + 'static> Sender<T> {
    /// Sends a message, waiting while the socket buffer is full.
    ///
    /// A body over 64 KiB travels in a memfd of this socket's pool (up to 4
    /// of them, 64 MiB in all) that the receiver hands back once it has
    /// copied the body. While all are lent and the receiver has yet to take
    /// earlier messages, `send` waits for it, as it waits for room in the
    /// socket: a sender far ahead of its receiver keeps a bounded amount of
    /// memory in flight, not a memfd per queued message. A body over
    /// 32 MiB goes in a fresh sealed memfd; the send waits, once it is
    /// written, while the sealed bodies still unread would pass 64 MiB
    /// with it (the first after the receiver caught up always goes), so a
    /// slow receiver pins about one such body, not one per queued message.
    ///
    /// Descriptors in the message are duplicated into the receiver when the
    /// datagram is queued; the message is then dropped, closing this side's
    /// copies. On failure the message comes back in the [`SendError`], every
    /// descriptor still open.
    ///
    /// # Errors
    ///
    /// [`Disconnected`](crate::Error::Disconnected) when the receiver is gone,
    /// [`TooManyDescriptors`](crate::Error::TooManyDescriptors) over 253
    /// descriptors, [`Encode`](crate::Error::Encode) when a `Serialize` impl
    /// fails, [`Io`](crate::Error::Io) for anything else the kernel refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::fs::File;
    /// use ipc_core::Fd;
    ///
    /// let (tx, rx) = ipc_core::channel::<Fd<File>>()?;
    /// tx.send(Fd::new(File::open("/dev/null")?))?;
    /// let file = rx.recv()?.into_inner();
    /// assert_eq!(file.metadata()?.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.send_waiting(message, Wait::Forever)
    }

    /// Sends a message the caller keeps: its descriptors are duplicated into
    /// the receiver as the datagram is queued, and the caller's stay open.
    /// So one message goes to several receivers without a clone of it (a
    /// large buffer, say, fanned out to two consumers). Waits as
    /// [`send`](Sender::send) does.
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send); the message was never given up.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::{channel, Fd};
    /// use std::fs::File;
    ///
    /// let (to_a, from_a) = channel::<(Vec<u8>, Fd<File>)>()?;
    /// let (to_b, from_b) = channel::<(Vec<u8>, Fd<File>)>()?;
    /// let message = (vec![7; 1 << 20], Fd::new(File::open("/dev/null")?));
    /// to_a.send_ref(&message)?;
    /// to_b.send_ref(&message)?;
    /// assert_eq!(from_a.recv()?.0, message.0);
    /// assert_eq!(from_b.recv()?.0, message.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_ref(&self, message: &T) -> Result<()> {
        self.socket.send(message, Wait::Forever)
    }

    /// Sends a message, waiting at most `timeout` for room (in the socket
    /// buffer, or for the receiver to take earlier large bodies).
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::Error::Timeout) when the receiver made no room in
    /// time, and everything [`send`](Sender::send) returns. The message
    /// comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Error;
    /// use std::time::Duration;
    ///
    /// let (tx, _rx) = ipc_core::channel::<Vec<u8>>()?;
    /// // Nobody reads: the socket buffer fills, then a send gives up.
    /// let full = loop {
    ///     if let Err(e) = tx.send_timeout(vec![0; 60_000], Duration::from_millis(20)) {
    ///         break e;
    ///     }
    /// };
    /// assert!(matches!(full.error(), Error::Timeout));
    /// assert_eq!(full.into_inner().len(), 60_000);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn send_timeout(&self, message: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_waiting(message, Wait::timeout(timeout))
    }

    /// Keeps this process's sends on this channel on the socket lane
    /// (`false`), or lets them take the ring lane (`true`, the default).
    ///
    /// The ring lane moves messages without descriptors through memory
    /// shared with the receiving process instead of the kernel, once a few
    /// have been sent; it is on unless the process was started with
    /// `IPC_CORE_RING=off`. The setting holds for every clone of this
    /// sender in this process, and for rings not offered yet: a ring in use
    /// stays in use.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = ipc_core::channel::<u64>()?;
    /// tx.set_ring_lane(false);
    /// for i in 0..10 {
    ///     tx.send(i)?;
    /// }
    /// assert_eq!(rx.iter().take(10).collect::<Result<Vec<_>, _>>()?, (0..10).collect::<Vec<_>>());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_ring_lane(&self, enabled: bool) {
        self.socket.set_ring(enabled);
    }

    /// [`send_ref`](Sender::send_ref) without waiting: `Error::Full` when
    /// there is no room.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn try_send_ref(&self, message: &T) -> Result<()> {
        self.socket.send(message, Wait::Never)
    }

    fn send_waiting(&self, message: T, wait: Wait) -> Result<(), SendError<T>> {
        match self.socket.send(&message, wait) {
            Ok(()) => Ok(()),
            Err(error) => Err(SendError::new(message, error)),
        }
    }

    /// Sends a message if the socket buffer has room, without waiting.
    ///
    /// It never waits for the pool of [`send`](Sender::send) either: with
    /// every pooled memfd lent, a large body goes in a fresh sealed memfd.
    ///
    /// # Errors
    ///
    /// [`Full`](crate::Error::Full) when the receiver has not kept up: the
    /// socket buffer is full, or a body in a fresh sealed memfd would keep
    /// more than 64 MiB of such bodies unread (where [`send`](Sender::send)
    /// waits); and everything `send` returns. The message comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Error;
    ///
    /// let (tx, _rx) = ipc_core::channel::<Vec<u8>>()?;
    /// let mut sent = 0;
    /// let full = loop {
    ///     match tx.try_send(vec![0; 60_000]) {
    ///         Ok(()) => sent += 1,
    ///         Err(e) => break e,
    ///     }
    /// };
    /// assert!(matches!(full.error(), Error::Full));
    /// assert_eq!(full.into_inner().len(), 60_000);
    /// assert!(sent > 0);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_send(&self, message: T) -> Result<(), SendError<T>> {
        self.send_waiting(message, Wait::Never)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender::from_socket(self.socket.clone())
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("fd", &self.socket.as_fd())
            .finish()
    }
}

impl<T> AsFd for Sender<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl<T> From<OwnedFd> for Sender<T> {
    /// Adopts a connected `SOCK_SEQPACKET` socket; the caller promises its
    /// peer receives this protocol and type.
    fn from(fd: OwnedFd) -> Self {
        Sender::from_socket(Arc::new(Socket::new(fd)))
    }
}

impl<T> TryFrom<Sender<T>> for OwnedFd {
    type Error = Sender<T>;

    /// Gives up the socket, if this is its last handle; otherwise the sender
    /// comes back.
    fn try_from(sender: Sender<T>) -> Result<OwnedFd, Sender<T>> {
        Socket::take_last(sender.socket)
            .map(Socket::into_fd)
            .map_err(Sender::from_socket)
    }
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.socket.as_fd(), serializer)
    }
}

impl<'de, T> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_socket(deserializer, "Sender")
            .map(|fd| Sender::from_socket(Arc::new(Socket::received(fd))))
    }
}

/// The receiving end of a channel of `T`.
///
/// `Send` and `Sync`: threads may receive from one `Receiver` at once, each
/// message going to one of them. Not `Clone`: send it to another process
/// inside a message to hand it over.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Receiver};
///
/// // A receiver travels inside a message, to be read elsewhere.
/// let (handover, arrivals) = channel::<Receiver<String>>()?;
/// let (tx, rx) = channel::<String>()?;
/// handover.send(rx)?;
/// let rx = arrivals.recv()?;
/// tx.send("through the new owner".into())?;
/// assert_eq!(rx.recv()?, "through the new owner");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Receiver<T> {
    socket: Arc<Socket>,
    limits: Limits,
    _message: PhantomData<fn() -> T>,
}

impl<T> Receiver<T> {
    pub(crate) fn from_socket(socket: Arc<Socket>) -> Self {
        Receiver {
            socket,
            limits: Limits::default(),
            _message: PhantomData,
        }
    }

    pub(crate) fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    fn receive(&self, wait: Wait) -> Result<T>
    where
        T: DeserializeOwned + 'static,
    {
        self.socket.settle(wait)?;
        self.socket.recv(&self.limits, wait)
    }

    /// Takes the next message if one is waiting, leaving a body over 1 MiB
    /// undecoded for the async face to decode off its runtime's threads.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    ///
    /// `woken`: the caller was woken by the socket's readiness.
    pub(crate) fn try_recv_deferring(&self, woken: bool) -> Result<crate::transport::Arrival<T>>
    where
        T: DeserializeOwned + 'static,
    {
        self.socket.settle(Wait::Never)?;
        self.socket.try_recv_deferring(&self.limits, woken)
    }

    /// Arms the rings before an async receive waits on the socket; `true`
    /// when a record came meanwhile.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn arm(&self) -> bool {
        self.socket.arm()
    }

    /// Counts an async receive asleep on the rings until the guard drops.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn sleeping(&self) -> crate::transport::Sleeping<'_> {
        self.socket.sleeping()
    }

    /// The limits this receiver applies to each message.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = ipc_core::channel::<u8>()?;
    /// assert_eq!(rx.limits(), ipc_core::Limits::default());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the limits this receiver applies to each message.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, mut rx) = ipc_core::channel::<u8>()?;
    /// rx.set_limits(ipc_core::Limits::default().with_max_descriptors(0));
    /// assert_eq!(rx.limits().max_descriptors(), 0);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_limits(&mut self, limits: Limits) {
        self.socket.set_max_rings(limits.max_rings());
        self.limits = limits;
    }
}

impl<T: DeserializeOwned + 'static> Receiver<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// [`Disconnected`](crate::Error::Disconnected) once every sender is gone
    /// and the queue is empty. A message that breaks the protocol or the
    /// limits is an error too ([`Decode`](crate::Error::Decode),
    /// [`Descriptor`](crate::Error::Descriptor),
    /// [`TooLarge`](crate::Error::TooLarge)): its descriptors are closed, and
    /// the next call receives the next message.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Error;
    ///
    /// let (tx, rx) = ipc_core::channel::<u64>()?;
    /// std::thread::spawn(move || tx.send(42).unwrap());
    /// assert_eq!(rx.recv()?, 42);
    /// assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn recv(&self) -> Result<T> {
        self.receive(Wait::Forever)
    }

    /// Takes the next message if one is waiting.
    ///
    /// # Errors
    ///
    /// [`Empty`](crate::Error::Empty) when none is, and what
    /// [`recv`](Receiver::recv) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Error;
    ///
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    /// tx.send(1)?;
    /// assert_eq!(rx.try_recv()?, 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<T> {
        self.receive(Wait::Never)
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    ///
    /// [`Timeout`](crate::Error::Timeout) when none came in time, and what
    /// [`recv`](Receiver::recv) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Error;
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// assert!(matches!(rx.recv_timeout(Duration::from_millis(10)), Err(Error::Timeout)));
    /// tx.send(3)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(10))?, 3);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.receive(Wait::timeout(timeout))
    }

    /// An iterator that waits for each message and ends when the channel is
    /// disconnected. Errors other than `Disconnected` are yielded, so a bad
    /// message does not end the stream.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = ipc_core::channel::<u32>()?;
    /// for i in 0..3 {
    ///     tx.send(i)?;
    /// }
    /// drop(tx);
    /// let got: Vec<u32> = rx.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(got, [0, 1, 2]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }
}

/// Messages of a [`Receiver`] until it is disconnected; see [`Receiver::iter`].
///
/// # Examples
///
/// ```
/// let (tx, rx) = ipc_core::channel::<u8>()?;
/// tx.send(1)?;
/// drop(tx);
/// let mut iter = rx.iter();
/// assert_eq!(iter.next().transpose()?, Some(1));
/// assert!(iter.next().is_none());
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T: DeserializeOwned + 'static> Iterator for Iter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.receiver.recv() {
            Err(crate::Error::Disconnected) => None,
            other => Some(other),
        }
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("receiver", self.receiver)
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("fd", &self.socket.as_fd())
            .field("limits", &self.limits)
            .finish()
    }
}

impl<T> AsFd for Receiver<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl<T> From<OwnedFd> for Receiver<T> {
    /// Adopts a connected `SOCK_SEQPACKET` socket; the caller promises its
    /// peer sends this protocol and type.
    fn from(fd: OwnedFd) -> Self {
        Receiver::from_socket(Arc::new(Socket::new(fd)))
    }
}

impl<T> TryFrom<Receiver<T>> for OwnedFd {
    type Error = Receiver<T>;

    /// Gives up the socket, unless a [`Sender`] split from the same
    /// [`Connection`](crate::Connection) still shares it, or rings of the
    /// ring lane come in beside it (their messages would be lost); then the
    /// receiver comes back.
    fn try_from(receiver: Receiver<T>) -> Result<OwnedFd, Receiver<T>> {
        // The rings would be lost with their records: the receiver stays.
        if receiver.socket.has_rings() {
            return Err(receiver);
        }
        let limits = receiver.limits;
        Socket::take_last(receiver.socket)
            .map(Socket::into_fd)
            .map_err(|socket| {
                let mut receiver = Receiver::from_socket(socket);
                receiver.limits = limits;
                receiver
            })
    }
}

impl<T> Serialize for Receiver<T> {
    /// The socket, and the rings its peers write, which travel with it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_end(&self.socket, serializer)
    }
}

impl<'de, T> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_end(deserializer, "Receiver")
            .map(|socket| Receiver::from_socket(Arc::new(socket)))
    }
}

impl<T> crate::select::Source for Receiver<T> {}
impl<T> crate::select::sealed::Sealed for Receiver<T> {
    fn entry(&self) -> crate::select::sealed::Entry<'_> {
        crate::select::sealed::Entry {
            fd: self.socket.as_fd(),
            socket: Some(&self.socket),
        }
    }
}
