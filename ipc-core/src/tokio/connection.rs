//! `AsyncConnection`.

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::decoding::Decoding;
use super::{
    readiness_error, recv_with, register, send_with, try_recv_with, AsyncReceiver, AsyncSender, Io,
};
use crate::connection::Connection;
use crate::error::{Error, Result, SendError};
use crate::handshake::{self, GREETING_TIMEOUT};
use crate::listener::connect_socket;
use crate::message::IpcMessage;
use crate::transport::{Socket, Wait};

/// The async face of a [`Connection`]: sends `Out`, receives `In`. Any
/// number of tasks may send and receive on one at once.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::{tokio::AsyncConnection, Connection};
///
/// let (a, b) = Connection::<u32, u32>::pair()?;
/// let (a, b) = (AsyncConnection::new(a)?, AsyncConnection::new(b)?);
/// a.send(1).await?;
/// b.send(b.recv().await? + 1).await?;
/// assert_eq!(a.recv().await?, 2);
/// # Ok(())
/// # }
/// ```
pub struct AsyncConnection<Out, In> {
    io: Io,
    inner: Connection<Out, In>,
    decoding: Decoding<In>,
}

impl<Out, In> AsyncConnection<Out, In> {
    /// Registers `connection` with the current runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the reactor refuses the socket.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?;
    /// b.send(6)?;
    /// assert_eq!(a.recv().await?, 6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(connection: Connection<Out, In>) -> Result<Self> {
        Ok(AsyncConnection {
            io: register(connection.as_fd())?,
            inner: connection,
            decoding: Decoding::default(),
        })
    }

    pub(crate) fn from_parts(io: Io, inner: Connection<Out, In>) -> Self {
        AsyncConnection {
            io,
            inner,
            decoding: Decoding::default(),
        }
    }

    /// The blocking connection back. A message whose large body was still
    /// being decoded (by a receive that was cancelled) is dropped with its
    /// descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?.into_inner();
    /// a.send(1)?;
    /// assert_eq!(b.recv()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> Connection<Out, In> {
        let AsyncConnection { io, inner, .. } = self;
        drop(io);
        inner
    }

    /// The blocking connection, for what needs no waiting
    /// (`peer_credentials`, `limits`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, _b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?;
    /// assert_eq!(a.get_ref().limits().max_descriptors(), 253);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_ref(&self) -> &Connection<Out, In> {
        &self.inner
    }

    /// Splits into a sender and a receiver sharing the socket and its
    /// registration, for one task to send while another receives.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<u8, u8>::pair()?;
    /// let (tx, rx) = ipc_core::tokio::AsyncConnection::new(a)?.split();
    /// b.send(2)?;
    /// tx.send(rx.recv().await? * 2).await?;
    /// assert_eq!(b.recv()?, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(self) -> (AsyncSender<Out>, AsyncReceiver<In>) {
        let AsyncConnection {
            io,
            inner,
            decoding,
        } = self;
        let (sender, receiver) = inner.split();
        (
            AsyncSender::from_parts(io.clone(), sender),
            AsyncReceiver::from_parts(io, receiver, decoding),
        )
    }
}

impl<Out: IpcMessage, In: IpcMessage> AsyncConnection<Out, In> {
    /// Connects to the [`Listener`](crate::Listener) at `addr` and exchanges
    /// greetings with it without blocking the runtime, waiting up to 10
    /// seconds; see [`connect_timeout`](Self::connect_timeout).
    ///
    /// # Errors
    ///
    /// As [`Connection::connect`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use ipc_core::tokio::AsyncConnection;
    ///
    /// let got = AsyncConnection::<(), ()>::connect("@nobody-listens-here-async").await;
    /// assert!(matches!(got, Err(ipc_core::Error::Io { op: "connect", .. })));
    /// # }
    /// ```
    pub async fn connect(addr: impl AsRef<Path>) -> Result<Self> {
        Self::connect_timeout(addr, GREETING_TIMEOUT).await
    }

    /// Connects to the [`Listener`](crate::Listener) at `addr` and exchanges
    /// greetings with it, waiting at most `timeout` in all: for room in a
    /// listener's full backlog, then for it to accept and greet.
    ///
    /// # Errors
    ///
    /// As [`Connection::connect_timeout`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without timers.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// use ipc_core::{tokio::AsyncConnection, Error, Listener};
    /// use std::time::Duration;
    ///
    /// let name = format!("@ipc-core-async-connect-timeout-{}", std::process::id());
    /// // A listener that never accepts.
    /// let _listener = Listener::<(), ()>::bind(&name)?;
    /// let got = AsyncConnection::<(), ()>::connect_timeout(&name, Duration::from_millis(50)).await;
    /// assert!(matches!(got, Err(Error::GreetingTimeout { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_timeout(addr: impl AsRef<Path>, timeout: Duration) -> Result<Self> {
        let connected = ::tokio::time::timeout(timeout, connect(addr.as_ref())).await;
        match connected {
            Ok(result) => result,
            Err(_) => Err(Error::GreetingTimeout { waited: timeout }),
        }
    }
}

/// Connects without blocking the runtime: a listener whose backlog is full
/// is tried again, a little later each time, until the caller gives up.
async fn connect<Out: IpcMessage, In: IpcMessage>(addr: &Path) -> Result<AsyncConnection<Out, In>> {
    let mut pause = Duration::from_millis(1);
    let (socket, types) = loop {
        match connect_socket::<Out, In>(addr, None) {
            Err(Error::Full) => {
                ::tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => break result?,
        }
    };
    let io = register(socket.as_fd())?;
    greeting(&io, &socket, &types).await?;
    Ok(AsyncConnection::from_parts(
        io,
        Connection::from_socket(socket),
    ))
}

/// Waits for the peer's greeting on `socket` and checks it.
pub(crate) async fn greeting(io: &Io, socket: &Socket, types: &handshake::Types) -> Result<()> {
    let mut seen = None;
    loop {
        match handshake::expect(socket, types, Wait::Never) {
            Err(Error::Empty) => {
                if let Some(mut guard) = seen.take() {
                    tokio::io::unix::AsyncFdReadyGuard::clear_ready(&mut guard);
                }
                seen = Some(io.readable().await.map_err(readiness_error)?);
            }
            result => return result,
        }
    }
}

impl<Out: Serialize + 'static, In> AsyncConnection<Out, In> {
    /// Sends a message, waiting while the socket buffer is full.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`]; the message comes back.
    ///
    /// # Cancel safety
    ///
    /// As [`AsyncSender::send`]: whole or not at all.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<String, ()>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?;
    /// a.send("ping".into()).await?;
    /// assert_eq!(b.recv()?, "ping");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(&self, message: Out) -> Result<(), SendError<Out>> {
        send_with(&self.io, message, |m| self.inner.try_send(m)).await
    }
}

impl<Out, In: DeserializeOwned + Send + 'static> AsyncConnection<Out, In> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`AsyncReceiver::recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<(), String>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?;
    /// b.send("pong".into())?;
    /// assert_eq!(a.recv().await?, "pong");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recv(&self) -> Result<In> {
        recv_with(
            &self.io,
            &self.decoding,
            |woken| self.inner.receiver().try_recv_deferring(woken),
            || self.inner.receiver().arm(),
            || self.inner.receiver().sleeping(),
        )
        .await
    }

    /// Takes the next message if one is queued, never waiting for one; see
    /// [`AsyncReceiver::try_recv`].
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when none is queued, and what
    /// [`recv`](Self::recv) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (a, b) = ipc_core::Connection::<(), u8>::pair()?;
    /// let a = ipc_core::tokio::AsyncConnection::new(a)?;
    /// assert!(matches!(a.try_recv().await, Err(ipc_core::Error::Empty)));
    /// b.send(1)?;
    /// assert_eq!(a.try_recv().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_recv(&self) -> Result<In> {
        try_recv_with(&self.decoding, || {
            self.inner.receiver().try_recv_deferring(false)
        })
        .await
    }
}

impl<Out, In> fmt::Debug for AsyncConnection<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("inner", &self.inner)
            .finish()
    }
}
