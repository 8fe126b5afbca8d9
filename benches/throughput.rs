//! One-way traffic between two processes: small messages per second, 16 MiB
//! bodies (a bare `Vec<u8>` message and a derived byte field), 64 MiB of
//! `f32` (the derive's one-copy numbers and plain serde), and a sweep of
//! body sizes across the inline/out-of-line border; ipc-core beside raw
//! sockets and ipc-channel in the same run.
//!
//! `cargo bench --bench throughput`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipc_core::{channel, Connection, IpcMessage};

/// A derived message holding bytes: the derive carries `Vec<u8>` as one
/// byte string, where plain serde makes a call per byte.
#[derive(IpcMessage, Clone)]
struct Blob {
    data: Vec<u8>,
}

/// How long `run` takes to ask a forked producer for `n` messages and
/// receive them.
fn elapsed(run: impl FnOnce(u64), n: u64) -> Duration {
    let start = Instant::now();
    run(n);
    start.elapsed()
}

type Small = (u64, u64, u32);
/// A `Small` as ipc-core frames it: the header and 3 varints.
const SMALL_FRAME: usize = 16 + 3;

fn small_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_small_messages");
    group.throughput(Throughput::Elements(1));

    // Both producers are forked first and wait for a count, so the two
    // contenders can take turns within one sample (`common::versus`).
    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Small>().unwrap();
    let _ours_peer = common::fork_peer(1, || {
        while let Ok(n) = control_peer.recv() {
            for i in 0..n {
                tx.send((i, i * 3, 7)).unwrap();
            }
        }
    });
    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (ipc_tx, ipc_rx) = ipc_channel::ipc::channel::<Small>().unwrap();
    let _ipc_channel_peer = common::fork_peer(1, || {
        while let Ok(n) = ctl_rx.recv() {
            for i in 0..n {
                ipc_tx.send((i, i * 3, 7)).unwrap();
            }
        }
    });

    let (raw, raw_peer) = common::seqpacket_pair();
    let _raw_peer = common::fork_peer(1, || {
        let mut count = [0u8; 8];
        let frame = [1u8; SMALL_FRAME];
        while common::read(&raw_peer, &mut count) == 8 {
            for _ in 0..u64::from_ne_bytes(count) {
                common::write(&raw_peer, &frame);
            }
        }
    });

    let ours = |n| {
        control.send(n).unwrap();
        for _ in 0..n {
            rx.recv().unwrap();
        }
    };
    let theirs = |n| {
        ctl_tx.send(n).unwrap();
        for _ in 0..n {
            ipc_rx.recv().unwrap();
        }
    };
    let floor = |n: u64| {
        common::write(&raw, &n.to_ne_bytes());
        let mut buf = [0u8; 64];
        for _ in 0..n {
            common::read(&raw, &mut buf);
        }
    };
    group.bench_function("raw_seqpacket", |b| b.iter_custom(|n| elapsed(floor, n)));
    group.bench_function("ipc_core", |b| b.iter_custom(|n| elapsed(ours, n)));
    group.bench_function("ipc_channel", |b| b.iter_custom(|n| elapsed(theirs, n)));
    common::versus(
        &mut group,
        "ipc_core_interleaved",
        "ipc_channel",
        100,
        ours,
        theirs,
    );
    common::versus(
        &mut group,
        "raw_seqpacket_interleaved",
        "ipc_channel",
        100,
        floor,
        theirs,
    );
    group.finish();
}

/// A derived message of 64 bytes of payload in byte fields, as a user
/// would write a record: an id, a key and a value.
#[derive(IpcMessage)]
struct Record {
    id: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A 64-byte message that now and then carries a descriptor.
#[derive(IpcMessage)]
struct WithFd {
    data: Vec<u8>,
    fd: Option<std::os::fd::OwnedFd>,
}

/// Forks a producer that sends `make(i)` for each of the count it is
/// asked for, on the ring lane or not (`ring`); gives the way to ask, and
/// the receiver.
fn producer<T: IpcMessage + 'static>(
    ring: bool,
    make: impl Fn(u64) -> T,
) -> (impl Fn(u64), ipc_core::Receiver<T>, common::Peer) {
    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<T>().unwrap();
    tx.set_ring_lane(ring);
    let peer = common::fork_peer(1, || {
        while let Ok(n) = control_peer.recv() {
            for i in 0..n {
                tx.send(make(i)).unwrap();
            }
        }
    });
    (move |n| control.send(n).unwrap(), rx, peer)
}

/// 64 bytes one way, across cores: a bare `Vec<u8>` and a derived record,
/// on the ring lane and on the socket lane, one message in a hundred with
/// a descriptor; beside one raw datagram per message and ipc-channel.
fn small_64(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_64B");
    group.throughput(Throughput::Elements(1));
    let block = vec![5u8; 64];
    let (ask_vec, vec_rx, _p1) = producer(true, |_| block.clone());
    let (ask_record, record_rx, _p2) = producer(true, |i| Record {
        id: i,
        key: vec![1; 16],
        value: vec![2; 40],
    });
    let (ask_socket, socket_rx, _p3) = producer(false, |_| block.clone());
    let null = std::fs::File::open("/dev/null").unwrap();
    let (ask_fd, fd_rx, _p4) = producer(true, |i| WithFd {
        data: vec![5u8; 64],
        fd: (i % 100 == 0).then(|| null.try_clone().unwrap().into()),
    });
    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (ipc_tx, ipc_rx) = ipc_channel::ipc::channel::<Vec<u8>>().unwrap();
    let _p5 = common::fork_peer(1, || {
        while let Ok(n) = ctl_rx.recv() {
            for _ in 0..n {
                ipc_tx.send(block.clone()).unwrap();
            }
        }
    });
    let (raw, raw_peer) = common::seqpacket_pair();
    let _p6 = common::fork_peer(1, || {
        let mut count = [0u8; 8];
        let frame = [1u8; 16 + 64];
        while common::read(&raw_peer, &mut count) == 8 {
            for _ in 0..u64::from_ne_bytes(count) {
                common::write(&raw_peer, &frame);
            }
        }
    });

    let floor = |n: u64| {
        common::write(&raw, &n.to_ne_bytes());
        let mut buf = [0u8; 128];
        for _ in 0..n {
            common::read(&raw, &mut buf);
        }
    };
    fn drain<T: IpcMessage + 'static>(ask: &impl Fn(u64), rx: &ipc_core::Receiver<T>, n: u64) {
        ask(n);
        for _ in 0..n {
            std::hint::black_box(rx.recv().unwrap());
        }
    }
    let theirs = |n| {
        ctl_tx.send(n).unwrap();
        for _ in 0..n {
            std::hint::black_box(ipc_rx.recv().unwrap());
        }
    };
    group.bench_function("raw_seqpacket", |b| b.iter_custom(|n| elapsed(floor, n)));
    group.bench_function("ipc_core_vec_u8", |b| {
        b.iter_custom(|n| elapsed(|n| drain(&ask_vec, &vec_rx, n), n))
    });
    group.bench_function("ipc_core_derived_record", |b| {
        b.iter_custom(|n| elapsed(|n| drain(&ask_record, &record_rx, n), n))
    });
    group.bench_function("ipc_core_1pct_descriptors", |b| {
        b.iter_custom(|n| elapsed(|n| drain(&ask_fd, &fd_rx, n), n))
    });
    group.bench_function("ipc_core_socket_lane", |b| {
        b.iter_custom(|n| elapsed(|n| drain(&ask_socket, &socket_rx, n), n))
    });
    group.bench_function("ipc_channel_vec_u8", |b| {
        b.iter_custom(|n| elapsed(theirs, n))
    });
    common::versus(
        &mut group,
        "ipc_core_vec_u8_interleaved",
        "raw_seqpacket",
        100,
        |n| drain(&ask_vec, &vec_rx, n),
        floor,
    );
    common::versus(
        &mut group,
        "ipc_core_record_interleaved",
        "ipc_channel_vec_u8",
        100,
        |n| drain(&ask_record, &record_rx, n),
        theirs,
    );
    common::versus(
        &mut group,
        "ipc_core_1pct_descriptors_interleaved",
        "raw_seqpacket",
        100,
        |n| drain(&ask_fd, &fd_rx, n),
        floor,
    );
    group.finish();
}

const BIG: usize = 16 << 20;

fn big_bodies(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_16MiB");
    group.throughput(Throughput::Bytes(BIG as u64));
    group.sample_size(10);

    // Every producer is forked first and waits for a count, so that the
    // derived message and ipc-channel can take turns (`common::versus`).
    let (bare_control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, bare_rx) = channel::<Vec<u8>>().unwrap();
    let _bare_peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send_ref(&body).unwrap();
            }
        }
    });
    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Blob>().unwrap();
    let _derived_peer = common::fork_peer(1, || {
        let body = Blob {
            data: vec![5u8; BIG],
        };
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send_ref(&body).unwrap();
            }
        }
    });
    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (ipc_tx, ipc_rx) = ipc_channel::ipc::bytes_channel().unwrap();
    let _ipc_channel_peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = ctl_rx.recv() {
            for _ in 0..n {
                ipc_tx.send(&body).unwrap();
            }
        }
    });
    let (stream_control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (stream, stream_peer) = common::stream_pair();
    let _stream_peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                let mut sent = 0;
                while sent < BIG {
                    sent += common::write(&stream_peer, &body[sent..]);
                }
            }
        }
    });

    let derived = |n| {
        control.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(rx.recv().unwrap().data.len(), BIG);
        }
    };
    let theirs = |n| {
        ctl_tx.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(ipc_rx.recv().unwrap().len(), BIG);
        }
    };
    let mut buf = vec![0u8; BIG];
    let mut raw = |n| {
        stream_control.send(n).unwrap();
        for _ in 0..n {
            let mut got = 0;
            while got < BIG {
                got += common::read(&stream, &mut buf[got..]);
            }
        }
    };
    let bare = |n| {
        bare_control.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(bare_rx.recv().unwrap().len(), BIG);
        }
    };
    group.bench_function("ipc_core_vec_u8", |b| b.iter_custom(|n| elapsed(bare, n)));
    group.bench_function("ipc_core_derived_bytes", |b| {
        b.iter_custom(|n| elapsed(derived, n))
    });
    group.bench_function("ipc_channel_bytes", |b| {
        b.iter_custom(|n| elapsed(theirs, n))
    });
    group.bench_function("raw_stream_socket", |b| {
        b.iter_custom(|n| elapsed(&mut raw, n))
    });
    common::versus(
        &mut group,
        "ipc_core_derived_bytes_interleaved",
        "ipc_channel_bytes",
        10,
        derived,
        theirs,
    );
    common::versus(
        &mut group,
        "ipc_core_vec_u8_interleaved",
        "ipc_channel_bytes",
        10,
        bare,
        theirs,
    );
    group.finish();
}

const SAMPLES: usize = 16 << 20;

/// 64 MiB of `f32` as the derive carries a `Vec<f32>` field: its
/// little-endian bytes in one copy.
#[derive(IpcMessage, Clone)]
struct Samples {
    values: Vec<f32>,
}

/// The same field kept plain (`#[ipc(serde)]`): a serde call per element.
#[derive(IpcMessage, Clone)]
struct PlainSamples {
    #[ipc(serde)]
    values: Vec<f32>,
}

/// Numbers in bulk: the one-copy path of a derived `Vec<f32>` field beside
/// the same field through serde, and beside ipc-channel, which sends it
/// through serde too.
fn bulk_numbers(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_64MiB_f32");
    group.throughput(Throughput::Bytes((SAMPLES * 4) as u64));
    group.sample_size(10);
    let values: Vec<f32> = (0..SAMPLES).map(|i| i as f32 * 0.5).collect();

    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Samples>().unwrap();
    let body = Samples {
        values: values.clone(),
    };
    let _ours_peer = common::fork_peer(1, || {
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send_ref(&body).unwrap();
            }
        }
    });
    let (plain_control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, plain_rx) = channel::<PlainSamples>().unwrap();
    let plain_body = PlainSamples {
        values: values.clone(),
    };
    let _plain_peer = common::fork_peer(1, || {
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send_ref(&plain_body).unwrap();
            }
        }
    });
    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (ipc_tx, ipc_rx) = ipc_channel::ipc::channel::<Vec<f32>>().unwrap();
    let _ipc_channel_peer = common::fork_peer(1, || {
        while let Ok(n) = ctl_rx.recv() {
            for _ in 0..n {
                ipc_tx.send(values.clone()).unwrap();
            }
        }
    });

    let ours = |n| {
        control.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(rx.recv().unwrap().values.len(), SAMPLES);
        }
    };
    let plain = |n| {
        plain_control.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(plain_rx.recv().unwrap().values.len(), SAMPLES);
        }
    };
    let theirs = |n| {
        ctl_tx.send(n).unwrap();
        for _ in 0..n {
            assert_eq!(ipc_rx.recv().unwrap().len(), SAMPLES);
        }
    };
    group.bench_function("ipc_core_derived_f32", |b| {
        b.iter_custom(|n| elapsed(ours, n))
    });
    group.bench_function("ipc_core_plain_serde_f32", |b| {
        b.iter_custom(|n| elapsed(plain, n))
    });
    group.bench_function("ipc_channel", |b| b.iter_custom(|n| elapsed(theirs, n)));
    common::versus(
        &mut group,
        "ipc_core_derived_f32_interleaved",
        "ipc_channel",
        10,
        ours,
        theirs,
    );
    group.finish();
}

/// Body sizes from 64 B to 256 MiB, sent and received in one process: the
/// inline path up to 64 KiB, a memfd of the sender's pool above (a fresh
/// sealed one past 32 MiB). No cliff at the border.
/// Each iteration also clones the body, as a sender that keeps its copy
/// would.
fn size_sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("body_size_sweep");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    let (tx, rx) = channel::<Blob>().unwrap();
    for size in [
        64usize,
        1 << 10,
        16 << 10,
        60 << 10,
        (64 << 10) - 8,
        (64 << 10) + 8,
        256 << 10,
        1 << 20,
        16 << 20,
        256 << 20,
    ] {
        let body = Blob {
            data: vec![3u8; size],
        };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("ipc_core_bytes", size),
            &body,
            |b, body| {
                b.iter(|| {
                    tx.send(body.clone()).unwrap();
                    rx.recv().unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = small_messages, small_64, big_bodies, bulk_numbers, size_sweep
}
criterion_main!(benches);
