//! The greetings a listener waits for: connections it has accepted and
//! greeted, whose peers have yet to greet back, each with its own deadline.
//!
//! `accept` serves them together, so no peer can hold up another: a peer
//! that connects and stays silent, or answers slowly, costs a descriptor
//! and a place in this set until its deadline, nothing else. An honest
//! peer greets as soon as it is connected, before it is accepted, so its
//! greeting is usually there when it is admitted and it is served at once.
//! The set is bounded: past [`Greetings::max`] waiting peers, the one
//! whose deadline is nearest is dropped to make room.
//!
//! The sync and async listeners drive the same set, each with its own way
//! of waiting (one `poll` over every socket, or the reactor); `E` is what
//! each keeps beside a waiting socket (the async face: its registration).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::handshake::{self, Types};
use crate::transport::{Socket, Wait};

/// A peer greeted, waiting for its greeting.
#[derive(Debug)]
pub(crate) struct Waiting<E> {
    pub socket: Socket,
    pub deadline: Instant,
    /// The waiter says its socket is readable: its greeting may be there.
    pub ready: bool,
    pub extra: E,
}

/// What became of a waiting peer.
#[derive(Debug)]
pub(crate) enum Outcome<E> {
    /// It greeted with the right types: a connection to hand out.
    Greeted(Box<Socket>, E),
    /// It greeted with other types, or broke the protocol, or its deadline
    /// passed: an error to report. It is dropped.
    Refused(Error),
}

/// The set of waiting peers.
#[derive(Debug)]
pub(crate) struct Greetings<E> {
    waiting: Vec<Waiting<E>>,
    /// How long a peer has to greet.
    pub timeout: Duration,
    /// How many peers may wait at once.
    pub max: usize,
}

impl<E> Greetings<E> {
    pub(crate) fn new(timeout: Duration, max: usize) -> Self {
        Greetings {
            waiting: Vec::new(),
            timeout,
            max,
        }
    }

    /// Greets a socket just accepted and reads its greeting if it is there
    /// already; otherwise it waits in the set. `None` when it waits, or
    /// left before it greeted (a probe, a health check: no error).
    pub(crate) fn admit(&mut self, socket: Socket, extra: E, types: &Types) -> Option<Outcome<E>> {
        if handshake::greet_now(&socket, types).is_err() {
            // Gone already, or its buffer is full of something: not a peer
            // worth waiting for.
            return None;
        }
        match handshake::expect(&socket, types, Wait::Never) {
            Ok(()) => return Some(Outcome::Greeted(Box::new(socket), extra)),
            Err(Error::Empty) => {}
            Err(e) => return refused(e),
        }
        if self.waiting.len() >= self.max.max(1) {
            // Full: the peer nearest its deadline makes room.
            if let Some(oldest) = (0..self.waiting.len()).min_by_key(|&i| self.waiting[i].deadline)
            {
                self.waiting.swap_remove(oldest);
            }
        }
        self.waiting.push(Waiting {
            socket,
            deadline: Instant::now() + self.timeout,
            ready: false,
            extra,
        });
        None
    }

    /// Reads the greeting of each waiting peer whose socket was said to be
    /// readable, until one has an outcome.
    pub(crate) fn advance(&mut self, types: &Types) -> Option<Outcome<E>> {
        let mut i = 0;
        while i < self.waiting.len() {
            if !std::mem::take(&mut self.waiting[i].ready) {
                i += 1;
                continue;
            }
            match handshake::expect(&self.waiting[i].socket, types, Wait::Never) {
                Err(Error::Empty) => i += 1,
                Ok(()) => {
                    let Waiting { socket, extra, .. } = self.waiting.swap_remove(i);
                    return Some(Outcome::Greeted(Box::new(socket), extra));
                }
                Err(e) => {
                    self.waiting.swap_remove(i);
                    if let Some(outcome) = refused(e) {
                        return Some(outcome);
                    }
                }
            }
        }
        None
    }

    /// Drops one peer whose deadline has passed, if any, and says so.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Outcome<E>> {
        let late = self.waiting.iter().position(|w| w.deadline <= now)?;
        self.waiting.swap_remove(late);
        Some(Outcome::Refused(Error::GreetingTimeout {
            waited: self.timeout,
        }))
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.deadline).min()
    }

    /// The same set with what each waiting peer keeps changed by `change`
    /// (a peer it gives nothing for is dropped): how waiting peers move
    /// between the sync and async faces of a listener.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn map<F>(self, mut change: impl FnMut(&Socket, E) -> Option<F>) -> Greetings<F> {
        Greetings {
            waiting: self
                .waiting
                .into_iter()
                .filter_map(|w| {
                    let extra = change(&w.socket, w.extra)?;
                    Some(Waiting {
                        socket: w.socket,
                        deadline: w.deadline,
                        ready: true,
                        extra,
                    })
                })
                .collect(),
            timeout: self.timeout,
            max: self.max,
        }
    }

    /// The waiting peers, for a waiter to watch their sockets and mark
    /// those that are readable.
    pub(crate) fn waiting_mut(&mut self) -> &mut [Waiting<E>] {
        &mut self.waiting
    }
}

/// The outcome of a greeting that failed: a peer that left before it
/// greeted is no error, it is just gone.
fn refused<E>(error: Error) -> Option<Outcome<E>> {
    match error {
        Error::Disconnected => None,
        e => Some(Outcome::Refused(e)),
    }
}

/// Unwraps an outcome for `accept`.
pub(crate) fn into_result<E>(outcome: Outcome<E>) -> Result<(Socket, E)> {
    match outcome {
        Outcome::Greeted(socket, extra) => Ok((*socket, extra)),
        Outcome::Refused(error) => Err(error),
    }
}
