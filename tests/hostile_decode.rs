//! A hostile peer in another process sends bodies that are well formed but
//! built to exhaust the decoder: values nested until the stack overflows
//! (by their count, or by the size of each level), sequences of zero-sized
//! elements that never end, empty datagrams and a half-closed socket. Each
//! is a clear error or the end of the channel, at once, with nothing
//! leaked, and honest messages still arrive.

mod support;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, IpcMessage, Limits, Select};
use nix::fcntl::SealFlag;
use nix::sys::socket::{shutdown, Shutdown};
use nix::sys::wait::{waitpid, WaitStatus};
use support::{
    close_in_child, fd_count, fork_child, header, inline_frame, memfd, send_raw, serial,
};

#[derive(IpcMessage, Debug, PartialEq)]
enum Tree {
    Leaf(u8),
    Node(Box<Tree>),
}

/// A body of `depth` nested `Node` tags and a leaf: what postcard would
/// write for a tree that deep, which no honest sender builds.
fn nested(depth: usize) -> Vec<u8> {
    let mut body = vec![1; depth];
    body.extend([0, 7]);
    body
}

/// A sealed memfd holding `body`, as an out-of-line body travels.
fn sealed_body(body: &[u8]) -> OwnedFd {
    let fd = memfd(0, SealFlag::empty());
    nix::sys::uio::pwrite(&fd, body, 0).unwrap();
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).unwrap();
    fd
}

/// Receives on a thread with the stack a tokio worker or a spawned thread
/// gets by default (2 MiB), where a recursion per byte of a 64 KiB body
/// overflows; the main thread's 8 MiB would hide it.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_deeply_nested_body_is_refused_on_a_small_stack() {
    let _serial = serial();
    let (tx, rx) = channel::<Tree>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&rx);
        // Inline: as deep as a datagram allows.
        send_raw(&raw, &inline_frame(0, &nested(65_000)), &[]);
        tx.send(Tree::Node(Box::new(Tree::Leaf(1)))).unwrap();
        // Out of line, copied: 1 MiB of tags.
        let body = nested(1 << 20);
        let fd = sealed_body(&body);
        send_raw(
            &raw,
            &header(1, 1, body.len() as u64),
            &[std::os::fd::AsRawFd::as_raw_fd(&fd)],
        );
        tx.send(Tree::Leaf(2)).unwrap();
        // Out of line, mapped: 3 MiB of tags.
        let body = nested(3 << 20);
        let fd = sealed_body(&body);
        send_raw(
            &raw,
            &header(1, 1, body.len() as u64),
            &[std::os::fd::AsRawFd::as_raw_fd(&fd)],
        );
        tx.send(Tree::Leaf(3)).unwrap();
    });
    let rx = on_small_stack(move || {
        for (what, next) in [
            ("inline", Tree::Node(Box::new(Tree::Leaf(1)))),
            ("copied", Tree::Leaf(2)),
            ("mapped", Tree::Leaf(3)),
        ] {
            match rx.recv() {
                Err(Error::Decode(why)) => assert!(why.contains("max_depth"), "{what}: {why}"),
                other => panic!("{what}: expected a depth refusal, got {other:?}"),
            }
            assert_eq!(rx.recv().unwrap(), next, "{what}: the next message");
        }
        rx
    });
    child.join();
    drop(rx);
    drop(raw);
    assert!(fd_count() <= before);
}

#[test]
fn the_depth_limit_is_the_receivers_to_set() {
    let _serial = serial();
    let (tx, mut rx) = channel::<Tree>().unwrap();
    let mut deep = Tree::Leaf(0);
    for _ in 0..200 {
        deep = Tree::Node(Box::new(deep));
    }
    tx.send(deep).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    rx.set_limits(Limits::default().with_max_depth(300));
    let mut deep = Tree::Leaf(0);
    for _ in 0..200 {
        deep = Tree::Node(Box::new(deep));
    }
    tx.send(deep).unwrap_or_else(|e| panic!("{e}"));
    let mut got = rx.recv().unwrap();
    let mut levels = 0;
    while let Tree::Node(inner) = got {
        got = *inner;
        levels += 1;
    }
    assert_eq!(levels, 200);
}

/// A batch of writes, each of a 4 KiB page: an ordinary recursive type
/// whose levels are large. The page is inline on purpose: each level of
/// the decode holds it on the stack.
#[allow(clippy::large_enum_variant)]
#[derive(IpcMessage, Debug)]
enum Command {
    Write { key: [u8; 32], page: [u8; 4096] },
    Batch(Vec<Command>),
}

/// The same with 16 KiB pages.
#[allow(clippy::large_enum_variant)]
#[derive(IpcMessage, Debug)]
enum BigCommand {
    Write { key: [u8; 32], page: [u8; 16384] },
    Batch(Vec<BigCommand>),
}

/// A body of `levels` nested one-element batches around one write: two
/// levels of nesting each (the enum and the Vec), so 60 of them are well
/// inside the default depth of 128.
fn nested_batches<T: serde::Serialize>(levels: usize, write: &T) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..levels {
        body.extend([1u8, 1]); // variant Batch, a Vec of one
    }
    body.extend(postcard::to_allocvec(write).unwrap());
    body
}

/// In a forked child (a stack overflow would take the whole test binary
/// down): receives `hostile` then `honest` as `T` on a thread with a
/// 2 MiB stack, asserts the first is refused for the stack it would take
/// and the second decoded, with no descriptor left behind.
fn refused_for_its_stack_in_child<T: IpcMessage + std::fmt::Debug + Send + 'static>(
    hostile: Vec<u8>,
    honest: Vec<u8>,
) {
    let child = fork_child(move || {
        let before = fd_count();
        let (tx, rx) = channel::<T>().unwrap();
        let raw = tx.as_fd().try_clone_to_owned().unwrap();
        send_raw(&raw, &inline_frame(0, &hostile), &[]);
        send_raw(&raw, &inline_frame(0, &honest), &[]);
        let rx = on_small_stack(move || {
            match rx.recv() {
                Err(Error::Decode(why)) => assert!(why.contains("Limits::max_stack"), "{why}"),
                other => panic!("expected a refusal for the stack, got {other:?}"),
            }
            rx.recv()
                .unwrap_or_else(|e| panic!("the honest message: {e}"));
            rx
        });
        drop((tx, rx, raw));
        assert_eq!(fd_count(), before);
    });
    match waitpid(child.pid(), None).unwrap() {
        WaitStatus::Exited(_, 0) => {}
        status => panic!("the receiving process ended with {status:?}"),
    }
}

/// The stack one level of nesting takes grows with the size of the value
/// at that level, so [`Limits::max_depth`] alone does not keep a 2 MiB
/// stack safe: 60 levels of a 4 KiB page (120 of the 128 allowed) would
/// overflow it. The decode also bounds the stack it takes
/// ([`Limits::max_stack`], 512 KiB): such a body is refused with a decode
/// error naming that limit, in debug and release builds, and a shallow
/// batch of the same type is decoded after it.
#[test]
fn a_nested_batch_of_pages_is_refused_for_its_stack_not_a_crash() {
    let _serial = serial();
    let write = Command::Write {
        key: [1; 32],
        page: [2; 4096],
    };
    refused_for_its_stack_in_child::<Command>(
        nested_batches(60, &write),
        nested_batches(2, &write),
    );
    let write = BigCommand::Write {
        key: [1; 32],
        page: [2; 16384],
    };
    refused_for_its_stack_in_child::<BigCommand>(
        nested_batches(40, &write),
        nested_batches(1, &write),
    );
}

/// The stack budget is the receiver's to set, as the depth is: a budget
/// too small for one level of pages refuses even a shallow batch.
#[test]
fn the_stack_budget_is_the_receivers_to_set() {
    let _serial = serial();
    let write = || Command::Write {
        key: [1; 32],
        page: [2; 4096],
    };
    let (tx, mut rx) = channel::<Command>().unwrap();
    rx.set_limits(Limits::default().with_max_stack(1024));
    tx.send(Command::Batch(vec![write()])).unwrap();
    match rx.recv() {
        Err(Error::Decode(why)) => assert!(why.contains("Limits::max_stack"), "{why}"),
        other => panic!("expected a refusal for the stack, got {other:?}"),
    }
    rx.set_limits(Limits::default());
    tx.send(Command::Batch(vec![Command::Batch(vec![write()])]))
        .unwrap();
    assert!(matches!(rx.recv().unwrap(), Command::Batch(_)));
}

#[test]
fn zero_sized_elements_cannot_spin_the_receiver() {
    let _serial = serial();
    let (tx, rx) = channel::<(Vec<()>, u8)>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        // 2^64 - 1 elements announced in 10 bytes, then the u8.
        let mut body = vec![0xff; 9];
        body.extend([0x01, 5]);
        send_raw(&raw, &inline_frame(0, &body), &[]);
        tx.send((vec![(); 3], 6)).unwrap();
    });
    let started = Instant::now();
    match rx.recv() {
        Err(Error::Decode(why)) => assert!(why.contains("max_zero_sized"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );
    assert_eq!(rx.recv().unwrap(), (vec![(); 3], 6));
    child.join();
}

#[test]
fn a_half_closed_peer_is_the_end_of_the_channel_for_every_receive() {
    let _serial = serial();
    let (tx, rx) = channel::<u32>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    let (go, wait) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&go);
        // An empty datagram ahead of real messages, one among them.
        send_raw(&raw, &[], &[]);
        tx.send(1).unwrap();
        send_raw(&raw, &[], &[]);
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        send_raw(&raw, &[], &[]);
        // Half-closed: the socket stays open in this process.
        shutdown(std::os::fd::AsRawFd::as_raw_fd(&raw), Shutdown::Write).unwrap();
        // Hold it open until the parent is done.
        let mut byte = [0];
        let _ = std::io::Read::read(&mut &wait, &mut byte);
    });
    let got: Vec<u32> = rx.iter().map(|m| m.unwrap()).collect();
    assert_eq!(got, [1, 2, 3], "every message, and then the end");
    for _ in 0..3 {
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        assert!(matches!(rx.try_recv(), Err(Error::Disconnected)));
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(Error::Disconnected)
        ));
    }
    let mut select = Select::new().unwrap();
    select.register(&rx, 7).unwrap();
    assert_eq!(select.wait(Some(Duration::from_secs(1))).unwrap(), [7]);
    assert!(matches!(rx.try_recv(), Err(Error::Disconnected)));
    drop(select);
    drop(go);
    child.join();
    drop(tx);
    drop(raw);
    drop(rx);
    assert!(fd_count() <= before);
}

#[test]
fn empty_datagrams_from_a_live_peer_are_skipped() {
    let _serial = serial();
    let (tx, rx) = channel::<u32>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    // As many as the socket buffer holds with no reader.
    for _ in 0..50 {
        send_raw(&raw, &[], &[]);
    }
    assert!(matches!(rx.try_recv(), Err(Error::Empty)));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    send_raw(&raw, &[], &[]);
    tx.send(9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
    drop(tx);
    drop(raw);
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
}
