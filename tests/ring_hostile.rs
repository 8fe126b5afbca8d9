//! The ring lane against a hostile peer at either end, each test a promise:
//! no local process, however hostile, may crash, leak, pin, spin or stall a
//! receiver (or an honest sender); it may only corrupt its own messages;
//! honest messages are never lost, duplicated or reordered.
//!
//! Every test is bounded: a receive that would hang is a `recv_timeout`,
//! a child that would hang is killed at a deadline, so a hang shows as a
//! failure, not a stuck run.

mod support;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, Limits, Select};
use nix::fcntl::SealFlag;
use support::ring::{offer_raw, raw_channel, send_inline, seqpacket_pair, RING_LEN};
use support::{
    close_in_child, dev_nulls, fd_count, fds_naming, fork_child, header, inline_frame, send_raw,
    serial, Forked,
};

/// The header word the receiving side writes its verdict into.
const W_STATE: usize = 40;

/// Waits for `child` up to `within`; past it, kills it and fails.
fn join_within(child: Forked, within: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + within;
    loop {
        match waitpid(child.pid(), Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => {}
            WaitStatus::Exited(_, 0) => return,
            status => panic!("child failed: {status:?}"),
        }
        if Instant::now() >= deadline {
            child.kill();
            panic!("child still running after {within:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A ring's memory laid out by hand as a sender lays it out, size-sealed.
fn ring_memory() -> File {
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
    nix::fcntl::fcntl(
        memory.as_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK),
    )
    .unwrap();
    memory
}

fn word(memory: &File, index: usize) -> u64 {
    let mut bytes = [0u8; 8];
    memory.read_exact_at(&mut bytes, index as u64 * 8).unwrap();
    u64::from_le_bytes(bytes)
}

/// Publishes a one-slot record at `position` of a hand-made ring.
fn push_record(memory: &File, position: u64, kind: u32, body: &[u8]) {
    let slot = 512 + (position % 2048) as usize * 16;
    memory
        .write_all_at(
            &(u64::from(kind) << 32 | body.len() as u64).to_le_bytes(),
            (slot as u64 + 1) * 8,
        )
        .unwrap();
    memory.write_all_at(body, (slot as u64 + 2) * 8).unwrap();
    memory
        .write_all_at(&(position + 1).to_le_bytes(), slot as u64 * 8)
        .unwrap();
}

/// One datagram read off a raw socket without waiting: its bytes and the
/// descriptors it carried; `None` when nothing is queued.
fn recv_raw(socket: BorrowedFd<'_>) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 70_000];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let (len, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(e) => panic!("recvmsg: {e}"),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(len);
    Some((buf, fds))
}

/// LOST WAKE-UP, several receiving threads.
///
/// Two threads of one process block in `recv` on the same receiver, whose
/// sender has an active ring. The sender sends two messages back to back.
/// On the socket lane the two datagrams wake both threads. On the ring
/// lane there is one `waiting` word: both threads armed it, the first
/// record's doorbell clears it and wakes one thread (the other goes back
/// to sleep in the socket: a blocking `recvmsg` wakes one waiter, and a
/// poll waiter that loses the datagram re-polls without looking at the
/// rings), the second record finds it cleared and rings no doorbell. The
/// second thread sleeps while a record it could take sits in the ring:
/// until its timeout here, for ever with `recv`.
///
/// Expected: both threads get a message. (The same holds for forked
/// workers that share a receiving end, and for a `Select` plus a `recv`.)
#[test]
fn two_sleeping_receivers_are_both_woken_by_two_records() {
    let _serial = serial();
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
        // The parent has read the three (the ring is taken up) and both
        // its threads are asleep.
        go_rx.recv().unwrap();
        tx.send(100).unwrap();
        tx.send(101).unwrap();
        // Keep the channel open until the parent is done.
        let _ = go_rx.recv_timeout(Duration::from_secs(20));
    });
    drop((tx, go_rx));
    for i in 0..3 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    assert_eq!(fds_naming("ipc-core-ring"), 1, "the child's ring, taken up");
    let rx = Arc::new(rx);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(3)))
        })
        .collect();
    // Both asleep, the ring armed.
    std::thread::sleep(Duration::from_millis(300));
    go_tx.send(()).unwrap();
    let mut got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let _ = go_tx.send(());
    join_within(child, Duration::from_secs(20));
    got.sort_by_key(|r| format!("{r:?}"));
    assert!(
        matches!(got.as_slice(), [Ok(100), Ok(101)]),
        "a receiving thread slept through a record in the ring: {got:?}"
    );
}

/// a ring's private socket that is the channel's own sending end.
///
/// A hostile sender offers a ring whose "private socket" is a duplicate of
/// the channel's sending end (a connected seqpacket socket, so it passes
/// the check), then exits. The receiver keeps the descriptor in its ring
/// list, so it holds the last reference to the peer of its own socket:
/// the socket never hangs up, `recv` never reports `Disconnected`, and the
/// ring is never swept (its private socket's peer, the receiving end, is
/// alive). A receiver that loops until `Disconnected` (every server does)
/// waits for ever after every sender has gone.
///
/// Expected: the offer is refused (the private socket's peer is the
/// receiving end itself), and once every sending process is gone,
/// `Disconnected`.
#[test]
fn a_private_socket_that_is_the_sending_end_does_not_hide_the_end() {
    let _serial = serial();
    let before = fd_count();
    let (raw, rx) = raw_channel();
    let memory = ring_memory();
    offer_raw(&raw, memory.as_fd(), raw.as_fd());
    send_inline(&raw, 1);
    // Every sending end of this process is gone; only the one inside the
    // offer (in flight, then in the receiver's ring) is left.
    drop((raw, memory));
    // The offer is refused, with an error that says why.
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(Error::Descriptor(why)) => assert!(why.contains("own sending end"), "{why}"),
        other => panic!("the offer was not refused: {other:?}"),
    }
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    let end = rx.recv_timeout(Duration::from_secs(3));
    assert!(
        matches!(end, Err(Error::Disconnected)),
        "every sender is gone, and the receive says {end:?}"
    );
    drop(rx);
    assert_eq!(fd_count(), before);
}

/// the sending end parked, in flight, in a ring's private socket.
///
/// A hostile sender offers a genuine ring and private socket pair, then
/// sends on its end of the private socket a datagram carrying a duplicate
/// of the channel's sending end, writes no placeholder for it, closes
/// everything and exits. The receiver reads its private socket only for a
/// placeholder, so the datagram stays queued there, and the descriptor in
/// flight keeps the channel's sending end open: no `Disconnected`, ever.
/// The ring is empty and its private socket hung up, but rings are swept
/// only when a new offer finds the receiver at `max_rings`, or after
/// `Disconnected` (which this prevents).
///
/// Expected: once every sending process is gone, `Disconnected` (sweep
/// hung-up, empty rings before sleeping, which purges their queues).
#[test]
fn a_sending_end_parked_in_a_private_socket_does_not_hide_the_end() {
    let _serial = serial();
    let before = fd_count();
    let (raw, rx) = raw_channel();
    let memory = ring_memory();
    let (ours, theirs) = seqpacket_pair();
    offer_raw(&raw, memory.as_fd(), theirs.as_fd());
    send_inline(&raw, 1);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(word(&memory, W_STATE), 1, "accepted");
    // A message no placeholder points at, carrying the sending end.
    send_raw(&ours, &inline_frame(1, &[0]), &[raw.as_raw_fd()]);
    drop((raw, memory, ours, theirs));
    let end = rx.recv_timeout(Duration::from_secs(3));
    assert!(
        matches!(end, Err(Error::Disconnected)),
        "every sender is gone, and the receive says {end:?}"
    );
    drop(rx);
    assert_eq!(fd_count(), before);
}

/// PIN/LEAK on the honest SENDER: a hostile receiver makes it offer ring
/// after ring.
///
/// The receiving side takes each offer up (writes `accepted`), closes the
/// ring's private socket and keeps the ring's memfd. The sender's next
/// record finds the private socket hung up, drops the ring (the record goes
/// on the socket), and two messages later offers a fresh one: a new 256 KiB
/// memfd, faulted in and charged to the sender, for every three messages
/// of a few bytes. The receiver keeps every one alive by holding its
/// descriptor, up to its descriptor limit: hundreds of MiB of the sender's
/// memory for a few KiB of messages, and a memfd_create, mmap, socketpair
/// and sendmsg per three sends.
///
/// Expected: a sender whose ring was lost does not offer again at once
/// (once per receiving end, or with a backoff that grows): a handful of
/// offers for hundreds of messages.
#[test]
fn a_receiver_cannot_make_a_sender_offer_ring_after_ring() {
    let _serial = serial();
    let (tx, rx) = channel::<u64>().unwrap();
    let hostile = rx.as_fd().try_clone_to_owned().unwrap();
    drop(rx);
    let mut kept = Vec::new();
    let mut messages = 0;
    let start = Instant::now();
    for i in 0..300u64 {
        tx.send_timeout(i, Duration::from_secs(2)).unwrap();
        while let Some((bytes, mut fds)) = recv_raw(hostile.as_fd()) {
            match bytes.get(3) {
                Some(3) if fds.len() == 2 => {
                    // Taken up; the private socket closed, the memory kept.
                    let private = fds.pop().unwrap();
                    let memory = File::from(fds.pop().unwrap());
                    memory
                        .write_all_at(&1u64.to_le_bytes(), W_STATE as u64 * 8)
                        .unwrap();
                    drop(private);
                    kept.push(memory);
                }
                Some(0) => messages += 1,
                _ => {}
            }
        }
        // The sender's look at an idle ring's reader is due after 50 us.
        std::thread::sleep(Duration::from_micros(200));
        assert!(start.elapsed() < Duration::from_secs(30), "too slow");
    }
    let pinned = kept.len() * RING_LEN;
    assert!(
        kept.len() <= 4,
        "{} ring offers for 300 messages ({messages} on the socket): the receiver \
         holds {} KiB of the sender's memory",
        kept.len(),
        pinned / 1024
    );
}

/// LIMIT BYPASS: a `Select` takes up rings past the receiver's
/// `max_rings`.
///
/// A receiver set to `max_rings(0)` (its owner wants no shared memory
/// from peers) is registered in a `Select`. An offer arrives; the Select's
/// look at the socket takes it up with `Limits::DEFAULT_MAX_RINGS` ("a
/// Select knows no receiver's"), maps the peer's memory and reads records
/// from it, which `recv` on the same receiver would have refused.
///
/// Expected: the Select refuses the offer as `recv` would (the receiver's
/// limits are known to the socket, or the offer is left for the receive).
#[test]
fn a_select_honours_the_receivers_max_rings() {
    let _serial = serial();
    let (raw, mut rx) = raw_channel();
    rx.set_limits(Limits::default().with_max_rings(0));
    let memory = ring_memory();
    let (ours, theirs) = seqpacket_pair();
    offer_raw(&raw, memory.as_fd(), theirs.as_fd());
    drop(theirs);
    let mut select = Select::new().unwrap();
    select.register(&rx, 1).unwrap();
    // The offer is no message: the wait takes it up and times out.
    let _ = select.wait(Some(Duration::from_millis(200)));
    let state = word(&memory, W_STATE);
    // A record in the refused ring must not come out.
    push_record(&memory, 0, 1, &postcard::to_allocvec(&7u64).unwrap());
    let got = rx.try_recv();
    drop((ours, raw));
    assert_eq!(
        state,
        2,
        "the ring of a receiver with max_rings(0) was {} (got {got:?})",
        if state == 1 { "accepted" } else { "left" }
    );
    assert!(got.is_err(), "a record read from a refused ring: {got:?}");
}

/// DESCRIPTOR RETENTION in a `Select`: a doorbell that carries descriptors.
///
/// A hostile sender sends a doorbell datagram (kind 4) with descriptors
/// attached. A `recv` refuses it (wrong descriptor count) and closes them;
/// a `Select` takes it off the socket in `has_message`, drops the doorbell
/// and leaves its descriptors in the thread's receive buffer, where they
/// stay open until that thread next receives: a dispatcher thread that
/// only waits holds up to 253 of the peer's descriptors (pipes keeping
/// their writers alive, sockets keeping peers connected, memfds) for as
/// long as it runs.
///
/// Expected: the wait returns with every descriptor of the doorbell closed.
#[test]
fn a_doorbell_with_descriptors_leaves_none_open_in_a_select() {
    let _serial = serial();
    let (raw, rx) = raw_channel();
    let mut select = Select::new().unwrap();
    select.register(&rx, 1).unwrap();
    // Warm up the thread's buffers.
    let _ = select.wait(Some(Duration::from_millis(10)));
    let before = fd_count();
    let nulls = dev_nulls(8);
    let raws: Vec<RawFd> = nulls.iter().map(|f| f.as_raw_fd()).collect();
    send_raw(&raw, &header(4, 8, 0), &raws);
    drop(nulls);
    let waited = select
        .wait(Some(Duration::from_millis(200)))
        .map(<[usize]>::to_vec);
    let after = fd_count();
    drop((raw, rx));
    assert_eq!(
        after,
        before,
        "{} of the doorbell's descriptors still open after the wait ({waited:?})",
        after as isize - before as isize
    );
}

/// LOST WAKE-UP in tokio: a socket datagram skipped as "read a moment ago".
///
/// A receive that does not wait reads the socket at most every 10 us
/// while the receiver has rings (`socket_due`). An async `recv` makes that
/// same non-waiting attempt when readiness wakes it. So: a task waits in
/// `recv` (a ring is active, from another sender); another task's
/// `try_recv` reads the socket and finds it empty; a datagram comes (a
/// sender without a ring: a one-shot reply, a process with the ring lane
/// off); readiness wakes the waiting task, whose attempt within those
/// 10 us skips the socket, finds the rings empty, and then clears the
/// readiness and waits for more. The datagram stays queued with the task
/// asleep: until the next datagram, for ever on a quiet channel.
///
/// Expected: every datagram that came while a task waited is received.
#[cfg(feature = "tokio")]
#[test]
fn an_async_receive_does_not_sleep_on_a_queued_datagram() {
    use ipc_core::tokio::AsyncReceiver;
    let _serial = serial();
    let (tx, rx) = channel::<u64>().unwrap();
    // On whatever lane the process runs the rest of the suite on.
    tx.set_ring_lane(true);
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let watch = rx.as_fd().try_clone_to_owned().unwrap();
    let (go_tx, go_rx) = channel::<()>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&watch);
        close_in_child(&go_tx);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        let _ = go_rx.recv_timeout(Duration::from_secs(30));
    });
    drop((tx, go_rx));
    for i in 0..3 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    // The ring is taken up: the receiver has rings from now on.
    assert_eq!(fds_naming("ipc-core-ring"), 1);
    // One thread: the waiting task runs right after the look, as soon as
    // the reactor sees the datagram.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lost = runtime.block_on(async {
        let rx = Arc::new(AsyncReceiver::new(rx).unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..2000u64 {
            if Instant::now() > deadline {
                break;
            }
            let waiter = {
                let rx = rx.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
                })
            };
            tokio::time::sleep(Duration::from_millis(1)).await;
            // Another task looks, finds nothing: the socket was "just read".
            let _ = rx.try_recv().await;
            send_inline(&raw, 1000 + i);
            match waiter.await.unwrap() {
                Ok(Ok(got)) => assert_eq!(got, 1000 + i),
                Ok(Err(e)) => panic!("{e}"),
                Err(_elapsed) => return Some((i, support::queued_bytes(&watch))),
            }
        }
        None
    });
    drop(runtime);
    let _ = go_tx.send(());
    join_within(child, Duration::from_secs(20));
    assert!(
        lost.is_none(),
        "a task slept 300 ms in recv with a datagram queued (round, bytes queued): {lost:?}"
    );
}

/// An async receive and a blocking one in another process share one
/// receiving end (the process forked with it) and both sleep: two records
/// wake both. The async receive counts itself asleep as a blocking one
/// does, so the second record rings too.
#[cfg(feature = "tokio")]
#[test]
fn an_async_and_a_blocking_receiver_are_both_woken_by_two_records() {
    use ipc_core::tokio::AsyncReceiver;

    let _serial = serial();
    let (tx, rx) = channel::<u64>().unwrap();
    tx.set_ring_lane(true);
    let (go_tx, go_rx) = channel::<()>().unwrap();
    let (back_tx, back_rx) = channel::<u64>().unwrap();
    let sender = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&go_tx);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        go_rx.recv().unwrap();
        tx.send(100).unwrap();
        tx.send(101).unwrap();
        let _ = go_rx.recv_timeout(Duration::from_secs(20));
    });
    drop((tx, go_rx));
    for i in 0..3 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    assert_eq!(
        fds_naming("ipc-core-ring"),
        1,
        "the sender's ring, taken up"
    );
    // The other receiver: this receiving end, rings and all, in a fork.
    let blocking = fork_child(|| {
        close_in_child(&go_tx);
        let got = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        back_tx.send(got).unwrap();
    });
    drop(back_tx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = runtime.block_on(async {
        let rx = AsyncReceiver::new(rx).unwrap();
        let receive = tokio::time::timeout(Duration::from_secs(3), rx.recv());
        let go = async {
            // Both asleep, the ring armed.
            tokio::time::sleep(Duration::from_millis(300)).await;
            go_tx.send(()).unwrap();
        };
        let (got, ()) = tokio::join!(receive, go);
        got
    });
    let other = back_rx.recv_timeout(Duration::from_secs(5));
    let _ = go_tx.send(());
    join_within(blocking, Duration::from_secs(10));
    join_within(sender, Duration::from_secs(20));
    let mut both = vec![
        got.expect("the async receive slept through a record")
            .unwrap(),
        other.expect("the blocking receive slept through a record"),
    ];
    both.sort_unstable();
    assert_eq!(both, [100, 101]);
}
