//! The receiving side of the ring lane: the rings sending processes
//! offered this receiving end, read before its socket.
//!
//! An offered ring is checked as any memory from a peer is (a memfd of
//! ours, size-sealed, of the size a ring has, with a ring's header) and
//! its private socket must be a connected seqpacket socket; then it is
//! mapped and accepted. A receiving end reads at most
//! [`Limits::max_rings`](crate::Limits::max_rings) rings: past that, the
//! rings of senders that are gone make room, or the offer is refused and
//! that sender stays on the socket lane.
//!
//! A record is copied out of the shared memory before it is decoded, so a
//! sender that writes its ring meanwhile changes nothing that is decoded.
//! A ring whose sender wrote what no sender writes is closed, with an
//! error that says so; the other rings and the socket go on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::slots::{self, Slots, Taken};
use crate::error::{Error, Result};
use crate::sealing;
use crate::sys;
use crate::sys::mmap::WriteMap;

/// How long a receive that polls without waiting leaves the socket unread
/// while it has rings to read: a busy loop of `try_recv` reads the rings
/// on every call and the socket (a system call) at most this often.
const SOCKET_EVERY: Duration = Duration::from_micros(10);

/// The longest a receive spins on the rings before it sleeps, when the
/// sender runs on another CPU: a sleep and a wake-up there cost tens of
/// microseconds.
const SPIN_MAX: Duration = Duration::from_micros(20);

/// Takes in a row that lose every claim on a ring's head before the ring
/// is taken for broken: other receiving threads win a claim now and then,
/// not 64 times in a row this often.
const BUSY_MAX: u32 = 16;

/// A receiving end's rings.
#[derive(Debug)]
pub(crate) struct Inbound {
    rings: Vec<InRing>,
    /// The ring read first next time: each in turn.
    next: usize,
    /// When the socket was last found empty by a receive that polls.
    socket_empty_at: Option<Instant>,
    /// How long the next spin may be: halved when a spin finds nothing,
    /// doubled when it pays.
    spin: Duration,
    /// The id the next ring taken up gets.
    next_id: u64,
}

/// One ring a sending process offered.
#[derive(Debug)]
struct InRing {
    map: WriteMap,
    /// The ring's memfd, kept to hand the ring on with the receiving end.
    memfd: OwnedFd,
    /// The receiving end of the sender's private socket.
    private: OwnedFd,
    /// Takes in a row that lost every claim.
    busy: u32,
    /// Which ring this is, among those this receiving end has read.
    id: u64,
}

impl InRing {
    fn slots(&self) -> Option<Slots<'_>> {
        Slots::open(self.map.atomics::<AtomicU64>()?)
    }
}

/// What [`Inbound::take`] found.
#[derive(Debug)]
pub(crate) enum Took<'a> {
    /// A message's body, in the caller's buffer.
    Body,
    /// The sender's next message: the next datagram on this socket.
    Private(BorrowedFd<'a>),
    /// A ring its sender broke, now closed.
    Broken,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            rings: Vec::new(),
            next: 0,
            socket_empty_at: None,
            spin: SPIN_MAX,
            next_id: 1,
        }
    }
}

impl Inbound {
    pub(crate) fn has_rings(&self) -> bool {
        !self.rings.is_empty()
    }

    /// Checks, maps and accepts a ring a sending process offered on the
    /// socket `main`. At `max` rings, rings whose senders are gone make
    /// room first; if none does, the offer is refused.
    pub(crate) fn accept(
        &mut self,
        main: BorrowedFd<'_>,
        memfd: OwnedFd,
        private: OwnedFd,
        max: usize,
    ) -> Result<()> {
        if let Err(why) = not_our_own(main, private.as_fd()) {
            crate::disposal::discard(memfd);
            crate::disposal::discard(private);
            return Err(Error::Descriptor(why));
        }
        let ring = open(memfd, private).map_err(Error::Descriptor)?;
        if self.rings.len() >= max {
            self.sweep();
        }
        let Some(slots) = ring.slots() else {
            return Err(Error::Descriptor(
                "a ring's header changed as it was opened".into(),
            ));
        };
        if self.rings.len() >= max {
            slots.refuse();
            return Ok(());
        }
        slots.accept();
        // Armed from the start: a thread already asleep on the socket, from
        // before the ring, is woken by its first record.
        slots.arm();
        self.push(ring);
        Ok(())
    }

    fn push(&mut self, mut ring: InRing) {
        ring.id = self.next_id;
        self.next_id += 1;
        self.rings.push(ring);
    }

    /// Counts the calling thread asleep on every ring (at most
    /// `ids.len()`), whose ids go into `ids`; and arms them.
    pub(crate) fn sleep_begin(&self, ids: &mut [u64]) -> usize {
        let mut n = 0;
        for (id, ring) in ids.iter_mut().zip(&self.rings) {
            if let Some(slots) = ring.slots() {
                slots.sleep_begin();
                *id = ring.id;
                n += 1;
            }
        }
        self.arm();
        n
    }

    /// The calling thread, counted asleep on the rings `ids`, is awake.
    /// Rings closed meanwhile are gone; rings taken up meanwhile never
    /// counted it.
    pub(crate) fn sleep_end(&self, ids: &[u64]) {
        for ring in &self.rings {
            if ids.contains(&ring.id) {
                if let Some(slots) = ring.slots() {
                    slots.sleep_end();
                }
            }
        }
    }

    /// The private sockets a sleep watches for a hang-up: a sender gone
    /// leaves its ring to be closed, and with it whatever its private
    /// socket still holds.
    pub(crate) fn watch(&self, out: &mut [std::os::fd::RawFd]) -> usize {
        let mut n = 0;
        for (slot, ring) in out.iter_mut().zip(&self.rings) {
            *slot = std::os::fd::AsRawFd::as_raw_fd(&ring.private);
            n += 1;
        }
        n
    }

    /// Takes up the rings of a receiving end that came inside a message:
    /// their senders wrote to it before, and go on.
    pub(crate) fn adopt(
        &mut self,
        memfd: OwnedFd,
        private: OwnedFd,
    ) -> std::result::Result<(), String> {
        // Not bounded by `max_rings`: refused, a ring's records would be
        // lost. A message's descriptor limit bounds how many come.
        let ring = open(memfd, private)?;
        self.push(ring);
        Ok(())
    }

    /// The descriptors that hand these rings on with the receiving end.
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = (BorrowedFd<'_>, BorrowedFd<'_>)> {
        self.rings
            .iter()
            .map(|r| (r.memfd.as_fd(), r.private.as_fd()))
    }

    /// Takes the next record of any ring, each ring in turn; its body goes
    /// into `body`. `None`: no ring has one.
    pub(crate) fn take(&mut self, body: &mut Vec<u8>) -> Option<Took<'_>> {
        let count = self.rings.len();
        for turn in 0..count {
            let index = (self.next + turn) % count;
            let taken = self.rings[index]
                .slots()
                .map_or(Taken::Corrupt, |s| s.take(body));
            let ring = &mut self.rings[index];
            let corrupt = match taken {
                Taken::Nothing => continue,
                // Other receiving threads won each claim, or the sender
                // moves the head under them: the latter, again and again,
                // would keep this receive busy for nothing.
                Taken::Busy => {
                    ring.busy += 1;
                    if ring.busy < BUSY_MAX {
                        continue;
                    }
                    true
                }
                Taken::Corrupt => true,
                Taken::Message | Taken::Placeholder => false,
            };
            if !corrupt {
                ring.busy = 0;
            }
            match taken {
                Taken::Message => {
                    self.next = (index + 1) % count;
                    return Some(Took::Body);
                }
                Taken::Placeholder => {
                    self.next = (index + 1) % count;
                    return Some(Took::Private(self.rings[index].private.as_fd()));
                }
                _ => {
                    // Closing our end of its private socket tells the
                    // sender: it goes back to the socket lane.
                    self.rings.swap_remove(index);
                    self.next = 0;
                    return Some(Took::Broken);
                }
            }
        }
        None
    }

    /// Whether a ring has a record to take.
    pub(crate) fn ready(&self) -> bool {
        self.rings
            .iter()
            .any(|r| r.slots().is_some_and(|s| s.ready()))
    }

    /// Arms every ring before a sleep: the next record rings the doorbell.
    /// The caller looks at the rings once more before it sleeps.
    pub(crate) fn arm(&self) {
        for ring in &self.rings {
            if let Some(slots) = ring.slots() {
                slots.arm();
            }
        }
    }

    /// Closes the rings whose senders are gone and that hold nothing more.
    pub(crate) fn sweep(&mut self) {
        self.rings.retain(|ring| {
            // Gone first, then empty: a sender that wrote its last record
            // and died between the two looks keeps that record.
            let gone = sys::socket::hung_up(ring.private.as_fd());
            !(gone && ring.slots().is_none_or(|s| !s.ready()))
        });
        self.next = 0;
    }

    /// Whether a receive that polls reads the socket now, or only its
    /// rings (it read the socket and found nothing a moment ago).
    pub(crate) fn socket_due(&self, now: Instant) -> bool {
        self.socket_empty_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SOCKET_EVERY)
    }

    /// Notes that the socket had nothing, or (with `None`) that it may
    /// have something (a waiter saw it readable).
    pub(crate) fn socket_empty(&mut self, at: Option<Instant>) {
        self.socket_empty_at = at;
    }

    /// How long a receive about to sleep may spin on the rings first: only
    /// while a sender runs on another CPU (on this one, spinning only keeps
    /// it from running), and less each time spinning found nothing.
    pub(crate) fn spin_budget(&self) -> Duration {
        if self.rings.is_empty() {
            return Duration::ZERO;
        }
        let here = sys::process::current_cpu();
        let elsewhere = self
            .rings
            .iter()
            .any(|r| r.slots().is_some_and(|s| s.producer_cpu() != here));
        if elsewhere {
            self.spin
        } else {
            Duration::ZERO
        }
    }

    /// Learns from a spin: one that found a record may be longer next
    /// time, one that found nothing shorter.
    pub(crate) fn spun(&mut self, paid: bool) {
        if paid {
            self.longer();
        } else {
            self.spin /= 2;
        }
    }

    /// Learns from a sleep: one that ended within the longest spin would
    /// have been a spin that paid, so spinning comes back.
    pub(crate) fn slept(&mut self, asleep: Duration) {
        if asleep < SPIN_MAX {
            self.longer();
        }
    }

    fn longer(&mut self) {
        self.spin = (self.spin * 2).clamp(Duration::from_micros(1), SPIN_MAX);
    }
}

/// Checks an offered ring and maps it. A refused ring's descriptors are
/// let go of as any refused descriptor is: what the peer sent in their
/// place may be a socket whose close would wait on it.
fn open(memfd: OwnedFd, private: OwnedFd) -> std::result::Result<InRing, String> {
    match check(&memfd, &private) {
        Ok(map) => Ok(InRing {
            map,
            memfd,
            private,
            busy: 0,
            id: 0,
        }),
        Err(why) => {
            crate::disposal::discard(memfd);
            crate::disposal::discard(private);
            Err(why)
        }
    }
}

/// Refuses a private socket that is the channel's own sending end (one
/// whose peer is `main`): held by the receiving end's rings, it would keep
/// the channel from ever ending. Where the kernel will not say who the
/// peer is, the ring is refused too: the socket lane is always there.
fn not_our_own(main: BorrowedFd<'_>, private: BorrowedFd<'_>) -> std::result::Result<(), String> {
    match (sys::socket::inode(main), sys::socket::peer_inode(private)) {
        (Some(main), Some(peer)) if main != peer => Ok(()),
        (Some(_), Some(_)) => Err(
            "a ring's private socket is this channel's own sending end, which would keep the \
             channel open for ever; the peer does not follow the protocol"
                .into(),
        ),
        _ => Err(
            "the kernel would not say where a ring's private socket leads (sock_diag), so the \
             ring was refused; the sender goes on on the socket"
                .into(),
        ),
    }
}

/// Checks an offered ring's descriptors, and maps the ring.
fn check(memfd: &OwnedFd, private: &OwnedFd) -> std::result::Result<WriteMap, String> {
    let len = slots::words(slots::SLOTS) * 8;
    let size = sealing::check(memfd, sealing::SIZE_SEALS, "a ring")?;
    if size != len as u64 {
        return Err(format!(
            "a ring of {size} bytes is not the {len} bytes a ring has; the peer does not follow \
             the protocol"
        ));
    }
    if !sys::socket::is_channel_end(private.as_fd()) {
        return Err(
            "a ring's private socket must be a connected AF_UNIX SOCK_SEQPACKET socket".into(),
        );
    }
    let map = WriteMap::new(memfd.as_fd(), len).map_err(|e| format!("mmap of a ring: {e}"))?;
    let header = map
        .atomics::<AtomicU64>()
        .and_then(|words| Slots::open(words).map(|_| ()));
    if header.is_none() {
        return Err(
            "a ring's header does not describe a ring; the peer does not follow the protocol"
                .into(),
        );
    }
    Ok(map)
}
