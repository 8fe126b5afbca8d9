//! Two-way typed connections: `Connection<Out, In>`.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::channel::{Receiver, Sender};
use crate::error::{Result, SendError};
use crate::fd::{deserialize_end, serialize_end};
use crate::limits::Limits;
use crate::transport::Socket;

/// One end of a two-way connection: sends `Out`, receives `In`.
///
/// The peer end is a `Connection<In, Out>`. Both directions share one
/// `SOCK_SEQPACKET` socket, so a connection is one descriptor, and it
/// travels inside messages like a [`Sender`] does.
///
/// # Examples
///
/// ```
/// use ipc_core::Connection;
///
/// let (client, server) = Connection::<String, usize>::pair()?;
/// client.send("four".to_string())?;
/// let request = server.recv()?;
/// server.send(request.len())?;
/// assert_eq!(client.recv()?, 4);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Connection<Out, In> {
    sender: Sender<Out>,
    receiver: Receiver<In>,
}

impl<Out, In> Connection<Out, In> {
    /// Creates a connected pair: this end sends `Out` and receives `In`, the
    /// other end the reverse.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the process is out of descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<u8, bool>::pair()?;
    /// a.send(1)?;
    /// b.send(b.recv()? == 1)?;
    /// assert!(a.recv()?);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn pair() -> Result<(Connection<Out, In>, Connection<In, Out>)> {
        let (a, b) = Socket::pair()?;
        Ok((Connection::from_socket(a), Connection::from_socket(b)))
    }

    pub(crate) fn from_socket(socket: Socket) -> Self {
        let socket = Arc::new(socket);
        Connection {
            sender: Sender::from_socket(socket.clone()),
            receiver: Receiver::from_socket(socket),
        }
    }

    /// Who is at the other end: its pid, uid and gid as the kernel vouches
    /// for them, and a pidfd where the kernel offers one. The uid and gid
    /// are the peer's effective ids as of this call where a pidfd of it
    /// lets them be read; what they are otherwise, for each kind of
    /// connection, is told at [`PeerCredentials`](crate::PeerCredentials).
    /// Call it again to see ids the peer has changed since. For the parent's end of
    /// a spawned child, this waits (up to 10 s) for the child's greeting,
    /// which tells.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPeer`](crate::Error::UnknownPeer) for an end made by
    /// [`pair`](Connection::pair) or that came inside a message: the kernel
    /// cannot tell who holds the other end.
    /// [`Error::GreetingTimeout`](crate::Error::GreetingTimeout) when a
    /// spawned child has not greeted in time. [`Error::Io`](crate::Error::Io)
    /// when the kernel refuses the query.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), ()>::pair()?;
    /// // Either end of a pair may have been handed to anyone.
    /// assert!(matches!(a.peer_credentials(), Err(ipc_core::Error::UnknownPeer(_))));
    ///
    /// let name = format!("@ipc-core-peer-doc-{}", std::process::id());
    /// let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// let client = std::thread::spawn(move || ipc_core::Connection::<(), ()>::connect(&name));
    /// let conn = listener.accept()?;
    /// # client.join().unwrap()?;
    /// if conn.peer_credentials()?.uid() != nix::unistd::geteuid().as_raw() {
    ///     return Err("refusing a peer of another user".into());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_credentials(&self) -> Result<crate::PeerCredentials> {
        self.receiver.socket().peer_credentials()
    }

    /// The limits applied to each received message.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// assert_eq!(a.limits().max_descriptors(), 253);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn limits(&self) -> Limits {
        self.receiver.limits()
    }

    /// Sets the limits applied to each received message.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut a, _b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// a.set_limits(ipc_core::Limits::default().with_max_bytes(64));
    /// assert_eq!(a.limits().max_bytes(), 64);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_limits(&mut self, limits: Limits) {
        self.receiver.set_limits(limits);
    }

    /// The receiving half, for the async face.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn receiver(&self) -> &Receiver<In> {
        &self.receiver
    }

    /// Keeps this process's sends on this connection on the socket lane
    /// (`false`), or lets them take the ring lane (`true`, the default);
    /// see [`Sender::set_ring_lane`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// a.set_ring_lane(false);
    /// a.send(1)?;
    /// assert_eq!(b.recv()?, 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_ring_lane(&self, enabled: bool) {
        self.receiver.socket().set_ring(enabled);
    }

    /// Splits into a sender and a receiver that share the socket, so one
    /// thread can send while another receives. The sender can be cloned.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// let (tx, rx) = a.split();
    /// b.send(5)?;
    /// tx.send(rx.recv()? + 1)?;
    /// assert_eq!(b.recv()?, 6);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn split(self) -> (Sender<Out>, Receiver<In>) {
        (self.sender, self.receiver)
    }
}

impl<Out: Serialize + 'static, In> Connection<Out, In> {
    /// Sends a message, waiting while the socket buffer is full; see
    /// [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`]; the message comes back in the [`SendError`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<&str, ()>::pair()?;
    /// a.send("hi")?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn send(&self, message: Out) -> Result<(), SendError<Out>> {
        self.sender.send(message)
    }

    /// Sends a message without waiting; see [`Sender::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<u8, ()>::pair()?;
    /// a.try_send(1)?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_send(&self, message: Out) -> Result<(), SendError<Out>> {
        self.sender.try_send(message)
    }

    /// Sends a message the caller keeps; see [`Sender::send_ref`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<Vec<u8>, ()>::pair()?;
    /// let block = vec![1; 4096];
    /// a.send_ref(&block)?;
    /// a.send_ref(&block)?;
    /// assert_eq!(b.recv()?, block);
    /// assert_eq!(b.recv()?, block);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn send_ref(&self, message: &Out) -> Result<()> {
        self.sender.send_ref(message)
    }

    /// Sends a message, waiting at most `timeout` for room; see
    /// [`Sender::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_timeout`]; the message comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = ipc_core::Connection::<u8, ()>::pair()?;
    /// a.send_timeout(1, Duration::from_millis(10))?;
    /// assert_eq!(b.recv()?, 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn send_timeout(&self, message: Out, timeout: Duration) -> Result<(), SendError<Out>> {
        self.sender.send_timeout(message, timeout)
    }
}

impl<Out, In: DeserializeOwned + 'static> Connection<Out, In> {
    /// Waits for the next message; see [`Receiver::recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`]: [`Disconnected`](crate::Error::Disconnected)
    /// once the peer end is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = ipc_core::Connection::<(), u8>::pair()?;
    /// b.send(9)?;
    /// assert_eq!(a.recv()?, 9);
    /// drop(b);
    /// assert!(matches!(a.recv(), Err(ipc_core::Error::Disconnected)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn recv(&self) -> Result<In> {
        self.receiver.recv()
    }

    /// Takes the next message if one is waiting; see [`Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::try_recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = ipc_core::Connection::<(), u8>::pair()?;
    /// assert!(matches!(a.try_recv(), Err(ipc_core::Error::Empty)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<In> {
        self.receiver.try_recv()
    }

    /// Waits at most `timeout` for the next message; see
    /// [`Receiver::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, _b) = ipc_core::Connection::<(), u8>::pair()?;
    /// let got = a.recv_timeout(Duration::from_millis(5));
    /// assert!(matches!(got, Err(ipc_core::Error::Timeout)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<In> {
        self.receiver.recv_timeout(timeout)
    }
}

impl<Out, In> fmt::Debug for Connection<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.as_fd())
            .field("limits", &self.limits())
            .finish()
    }
}

impl<Out, In> AsFd for Connection<Out, In> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.receiver.as_fd()
    }
}

impl<Out, In> From<OwnedFd> for Connection<Out, In> {
    /// Adopts a connected `SOCK_SEQPACKET` socket; the caller promises its
    /// peer speaks this protocol with the mirrored types.
    fn from(fd: OwnedFd) -> Self {
        Connection::from_socket(Socket::new(fd))
    }
}

impl<Out, In> From<Connection<Out, In>> for OwnedFd {
    fn from(connection: Connection<Out, In>) -> OwnedFd {
        let Connection { sender, receiver } = connection;
        drop(sender);
        match OwnedFd::try_from(receiver) {
            Ok(fd) => fd,
            // The sender was the only other handle and is dropped above.
            Err(_) => unreachable!("a connection's socket has exactly two handles"),
        }
    }
}

impl<Out, In> Serialize for Connection<Out, In> {
    /// The socket, and the rings the peer writes to it, which travel with it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_end(self.receiver.socket(), serializer)
    }
}

impl<'de, Out, In> Deserialize<'de> for Connection<Out, In> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_end(deserializer, "Connection").map(Connection::from_socket)
    }
}

impl<Out, In> crate::select::Source for Connection<Out, In> {}
impl<Out, In> crate::select::sealed::Sealed for Connection<Out, In> {
    fn entry(&self) -> crate::select::sealed::Entry<'_> {
        crate::select::sealed::Sealed::entry(&self.receiver)
    }
}
