//! The socket lane, sending: a message encoded into one datagram, its
//! descriptors collected as it is encoded; a body too large for the
//! datagram written into a memfd, pooled or sealed, sent as the first
//! descriptor.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;
use serde::Serialize;

use super::super::body;
use super::super::pool::{self, Claim};
use super::super::ring::Outbound;
use super::super::wait::{ready_within, wait_for, Backoff, Wait};
use super::super::Socket;
use crate::error::{Error, Result};
use crate::sidecar;
use crate::sys::socket::{self, MAX_FDS};
use crate::wire::{Body, Header, DATAGRAM_MAX, HEADER_LEN};

/// The send side's reusable buffers.
pub(crate) struct Outbox {
    datagram: Box<[u8]>,
    fds: Vec<RawFd>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            datagram: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            // Room for the most a datagram carries: sends never allocate.
            fds: Vec::with_capacity(MAX_FDS),
        }
    }

    pub(crate) fn send<T: Serialize + ?Sized>(
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
                let body = &datagram[HEADER_LEN..];
                let record = self.fds.is_empty().then_some(body);
                deliver(socket, datagram, &self.fds, record, wait)
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
        deliver(socket, &self.datagram[..HEADER_LEN], &self.fds, None, wait)
    }
}

/// Sends one datagram on the lane this process is on with `socket`: the
/// socket itself, or, with a ring active, the ring's private socket and a
/// placeholder record after it. A message without descriptors whose body
/// (`record`) fits a ring record goes into the ring instead.
///
/// Nothing waits while it holds the lane's lock: a full ring or private
/// socket lets go of it, waits, and tries again, and a send on the socket
/// itself goes without it (counted in flight, so that the ring is not
/// taken into use under it). A `try_send`, or an async send on a runtime
/// thread, so never waits behind another thread's blocked send.
fn deliver(
    socket: &Socket,
    datagram: &[u8],
    fds: &[RawFd],
    record: Option<&[u8]>,
    wait: Wait,
) -> Result<()> {
    let main = socket.as_fd();
    let mut backoff = Backoff::new();
    loop {
        let mut outbound = socket.outbound();
        match deliver_now(socket, &mut outbound, datagram, fds, record) {
            Step::Done(result) => return result,
            Step::Socket => {
                socket.in_flight.fetch_add(1, Ordering::SeqCst);
                drop(outbound);
                let sent = transmit(main, datagram, fds, wait);
                socket.in_flight.fetch_sub(1, Ordering::SeqCst);
                sent?;
                if socket.ring_enabled() {
                    let fits = record.is_some_and(super::super::ring::fits);
                    socket.outbound().sent_on_socket(main, fits);
                }
                return Ok(());
            }
            Step::Full if outbound.reader_gone() => {
                // Nothing will make room: the socket says whether the
                // receiving end is gone too.
                outbound.lost();
                continue;
            }
            Step::Full => {}
        }
        drop(outbound);
        if !backoff.sleep_within(wait) {
            return Err(match wait {
                Wait::Never => Error::Full,
                _ => Error::Timeout,
            });
        }
    }
}

/// What [`deliver_now`] did.
enum Step {
    /// Sent, or failed for good.
    Done(Result<()>),
    /// The socket lane: the caller sends on the socket.
    Socket,
    /// The ring, or its private socket, has no room now.
    Full,
}

/// One try of [`deliver`] under the lane's lock, waiting for nothing.
fn deliver_now(
    socket: &Socket,
    outbound: &mut Outbound,
    datagram: &[u8],
    fds: &[RawFd],
    record: Option<&[u8]>,
) -> Step {
    let main = socket.as_fd();
    let in_flight = socket.in_flight.load(Ordering::SeqCst);
    // Even with the ring lane turned off, a ring in use stays in use: a
    // message on the socket could overtake its records.
    if let Some(body) = record {
        match outbound.push(main, body, in_flight) {
            Ok(true) => return Step::Done(Ok(())),
            Ok(false) => {}
            Err(Error::Full) => return Step::Full,
            Err(e) => return Step::Done(Err(e)),
        }
    }
    match outbound.route(main, in_flight) {
        Ok(false) => return Step::Socket,
        Ok(true) => {}
        Err(Error::Full) => return Step::Full,
        Err(e) => return Step::Done(Err(e)),
    }
    let sent = match outbound.private() {
        Some(private) => transmit(private, datagram, fds, Wait::Never),
        None => Err(Error::Disconnected),
    };
    match sent {
        // The datagram and its placeholder together, under the lock: each
        // placeholder stands for the next datagram on the private socket.
        Ok(()) => Step::Done(outbound.placeholder(main)),
        Err(Error::Full) => Step::Full,
        // Nothing reads the ring any more: the socket says whether the
        // receiving end is gone too.
        Err(Error::Disconnected) => {
            outbound.lost();
            Step::Socket
        }
        Err(e) => Step::Done(Err(e)),
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
        match socket.unread_bytes() {
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
    match socket.unread_bytes() {
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

fn encode_error(e: postcard::Error) -> Error {
    match e {
        postcard::Error::SerdeSerCustom => Error::Encode(
            "a Serialize impl in the message failed (a descriptor serialized outside its message, or a custom error)".into(),
        ),
        e => Error::Encode(e.to_string()),
    }
}
