//! Large bodies decoded off the runtime's threads.
//!
//! A body over 1 MiB can take long to decode (a few GiB of numbers that
//! serde reads one by one take seconds), and an async receive must not hold
//! a runtime thread that long: it hands the body to tokio's blocking pool
//! and waits for the message. The decodes wait in a queue the receiver
//! keeps, so a receive cancelled while it waits loses nothing: the next
//! receive, of whichever task, takes that message first. Messages come out
//! in the order their bodies arrived.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::wakers::WakerSet;
use crate::error::{Error, Result};
use crate::transport::LargeBody;

/// The decodes a receiver has under way.
#[derive(Debug)]
pub(crate) struct Decoding<T> {
    queue: Mutex<VecDeque<JoinHandle<Result<T>>>>,
    /// Every task waiting for the oldest decode.
    waiting: Arc<WakerSet>,
}

impl<T> Default for Decoding<T> {
    fn default() -> Self {
        Decoding {
            queue: Mutex::new(VecDeque::new()),
            waiting: Arc::default(),
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> Decoding<T> {
    /// Starts decoding `body` on the blocking pool.
    pub(crate) fn start(&self, body: LargeBody) {
        let handle = tokio::task::spawn_blocking(move || body.decode::<T>());
        self.lock().push_back(handle);
    }

    /// The message of the oldest decode once it is done; `Ready(None)`
    /// when no decode is under way.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let mut queue = self.lock();
        let Some(oldest) = queue.front_mut() else {
            return Poll::Ready(None);
        };
        let waker = self.waiting.register(cx);
        let joined = match Pin::new(oldest).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(joined) => joined,
            Poll::Pending => return Poll::Pending,
        };
        queue.pop_front();
        drop(queue);
        Poll::Ready(Some(match joined {
            Ok(decoded) => decoded,
            // A Deserialize impl that panicked panics in the receiver, as
            // it would in a blocking receive.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Decode(
                "the runtime shut down while the message was decoded".into(),
            )),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<JoinHandle<Result<T>>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
