//! The async face, on tokio (cargo feature `tokio`).
//!
//! Each async type wraps its blocking counterpart and registers the same
//! socket with tokio's reactor through [`AsyncFd`]. An operation waits for
//! readiness, then makes the blocking type's non-blocking call
//! (`try_recv`, `try_send`: `MSG_DONTWAIT`, so the descriptor's own flags,
//! shared with every process that holds it, are never touched). One
//! datagram per operation, the same wire, no thread per channel and no busy
//! loop. `into_inner` gives the blocking type back.
//!
//! Creating an async type registers its socket with the current runtime.
//! The registration borrows the descriptor that the wrapped blocking type
//! owns; the blocking type is dropped, or handed back, only after the
//! registration is gone.
//!
//! # Panics
//!
//! The constructors (`new`, `from`) panic outside a tokio runtime, as
//! tokio's own `from_std` constructors do.

use std::fmt;
use std::future::poll_fn;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::{Receiver, Sender};
use crate::connection::Connection;
use crate::error::{Error, Result, SendError};
use crate::handshake;
use crate::listener::{connect_socket, Listener, GREETING_TIMEOUT};
use crate::message::IpcMessage;
use crate::sys::reactor::Registration;
use crate::transport::{Socket, Wait};

type Io = Arc<AsyncFd<Registration>>;

fn register(fd: BorrowedFd<'_>) -> Io {
    Arc::new(crate::sys::reactor::register(fd))
}

fn readiness_error(source: std::io::Error) -> Error {
    Error::Io {
        op: "tokio readiness",
        source,
    }
}

/// Waits for readability and runs `attempt` until it is not `Empty`.
fn poll_recv_with<T>(
    io: &Io,
    cx: &mut Context<'_>,
    attempt: impl Fn() -> Result<T>,
) -> Poll<Result<T>> {
    loop {
        let mut guard = ready!(io.poll_read_ready(cx)).map_err(readiness_error)?;
        match attempt() {
            Err(Error::Empty) => guard.clear_ready(),
            result => return Poll::Ready(result),
        }
    }
}

/// Waits for writability and runs `attempt` until it is not `Full`.
async fn send_with<T>(
    io: &Io,
    mut message: T,
    attempt: impl Fn(T) -> Result<(), SendError<T>>,
) -> Result<(), SendError<T>> {
    loop {
        let mut guard = match io.writable().await {
            Ok(guard) => guard,
            Err(source) => return Err(SendError::new(message, readiness_error(source))),
        };
        match attempt(message) {
            Err(e) if matches!(e.error(), Error::Full) => {
                message = e.into_inner();
                guard.clear_ready();
            }
            result => return result,
        }
    }
}

/// The async sending end of a channel; see [`Sender`].
///
/// Clone it, not the `Sender` inside: a socket is registered with the
/// reactor once, and the clones share the registration.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::tokio::{AsyncReceiver, AsyncSender};
///
/// let (tx, rx) = ipc_core::channel::<String>()?;
/// let (tx, rx) = (AsyncSender::new(tx), AsyncReceiver::new(rx));
/// tx.send("hello".to_string()).await?;
/// assert_eq!(rx.recv().await?, "hello");
/// let blocking: ipc_core::Sender<String> = tx.into_inner();
/// # drop(blocking);
/// # Ok(())
/// # }
/// ```
pub struct AsyncSender<T> {
    io: Io,
    inner: Sender<T>,
}

impl<T> AsyncSender<T> {
    /// Registers `sender` with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(sender: Sender<T>) -> Self {
        AsyncSender {
            io: register(sender.as_fd()),
            inner: sender,
        }
    }

    /// The blocking sender back.
    pub fn into_inner(self) -> Sender<T> {
        let AsyncSender { io, inner } = self;
        drop(io);
        inner
    }
}

impl<T: Serialize> AsyncSender<T> {
    /// Sends a message, waiting while the socket buffer is full, and while
    /// a body in a fresh sealed memfd would keep more than 64 MiB of such
    /// bodies unread (see [`Sender::try_send`]). It never waits for the
    /// pool of [`Sender::send`]: with every pooled memfd lent, a large body
    /// goes in a fresh sealed memfd.
    ///
    /// # Errors
    ///
    /// As [`Sender::send`]; the message comes back in the [`SendError`].
    ///
    /// # Cancel safety
    ///
    /// A message is sent whole or not at all. Dropped before it is sent (in
    /// a `select!`, say), the future drops the message with it.
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        send_with(&self.io, message, |m| self.inner.try_send(m)).await
    }
}

impl<T> Clone for AsyncSender<T> {
    fn clone(&self) -> Self {
        AsyncSender {
            io: self.io.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for AsyncSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSender")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The async receiving end of a channel; see [`Receiver`]. Also a
/// [`Stream`](futures_core::Stream) of messages that ends when the channel
/// is disconnected.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::tokio::AsyncReceiver;
/// use std::time::Duration;
///
/// let (tx, rx) = ipc_core::channel::<u32>()?;
/// let rx = AsyncReceiver::new(rx);
/// tx.send(5)?;
/// let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
/// assert_eq!(got.unwrap()?, 5);
/// # Ok(())
/// # }
/// ```
pub struct AsyncReceiver<T> {
    io: Io,
    inner: Receiver<T>,
}

impl<T> AsyncReceiver<T> {
    /// Registers `receiver` with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(receiver: Receiver<T>) -> Self {
        AsyncReceiver {
            io: register(receiver.as_fd()),
            inner: receiver,
        }
    }

    /// The blocking receiver back.
    pub fn into_inner(self) -> Receiver<T> {
        let AsyncReceiver { io, inner } = self;
        drop(io);
        inner
    }
}

impl<T: DeserializeOwned> AsyncReceiver<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`]: [`Error::Disconnected`] once every sender is
    /// gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the future takes a datagram only in the poll that
    /// returns it, so dropped in a `select!` or a timeout, it has taken
    /// nothing, and no message or descriptor is lost.
    pub async fn recv(&self) -> Result<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message; the building block of [`recv`](Self::recv)
    /// and of the `Stream` impl.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        poll_recv_with(&self.io, cx, || self.inner.try_recv())
    }
}

impl<T: DeserializeOwned> futures_core::Stream for AsyncReceiver<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        match ready!(self.poll_recv(cx)) {
            Err(Error::Disconnected) => Poll::Ready(None),
            other => Poll::Ready(Some(other)),
        }
    }
}

impl<T> fmt::Debug for AsyncReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncReceiver")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The async face of a [`Connection`]: sends `Out`, receives `In`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::{tokio::AsyncConnection, Connection};
///
/// let (a, b) = Connection::<u32, u32>::pair()?;
/// let (a, b) = (AsyncConnection::new(a), AsyncConnection::new(b));
/// a.send(1).await?;
/// b.send(b.recv().await? + 1).await?;
/// assert_eq!(a.recv().await?, 2);
/// # Ok(())
/// # }
/// ```
pub struct AsyncConnection<Out, In> {
    io: Io,
    inner: Connection<Out, In>,
}

impl<Out, In> AsyncConnection<Out, In> {
    /// Registers `connection` with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(connection: Connection<Out, In>) -> Self {
        AsyncConnection {
            io: register(connection.as_fd()),
            inner: connection,
        }
    }

    /// The blocking connection back.
    pub fn into_inner(self) -> Connection<Out, In> {
        let AsyncConnection { io, inner } = self;
        drop(io);
        inner
    }

    /// The blocking connection, for what needs no waiting
    /// (`peer_credentials`, `limits`).
    pub fn get_ref(&self) -> &Connection<Out, In> {
        &self.inner
    }

    /// Splits into a sender and a receiver sharing the socket and its
    /// registration, for one task to send while another receives.
    pub fn split(self) -> (AsyncSender<Out>, AsyncReceiver<In>) {
        let AsyncConnection { io, inner } = self;
        let (sender, receiver) = inner.split();
        (
            AsyncSender {
                io: io.clone(),
                inner: sender,
            },
            AsyncReceiver {
                io,
                inner: receiver,
            },
        )
    }
}

impl<Out: IpcMessage, In: IpcMessage> AsyncConnection<Out, In> {
    /// Connects to the [`Listener`] at `addr` and exchanges greetings with
    /// it without blocking the runtime; see [`Connection::connect`].
    ///
    /// # Errors
    ///
    /// As [`Connection::connect`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(addr: impl AsRef<Path>) -> Result<Self> {
        let (socket, types) = connect_socket::<Out, In>(addr.as_ref())?;
        let io = register(socket.as_fd());
        poll_fn(|cx| poll_recv_with(&io, cx, || handshake::expect(&socket, &types, Wait::Never)))
            .await?;
        Ok(AsyncConnection {
            io,
            inner: Connection::from_socket(socket),
        })
    }
}

impl<Out: Serialize, In> AsyncConnection<Out, In> {
    /// Sends a message, waiting while the socket buffer is full.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`]; the message comes back.
    ///
    /// # Cancel safety
    ///
    /// As [`AsyncSender::send`]: whole or not at all.
    pub async fn send(&self, message: Out) -> Result<(), SendError<Out>> {
        send_with(&self.io, message, |m| self.inner.try_send(m)).await
    }
}

impl<Out, In: DeserializeOwned> AsyncConnection<Out, In> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`AsyncReceiver::recv`].
    pub async fn recv(&self) -> Result<In> {
        poll_fn(|cx| poll_recv_with(&self.io, cx, || self.inner.try_recv())).await
    }
}

impl<Out, In> fmt::Debug for AsyncConnection<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The async face of a [`Listener`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::tokio::{AsyncConnection, AsyncListener};
/// use ipc_core::Listener;
///
/// let name = format!("@ipc-core-async-doc-{}", std::process::id());
/// let listener = AsyncListener::new(Listener::<String, u8>::bind(&name)?)?;
/// let client = tokio::spawn(async move {
///     let conn = AsyncConnection::<u8, String>::connect(&name).await?;
///     conn.send(3).await?;
///     conn.recv().await
/// });
/// let conn = listener.accept().await?;
/// let n = conn.recv().await?;
/// conn.send("x".repeat(n as usize)).await?;
/// assert_eq!(client.await.unwrap()?, "xxx");
/// # Ok(())
/// # }
/// ```
pub struct AsyncListener<Out, In> {
    io: Io,
    inner: Listener<Out, In>,
}

impl<Out, In> AsyncListener<Out, In> {
    /// Registers `listener` with the current runtime. The listening socket
    /// is made non-blocking (it is this process's alone);
    /// [`into_inner`](Self::into_inner) makes it blocking again.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket's flags cannot be changed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(listener: Listener<Out, In>) -> Result<Self> {
        set_nonblocking(listener.as_fd(), true)?;
        Ok(AsyncListener {
            io: register(listener.as_fd()),
            inner: listener,
        })
    }

    /// The blocking listener back.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be made blocking again.
    pub fn into_inner(self) -> Result<Listener<Out, In>> {
        let AsyncListener { io, inner } = self;
        drop(io);
        set_nonblocking(inner.as_fd(), false)?;
        Ok(inner)
    }
}

impl<Out: IpcMessage, In: IpcMessage> AsyncListener<Out, In> {
    /// Waits for a process to connect and exchanges greetings with it.
    ///
    /// # Errors
    ///
    /// As [`Listener::accept`]: a peer that does not greet within 10
    /// seconds is [`Error::Timeout`]; the listener stays usable. A peer
    /// that closes before greeting is skipped.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for a connection, nothing is lost. Dropped
    /// while waiting for the peer's greeting, that connection is closed
    /// (the peer sees `Disconnected`).
    pub async fn accept(&self) -> Result<AsyncConnection<Out, In>> {
        loop {
            let socket = poll_fn(|cx| self.poll_accept_socket(cx)).await?;
            match self.greet(socket).await {
                // Gone before it greeted: a probe, not a peer to hand out.
                Err(Error::Disconnected) => continue,
                accepted => return accepted,
            }
        }
    }

    async fn greet(&self, socket: Socket) -> Result<AsyncConnection<Out, In>> {
        handshake::greet(&socket, self.inner.types())?;
        let io = register(socket.as_fd());
        let greeting = poll_fn(|cx| {
            poll_recv_with(&io, cx, || {
                handshake::expect(&socket, self.inner.types(), Wait::Never)
            })
        });
        match ::tokio::time::timeout(GREETING_TIMEOUT, greeting).await {
            Ok(result) => result?,
            Err(_) => return Err(Error::Timeout),
        }
        Ok(AsyncConnection {
            io,
            inner: Connection::from_socket(socket),
        })
    }

    fn poll_accept_socket(&self, cx: &mut Context<'_>) -> Poll<Result<Socket>> {
        loop {
            let mut guard = ready!(self.io.poll_read_ready(cx)).map_err(readiness_error)?;
            match self.inner.accept_socket() {
                Ok(Some(socket)) => return Poll::Ready(Ok(socket)),
                Ok(None) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<Out, In> fmt::Debug for AsyncListener<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncListener")
            .field("inner", &self.inner)
            .finish()
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::io("fcntl(F_GETFL)", e))?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(|e| Error::io("fcntl(F_SETFL)", e))
}
