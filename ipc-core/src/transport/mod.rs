//! One message over one connection: encode and send, receive and decode.
//!
//! `Sender`, `Receiver` and `Connection` are thin typed faces over
//! [`Socket`], which moves each message by one of two lanes:
//!
//! - the socket lane ([`socket`]): one `AF_UNIX` `SOCK_SEQPACKET`
//!   datagram per message, its descriptors in `SCM_RIGHTS`; bodies over
//!   [`INLINE_MAX`](crate::wire::INLINE_MAX) in a memfd ([`body`]), one of
//!   the socket's reusable [`pool`] when it has one free;
//! - the ring lane ([`ring`]): messages without descriptors through a ring
//!   in shared memory, once the sending process has offered one and the
//!   receiving end taken it up; what the receiving end reads in order, and
//!   how it waits, is [`incoming`];
//! - the waits ([`wait`]) shared by both: how long a call may wait, and how
//!   it waits.
//!
//! Buffers are per thread and reused: a send encodes into a fixed buffer
//! and makes one `sendmsg`; a receive makes one `recvmsg` into a fixed
//! buffer.

pub(crate) mod body;
mod incoming;
pub(crate) mod pool;
pub(crate) mod ring;
mod socket;
mod wait;

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};

use serde::Serialize;

use crate::bounded;
use crate::credentials::PeerCredentials;
use crate::error::{Error, Result};
use crate::handshake::Pending;
use crate::select::Memberships;
use crate::sys::socket as sys;

pub(crate) use incoming::Sleeping;
#[cfg(feature = "tokio")]
pub(crate) use socket::receive::LargeBody;
pub(crate) use socket::receive::{decode_datagram, Arrival};
pub(crate) use wait::{poll_timeout, wait_readable, Wait};

use pool::Pool;
use ring::{Inbound, Outbound};
use socket::receive::{Inbox, Stashed};
use socket::send::Outbox;

/// Whether sends may take the ring lane unless told otherwise: yes, but
/// for a process started with `IPC_CORE_RING=off`.
fn ring_by_default() -> bool {
    static DEFAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| std::env::var_os("IPC_CORE_RING").is_none_or(|v| v != "off"))
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` socket that speaks this protocol.
#[derive(Debug)]
pub(crate) struct Socket {
    /// The `Select`s that wait on this socket, which it leaves before `fd`
    /// closes: declared first, so dropped first.
    selects: Memberships,
    fd: OwnedFd,
    /// Memfds for the bodies this side sends out of line.
    pool: Pool,
    /// Bytes of sealed bodies this process sent since it last saw every
    /// datagram it sent read (see [`may_send_sealed`]).
    sealed_in_flight: AtomicUsize,
    /// What is known of the process at the other end.
    peer: Peer,
    /// Whether this process's sends may take the ring lane.
    ring: AtomicBool,
    /// The ring this process writes to the peer, once offered.
    outbound: Mutex<Outbound>,
    /// The rings the peer's processes write to this end.
    inbound: Mutex<Inbound>,
    /// A datagram a `Select` took off the socket when it was after a
    /// doorbell (another thread had taken that): the next receive's.
    stash: Mutex<Option<Stashed>>,
    /// Whether `stash` holds one: most receives look at this alone.
    stashed: AtomicBool,
    /// Sends on the socket this process has begun without the lane's lock
    /// and not finished: the ring is not taken into use under them.
    in_flight: AtomicUsize,
    /// The most rings the receiving end reads, as its limits last said:
    /// for what takes up an offer outside a receive (a `Select`).
    max_rings: AtomicUsize,
}

/// What is known of the process at the other end of a socket.
#[derive(Debug)]
pub(crate) enum Peer {
    /// The kernel's record (`SO_PEERCRED`) names it: the socket was
    /// connected through a listener, or adopted by a caller who knows.
    Recorded,
    /// The parent's end of a spawned child: the kernel recorded the parent
    /// itself, so the child's greeting tells, with the credentials the
    /// kernel attached to it.
    Greeting(Pending),
    /// Nothing a check could rely on, and why.
    Unknown(&'static str),
}

/// Why the peer of a pair made in this process is unknown.
const PAIRED: &str = "the connection was made by Connection::pair in this process, and the kernel \
     records whoever made a pair, not who holds its other end now; check the peer of the \
     connection the other end traveled over instead";

/// Why the peer of an end that came inside a message is unknown.
const RECEIVED: &str = "the connection came inside a message, and the kernel records whoever \
     made it, not who holds its other end now; check the peer of the connection it came over \
     instead";

impl Socket {
    /// Adopts `fd`, which the caller promises is a connected seqpacket socket
    /// whose peer speaks this protocol, and whose peer the kernel's record
    /// names (it was connected, not made by `socketpair` elsewhere).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Socket::with_peer(fd, Peer::Recorded)
    }

    /// A channel end that came inside a message.
    pub(crate) fn received(fd: OwnedFd) -> Self {
        Socket::with_peer(fd, Peer::Unknown(RECEIVED))
    }

    fn with_peer(fd: OwnedFd, peer: Peer) -> Self {
        Socket {
            selects: Memberships::new(fd.as_fd()),
            fd,
            pool: Pool::default(),
            sealed_in_flight: AtomicUsize::new(0),
            peer,
            ring: AtomicBool::new(ring_by_default()),
            outbound: Mutex::default(),
            inbound: Mutex::default(),
            stash: Mutex::new(None),
            stashed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_rings: AtomicUsize::new(crate::limits::Limits::DEFAULT_MAX_RINGS),
        }
    }

    /// Whether this process's sends may take the ring lane.
    #[inline]
    pub(crate) fn ring_enabled(&self) -> bool {
        self.ring.load(Ordering::Relaxed)
    }

    /// Keeps this process's sends on the socket lane (`false`), or lets
    /// them take the ring lane. A ring already offered stays.
    pub(crate) fn set_ring(&self, enabled: bool) {
        self.ring.store(enabled, Ordering::Relaxed);
    }

    /// The most rings the receiving end reads.
    pub(crate) fn max_rings(&self) -> usize {
        self.max_rings.load(Ordering::Relaxed)
    }

    /// Notes the receiving end's limit on rings.
    pub(crate) fn set_max_rings(&self, n: usize) {
        self.max_rings.store(n, Ordering::Relaxed);
    }

    pub(crate) fn outbound(&self) -> MutexGuard<'_, Outbound> {
        self.outbound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn inbound(&self) -> MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes this process sent to the peer and the peer has not read: on
    /// the socket, and on the private socket of this process's ring.
    pub(crate) fn unread_bytes(&self) -> std::result::Result<usize, nix::errno::Errno> {
        let main = sys::unread_bytes(self.as_fd())?;
        Ok(main + self.outbound().private_unread())
    }

    pub(crate) fn pair() -> Result<(Socket, Socket)> {
        let (a, b) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok((
            Socket::with_peer(a, Peer::Unknown(PAIRED)),
            Socket::with_peer(b, Peer::Unknown(PAIRED)),
        ))
    }

    /// Makes the first receive read and check the peer's greeting, which
    /// also tells who the peer is.
    pub(crate) fn expect_greeting(&mut self, pending: Pending) {
        self.peer = Peer::Greeting(pending);
    }

    /// Gives up the descriptor, after leaving every `Select`: the caller
    /// may close it while another copy of the file lives on.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let Socket { selects, fd, .. } = self;
        drop(selects);
        fd
    }

    /// The `Select`s that wait on this socket.
    pub(crate) fn selects(&self) -> &Memberships {
        &self.selects
    }

    /// Runs `f` on the socket behind `weak` if it is alive: how a `Select`
    /// asks a socket it does not own whether it holds a message. The strong
    /// handle it takes for that moment is invisible to
    /// [`take_last`](Socket::take_last).
    pub(crate) fn lend<R>(weak: &Weak<Socket>, f: impl FnOnce(&Socket) -> R) -> Option<R> {
        let _lent = LENDING.read().unwrap_or_else(PoisonError::into_inner);
        weak.upgrade().map(|socket| f(&socket))
    }

    /// The socket, if `socket` is its last handle apart from a `Select`
    /// that holds it for a moment (which is waited for); otherwise the
    /// handle back.
    pub(crate) fn take_last(socket: Arc<Socket>) -> std::result::Result<Socket, Arc<Socket>> {
        let _taking = LENDING.write().unwrap_or_else(PoisonError::into_inner);
        Arc::try_unwrap(socket)
    }

    /// Whether the peer's processes write rings to this end: then the
    /// socket alone is not all that comes in.
    pub(crate) fn has_rings(&self) -> bool {
        self.inbound().has_rings()
    }

    /// Reads and checks the peer's greeting if it is still to come before
    /// the first message, within `wait`.
    #[inline]
    pub(crate) fn settle(&self, wait: Wait) -> Result<()> {
        match &self.peer {
            Peer::Greeting(pending) => pending.settle(self, wait),
            _ => Ok(()),
        }
    }

    /// Who is at the other end, as far as it can be known.
    pub(crate) fn peer_credentials(&self) -> Result<PeerCredentials> {
        match &self.peer {
            Peer::Recorded => PeerCredentials::of(self.as_fd()),
            Peer::Greeting(pending) => pending.credentials(self),
            Peer::Unknown(why) => Err(Error::UnknownPeer(why)),
        }
    }

    /// Encodes `message` and sends it as one datagram, waiting for room as
    /// `wait` allows: `Never` makes a full socket buffer `Error::Full`,
    /// `Until` makes it `Error::Timeout` at the deadline.
    pub(crate) fn send<T: Serialize + 'static>(&self, message: &T, wait: Wait) -> Result<()> {
        // A message that is a byte buffer travels as one byte string: the
        // bytes postcard writes for a sequence of `u8`, in one copy where
        // serde's `Vec<u8>` makes a call per byte.
        if let Some(bytes) = (message as &dyn Any).downcast_ref::<Vec<u8>>() {
            return with_buffer(&OUTBOX, Outbox::new, |outbox| {
                outbox.send(self, &bounded::ByteString(bytes), wait)
            });
        }
        with_buffer(&OUTBOX, Outbox::new, |outbox| {
            outbox.send(self, message, wait)
        })
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Held shared by every [`Socket::lend`], exclusively by
/// [`Socket::take_last`]: a `Select` that upgrades its weak handle for a
/// moment must not make a conversion into an `OwnedFd` fail.
static LENDING: RwLock<()> = RwLock::new(());

thread_local! {
    static OUTBOX: RefCell<Option<Outbox>> = const { RefCell::new(None) };
    static INBOX: RefCell<Option<Inbox>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's buffer, made on first use. A send or receive
/// made from inside another (a `Serialize` impl that sends) gets a fresh one.
#[inline]
fn with_buffer<B, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<B>>>,
    make: fn() -> B,
    f: impl FnOnce(&mut B) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(make)),
        Err(_) => f(&mut make()),
    })
}
