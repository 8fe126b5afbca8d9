//! Round trips between two processes: ipc-core beside raw `SOCK_SEQPACKET`
//! syscalls and ipc-channel, in the same run.
//!
//! - same core: both processes pinned to core 0, so a round trip is two
//!   context switches and the code between them, with no cross-core wake-up
//!   (which costs tens of microseconds on small VMs and says nothing about
//!   the code);
//! - busy-poll: the processes on cores 0 and 1, both spinning on
//!   non-blocking receives;
//! - one descriptor: the same-core round trip with one descriptor attached
//!   each way.
//!
//! Each group times every contender on its own, then ipc-core interleaved
//! with the raw calls (`common::versus`), which prints the ratio.
//!
//! `cargo bench --bench round_trip`

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ipc_core::{Connection, Error, Fd, IpcMessage};

/// 64 bytes of payload in every contender: two 32-byte keys in a derived
/// message, which carries each as one byte string. ipc-channel sends the
/// same type through the same serde impls.
#[derive(IpcMessage, Clone, Copy)]
struct Msg {
    key: [u8; 32],
    nonce: [u8; 32],
}
const MSG: Msg = Msg {
    key: [7; 32],
    nonce: [9; 32],
};

/// The same 64 bytes as a plain tuple, which serde carries a byte at a time.
type Tuple = ([u8; 32], [u8; 32]);
const HEADER: usize = 16;

fn same_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_64B_same_core");
    common::pin(0);

    // Every peer is forked first and waits in a blocking receive, so the
    // contenders can take turns within one sample (`common::versus`).
    let (raw, raw_peer) = common::seqpacket_pair();
    let _raw_peer = common::fork_peer(0, || {
        let mut buf = [0u8; 256];
        loop {
            let n = common::read(&raw_peer, &mut buf);
            if n == 0 {
                break;
            }
            common::write(&raw_peer, &buf[..n]);
        }
    });
    let (ours, theirs) = Connection::<Msg, Msg>::pair().unwrap();
    let _ours_peer = common::fork_peer(0, || {
        while let Ok(m) = theirs.recv() {
            if theirs.send(m).is_err() {
                break;
            }
        }
    });
    let (tuples, tuple_peer) = Connection::<Tuple, Tuple>::pair().unwrap();
    let _tuple_peer = common::fork_peer(0, || {
        while let Ok(m) = tuple_peer.recv() {
            if tuple_peer.send(m).is_err() {
                break;
            }
        }
    });
    let (req_tx, req_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let (resp_tx, resp_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let _ipc_channel_peer = common::fork_peer(0, || {
        while let Ok(m) = req_rx.recv() {
            if resp_tx.send(m).is_err() {
                break;
            }
        }
    });

    let frame = [1u8; HEADER + 64];
    let mut buf = [0u8; 256];
    let mut raw_trip = || {
        common::write(&raw, &frame);
        common::read(&raw, &mut buf)
    };
    let ours_trip = || {
        ours.send(MSG).unwrap();
        ours.recv().unwrap()
    };
    group.bench_function("raw_seqpacket", |b| b.iter(&mut raw_trip));
    group.bench_function("ipc_core", |b| b.iter(ours_trip));
    group.bench_function("ipc_core_plain_tuple", |b| {
        b.iter(|| {
            tuples.send((MSG.key, MSG.nonce)).unwrap();
            tuples.recv().unwrap()
        })
    });
    group.bench_function("ipc_channel", |b| {
        b.iter(|| {
            req_tx.send(MSG).unwrap();
            resp_rx.recv().unwrap()
        })
    });
    common::versus(
        &mut group,
        "ipc_core_interleaved",
        "raw_seqpacket",
        100,
        |n| common::repeat(n, ours_trip),
        |n| common::repeat(n, &mut raw_trip),
    );
    common::unpin();
    group.finish();
}

/// How long a busy-polling peer spins without a message before it blocks:
/// several round trips, so it spins throughout its contender's turn and
/// sleeps through the others' (sharing the core with the next contender's
/// peer for no more than this).
const IDLE: Duration = Duration::from_micros(20);

fn busy_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_64B_busy_poll");
    common::pin(0);

    let (raw, raw_peer) = common::seqpacket_pair();
    let _raw_peer = common::fork_peer(1, || {
        let mut buf = [0u8; 256];
        loop {
            let n = match common::read_spinning(&raw_peer, &mut buf, IDLE) {
                Some(n) => n,
                None => common::read(&raw_peer, &mut buf),
            };
            if n == 0 {
                break;
            }
            common::write(&raw_peer, &buf[..n]);
        }
    });
    let (ours, theirs) = Connection::<Msg, Msg>::pair().unwrap();
    let _ours_peer = common::fork_peer(1, || {
        let mut idle_since = Instant::now();
        loop {
            let m = match theirs.try_recv() {
                Ok(m) => m,
                Err(Error::Empty) if idle_since.elapsed() < IDLE => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(Error::Empty) => match theirs.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Err(_) => break,
            };
            theirs.send(m).unwrap();
            idle_since = Instant::now();
        }
    });
    let (req_tx, req_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let (resp_tx, resp_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let _ipc_channel_peer = common::fork_peer(1, || {
        let mut idle_since = Instant::now();
        loop {
            let m = match req_rx.try_recv() {
                Ok(m) => m,
                Err(ipc_channel::TryRecvError::Empty) if idle_since.elapsed() < IDLE => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(ipc_channel::TryRecvError::Empty) => match req_rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Err(_) => break,
            };
            resp_tx.send(m).unwrap();
            idle_since = Instant::now();
        }
    });

    let frame = [1u8; HEADER + 64];
    let mut buf = [0u8; 256];
    let mut raw_trip = || {
        common::write(&raw, &frame);
        common::read_spinning(&raw, &mut buf, Duration::MAX)
    };
    let ours_trip = || {
        ours.send(MSG).unwrap();
        loop {
            match ours.try_recv() {
                Ok(m) => break m,
                Err(Error::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    group.bench_function("raw_seqpacket", |b| b.iter(&mut raw_trip));
    group.bench_function("ipc_core", |b| b.iter(ours_trip));
    group.bench_function("ipc_channel", |b| {
        b.iter(|| {
            req_tx.send(MSG).unwrap();
            loop {
                match resp_rx.try_recv() {
                    Ok(m) => break m,
                    Err(ipc_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        })
    });
    common::versus(
        &mut group,
        "ipc_core_interleaved",
        "raw_seqpacket",
        100,
        |n| common::repeat(n, ours_trip),
        |n| common::repeat(n, &mut raw_trip),
    );
    common::unpin();
    group.finish();
}

fn one_descriptor(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_1fd_same_core");
    common::pin(0);

    let (raw, raw_peer) = common::seqpacket_pair();
    let _raw_peer = common::fork_peer(0, || {
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        loop {
            let fds = common::recv_fds(&raw_peer, &mut buf, &mut cmsg);
            common::send_fds(&raw_peer, &buf[..HEADER + 1], &[fds[0].as_raw_fd()]);
        }
    });
    let (ours, theirs) = Connection::<Fd<OwnedFd>, Fd<OwnedFd>>::pair().unwrap();
    let _ours_peer = common::fork_peer(0, || {
        while let Ok(fd) = theirs.recv() {
            if theirs.send(fd).is_err() {
                break;
            }
        }
    });

    let mut raw_fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let frame = [1u8; HEADER + 1];
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut raw_trip = || {
        common::send_fds(&raw, &frame, &[raw_fd.as_raw_fd()]);
        raw_fd = common::recv_fds(&raw, &mut buf, &mut cmsg).remove(0);
    };
    let mut fd = Some(Fd::new(OwnedFd::from(
        std::fs::File::open("/dev/null").unwrap(),
    )));
    let mut ours_trip = || {
        ours.send(fd.take().unwrap()).unwrap();
        fd = Some(ours.recv().unwrap());
    };
    group.bench_function("raw_sendmsg_scm_rights", |b| b.iter(&mut raw_trip));
    group.bench_function("ipc_core", |b| b.iter(&mut ours_trip));
    common::versus(
        &mut group,
        "ipc_core_interleaved",
        "raw_sendmsg_scm_rights",
        100,
        |n| common::repeat(n, &mut ours_trip),
        |n| common::repeat(n, &mut raw_trip),
    );
    common::unpin();
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = same_core, busy_poll, one_descriptor
}
criterion_main!(benches);
