//! One message over one socket: encode and send, receive and decode.
//!
//! `Sender`, `Receiver` and `Connection` are thin typed faces over
//! [`Socket`]. Buffers are per thread and reused: a send encodes into a fixed
//! buffer and makes one `sendmsg`; a receive makes one `recvmsg` into a fixed
//! buffer. Bodies over [`INLINE_MAX`](crate::wire::INLINE_MAX) go through
//! a memfd: one of the socket's reusable [`Pool`] when it has one free, a
//! fresh sealed one otherwise.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::body;
use crate::bounded;
use crate::credentials::PeerCredentials;
use crate::error::{Error, Result};
use crate::handshake::Pending;
use crate::limits::Limits;
use crate::pool::{self, Claim, Pool};
use crate::sidecar::{self, Failure};
use crate::sys::mmap::ReadMap;
use crate::sys::socket::{self, Received, MAX_FDS};
use crate::wire::{Body, Header, DATAGRAM_MAX, HEADER_LEN};

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until a message or the end of the channel.
    Forever,
    /// Not at all: `Error::Empty` when nothing is queued.
    Never,
    /// Until the deadline: `Error::Timeout` then.
    Until(Instant),
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` socket that speaks this protocol.
#[derive(Debug)]
pub(crate) struct Socket {
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
            fd,
            pool: Pool::default(),
            sealed_in_flight: AtomicUsize::new(0),
            peer,
        }
    }

    pub(crate) fn pair() -> Result<(Socket, Socket)> {
        let (a, b) = socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
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

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
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
                Ok(()) => socket::readable_now(self.as_fd()),
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
        sender: &mut socket::Sender,
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

/// The send side's reusable buffers.
struct Outbox {
    datagram: Box<[u8]>,
    fds: Vec<RawFd>,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            datagram: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            // Room for the most a datagram carries: sends never allocate.
            fds: Vec::with_capacity(MAX_FDS),
        }
    }

    fn send<T: Serialize + ?Sized>(
        &mut self,
        socket: &Socket,
        message: &T,
        wait: Wait,
    ) -> Result<()> {
        let (head, space) = self.datagram.split_at_mut(HEADER_LEN);
        let inline = sidecar::collect(&mut self.fds, || {
            postcard::to_slice(message, space).map(|body| body.len())
        });
        match inline {
            Ok(body_len) => {
                check_count(self.fds.len(), MAX_FDS)?;
                let header = Header {
                    body: Body::Inline,
                    fds: self.fds.len() as u32,
                    body_len: body_len as u64,
                };
                header.write(head_array(head));
                let datagram = &self.datagram[..HEADER_LEN + body_len];
                transmit(socket.as_fd(), datagram, &self.fds, wait)
            }
            Err(postcard::Error::SerializeBufferFull) => {
                self.send_out_of_line(socket, message, wait)
            }
            Err(e) => Err(encode_error(e)),
        }
    }

    /// Sends a body too large for the datagram in a memfd: a slot of the
    /// socket's pool when one is free and the body fits it, a fresh sealed
    /// memfd otherwise.
    fn send_out_of_line<T: Serialize + ?Sized>(
        &mut self,
        socket: &Socket,
        message: &T,
        wait: Wait,
    ) -> Result<()> {
        // Measure first: the size picks the path, and a message with too
        // many descriptors fails before any body is written.
        let size = sidecar::collect(&mut self.fds, || {
            postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default())
        })
        .map_err(encode_error)?;
        // The body's memfd takes one place in the sidecar.
        check_count(self.fds.len() + 1, MAX_FDS)?;
        let mut claim = socket.pool.claim(size);
        if matches!(claim, Claim::Busy) && !matches!(wait, Wait::Never) {
            claim = wait_for_slot(socket, size, wait);
        }
        if let Claim::Lease(lease) = claim {
            let fds = &mut self.fds;
            let written = lease.write_with(size, |room| {
                sidecar::collect(fds, || {
                    postcard::to_slice(message, room).map(|body| body.len())
                })
            })?;
            match written {
                Ok(body_len) => {
                    lease.wrote(body_len);
                    self.transmit_body(socket, Body::Pooled, body_len, lease.fd(), wait)?;
                    // The receiver frees the slot once it has copied the body.
                    lease.sent();
                    return Ok(());
                }
                // The message grew between the passes (a Serialize impl
                // that is not deterministic): stream it instead.
                Err(postcard::Error::SerializeBufferFull) => {}
                Err(e) => return Err(encode_error(e)),
            }
        }
        // A send that must not wait finds out before it writes the body; a
        // blocking one writes first, so that the body is filled while the
        // receiver reads the one before.
        if matches!(wait, Wait::Never) && !may_send_sealed(socket, size) {
            return Err(Error::Full);
        }
        let memfd = body::create()?;
        let body_len = self.stream(message, memfd.as_fd())?;
        body::seal(memfd.as_fd())?;
        wait_to_send_sealed(socket, body_len, wait)?;
        self.transmit_body(socket, Body::OutOfLine, body_len, memfd.as_fd(), wait)?;
        socket
            .sealed_in_flight
            .fetch_add(body_len, Ordering::Relaxed);
        Ok(())
        // The peer has its own reference now; ours closes here.
    }

    /// Streams `message` into `memfd`, staged in the datagram buffer (free
    /// now), collecting its descriptors; returns its length.
    fn stream<T: Serialize + ?Sized>(
        &mut self,
        message: &T,
        memfd: BorrowedFd<'_>,
    ) -> Result<usize> {
        let failed = Cell::new(None);
        let stage = &mut self.datagram[HEADER_LEN..];
        let stream = body::Stream::new(memfd, stage, &failed);
        let streamed = sidecar::collect(&mut self.fds, || {
            postcard::serialize_with_flavor(message, stream)
        });
        streamed.map_err(|e| match failed.take() {
            Some(errno) => Error::io("pwrite", errno),
            None => encode_error(e),
        })
    }

    /// Sends the header of a body in `memfd`, after the message's own
    /// descriptors.
    fn transmit_body(
        &mut self,
        socket: &Socket,
        body: Body,
        body_len: usize,
        memfd: BorrowedFd<'_>,
        wait: Wait,
    ) -> Result<()> {
        check_count(self.fds.len() + 1, MAX_FDS)?;
        // First, so that it arrives even where the receiver's control
        // buffer is too small for the rest, and goes back to this side.
        self.fds.insert(0, memfd.as_raw_fd());
        let head = head_array(&mut self.datagram[..HEADER_LEN]);
        Header {
            body,
            fds: self.fds.len() as u32,
            body_len: body_len as u64,
        }
        .write(head);
        transmit(
            socket.as_fd(),
            &self.datagram[..HEADER_LEN],
            &self.fds,
            wait,
        )
    }
}

/// Every slot of the pool that could take a body is lent. While messages
/// this side sent are still unread, the receiver is behind: wait for it to
/// hand a slot back, as a send into a full socket waits for room, so that
/// a sender far ahead keeps no more than the pool's budget in flight.
/// Once nothing is unread, a slot still lent is kept by a receiver that
/// does not hand back (or is mid-copy): stop waiting, the body goes in a
/// fresh sealed memfd.
///
/// A send with a deadline stops waiting at it: its body goes in a fresh
/// sealed memfd, which waits on in turn (see [`wait_to_send_sealed`]).
fn wait_for_slot(socket: &Socket, size: usize, wait: Wait) -> Claim {
    let mut backoff = Backoff::new();
    loop {
        match socket::unread_bytes(socket.as_fd()) {
            Ok(0) | Err(_) => return Claim::Never,
            Ok(_) => {}
        }
        if !backoff.sleep_within(wait) {
            return Claim::Never;
        }
        match socket.pool.claim(size) {
            Claim::Busy => continue,
            claim => return claim,
        }
    }
}

/// A sealed body is about to go. Every one the receiver has not read yet
/// pins its pages, and the socket buffer holds about 278 datagrams: 278
/// bodies of 256 MiB would be 70 GiB. So while earlier datagrams of this
/// side are unread and the sealed bodies sent since this side last saw
/// them all read would pass the pool's budget with this one, a blocking
/// send waits, as for room in a full socket, and one that must not wait
/// is `Full`. The first sealed body after the queue was seen empty always
/// goes, however large, so a thread that sends a large body to a channel
/// it reads itself is held up only at the second.
fn may_send_sealed(socket: &Socket, size: usize) -> bool {
    match socket::unread_bytes(socket.as_fd()) {
        Ok(0) | Err(_) => {
            socket.sealed_in_flight.store(0, Ordering::Relaxed);
            true
        }
        Ok(_) => {
            let in_flight = socket.sealed_in_flight.load(Ordering::Relaxed);
            in_flight == 0 || in_flight.saturating_add(size) <= pool::BUDGET
        }
    }
}

/// Waits until [`may_send_sealed`], as `wait` allows: for ever, or until
/// the deadline (then `Error::Timeout`). A send that must not wait has
/// checked before it wrote the body.
fn wait_to_send_sealed(socket: &Socket, size: usize, wait: Wait) -> Result<()> {
    if matches!(wait, Wait::Never) {
        return Ok(());
    }
    let mut backoff = Backoff::new();
    while !may_send_sealed(socket, size) {
        if !backoff.sleep_within(wait) {
            return Err(Error::Timeout);
        }
    }
    Ok(())
}

/// The pauses of a sender waiting on its receiver's progress, which no
/// descriptor signals: from 20 µs, doubling up to 1 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_micros(20))
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(1));
    }

    /// Sleeps the next pause, cut short at `wait`'s deadline; `false` once
    /// the deadline has passed (or `wait` is `Never`).
    fn sleep_within(&mut self, wait: Wait) -> bool {
        match wait {
            Wait::Forever => {
                self.sleep();
                true
            }
            Wait::Never => false,
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                std::thread::sleep(self.0.min(left));
                self.0 = (self.0 * 2).min(Duration::from_millis(1));
                true
            }
        }
    }
}

#[inline]
fn head_array(head: &mut [u8]) -> &mut [u8; HEADER_LEN] {
    head.first_chunk_mut::<HEADER_LEN>()
        .unwrap_or_else(|| unreachable!("the datagram buffer is longer than a header"))
}

#[inline]
fn check_count(count: usize, max: usize) -> Result<()> {
    if count > max {
        Err(Error::TooManyDescriptors { count, max })
    } else {
        Ok(())
    }
}

#[inline]
fn transmit(socket: BorrowedFd<'_>, datagram: &[u8], fds: &[RawFd], wait: Wait) -> Result<()> {
    // A send with a deadline never blocks in the kernel: it waits in poll.
    let dontwait = !matches!(wait, Wait::Forever);
    loop {
        match socket::send(socket, datagram, fds, dontwait) {
            Ok(()) => return Ok(()),
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                return Err(Error::Disconnected)
            }
            Err(Errno::EAGAIN) => match wait {
                // A socket adopted in non-blocking mode: wait as a blocking
                // send would.
                Wait::Forever => wait_for(socket, PollFlags::POLLOUT)?,
                Wait::Never => return Err(Error::Full),
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !ready_within(socket, PollFlags::POLLOUT, left)? {
                        return Err(Error::Timeout);
                    }
                }
            },
            Err(e) => return Err(Error::io("sendmsg", e)),
        }
    }
}

/// Waits with no time limit until `socket` has one of `events` (or an
/// error or hang-up, which the next call reports).
fn wait_for(socket: BorrowedFd<'_>, events: PollFlags) -> Result<()> {
    let mut fds = [PollFd::new(socket, events)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::io("poll", e)),
    }
}

fn encode_error(e: postcard::Error) -> Error {
    match e {
        postcard::Error::SerdeSerCustom => Error::Encode(
            "a Serialize impl in the message failed (a descriptor serialized outside its message, or a custom error)".into(),
        ),
        e => Error::Encode(e.to_string()),
    }
}

/// The receive side's reusable buffers.
struct Inbox {
    datagram: Box<[u8]>,
    fds: Vec<OwnedFd>,
    slots: Vec<Option<OwnedFd>>,
    /// Bodies up to `body::COPY_MAX` are copied here, made on first use.
    spill: Vec<u8>,
}

impl Inbox {
    fn new() -> Self {
        // Learn what a memfd looks like while descriptors are to be had,
        // before one arrives to be checked (see `sealing::check`).
        crate::sealing::learn_memfd_device();
        Inbox {
            datagram: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            // Room for the most a datagram carries: receives never allocate.
            fds: Vec::with_capacity(MAX_FDS),
            slots: Vec::with_capacity(MAX_FDS),
            spill: Vec::new(),
        }
    }

    #[inline]
    fn recv<T: DeserializeOwned + 'static>(
        &mut self,
        socket: BorrowedFd<'_>,
        limits: &Limits,
        wait: Wait,
        mut sender: Option<&mut socket::Sender>,
        defer: bool,
    ) -> Result<Arrival<T>> {
        // Room for the body's memfd besides the message's own descriptors.
        let room = limits.max_descriptors().saturating_add(1).min(MAX_FDS);
        loop {
            self.fds.clear();
            let received = self.receive(socket, room, wait, sender.as_deref_mut())?;
            if received.is_empty() && self.fds.is_empty() {
                // Not a message: the end of the stream, or an empty
                // datagram a peer sent, which must neither end the channel
                // nor hide the messages queued behind it.
                if socket::finished(socket) {
                    return Err(Error::Disconnected);
                }
                continue;
            }
            let result = self.decode(received, limits, defer);
            // Whatever the decode did not take is closed, on every path.
            self.fds.clear();
            return result;
        }
    }

    #[inline]
    fn receive(
        &mut self,
        socket: BorrowedFd<'_>,
        room: usize,
        wait: Wait,
        mut sender: Option<&mut socket::Sender>,
    ) -> Result<Received> {
        loop {
            let dontwait = match wait {
                Wait::Forever => false,
                Wait::Never => true,
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !readable(socket, left)? {
                        return Err(Error::Timeout);
                    }
                    true
                }
            };
            let sender = sender.as_deref_mut();
            match socket::recv(
                socket,
                &mut self.datagram,
                room,
                &mut self.fds,
                dontwait,
                sender,
            ) {
                Ok(received) => return Ok(received),
                Err(Errno::EAGAIN) => match wait {
                    Wait::Never => return Err(Error::Empty),
                    // A socket adopted in non-blocking mode: wait as a
                    // blocking receive would.
                    Wait::Forever => wait_for(socket, PollFlags::POLLIN)?,
                    // Another thread took the message poll saw: wait again.
                    Wait::Until(_) => continue,
                },
                Err(Errno::ECONNRESET) => return Err(Error::Disconnected),
                Err(e) => return Err(Error::io("recvmsg", e)),
            }
        }
    }

    /// Decodes the datagram in the buffer with the descriptors in `fds`.
    #[inline]
    /// With `defer`, a body over [`body::COPY_MAX`] is not decoded here but
    /// handed back with its descriptors, to be decoded where a decode may
    /// take its time.
    fn decode<T: DeserializeOwned + 'static>(
        &mut self,
        received: Received,
        limits: &Limits,
        defer: bool,
    ) -> Result<Arrival<T>> {
        let datagram = &self.datagram[..received.len];
        let header = Header::parse(datagram);
        // A pooled body's memfd goes back to its sender on every path from
        // here, refusals included. It is the first descriptor, so it is
        // there even when the rest did not fit.
        let lent = match header {
            Ok(Header {
                body: Body::Pooled, ..
            }) if !self.fds.is_empty() => Some(body::Lent::accept(self.fds.remove(0))),
            _ => None,
        };
        if received.control_truncated {
            return Err(refused::control_truncated(limits));
        }
        if received.truncated {
            return Err(refused::truncated());
        }
        let header = header.map_err(refused::header)?;
        let arrived = self.fds.len() + usize::from(lent.is_some());
        if header.fds as usize != arrived {
            return Err(refused::fd_count(header.fds, arrived));
        }
        match header.body {
            Body::Inline => {
                check_len(&header, limits)?;
                let body = &datagram[HEADER_LEN..];
                if body.len() as u64 != header.body_len {
                    return Err(refused::body_len(header.body_len, body.len()));
                }
                check_own_count(self.fds.len(), limits)?;
                decode_body(body, &mut self.fds, &mut self.slots, limits).map(Arrival::Message)
            }
            Body::OutOfLine => {
                check_out_of_line(datagram.len())?;
                if self.fds.is_empty() {
                    return Err(refused::no_memfd());
                }
                let memfd = self.fds.remove(0);
                check_len(&header, limits)?;
                check_own_count(self.fds.len(), limits)?;
                let len = body::check(&memfd, header.body_len)?;
                if len <= body::COPY_MAX {
                    let spill = spill(&mut self.spill, len);
                    body::read_copied(&memfd, 0, spill)?;
                    decode_body(spill, &mut self.fds, &mut self.slots, limits).map(Arrival::Message)
                } else {
                    // Read from a mapping: every page must be there, or
                    // reading a hole would make this process pay for it.
                    body::check_allocated(&memfd, len)?;
                    let map = body::map(&memfd, len)?;
                    if defer {
                        return Ok(self.defer(Held::Mapped(map), limits));
                    }
                    decode_body(map.bytes(), &mut self.fds, &mut self.slots, limits)
                        .map(Arrival::Message)
                }
            }
            Body::Pooled => {
                check_out_of_line(datagram.len())?;
                let lent = lent.ok_or_else(refused::no_memfd)??;
                check_len(&header, limits)?;
                if header.body_len > pool::POOL_BODY_MAX as u64 {
                    // Copied before it is decoded: without this bound a
                    // sparse memfd would cost its whole length in memory.
                    return Err(refused::pooled_too_large(header.body_len));
                }
                check_own_count(self.fds.len(), limits)?;
                let len = lent.check(header.body_len)?;
                if defer && len > body::COPY_MAX {
                    let mut copy = vec![0; len];
                    let copied = lent.read(&mut copy);
                    drop(lent);
                    return copied.map(|()| self.defer(Held::Owned(copy), limits));
                }
                let copied = lent.read(spill(&mut self.spill, len));
                drop(lent);
                // The spill stays within `POOL_BODY_MAX`, checked above.
                copied.and_then(|()| {
                    decode_body(&self.spill[..len], &mut self.fds, &mut self.slots, limits)
                        .map(Arrival::Message)
                })
            }
        }
    }
}

impl Inbox {
    /// A large body to decode elsewhere, with the message's descriptors.
    fn defer<T>(&mut self, body: Held, limits: &Limits) -> Arrival<T> {
        Arrival::Large(LargeBody {
            body,
            fds: self.fds.drain(..).collect(),
            limits: *limits,
        })
    }
}

/// What a receive gives: a message, or (when the caller asked for it) a
/// large body still to be decoded.
#[derive(Debug)]
pub(crate) enum Arrival<T> {
    Message(T),
    Large(LargeBody),
}

impl<T: DeserializeOwned + 'static> Arrival<T> {
    /// The message, decoding a large body here.
    #[inline]
    pub(crate) fn decoded(self) -> Result<T> {
        match self {
            Arrival::Message(message) => Ok(message),
            Arrival::Large(body) => body.decode(),
        }
    }
}

/// A received body over 1 MiB and the message's descriptors, owned, so
/// that an async receiver can decode it on a thread that may take its time
/// rather than on a runtime's thread.
#[derive(Debug)]
pub(crate) struct LargeBody {
    body: Held,
    fds: Vec<OwnedFd>,
    limits: Limits,
}

#[derive(Debug)]
enum Held {
    /// A sealed body, mapped read-only.
    Mapped(ReadMap),
    /// A pooled body, copied out.
    Owned(Vec<u8>),
}

impl LargeBody {
    /// Decodes the message; every descriptor it does not hold is closed.
    pub(crate) fn decode<T: DeserializeOwned + 'static>(mut self) -> Result<T> {
        let bytes = match &self.body {
            Held::Mapped(map) => map.bytes(),
            Held::Owned(copy) => copy,
        };
        decode_body(bytes, &mut self.fds, &mut Vec::new(), &self.limits)
    }
}

/// An out-of-line body's datagram holds the header alone.
fn check_out_of_line(datagram_len: usize) -> Result<()> {
    if datagram_len != HEADER_LEN {
        return Err(Error::Decode(
            "an out-of-line body came with inline bytes as well".into(),
        ));
    }
    Ok(())
}

/// The first `len` bytes of the spill buffer, grown (never below
/// `body::COPY_MAX`, so that small bodies do not grow it again and again).
fn spill(spill: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if spill.len() < len {
        spill.resize(len.max(body::COPY_MAX), 0);
    }
    &mut spill[..len]
}

#[inline]
fn check_len(header: &Header, limits: &Limits) -> Result<()> {
    if header.body_len > limits.max_bytes() {
        return Err(Error::TooLarge {
            len: header.body_len,
            max: limits.max_bytes(),
        });
    }
    Ok(())
}

#[inline]
fn check_own_count(count: usize, limits: &Limits) -> Result<()> {
    if count > limits.max_descriptors() {
        return Err(refused::too_many(count, limits));
    }
    Ok(())
}

/// The errors of a refused datagram, out of the receive path's way: the
/// formatting they do would otherwise sit in the code of every receive.
mod refused {
    use super::{Error, Limits, DATAGRAM_MAX};

    #[cold]
    pub(super) fn control_truncated(limits: &Limits) -> Error {
        Error::Descriptor(format!(
            "the peer attached more descriptors than this receiver accepts ({}), or this \
             process ran out of descriptors (RLIMIT_NOFILE); the message was dropped",
            limits.max_descriptors()
        ))
    }

    #[cold]
    pub(super) fn truncated() -> Error {
        Error::Decode(format!(
            "a datagram longer than {DATAGRAM_MAX} bytes was cut short; the peer does not \
             follow the protocol and the message was dropped"
        ))
    }

    #[cold]
    pub(super) fn no_memfd() -> Error {
        Error::Descriptor("an out-of-line body came without its memfd".into())
    }

    #[cold]
    pub(super) fn header(error: impl std::fmt::Display) -> Error {
        Error::Decode(error.to_string())
    }

    #[cold]
    pub(super) fn fd_count(announced: u32, arrived: usize) -> Error {
        Error::Descriptor(format!(
            "the header announces {announced} descriptors but {arrived} arrived"
        ))
    }

    #[cold]
    pub(super) fn body_len(announced: u64, arrived: usize) -> Error {
        Error::Decode(format!(
            "the header announces a body of {announced} bytes but {arrived} arrived"
        ))
    }

    #[cold]
    pub(super) fn pooled_too_large(len: u64) -> Error {
        Error::Decode(format!(
            "a pooled body of {len} bytes is larger than any sender pools ({} bytes); the \
             peer does not follow the protocol",
            super::pool::POOL_BODY_MAX
        ))
    }

    #[cold]
    pub(super) fn too_many(count: usize, limits: &Limits) -> Error {
        Error::Descriptor(format!(
            "the peer attached {count} descriptors but this receiver accepts at most {}",
            limits.max_descriptors()
        ))
    }
}

/// Decodes `body` exactly, with `fds` available by index; every descriptor
/// must be named exactly once.
#[inline]
fn decode_body<T: DeserializeOwned + 'static>(
    body: &[u8],
    fds: &mut Vec<OwnedFd>,
    slots: &mut Vec<Option<OwnedFd>>,
    limits: &Limits,
) -> Result<T> {
    slots.clear();
    if !fds.is_empty() {
        slots.extend(fds.drain(..).map(Some));
    }
    let decoded = sidecar::restore(slots, || bounded::from_bytes::<T>(body, limits));
    decoded.map_err(|failure| match failure {
        Failure::Fault(fault) => Error::Descriptor(fault.to_string()),
        Failure::Decode(why) => Error::Decode(why),
    })
}

/// `timeout` in poll's milliseconds, rounded up so that a wait never ends a
/// little before its deadline.
pub(crate) fn poll_timeout(timeout: Duration) -> PollTimeout {
    let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable (or hung up), at most `timeout` if given.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    match timeout {
        Some(timeout) => readable(fd, timeout),
        None => wait_for(fd, PollFlags::POLLIN).map(|()| true),
    }
}

/// Waits up to `timeout` for `socket` to be readable (or hung up).
fn readable(socket: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    ready_within(socket, PollFlags::POLLIN, timeout)
}

/// Waits up to `timeout` for `socket` to have one of `events` (or an error
/// or hang-up, which the next call reports).
fn ready_within(socket: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> Result<bool> {
    let timeout = poll_timeout(timeout);
    let mut fds = [PollFd::new(socket, events)];
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        // Let the caller look again and recompute what is left of its wait.
        Err(Errno::EINTR) => Ok(true),
        Err(e) => Err(Error::io("poll", e)),
    }
}

/// Decodes one datagram as a receiver would, without a socket: the entry
/// point of the fuzz targets and their regression tests. Every descriptor in
/// `fds` is closed unless the returned message holds it.
pub(crate) fn decode_datagram<T: DeserializeOwned + 'static>(
    datagram: &[u8],
    fds: Vec<OwnedFd>,
    limits: &Limits,
) -> Result<T> {
    let mut inbox = Inbox::new();
    let len = datagram.len().min(DATAGRAM_MAX);
    inbox.datagram[..len].copy_from_slice(&datagram[..len]);
    let room = limits.max_descriptors().saturating_add(1).min(MAX_FDS);
    let control_truncated = fds.len() > room;
    inbox.fds = fds;
    inbox.fds.truncate(room);
    let received = Received {
        len,
        truncated: datagram.len() > DATAGRAM_MAX,
        control_truncated,
    };
    let result = if received.is_empty() && inbox.fds.is_empty() {
        Err(Error::Decode("an empty datagram is not a message".into()))
    } else {
        inbox
            .decode(received, limits, false)
            .and_then(Arrival::decoded)
    };
    inbox.fds.clear();
    result
}
