//! Faults with real processes: a peer killed at random points, a storm of
//! signals during blocking calls, a receiver out of descriptors, a peer that
//! announces a huge body.

mod support;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, Fd, IpcMessage};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use support::{close_in_child, dev_nulls, fd_count, fork_child, serial};

#[derive(IpcMessage)]
struct Numbered {
    seq: u64,
    file: Option<std::fs::File>,
    payload: Vec<u8>,
    sum: u64,
}

fn numbered(seq: u64) -> Numbered {
    // Sizes cross the inline limit now and then.
    let len = if seq % 50 == 0 {
        100_000
    } else {
        (seq % 300) as usize
    };
    let payload: Vec<u8> = (0..len).map(|i| (i as u64 ^ seq) as u8).collect();
    Numbered {
        seq,
        file: (seq % 3 == 0).then(|| std::fs::File::open("/dev/null").unwrap()),
        sum: payload.iter().map(|&b| b as u64).sum(),
        payload,
    }
}

/// A small deterministic generator: the same "random" points every run.
fn points(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

#[test]
fn a_peer_killed_at_random_points_leaves_only_whole_messages_and_no_leaks() {
    let _serial = serial();
    let before = fd_count();
    for delay in points(7).take(6).map(|x| 5 + x % 25) {
        let (tx, rx) = channel::<Numbered>().unwrap();
        let child = fork_child(|| {
            close_in_child(&rx);
            for seq in 0.. {
                tx.send(numbered(seq)).unwrap();
            }
        });
        drop(tx);
        // Once the stream is flowing, kill the sender somewhere inside it.
        let check = |m: &Numbered, next: u64| {
            assert_eq!(m.seq, next, "a message went missing before the kill");
            assert_eq!(
                m.sum,
                m.payload.iter().map(|&b| b as u64).sum::<u64>(),
                "a torn body"
            );
            assert_eq!(m.file.is_some(), m.seq % 3 == 0);
        };
        check(&rx.recv().unwrap(), 0);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill();
        let mut next = 1;
        loop {
            match rx.recv() {
                Ok(m) => {
                    check(&m, next);
                    next += 1;
                }
                Err(Error::Disconnected) => break,
                Err(e) => panic!("after {next} messages: {e}"),
            }
        }
        drop(rx);
        assert_eq!(
            fd_count(),
            before,
            "killed after {delay} ms: a descriptor leaked"
        );
    }
}

extern "C" fn ignore(_: i32) {}

/// Makes SIGUSR1 interrupt system calls (no SA_RESTART) without effect.
fn interrupting_sigusr1() {
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe.
    unsafe { signal::sigaction(Signal::SIGUSR1, &action) }.unwrap();
}

/// Sends SIGUSR1 to `thread` every few microseconds until `stop` is set.
fn storm(thread: nix::sys::pthread::Pthread, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut sent = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if nix::sys::pthread::pthread_kill(thread, Signal::SIGUSR1).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_micros(20));
    }
    sent
}

#[test]
fn a_signal_storm_during_blocking_calls_loses_nothing() {
    let _serial = serial();
    interrupting_sigusr1();
    const N: u64 = 5000;
    use std::sync::atomic::AtomicBool;

    // Blocking receives interrupted again and again.
    let (tx, rx) = channel::<Numbered>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for seq in 0..N {
            tx.send(numbered(seq)).unwrap();
        }
    });
    drop(tx);
    let stop = AtomicBool::new(false);
    let me = nix::sys::pthread::pthread_self();
    let signals = std::thread::scope(|s| {
        let storm = s.spawn(|| storm(me, &stop));
        for seq in 0..N {
            let m = rx.recv().unwrap_or_else(|e| panic!("message {seq}: {e}"));
            assert_eq!(m.seq, seq);
        }
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        storm.join().unwrap()
    });
    child.join();
    assert!(signals > 10, "the storm sent only {signals} signals");

    // Blocking sends into a full buffer, interrupted likewise; a timed
    // receive on the other side of the storm too.
    let (tx, rx) = channel::<Numbered>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        for seq in 0..N {
            if seq % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(m.seq, seq);
        }
    });
    drop(rx);
    let stop = AtomicBool::new(false);
    let me = nix::sys::pthread::pthread_self();
    std::thread::scope(|s| {
        let storm = s.spawn(|| storm(me, &stop));
        for seq in 0..N {
            tx.send(numbered(seq))
                .unwrap_or_else(|e| panic!("message {seq}: {e:?}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        storm.join().unwrap();
    });
    child.join();
}

#[test]
fn a_receiver_out_of_descriptors_gets_a_clear_error_and_goes_on() {
    let _serial = serial();
    let (tx, rx) = channel::<Vec<Fd<OwnedFd>>>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        // Leave room for two more descriptors, no more: the limit bounds
        // descriptor numbers, so count the free numbers below it.
        let open: std::collections::HashSet<u64> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .collect();
        let (mut limit, mut free) = (0, 0);
        while free < 2 {
            free += u64::from(!open.contains(&limit));
            limit += 1;
        }
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
            .unwrap();
        match rx.recv() {
            Err(Error::Descriptor(why)) => assert!(why.contains("RLIMIT_NOFILE"), "{why}"),
            other => panic!("expected a refusal, got {:?}", other.map(|v| v.len())),
        }
        // The channel goes on, and the descriptors that were installed
        // are closed again: the next message with two fits.
        assert_eq!(rx.recv().unwrap().len(), 0);
        assert_eq!(rx.recv().unwrap().len(), 2);
    });
    let fds = |n| dev_nulls(n).into_iter().map(Fd::new).collect::<Vec<_>>();
    tx.send(fds(8)).unwrap();
    tx.send(fds(0)).unwrap();
    tx.send(fds(2)).unwrap();
    child.join();
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_peer_announcing_a_huge_body_costs_no_memory() {
    let _serial = serial();
    let (tx, rx) = channel::<(u8, Vec<u8>)>().unwrap();
    let raw = OwnedFd::try_from(tx).unwrap();
    let before = (fd_count(), resident_bytes());
    // A memfd of 1.5 GiB that holds nothing but a hole, announced as a body
    // of that size: within the default limit of 2 GiB. Sealed, as the
    // out-of-line kind wants; unsealed with the body a page in, as the
    // pooled kind wants (no sender pools a body that large).
    const HUGE: u64 = 3 << 29;
    let seals = nix::fcntl::SealFlag::F_SEAL_WRITE
        | nix::fcntl::SealFlag::F_SEAL_GROW
        | nix::fcntl::SealFlag::F_SEAL_SHRINK;
    // The sealed one is refused for its holes before it is mapped; the
    // pooled one for its size before it is copied.
    for (kind, expect) in [(1, "hole"), (2, "larger than")] {
        let memfd = match kind {
            1 => support::memfd(HUGE as i64, seals),
            _ => support::memfd(HUGE as i64 + 4096, nix::fcntl::SealFlag::empty()),
        };
        let start = Instant::now();
        support::send_raw(&raw, &support::header(kind, 1, HUGE), &[memfd.as_raw_fd()]);
        drop(memfd);
        match rx.recv() {
            Err(Error::Decode(why) | Error::Descriptor(why)) => {
                assert!(why.contains(expect), "kind {kind}: {why}")
            }
            other => panic!(
                "kind {kind}: expected a refusal, got {:?}",
                other.map(|_| ())
            ),
        }
        let grown = resident_bytes().saturating_sub(before.1);
        assert!(
            grown < 64 << 20,
            "kind {kind}: receiving grew memory by {grown} bytes"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "kind {kind}: the refusal read the whole body"
        );
        assert_eq!(fd_count(), before.0);
    }
}
