//! The socket lane, receiving: one datagram and its descriptors, owned at
//! once; the header, the body (inline, or copied or mapped out of a memfd)
//! and every descriptor checked before the value is decoded.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;
use serde::de::DeserializeOwned;

use super::super::body;
use super::super::pool;
use super::super::wait::{readable, wait_for, Wait};
use crate::bounded;
use crate::disposal;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::sidecar::{self, Failure};
use crate::sys::mmap::ReadMap;
use crate::sys::socket::{self, Received, MAX_FDS};
use crate::wire::{Body, Header, DATAGRAM_MAX, HEADER_LEN};

/// The receive side's reusable buffers.
pub(crate) struct Inbox {
    datagram: Box<[u8]>,
    fds: Vec<OwnedFd>,
    slots: Vec<Option<OwnedFd>>,
    /// Bodies up to `body::COPY_MAX` are copied here, made on first use.
    spill: Vec<u8>,
    /// Ring records are copied here before they are decoded.
    pub(crate) record: Vec<u8>,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        // Learn what a memfd looks like while descriptors are to be had,
        // before one arrives to be checked (see `sealing::check`).
        crate::sealing::learn_memfd_device();
        Inbox {
            datagram: vec![0; DATAGRAM_MAX].into_boxed_slice(),
            // Room for the most a datagram carries: receives never allocate.
            fds: Vec::with_capacity(MAX_FDS),
            slots: Vec::with_capacity(MAX_FDS),
            spill: Vec::new(),
            // Room for the largest record: a receive never grows it.
            record: Vec::with_capacity(super::super::ring::slots::MAX_BODY),
        }
    }

    /// Lets go of every descriptor the last datagram brought.
    pub(crate) fn discard(&mut self) {
        disposal::discard_all(self.fds.drain(..));
    }

    #[inline]
    pub(crate) fn recv<T: DeserializeOwned + 'static>(
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
            // Whatever the decode did not take is closed, on every path,
            // and never in a close the peer can make wait.
            disposal::discard_all(self.fds.drain(..));
            return result;
        }
    }

    /// Receives one datagram from `socket` without waiting, to be decoded
    /// by [`finish`](Inbox::finish): the message a ring's placeholder stands
    /// for, read while the rings are locked and decoded after.
    pub(crate) fn receive_only(&mut self, socket: BorrowedFd<'_>, room: usize) -> Result<Received> {
        self.fds.clear();
        self.receive(socket, room.min(MAX_FDS), Wait::Never, None)
    }

    /// What the datagram just received is, by its header: `None` when it
    /// has no header to tell.
    pub(crate) fn kind(&self, received: &Received) -> Option<Body> {
        Header::parse(&self.datagram[..received.len])
            .ok()
            .map(|h| h.body)
    }

    /// Keeps the datagram just received, with its descriptors, for a later
    /// receive to decode ([`unstash`](Inbox::unstash)).
    pub(crate) fn stash(&mut self, received: Received) -> Stashed {
        Stashed {
            datagram: self.datagram[..received.len].to_vec(),
            fds: self.fds.drain(..).collect(),
            received,
        }
    }

    /// Puts a kept datagram back in the buffers, to [`finish`](Inbox::finish).
    pub(crate) fn unstash(&mut self, stashed: Stashed) -> Received {
        let Stashed {
            datagram,
            fds,
            received,
        } = stashed;
        self.datagram[..datagram.len()].copy_from_slice(&datagram);
        self.fds.clear();
        self.fds.extend(fds);
        received
    }

    /// Decodes what [`receive_only`](Inbox::receive_only) received.
    pub(crate) fn finish<T: DeserializeOwned + 'static>(
        &mut self,
        received: Received,
        limits: &Limits,
        defer: bool,
    ) -> Result<Arrival<T>> {
        let result = self.decode(received, limits, defer);
        self.fds.clear();
        result
    }

    /// Decodes a ring record's body, copied into [`record`](Inbox::record).
    pub(crate) fn decode_record<T: DeserializeOwned + 'static>(
        &mut self,
        limits: &Limits,
    ) -> Result<Arrival<T>> {
        if self.record.len() as u64 > limits.max_bytes() {
            return Err(Error::TooLarge {
                len: self.record.len() as u64,
                max: limits.max_bytes(),
            });
        }
        self.fds.clear();
        decode_body(&self.record, &mut self.fds, &mut self.slots, limits).map(Arrival::Message)
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
                // The peer closed with datagrams of ours unread: the kernel
                // says so once, before what the peer sent is read. What it
                // sent is still queued, then the end of the stream.
                Err(Errno::ECONNRESET) => continue,
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
            Body::RingOffer => {
                check_out_of_line(datagram.len())?;
                if self.fds.len() != 2 {
                    return Err(refused::fd_count(2, self.fds.len()));
                }
                let private = self.fds.remove(1);
                let ring = self.fds.remove(0);
                Ok(Arrival::Offer { ring, private })
            }
            Body::Wake => {
                check_out_of_line(datagram.len())?;
                if !self.fds.is_empty() {
                    return Err(refused::fd_count(0, self.fds.len()));
                }
                Ok(Arrival::Wake)
            }
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
                let result = self.out_of_line(&memfd, &header, limits, defer);
                // Whatever the peer sent in the memfd's place.
                disposal::discard(memfd);
                result
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
    /// Decodes a body sent out of line in `memfd`.
    fn out_of_line<T: DeserializeOwned + 'static>(
        &mut self,
        memfd: &OwnedFd,
        header: &Header,
        limits: &Limits,
        defer: bool,
    ) -> Result<Arrival<T>> {
        check_len(header, limits)?;
        check_own_count(self.fds.len(), limits)?;
        let len = body::check(memfd, header.body_len)?;
        if len <= body::COPY_MAX {
            let spill = spill(&mut self.spill, len);
            body::read_copied(memfd, 0, spill)?;
            decode_body(spill, &mut self.fds, &mut self.slots, limits).map(Arrival::Message)
        } else {
            // Read from a mapping: every page must be there, or reading a
            // hole would make this process pay for it.
            body::check_allocated(memfd, len)?;
            let map = body::map(memfd, len)?;
            if defer {
                return Ok(self.defer(Held::Mapped(map), limits));
            }
            decode_body(map.bytes(), &mut self.fds, &mut self.slots, limits).map(Arrival::Message)
        }
    }

    /// A large body to decode elsewhere, with the message's descriptors.
    fn defer<T>(&mut self, body: Held, limits: &Limits) -> Arrival<T> {
        Arrival::Large(LargeBody {
            body,
            fds: self.fds.drain(..).collect(),
            limits: *limits,
        })
    }
}

/// A datagram received and not decoded yet, with its descriptors: what a
/// `Select` took off the socket when it was after something else.
#[derive(Debug)]
pub(crate) struct Stashed {
    datagram: Vec<u8>,
    fds: Vec<OwnedFd>,
    received: Received,
}

/// What a receive gives: a message, or (when the caller asked for it) a
/// large body still to be decoded; from the socket lane, also what is no
/// message but the ring lane's (an offer, a doorbell), for the connection
/// to act on.
#[derive(Debug)]
pub(crate) enum Arrival<T> {
    Message(T),
    Large(LargeBody),
    /// A sending process offers its ring and private socket.
    Offer {
        ring: OwnedFd,
        private: OwnedFd,
    },
    /// A ring's doorbell: records wait in a ring.
    Wake,
}

impl<T: DeserializeOwned + 'static> Arrival<T> {
    /// The message, decoding a large body here.
    #[inline]
    pub(crate) fn decoded(self) -> Result<T> {
        match self {
            Arrival::Message(message) => Ok(message),
            Arrival::Large(body) => body.decode(),
            Arrival::Offer { .. } | Arrival::Wake => Err(Error::Decode(
                "a ring offer or doorbell came where a message was due".into(),
            )),
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

impl Drop for LargeBody {
    /// Closes the descriptors no decode took (one never made, say: the
    /// task that received the body was cancelled).
    fn drop(&mut self) {
        disposal::discard_all(self.fds.drain(..));
    }
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
    if inbox.fds.len() > room {
        disposal::discard_all(inbox.fds.drain(room..));
    }
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
    disposal::discard_all(inbox.fds.drain(..));
    result
}
