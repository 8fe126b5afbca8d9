//! A descriptor the crate refuses never holds the refusing thread in
//! `close(2)`. The peer here attaches a TCP socket set to linger
//! (`SO_LINGER` with a long timeout) whose send queue cannot drain, so that
//! closing the last reference to it would block until the timeout passes
//! (here 4 s; `l_linger` may be years): a receiver refusing the message, a
//! listener refusing a greeting, and a connect refusing the listener's
//! greeting all come back at once, and the honest clients behind them are
//! served.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipc_core::{channel, Connection, Error, Listener};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use support::{fd_count, fork_child, inline_frame, send_raw, serial};

const LINGER: Duration = Duration::from_secs(4);

/// A connected TCP socket whose send queue is full and whose peer never
/// reads, set to linger `LINGER` on close; and the peer, to keep open.
fn lingering_socket() -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    stream.set_nonblocking(true).unwrap();
    let chunk = [1u8; 1 << 16];
    while (&stream).write(&chunk).is_ok() {}
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: LINGER.as_secs() as i32,
    };
    // SAFETY: `linger` is a valid struct linger for the call, and its size is passed.
    let rc = unsafe {
        nix::libc::setsockopt(
            stream.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            (&linger as *const nix::libc::linger).cast(),
            std::mem::size_of_val(&linger) as nix::libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    (OwnedFd::from(stream), peer)
}

/// A refused message's descriptors are let go of in `recv`: the receive
/// comes back at once, not when the peer lets the close finish.
#[test]
fn a_refused_message_with_a_lingering_socket_comes_back_at_once() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u32>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let (ready_tx, mut ready_rx) = UnixStream::pair().unwrap();
    let (done_tx, mut done_rx) = UnixStream::pair().unwrap();
    let child = fork_child(|| {
        let (lingering, peer) = lingering_socket();
        // The header announces no descriptor: refused, and closed by the receiver.
        send_raw(&raw, &inline_frame(0, &[7]), &[lingering.as_raw_fd()]);
        // The receiver's is the last reference from here on.
        drop(lingering);
        tx.send(8).unwrap();
        (&ready_tx).write_all(b"r").unwrap();
        // Hold the peer that never reads until the parent is done.
        let mut byte = [0];
        let _ = (&done_tx).read(&mut byte);
        drop(peer);
    });
    drop(raw);
    let mut byte = [0];
    ready_rx.read_exact(&mut byte).unwrap();
    let started = Instant::now();
    let first = rx.recv();
    let took = started.elapsed();
    eprintln!("first {first:?} took {took:?}");
    assert!(matches!(first, Err(Error::Descriptor(_))), "{first:?}");
    assert_eq!(rx.recv().unwrap(), 8);
    done_rx.write_all(b"x").unwrap();
    child.join();
    assert!(
        took < Duration::from_millis(500),
        "the refusal took {took:?}: the receiver sat in close(2) on the peer's socket"
    );
    // The socket is closed all the same, in the background, once its
    // linger ends (here, as soon as the peer has gone).
    drop((tx, rx, ready_tx, ready_rx, done_tx, done_rx));
    let deadline = Instant::now() + LINGER * 2;
    while fd_count() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fd_count(), before);
}

/// A peer greets the listener with a lingering socket attached: `accept`
/// refuses the greeting at once, and the honest client behind it is served.
#[test]
fn a_greeting_with_a_lingering_socket_does_not_hold_up_accept() {
    let _serial = serial();
    let addr = format!("ipc-core-linger-{}", std::process::id());
    let listener = Listener::<(), ()>::bind(format!("@{addr}")).unwrap();
    let (ready_tx, mut ready_rx) = UnixStream::pair().unwrap();
    let (done_tx, mut done_rx) = UnixStream::pair().unwrap();
    let child = fork_child(|| {
        let (lingering, peer) = lingering_socket();
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        connect(
            fd.as_raw_fd(),
            &UnixAddr::new_abstract(addr.as_bytes()).unwrap(),
        )
        .unwrap();
        send_raw(&fd, b"hello", &[lingering.as_raw_fd()]);
        drop(lingering);
        (&ready_tx).write_all(b"r").unwrap();
        let mut byte = [0];
        let _ = (&done_tx).read(&mut byte);
        drop((fd, peer));
    });
    let mut byte = [0];
    ready_rx.read_exact(&mut byte).unwrap();
    // An honest client connects right behind the hostile one.
    let name = format!("@{addr}");
    let honest = std::thread::spawn(move || {
        let started = Instant::now();
        let conn = Connection::<(), ()>::connect_timeout(name, Duration::from_secs(20));
        (conn.map(drop), started.elapsed())
    });
    let mut served = None;
    for _ in 0..2 {
        match listener.accept() {
            Ok(conn) => {
                served = Some(conn);
                break;
            }
            Err(e) => eprintln!("refused: {e}"),
        }
    }
    let (connected, took) = honest.join().unwrap();
    connected.unwrap();
    assert!(served.is_some());
    done_rx.write_all(b"x").unwrap();
    child.join();
    assert!(
        took < Duration::from_millis(500),
        "the honest client waited {took:?} behind a peer's lingering socket"
    );
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`).
fn stopped(pid: nix::unistd::Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

/// `Connection::connect_timeout` waits at most its timeout, even when a
/// hostile listener greets with a lingering socket attached.
///
/// The connecting process is stopped (`SIGSTOP`) while the listener sends
/// its greeting and closes its own copy of the socket, so that the
/// connecting side surely holds the last reference (the attack does not
/// need this; the test needs it to be deterministic).
#[test]
fn a_listener_greeting_with_a_lingering_socket_does_not_hold_up_connect() {
    let _serial = serial();
    let addr = format!("ipc-core-linger-listener-{}", std::process::id());
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    nix::sys::socket::bind(
        listener.as_raw_fd(),
        &UnixAddr::new_abstract(addr.as_bytes()).unwrap(),
    )
    .unwrap();
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(4).unwrap()).unwrap();
    // The victim: connects, and exits 0 if that took less than 1 s.
    let victim = fork_child(|| {
        let started = Instant::now();
        let got =
            Connection::<(), ()>::connect_timeout(format!("@{addr}"), Duration::from_millis(500));
        let took = started.elapsed();
        assert!(got.is_err(), "a garbage greeting was accepted");
        assert!(
            took < Duration::from_secs(1),
            "connect_timeout(500 ms) came back after {took:?}: {:?}",
            got.err()
        );
    });
    let victim_pid = victim.pid();
    let (done_tx, mut done_rx) = UnixStream::pair().unwrap();
    let attacker = fork_child(|| {
        let conn = nix::sys::socket::accept(listener.as_raw_fd()).unwrap();
        // SAFETY: accept returned a new descriptor that this child owns.
        let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
        let (lingering, peer) = lingering_socket();
        nix::sys::signal::kill(victim_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        while !stopped(victim_pid) {
            std::thread::sleep(Duration::from_millis(1));
        }
        send_raw(&conn, b"hello", &[lingering.as_raw_fd()]);
        drop(lingering);
        nix::sys::signal::kill(victim_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        let mut byte = [0];
        let _ = (&done_tx).read(&mut byte);
        drop((conn, peer));
    });
    drop(listener);
    let outcome = std::panic::catch_unwind(|| victim.join());
    done_rx.write_all(b"x").unwrap();
    attacker.join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
