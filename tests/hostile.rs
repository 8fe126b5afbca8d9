//! A hostile peer in another process writes datagrams that break the
//! protocol, with descriptors attached. Each one is refused with a clear
//! error, every descriptor that came with it is closed, and the next good
//! message still arrives.

mod support;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use ipc_core::{channel, Error, Fd, Limits, Sender};
use nix::fcntl::SealFlag;
use support::{
    close_in_child, dev_nulls, fd_count, fork_child, header, inline_frame, memfd, send_raw, serial,
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

const CASES: &[(&str, Expect)] = &[
    ("garbage bytes with three descriptors", decode),
    ("empty datagram", decode),
    ("short header", decode),
    ("future wire version", decode),
    ("unknown body kind", decode),
    ("header counts two descriptors, three came", descriptor),
    ("index out of range", descriptor),
    ("index used twice", descriptor),
    ("descriptor nothing names", descriptor),
    ("trailing bytes after the body", decode),
    ("body shorter than announced", decode),
    ("body cut inside a value", decode),
    ("datagram longer than the receive buffer", decode),
    ("more descriptors than the receiver's limit", descriptor),
    ("inline body larger than the byte limit", too_large),
    ("out-of-line body of a terabyte", too_large),
    ("out-of-line body without its memfd", descriptor),
    ("out-of-line body in a plain file", descriptor),
    ("out-of-line body in an unsealed memfd", descriptor),
    (
        "out-of-line body in a memfd shorter than announced",
        descriptor,
    ),
    ("out-of-line body with inline bytes too", decode),
    ("pooled body of a terabyte", too_large),
    ("pooled body without its memfd", descriptor),
    ("pooled body in a plain file", descriptor),
    ("pooled body in a memfd shorter than announced", descriptor),
    ("pooled body that does not decode", decode),
    ("pooled body with inline bytes too", decode),
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
        let got = rx.recv();
        match &got {
            Err(e) if expect(e) => {
                let text = e.to_string();
                assert!(text.len() > 20, "{name}: the error says little: {text}");
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert_eq!(fd_count(), before, "{name}: a descriptor leaked");
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
        // A real channel end.
        let (good, _keep) = channel::<u8>().unwrap();
        let good = OwnedFd::try_from(good).unwrap();
        send_raw(
            &raw,
            &inline_frame(1, &[0]),
            &[std::os::fd::AsRawFd::as_raw_fd(&good)],
        );
    });
    for _ in 0..2 {
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
