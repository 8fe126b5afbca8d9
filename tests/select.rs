//! What a `Select` reports once a source it waits on is dropped or given
//! up: nothing. epoll keeps an entry for as long as the open file lives
//! anywhere (a peer that kept a copy of a socket it handed over, a forked
//! child, an `OwnedFd` the caller took out of a receiver), so the source's
//! socket takes itself out of the set as it goes; the set neither spins on
//! it nor reports its slot's next owner ready.

mod support;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipc_core::{channel, Error, Receiver, Select};
use support::{close_in_child, fd_count, fork_child, serial, Forked};

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let user = usage.user_time();
    let system = usage.system_time();
    Duration::from_secs((user.tv_sec() + system.tv_sec()) as u64)
        + Duration::from_micros((user.tv_usec() + system.tv_usec()) as u64)
}

/// A hostile peer hands over a receiver, keeps its own copy of that
/// receiver's socket, and hangs up the sending end: the handed-over socket
/// reads as the end of the channel (readable, hung up) for as long as the
/// peer keeps its copy. Returns the receiver, the peer, and the way to
/// tell it to go.
fn handed_over_receiver() -> (Receiver<u32>, Forked, UnixStream) {
    let (carrier_tx, carrier_rx) = channel::<Receiver<u32>>().unwrap();
    let (done_tx, done_rx) = UnixStream::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&carrier_rx);
        close_in_child(&done_tx);
        let (tx, rx) = channel::<u32>().unwrap();
        // The peer's own copy of the socket it hands over.
        let kept = rx.as_fd().try_clone_to_owned().unwrap();
        carrier_tx.send(rx).unwrap();
        drop(tx);
        let mut byte = [0];
        let _ = (&done_rx).read(&mut byte);
        drop(kept);
    });
    let rx = carrier_rx.recv().unwrap();
    (rx, child, done_tx)
}

/// Runs `select.wait(timeout)` on a thread of its own, and gives its
/// outcome and the CPU time it used, or `None` if it has not returned
/// within `give_up` (the thread is left behind).
fn wait_on_thread(
    mut select: Select,
    timeout: Duration,
    give_up: Duration,
) -> Option<(ipc_core::Result<Vec<usize>>, Duration)> {
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cpu = thread_cpu();
        let waited = select.wait(Some(timeout)).map(<[usize]>::to_vec);
        let _ = result_tx.send((waited, thread_cpu() - cpu));
    });
    result_rx.recv_timeout(give_up).ok()
}

/// Dropped, a registered receiver leaves the set even though its socket
/// lives on in the peer that handed it over: waiting on what is left (a
/// receiver nothing is sent to) sleeps until the timeout, without spinning.
#[test]
fn a_dropped_receiver_leaves_the_set_while_its_peer_keeps_the_socket() {
    let _serial = serial();
    let before = fd_count();
    let (rx, child, mut done) = handed_over_receiver();
    let (_idle_tx, idle) = channel::<u32>().unwrap();
    let mut select = Select::new().unwrap();
    select.register(&rx, 1).unwrap();
    select.register(&idle, 2).unwrap();
    assert_eq!(select.wait(Some(Duration::from_secs(5))).unwrap(), [1]);
    assert!(matches!(rx.try_recv(), Err(Error::Disconnected)));
    // Done with it: dropped, as the doc of `register` says it may be.
    drop(rx);
    let outcome = wait_on_thread(select, Duration::from_secs(1), Duration::from_secs(5));
    done.write_all(b"x").unwrap();
    child.join();
    let Some((waited, spent)) = outcome else {
        panic!("wait(Some(1 s)) had not returned after 5 s: it spins on the dropped receiver's stale epoll entry and never times out");
    };
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    assert!(
        spent < Duration::from_millis(200),
        "a 1 s wait burned {spent:?} of CPU on the dropped receiver's stale entry"
    );
    drop((idle, _idle_tx, done));
    assert_eq!(fd_count(), before);
}

/// The slot of a dropped receiver whose socket lives on goes to the next
/// source registered, even one under the same descriptor number, and that
/// source is reported ready only when it has something to receive.
#[test]
fn a_new_receiver_under_a_dropped_ones_number_is_not_reported_ready() {
    let _serial = serial();
    let (rx, child, mut done) = handed_over_receiver();
    let mut select = Select::new().unwrap();
    select.register(&rx, 1).unwrap();
    let number = std::os::fd::AsRawFd::as_raw_fd(&rx.as_fd());
    drop(rx);
    // Arrange the free numbers so that a new pair's second end, its
    // receiver, gets the dropped receiver's: one free number below it.
    let mut below = Vec::new();
    loop {
        let file = std::fs::File::open("/dev/null").unwrap();
        if std::os::fd::AsRawFd::as_raw_fd(&file) >= number {
            break;
        }
        below.push(file);
    }
    below
        .pop()
        .expect("a descriptor numbered below the receiver's");
    // The next channel's receiver takes the number the dropped one freed
    // (its sender takes the lower one): the set finds the number mapped,
    // frees the dropped one's slot, and hands it out again.
    let (_a_tx, a) = channel::<u32>().unwrap();
    assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&a.as_fd()), number);
    select.register(&a, 2).unwrap();
    let (_b_tx, b) = channel::<u32>().unwrap();
    select.register(&b, 3).unwrap();
    let outcome = wait_on_thread(select, Duration::from_millis(300), Duration::from_secs(5));
    let b_got = b.try_recv();
    let a_got = a.try_recv();
    done.write_all(b"x").unwrap();
    child.join();
    match outcome {
        Some((Err(Error::Timeout), _)) => {}
        Some((Ok(ready), _)) => panic!(
            "nothing was sent, yet {ready:?} came ready (the receivers then said {a_got:?}, {b_got:?})"
        ),
        Some((Err(e), _)) => panic!("{e}"),
        None => panic!("wait(Some(300 ms)) had not returned after 5 s"),
    }
}

/// A receiver turned into its descriptor (`OwnedFd::try_from`) leaves the
/// set, though the socket lives on in the caller's `OwnedFd` with a
/// message queued: the set neither reports it nor spins on it.
#[test]
fn a_receiver_turned_into_its_descriptor_leaves_the_set() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u32>().unwrap();
    tx.send(1).unwrap();
    let mut select = Select::new().unwrap();
    select.register(&rx, 1).unwrap();
    let fd = std::os::fd::OwnedFd::try_from(rx).unwrap();
    let outcome = wait_on_thread(select, Duration::from_millis(300), Duration::from_secs(3));
    drop(fd);
    let Some((waited, spent)) = outcome else {
        panic!("wait(Some(300 ms)) had not returned after 3 s: it spins on the entry of a receiver no longer registered as far as the set knows");
    };
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    assert!(spent < Duration::from_millis(100), "burned {spent:?}");
    drop(tx);
    assert_eq!(fd_count(), before);
}

/// A connection turns into its descriptor while a `Select` waiting on
/// another thread looks at its socket: the set's look is no second owner.
#[test]
fn a_connection_turns_into_its_descriptor_while_a_select_waits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let _serial = serial();
    for _ in 0..2000 {
        let (a, b) = ipc_core::Connection::<(), ()>::pair().unwrap();
        b.send(()).unwrap();
        let mut select = Select::new().unwrap();
        select.register(&a, 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = select.wait(Some(Duration::from_millis(10)));
                }
            }
        });
        std::thread::sleep(Duration::from_micros(50));
        let converted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(std::os::fd::OwnedFd::from(a))
        }));
        stop.store(true, Ordering::Relaxed);
        waiter.join().unwrap();
        if let Err(panic) = converted {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The set keeps no socket open: a registered receiver dropped is gone for
/// its sender at once, which sees the end of the channel.
#[test]
fn a_registered_receiver_dropped_disconnects_its_sender() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u32>().unwrap();
    let mut select = Select::new().unwrap();
    select.register(&rx, 0).unwrap();
    drop(rx);
    let sent = tx.send(1).map_err(|e| e.error().to_string());
    assert!(sent.is_err(), "{sent:?}");
    drop((tx, select));
    assert_eq!(fd_count(), before);
}
