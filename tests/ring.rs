//! The ring lane across processes: messages without descriptors go
//! through a ring in shared memory once a sending process has offered one,
//! and what a receiver sees is what the socket lane would give it: every
//! message once, each sender's in order, the end of the channel after a
//! sender's last message. A peer that offers or writes a ring as no sender
//! does gets a clear error, and the channel goes on.

mod support;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, Fd, IpcMessage, Limits, Receiver, Select};
use nix::fcntl::SealFlag;
use support::ring::{offer_raw, raw_channel, send_inline, seqpacket_pair, RING_LEN};
use support::{
    close_in_child, dev_nulls, fd_count, fds_naming, fork_child, header, inline_frame,
    queued_bytes, send_raw, serial,
};

/// A message of one of several senders: who, and its number.
#[derive(IpcMessage, Debug)]
struct Tagged {
    sender: u32,
    seq: u32,
    /// Some messages carry a descriptor: they go on the private socket.
    fd: Option<OwnedFd>,
    /// Some carry a body too large for a record.
    blob: Vec<u8>,
}

fn tagged(sender: u32, seq: u32) -> Tagged {
    Tagged {
        sender,
        seq,
        fd: (seq % 97 == 0).then(|| dev_nulls(1).remove(0)),
        blob: if seq % 89 == 0 {
            vec![seq as u8; 20_000]
        } else {
            Vec::new()
        },
    }
}

/// Checks that `got` is the next message of its sender, as `tagged` made it.
fn check_next(next: &mut [u32], got: &Tagged) {
    let sender = got.sender as usize;
    assert_eq!(got.seq, next[sender], "sender {sender} out of order");
    assert_eq!(got.fd.is_some(), got.seq % 97 == 0);
    if got.seq % 89 == 0 {
        assert_eq!(got.blob, vec![got.seq as u8; 20_000]);
    } else {
        assert!(got.blob.is_empty());
    }
    next[sender] += 1;
}

/// Once a ring is in use, small messages do not touch the socket: a
/// hundred of them queued leave the socket (nearly) empty.
#[test]
fn records_go_through_memory_and_not_the_socket() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u64>().unwrap();
    // On whatever lane the process runs the rest of the suite on.
    tx.set_ring_lane(true);
    let (go_tx, go_rx) = channel::<()>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&go_tx);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        // The parent has read the first three, and taken the ring up.
        go_rx.recv().unwrap();
        for i in 3..103 {
            tx.send(i).unwrap();
        }
        go_rx.recv().unwrap();
    });
    drop((tx, go_rx));
    for i in 0..3 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    assert_eq!(fds_naming("ipc-core-ring"), 1, "the child's ring, taken up");
    go_tx.send(()).unwrap();
    // The hundred are in the ring; a doorbell may be on the socket.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        queued_bytes(&rx) <= 16,
        "{} bytes on the socket",
        queued_bytes(&rx)
    );
    for i in 3..103 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    go_tx.send(()).unwrap();
    child.join();
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    drop((rx, go_tx));
    assert_eq!(fd_count(), before);
}

/// Several sending processes at once, each message either a record, or a
/// datagram on the private socket (a descriptor, or a body too large),
/// or on the socket before the ring is in use: each sender's come in its
/// order, the descriptors whole, and nothing is left open after.
#[test]
fn several_senders_keep_their_order_across_the_lanes() {
    let _serial = serial();
    const SENDERS: u32 = 3;
    const EACH: u32 = 5000;
    let before = fd_count();
    let (tx, rx) = channel::<Tagged>().unwrap();
    let children: Vec<_> = (0..SENDERS)
        .map(|sender| {
            fork_child(|| {
                close_in_child(&rx);
                for seq in 0..EACH {
                    tx.send(tagged(sender, seq)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = vec![0; SENDERS as usize];
    for _ in 0..SENDERS * EACH {
        check_next(&mut next, &rx.recv().unwrap());
    }
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    for c in children {
        c.join();
    }
    assert!(next.iter().all(|&n| n == EACH));
    drop(rx);
    assert_eq!(fd_count(), before);
}

/// Threads sharing one receiver take each message once, from the rings
/// and the socket alike, under contention.
#[test]
fn threads_sharing_a_receiver_take_each_record_once() {
    let _serial = serial();
    const TOTAL: u64 = 40_000;
    let (tx, rx) = channel::<u64>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0..TOTAL {
            tx.send(i).unwrap();
        }
    });
    drop(tx);
    let rx = std::sync::Arc::new(rx);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match rx.recv() {
                        Ok(i) => got.push(i),
                        Err(Error::Disconnected) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    child.join();
    all.sort_unstable();
    assert_eq!(all, (0..TOTAL).collect::<Vec<_>>());
}

/// A sender forks while its ring is in use: the child writes a ring of its
/// own, and the receiver sees both processes' messages, each in order.
#[test]
fn a_forked_sender_writes_a_ring_of_its_own() {
    let _serial = serial();
    const EACH: u32 = 3000;
    let (tx, rx) = channel::<Tagged>().unwrap();
    let (go_tx, go_rx) = channel::<()>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&go_tx);
        for seq in 0..10 {
            tx.send(tagged(0, seq)).unwrap();
        }
        go_rx.recv().unwrap();
        let grandchild = fork_child(|| {
            for seq in 0..EACH {
                tx.send(tagged(1, seq)).unwrap();
            }
        });
        for seq in 10..EACH {
            tx.send(tagged(0, seq)).unwrap();
        }
        grandchild.join();
    });
    drop((tx, go_rx));
    let mut next = vec![0; 2];
    for _ in 0..10 {
        check_next(&mut next, &rx.recv().unwrap());
    }
    go_tx.send(()).unwrap();
    for _ in 10..2 * EACH {
        check_next(&mut next, &rx.recv().unwrap());
    }
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    child.join();
}

/// A sender killed mid-stream: what it wrote before is read, in order, then
/// the end of the channel; its ring is closed with it.
#[test]
fn a_sender_killed_mid_stream_leaves_an_ordered_prefix_then_the_end() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u64>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0.. {
            tx.send(i).unwrap();
        }
    });
    drop(tx);
    for i in 0..10_000 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    child.kill();
    let mut next = 10_000;
    loop {
        match rx.recv() {
            Ok(i) => {
                assert_eq!(i, next);
                next += 1;
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    drop(rx);
    assert_eq!(fd_count(), before);
}

/// A receiving end read from a ring travels inside a message: its new
/// holder reads what the sender wrote before and after, in order.
#[test]
fn a_receiver_with_rings_travels_and_loses_nothing() {
    let _serial = serial();
    let (tx, rx) = channel::<u64>().unwrap();
    // On whatever lane the process runs the rest of the suite on.
    tx.set_ring_lane(true);
    let (carrier_tx, carrier_rx) = channel::<Receiver<u64>>().unwrap();
    let (go_tx, go_rx) = channel::<()>().unwrap();
    let sender = fork_child(|| {
        close_in_child(&rx);
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        go_rx.recv().unwrap();
        for i in 100..5000 {
            tx.send(i).unwrap();
        }
    });
    drop((tx, go_rx));
    for i in 0..50 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    let reader = fork_child(|| {
        close_in_child(&carrier_tx);
        let rx = carrier_rx.recv().unwrap();
        for i in 50..5000 {
            assert_eq!(rx.recv().unwrap(), i);
        }
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    });
    drop(carrier_rx);
    assert!(fds_naming("ipc-core-ring") >= 1);
    // Records still in the ring go with it.
    carrier_tx.send(rx).unwrap();
    go_tx.send(()).unwrap();
    drop(go_tx);
    sender.join();
    reader.join();
    assert_eq!(fds_naming("ipc-core-ring"), 0);
}

/// `max_rings(0)` keeps a receiver on the socket lane, and
/// `set_ring_lane(false)` a sender; `max_rings(1)` reads one ring, and the
/// other senders stay on the socket.
#[test]
fn the_ring_lane_is_bounded_and_can_be_turned_off() {
    let _serial = serial();
    let run = |senders: u32, max_rings: usize, lane: bool| {
        let (tx, mut rx) = channel::<Tagged>().unwrap();
        rx.set_limits(Limits::default().with_max_rings(max_rings));
        tx.set_ring_lane(lane);
        let children: Vec<_> = (0..senders)
            .map(|sender| {
                fork_child(|| {
                    close_in_child(&rx);
                    for seq in 0..2000 {
                        tx.send(tagged(sender, seq)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = vec![0; senders as usize];
        let mut rings = 0;
        for _ in 0..senders * 2000 {
            check_next(&mut next, &rx.recv().unwrap());
            rings = rings.max(fds_naming("ipc-core-ring"));
        }
        for c in children {
            c.join();
        }
        rings
    };
    assert_eq!(run(2, 0, true), 0);
    assert_eq!(run(2, 16, false), 0);
    assert_eq!(run(3, 1, true), 1);
    assert!(run(3, 16, true) >= 2);
}

/// A `Select` reports a receiver whose ring holds records, though its
/// socket holds nothing, and is woken by the next record: bursts with
/// pauses between, none lost or late past the test's patience.
#[test]
fn select_sees_records_and_is_woken_by_them() {
    let _serial = serial();
    const BURSTS: u64 = 200;
    let (tx, rx) = channel::<u64>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for burst in 0..BURSTS {
            for i in 0..burst % 7 + 1 {
                tx.send(burst * 100 + i).unwrap();
            }
            if burst % 3 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    drop(tx);
    let mut select = Select::new().unwrap();
    select.register(&rx, 7).unwrap();
    let mut expected = (0..BURSTS).flat_map(|b| (0..b % 7 + 1).map(move |i| b * 100 + i));
    loop {
        let ready = select.wait(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(ready, [7]);
        // One at a time: what is left in the ring must be reported again.
        match rx.try_recv() {
            Ok(i) => assert_eq!(Some(i), expected.next()),
            Err(Error::Disconnected) => break,
            Err(Error::Empty) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(expected.next(), None);
    child.join();
}

/// A ring laid out by hand, as a hostile peer would, in a memfd the test
/// writes through `pwrite` while the receiver has it mapped.
struct HandRing {
    memory: File,
    /// The sender's end of the private socket.
    private: OwnedFd,
    position: u64,
}

impl HandRing {
    /// Lays out a ring and offers it on `socket`.
    fn offer(socket: &OwnedFd) -> HandRing {
        HandRing::offer_with(socket, |_| {})
    }

    /// Lays out a ring and offers it on `socket`, after `prepare` has had
    /// the receiver's end of the private socket.
    fn offer_with(socket: &OwnedFd, prepare: impl FnOnce(&OwnedFd)) -> HandRing {
        let memory = File::from(support::memfd(RING_LEN as i64, SealFlag::empty()));
        let set = |index: usize, value: u64| {
            memory
                .write_all_at(&value.to_le_bytes(), index as u64 * 8)
                .unwrap()
        };
        set(1, 2048);
        for position in 0..2048 {
            set(512 + position * 16, position as u64);
        }
        set(0, u64::from_le_bytes(*b"icring01"));
        seal_size(&memory);
        let (private, theirs) = seqpacket_pair();
        prepare(&theirs);
        offer_raw(socket, memory.as_fd(), theirs.as_fd());
        HandRing {
            memory,
            private,
            position: 0,
        }
    }

    fn word(&self, index: usize) -> u64 {
        let mut bytes = [0u8; 8];
        self.memory
            .read_exact_at(&mut bytes, index as u64 * 8)
            .unwrap();
        u64::from_le_bytes(bytes)
    }

    fn set_word(&self, index: usize, value: u64) {
        self.memory
            .write_all_at(&value.to_le_bytes(), index as u64 * 8)
            .unwrap();
    }

    /// Publishes a one-slot record of `kind` holding `body`.
    fn push(&mut self, kind: u32, len: u64, body: &[u8]) {
        let slot = 512 + (self.position % 2048) as usize * 16;
        self.set_word(slot + 1, u64::from(kind) << 32 | len);
        self.memory
            .write_all_at(body, (slot as u64 + 2) * 8)
            .unwrap();
        self.set_word(slot, self.position + 1);
        self.position += 1;
    }
}

fn seal_size(memory: &File) {
    nix::fcntl::fcntl(
        memory.as_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK),
    )
    .unwrap();
}

/// Offers no receiver may take up are refused with an error that says
/// why, their descriptors closed, and the channel goes on.
#[test]
fn offers_that_are_no_ring_are_refused_and_the_channel_goes_on() {
    let _serial = serial();
    let before = fd_count();
    let (raw, rx) = raw_channel();
    let sized = |len: i64, seals: SealFlag| support::memfd(len, seals);
    let size = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    let (_ours, theirs) = seqpacket_pair();
    let (pipe_read, _pipe_write) = nix::unistd::pipe().unwrap();
    let stream = OwnedFd::from(std::os::unix::net::UnixStream::pair().unwrap().0);
    let zeroed = sized(RING_LEN as i64, size);
    let cases: Vec<(&str, OwnedFd, std::os::fd::BorrowedFd<'_>)> = vec![
        ("too small", sized(4096, size), theirs.as_fd()),
        (
            "unsealed",
            sized(RING_LEN as i64, SealFlag::empty()),
            theirs.as_fd(),
        ),
        ("no header", zeroed, theirs.as_fd()),
        (
            "a pipe for the socket",
            sized(RING_LEN as i64, size),
            pipe_read.as_fd(),
        ),
        (
            "a stream socket",
            sized(RING_LEN as i64, size),
            stream.as_fd(),
        ),
    ];
    for (n, (what, memory, private)) in cases.into_iter().enumerate() {
        offer_raw(&raw, memory.as_fd(), private);
        drop(memory);
        send_inline(&raw, n as u64);
        match rx.recv() {
            Err(Error::Descriptor(why)) => assert!(!why.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(rx.recv().unwrap(), n as u64, "{what}");
    }
    // An offer with one descriptor, and one with none.
    let memory = sized(RING_LEN as i64, size);
    send_raw(&raw, &header(3, 1, 0), &[memory.as_raw_fd()]);
    send_raw(&raw, &header(3, 2, 0), &[]);
    send_inline(&raw, 99);
    let mut errors = 0;
    loop {
        match rx.recv() {
            Ok(99) => break,
            Ok(other) => panic!("{other}"),
            Err(Error::Disconnected) => panic!("the channel ended"),
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 2);
    drop((memory, theirs, pipe_read, stream, _ours, _pipe_write));
    assert_eq!(fds_naming("memfd:test"), 0);
    drop((raw, rx));
    assert_eq!(fd_count(), before);
}

/// A ring laid out by hand is taken up, and its records read: the test's
/// ring is a ring as the receiver knows it.
#[test]
fn a_hand_made_ring_is_read() {
    let _serial = serial();
    let (raw, rx) = raw_channel();
    let mut ring = HandRing::offer(&raw);
    send_inline(&raw, 1);
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(ring.word(40), 1, "accepted");
    let body = postcard::to_allocvec(&77u64).unwrap();
    ring.push(1, body.len() as u64, &body);
    assert_eq!(rx.recv().unwrap(), 77);
}

/// Records no sender writes: an unknown kind, a length past the largest
/// body, a body that does not decode. Each is an error that says so; a
/// broken ring is closed (its private socket hangs up, telling the sender),
/// and the socket goes on.
#[test]
fn a_ring_written_as_no_sender_does_is_closed_and_the_channel_goes_on() {
    let _serial = serial();
    let before = fd_count();
    let (raw, rx) = raw_channel();
    for (what, kind, len) in [("kind", 9u32, 8u64), ("length", 1, 1 << 20)] {
        let mut ring = HandRing::offer(&raw);
        send_inline(&raw, 1);
        assert_eq!(rx.recv().unwrap(), 1);
        ring.push(kind, len, &[0xff; 8]);
        match rx.recv() {
            Err(Error::Decode(why)) => assert!(why.contains("ring"), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(support::is_hung_up(&ring.private), "{what}");
        send_inline(&raw, 2);
        assert_eq!(rx.recv().unwrap(), 2);
    }
    // Garbage that is a well-formed record: a decode error, the ring kept.
    let mut ring = HandRing::offer(&raw);
    send_inline(&raw, 1);
    assert_eq!(rx.recv().unwrap(), 1);
    ring.push(1, 3, &[0xff, 0xff, 0xff]);
    assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    let body = postcard::to_allocvec(&5u64).unwrap();
    ring.push(1, body.len() as u64, &body);
    assert_eq!(rx.recv().unwrap(), 5);
    // A placeholder with nothing on the private socket.
    ring.push(2, 0, &[]);
    assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    drop((ring, raw, rx));
    assert_eq!(fd_count(), before);
}

/// A ring's private socket that asks the kernel for the sender's pidfd and
/// credentials (the peer made it, and set the options before handing it
/// over): what the kernel attaches is closed, the message comes whole.
#[test]
fn a_private_socket_asking_for_pidfds_leaks_nothing() {
    let _serial = serial();
    let before = fd_count();
    let (raw, rx_plain) = raw_channel();
    drop(rx_plain);
    let (tx, rx) = channel::<(u32, Vec<Fd<OwnedFd>>)>().unwrap();
    let raw_tx = tx.as_fd().try_clone_to_owned().unwrap();
    drop(tx);
    drop(raw);
    let mut ring = HandRing::offer_with(&raw_tx, |theirs| {
        support::turn_on(theirs, support::SO_PASSPIDFD);
        support::turn_on(theirs, nix::libc::SO_PASSCRED);
    });
    send_raw(
        &raw_tx,
        &inline_frame(0, &postcard::to_allocvec(&(0u32, 0u8)).unwrap()),
        &[],
    );
    assert_eq!(rx.recv().unwrap().0, 0);
    for i in 1..50u32 {
        // A message with two descriptors on the private socket, and its
        // placeholder.
        let nulls = dev_nulls(2);
        let body = postcard::to_allocvec(&(i, vec![0u32, 1])).unwrap();
        send_raw(
            &ring.private,
            &inline_frame(2, &body),
            &[nulls[0].as_raw_fd(), nulls[1].as_raw_fd()],
        );
        ring.push(2, 0, &[]);
        let (n, fds) = rx.recv().unwrap();
        assert_eq!((n, fds.len()), (i, 2));
    }
    drop((ring, raw_tx, rx));
    assert_eq!(fd_count(), before);
}

/// A sender that keeps moving its ring's head and flipping its first slot
/// makes the ring look ready and never give a record: the receiver closes
/// the ring or naps, and does not spin for as long as the peer likes.
#[test]
fn a_ring_that_teases_does_not_keep_the_receiver_busy() {
    let _serial = serial();
    let (raw, rx) = raw_channel();
    let ring = HandRing::offer(&raw);
    send_inline(&raw, 1);
    assert_eq!(rx.recv().unwrap(), 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let teaser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut head = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A span of two whose second slot never comes, at a head
                // that moves.
                let slot = 512 + (head % 2048) as usize * 16;
                ring.set_word(slot + 1, 1 << 32 | 200);
                ring.set_word(slot, head + 1);
                head += 1;
                ring.set_word(16, head);
            }
            ring
        })
    };
    let cpu = support::thread_cpu();
    let start = Instant::now();
    let got = rx.recv_timeout(Duration::from_millis(500));
    let used = support::thread_cpu() - cpu;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ring = teaser.join().unwrap();
    assert!(
        matches!(got, Err(Error::Timeout | Error::Decode(_))),
        "{got:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        used < Duration::from_millis(250),
        "the receive used {used:?} of CPU"
    );
    drop(ring);
    send_inline(&raw, 2);
    loop {
        match rx.recv() {
            Ok(2) => break,
            Ok(other) => panic!("{other}"),
            Err(Error::Decode(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// A thread blocked in `send` on a full ring (its receiver stopped
/// reading) holds nothing another thread's `try_send` waits for: that one
/// comes back at once, `Full`; and once the receiver reads again, every
/// message arrives in order.
#[test]
fn a_send_blocked_on_a_full_ring_does_not_hold_up_try_send() {
    let _serial = serial();
    const TOTAL: u64 = 20_000;
    let (tx, rx) = channel::<u64>().unwrap();
    tx.set_ring_lane(true);
    let (ready_tx, ready_rx) = channel::<()>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        close_in_child(&ready_rx);
        for i in 0..3 {
            assert_eq!(rx.recv().unwrap(), i);
        }
        ready_tx.send(()).unwrap();
        // Stalled, while the parent's ring fills.
        std::thread::sleep(Duration::from_secs(2));
        let mut next = 3;
        loop {
            match rx.recv() {
                Ok(u64::MAX) => {}
                Ok(i) => {
                    assert_eq!(i, next);
                    next += 1;
                }
                Err(Error::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(next, TOTAL);
    });
    drop((rx, ready_tx));
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    ready_rx.recv().unwrap();
    let blocked = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 3..TOTAL {
                tx.send(i).unwrap();
            }
        })
    };
    // The ring is full long before this.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let tried = tx.try_send(u64::MAX);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "try_send waited {:?} behind the blocked send",
        start.elapsed()
    );
    assert!(
        matches!(tried, Err(ref e) if matches!(e.error(), Error::Full)),
        "{tried:?}"
    );
    blocked.join().unwrap();
    drop(tx);
    child.join();
}
