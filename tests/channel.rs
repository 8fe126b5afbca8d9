//! Channels between real processes: ping-pong, disconnection, timeouts,
//! large bodies, many senders at once.

mod support;

use std::time::{Duration, Instant};

use ipc_core::{channel, Connection, Error, IpcMessage, Sender};
use support::{close_in_child, fd_count, fds_naming, fork_child, queued_when_sender_stops, serial};

#[test]
fn ping_pong_over_a_connection_between_processes() {
    let _serial = serial();
    let before = fd_count();
    let (parent, child_end) = Connection::<u64, u64>::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&parent);
        while let Ok(n) = child_end.recv() {
            child_end.send(n + 1).unwrap();
        }
    });
    drop(child_end);
    let mut n = 0;
    for _ in 0..2000 {
        parent.send(n).unwrap();
        let back = parent.recv().unwrap();
        assert_eq!(back, n + 1);
        n = back;
    }
    assert_eq!(n, 2000);
    drop(parent);
    child.join();
    assert_eq!(fd_count(), before);
}

#[test]
fn receiver_sees_disconnected_once_every_sender_is_gone() {
    let _serial = serial();
    let (tx, rx) = channel::<u32>().unwrap();
    let second = tx.clone();
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0..10 {
            second.send(i).unwrap();
        }
    });
    drop(second);
    // The child's copies are gone when it exits; ours still holds the channel open.
    child.join();
    tx.send(10).unwrap();
    for i in 0..=10 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    assert!(
        matches!(rx.try_recv(), Err(Error::Empty)),
        "a clone is still alive"
    );
    drop(tx);
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    assert!(matches!(rx.try_recv(), Err(Error::Disconnected)));
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
}

#[test]
fn sender_sees_disconnected_when_the_receiving_process_is_gone() {
    let _serial = serial();
    let (tx, rx) = channel::<ipc_core::Fd<std::fs::File>>().unwrap();
    // `rx` moves into the child; the parent's copy goes with the closure.
    let child = fork_child(move || drop(rx.recv().unwrap()));
    tx.send(ipc_core::Fd::new(std::fs::File::open("/dev/null").unwrap()))
        .unwrap();
    child.join();
    let file = ipc_core::Fd::new(std::fs::File::open("/dev/null").unwrap());
    let raw = std::os::fd::AsRawFd::as_raw_fd(&*file);
    let err = tx.send(file).unwrap_err();
    assert!(matches!(err.error(), Error::Disconnected), "{err:?}");
    let back = err.into_inner();
    assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&*back), raw);
    assert!(
        support::is_open(raw),
        "the returned message keeps its descriptor open"
    );
}

#[test]
fn recv_timeout_waits_and_then_says_timeout() {
    let _serial = serial();
    let (_tx, rx) = channel::<u8>().unwrap();
    let start = Instant::now();
    let got = rx.recv_timeout(Duration::from_millis(50));
    assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
    assert!(start.elapsed() >= Duration::from_millis(50));

    // A message sent by another process during the wait ends it.
    let (tx, rx) = channel::<u8>().unwrap();
    let child = fork_child(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(7).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 7);
    child.join();
}

#[test]
fn a_256_mib_message_crosses_processes_whole() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<(u64, Vec<u8>)>().unwrap();
    const LEN: usize = 256 << 20;
    let child = fork_child(move || {
        let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        tx.send((LEN as u64, body)).unwrap();
    });
    let (len, body) = rx.recv().unwrap();
    child.join();
    assert_eq!(len as usize, LEN);
    assert_eq!(body.len(), LEN);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(rx);
    assert_eq!(fd_count(), before);
}

#[test]
fn bodies_on_both_sides_of_the_inline_limit_arrive() {
    let _serial = serial();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    // Vec<u8> costs a varint length (3 bytes here) plus its bytes.
    for len in [
        0,
        1,
        65_530,
        65_532,
        65_533,
        65_534,
        65_536,
        70_000,
        1 << 20,
    ] {
        let body: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        tx.send(body.clone()).unwrap();
        assert_eq!(rx.recv().unwrap(), body, "length {len}");
    }
}

/// A message whose bytes say which message they belong to.
#[derive(IpcMessage, Debug)]
struct Numbered {
    n: u32,
    data: Vec<u8>,
}

impl Numbered {
    fn new(n: u32, len: usize) -> Self {
        let data = (0..len).map(|j| ((n as usize + j) % 251) as u8).collect();
        Numbered { n, data }
    }

    fn check(&self, len: usize) {
        assert_eq!(self.data.len(), len, "message {}", self.n);
        let intact = self.data.iter().enumerate();
        assert!(
            intact
                .into_iter()
                .all(|(j, &b)| b == ((self.n as usize + j) % 251) as u8),
            "message {} holds bytes of another",
            self.n
        );
    }
}

/// The memfds of a sender's pool, by the name it gives them.
const POOLED: &str = "ipc-core-pooled-body";
/// How many a socket's pool keeps at most.
const SLOTS: usize = 4;

#[test]
fn large_bodies_reuse_a_few_memfds_and_arrive_intact() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Numbered>().unwrap();
    let size = |n: u32| 70_000 + (n as usize * 37_000) % 2_000_000;
    let child = fork_child(|| {
        close_in_child(&rx);
        for n in 0..300 {
            tx.send(Numbered::new(n, size(n))).unwrap();
        }
        let pooled = fds_naming(POOLED);
        // A process exit code is all the parent sees.
        assert!((1..=4).contains(&pooled), "{pooled} pooled memfds");
    });
    drop(tx);
    for n in 0..300 {
        let message = rx.recv().unwrap();
        assert_eq!(message.n, n);
        message.check(size(n));
    }
    child.join();
    drop(rx);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_sender_running_ahead_never_overwrites_a_body_not_yet_read() {
    let _serial = serial();
    let (tx, rx) = channel::<Numbered>().unwrap();
    // More messages in flight than the pool has memfds: the rest travel in
    // sealed ones, and none is written over before it is read.
    // try_send: a blocking send would wait here for a memfd to come back.
    for n in 0..10 {
        tx.try_send(Numbered::new(n, 100_000)).unwrap();
    }
    let lent = fds_naming(POOLED);
    assert!((1..=4).contains(&lent), "{lent} pooled memfds");
    for n in 0..10 {
        let message = rx.recv().unwrap();
        assert_eq!(message.n, n);
        message.check(100_000);
    }
    // Every memfd was handed back: the next round makes no new one.
    for n in 10..20 {
        tx.send(Numbered::new(n, 100_000)).unwrap();
        rx.recv().unwrap().check(100_000);
    }
    assert_eq!(fds_naming(POOLED), lent, "the pool grew");
    drop(tx);
    assert_eq!(fds_naming(POOLED), 0, "the pool outlived its sender");
}

#[test]
fn a_blocking_sender_far_ahead_waits_for_its_receiver() {
    let _serial = serial();
    let (tx, rx) = channel::<Numbered>().unwrap();
    const MESSAGES: u32 = 12;
    let child = fork_child(|| {
        close_in_child(&rx);
        for n in 0..MESSAGES {
            tx.send(Numbered::new(n, 1 << 20)).unwrap();
        }
    });
    drop(tx);
    // The sender fills its pool (each message a 16-byte datagram and a
    // memfd), then waits: no fresh memfd per queued message.
    let full = SLOTS * 16;
    assert_eq!(
        queued_when_sender_stops(&rx, full),
        full,
        "the sender did not wait for its pool"
    );
    // Receiving hands the memfds back, and the sender goes on to the end.
    for n in 0..MESSAGES {
        let message = rx.recv().unwrap();
        assert_eq!(message.n, n);
        message.check(1 << 20);
    }
    child.join();
}

/// Past the pool's largest body: each goes in a fresh sealed memfd.
const HUGE: usize = 40 << 20;

#[test]
fn a_blocking_sender_of_bodies_past_the_pool_keeps_one_unread() {
    let _serial = serial();
    let (tx, rx) = channel::<Numbered>().unwrap();
    const MESSAGES: u32 = 3;
    let child = fork_child(|| {
        close_in_child(&rx);
        for n in 0..MESSAGES {
            tx.send(Numbered::new(n, HUGE)).unwrap();
        }
    });
    drop(tx);
    // One sealed body is queued; the next is written and waits for it to
    // be read, instead of pinning 40 MiB more per queued datagram.
    assert_eq!(
        queued_when_sender_stops(&rx, 16),
        16,
        "the sender did not wait"
    );
    for n in 0..MESSAGES {
        let message = rx.recv().unwrap();
        assert_eq!(message.n, n);
        message.check(HUGE);
    }
    child.join();
}

#[test]
fn try_send_of_a_body_past_the_pool_is_full_while_another_is_unread() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Numbered>().unwrap();
    tx.try_send(Numbered::new(0, HUGE)).unwrap();
    // A second would pin 40 MiB more while the first is unread.
    let refused = tx.try_send(Numbered::new(1, HUGE)).unwrap_err();
    assert!(matches!(refused.error(), Error::Full), "{refused:?}");
    let back = refused.into_inner();
    assert_eq!(back.n, 1);
    // Read, the first frees the way.
    rx.recv().unwrap().check(HUGE);
    tx.try_send(back).unwrap();
    rx.recv().unwrap().check(HUGE);
    drop((tx, rx));
    assert_eq!(fd_count(), before);
}

#[test]
fn a_thread_can_send_itself_a_body_past_the_pool_behind_unread_messages() {
    let _serial = serial();
    let (tx, rx) = channel::<Numbered>().unwrap();
    tx.send(Numbered::new(0, 10)).unwrap();
    // The first sealed body goes whatever is unread: this does not wait
    // for a receive that only this thread could make.
    tx.send(Numbered::new(1, HUGE)).unwrap();
    rx.recv().unwrap().check(10);
    let huge = rx.recv().unwrap();
    assert_eq!(huge.n, 1);
    huge.check(HUGE);
}

#[test]
fn processes_that_share_a_sender_after_fork_never_write_one_memfd_at_once() {
    let _serial = serial();
    let (tx, rx) = channel::<Numbered>().unwrap();
    // The pool has a free memfd before the fork: every child inherits it.
    tx.send(Numbered::new(0, 100_000)).unwrap();
    rx.recv().unwrap().check(100_000);
    const CHILDREN: u32 = 3;
    const EACH: u32 = 200;
    let children: Vec<_> = (0..CHILDREN)
        .map(|c| {
            let tx = tx.clone();
            let rx = &rx;
            fork_child(move || {
                // So that a child blocked on a full socket sees the parent go.
                close_in_child(rx);
                for i in 0..EACH {
                    let n = c * EACH + i;
                    tx.send(Numbered::new(n, 80_000 + (n as usize % 7) * 10_000))
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut seen = vec![false; (CHILDREN * EACH) as usize];
    for _ in 0..CHILDREN * EACH {
        let message = rx.recv().unwrap();
        message.check(80_000 + (message.n as usize % 7) * 10_000);
        assert!(!std::mem::replace(&mut seen[message.n as usize], true));
    }
    for child in children {
        child.join();
    }
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
}

#[test]
fn four_threads_sending_at_once_keep_per_sender_order() {
    let _serial = serial();
    const PER_THREAD: u32 = 5000;
    let (tx, rx) = channel::<(u8, u32, Vec<u8>)>().unwrap();
    let child = fork_child(move || {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let tx: Sender<_> = tx.clone();
                std::thread::spawn(move || {
                    for seq in 0..PER_THREAD {
                        // Vary the size so datagrams differ; some go out of line.
                        let pad = if seq % 1000 == 0 {
                            100_000
                        } else {
                            (seq % 64) as usize
                        };
                        tx.send((t, seq, vec![t; pad])).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
    });
    let mut next = [0u32; 4];
    for _ in 0..4 * PER_THREAD {
        let (t, seq, pad) = rx.recv().unwrap();
        assert_eq!(seq, next[t as usize], "thread {t} out of order");
        assert!(pad.iter().all(|&b| b == t), "bytes of two messages mixed");
        next[t as usize] += 1;
    }
    assert_eq!(next, [PER_THREAD; 4]);
    child.join();
    assert!(matches!(rx.recv(), Err(Error::Disconnected)));
}

#[test]
fn try_send_says_full_and_send_blocks_until_the_reader_drains() {
    let _serial = serial();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let mut queued = 0;
    let full = loop {
        match tx.try_send(vec![1; 30_000]) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full.error(), Error::Full));
    assert!(queued > 0);
    let child = fork_child(move || {
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..queued + 1 {
            assert_eq!(rx.recv().unwrap().len(), 30_000);
        }
    });
    // Blocks until the child has made room.
    tx.send(full.into_inner()).unwrap();
    child.join();
}

#[test]
fn blocking_calls_block_even_on_an_adopted_non_blocking_socket() {
    let _serial = serial();
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (a, b) = nonblocking_pair();
    assert!(
        OFlag::from_bits_retain(fcntl(&a, FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_NONBLOCK)
    );
    let tx = Sender::<Vec<u8>>::from(a);
    let rx = ipc_core::Receiver::<Vec<u8>>::from(b);
    // Fill the buffer, then a blocking send waits for the reader.
    while tx.try_send(vec![0; 30_000]).is_ok() {}
    let child = fork_child(|| {
        close_in_child(&tx);
        std::thread::sleep(Duration::from_millis(30));
        while let Ok(body) = rx.recv() {
            if body.len() == 1 {
                break;
            }
        }
    });
    tx.send(vec![1]).unwrap();
    child.join();
    // And a blocking receive waits for a writer.
    let (a, b) = nonblocking_pair();
    let tx = Sender::<u8>::from(a);
    let rx = ipc_core::Receiver::<u8>::from(b);
    let child = fork_child(|| {
        std::thread::sleep(Duration::from_millis(30));
        tx.send(5).unwrap();
    });
    assert_eq!(rx.recv().unwrap(), 5);
    child.join();
}

/// A seqpacket pair made non-blocking by whoever created it.
fn nonblocking_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).unwrap()
}
