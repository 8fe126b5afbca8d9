//! The async face, on tokio (cargo feature `tokio`).
//!
//! Each async type wraps its blocking counterpart and registers the same
//! socket with tokio's reactor through `AsyncFd`. An operation waits for
//! readiness, then makes the blocking type's non-blocking call (`try_recv`,
//! `try_send`: `MSG_DONTWAIT`, so the descriptor's own flags, shared with
//! every process that holds it, are never touched). One datagram per
//! operation, the same wire, no thread per channel and no busy loop.
//! `into_inner` gives the blocking type back.
//!
//! Any number of tasks may share one async value (behind an `Arc`, say):
//! each waits its turn, every message goes to exactly one of them, and none
//! is left waiting while a message it could take is queued. A body over
//! 1 MiB is decoded on tokio's blocking pool, so that no message, however
//! large, holds a runtime thread while it is decoded.
//!
//! The receivers are [`Stream`](futures_core::Stream)s; the combinators
//! (`next`, `map`, ...) are those of `StreamExt`, from `futures-util` or
//! `tokio-stream`, whichever the program uses.
//!
//! Creating an async type registers its socket with the current runtime.
//! The registration borrows the descriptor that the wrapped blocking type
//! owns; the blocking type is dropped, or handed back, only after the
//! registration is gone.
//!
//! # Panics
//!
//! The constructors (`new`) panic outside a tokio runtime, as tokio's own
//! `from_std` constructors do. Receiving a body over 1 MiB, and accepting,
//! need tokio's blocking pool and timers: a runtime built with
//! `enable_time` (or `enable_all`).

mod channel;
mod connection;
mod decoding;
mod listener;
mod wakers;

pub use channel::{AsyncReceiver, AsyncSender};
pub use connection::AsyncConnection;
pub use listener::AsyncListener;

use std::future::poll_fn;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, SendError};
use crate::sys::reactor::Registration;
use crate::transport::{Arrival, Sleeping};
use decoding::Decoding;

/// A socket's registration with the reactor, shared by the halves of a
/// split connection.
type Io = Arc<AsyncFd<Registration>>;

fn register(fd: BorrowedFd<'_>) -> Result<Io> {
    crate::sys::reactor::register(fd)
        .map(Arc::new)
        .map_err(|source| Error::Io {
            op: "register with the tokio reactor",
            source,
        })
}

fn readiness_error(source: std::io::Error) -> Error {
    Error::Io {
        op: "tokio readiness",
        source,
    }
}

/// Receives with `attempt` (a non-blocking receive), waiting for
/// readiness when nothing is queued; large bodies are decoded on the
/// blocking pool. Any number of tasks may wait at once: tokio's `readable`
/// wakes them all, and the decodes are in a queue every waiting task
/// watches.
///
/// It tries before it waits: a socket's readiness can be cleared while a
/// datagram is still queued (a listener reads a peer's greeting on
/// readiness, and a first message may have come behind it), and readiness
/// says only that something came since it was last cleared.
async fn recv_with<'a, T: DeserializeOwned + Send + 'static>(
    io: &Io,
    decoding: &Decoding<T>,
    attempt: impl Fn(bool) -> Result<Arrival<T>>,
    arm: impl Fn() -> bool,
    sleeping: impl Fn() -> Sleeping<'a>,
) -> Result<T> {
    let mut seen = None;
    loop {
        if let Some(message) = poll_fn(|cx| decoding.poll_next(cx)).await {
            return message;
        }
        // Woken by readiness, the socket is read whatever another
        // task's poll found there a moment ago.
        match attempt(seen.is_some()) {
            Err(Error::Empty) => {
                // Counted asleep (with another receiver asleep too, every
                // record rings) and the rings armed, so that their next
                // record rings the socket; a record that came meanwhile is
                // taken first.
                let asleep = sleeping();
                if arm() {
                    continue;
                }
                // Nothing since the readiness seen last: wait for more.
                if let Some(mut guard) = seen.take() {
                    AsyncFdReadyGuard::clear_ready(&mut guard);
                }
                seen = Some(io.readable().await.map_err(readiness_error)?);
                drop(asleep);
            }
            Ok(Arrival::Message(message)) => return Ok(message),
            Ok(Arrival::Large(body)) => decoding.start(body),
            // Dealt with by the connection; never handed out.
            Ok(Arrival::Offer { .. } | Arrival::Wake) => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`recv_with`] as a poll, for the one task that owns the receiver.
fn poll_recv_with<T: DeserializeOwned + Send + 'static>(
    io: &Io,
    decoding: &Decoding<T>,
    cx: &mut Context<'_>,
    attempt: impl Fn(bool) -> Result<Arrival<T>>,
    arm: impl Fn() -> bool,
) -> Poll<Result<T>> {
    loop {
        if let Some(message) = ready!(decoding.poll_next(cx)) {
            return Poll::Ready(message);
        }
        let mut seen = None;
        if let Poll::Ready(ready) = io.poll_read_ready(cx) {
            seen = Some(ready.map_err(readiness_error)?);
        }
        match attempt(seen.is_some()) {
            Err(Error::Empty) => {
                if arm() {
                    continue;
                }
                match seen {
                    // Nothing since that readiness: cleared, and polled
                    // again to wait for more.
                    Some(mut guard) => guard.clear_ready(),
                    None => return Poll::Pending,
                }
            }
            Ok(Arrival::Message(message)) => return Poll::Ready(Ok(message)),
            Ok(Arrival::Large(body)) => decoding.start(body),
            Ok(Arrival::Offer { .. } | Arrival::Wake) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Takes a message if one is queued, without waiting for one; a large body
/// is decoded on the blocking pool, which this awaits.
async fn try_recv_with<T: DeserializeOwned + Send + 'static>(
    decoding: &Decoding<T>,
    attempt: impl Fn() -> Result<Arrival<T>>,
) -> Result<T> {
    if let Some(message) = poll_fn(|cx| decoding.poll_next(cx)).await {
        return message;
    }
    match attempt()? {
        Arrival::Message(message) => Ok(message),
        Arrival::Offer { .. } | Arrival::Wake => Err(Error::Empty),
        Arrival::Large(body) => {
            decoding.start(body);
            // Another task waiting in `recv` may take it first.
            poll_fn(|cx| decoding.poll_next(cx))
                .await
                .unwrap_or(Err(Error::Empty))
        }
    }
}

/// Waits for writability and runs `attempt` until it is not `Full`. Any
/// number of tasks may wait at once.
///
/// A send refused as full while the socket has room met a full ring (the
/// ring lane of this process), which no readiness reports: the task lets
/// the runtime run, then naps until the receiving side has read some.
async fn send_with<T>(
    io: &Io,
    mut message: T,
    attempt: impl Fn(T) -> Result<(), SendError<T>>,
) -> Result<(), SendError<T>> {
    let mut seen = None;
    let mut naps = 0;
    loop {
        match attempt(message) {
            Err(e) if matches!(e.error(), Error::Full) => {
                message = e.into_inner();
                if crate::sys::reactor::writable_now(io.get_ref()) {
                    wait_for_ring(&mut naps).await;
                    continue;
                }
                if let Some(mut guard) = seen.take() {
                    AsyncFdReadyGuard::clear_ready(&mut guard);
                }
                seen = match io.writable().await {
                    Ok(guard) => Some(guard),
                    Err(source) => return Err(SendError::new(message, readiness_error(source))),
                };
            }
            result => return result,
        }
    }
}

/// Waits a moment for room in the ring this process writes: a few turns of
/// the runtime, then naps on the blocking pool (no timer needed), each
/// longer up to about 2 ms, so that a stalled receiver costs a waiting
/// sender no CPU.
async fn wait_for_ring(naps: &mut u32) {
    *naps += 1;
    if *naps <= 16 {
        ::tokio::task::yield_now().await;
        return;
    }
    let nap = std::time::Duration::from_micros(50 << (*naps - 16).min(5));
    let _ = ::tokio::task::spawn_blocking(move || std::thread::sleep(nap)).await;
}
