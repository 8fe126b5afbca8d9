//! The sending side of the ring lane: the ring this process writes into
//! one socket's peer, from the offer to its end.
//!
//! A process that has sent a few messages on a socket offers a ring: a
//! size-sealed memfd it lays out, and one end of a private socket pair,
//! sent together in one datagram on the socket. Until the receiving side
//! has accepted the ring, and has read every datagram sent on the socket
//! before (so nothing on the socket lane is overtaken), messages go on the
//! socket as before. Then a message without descriptors whose body fits
//! is one record in the ring; any other message is a datagram on the
//! private socket, followed by a placeholder record that keeps its place
//! in the order. A receiver about to sleep arms the ring, and the next
//! record rings the doorbell: a datagram on the socket, which epoll,
//! tokio and a blocking receive all see.
//!
//! The ring is this process's alone: after a `fork`, the child makes one
//! of its own. A receiving side that refuses the ring, breaks it, or is
//! gone (its end of the private socket closed) sends this process back to
//! the socket lane.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::slots::{self, Slots, State};
use crate::error::{Error, Result};
use crate::sealing;
use crate::sys;
use crate::sys::mmap::WriteMap;
use crate::wire::{Body, Header, HEADER_LEN};

/// Messages that would fit a record a process sends on a socket before it
/// offers a ring: a channel used for one reply never pays for one.
const OFFER_AFTER: u32 = 2;

/// The least time between two looks at whether the ring's reader is still
/// there (a system call): a send more than this after the receiving side
/// is gone is `Disconnected`, as on the socket lane.
const LIVENESS_AFTER: Duration = Duration::from_micros(50);

/// Records between two notes of the CPU the producer runs on.
const CPU_EVERY: u32 = 16;

/// A socket's sending side of the ring lane, in this process.
#[derive(Debug)]
pub(crate) struct Outbound {
    state: Lane,
    /// Socket-lane messages sent since the last offer was decided.
    sent: u32,
    /// The fork generation this state was made in.
    fork: u64,
}

#[derive(Debug)]
enum Lane {
    /// No ring yet.
    Socket,
    /// Offered; messages still go on the socket.
    Offered(Ring),
    /// Accepted: messages go through the ring.
    Active(Ring),
    /// Refused, broken, or turned off: the socket lane for good.
    Off,
}

/// A ring this process writes.
#[derive(Debug)]
struct Ring {
    map: WriteMap,
    /// This process's end of the private socket: datagrams that take a
    /// placeholder's place go here.
    private: OwnedFd,
    /// The producer's own count of slots written.
    position: u64,
    records: u32,
    /// When the reader's liveness was last looked at.
    looked: Instant,
}

impl Ring {
    fn slots(&self) -> Option<Slots<'_>> {
        slots_of(&self.map)
    }
}

/// The producer's view of the ring in `map`.
fn slots_of(map: &WriteMap) -> Option<Slots<'_>> {
    Slots::own(map.atomics::<AtomicU64>()?)
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            state: Lane::Socket,
            sent: 0,
            fork: sys::process::fork_generation(),
        }
    }
}

impl Outbound {
    /// Brings the state up to date before a send: a ring made before a
    /// `fork` is the parent's; an offered one may have been accepted.
    ///
    /// `in_flight`: sends on the socket that other threads of this process
    /// have begun and not finished (they send without the lock); while
    /// any is, the ring is not used yet.
    fn refresh(&mut self, socket: BorrowedFd<'_>, in_flight: usize) {
        let generation = sys::process::fork_generation();
        if generation != self.fork {
            // This process's copy of the parent's ring is dropped (its
            // mapping and descriptors here, nothing of the parent's).
            *self = Outbound {
                fork: generation,
                ..Outbound::default()
            };
        }
        let Lane::Offered(ring) = &self.state else {
            return;
        };
        match ring.slots().map(|s| s.state()) {
            // Not taken up yet: the socket lane meanwhile.
            Some(State::Offered) => {}
            // Taken up. Once everything sent on the socket before is read,
            // the ring's records cannot overtake it.
            Some(State::Accepted) => {
                if in_flight == 0 && sys::socket::unread_bytes(socket) == Ok(0) {
                    if let Lane::Offered(ring) = std::mem::replace(&mut self.state, Lane::Off) {
                        self.state = Lane::Active(ring);
                    }
                }
            }
            // Refused, or broken.
            _ => self.state = Lane::Off,
        }
    }

    /// Sends `body`, a message without descriptors, as one ring record, if
    /// the ring is active and takes it. `Ok(false)`: the caller sends it on
    /// the socket lane instead.
    pub(crate) fn push(
        &mut self,
        socket: BorrowedFd<'_>,
        body: &[u8],
        in_flight: usize,
    ) -> Result<bool> {
        self.refresh(socket, in_flight);
        if body.len() > slots::MAX_BODY || !matches!(self.state, Lane::Active(_)) {
            return Ok(false);
        }
        match self.write(socket, slots::KIND_MESSAGE, body) {
            Ok(()) => Ok(true),
            // The receiving side is gone: the socket lane tells the sender.
            Err(Error::Disconnected) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a message that is no ring record goes on the ring's private
    /// socket (`true`, and [`placeholder`](Outbound::placeholder) after it)
    /// or on the socket. With an active ring, the ring must first have
    /// room for the placeholder, so that a send that must not wait fails
    /// before anything went.
    pub(crate) fn route(&mut self, socket: BorrowedFd<'_>, in_flight: usize) -> Result<bool> {
        self.refresh(socket, in_flight);
        let Lane::Active(ring) = &self.state else {
            return Ok(false);
        };
        match room(ring, 1) {
            Ok(()) => Ok(true),
            Err(Error::Disconnected) => {
                self.lost();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the ring in use has no reader left (its private socket is
    /// hung up): a sender waiting for room in it waits for nothing.
    pub(crate) fn reader_gone(&self) -> bool {
        match &self.state {
            Lane::Active(ring) => sys::socket::hung_up(ring.private.as_fd()),
            _ => false,
        }
    }

    /// The ring's private socket, while a ring is active.
    pub(crate) fn private(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            Lane::Active(ring) => Some(ring.private.as_fd()),
            _ => None,
        }
    }

    /// Nothing reads the ring any more: the socket lane from now on. No
    /// new offer: every holder of the receiving end had the ring (it
    /// travels with the end, and a fork inherits it), so one that let it
    /// go would let the next go too, and each costs this process a memfd
    /// and a mapping.
    pub(crate) fn lost(&mut self) {
        self.state = Lane::Off;
    }

    /// Bytes of datagrams sent on the private socket and not read yet.
    pub(crate) fn private_unread(&self) -> usize {
        self.private()
            .and_then(|fd| sys::socket::unread_bytes(fd).ok())
            .unwrap_or(0)
    }

    /// The placeholder of a message just sent on the private socket.
    pub(crate) fn placeholder(&mut self, socket: BorrowedFd<'_>) -> Result<()> {
        // [`route`] made room for it, and only consumers change slots now.
        self.write(socket, slots::KIND_PLACEHOLDER, &[])
    }

    /// Notes a message sent on the socket lane; after a few that would
    /// have been ring records (`fits`), offers a ring. A socket that only
    /// carries large bodies or descriptors never pays for one.
    pub(crate) fn sent_on_socket(&mut self, socket: BorrowedFd<'_>, fits: bool) {
        if !fits || !matches!(self.state, Lane::Socket) {
            return;
        }
        self.sent += 1;
        if self.sent < OFFER_AFTER {
            return;
        }
        self.sent = 0;
        // No memory, no descriptors, or a full socket: the socket lane
        // goes on, and the offer is made again later.
        if let Ok(ring) = offer(socket) {
            self.state = Lane::Offered(ring);
        }
    }

    /// Writes one record if the ring has room (`Error::Full` if not), and
    /// rings the doorbell if the receiving side was about to sleep.
    fn write(&mut self, socket: BorrowedFd<'_>, kind: u32, body: &[u8]) -> Result<()> {
        let Lane::Active(ring) = &mut self.state else {
            return Err(Error::Disconnected);
        };
        let n = slots::span(body.len());
        if let Err(e) = room(ring, n) {
            if matches!(e, Error::Disconnected) {
                self.lost();
            }
            return Err(e);
        }
        let Some(slots) = slots_of(&ring.map) else {
            self.state = Lane::Off;
            return Err(Error::Disconnected);
        };
        if !slots.push(ring.position, kind, body) {
            // `room` saw the slots free; only a peer writing our side of
            // the ring takes them back.
            self.state = Lane::Off;
            return Err(Error::Disconnected);
        }
        ring.position += n as u64;
        ring.records = ring.records.wrapping_add(1);
        if ring.records % CPU_EVERY == 0 {
            slots.set_cpu(sys::process::current_cpu());
        }
        let gone = if slots.take_waiting() {
            // The doorbell's send tells whether anyone is left to wake.
            !wake(socket)
        } else {
            // The clock, not the ring's head, says when to look: the head
            // is the consumers' cache line, and reading it on every record
            // would pull it across cores.
            let now = Instant::now();
            let due = now.duration_since(ring.looked) >= LIVENESS_AFTER;
            if due {
                ring.looked = now;
            }
            due && sys::socket::hung_up(ring.private.as_fd())
        };
        if gone {
            // Every process that could read the ring is gone: the record
            // is lost with them, and the socket lane tells the sender.
            self.lost();
            return Err(Error::Disconnected);
        }
        Ok(())
    }
}

/// Whether the ring has `n` free slots at the producer's position:
/// `Error::Full` when not. The caller waits, without the lane's lock (see
/// `deliver`), and asks [`Outbound::reader_gone`] whether room can come.
fn room(ring: &Ring, n: usize) -> Result<()> {
    match ring.slots() {
        Some(slots) if slots.has_room(ring.position, n) => Ok(()),
        Some(_) => Err(Error::Full),
        None => Err(Error::Disconnected),
    }
}

/// Makes a ring and offers it on `socket`.
fn offer(socket: BorrowedFd<'_>) -> Result<Ring> {
    let len = slots::words(slots::SLOTS) * 8;
    let memfd = sealing::create(c"ipc-core-ring", len as u64)?;
    sealing::seal(memfd.as_fd(), sealing::SIZE_SEALS)?;
    let map = WriteMap::new(memfd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
    let words = map
        .atomics::<AtomicU64>()
        .ok_or_else(|| Error::Layout("a ring's mapping is not a whole number of words".into()))?;
    Slots::init(words, slots::SLOTS)
        .ok_or_else(|| Error::Layout("a ring does not fit its mapping".into()))?;
    let (private, theirs) =
        sys::socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
    let mut head = [0u8; HEADER_LEN];
    Header {
        body: Body::RingOffer,
        fds: 2,
        body_len: 0,
    }
    .write(&mut head);
    let fds = [
        std::os::fd::AsRawFd::as_raw_fd(&memfd),
        std::os::fd::AsRawFd::as_raw_fd(&theirs),
    ];
    sys::socket::send(socket, &head, &fds, true).map_err(|e| Error::io("sendmsg", e))?;
    Ok(Ring {
        map,
        private,
        position: 0,
        records: 0,
        looked: Instant::now(),
    })
}

/// Rings the doorbell: a wake datagram on the socket. A full socket needs
/// none: what fills it wakes the receiver. `false` when the receiving side
/// is gone.
fn wake(socket: BorrowedFd<'_>) -> bool {
    let mut head = [0u8; HEADER_LEN];
    Header {
        body: Body::Wake,
        fds: 0,
        body_len: 0,
    }
    .write(&mut head);
    !matches!(
        sys::socket::send(socket, &head, &[], true),
        Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET)
    )
}
