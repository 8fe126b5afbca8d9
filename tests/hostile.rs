//! A hostile peer in another process writes datagrams that break the
//! protocol, with descriptors attached. Each one is refused with a clear
//! error, every descriptor that came with it is closed, and the next good
//! message still arrives.

mod support;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use ipc_core::{channel, Error, Fd, Limits, Receiver, Sender};
use nix::fcntl::SealFlag;
use support::{
    close_in_child, dev_nulls, fd_count, fork_child, header, inline_frame, memfd, send_raw, serial,
    turn_on, SO_PASSPIDFD,
};

/// The message type the receiver expects: a tag and some descriptors.
type Msg = (u8, Vec<Fd<OwnedFd>>);

/// What the receiver must say about a datagram.
type Expect = fn(&Error) -> bool;

fn decode(e: &Error) -> bool {
    matches!(e, Error::Decode(_))
}
fn descriptor(e: &Error) -> bool {
    matches!(e, Error::Descriptor(_))
}
fn too_large(e: &Error) -> bool {
    matches!(e, Error::TooLarge { .. })
}

/// Each hostile datagram and what the receiver says; `None`: it is no
/// message at all, skipped, and the next message arrives in its place.
const CASES: &[(&str, Option<Expect>)] = &[
    ("garbage bytes with three descriptors", Some(decode)),
    ("empty datagram", None),
    ("short header", Some(decode)),
    ("future wire version", Some(decode)),
    ("unknown body kind", Some(decode)),
    (
        "header counts two descriptors, three came",
        Some(descriptor),
    ),
    ("index out of range", Some(descriptor)),
    ("index used twice", Some(descriptor)),
    ("descriptor nothing names", Some(descriptor)),
    ("trailing bytes after the body", Some(decode)),
    ("body shorter than announced", Some(decode)),
    ("body cut inside a value", Some(decode)),
    ("datagram longer than the receive buffer", Some(decode)),
    (
        "more descriptors than the receiver's limit",
        Some(descriptor),
    ),
    ("inline body larger than the byte limit", Some(too_large)),
    ("out-of-line body of a terabyte", Some(too_large)),
    ("out-of-line body without its memfd", Some(descriptor)),
    ("out-of-line body in a plain file", Some(descriptor)),
    ("out-of-line body in an unsealed memfd", Some(descriptor)),
    (
        "out-of-line body in a memfd shorter than announced",
        Some(descriptor),
    ),
    ("out-of-line body with inline bytes too", Some(decode)),
    ("pooled body of a terabyte", Some(too_large)),
    ("pooled body without its memfd", Some(descriptor)),
    ("pooled body in a plain file", Some(descriptor)),
    (
        "pooled body in a memfd shorter than announced",
        Some(descriptor),
    ),
    ("pooled body that does not decode", Some(decode)),
    ("pooled body with inline bytes too", Some(decode)),
];

/// A memfd laid out as a sender's pool slot: the state word says lent, and
/// `body` starts at offset 4096.
fn pooled(body: &[u8]) -> OwnedFd {
    let fd = memfd(4096 + body.len() as i64, SealFlag::empty());
    nix::sys::uio::pwrite(&fd, &1u32.to_ne_bytes(), 0).unwrap();
    nix::sys::uio::pwrite(&fd, body, 4096).unwrap();
    fd
}

/// Builds hostile datagram `i` of `CASES`, in the sending process.
fn build(i: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let sealed = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    match i {
        0 => (
            (0..200u32).map(|b| (b * 31 % 256) as u8).collect(),
            dev_nulls(3),
        ),
        1 => (vec![], vec![]),
        2 => (header(0, 0, 0)[..9].to_vec(), dev_nulls(1)),
        3 => {
            let mut h = inline_frame(0, &[1, 0]);
            h[2] = 9;
            (h, vec![])
        }
        4 => (header(5, 0, 0), vec![]),
        5 => (inline_frame(2, &[1, 3, 0, 1, 2]), dev_nulls(3)),
        6 => (inline_frame(1, &[1, 1, 5]), dev_nulls(1)),
        7 => (inline_frame(2, &[1, 2, 0, 0]), dev_nulls(2)),
        8 => (inline_frame(2, &[1, 1, 0]), dev_nulls(2)),
        9 => (inline_frame(0, &[1, 0, 99, 98]), vec![]),
        10 => {
            let mut frame = header(0, 0, 10);
            frame.extend_from_slice(&[1, 0]);
            (frame, vec![])
        }
        11 => (inline_frame(1, &[1, 5, 0]), dev_nulls(1)),
        12 => (inline_frame(0, &vec![0; 70_000]), dev_nulls(2)),
        13 => (inline_frame(6, &[1, 6, 0, 1, 2, 3, 4, 5]), dev_nulls(6)),
        14 => (inline_frame(0, &[1; 2000]), vec![]),
        15 => (header(1, 1, 1 << 40), vec![memfd(4096, sealed)]),
        16 => (header(1, 0, 100), vec![]),
        17 => (header(1, 1, 3), dev_nulls(1)),
        18 => (header(1, 1, 3), vec![memfd(4096, SealFlag::empty())]),
        19 => (header(1, 1, 500), vec![memfd(100, sealed)]),
        20 => {
            let mut frame = header(1, 1, 3);
            frame.extend_from_slice(&[1, 0, 0]);
            (frame, vec![memfd(4096, sealed)])
        }
        21 => (header(2, 1, 1 << 40), vec![pooled(&[1, 0])]),
        22 => (header(2, 0, 100), vec![]),
        23 => (header(2, 1, 3), dev_nulls(1)),
        24 => (header(2, 1, 500), vec![pooled(&[0; 100])]),
        25 => (header(2, 1, 3), vec![pooled(&[1, 0, 99])]),
        26 => {
            let mut frame = header(2, 1, 2);
            frame.extend_from_slice(&[1, 0]);
            (frame, vec![pooled(&[1, 0])])
        }
        _ => unreachable!(),
    }
}

#[test]
fn every_protocol_violation_is_refused_and_closes_what_came() {
    let _serial = serial();
    let (tx, mut rx) = channel::<Msg>().unwrap();
    rx.set_limits(
        Limits::default()
            .with_max_descriptors(4)
            .with_max_bytes(1000),
    );
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&rx);
        let raw = tx.as_fd().try_clone_to_owned().unwrap();
        for (i, _) in CASES.iter().enumerate() {
            let (bytes, fds) = build(i);
            let raws: Vec<i32> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
            send_raw(&raw, &bytes, &raws);
            drop(fds);
            tx.send((i as u8, dev_nulls(1).into_iter().map(Fd::new).collect()))
                .unwrap();
        }
    });
    for (i, (name, expect)) in CASES.iter().enumerate() {
        if let Some(expect) = expect {
            let got = rx.recv();
            match &got {
                Err(e) if expect(e) => {
                    let text = e.to_string();
                    assert!(text.len() > 20, "{name}: the error says little: {text}");
                }
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
            assert_eq!(fd_count(), before, "{name}: a descriptor leaked");
        }
        let (tag, fds) = rx.recv().unwrap_or_else(|e| panic!("after {name}: {e}"));
        assert_eq!(
            tag as usize, i,
            "after {name}: the next good message arrives"
        );
        assert_eq!(fds.len(), 1);
        drop(fds);
        assert_eq!(fd_count(), before, "{name}: a descriptor leaked");
    }
    child.join();
}

#[test]
fn a_channel_end_that_is_not_a_seqpacket_socket_is_refused() {
    let _serial = serial();
    let (tx, rx) = channel::<Sender<u8>>().unwrap();
    let raw = OwnedFd::try_from(tx).unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&rx);
        // A regular file where a Sender should be.
        let file = dev_nulls(1);
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[std::os::fd::AsRawFd::as_raw_fd(&file[0])],
        );
        // A stream socket where a Sender should be.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[std::os::fd::AsRawFd::as_raw_fd(&a)],
        );
        // A listening seqpacket socket, and one never connected: every
        // receive on them would fail at once.
        let name = format!("@ipc-core-hostile-listen-{}", std::process::id());
        let listening = ipc_core::Listener::<u8, u8>::bind(&name).unwrap();
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[listening.as_fd().as_raw_fd()],
        );
        let unconnected = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[std::os::fd::AsRawFd::as_raw_fd(&unconnected)],
        );
        // A real channel end.
        let (good, _keep) = channel::<u8>().unwrap();
        let good = OwnedFd::try_from(good).unwrap();
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[std::os::fd::AsRawFd::as_raw_fd(&good)],
        );
    });
    for _ in 0..4 {
        match rx.recv() {
            Err(Error::Descriptor(why)) => assert!(why.contains("SOCK_SEQPACKET"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(fd_count(), before);
    }
    let sender = rx.recv().unwrap();
    drop(sender);
    child.join();
    assert_eq!(fd_count(), before);
}

/// A pooled body goes back to its sender whatever the receiver makes of it:
/// a refused message must not keep a slot of the sender's pool lent forever.
#[test]
fn a_refused_pooled_body_is_still_handed_back() {
    let _serial = serial();
    let (tx, mut rx) = channel::<Msg>().unwrap();
    rx.set_limits(Limits::default().with_max_bytes(1000));
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    for (name, frame, body) in [
        (
            "a body that does not decode",
            header(2, 1, 3),
            vec![9, 9, 9],
        ),
        (
            "a body over the byte limit",
            header(2, 1, 2000),
            vec![0; 2000],
        ),
        (
            "a body shorter than announced",
            header(2, 1, 500),
            vec![0; 100],
        ),
    ] {
        let slot = pooled(&body);
        send_raw(&raw, &frame, &[slot.as_raw_fd()]);
        assert!(rx.recv().is_err(), "{name} was accepted");
        let mut word = [0xff; 4];
        nix::sys::uio::pread(&slot, &mut word, 0).unwrap();
        assert_eq!(
            u32::from_ne_bytes(word),
            0,
            "{name}: the slot is still lent"
        );
        drop(slot);
        assert_eq!(fd_count(), before, "{name}: a descriptor leaked");
    }
}

/// A peer hands over a channel end whose socket it told the kernel to
/// attach credentials and a pidfd to every datagram: the pidfds are closed
/// as they come, and a message with the most descriptors still fits.
#[test]
fn control_messages_a_peer_turns_on_leak_nothing_and_take_no_room() {
    let _serial = serial();
    let (carrier_tx, carrier_rx) = channel::<Receiver<Msg>>().unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&carrier_rx);
        let (tx, rx) = channel::<Msg>().unwrap();
        turn_on(&rx, nix::libc::SO_PASSCRED);
        turn_on(&rx, SO_PASSPIDFD);
        carrier_tx.send(rx).unwrap();
        // Every message a datagram on that socket (tests/ring.rs does the
        // same to a ring's private socket).
        tx.set_ring_lane(false);
        for i in 0..100 {
            tx.send((i, vec![])).unwrap();
        }
        let most = Limits::MAX_DESCRIPTORS;
        tx.send((100, dev_nulls(most).into_iter().map(Fd::new).collect()))
            .unwrap();
        tx.send((101, dev_nulls(most - 1).into_iter().map(Fd::new).collect()))
            .unwrap();
    });
    let rx = carrier_rx.recv().unwrap();
    let with_receiver = fd_count();
    assert_eq!(with_receiver, before + 1);
    for i in 0..100 {
        assert_eq!(rx.recv().unwrap().0, i);
    }
    assert_eq!(fd_count(), with_receiver, "a pidfd per message leaked");
    for (tag, count) in [
        (100, Limits::MAX_DESCRIPTORS),
        (101, Limits::MAX_DESCRIPTORS - 1),
    ] {
        let (got, fds) = rx
            .recv()
            .unwrap_or_else(|e| panic!("{count} descriptors: {e}"));
        assert_eq!((got, fds.len()), (tag, count));
        drop(fds);
        assert_eq!(fd_count(), with_receiver);
    }
    child.join();
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    drop(rx);
    assert_eq!(fd_count(), before);
}
