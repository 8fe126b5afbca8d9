//! `AsyncListener`: the listener's greetings, waited for on the reactor.

use std::fmt;
use std::future::{poll_fn, Future};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::Sleep;

use super::wakers::WakerSet;
use super::{readiness_error, register, AsyncConnection, Io};
use crate::connection::Connection;
use crate::error::Result;
use crate::greetings::{self, Greetings};
use crate::listener::Listener;
use crate::message::IpcMessage;

/// The async face of a [`Listener`].
///
/// Greetings proceed together, as with [`Listener::accept`]: no silent or
/// slow peer holds up another. Any number of tasks may call
/// [`accept`](AsyncListener::accept) on one listener at once (share it in
/// an `Arc`); each connection goes to one of them.
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
    state: Mutex<State>,
    /// Every task in `accept`: the listener's readiness, the waiting peers'
    /// and the timer each keep one waker, this set's.
    waiting: Arc<WakerSet>,
}

/// Peers accepted and greeted that have yet to greet back, each with its
/// socket's registration, and a timer for the nearest deadline.
struct State {
    greetings: Greetings<Io>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<Out, In> AsyncListener<Out, In> {
    /// Registers `listener` with the current runtime, with the peers it
    /// has accepted and still waits on.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the reactor refuses the socket.
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
    /// let name = format!("@ipc-core-async-new-{}", std::process::id());
    /// let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// let listener = ipc_core::tokio::AsyncListener::new(listener)?;
    /// # drop(listener);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(mut listener: Listener<Out, In>) -> Result<Self> {
        let io = register(listener.as_fd())?;
        // Peers a sync accept left waiting: registered too, or dropped.
        let greetings = listener
            .take_greetings()
            .map(|socket, ()| register(socket.as_fd()).ok());
        Ok(AsyncListener {
            io,
            inner: listener,
            state: Mutex::new(State {
                greetings,
                timer: None,
            }),
            waiting: Arc::default(),
        })
    }

    /// The blocking listener back, with the peers still to greet.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// let name = format!("@ipc-core-async-into-inner-{}", std::process::id());
    /// let listener = ipc_core::Listener::<(), ()>::bind(&name)?;
    /// let listener = ipc_core::tokio::AsyncListener::new(listener)?.into_inner();
    /// # drop(listener);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> Listener<Out, In> {
        let AsyncListener {
            io,
            mut inner,
            state,
            ..
        } = self;
        drop(io);
        let state = state.into_inner().unwrap_or_else(PoisonError::into_inner);
        inner.put_greetings(state.greetings.map(|_, io| {
            drop(io);
            Some(())
        }));
        inner
    }
}

impl<Out: IpcMessage, In: IpcMessage> AsyncListener<Out, In> {
    /// Waits for a process to connect and greet, serving every waiting
    /// peer's greeting at once; see [`Listener::accept`].
    ///
    /// # Errors
    ///
    /// As [`Listener::accept`]: each error names one peer, which is
    /// dropped, and the listener stays usable.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped while it waits, it has taken no connection;
    /// peers it accepted meanwhile wait on in the listener for the next
    /// `accept`.
    ///
    /// # Panics
    ///
    /// In a runtime without timers.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// use ipc_core::tokio::{AsyncConnection, AsyncListener};
    ///
    /// let name = format!("@ipc-core-async-accept-{}", std::process::id());
    /// let listener = AsyncListener::new(ipc_core::Listener::<u8, u8>::bind(&name)?)?;
    /// let client = tokio::spawn(async move { AsyncConnection::<u8, u8>::connect(&name).await });
    /// let conn = listener.accept().await?;
    /// conn.send(1).await?;
    /// assert_eq!(client.await.unwrap()?.recv().await?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn accept(&self) -> Result<AsyncConnection<Out, In>> {
        let (socket, io) = poll_fn(|cx| self.poll_accept(cx)).await?;
        Ok(AsyncConnection::from_parts(
            io,
            Connection::from_socket(socket),
        ))
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<(crate::transport::Socket, Io)>> {
        let waker = self.waiting.register(cx);
        let mut cx = Context::from_waker(&waker);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { greetings, timer } = &mut *state;
        let types = self.inner.types();
        loop {
            // Peers the kernel has queued, each greeted and tried at once.
            if let Poll::Ready(ready) = self.io.poll_read_ready(&mut cx) {
                let mut guard = ready.map_err(readiness_error)?;
                match self.inner.accept_socket()? {
                    Some(socket) => {
                        let Ok(io) = register(socket.as_fd()) else {
                            // The reactor is out of room: this peer goes.
                            continue;
                        };
                        if let Some(outcome) = greetings.admit(socket, io, types) {
                            return Poll::Ready(greetings::into_result(outcome));
                        }
                    }
                    None => guard.clear_ready(),
                }
                continue;
            }
            // Peers whose sockets became readable: their greetings.
            let mut any = false;
            for waiting in greetings.waiting_mut() {
                if let Poll::Ready(ready) = waiting.extra.poll_read_ready(&mut cx) {
                    // Cleared before the greeting is read: what comes after
                    // the read makes the socket ready again.
                    ready.map_err(readiness_error)?.clear_ready();
                    waiting.ready = true;
                    any = true;
                }
            }
            // Every peer marked ready is tried, those of an earlier pass
            // included: their readiness is cleared already.
            if let Some(outcome) = greetings.advance(types) {
                return Poll::Ready(greetings::into_result(outcome));
            }
            if any {
                // Polled again, to wait for what comes next.
                continue;
            }
            let now = Instant::now();
            if let Some(outcome) = greetings.expire(now) {
                return Poll::Ready(greetings::into_result(outcome));
            }
            // Wake up for the nearest deadline.
            let Some(deadline) = greetings.next_deadline() else {
                *timer = None;
                return Poll::Pending;
            };
            let timer =
                timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            if timer.as_mut().poll(&mut cx).is_pending() {
                return Poll::Pending;
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
