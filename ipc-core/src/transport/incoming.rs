//! What comes in on a connection: the rings the peer's processes write and
//! the socket, in order, and how a receive waits for them.
//!
//! A receive reads the rings first, each in turn, then the socket (while
//! it has rings, at most every few microseconds unless the socket woke it,
//! so that a stream of records stays out of the kernel); an offer on the
//! socket is taken up, a doorbell skipped. With nothing there, a receive
//! that may wait spins on the rings while that pays, arms them, looks once
//! more, and sleeps in `poll` on the socket, where a doorbell, a datagram
//! or the peer's end wakes every thread asleep there, and on the rings'
//! private sockets, whose hang-up closes a ring its sender left. The end
//! of the channel is read only once the rings are empty: a sender's last
//! records come before its end.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::ring::Took;
use super::socket::receive::{Arrival, Inbox, Stashed};
use super::wait::Wait;
use super::{with_buffer, Peer, Socket, INBOX};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::sys::socket as sys;
use crate::wire::Body;

impl Socket {
    /// Receives one message and decodes it as a `T`, within `limits`.
    #[inline]
    pub(crate) fn recv<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        wait: Wait,
    ) -> Result<T> {
        self.receive(limits, wait, None, false, false)
            .and_then(Arrival::decoded)
    }

    /// Receives a message if one is queued; a body over 1 MiB comes back
    /// undecoded, for the caller to decode where it may take its time.
    ///
    /// `woken`: the caller was woken by the socket's readiness, so the
    /// socket is read whatever a receive that polls found there a moment
    /// ago.
    pub(crate) fn try_recv_deferring<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        woken: bool,
    ) -> Result<Arrival<T>> {
        self.receive(limits, Wait::Never, None, true, woken)
    }

    /// Receives as [`recv`](Socket::recv) does, and what the kernel
    /// attached about the sender (when this socket asked for it).
    pub(crate) fn recv_from<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        wait: Wait,
        sender: &mut sys::Sender,
    ) -> Result<T> {
        self.receive(limits, wait, Some(sender), false, false)
            .and_then(Arrival::decoded)
    }

    fn receive<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        wait: Wait,
        mut sender: Option<&mut sys::Sender>,
        defer: bool,
        woken: bool,
    ) -> Result<Arrival<T>> {
        with_buffer(&INBOX, Inbox::new, |inbox| {
            let main = self.as_fd();
            if let Some(stashed) = self.take_stash() {
                let received = inbox.unstash(stashed);
                if let Some(arrival) = self.arrived(inbox.finish(received, limits, defer), limits) {
                    return arrival;
                }
            }
            let mut woken = woken;
            let mut fruitless = 0u32;
            loop {
                fruitless += 1;
                // The socket first when woken by it (its doorbell read at
                // once, not at the next receive) or when due: while records
                // flow, at most every few microseconds, so that they stay
                // out of the kernel and the socket's datagrams still come.
                let read_socket = {
                    let inbound = self.inbound();
                    if !inbound.has_rings() {
                        // The socket lane alone, waiting there as asked.
                        drop(inbound);
                        let arrival = inbox.recv(main, limits, wait, sender.as_deref_mut(), defer);
                        match self.arrived(arrival, limits) {
                            Some(arrival) => return arrival,
                            None => continue,
                        }
                    }
                    woken || inbound.socket_due(Instant::now())
                };
                if read_socket {
                    woken = false;
                    let arrival =
                        inbox.recv(main, limits, Wait::Never, sender.as_deref_mut(), defer);
                    match arrival {
                        Err(Error::Empty) => self.inbound().socket_empty(Some(Instant::now())),
                        Err(Error::Disconnected) => return self.last_records(inbox, limits),
                        arrival => match self.arrived(arrival, limits) {
                            Some(arrival) => return arrival,
                            // A doorbell or an offer: the socket was just
                            // read, the rings are next.
                            None => self.inbound().socket_empty(Some(Instant::now())),
                        },
                    }
                }
                if let Some(arrival) = self.take_record(inbox, limits, defer) {
                    return arrival;
                }
                if matches!(wait, Wait::Never) {
                    return Err(Error::Empty);
                }
                // Round after round that a ring said it had a record and
                // gave none (a sender playing with its ring's memory, or
                // other threads winning every record): no more spinning or
                // looking, a nap in the socket instead, which a doorbell
                // ends.
                let restless = fruitless < FRUITLESS_MAX;
                if restless && self.spin(wait) {
                    continue;
                }
                let mut ids = [0u64; sys::WATCHED_MAX];
                let counted = {
                    let inbound = self.inbound();
                    let counted = inbound.sleep_begin(&mut ids);
                    if restless && inbound.ready() {
                        inbound.sleep_end(&ids[..counted]);
                        continue;
                    }
                    counted
                };
                let (sleep, nap) = if restless {
                    (wait, false)
                } else {
                    fruitless = FRUITLESS_MAX / 2;
                    nap_within(wait)
                };
                // Asleep until the socket is readable (a doorbell, a
                // datagram, the end) or a sender's private socket hangs up;
                // every thread asleep here wakes, and looks again.
                let asleep = Instant::now();
                let woke = self.sleep(sleep, !nap);
                {
                    let mut inbound = self.inbound();
                    inbound.sleep_end(&ids[..counted]);
                    inbound.slept(asleep.elapsed());
                }
                match woke? {
                    sys::Woke::Timeout if nap => {}
                    sys::Woke::Timeout => return Err(Error::Timeout),
                    sys::Woke::Socket => woken = true,
                    sys::Woke::Watched => self.inbound().sweep(),
                }
            }
        })
    }

    /// Sleeps on the socket within `wait`, and on the rings' private
    /// sockets too (`watch`).
    fn sleep(&self, wait: Wait, watch: bool) -> Result<sys::Woke> {
        let mut watched = [0; sys::WATCHED_MAX];
        let n = if watch {
            self.inbound().watch(&mut watched)
        } else {
            0
        };
        let timeout = match wait {
            Wait::Never => 0,
            Wait::Forever => -1,
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(sys::Woke::Timeout);
                }
                i32::from(super::poll_timeout(left))
            }
        };
        sys::sleep_on(self.as_fd(), &watched[..n], timeout).map_err(|e| Error::io("poll", e))
    }

    /// What a datagram from the socket lane means: a message or an error
    /// for the caller (`Some`), or an offer taken up or a doorbell, after
    /// which the receive goes on (`None`).
    fn arrived<T>(
        &self,
        arrival: Result<Arrival<T>>,
        limits: &Limits,
    ) -> Option<Result<Arrival<T>>> {
        match arrival {
            Ok(Arrival::Offer { ring, private }) => {
                match self
                    .inbound()
                    .accept(self.as_fd(), ring, private, limits.max_rings())
                {
                    Ok(()) => None,
                    Err(e) => Some(Err(e)),
                }
            }
            Ok(Arrival::Wake) => None,
            other => Some(other),
        }
    }

    /// The socket says the peer is gone: every sending process is, so the
    /// rings hold their last records, read before the end is told.
    fn last_records<T: DeserializeOwned + 'static>(
        &self,
        inbox: &mut Inbox,
        limits: &Limits,
    ) -> Result<Arrival<T>> {
        self.take_record(inbox, limits, false).unwrap_or_else(|| {
            self.inbound().sweep();
            Err(Error::Disconnected)
        })
    }

    /// Takes the next record of any ring, the message a placeholder stands
    /// for included; `None` when no ring has one.
    fn take_record<T: DeserializeOwned + 'static>(
        &self,
        inbox: &mut Inbox,
        limits: &Limits,
        defer: bool,
    ) -> Option<Result<Arrival<T>>> {
        let mut inbound = self.inbound();
        Some(match inbound.take(&mut inbox.record)? {
            Took::Body => {
                drop(inbound);
                inbox.decode_record(limits)
            }
            Took::Private(private) => {
                let room = limits.max_descriptors().saturating_add(1);
                let received = inbox.receive_only(private, room);
                drop(inbound);
                match received {
                    Ok(received) => inbox.finish(received, limits, defer),
                    Err(Error::Empty | Error::Disconnected) => Err(no_datagram()),
                    Err(e) => Err(e),
                }
            }
            Took::Broken => Err(broken()),
        })
    }

    /// Spins on the rings while that pays (a sender on another CPU), within
    /// `wait`; `true` when a record came.
    fn spin(&self, wait: Wait) -> bool {
        let budget = self.inbound().spin_budget();
        if budget.is_zero() {
            return false;
        }
        let start = Instant::now();
        let mut until = start + budget;
        if let Wait::Until(deadline) = wait {
            until = until.min(deadline);
        }
        let mut turns = 0u32;
        let paid = loop {
            if self.inbound().ready() {
                break true;
            }
            turns = turns.wrapping_add(1);
            if turns % 32 == 0 && Instant::now() >= until {
                break false;
            }
            std::hint::spin_loop();
        };
        self.inbound().spun(paid);
        paid
    }

    /// Arms the rings before a wait for the socket (an async receive's, a
    /// `Select`'s): the next record rings the doorbell. `true` when a
    /// record is there already.
    pub(crate) fn arm(&self) -> bool {
        let mut inbound = self.inbound();
        // A waiter is woken by the socket: what it reads there next is due.
        inbound.socket_empty(None);
        inbound.arm();
        inbound.ready()
    }

    /// Counts an async receive asleep on the rings, as a blocking one
    /// counts itself, until the guard is dropped (the receive woke, or was
    /// cancelled): with other receivers asleep too, every record rings.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn sleeping(&self) -> Sleeping<'_> {
        let mut ids = [0u64; sys::WATCHED_MAX];
        let counted = self.inbound().sleep_begin(&mut ids);
        Sleeping {
            socket: self,
            ids,
            counted,
        }
    }

    /// Whether a receive now would give a message or an error, for a
    /// `Select` that saw the socket readable: what the protocol sends
    /// besides messages (a spawned child's greeting, a ring's offer or
    /// doorbell) is dealt with here; with nothing there, the rings are
    /// armed.
    pub(crate) fn has_message(&self) -> bool {
        if let Peer::Greeting(pending) = &self.peer {
            match pending.settle(self, Wait::Never) {
                Ok(()) => {}
                Err(Error::Empty) => return false,
                Err(_) => return true,
            }
        }
        if self.has_stash() {
            return true;
        }
        with_buffer(&INBOX, Inbox::new, |inbox| loop {
            if self.inbound().ready() {
                return true;
            }
            match sys::peek_kind(self.as_fd()) {
                Some(Body::Wake | Body::RingOffer) => {}
                // Nothing: armed, and looked at once more.
                None => {
                    let inbound = self.inbound();
                    inbound.arm();
                    return inbound.ready();
                }
                // A message, an end, or what the receive will refuse.
                Some(_) => {
                    self.inbound().socket_empty(None);
                    return true;
                }
            }
            // Taken off the socket: a doorbell is dropped, an offer taken
            // up; a message that another thread's receive left in their
            // place (it took the one peeked at) is kept for the next receive.
            let received = match inbox.receive_only(self.as_fd(), Limits::MAX_DESCRIPTORS) {
                Ok(received) => received,
                Err(Error::Empty) => continue,
                Err(_) => return true,
            };
            match inbox.kind(&received) {
                // A doorbell carries nothing; what a peer attached anyway
                // is let go of now, not at this thread's next receive.
                Some(Body::Wake) => inbox.discard(),
                Some(Body::RingOffer) => {
                    let offer = inbox.finish::<()>(received, &Limits::default(), false);
                    if let Ok(Arrival::Offer { ring, private }) = offer {
                        // The limit the receiver last set.
                        let _ =
                            self.inbound()
                                .accept(self.as_fd(), ring, private, self.max_rings());
                    }
                    inbox.discard();
                }
                _ => {
                    let stashed = inbox.stash(received);
                    self.put_stash(stashed);
                    return true;
                }
            }
        })
    }

    fn has_stash(&self) -> bool {
        self.stash_lock().is_some()
    }

    fn take_stash(&self) -> Option<Stashed> {
        // Most receives: nothing kept, one load.
        if !self.stashed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let stashed = self.stash_lock().take();
        self.stashed
            .store(false, std::sync::atomic::Ordering::Release);
        stashed
    }

    fn put_stash(&self, stashed: Stashed) {
        *self.stash_lock() = Some(stashed);
        self.stashed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn stash_lock(&self) -> std::sync::MutexGuard<'_, Option<Stashed>> {
        self.stash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands the rings on with this receiving end when it travels inside a
    /// message: their descriptors, to send beside the socket's.
    pub(crate) fn with_rings<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (BorrowedFd<'_>, BorrowedFd<'_>)>) -> R,
    ) -> R {
        let inbound = self.inbound();
        let mut descriptors = inbound.descriptors();
        f(&mut descriptors)
    }

    /// Takes up the rings that came with a receiving end inside a message.
    pub(crate) fn adopt_ring(
        &self,
        ring: OwnedFd,
        private: OwnedFd,
    ) -> std::result::Result<(), String> {
        self.inbound().adopt(ring, private)
    }
}

/// Rounds of a receive that found nothing, though a ring said it had a
/// record, before the receive naps instead of spinning.
const FRUITLESS_MAX: u32 = 64;

/// The longest nap of a receive that stopped spinning.
const NAP: Duration = Duration::from_millis(1);

/// A wait of at most [`NAP`] within `wait`, and whether it is shorter.
fn nap_within(wait: Wait) -> (Wait, bool) {
    let until = Instant::now() + NAP;
    match wait {
        Wait::Until(deadline) if deadline <= until => (wait, false),
        _ => (Wait::Until(until), true),
    }
}

#[cold]
fn broken() -> Error {
    Error::Decode(
        "a sending process wrote what no sender writes into its ring, which is now closed; \
         its next messages come on the socket"
            .into(),
    )
}

#[cold]
fn no_datagram() -> Error {
    Error::Decode(
        "a sending process's ring said its next message was on its private socket, and none \
         was there; that sender does not follow the protocol"
            .into(),
    )
}

/// An async receive counted asleep on a socket's rings; awake when dropped.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct Sleeping<'a> {
    socket: &'a Socket,
    ids: [u64; sys::WATCHED_MAX],
    counted: usize,
}

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.socket.inbound().sleep_end(&self.ids[..self.counted]);
    }
}
