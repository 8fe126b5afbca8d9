//! One message over one connection: encode and send, receive and decode.
//!
//! `Sender`, `Receiver` and `Connection` are thin typed faces over
//! [`Socket`], which moves each message by one of two lanes:
//!
//! - the socket lane ([`socket`]): one `AF_UNIX` `SOCK_SEQPACKET`
//!   datagram per message, its descriptors in `SCM_RIGHTS`; bodies over
//!   [`INLINE_MAX`](crate::wire::INLINE_MAX) in a memfd ([`body`]), one of
//!   the socket's reusable [`pool`] when it has one free;
//! - the waits ([`wait`]) shared by both: how long a call may wait, and how
//!   it waits.
//!
//! Buffers are per thread and reused: a send encodes into a fixed buffer
//! and makes one `sendmsg`; a receive makes one `recvmsg` into a fixed
//! buffer.

pub(crate) mod body;
pub(crate) mod pool;
mod socket;
mod wait;

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bounded;
use crate::credentials::PeerCredentials;
use crate::error::{Error, Result};
use crate::handshake::Pending;
use crate::limits::Limits;
use crate::select::Memberships;
use crate::sys::socket as sys;

#[cfg(feature = "tokio")]
pub(crate) use socket::receive::LargeBody;
pub(crate) use socket::receive::{decode_datagram, Arrival};
pub(crate) use wait::{poll_timeout, wait_readable, Wait};

use pool::Pool;
use socket::receive::Inbox;
use socket::send::Outbox;

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
        }
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

    /// Reads and checks the peer's greeting if it is still to come before
    /// the first message, within `wait`.
    #[inline]
    pub(crate) fn settle(&self, wait: Wait) -> Result<()> {
        match &self.peer {
            Peer::Greeting(pending) => pending.settle(self, wait),
            _ => Ok(()),
        }
    }

    /// Whether a receive now would give a message or an error, for a
    /// `Select` that saw the socket readable: what the protocol sends
    /// besides messages (a spawned child's greeting) is read first.
    pub(crate) fn has_message(&self) -> bool {
        match &self.peer {
            Peer::Greeting(pending) => match pending.settle(self, Wait::Never) {
                Ok(()) => sys::readable_now(self.as_fd()),
                Err(Error::Empty) => false,
                Err(_) => true,
            },
            _ => true,
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

    /// Receives one datagram and decodes it as a `T`, within `limits`.
    #[inline]
    pub(crate) fn recv<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        wait: Wait,
    ) -> Result<T> {
        with_buffer(&INBOX, Inbox::new, |inbox| {
            inbox.recv(self.fd.as_fd(), limits, wait, None, false)
        })
        .and_then(Arrival::decoded)
    }

    /// Receives a message if one is queued; a body over 1 MiB comes back
    /// undecoded, for the caller to decode where it may take its time.
    pub(crate) fn try_recv_deferring<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
    ) -> Result<Arrival<T>> {
        with_buffer(&INBOX, Inbox::new, |inbox| {
            inbox.recv(self.fd.as_fd(), limits, Wait::Never, None, true)
        })
    }

    /// Receives as [`recv`](Socket::recv) does, and what the kernel
    /// attached about the sender (when this socket asked for it).
    pub(crate) fn recv_from<T: DeserializeOwned + 'static>(
        &self,
        limits: &Limits,
        wait: Wait,
        sender: &mut sys::Sender,
    ) -> Result<T> {
        with_buffer(&INBOX, Inbox::new, |inbox| {
            inbox.recv(self.fd.as_fd(), limits, wait, Some(sender), false)
        })
        .and_then(Arrival::decoded)
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
