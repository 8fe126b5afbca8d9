//! `AsyncSender` and `AsyncReceiver`.

use std::fmt;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::decoding::Decoding;
use super::{poll_recv_with, readiness_error, recv_with, register, send_with, try_recv_with, Io};
use crate::channel::{Receiver, Sender};
use crate::error::{Error, Result, SendError};

/// The async sending end of a channel; see [`Sender`].
///
/// Clone it, not the `Sender` inside: a socket is registered with the
/// reactor once, and the clones share the registration. Any number of
/// tasks may send on one at once.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_core::tokio::{AsyncReceiver, AsyncSender};
///
/// let (tx, rx) = ipc_core::channel::<String>()?;
/// let (tx, rx) = (AsyncSender::new(tx)?, AsyncReceiver::new(rx)?);
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
    /// The message the `Sink` impl has taken and not sent yet.
    pending: Mutex<Option<T>>,
}

impl<T> AsyncSender<T> {
    /// Registers `sender` with the current runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the reactor refuses the socket (out of memory,
    /// or of epoll watches).
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
    /// let (tx, _rx) = ipc_core::channel::<u8>()?;
    /// let tx = ipc_core::tokio::AsyncSender::new(tx)?;
    /// tx.send(1).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(sender: Sender<T>) -> Result<Self> {
        Ok(AsyncSender::from_parts(register(sender.as_fd())?, sender))
    }

    pub(crate) fn from_parts(io: Io, inner: Sender<T>) -> Self {
        AsyncSender {
            io,
            inner,
            pending: Mutex::new(None),
        }
    }

    /// The blocking sender back.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let tx = ipc_core::tokio::AsyncSender::new(tx)?.into_inner();
    /// tx.send(2)?;
    /// assert_eq!(rx.recv()?, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> Sender<T> {
        let AsyncSender { io, inner, .. } = self;
        drop(io);
        inner
    }

    /// Waits until the receiving end is gone (every process that held it
    /// has closed it); from then on every send is
    /// [`Error::Disconnected`]. Useful to stop producing for a consumer
    /// that left.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it takes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let tx = ipc_core::tokio::AsyncSender::new(tx)?;
    /// let closed = tokio::spawn(async move { tx.closed().await });
    /// drop(rx);
    /// closed.await.unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn closed(&self) {
        // Watched through a registration of its own, of a duplicate of the
        // socket: readiness cleared here must not be the receives' or
        // sends' readiness. The kernel reports the peer's close to every
        // watcher (EPOLLHUP), whatever it asked for.
        let watch = self
            .inner
            .as_fd()
            .try_clone_to_owned()
            .and_then(crate::sys::reactor::register_owned_writable);
        let Ok(watch) = watch else {
            // No descriptor or no room in the reactor: look now and then.
            while !crate::sys::socket::hung_up(self.inner.as_fd()) {
                ::tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return;
        };
        loop {
            let Ok(mut guard) = watch.writable().await else {
                return;
            };
            if guard.ready().is_write_closed() {
                return;
            }
            guard.clear_ready();
        }
    }
}

impl<T: Serialize + 'static> AsyncSender<T> {
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
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<Vec<u8>>()?;
    /// let tx = ipc_core::tokio::AsyncSender::new(tx)?;
    /// tx.send(vec![7; 3]).await?;
    /// assert_eq!(rx.recv()?, [7; 3]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        send_with(&self.io, message, |m| self.inner.try_send(m)).await
    }

    /// Sends a message the caller keeps, as [`Sender::send_ref`]: to fan
    /// one message out to several receivers without a clone of it.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); the message was never given up.
    ///
    /// # Cancel safety
    ///
    /// Sent whole or not at all.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<Vec<u8>>()?;
    /// let tx = ipc_core::tokio::AsyncSender::new(tx)?;
    /// let block = vec![9; 1000];
    /// tx.send_ref(&block).await?;
    /// assert_eq!(rx.recv()?, block);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_ref(&self, message: &T) -> Result<()> {
        send_with(&self.io, (), |()| {
            self.inner
                .try_send_ref(message)
                .map_err(|e| SendError::new((), e))
        })
        .await
        .map_err(Error::from)
    }
}

/// A `Sink` of messages: `send_all` a stream into a channel, say. An item
/// is taken by `start_send` and sent by the next `poll_ready`,
/// `poll_flush` or `poll_close`, waiting while the socket buffer is full.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use futures_sink::Sink;
/// use std::future::poll_fn;
/// use std::pin::Pin;
///
/// let (tx, rx) = ipc_core::channel::<u32>()?;
/// let mut tx = ipc_core::tokio::AsyncSender::new(tx)?;
/// for n in 0..3 {
///     poll_fn(|cx| Pin::new(&mut tx).poll_ready(cx)).await?;
///     Pin::new(&mut tx).start_send(n)?;
/// }
/// poll_fn(|cx| Pin::new(&mut tx).poll_flush(cx)).await?;
/// assert_eq!((rx.recv()?, rx.recv()?, rx.recv()?), (0, 1, 2));
/// # Ok(())
/// # }
/// ```
impl<T: Serialize + Unpin + 'static> futures_sink::Sink<T> for AsyncSender<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let pending = self
            .get_mut()
            .pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        match pending {
            Some(_) => Err(Error::Full),
            None => {
                *pending = Some(item);
                Ok(())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let pending = this
            .pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(mut item) = pending.take() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match this.inner.try_send(item) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if matches!(e.error(), Error::Full) => {
                    item = e.into_inner();
                    match this.io.poll_write_ready(cx) {
                        // Room was seen before this attempt: cleared, and
                        // tried again (polled again, the waker is kept).
                        Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                        Poll::Ready(Err(source)) => {
                            return Poll::Ready(Err(readiness_error(source)))
                        }
                        Poll::Pending => {
                            *pending = Some(item);
                            return Poll::Pending;
                        }
                    }
                }
                Err(e) => return Poll::Ready(Err(e.into_parts().1)),
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}

impl<T> Clone for AsyncSender<T> {
    /// Another sender on the same socket and registration; a message the
    /// `Sink` impl holds stays with this one.
    fn clone(&self) -> Self {
        AsyncSender::from_parts(self.io.clone(), self.inner.clone())
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
/// Any number of tasks may await [`recv`](AsyncReceiver::recv) on one
/// receiver at once (share it in an `Arc`): each message goes to exactly
/// one of them.
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
/// let rx = AsyncReceiver::new(rx)?;
/// tx.send(5)?;
/// let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
/// assert_eq!(got.unwrap()?, 5);
/// # Ok(())
/// # }
/// ```
pub struct AsyncReceiver<T> {
    io: Io,
    inner: Receiver<T>,
    decoding: Decoding<T>,
}

impl<T> AsyncReceiver<T> {
    /// Registers `receiver` with the current runtime.
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
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let rx = ipc_core::tokio::AsyncReceiver::new(rx)?;
    /// tx.send(3)?;
    /// assert_eq!(rx.recv().await?, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(receiver: Receiver<T>) -> Result<Self> {
        Ok(AsyncReceiver {
            io: register(receiver.as_fd())?,
            inner: receiver,
            decoding: Decoding::default(),
        })
    }

    pub(crate) fn from_parts(io: Io, inner: Receiver<T>, decoding: Decoding<T>) -> Self {
        AsyncReceiver {
            io,
            inner,
            decoding,
        }
    }

    /// The blocking receiver back. A message whose large body was still
    /// being decoded (by a receive that was cancelled) is dropped with its
    /// descriptors.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let rx = ipc_core::tokio::AsyncReceiver::new(rx)?.into_inner();
    /// tx.send(4)?;
    /// assert_eq!(rx.recv()?, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> Receiver<T> {
        let AsyncReceiver { io, inner, .. } = self;
        drop(io);
        inner
    }
}

impl<T: DeserializeOwned + Send + 'static> AsyncReceiver<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`]: [`Error::Disconnected`] once every sender is
    /// gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped in a `select!` or a timeout, it has taken no
    /// message that it does not hand to the next `recv`, so no message or
    /// descriptor is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<String>()?;
    /// let rx = ipc_core::tokio::AsyncReceiver::new(rx)?;
    /// tx.send("hi".into())?;
    /// drop(tx);
    /// assert_eq!(rx.recv().await?, "hi");
    /// assert!(matches!(rx.recv().await, Err(ipc_core::Error::Disconnected)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recv(&self) -> Result<T> {
        recv_with(
            &self.io,
            &self.decoding,
            |woken| self.inner.try_recv_deferring(woken),
            || self.inner.arm(),
            || self.inner.sleeping(),
        )
        .await
    }

    /// Takes the next message if one is queued, never waiting for one. A
    /// body over 1 MiB is decoded on tokio's blocking pool, which this
    /// awaits.
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
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let rx = ipc_core::tokio::AsyncReceiver::new(rx)?;
    /// assert!(matches!(rx.try_recv().await, Err(ipc_core::Error::Empty)));
    /// tx.send(5)?;
    /// assert_eq!(rx.try_recv().await?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_recv(&self) -> Result<T> {
        try_recv_with(&self.decoding, || self.inner.try_recv_deferring(false)).await
    }

    /// Polls for the next message, for a hand-written future or stream that
    /// owns the receiver; the building block of the `Stream` impl. It takes
    /// `&mut self`: the reactor keeps one waker per poller, so tasks that
    /// share a receiver use [`recv`](Self::recv) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// let mut rx = ipc_core::tokio::AsyncReceiver::new(rx)?;
    /// tx.send(8)?;
    /// let got = std::future::poll_fn(|cx| rx.poll_recv(cx)).await?;
    /// assert_eq!(got, 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        poll_recv_with(
            &self.io,
            &self.decoding,
            cx,
            |woken| self.inner.try_recv_deferring(woken),
            || self.inner.arm(),
        )
    }
}

impl<T: DeserializeOwned + Send + 'static> futures_core::Stream for AsyncReceiver<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        match ready!(self.get_mut().poll_recv(cx)) {
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
