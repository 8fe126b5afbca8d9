//! The tokio face with real processes: async talk with a forked child,
//! `select!` cancelling receives in the middle of heavy traffic, many tasks
//! sending at once, the `Stream` impl, async accept; descriptor counts equal
//! before and after. Runtimes are built after each fork, never before one.
#![cfg(feature = "tokio")]

mod support;

use std::future::poll_fn;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use ipc_core::tokio::{AsyncConnection, AsyncListener, AsyncReceiver, AsyncSender};
use ipc_core::{channel, Connection, Error, Fd, IpcMessage, Listener};
use support::{close_in_child, dev_nulls, fd_count, fork_child, queued_when_sender_stops, serial};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_forked_child_talks_async_to_the_parent() {
    let _serial = serial();
    let before = fd_count();
    let (parent_end, child_end) = Connection::<u64, u64>::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&parent_end);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conn = AsyncConnection::new(child_end).unwrap();
            while let Ok(n) = conn.recv().await {
                conn.send(n * 2).await.unwrap();
            }
        });
    });
    runtime().block_on(async {
        let conn = AsyncConnection::new(parent_end).unwrap();
        for i in 0..2000 {
            conn.send(i).await.unwrap();
            assert_eq!(conn.recv().await.unwrap(), i * 2);
        }
    });
    child.join();
    assert_eq!(fd_count(), before);
}

type Numbered = (u32, Option<Fd<OwnedFd>>);

#[test]
fn select_cancels_receives_amid_heavy_traffic_and_loses_nothing() {
    let _serial = serial();
    const N: u32 = 20_000;
    let before = fd_count();
    let (tx_a, rx_a) = channel::<Numbered>().unwrap();
    let (tx_b, rx_b) = channel::<Numbered>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx_a);
        close_in_child(&rx_b);
        for i in 0..N {
            // Every hundredth message carries a descriptor.
            let fd = || (i % 100 == 0).then(|| Fd::new(dev_nulls(1).remove(0)));
            tx_a.send((i, fd())).unwrap();
            tx_b.send((i, fd())).unwrap();
        }
    });
    drop((tx_a, tx_b));
    let (got_a, got_b, ticks) = runtime().block_on(async move {
        let (a, b) = (
            AsyncReceiver::new(rx_a).unwrap(),
            AsyncReceiver::new(rx_b).unwrap(),
        );
        let (mut next_a, mut next_b, mut ticks) = (0u32, 0u32, 0u32);
        let (mut a_open, mut b_open) = (true, true);
        while a_open || b_open {
            tokio::select! {
                got = a.recv(), if a_open => match got {
                    Ok((i, fd)) => {
                        assert_eq!(i, next_a, "channel a lost or repeated a message");
                        assert_eq!(fd.is_some(), i % 100 == 0);
                        next_a += 1;
                    }
                    Err(Error::Disconnected) => a_open = false,
                    Err(e) => panic!("{e}"),
                },
                got = b.recv(), if b_open => match got {
                    Ok((i, fd)) => {
                        assert_eq!(i, next_b, "channel b lost or repeated a message");
                        assert_eq!(fd.is_some(), i % 100 == 0);
                        next_b += 1;
                    }
                    Err(Error::Disconnected) => b_open = false,
                    Err(e) => panic!("{e}"),
                },
                _ = tokio::time::sleep(Duration::from_micros(20)) => ticks += 1,
            }
            // And a receive cut short by a timeout now and then.
            if next_a % 1000 == 500 && a_open {
                let _ = tokio::time::timeout(Duration::from_nanos(1), a.recv())
                    .await
                    .map(|got| {
                        let (i, _) = got.unwrap();
                        assert_eq!(i, next_a);
                        next_a += 1;
                    });
            }
        }
        (next_a, next_b, ticks)
    });
    child.join();
    assert_eq!(
        (got_a, got_b),
        (N, N),
        "every message exactly once ({ticks} timer ticks)"
    );
    assert_eq!(fd_count(), before);
}

#[test]
fn many_tasks_send_at_once_and_each_keeps_its_order() {
    let _serial = serial();
    const TASKS: u32 = 16;
    const EACH: u32 = 1000;
    let (tx, rx) = channel::<(u32, u32)>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        let mut next = vec![0u32; TASKS as usize];
        for _ in 0..TASKS * EACH {
            let (task, seq) = rx.recv().unwrap();
            assert_eq!(seq, next[task as usize], "task {task} out of order");
            next[task as usize] += 1;
        }
        assert!(next.iter().all(|&n| n == EACH));
    });
    drop(rx);
    runtime().block_on(async move {
        let tx = AsyncSender::new(tx).unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for seq in 0..EACH {
                        tx.send((task, seq)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    child.join();
}

#[test]
fn a_receiver_is_a_stream_that_ends_at_disconnection() {
    let _serial = serial();
    let (tx, rx) = channel::<u16>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0..500 {
            tx.send(i).unwrap();
        }
    });
    drop(tx);
    let got = runtime().block_on(async move {
        let mut stream = AsyncReceiver::new(rx).unwrap();
        let mut got = Vec::new();
        while let Some(item) = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            got.push(item.unwrap());
        }
        got
    });
    child.join();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[test]
fn an_async_listener_serves_several_client_processes() {
    let _serial = serial();
    let name = format!("@ipc-core-async-test-{}", std::process::id());
    let listener = Listener::<String, u32>::bind(&name).unwrap();
    let before = fd_count();
    // A probe that connects and leaves before greeting is skipped, not
    // handed out and not an error.
    {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let probe = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let address = UnixAddr::new_abstract(&name.as_bytes()[1..]).unwrap();
        connect(std::os::fd::AsRawFd::as_raw_fd(&probe), &address).unwrap();
    }
    let clients: Vec<_> = (0..3u32)
        .map(|i| {
            fork_child(|| {
                close_in_child(&listener);
                let server = Connection::<u32, String>::connect(&name).unwrap();
                server.send(i).unwrap();
                assert_eq!(server.recv().unwrap(), format!("hello {i}"));
            })
        })
        .collect();
    let listener = runtime().block_on(async move {
        let listener = AsyncListener::new(listener).unwrap();
        let mut served = Vec::new();
        for _ in 0..3 {
            let conn = listener.accept().await.unwrap();
            served.push(tokio::spawn(async move {
                let i = conn.recv().await.unwrap();
                conn.send(format!("hello {i}")).await.unwrap();
            }));
        }
        for s in served {
            s.await.unwrap();
        }
        listener.into_inner()
    });
    for c in clients {
        c.join();
    }
    assert_eq!(fd_count(), before);
    drop(listener);
}

/// A body past the pool's largest: it goes in a fresh sealed memfd.
#[derive(IpcMessage)]
struct Huge {
    n: u32,
    data: Vec<u8>,
}

const HUGE: usize = 40 << 20;

#[test]
fn an_async_sender_of_bodies_past_the_pool_keeps_one_unread() {
    let _serial = serial();
    let (tx, rx) = channel::<Huge>().unwrap();
    const MESSAGES: u32 = 3;
    let child = fork_child(|| {
        close_in_child(&rx);
        runtime().block_on(async {
            let tx = AsyncSender::new(tx).unwrap();
            for n in 0..MESSAGES {
                let data = vec![n as u8; HUGE];
                tx.send(Huge { n, data }).await.unwrap();
            }
        });
    });
    // One is queued; the next waits for the receiver to read it (woken by
    // the socket's writability, not by polling).
    assert_eq!(
        queued_when_sender_stops(&rx, 16),
        16,
        "the async sender did not wait"
    );
    for n in 0..MESSAGES {
        let huge = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(huge.n, n);
        assert!(huge.data.len() == HUGE && huge.data.iter().all(|&b| b == n as u8));
    }
    child.join();
}

#[test]
fn large_bodies_cross_async_ends_intact_and_an_async_send_never_waits_for_the_pool() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<(u32, Vec<u8>)>().unwrap();
    const MESSAGES: u32 = 20;
    let body = |n: u32| vec![n as u8; 100_000 + n as usize * 10_000];
    let child = fork_child(|| {
        close_in_child(&rx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tx = AsyncSender::new(tx).unwrap();
            // Nobody reads until every send is done: an async send must
            // not wait for pooled memfds to come back (the reactor cannot
            // see them), so the ones past the pool go sealed.
            for n in 0..MESSAGES {
                tx.send((n, body(n))).await.unwrap();
            }
        });
    });
    // The child must finish sending before anything is read.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(child.pid(), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::Exited(_, 0) => break,
            WaitStatus::StillAlive if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            WaitStatus::StillAlive => {
                child.kill();
                panic!("the async sender waited for its receiver");
            }
            status => panic!("child failed: {status:?}"),
        }
    }
    runtime().block_on(async {
        let rx = AsyncReceiver::new(rx).unwrap();
        for n in 0..MESSAGES {
            let (got, bytes) = rx.recv().await.unwrap();
            assert_eq!(got, n);
            assert_eq!(bytes, body(n), "message {n}");
        }
        assert!(matches!(rx.recv().await, Err(Error::Disconnected)));
    });
    assert_eq!(fd_count(), before);
}

/// Four tasks await `recv` on one shared receiver while a process sends:
/// every message reaches exactly one of them, and none is left waiting
/// while messages are queued (one waker per socket would leave some stuck).
fn four_tasks_share_one_receiver(runtime: fn() -> tokio::runtime::Runtime) {
    const MESSAGES: u32 = 10_000;
    let before = fd_count();
    let (tx, rx) = channel::<u32>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0..MESSAGES {
            tx.send(i).unwrap();
        }
    });
    drop(tx);
    let runtime = runtime();
    let got = runtime.block_on(async {
        let rx = std::sync::Arc::new(AsyncReceiver::new(rx).unwrap());
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        match rx.recv().await {
                            Ok(n) => mine.push(n),
                            Err(Error::Disconnected) => return mine,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            let mine = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a task was left waiting")
                .unwrap();
            got.push(mine);
        }
        got
    });
    drop(runtime);
    child.join();
    let mut all: Vec<u32> = got.concat();
    assert_eq!(all.len(), MESSAGES as usize, "each message exactly once");
    all.sort();
    assert_eq!(all, (0..MESSAGES).collect::<Vec<_>>());
    // Each task kept its own messages in the order they were sent.
    for mine in &got {
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(fd_count(), before);
}

#[test]
fn four_tasks_sharing_one_receiver_take_each_message_once() {
    let _serial = serial();
    four_tasks_share_one_receiver(runtime);
}

#[test]
fn four_tasks_sharing_one_receiver_on_one_thread_take_each_message_once() {
    let _serial = serial();
    four_tasks_share_one_receiver(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });
}

/// A body that takes long to decode (here 128 Mi numbers that serde reads
/// one by one) is decoded off the runtime's thread: a current-thread
/// runtime serves another channel meanwhile, and a receive cancelled while
/// it waits for the decode loses nothing.
#[test]
fn a_large_body_is_decoded_off_the_runtime_thread() {
    let _serial = serial();
    const LEN: usize = 128 << 20;
    let before = fd_count();
    let (big_tx, big_rx) = channel::<Vec<u32>>().unwrap();
    let (small_tx, small_rx) = channel::<u8>().unwrap();
    let child = fork_child(|| {
        close_in_child(&big_rx);
        close_in_child(&small_rx);
        big_tx.send(vec![1; LEN]).unwrap();
        small_tx.send(7).unwrap();
    });
    drop((big_tx, small_tx));
    let order = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let big_rx = std::sync::Arc::new(AsyncReceiver::new(big_rx).unwrap());
            let small_rx = AsyncReceiver::new(small_rx).unwrap();
            let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let big = tokio::spawn({
                let (big_rx, order) = (big_rx.clone(), order.clone());
                async move {
                    // Given up on once, while the body may be decoding.
                    let first =
                        tokio::time::timeout(Duration::from_millis(50), big_rx.recv()).await;
                    let numbers = match first {
                        Ok(numbers) => numbers.unwrap(),
                        Err(_) => big_rx.recv().await.unwrap(),
                    };
                    order.lock().unwrap().push("big");
                    numbers
                }
            });
            let small = tokio::spawn({
                let order = order.clone();
                async move {
                    assert_eq!(small_rx.recv().await.unwrap(), 7);
                    order.lock().unwrap().push("small");
                }
            });
            small.await.unwrap();
            let numbers = big.await.unwrap();
            assert_eq!(numbers.len(), LEN);
            assert!(numbers.iter().all(|&n| n == 1));
            let order = order.lock().unwrap().clone();
            order
        });
    assert_eq!(
        order,
        ["small", "big"],
        "the small message waited for the large one's decode"
    );
    child.join();
    assert_eq!(fd_count(), before);
}

/// The rest of the async surface, against a process: `try_recv` never
/// waits, `closed` resolves when the receiving process is gone, and the
/// `Sink` impl sends what it is given, in order.
#[test]
fn try_recv_closed_and_the_sink_work_across_processes() {
    use futures_sink::Sink;

    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<u32>().unwrap();
    let (back_tx, back_rx) = channel::<u32>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        close_in_child(&back_rx);
        // Echo five numbers back, then leave: the parent's sender to this
        // process closes with it.
        for _ in 0..5 {
            back_tx.send(rx.recv().unwrap() * 10).unwrap();
        }
    });
    drop((rx, back_tx));
    runtime().block_on(async {
        let mut tx = AsyncSender::new(tx).unwrap();
        let back = AsyncReceiver::new(back_rx).unwrap();
        assert!(matches!(back.try_recv().await, Err(Error::Empty)));
        for n in 1..=5 {
            poll_fn(|cx| Pin::new(&mut tx).poll_ready(cx))
                .await
                .unwrap();
            Pin::new(&mut tx).start_send(n).unwrap();
        }
        poll_fn(|cx| Pin::new(&mut tx).poll_flush(cx))
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(back.recv().await.unwrap());
        }
        assert_eq!(got, [10, 20, 30, 40, 50]);
        tokio::time::timeout(Duration::from_secs(10), tx.closed())
            .await
            .expect("closed() resolves once the receiving process is gone");
        let failed = tx.send(6).await.unwrap_err();
        assert!(matches!(failed.error(), Error::Disconnected));
    });
    child.join();
    assert_eq!(fd_count(), before);
}

/// Wake-ups of the ring lane under tokio: a sender in bursts with pauses
/// between (so that the receiving tasks sleep and are woken by doorbells
/// again and again), two tasks sharing one receiver; every message comes,
/// none is left in the ring while the tasks sleep.
#[test]
fn tasks_sleeping_on_a_ring_are_woken_by_every_burst() {
    let _serial = serial();
    const BURSTS: u64 = 2000;
    let (tx, rx) = channel::<u64>().unwrap();
    tx.set_ring_lane(true);
    let child = fork_child(|| {
        close_in_child(&rx);
        let mut n = 0;
        for burst in 0..BURSTS {
            for _ in 0..burst % 5 + 1 {
                tx.send(n).unwrap();
                n += 1;
            }
            if burst % 4 == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    });
    drop(tx);
    let total: u64 = (0..BURSTS).map(|b| b % 5 + 1).sum();
    let mut got = runtime().block_on(async move {
        let rx = std::sync::Arc::new(AsyncReceiver::new(rx).unwrap());
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                            Ok(Ok(n)) => mine.push(n),
                            Ok(Err(Error::Disconnected)) => return mine,
                            Ok(Err(e)) => panic!("{e}"),
                            Err(_) => panic!("a task slept 10 s with {} taken", mine.len()),
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    child.join();
    got.sort_unstable();
    assert_eq!(got, (0..total).collect::<Vec<_>>());
}
