//! A listener serving many client processes, some of them hostile: peers
//! that connect and say nothing, or answer the greeting late, cost the
//! honest clients no time; threads share one listener; no call waits on a
//! peer without a bound.

mod support;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_core::{Connection, Error, Listener};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use support::{fd_count, fork_child, serial, Forked};

/// The server sends text and receives numbers; clients the other way.
type Server = Listener<String, u64>;
type Client = Connection<u64, String>;

fn address(what: &str) -> String {
    format!("@ipc-core-listener-{what}-{}", std::process::id())
}

/// A raw seqpacket socket connected to `addr`, greeting no one.
fn raw_connect(addr: &str, flags: SockFlag) -> nix::Result<OwnedFd> {
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, flags, None)?;
    connect(
        fd.as_raw_fd(),
        &UnixAddr::new_abstract(addr.trim_start_matches('@').as_bytes())?,
    )?;
    Ok(fd)
}

/// The greeting an honest client of a [`Server`] sends, captured off the
/// wire: a listener of the client's types greets with exactly those bytes.
fn client_greeting() -> Vec<u8> {
    let addr = address("capture");
    let mut helper = Listener::<u64, String>::bind(&addr).unwrap();
    helper.set_greeting_timeout(Duration::from_millis(20));
    let raw = raw_connect(&addr, SockFlag::empty()).unwrap();
    assert!(matches!(
        helper.accept(),
        Err(Error::GreetingTimeout { .. })
    ));
    let mut buf = vec![0; 4096];
    let n = nix::sys::socket::recv(
        raw.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    buf.truncate(n);
    buf
}

/// A child process holding `count` connections to `addr` that greet with
/// `greeting` after `delay`, or never; it says on `ready` once all are
/// connected, and exits when it reads a byte from `stop`.
fn misbehave(
    addr: &str,
    count: usize,
    greeting: Option<(Vec<u8>, Duration)>,
    ready: &UnixStream,
    stop: &UnixStream,
) -> Forked {
    fork_child(|| {
        let sockets: Vec<OwnedFd> = (0..count)
            .map(|_| raw_connect(addr, SockFlag::empty()).unwrap())
            .collect();
        (&*ready).write_all(b"r").unwrap();
        if let Some((greeting, delay)) = greeting {
            std::thread::sleep(delay);
            for socket in &sockets {
                let _ = nix::sys::socket::send(
                    socket.as_raw_fd(),
                    &greeting,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                );
            }
        }
        (&*stop).read_exact(&mut [0]).unwrap();
        drop(sockets);
    })
}

/// A child process that, once `go` says so, connects as an honest client
/// `count` times, one after the other, each time sending a number and
/// waiting for its echo, and writes the longest of those round trips, in
/// microseconds, to `out`.
fn honest_clients(addr: &str, count: u64, go: &UnixStream, out: &UnixStream) -> Forked {
    fork_child(|| {
        (&*go).read_exact(&mut [0]).unwrap();
        let mut longest = Duration::ZERO;
        for i in 0..count {
            let start = Instant::now();
            let server = Client::connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            server.send(i).unwrap_or_else(|e| panic!("send {i}: {e}"));
            let echo = server.recv().unwrap_or_else(|e| panic!("recv {i}: {e}"));
            assert_eq!(echo, i.to_string());
            longest = longest.max(start.elapsed());
        }
        (&*out)
            .write_all(&(longest.as_micros() as u64).to_le_bytes())
            .unwrap();
    })
}

fn read_u64(from: &UnixStream) -> u64 {
    let mut bytes = [0; 8];
    (&*from).read_exact(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// What a server saw: connections served, and each error `accept` gave.
#[derive(Default, Debug)]
struct Tally {
    served: usize,
    timeouts: usize,
    other: Vec<String>,
    stop: bool,
}

/// The serving loop of the tests: every connection gets a thread that
/// echoes one number as text; the loop ends at the first accept after
/// `stop` is set.
fn serve(listener: &Server, tally: &Arc<Mutex<Tally>>) {
    loop {
        let accepted = listener.accept();
        let mut t = tally.lock().unwrap();
        if t.stop {
            return;
        }
        match accepted {
            Ok(conn) => {
                t.served += 1;
                std::thread::spawn(move || {
                    // A slow peer that greeted sends nothing: given up on.
                    if let Ok(n) = conn.recv_timeout(Duration::from_secs(5)) {
                        let _ = conn.send(n.to_string());
                    }
                });
            }
            Err(Error::GreetingTimeout { .. }) => t.timeouts += 1,
            Err(e) => t.other.push(e.to_string()),
        }
    }
}

/// Ends a [`serve`] loop: sets `stop`, then wakes its accept.
fn stop_serving(addr: &str, tally: &Mutex<Tally>) {
    tally.lock().unwrap().stop = true;
    let _ = Client::connect(addr);
}

#[test]
fn silent_and_slow_peers_cost_honest_clients_nothing() {
    let _serial = serial();
    let greeting = client_greeting();
    let addr = address("crowd");
    let mut listener = Server::bind(&addr).unwrap();
    listener.set_greeting_timeout(Duration::from_secs(3));
    let (ready, ready_here) = UnixStream::pair().unwrap();
    let (stop, stop_here) = UnixStream::pair().unwrap();
    let (go, go_here) = UnixStream::pair().unwrap();
    let (report, report_here) = UnixStream::pair().unwrap();

    // Every process is forked before this one starts a thread.
    let silent = misbehave(&addr, 50, None, &ready, &stop);
    let slow = misbehave(
        &addr,
        50,
        Some((greeting, Duration::from_millis(1500))),
        &ready,
        &stop,
    );
    let honest = honest_clients(&addr, 100, &go, &report);
    (&ready_here).read_exact(&mut [0; 2]).unwrap();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let server = std::thread::spawn({
        let tally = tally.clone();
        move || {
            serve(&listener, &tally);
            listener
        }
    });
    // 100 honest clients, while 100 others wait at the listener.
    (&go_here).write_all(b"g").unwrap();
    let longest = Duration::from_micros(read_u64(&report_here));
    honest.join();
    assert!(
        longest < Duration::from_millis(500),
        "an honest client waited {longest:?} behind silent and slow peers"
    );

    // The slow ones are served when they answer; the silent ones dropped
    // when their time is up, each an error of accept that names it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let t = tally.lock().unwrap();
        if t.served >= 150 && t.timeouts >= 50 {
            break;
        }
        drop(t);
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        let t = tally.lock().unwrap();
        assert_eq!(t.served, 150, "{t:?}");
        assert_eq!(t.timeouts, 50, "{t:?}");
        assert!(t.other.is_empty(), "{t:?}");
    }
    stop_serving(&addr, &tally);
    let listener = server.join().unwrap();
    (&stop_here).write_all(b"ss").unwrap();
    silent.join();
    slow.join();
    drop((listener, stop));
}

#[test]
fn a_full_set_of_waiting_peers_drops_the_oldest_and_holds_no_more() {
    let _serial = serial();
    let addr = address("cap");
    let mut listener = Server::bind(&addr).unwrap();
    listener.set_max_pending(8);
    let before = fd_count();
    let (ready, ready_here) = UnixStream::pair().unwrap();
    let (stop, stop_here) = UnixStream::pair().unwrap();
    let silent = misbehave(&addr, 60, None, &ready, &stop);
    (&ready_here).read_exact(&mut [0]).unwrap();
    let client = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let server = Client::connect(&addr).unwrap();
            server.send(5).unwrap();
            server.recv().unwrap()
        }
    });
    // Accepting the honest client takes every silent one off the backlog
    // first; at most 8 of them stay.
    let conn = listener.accept().unwrap();
    assert_eq!(conn.recv().unwrap(), 5);
    conn.send("5".into()).unwrap();
    assert_eq!(client.join().unwrap(), "5");
    drop(conn);
    let held = fd_count() - before;
    assert!(held <= 8 + 4, "the listener holds {held} descriptors");
    (&stop_here).write_all(b"s").unwrap();
    silent.join();
    drop(stop);
}

#[test]
fn threads_sharing_a_listener_each_get_their_own_connections() {
    let _serial = serial();
    let addr = address("threads");
    let listener = Arc::new(Server::bind(&addr).unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    // A process of eight threads, 25 connections each, forked before this
    // one starts threads; it waits for them to accept.
    let clients = fork_child(|| {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let n = t * 25 + i;
                        let server = Client::connect(&addr).unwrap();
                        server.send(n).unwrap();
                        assert_eq!(server.recv().unwrap(), n.to_string());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    let servers: Vec<_> = (0..4)
        .map(|_| {
            let (listener, got) = (listener.clone(), got.clone());
            std::thread::spawn(move || loop {
                let conn = listener.accept().unwrap();
                let n = conn.recv().unwrap();
                if n == u64::MAX {
                    return;
                }
                got.lock().unwrap().push(n);
                conn.send(n.to_string()).unwrap();
            })
        })
        .collect();
    clients.join();
    for _ in 0..4 {
        Client::connect(&addr).unwrap().send(u64::MAX).unwrap();
    }
    for server in servers {
        server.join().unwrap();
    }
    let mut got = got.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "each connection once");
}

#[test]
fn bind_never_waits_on_a_live_listener_with_a_full_backlog() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!("ipc-core-full-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let live = Server::bind(&path).unwrap();
    // Fill its backlog: it never accepts.
    let unix = UnixAddr::new(&path).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &unix) {
            Ok(()) => queued.push(fd),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
    }
    assert!(queued.len() >= 100, "a backlog of {}", queued.len());
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn({
        let path = path.clone();
        move || done.send(Server::bind(&path).map(drop)).unwrap()
    });
    let started = Instant::now();
    match result.recv_timeout(Duration::from_secs(5)) {
        Ok(Err(Error::Io { op: "bind", source })) => {
            assert_eq!(source.raw_os_error(), Some(nix::libc::EADDRINUSE))
        }
        Ok(other) => panic!("expected address in use, got {other:?}"),
        Err(_) => panic!("bind waited on the live listener"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // A connect to it waits no longer than it is told to.
    let started = Instant::now();
    let got = Client::connect_timeout(&path, Duration::from_millis(200));
    assert!(
        matches!(got, Err(Error::GreetingTimeout { .. })),
        "{:?}",
        got.map(drop)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    drop(queued);
    drop(live);
}

#[test]
fn connect_gives_up_on_a_listener_that_never_greets() {
    let _serial = serial();
    let addr = address("mute");
    // Listening, and never accepting: the kernel queues the connection, no
    // greeting comes.
    let _listener = Server::bind(&addr).unwrap();
    let started = Instant::now();
    let got = Client::connect_timeout(&addr, Duration::from_millis(200));
    match got {
        Err(Error::GreetingTimeout { waited }) => {
            assert_eq!(waited, Duration::from_millis(200));
            let text = Error::GreetingTimeout { waited }.to_string();
            assert!(text.contains("greeting"), "{text}");
        }
        other => panic!("expected a greeting timeout, got {:?}", other.map(drop)),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The same crowd at an async listener: accept loops in tasks, sessions in
/// tasks of their own.
#[cfg(feature = "tokio")]
#[test]
fn silent_and_slow_peers_cost_honest_clients_nothing_async() {
    use ipc_core::tokio::AsyncListener;

    let _serial = serial();
    let greeting = client_greeting();
    let addr = address("crowd-async");
    let mut listener = Server::bind(&addr).unwrap();
    listener.set_greeting_timeout(Duration::from_secs(3));
    let (ready, ready_here) = UnixStream::pair().unwrap();
    let (stop, stop_here) = UnixStream::pair().unwrap();
    let (go, go_here) = UnixStream::pair().unwrap();
    let (report, report_here) = UnixStream::pair().unwrap();
    let silent = misbehave(&addr, 50, None, &ready, &stop);
    let slow = misbehave(
        &addr,
        50,
        Some((greeting, Duration::from_millis(1500))),
        &ready,
        &stop,
    );
    let honest = honest_clients(&addr, 100, &go, &report);
    (&ready_here).read_exact(&mut [0; 2]).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = runtime.block_on(async {
        let listener = Arc::new(AsyncListener::new(listener).unwrap());
        let tally = Arc::new(Mutex::new(Tally::default()));
        // Two accept loops on one listener.
        let loops: Vec<_> = (0..2)
            .map(|_| {
                let (listener, tally) = (listener.clone(), tally.clone());
                tokio::spawn(async move {
                    loop {
                        let accepted = listener.accept().await;
                        let mut t = tally.lock().unwrap();
                        if t.stop {
                            return;
                        }
                        match accepted {
                            Ok(conn) => {
                                t.served += 1;
                                tokio::spawn(async move {
                                    let got =
                                        tokio::time::timeout(Duration::from_secs(5), conn.recv())
                                            .await;
                                    if let Ok(Ok(n)) = got {
                                        let _ = conn.send(n.to_string()).await;
                                    }
                                });
                            }
                            Err(Error::GreetingTimeout { .. }) => t.timeouts += 1,
                            Err(e) => t.other.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        (&go_here).write_all(b"g").unwrap();
        let longest =
            tokio::task::spawn_blocking(move || Duration::from_micros(read_u64(&report_here)))
                .await
                .unwrap();
        assert!(
            longest < Duration::from_millis(500),
            "an honest client waited {longest:?} behind silent and slow peers"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let done = {
                let t = tally.lock().unwrap();
                t.served >= 150 && t.timeouts >= 50
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally.lock().unwrap().stop = true;
        for _ in 0..2 {
            let addr = addr.clone();
            let _ = tokio::task::spawn_blocking(move || Client::connect(&addr).map(drop)).await;
        }
        for accept_loop in loops {
            accept_loop.await.unwrap();
        }
        tally
    });
    honest.join();
    let t = tally.lock().unwrap();
    assert_eq!(t.served, 150, "{t:?}");
    assert_eq!(t.timeouts, 50, "{t:?}");
    assert!(t.other.is_empty(), "{t:?}");
    drop(t);
    (&stop_here).write_all(b"ss").unwrap();
    silent.join();
    slow.join();
    drop(stop);
}
