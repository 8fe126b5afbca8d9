//! A hostile peer's tools against the ring lane: raw channel ends, offers
//! made by hand, and honest messages to show a channel goes on.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use ipc_core::{channel, Receiver};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::{header, inline_frame, send_raw};

/// The size of a ring: a header page and 2,048 slots of 128 bytes.
pub const RING_LEN: usize = (512 + 2048 * 16) * 8;

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair, close-on-exec.
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// An offer datagram (kind 3) with `memory` and `private` attached.
pub fn offer_raw(socket: &OwnedFd, memory: BorrowedFd<'_>, private: BorrowedFd<'_>) {
    send_raw(
        socket,
        &header(3, 2, 0),
        &[memory.as_raw_fd(), private.as_raw_fd()],
    );
}

/// A channel whose sending end the test writes raw datagrams to.
pub fn raw_channel() -> (OwnedFd, Receiver<u64>) {
    let (tx, rx) = channel::<u64>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    drop(tx);
    (raw, rx)
}

/// An honest message on the socket, to show the channel goes on.
pub fn send_inline(raw: &OwnedFd, value: u64) {
    send_raw(
        raw,
        &inline_frame(0, &postcard::to_allocvec(&value).unwrap()),
        &[],
    );
}
